"""Retrying the model call (``guard(retry=...)``), before the fallback chain.

The drivers hand a call here after its first try failed with an exception the policy retries;
the other tries run under what is left of the call's timeout and while its budget lasts. A try
that succeeds is judged like any result: served (with the failed tries in ``Outcome.attempts``
and their costs in the call's), or sent to the fallback chain; when the tries run out, the last
failure goes to the fallback chain, carrying the tries before it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from time import perf_counter
from typing import Any

from .._runtime import deadlines, ids, telemetry
from .._runtime.money import to_decimal
from ..outcome import Attempt, Outcome, Reason, Source
from . import decide, finish, streams
from .chain import drive_async, drive_sync

MODEL = Source.MODEL


def _tried(core: Any, exc: BaseException, latency: float, *, last: bool = False) -> Attempt:
    """A failed try, costed; the breaker and gates count it (unless it is the call's last,
    which the call's own Outcome counts)."""
    if not last and core.monitor is not None:
        reason, _ = decide.failure(exc, None, core.spec.timeout_errors)
        core.monitor(reason)
    cost = core.acct.cost(None, True, 0, exc)
    return Attempt("model", MODEL, exc, latency, None if cost is None else to_decimal(cost))


def _timed_out(ctx: Any, tried_at: float) -> Attempt:
    """The try that aiguard's timeout stopped: its cost is unknown."""
    error = TimeoutError(ctx.detail or "timed out")
    return Attempt("model", MODEL, error, perf_counter() - tried_at, None)


def _next_wait(core: Any, s: Any, t0: float, tries: int, exc: BaseException) -> float | None:
    """Seconds to wait before another try, or None when there is to be none."""
    retry = core.retry
    if tries >= retry.attempts or not retry.retries(exc):
        return None
    wait: float = retry.wait(tries, exc)
    timeout = s.call_timeout
    if timeout is not None and perf_counter() + wait >= t0 + timeout - 0.001:
        return None  # no time left for another try
    budget = core.acct.budget
    if budget is not None and budget.spent_out():
        return None  # the budget is spent: no more money on tries
    return wait


def _served(
    core: Any, s: Any, n: int, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any,
    t0: float, t1: float, arm: str | None, span: Any, prior: list[Attempt], tried_at: float,
) -> Any:  # fmt: skip
    """A try returned: served (an Outcome with every try), or the context for the chain."""
    reason, confidence, detail = decide.judge(core.validators, result, s)
    if reason is not Reason.SERVED:
        return core.context(
            s, n, args, kwargs, reason, result=result, confidence=confidence, detail=detail,
            arm=arm, span=span, model_attempts=tuple(prior),
        )  # fmt: skip
    acct = core.acct
    usage = acct.usage(result)
    cost = acct.cost(usage, True, 0)
    extra = finish.sum_cost(tuple(prior))
    total = None if cost is None or extra is None else cost + extra
    outcome: Outcome[Any] = Outcome(
        value=result,
        call_id=ids.call_id(n),
        feature=core.feature,
        source=MODEL,
        reason=Reason.SERVED,
        confidence=confidence,
        threshold=s.threshold,
        latency=perf_counter() - t0,
        model_latency=t1 - t0,
        attempts=tuple(prior),
        model_result=result,
        started_at=ids.wall_time(t0),
        arm=arm,
        rollout_percent=s.percent,
        usage=usage,
        cost=None if total is None else to_decimal(total),
    )
    finish.publish(core, outcome, span, model=t1 - tried_at, call=(args, kwargs))  # last try
    return outcome


def again_sync(
    core: Any, s: Any, n: int, args: tuple[Any, ...], kwargs: dict[str, Any],
    exc: BaseException, t0: float, tried_at: float, arm: str | None, span: Any,
) -> Outcome[Any]:  # fmt: skip
    """Retry a sync call whose first try raised ``exc`` (in ``catch``, not a misuse)."""
    fn = core.fn
    prior: list[Attempt] = []
    tries = 1
    failure: BaseException | None = exc
    while True:
        assert failure is not None
        wait = _next_wait(core, s, t0, tries, failure)
        if wait is None:
            break
        prior.append(_tried(core, failure, perf_counter() - tried_at))
        if span is not None:
            telemetry.failed_try(span, failure)
        if wait > 0:
            time.sleep(wait)  # shorter than the time left (checked)
        tries += 1
        tried_at = perf_counter()
        timeout = s.call_timeout
        try:
            if timeout is None:
                result = fn(*args, **kwargs)
            else:
                left = max(t0 + timeout - tried_at, 1e-6)
                result = deadlines.call(fn, args, kwargs, left, core.blocked)
        except deadlines.Expired:
            ctx = core.failed(s, n, args, kwargs, None, arm, span)
            prior.append(_timed_out(ctx, tried_at))
            return drive_sync(core, _with(ctx, prior), t0, None, None)  # the try is in prior
        except core.catch as caught:
            failure = caught
            continue
        except Exception as other:
            core.unhandled(s, n, args, kwargs, other, t0, span=span, arm=arm)
            raise
        t1 = perf_counter()
        if core.spec.stream is not False and streams.kind(result) == 1:  # a stream: guarded so
            proxy = streams.start_sync(
                core, s, n, args, kwargs, result, t0, arm, span, tuple(prior), tried_at
            )
            return streams.StreamRecord(proxy)  # type: ignore[return-value]
        out = _served(core, s, n, args, kwargs, result, t0, t1, arm, span, prior, tried_at)
        if out.__class__ is Outcome:
            return out
        return drive_sync(core, out, t0, t1, tried_at)
    if prior:
        prior.append(_tried(core, failure, perf_counter() - tried_at, last=True))
    ctx = _with(core.failed(s, n, args, kwargs, failure, arm, span), prior)
    # with tries before it, the last failed try is the last of prior; alone, it is the call's
    return drive_sync(core, ctx, t0, perf_counter(), None if prior else ...)


async def again_async(
    core: Any, s: Any, n: int, args: tuple[Any, ...], kwargs: dict[str, Any],
    exc: BaseException, t0: float, tried_at: float, arm: str | None, span: Any,
) -> Outcome[Any]:  # fmt: skip
    """The same as ``again_sync``, for an async call (``asyncio.timeout``, ``asyncio.sleep``)."""
    fn = core.fn
    prior: list[Attempt] = []
    tries = 1
    failure: BaseException = exc
    while True:
        wait = _next_wait(core, s, t0, tries, failure)
        if wait is None:
            break
        prior.append(_tried(core, failure, perf_counter() - tried_at))
        if span is not None:
            telemetry.failed_try(span, failure)
        if wait > 0:
            await asyncio.sleep(wait)
        tries += 1
        tried_at = perf_counter()
        timeout = s.call_timeout
        limit = None
        try:
            if timeout is None:
                result = await fn(*args, **kwargs)
            else:
                async with asyncio.timeout(max(t0 + timeout - tried_at, 1e-6)) as limit:
                    result = await fn(*args, **kwargs)
        except Exception as caught:
            if limit is not None and limit.expired():
                ctx = core.failed(s, n, args, kwargs, None, arm, span)
                prior.append(_timed_out(ctx, tried_at))
                return await drive_async(core, _with(ctx, prior), t0, None, None)
            if not isinstance(caught, core.catch):
                core.unhandled(s, n, args, kwargs, caught, t0, span=span, arm=arm)
                raise
            failure = caught
            continue
        t1 = perf_counter()
        if core.spec.stream is not False and streams.kind(result) == 2:  # a stream: guarded so
            proxy = await streams.start_async(
                core, s, n, args, kwargs, result, t0, arm, span, tuple(prior), tried_at
            )
            return streams.StreamRecord(proxy)  # type: ignore[return-value]
        out = _served(core, s, n, args, kwargs, result, t0, t1, arm, span, prior, tried_at)
        if out.__class__ is Outcome:
            return out
        return await drive_async(core, out, t0, t1, tried_at)
    if prior:
        prior.append(_tried(core, failure, perf_counter() - tried_at, last=True))
    ctx = _with(core.failed(s, n, args, kwargs, failure, arm, span), prior)
    return await drive_async(core, ctx, t0, perf_counter(), None if prior else ...)


def _with(ctx: Any, prior: list[Attempt]) -> Any:
    return dataclasses.replace(ctx, model_attempts=tuple(prior)) if prior else ctx
