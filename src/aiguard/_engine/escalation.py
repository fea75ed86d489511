"""Running an :class:`~aiguard.Escalate` handler: the bigger model's call, timed, priced and
judged by the handler's own checks.

``Escalation`` is one handler bound to one guard at decoration (its confidence reader, its
validators, its accounting); ``settle`` and ``failed`` are the decisions, written once; the
sync and async runners only call the model (under the handler's deadline) and hand over.
Nothing here raises: every outcome of the bigger model's call is a :class:`~.decide.Ran`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from time import perf_counter
from typing import Any

from .._runtime import deadlines
from ..exceptions import EscalationRejected
from ..fallbacks import Escalate, FallbackContext
from .accounting import Accounting
from .decide import SERVED, Ran, judge
from .settings import Extract, Spec, by_name


class Escalation:
    """One Escalate handler of one guard, compiled at decoration."""

    __slots__ = (
        "acct",
        "blocked",
        "confidence_name",
        "extract",
        "fn",
        "is_coroutine",
        "threshold",
        "timeout",
        "validators",
    )

    def __init__(self, handler: Escalate, spec: Spec) -> None:
        self.fn = handler.fn
        self.is_coroutine = inspect.iscoroutinefunction(handler.fn)
        confidence = handler.confidence
        named = isinstance(confidence, str)
        self.extract: Extract | None = by_name(confidence) if named else confidence
        self.confidence_name: str | None = confidence if named else None
        self.threshold = handler.threshold
        self.timeout = handler.timeout
        # the handler's own validators, else the guard's (the same answer contract)
        validators = handler.validators
        self.validators: tuple[Callable[[Any], Any], ...] = (
            spec.validate if validators is None else validators
        )
        self.blocked = [False]  # a call found blocked in C: the deadline pool from then on
        self.acct = Accounting(
            spec.feature,
            model=handler.model,
            provider=handler.provider,
            operation=spec.operation,
            usage=handler.usage,
            budget=None,  # the guard's budget is charged with the whole call's cost
            latency_slo=None,
        )

    def settle(self, result: Any, started: float) -> Ran:
        """The bigger model answered: its cost, and whether its answer may be served."""
        latency = perf_counter() - started
        acct = self.acct
        cost = acct.cost(acct.usage(result), True, 0)
        reason, confidence, detail = judge(self.validators, result, self)
        if reason is SERVED:
            return Ran(result, None, latency, cost)
        return Ran(None, EscalationRejected(reason, detail, result, confidence), latency, cost)

    def failed(self, exc: BaseException | None, started: float) -> Ran:
        """The bigger model's call raised ``exc`` (None: its deadline passed)."""
        latency = perf_counter() - started
        if exc is None:
            exc = TimeoutError(f"the escalated model gave no result within {self.timeout:g} s")
        return Ran(None, exc, latency, self.acct.cost(None, True, 0, exc))


def run_sync(esc: Escalation, ctx: FallbackContext) -> Ran:
    """Call the bigger model in this thread (under its deadline, if any)."""
    started = perf_counter()
    try:
        if esc.timeout is None:
            result = esc.fn(*ctx.args, **ctx.kwargs)
        else:
            result = deadlines.call(esc.fn, ctx.args, ctx.kwargs, esc.timeout, esc.blocked)
    except deadlines.Expired:
        return esc.failed(None, started)
    except Exception as exc:
        return esc.failed(exc, started)
    return esc.settle(result, started)


async def run_async(esc: Escalation, ctx: FallbackContext) -> Ran:
    """Await the bigger model (a sync one in a worker thread), under its deadline, if any."""
    started = perf_counter()
    try:
        async with asyncio.timeout(esc.timeout) as limit:
            if esc.is_coroutine:
                result = await esc.fn(*ctx.args, **ctx.kwargs)
            else:
                result = await asyncio.to_thread(esc.fn, *ctx.args, **ctx.kwargs)
    except Exception as exc:
        return esc.failed(None if limit.expired() else exc, started)
    return esc.settle(result, started)
