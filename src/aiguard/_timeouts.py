"""A bounded pool of daemon threads that runs sync model calls under a time limit.

The caller waits at most ``timeout`` seconds for the result, then stops waiting; the call itself
cannot be interrupted (Python threads cannot be killed) and finishes in its worker, whose result is
dropped. Workers are daemon threads, so a hung model call never blocks interpreter exit, unlike
``concurrent.futures.ThreadPoolExecutor``, whose workers are joined at exit. The pool starts at most
``aiguard.configure(timeout_workers=N)`` threads (default 32); when all are busy, calls queue, and
the time spent queued counts against their timeout.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ._state import state


class TimedOut(Exception):
    """Internal: the model call did not finish within its timeout."""


_Work = tuple[Future[Any], contextvars.Context, Callable[..., Any], tuple[Any, ...], dict[str, Any]]

_lock = threading.Lock()
_queue: queue.SimpleQueue[_Work] = queue.SimpleQueue()
_threads = 0  # started workers
_pending = 0  # calls submitted and not yet finished


def _worker() -> None:
    global _pending
    while True:
        fut, ctx, fn, args, kwargs = _queue.get()
        if fut.set_running_or_notify_cancel():
            try:
                fut.set_result(ctx.run(fn, *args, **kwargs))
            except BaseException as exc:
                fut.set_exception(exc)
        del fut, ctx, fn, args, kwargs
        with _lock:
            _pending -= 1


def _reset_after_fork() -> None:
    global _lock, _queue, _threads, _pending
    _lock = threading.Lock()
    _queue = queue.SimpleQueue()
    _threads = _pending = 0


os.register_at_fork(after_in_child=_reset_after_fork)


def call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float
) -> Any:
    """Run ``fn(*args, **kwargs)`` in the pool; its result, its exception, or TimedOut."""
    global _threads, _pending
    fut: Future[Any] = Future()
    with _lock:
        _pending += 1
        if _pending > _threads and _threads < state.timeout_workers:
            _threads += 1
            name = f"aiguard-timeout-{_threads}"
            threading.Thread(target=_worker, name=name, daemon=True).start()
    _queue.put((fut, contextvars.copy_context(), fn, args, kwargs))
    try:
        return fut.result(timeout)
    except TimeoutError as exc:
        if fut.done() and fut.exception() is exc:
            raise  # the model's own TimeoutError
        fut.cancel()
        raise TimedOut from None
