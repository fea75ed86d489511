"""The checks that run before the model is called, compiled per configuration generation:
kill switch, rollout, budget and breaker, in that order; and what counts each call's reason
afterwards (breaker window, rollout gate)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..breaker import BreakerRun
from ..outcome import Reason
from ..rollout import Plan
from .gates import GateRun
from .reserve import Check, release
from .settings import Kill, Pre


def compile_pre(
    kill: Kill | None, breaker: BreakerRun | None, plan: Plan | None, budget: Check | None
) -> Pre | None:
    """The checks that run before the model call, compiled for the current control state.
    ``budget`` (``reserve.budget_check``) reserves the call's worst-case cost when it admits
    it; a call the breaker then stops gives the reservation back."""
    if kill is not None:
        blocked = (Reason.KILLED, None, kill.describe())
        return lambda args, kwargs: blocked
    if breaker is None and budget is None:
        return None if plan is None else plan.check  # the rollout check is the whole check
    check = None if plan is None else plan.check
    ai = (None, "ai", None)

    def pre(
        args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Reason | None, str | None, str | None]:
        arm = None
        if check is not None:  # the rollout first: the breaker only sees calls in the AI arm
            verdict = check(args, kwargs)
            if verdict[0] is not None:
                return verdict
            arm = verdict[1]  # "ai", perhaps carrying its unit (rollout.UnitArm)
        if budget is not None:  # before the breaker: no half-open probe is spent on it
            why = budget(args, kwargs)
            if why is not None:
                return Reason.OVER_BUDGET, arm, why
        if breaker is not None:
            why = breaker.admit()
            if why is not None:
                if budget is not None:
                    release()
                return Reason.AUTO_KILLED, arm, why
        if arm is None:
            return (None, None, None)
        return ai if arm.__class__ is str else (None, arm, None)

    return pre


def monitor(breaker: BreakerRun | None, gate: GateRun | None) -> Callable[[Reason], None] | None:
    if breaker is None and gate is None:
        return None
    if gate is None:
        assert breaker is not None
        return breaker.record
    if breaker is None:
        return gate.record
    b, g = breaker.record, gate.record

    def both(reason: Reason) -> None:
        b(reason)
        g(reason)

    return both
