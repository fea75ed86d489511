"""Sync timeouts in the caller's thread: a watchdog raises into a call that overruns.

A sync guarded call with ``timeout=`` runs where it was called: handing it to another thread
costs two thread wake-ups (50 µs and more a call on a small machine, milliseconds under load).
Instead the call registers its deadline in a dict (no lock, no wake-up: a few hundred
nanoseconds), and one daemon watchdog thread, when a deadline passes with the call still running,
raises :class:`TimedOut` in the caller's thread (``PyThreadState_SetAsyncExc``, the mechanism of
Ctrl-C: it surfaces at the next Python instruction, ``finally`` and ``with`` blocks run).

A thread blocked inside C does not run Python instructions. The watchdog helps the common case,
a blocking socket read (an HTTP client waiting for the model): after a short grace it shuts the
socket the blocked frame reads from, so the read returns and the exception surfaces. A call
blocked elsewhere in C (``time.sleep``, an extension's computation) comes back only when that
returns; its caller is then told it timed out, and the guard's later calls run in the
:class:`~aiguard._runtime.workers.TimeoutPool`, whose caller stops waiting at the deadline
whatever the call does (at the price of the thread hand-off), with a warning naming where it
blocked.

The protocol between a caller and the watchdog, under the GIL: the caller registers
``active[key] = entry`` and, when the call ends, takes it back with ``active.pop(key)``; the
watchdog claims an overrun entry with the same ``pop``. Exactly one of them gets it. The watchdog
raises only into entries it claimed; a caller that finds its entry claimed waits for the raise
(``entry[FIRED]``), clears it if it is still pending, and reports a timeout.
"""

from __future__ import annotations

import contextvars
import itertools
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from . import errors
from .state import runtime, track

INF = float("inf")
# An entry is a small dict (its keys below). Its OWNER is decided once, by ``dict.setdefault``,
# atomic under the GIL: CALLER (the call ended in time) or DOG (the watchdog claimed it). Unlike
# a returned value, the winner can be read again after an interruption lands anywhere.
DEADLINE, THREAD, CELL, OWNER, FIRED, BACK, SINCE, RESCUED = range(8)
CALLER, DOG = "caller", "watchdog"

GRACE = 0.02  # after the raise: how long before the watchdog looks for a socket to shut
BLOCKED = 0.5  # after the raise: past this, the call is blocked in C; its guard moves to the pool
TICK_MIN = 0.01  # the watchdog never wakes more often than this when idle
IDLE_AFTER = 60.0  # no timed call for this long: the watchdog sleeps until the next one


class TimedOut(BaseException):
    """Internal: the model call did not finish within its timeout.

    A BaseException, like KeyboardInterrupt: a client's ``except Exception`` (which would turn
    it into a connection error and retry) does not catch it."""


class Expired(BaseException):
    """Internal: this call's deadline passed (what :func:`call` and the pool raise; a TimedOut
    meant for an outer call's deadline propagates as it is)."""


class Watchdog:
    """The registry of running timed calls, and the thread that enforces their deadlines."""

    def __init__(self) -> None:
        self.active: dict[int, dict[int, Any]] = {}
        self.keys = itertools.count()
        self.next_wake = INF  # when the watchdog wakes next: an earlier deadline wakes it
        self.tick = 1.0  # the idle wake-up interval: the smallest timeout seen
        self.last_arm = 0.0
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._raised: list[dict[int, Any]] = []  # claimed entries whose caller has not come back
        track(self)

    def _after_fork(self) -> None:
        # the parent's calls run in threads that do not exist here; this thread's own call (a
        # fork from inside a guarded function) goes on without a deadline
        self.active = {}
        self._raised = []
        self._thread = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self.next_wake = INF

    def ensure(self) -> bool:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return True
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return True
            thread = threading.Thread(target=self._run, name="aiguard-deadlines", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread"
                errors.report("starting the deadline watchdog", exc)
                return False
            self._thread = thread
            return True

    def arm(self, deadline: float) -> None:
        """A call due before the watchdog's next wake-up was registered: wake it now (and start
        it, on first use or after a fork)."""
        if self._thread is None or not self._thread.is_alive():
            self.ensure()
        self.next_wake = deadline
        self._wake.set()

    def _run(self) -> None:
        while True:
            try:
                wait = self._step()
            except Exception as exc:  # never dies: a dead watchdog would unbound every timeout
                errors.report("deadline watchdog", exc)
                wait = self.tick
            self._wake.wait(wait)
            self._wake.clear()

    def _step(self) -> float | None:
        now = time.perf_counter()
        active = self.active
        soonest = INF
        for key, entry in list(active.items()):
            if OWNER in entry:  # ended: its caller could not take it out (or has not yet)
                active.pop(key, None)
                continue
            deadline = entry[DEADLINE]
            if deadline > now:
                if deadline < soonest:
                    soonest = deadline
            elif entry.setdefault(OWNER, DOG) is DOG:  # claimed: the caller can no longer
                active.pop(key, None)
                raise_in(entry[THREAD])
                entry[SINCE] = now
                entry[FIRED] = True
                self._raised.append(entry)
        if self._raised:
            self._rescue(now)
            soonest = min(soonest, now + GRACE)
        if soonest == INF and now - self.last_arm < IDLE_AFTER:
            soonest = now + self.tick  # wake regularly: a new call then needs no wake-up
        self.next_wake = soonest
        # a call registered since the scan read the old next_wake: it may be due before this one
        for entry in list(active.values()):
            if entry[DEADLINE] < soonest and OWNER not in entry:
                return 0.0
        return None if soonest == INF else max(0.0, soonest - time.perf_counter())

    def _rescue(self, now: float) -> None:
        """Help calls that did not come back after the raise: blocked in C."""
        still = []
        for entry in self._raised:
            if BACK in entry:
                continue
            late = now - entry[SINCE]
            if late >= GRACE and RESCUED not in entry:
                entry[RESCUED] = True
                shut_socket_of(entry[THREAD])
            if late >= BLOCKED and entry[CELL] is not None and not entry[CELL][0]:
                entry[CELL][0] = True
                errors.warn_once(
                    f"blocked-in-c:{id(entry[CELL])}",
                    "aiguard: a sync call under timeout= is blocked inside C (%s) %.1f s past "
                    "its deadline: Python cannot interrupt it there. Its guard's later calls run "
                    "in aiguard's worker threads, so their timeout holds. Give the blocking "
                    "call a timeout of its own (a client's timeout=) to avoid this.",
                    where_blocked(entry[THREAD]),
                    late,
                )
            if late < 3600:
                still.append(entry)
        self._raised = still


_set_async_exc: Any = None
_clear_async_exc: Any = None


def _api() -> bool:
    """Bind ``PyThreadState_SetAsyncExc`` (CPython); False where it does not exist."""
    global _set_async_exc, _clear_async_exc
    if _set_async_exc is not None:
        return True
    try:
        import ctypes

        name = "PyThreadState_SetAsyncExc"
        setter = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)
        clearer = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
        _clear_async_exc = clearer((name, ctypes.pythonapi))
        _set_async_exc = setter((name, ctypes.pythonapi))
    except Exception as exc:  # not CPython: every timed call uses the pool
        errors.report("binding PyThreadState_SetAsyncExc", exc)
        return False
    return True


def raise_in(thread_id: int) -> None:
    _set_async_exc(thread_id, TimedOut)


def clear(thread_id: int) -> None:
    """Drop a TimedOut still pending for ``thread_id`` (the caller's own thread)."""
    _clear_async_exc(thread_id, None)


def _innermost(thread_id: int) -> Any:
    return sys._current_frames().get(thread_id)


def shut_socket_of(thread_id: int) -> bool:
    """Shut the socket the thread's innermost Python frame reads from, if it has one: a blocked
    read returns at once, and the pending TimedOut surfaces."""
    import socket

    frame = _innermost(thread_id)
    for _ in range(3):  # the reading frame, or the two that called it
        if frame is None:
            return False
        for value in list(frame.f_locals.values()):
            for candidate in (value, getattr(value, "_sock", None), getattr(value, "sock", None)):
                if isinstance(candidate, socket.socket):
                    try:
                        candidate.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        continue
                    return True
        frame = frame.f_back
    return False


def where_blocked(thread_id: int) -> str:
    frame = _innermost(thread_id)
    if frame is None:
        return "unknown"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


_watchdog: Watchdog | None = None


def watchdog() -> Watchdog | None:
    """The process's watchdog, or None where async exceptions are not available."""
    global _watchdog
    if _watchdog is None:
        if not _api():
            return None
        _watchdog = Watchdog()
    return _watchdog


def call(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float,
    cell: list[bool] | None = None,
) -> Any:
    """``fn(*args, **kwargs)`` in this thread, or Expired once ``timeout`` s have passed.

    ``cell``: the guard's ``[blocked]`` flag, set when one of its calls was found blocked in C:
    from then on its calls run in the pool, whose caller stops waiting at the deadline whatever
    the call does.
    """
    dog = _watchdog if _watchdog is not None else watchdog()
    if dog is None or (cell is not None and cell[0]):
        return pool().call(fn, args, kwargs, timeout)
    if timeout < dog.tick:
        dog.tick = max(timeout, TICK_MIN)
    key = next(dog.keys)
    now = time.perf_counter()
    deadline = now + timeout
    dog.last_arm = now
    entry: dict[int, Any] = {DEADLINE: deadline, THREAD: threading.get_ident(), CELL: cell}
    active = dog.active
    if deadline < dog.next_wake:
        dog.arm(deadline)
    active[key] = entry  # from here an interruption may land: everything below handles it
    try:
        try:
            result = fn(*args, **kwargs)
        except TimedOut:
            raise  # decided below, with the interruptions that land after the call
        except BaseException:
            if entry.setdefault(OWNER, CALLER) is CALLER:
                active.pop(key, None)
                raise  # the function's own exception, in time
            _settle(entry)  # it ended after the deadline: late
            raise _expired(entry) from None
        if entry.setdefault(OWNER, CALLER) is CALLER:
            active.pop(key, None)
            if time.perf_counter() > deadline:  # late, the watchdog not yet there: still late
                raise Expired
            return result
        _settle(entry)
        raise _expired(entry)
    except TimedOut:
        # An interruption landed. If this call's entry was not claimed, it is an outer call's:
        # it goes on up. Else it is this call's (or both were): nothing of it may stay pending.
        while True:  # an interruption landing in here again is caught, and the loop retried
            try:
                outer = entry.setdefault(OWNER, CALLER) is CALLER
                if outer:
                    active.pop(key, None)
                else:
                    _settle(entry)
                break
            except TimedOut:
                continue
        if outer:
            raise
        raise _expired(entry) from None


def _settle(entry: dict[int, Any]) -> None:
    """The watchdog claimed this call: wait for its raise, and drop it if it is still pending.
    Safe wherever the raise lands meanwhile (it is this call's, and caught here). A thread holds
    one pending raise: see ``_expired`` for an enclosing call claimed too."""
    entry[BACK] = True
    for _ in range(10_000):
        try:
            for _ in range(10_000):  # the raise follows the claim within microseconds
                if FIRED in entry:
                    break
                time.sleep(0.0001)
            clear(entry[THREAD])
            return
        except TimedOut:
            continue


def _expired(entry: dict[int, Any]) -> type[BaseException]:
    """What a claimed call raises once settled: Expired, or TimedOut when an enclosing call of
    the same thread was claimed too (both overran while blocked in C; a thread holds one pending
    raise, which this call took), so that it goes on up to that call."""
    dog = _watchdog
    if dog is not None:
        thread = entry[THREAD]
        for other in list(dog._raised):
            if other is not entry and other[THREAD] == thread and BACK not in other:
                return TimedOut
    return Expired


# -- the pool: a hard deadline for calls that block in C -------------------------------------

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

    def __init__(self, name: str = "aiguard-timeout") -> None:
        self.name = name
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
        """Run ``fn(*args, **kwargs)`` in the pool; its result, its exception, or Expired."""
        fut = self.submit(fn, args, kwargs)
        try:
            return fut.result(timeout)
        except TimeoutError as exc:
            if fut.done() and fut.exception() is exc:
                raise  # the model's own TimeoutError
            fut.cancel()
            raise Expired from None

    def submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        """Start ``fn(*args, **kwargs)`` in the pool, in a copy of the caller's context; its
        Future (done already when no thread could start: then it ran here)."""
        fut: Future[Any] = Future()
        run_here = False
        with self._lock:
            self._pending += 1
            if self._pending > self._threads and self._threads < runtime.timeout_workers:
                thread = threading.Thread(
                    target=self._worker,
                    args=(self._queue,),
                    name=f"{self.name}-{self._threads + 1}",
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
            fut.set_running_or_notify_cancel()
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                fut.set_exception(exc)
            return fut
        self._queue.put((fut, contextvars.copy_context(), fn, args, kwargs))
        return fut


def pool() -> TimeoutPool:
    """The runtime's timeout pool, created on first use."""
    found = runtime.pool
    if found is None:
        with runtime.lock:
            if runtime.pool is None:
                runtime.pool = TimeoutPool()
            found = runtime.pool
    return found  # type: ignore[no-any-return]
