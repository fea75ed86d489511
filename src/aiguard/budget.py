"""Spend limits per feature and window: over the limit, the model is not called."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal
from typing import Any

from ._checks import seconds
from ._runtime import budgets
from ._runtime.budgets import BudgetRun
from .exceptions import ConfigError
from .pricing import to_pico

__all__ = ["Budget", "BudgetFigures", "budget_figures"]

_WINDOWS = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """At most ``limit`` spent per window (``"hour"``, ``"day"``, or a timedelta / seconds).

    Windows are fixed and aligned to the epoch (UTC hours and days). Every call's cost counts:
    the model's, by the price table, and the fallback handlers' own (``Rules(fn, cost=...)``,
    ``HumanReview(cost=...)``). Before the model runs, a call reserves its worst-case cost
    (from ``max_tokens`` and the price table, else the guard's ``estimate=``, else the largest
    cost seen); after, it is charged its real cost, or its reservation when the cost is
    unknown. While the window's spend plus what calls under way reserved is below the limit,
    a call is admitted; else it skips the model and the fallback chain serves it with reason
    ``over_budget``. So the spend never passes the limit by more than one call's reservation.

    Example:
        >>> import aiguard
        >>> aiguard.Budget(limit="25.00", per="day").limit
        Decimal('25.00')
    """

    limit: Decimal | str | int
    per: str | timedelta | float = "day"

    def __post_init__(self) -> None:
        object.__setattr__(self, "limit", amount("Budget(limit)", self.limit))
        _ = self.seconds  # validates per

    @property
    def seconds(self) -> float:
        """The window's length in seconds."""
        per: Any = self.per
        if isinstance(per, str):
            if per not in _WINDOWS:
                raise ConfigError(
                    f"Budget(per={per!r}) is invalid: give 'minute', 'hour', 'day', a timedelta "
                    "or seconds"
                )
            return _WINDOWS[per]
        return seconds("Budget(per)", per)


def amount(field: str, value: Any) -> Decimal:
    """A money amount given in configuration (a budget's limit, an estimate): a Decimal, a
    string or an int (not a float), from 0 to 10^18, at most 12 decimals; ConfigError else."""
    if isinstance(value, float | bool):
        raise ConfigError(
            f"{field}={value!r} is invalid: give a Decimal, a string or an int (floats drift)"
        )
    to_pico(value, field=field)
    return Decimal(str(value))


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetFigures:
    """A snapshot of one feature's budget in this process.

    ``spent`` is the window's spend (shared through Redis: the fleet's, as last read, plus
    this process's own not yet shared), ``reserved`` what the ``in_flight`` calls under way
    in this process reserved, ``leased`` (shared only) the budget the fleet's processes hold
    in leases. ``charged_calls`` counts the calls whose cost stayed unknown and were charged
    their reservation (``charged`` in all); ``largest_cost`` is the largest known cost of one
    call, the reservation of calls whose worst case is not otherwise known.

    Example:
        >>> import aiguard
        >>> @aiguard.guard("figures-demo", budget=aiguard.Budget(limit="5", per="hour"))
        ... def f() -> str:
        ...     return "ok"
        >>> figures = aiguard.budget_figures("figures-demo")
        >>> figures.limit, figures.spent, figures.reserved
        (Decimal('5'), Decimal('0'), Decimal('0'))
    """

    feature: str
    limit: Decimal
    spent: Decimal
    reserved: Decimal
    in_flight: int
    leased: Decimal | None
    window_seconds: float
    window_ends: float  # Unix time
    largest_cost: Decimal | None
    charged_calls: int
    charged: Decimal
    shared: bool


def budget_figures(feature: str) -> BudgetFigures | None:
    """The budget of ``feature`` in this process now, or None if it has none.

    Example:
        >>> import aiguard
        >>> aiguard.budget_figures("no-such-feature") is None
        True
    """
    found = budgets.declared(feature)
    if found is None:
        return None
    return BudgetFigures(feature=feature, **found.figures())


def for_feature(feature: str, budget: Budget) -> BudgetRun:
    """The spend of ``feature`` in this process, shared by every guard of the feature; a guard
    that declares a different budget for the same feature is a ConfigError."""
    new = BudgetRun(Decimal(budget.limit), budget.seconds)
    declared, run = budgets.for_feature(feature, budget, new)
    if declared != budget:
        raise ConfigError(
            f"feature {feature!r}: budget={budget!r} differs from the budget another guard "
            f"of this feature declared ({declared!r}); a feature has one budget"
        )
    return run
