"""Blocking work of the async API, off the event loop.

``await run(fn, ...)`` runs ``fn`` (a store operation: feedback, the review queue) in a thread of
aiguard's I/O pool, a :class:`~aiguard._runtime.deadlines.TimeoutPool` of its own (daemon
threads, at most ``configure(timeout_workers=N)``, re-created after ``fork``), in a copy of the
caller's context (its current span, say), and awaits its result: the event loop keeps running
meanwhile. The sync function is the one implementation; its async twin is ``run`` of it. ``fn``
bounds its own time (every store operation has a deadline). Cancelling the awaiting task cancels
work that has not started; work that has started finishes in its thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .deadlines import TimeoutPool

T = TypeVar("T")

_pool: TimeoutPool | None = None
_lock = threading.Lock()


def pool() -> TimeoutPool:
    """The I/O pool, created on first use."""
    global _pool
    found = _pool
    if found is None:
        with _lock:
            if _pool is None:
                _pool = TimeoutPool("aiguard-io")
            found = _pool
    return found


async def run(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, run in the I/O pool and awaited."""
    return await asyncio.wrap_future(pool().submit(fn, args, kwargs))
