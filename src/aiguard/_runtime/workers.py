"""Background work, owned by the runtime: periodic daemon workers and the timeout pool.

Every periodic thread aiguard runs is a :class:`Worker`, and every thread that runs a sync model
call under a timeout belongs to the :class:`TimeoutPool`; the only others are one-shot threads of
``lifecycle`` that hand a replaced recorder's records over and write at exit, each with a
deadline. A :class:`Worker` starts lazily (``ensure()``), runs
its step every ``interval`` seconds or when woken, never dies of an exception in its step
(reported once, counted), stops on ``stop()``, and after ``fork()`` is simply forgotten in the
child (its thread does not exist there) until the next ``ensure()`` starts it again. Workers are
daemon threads: a step stuck on I/O can never keep the process from exiting.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from . import errors
from .state import runtime, track


class Worker:
    """A daemon thread that runs ``step()`` every ``interval`` seconds, or when woken."""

    def __init__(self, name: str, step: Callable[[], Any], interval: float) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.thread: threading.Thread | None = None
        self.stopped = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        track(self)

    def ensure(self) -> bool:
        """Start the thread if it is not running (first use, or first use after a fork); False
        if no thread can be started now (the process's limit: reported, tried again later)."""
        thread = self.thread
        if thread is not None and thread.is_alive():
            return True
        with self._lock:
            if self.stopped or (self.thread is not None and self.thread.is_alive()):
                return not self.stopped
            thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread"
                errors.report(f"starting {self.name}", exc)
                return False
            self.thread = thread
            return True

    def wake(self) -> None:
        """Run the step now rather than at the next interval."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after the current step (does not wait for it)."""
        self.stopped = True
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s for the thread to end; True if it has."""
        thread = self.thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        while not self.stopped:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self.stopped:
                break
            try:
                self.step()
            except Exception as exc:
                errors.report(f"background worker {self.name}", exc)

    def _after_fork(self) -> None:
        self.thread = None  # the parent's thread does not exist here; ensure() starts one

    def __repr__(self) -> str:
        return f"<Worker {self.name} every {self.interval:g} s>"


class TimedOut(Exception):
    """Internal: the model call did not finish within its timeout."""


_Work = tuple[Future[Any], contextvars.Context, Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class TimeoutPool:
    """A bounded pool of daemon threads that runs sync model calls under a time limit.

    The caller waits at most ``timeout`` seconds for the result, then stops waiting; the call
    itself cannot be interrupted (Python threads cannot be killed) and finishes in its worker,
    whose result is dropped. Workers are daemon threads, so a hung model call never blocks
    interpreter exit, unlike ``concurrent.futures.ThreadPoolExecutor``, whose workers are joined
    at exit. At most ``aiguard.configure(timeout_workers=N)`` threads (default 32); when all are
    busy, calls queue, and the time spent queued counts against their timeout.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._threads = 0  # started workers
        self._pending = 0  # calls submitted and not yet finished
        track(self)

    def _after_fork(self) -> None:
        self._queue = queue.SimpleQueue()  # the parent's calls are the parent's
        self._threads = self._pending = 0

    def _worker(self, work: queue.SimpleQueue[_Work]) -> None:
        while True:
            fut, ctx, fn, args, kwargs = work.get()
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(ctx.run(fn, *args, **kwargs))
                except BaseException as exc:
                    fut.set_exception(exc)
            del fut, ctx, fn, args, kwargs
            with self._lock:
                self._pending -= 1

    def call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` in the pool; its result, its exception, or TimedOut."""
        fut: Future[Any] = Future()
        run_here = False
        with self._lock:
            self._pending += 1
            if self._pending > self._threads and self._threads < runtime.timeout_workers:
                thread = threading.Thread(
                    target=self._worker,
                    args=(self._queue,),
                    name=f"aiguard-timeout-{self._threads + 1}",
                    daemon=True,
                )
                try:
                    thread.start()
                except RuntimeError as exc:  # no thread can start now (the process's limit)
                    errors.report("timeout pool: starting a worker", exc)
                    if not self._threads:  # nobody to run it: run it here, without a limit
                        self._pending -= 1
                        run_here = True
                else:
                    self._threads += 1
        if run_here:
            return fn(*args, **kwargs)
        self._queue.put((fut, contextvars.copy_context(), fn, args, kwargs))
        try:
            return fut.result(timeout)
        except TimeoutError as exc:
            if fut.done() and fut.exception() is exc:
                raise  # the model's own TimeoutError
            fut.cancel()
            raise TimedOut from None


def pool() -> TimeoutPool:
    """The runtime's timeout pool, created on first use."""
    found = runtime.pool
    if found is None:
        with runtime.lock:
            if runtime.pool is None:
                runtime.pool = TimeoutPool()
            found = runtime.pool
    return found  # type: ignore[no-any-return]
