"""Shadow calls off the call's path: one bounded pool per process, owned by the runtime.

A guard with ``shadow=`` hands a chosen call's candidate to this pool after the call has its
answer. Sync candidates run in the pool's threads (at most ``workers`` at once, at most
``limit`` waiting); async candidates run as tasks on the caller's event loop (at most ``limit``
in flight). When the pool is full the shadow call is skipped and counted, never waited for: the
served call only pays for a hash of its id and, when chosen, one queue put (or one task).

Which calls are shadowed is a fact of the call id (a salted SplitMix64 hash, like audit
sampling, salted so the shadowed calls are not the audited ones): every replica chooses the same.

Worker threads end after ``IDLE`` seconds without work and start again on demand, so a pool
left behind (by a test's ``isolated()`` block, or in a forked child) holds no thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from . import errors, ids, telemetry
from .records import _mix
from .state import runtime, track

WORKERS = 4  # threads running sync candidates, at most
LIMIT = 64  # candidates waiting for a thread (sync) or in flight (async), at most
IDLE = 5.0  # seconds a worker thread waits for work before it ends
_SALT = 0x5AD0_C0DE_5A1F_7ED5  # shadow sampling is independent of audit sampling
_M64 = (1 << 64) - 1

OUTCOMES = ("ran", "failed", "timeout", "skipped", "dropped")


def cut(share: float) -> int:
    """The bound under which a call id's shadow hash chooses it, for a share in [0, 1]."""
    return min(_M64 + 1, int(share * 2**64))


def hash_of(number: int) -> int:
    """The shadow hash of this process's call with counter value ``number`` (its id not built)."""
    return _mix(ids.prefix_number ^ number ^ _SALT)


def hash_id(call_id: str) -> int:
    """The shadow hash of a call id, equal to :func:`hash_of` for this process's ids: the same
    id gives the same hash on every replica."""
    parts = call_id.split("_")
    if len(parts) == 3 and parts[0] == "ag" and len(parts[1]) == 16:
        try:
            return _mix(int(parts[1], 16) ^ int(parts[2], 16) ^ _SALT)
        except ValueError:
            pass
    digest = hashlib.blake2b(call_id.encode(), digest_size=8, person=b"aiguard-shadow").digest()
    return int.from_bytes(digest, "big")


class ShadowPool:
    """The process's shadow workers and tasks, and what became of the candidates."""

    def __init__(self, workers: int = WORKERS, limit: int = LIMIT) -> None:
        self.workers = workers
        self.limit = limit
        self.jobs: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.alive = 0  # worker threads running
        self.idle = 0  # of those, waiting for a job
        self.lock = threading.Lock()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.submitted = 0  # candidates handed over (threads and tasks)
        self.done = 0  # of those, finished (whatever became of them)
        self.counted: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.previous: ShadowPool | None = None  # the pool this one replaced, while it runs
        track(self)

    # -- the call's side -----------------------------------------------------------------------

    def submit(self, job: tuple[Any, ...]) -> bool:
        """Queue ``job`` (``(run, *arguments)``) for a worker thread; False (the call skipped,
        counted) when ``limit`` jobs are waiting already. Never blocks."""
        jobs = self.jobs
        if jobs.qsize() >= self.limit:
            self.count(job[1], "skipped")
            return False
        self.submitted += 1
        jobs.put(job)
        if self.idle == 0 and self.alive < self.workers:
            self._start()
        return True

    def spawn(self, feature: str, coro: Callable[..., Coroutine[Any, Any, Any]], *a: Any) -> bool:
        """Run ``coro(*a)`` as a task on the running event loop; False (skipped, counted) when
        ``limit`` shadow tasks are in flight already. Never blocks."""
        tasks = self.tasks
        if len(tasks) >= self.limit:
            self.count(feature, "skipped")
            return False
        try:
            task = asyncio.get_running_loop().create_task(self._task(coro, a))
        except Exception as exc:
            errors.report("shadow task", exc)
            return False
        self.submitted += 1
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return True

    # -- the workers' side -------------------------------------------------------------------

    async def _task(
        self, coro: Callable[..., Coroutine[Any, Any, Any]], a: tuple[Any, ...]
    ) -> None:
        try:
            await coro(*a)
        except Exception as exc:
            errors.report("shadow call", exc)
        finally:
            with self.lock:
                self.done += 1

    def _start(self) -> None:
        with self.lock:
            if self.alive >= self.workers:
                return
            self.alive += 1
        thread = threading.Thread(target=self._work, name="aiguard-shadow", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": the next job tries again
            with self.lock:
                self.alive -= 1
            errors.report("starting aiguard-shadow", exc)

    def _work(self) -> None:
        jobs = self.jobs
        while True:
            with self.lock:
                self.idle += 1
            try:
                job = jobs.get(timeout=IDLE)
            except queue.Empty:
                with self.lock:
                    self.idle -= 1
                    if jobs.qsize() == 0:  # else a job arrived meanwhile: take it
                        self.alive -= 1
                        return
                continue
            with self.lock:
                self.idle -= 1
            try:
                job[0](*job[1:])
            except Exception as exc:
                errors.report("shadow call", exc)
            finally:
                with self.lock:
                    self.done += 1

    # -- figures -------------------------------------------------------------------------------

    def count(self, feature: str, outcome: str) -> None:
        """Count a candidate's outcome (``ran``, ``failed``, ``timeout``, ``skipped``, ``dropped``),
        here and in the ``aiguard.shadow.calls`` metric. Never raises."""
        with self.lock:
            self.counted[outcome] = self.counted.get(outcome, 0) + 1
        if telemetry.metrics_api._METER_PROVIDER is None:
            return
        try:
            meters = telemetry.meters()
            if meters is not None:
                attributes = {"aiguard.feature": feature, "aiguard.shadow.outcome": outcome}
                meters.shadow.add((feature, outcome), attributes, 1)
        except Exception as exc:
            errors.report("telemetry: shadow metric", exc)

    def figures(self) -> dict[str, int]:
        with self.lock:
            out = dict(self.counted)
        out["pending"] = self.pending()
        return out

    def pending(self) -> int:
        """Candidates handed over and not finished yet (to a pool this one replaced, too)."""
        previous = self.previous
        if previous is not None and previous.pending() == 0:
            self.previous = previous = None
        return self.submitted - self.done + (0 if previous is None else previous.pending())

    def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s for every candidate handed over so far to finish; True if
        they have. From a coroutine, await :meth:`wait_async` instead (tasks need the loop)."""
        deadline = time.monotonic() + timeout
        while self.pending() > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    async def wait_async(self, timeout: float) -> bool:
        """:meth:`wait` without blocking the event loop."""
        deadline = time.monotonic() + timeout
        while self.pending() > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    def _after_fork(self) -> None:
        self.jobs = queue.SimpleQueue()  # the parent's candidates: the parent runs them
        self.alive = self.idle = 0
        self.tasks = set()
        self.submitted = self.done = 0
        self.counted = dict.fromkeys(OUTCOMES, 0)
        self.previous = None


def pool() -> ShadowPool:
    """The runtime's shadow pool, created on first use."""
    found = runtime.shadow_pool
    if found is None:
        with runtime.lock:
            if runtime.shadow_pool is None:
                runtime.shadow_pool = ShadowPool()
            found = runtime.shadow_pool
    return found  # type: ignore[no-any-return]
