"""The runtime's life cycle: the store and its recorder, workers, fork, exit, save and restore.

One place starts, stops and restarts every piece of background work and every connection:

- the store is opened on first use (``store()``); replacing it or the recording settings hands
  call recording over without losing a record (``install_store``, ``replace_recorder``);
- workers start lazily and are started again, lazily, in a forked child (``ensure_workers``);
- ``os.register_at_fork``: in the child every lock is re-created, the parent's queued records are
  dropped (the parent writes them), the call-id prefix is re-seeded, per-process figures start
  afresh, stores re-open their connections, and workers restart on first use;
- at exit, what is queued is written within ``exit_timeout`` seconds, then the process exits;
- ``snapshot()``/``restore()`` save and restore all of it for ``aiguard.testing.isolated()``.
"""

from __future__ import annotations

import atexit
import collections
import copy
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from . import errors, ids, stats
from .records import Recorder
from .state import (
    STORE_ENV,
    UNSET,
    after_fork_in_parent,
    before_fork,
    reinit_tracked,
    runtime,
)
from .workers import Worker

logger = logging.getLogger("aiguard")

RETIRE_SECONDS = 30.0  # the most a replaced recorder spends writing what it holds
RESTORE_SECONDS = 2.0  # the most an isolated() block's end waits for its records

_opener: Callable[[Any], Any] | None = None


def set_opener(opener: Callable[[Any], Any]) -> None:
    """How a store specification (a path, a URL, a Store) becomes a store: ``aiguard.store``
    registers ``open_store`` here when it is imported."""
    global _opener
    _opener = opener


# -- the store and call recording -----------------------------------------------------------------


OPEN_RETRY = (1.0, 60.0)  # seconds between two tries to open a store that failed: first, most
OPENER = "aiguard-store-open"


class _OpenFailure:
    """Why the configured store could not be opened, and when to try again."""

    __slots__ = ("error", "retry_at", "wait")

    def __init__(self, error: BaseException, wait: float) -> None:
        self.error = error
        self.wait = wait
        self.retry_at = time.monotonic() + wait


def _spec() -> Any:
    spec = runtime.store_spec
    return (os.environ.get(STORE_ENV) or None) if spec is UNSET else spec


def store() -> Any:
    """The configured store, opened on first use; None when none is configured.

    A store that cannot be opened fails once (its error, raised here), is tried again in the
    background with backoff (1 s, doubling, at most 60 s), and until then every caller gets the
    remembered error at once: nothing waits on a store that is known to be unreachable."""
    found = runtime.store
    if found is not None:
        return found
    with runtime.lock:
        if runtime.store is not None:
            return runtime.store
        spec = _spec()
        if spec is None or _opener is None:
            return None
        failed = runtime.store_error
        if failed is not None and time.monotonic() < failed.retry_at:
            raise failed.error
    return _open(spec)


def store_if_open() -> Any:
    """The store if it is open now, else None; never opens or waits."""
    return runtime.store


def _open(spec: Any) -> Any:
    """Open ``spec`` (outside the lock: it may take up to the store's timeout) and install it,
    unless the configuration changed meanwhile; remember a failure and retry in the
    background."""
    assert _opener is not None
    try:
        opened = _opener(spec)
    except Exception as exc:
        with runtime.lock:
            if _spec() == spec:
                before = runtime.store_error
                wait = OPEN_RETRY[0] if before is None else min(OPEN_RETRY[1], before.wait * 2)
                runtime.store_error = _OpenFailure(exc, wait)
                if OPENER not in runtime.workers:
                    add_worker(OPENER, _retry_open, OPEN_RETRY[0])
        raise
    with runtime.lock:
        installed = runtime.store is None and _spec() == spec
        if installed:
            runtime.store, runtime.store_owned = opened, opened is not spec
            runtime.store_error = None
            replace_recorder()
            runtime.generation += 1
        current = runtime.store
    if not installed and opened is not spec and opened is not current:
        _close(opened)  # configured otherwise meanwhile
    if OPENER in runtime.workers:
        remove_worker(OPENER)
    return current


def _retry_open() -> None:
    """The background retry of a store that could not be opened (a worker's step)."""
    with runtime.lock:
        failed = runtime.store_error
        spec = _spec()
        done = runtime.store is not None or failed is None or spec is None
        due = failed is not None and time.monotonic() >= failed.retry_at
    if done:
        remove_worker(OPENER)
        return
    if due:
        try:
            _open(spec)
        except Exception as exc:
            errors.warn_once(
                f"store-open:{spec!r}",
                "aiguard: the store %r cannot be opened (%s); retrying in the background",
                spec,
                exc,
            )


def ensure_recorder() -> None:
    """Start recording if a store comes from the environment and none was opened yet. A store
    that failed to open is not tried here again (the background retry does it)."""
    if runtime.recorder is not None or not runtime.record_calls or runtime.store is not None:
        return
    if runtime.store_spec is UNSET and os.environ.get(STORE_ENV) and runtime.store_error is None:
        try:
            store()
        except Exception as exc:
            errors.report("opening the store from $" + STORE_ENV, exc)


def install_store(spec: Any, opened: Any, owned: bool) -> None:
    """Make ``opened`` (or none) the store; recording moves to it; the previous store, if
    aiguard opened it, is closed once its recorder has written what it holds."""
    with runtime.lock:
        old, old_owned = runtime.store, runtime.store_owned
        runtime.store_spec, runtime.store, runtime.store_owned = spec, opened, owned
        runtime.store_error = None
        close = old if old is not None and old_owned and old is not opened else None
        if close is not None and not runtime.closable(close):
            close = None
        replace_recorder(close_after=close)
        runtime.generation += 1


def replace_recorder(close_after: Any = None) -> None:
    """(Re)start call recording for the current store and settings. Call with the lock held.

    The new recorder takes over at once; the old one forwards what still reaches it and writes
    what it holds to its store in the background (then closes ``close_after``, if given), so
    neither calls nor ``configure()`` ever wait on a drain."""
    old = runtime.recorder
    new = None
    if runtime.record_calls and runtime.store is not None:
        new = Recorder(
            runtime.store,
            runtime.capture,
            runtime.record_queue_bytes,
            runtime.remembered_calls_bytes,
        )
    runtime.recorder = new
    if new is not None:
        runtime.recorders = [*runtime.recorders, new]
    if old is not None and runtime.closable(old):
        old.retire()
        _background(f"aiguard-retire-{id(old):x}", _finish_retired, old, close_after)
    elif close_after is not None:
        _background(f"aiguard-close-{id(close_after):x}", _close, close_after)


def _finish_retired(recorder: Recorder, close_after: Any) -> None:
    left = recorder.finish(time.monotonic() + RETIRE_SECONDS)
    if left:
        recorder.drop_unwritten(f"not written within {RETIRE_SECONDS:g} s of a store change")
        logger.warning(
            "aiguard: %d call record(s) could not be written to %r within %g s after the "
            "store was replaced; dropped and counted",
            left,
            recorder.store,
            RETIRE_SECONDS,
        )
    with runtime.lock:
        runtime.recorders = [r for r in runtime.recorders if r is not recorder]
        runtime.retired_counts.update(recorder.counts())
    if close_after is not None:
        _close(close_after)


def _close(obj: Any) -> None:
    try:
        obj.close()
    except Exception as exc:
        errors.report(f"closing {obj!r}", exc)


def _background(name: str, target: Callable[..., Any], *args: Any) -> None:
    threading.Thread(target=target, args=args, name=name, daemon=True).start()


def record_counts() -> dict[str, int]:
    """Call records of this process so far: recorded, written, dropped (and ``dropped: reason``
    per reason), queued. ``recorded == written + dropped + queued`` at any moment."""
    with runtime.lock:
        total = collections.Counter(runtime.retired_counts)
        recorders = list(runtime.recorders)
    for recorder in recorders:
        total.update(recorder.counts())
    return dict(total)


def flush() -> int:
    """Write every queued call record now (current and retiring recorders)."""
    return sum(recorder.drain(force=True) for recorder in list(runtime.recorders))


# -- workers ---------------------------------------------------------------------------------------


def add_worker(
    name: str,
    step: Callable[[], Any],
    interval: float,
    *,
    final: Callable[[], Any] | None = None,
    close: Callable[[], Any] | None = None,
) -> Worker:
    """Register (and start) a background worker; one by that name replaces the previous one."""
    worker = Worker(name, step, interval)
    worker.final = final  # type: ignore[attr-defined]
    worker.close = close  # type: ignore[attr-defined]
    with runtime.lock:
        old = runtime.workers.get(name)
        runtime.workers = {**runtime.workers, name: worker}
    if old is not None:
        stop_worker(old)
    worker.ensure()
    return worker


def remove_worker(name: str) -> None:
    """Stop and forget the worker ``name``, if any."""
    with runtime.lock:
        old = runtime.workers.get(name)
        if old is None:
            return
        runtime.workers = {k: w for k, w in runtime.workers.items() if k != name}
    stop_worker(old)


def stop_worker(worker: Worker) -> None:
    """Stop ``worker`` and release what it holds (unless an isolated() block will restore it)."""
    if not runtime.closable(worker):
        return
    worker.stop()
    close = getattr(worker, "close", None)
    if close is not None:
        try:
            close()
        except Exception as exc:
            errors.report(f"closing {worker.name}", exc)


def ensure_workers() -> None:
    """Start every registered worker that is not running (after a fork: on first use)."""
    for worker in list(runtime.workers.values()):
        worker.ensure()


# -- fork ------------------------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    """In the child of ``os.fork()``: a fresh runtime for this process, lazily restarted."""
    ids.reseed()
    reinit_tracked()  # every lock re-created; recorders drop the parent's queue; stores re-open
    runtime.recorders = [r for r in runtime.recorders if r is runtime.recorder]
    runtime.retired_counts.clear()  # the parent's records, the parent's counts
    stats.reset()  # this process's figures start at zero (the parent's are the parent's)
    runtime.generation += 1  # every guard recompiles on its next call: workers restart there


os.register_at_fork(
    before=before_fork, after_in_parent=after_fork_in_parent, after_in_child=_after_fork_in_child
)


# -- exit ------------------------------------------------------------------------------------------


def shutdown(timeout: float | None = None) -> int:
    """Stop the workers and write what is queued, waiting at most ``timeout`` seconds (default
    ``exit_timeout``); returns how many call records could not be written (and logs it)."""
    wait = runtime.exit_timeout if timeout is None else timeout
    deadline = time.monotonic() + wait
    workers = list(runtime.workers.values())
    recorders: list[Recorder] = list(runtime.recorders)
    for worker in workers:
        worker.stop()

    def last_writes() -> None:
        for recorder in recorders:
            recorder.finish(deadline)  # tries even while backing off
        for worker in workers:
            final = getattr(worker, "final", None)
            if final is not None and time.monotonic() < deadline:
                try:
                    final()
                except Exception as exc:
                    errors.report(f"final step of {worker.name}", exc)

    thread = threading.Thread(target=last_writes, name="aiguard-exit", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no thread can start (the process's limit): write from here
        last_writes()
    else:
        thread.join(max(0.0, deadline - time.monotonic()))
    left: int = sum(r.unwritten() for r in recorders)
    for recorder in recorders:
        recorder.drop_unwritten(f"not written within exit_timeout={wait:g} s")
    if thread.is_alive() or left:
        logger.warning(
            "aiguard: could not write %d call record(s) within exit_timeout=%g s (the store "
            "did not answer in time); exiting without them",
            left,
            wait,
        )
    return left


atexit.register(shutdown)


# -- save and restore (aiguard.testing.isolated) -----------------------------------------------

_CONTAINERS = (dict, list, set, collections.deque, collections.Counter, weakref.WeakSet)


def _held(values: Any) -> set[int]:
    """Ids of the objects held by the runtime's attributes (and one level into containers)."""
    found: set[int] = set()
    for value in values:
        found.add(id(value))
        if isinstance(value, dict):
            for v in value.values():
                found.add(id(v))
                if isinstance(v, tuple):
                    found.update(id(x) for x in v)
        elif isinstance(value, _CONTAINERS):
            found.update(id(x) for x in value)
    return found


def snapshot() -> dict[str, Any]:
    """Every attribute of the runtime, to restore; containers are copied for the block, and
    what the runtime holds now is protected from being closed until it is restored."""
    with runtime.lock:
        saved = dict(vars(runtime))
        for name, value in saved.items():
            if isinstance(value, weakref.WeakSet):  # copy.copy would share its members
                setattr(runtime, name, weakref.WeakSet(value))
            elif isinstance(value, _CONTAINERS):
                setattr(runtime, name, copy.copy(value))
        runtime.protected = runtime.protected | _held(saved.values())
        return saved


def restore(saved: dict[str, Any]) -> None:
    """Put back what ``snapshot()`` saved; stop and close what was started since."""
    with runtime.lock:
        outer = _held(saved.values())
        mine = [r for r in runtime.recorders if id(r) not in outer]
        workers = [w for w in runtime.workers.values() if id(w) not in outer]
        store, owned = runtime.store, runtime.store_owned
        budget_store = runtime.budget_store
        generation = runtime.generation
    deadline = time.monotonic() + RESTORE_SECONDS
    for recorder in mine:
        recorder.finish(deadline)  # what the block recorded reaches its store
    for worker in workers:
        stop_worker(worker)
    with runtime.lock:
        if store is not None and owned and id(store) not in outer:
            _close(store)
        if budget_store is not None and id(budget_store) not in outer:
            _close(budget_store)
        vars(runtime).clear()
        vars(runtime).update(saved)
        runtime.generation = generation + 1  # never back: guards compiled inside recompile
