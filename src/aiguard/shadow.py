"""Shadow candidates: what became of them in this process, and their figures in the report.

A guard with ``shadow=candidate`` runs the candidate on ``shadow_share`` of its calls, off the
call's path (see :func:`aiguard.guard` and docs/shadow.md). This module reads the process's
shadow pool (:func:`counts`, :func:`wait`) and defines the report's per-feature
:class:`ShadowFigures`.

Example:
    >>> import aiguard
    >>> aiguard.shadow.counts().skipped >= 0
    True
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from ._runtime import lifecycle, shadowing
from ._runtime.state import runtime
from .exceptions import ConfigError

__all__ = ["ShadowCounts", "ShadowFigures", "counts", "set_limits", "wait", "wait_async"]


def set_limits(*, workers: int = shadowing.WORKERS, queue: int = shadowing.LIMIT) -> None:
    """Size this process's shadow pool: ``workers`` threads run sync candidates (default 4),
    at most ``queue`` candidates wait for one (default 64); async candidates run as tasks, at
    most ``queue`` at once. A shadow call that finds the pool full is skipped and counted
    (:func:`counts`). Candidates already handed over finish where they are.

    Example:
        >>> import aiguard
        >>> aiguard.shadow.set_limits(workers=8, queue=256)
    """
    for name, value, low in (("workers", workers, 1), ("queue", queue, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 10_000:
            raise ConfigError(
                f"shadow {name}={value!r} is invalid: give a whole number from {low} to 10000"
            )
    with runtime.lock:
        old = runtime.shadow_pool
        new = shadowing.ShadowPool(workers=workers, limit=queue)
        if old is not None:
            new.counted = dict(old.counted)  # counts are the process's, whatever the pool
            if old.pending():
                new.previous = old  # still running candidates: wait() waits for them too
        runtime.shadow_pool = new


@dataclasses.dataclass(frozen=True, slots=True)
class ShadowCounts:
    """Shadow candidate calls of this process so far.

    ``ran``: candidates that answered; ``failed``: raised; ``timeout``: did not answer within
    their timeout; ``skipped``: not run because the shadow pool was full; ``pending``: handed to
    the pool and not finished yet; ``dropped``: rows not kept (the record queue was full, the
    store refused them three times, or it cannot keep shadow calls); ``written``: rows written to
    the store; ``queued``: rows waiting for the record writer.

    Example:
        >>> import aiguard
        >>> c = aiguard.shadow.counts()
        >>> c.ran + c.failed + c.timeout >= 0
        True
    """

    ran: int = 0
    failed: int = 0
    timeout: int = 0
    skipped: int = 0
    pending: int = 0
    dropped: int = 0
    written: int = 0
    queued: int = 0


def counts() -> ShadowCounts:
    """What became of this process's shadow candidate calls.

    Example:
        >>> import aiguard
        >>> aiguard.shadow.counts().pending >= 0
        True
    """
    pool = shadowing.pool().figures()
    rows = lifecycle.record_counts()
    return ShadowCounts(
        ran=pool["ran"],
        failed=pool["failed"],
        timeout=pool["timeout"],
        skipped=pool["skipped"],
        pending=pool["pending"],
        dropped=pool["dropped"] + rows.get("shadow rows dropped", 0),
        written=rows.get("shadow rows written", 0),
        queued=rows.get("shadow rows queued", 0),
    )


def wait(timeout: float = 5.0) -> bool:
    """Wait at most ``timeout`` seconds for the shadow calls handed over so far to finish (in a
    script before exit, or a test before its report); True if they have. Candidates running as
    tasks need their event loop: from a coroutine, ``await aiguard.shadow.wait_async()``.

    Example:
        >>> import aiguard
        >>> aiguard.shadow.wait(0.1)
        True
    """
    return shadowing.pool().wait(timeout)


async def wait_async(timeout: float = 5.0) -> bool:
    """:func:`wait` from a coroutine, without blocking its event loop.

    Example:
        >>> import asyncio, aiguard
        >>> asyncio.run(aiguard.shadow.wait_async(0.1))
        True
    """
    return await shadowing.pool().wait_async(timeout)


@dataclasses.dataclass(frozen=True, slots=True)
class ShadowFigures:
    """A feature's shadow candidate against its current model, over the report's window.

    ``calls``: shadow calls recorded; ``errors``: of those, the candidate raised or timed out.
    ``compared``: calls whose served answer came from the model and whose candidate answered,
    ``agreed`` of them agreed: ``agreement_rate`` with its Wilson 95 % ``agreement_interval``.
    Latencies: the candidate's (its calls that answered) and the current model's on the same
    calls (``model_latency`` of their records). Cost per call: the candidate's and the current
    model's over the shadowed calls where both are known (``cost_pairs``); ``cost_ratio`` is the
    candidate's over the current model's. Acceptance of the served answer (users' decisions,
    ``edited`` counting as accepted) when the candidate disagreed and when it agreed, each with
    its Wilson interval (None without feedback).

    Example:
        >>> import aiguard
        >>> s = aiguard.shadow.ShadowFigures("reply", calls=10, compared=10, agreed=8,
        ...                                 agreement_rate=0.8)
        >>> s.agreement_rate
        0.8
    """

    feature: str
    candidate: str | None = None
    calls: int = 0
    errors: int = 0
    compared: int = 0
    agreed: int = 0
    agreement_rate: float | None = None
    agreement_interval: tuple[float, float] | None = None
    candidate_p50_latency: float | None = None
    candidate_p95_latency: float | None = None
    model_p50_latency: float | None = None
    model_p95_latency: float | None = None
    cost_pairs: int = 0
    candidate_cost_per_call: Decimal | None = None
    model_cost_per_call: Decimal | None = None
    cost_ratio: float | None = None
    disagreed_decided: int = 0
    acceptance_when_disagreed: float | None = None
    acceptance_when_disagreed_interval: tuple[float, float] | None = None
    agreed_decided: int = 0
    acceptance_when_agreed: float | None = None
    acceptance_when_agreed_interval: tuple[float, float] | None = None
