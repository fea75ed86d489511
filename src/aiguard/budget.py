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

__all__ = ["Budget"]

_WINDOWS = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """At most ``limit`` spent per window (``"hour"``, ``"day"``, or a timedelta / seconds).

    Windows are fixed and aligned to the epoch (UTC hours and days). Every call's cost counts:
    the model's, by the price table, and the fallback handlers' own (``Rules(fn, cost=...)``,
    ``HumanReview(cost=...)``). When the window's spend reaches the limit, calls skip the model
    and the fallback chain serves them with reason ``over_budget`` until the next window. Calls
    whose cost is unknown (a model missing from the price table) cannot be counted.

    Example:
        >>> import aiguard
        >>> aiguard.Budget(limit="25.00", per="day").limit
        Decimal('25.00')
    """

    limit: Decimal | str | int
    per: str | timedelta | float = "day"

    def __post_init__(self) -> None:
        if isinstance(self.limit, float):
            raise ConfigError(
                f"Budget(limit={self.limit!r}) is invalid: give a Decimal, a string or an int "
                "(floats drift)"
            )
        to_pico(self.limit, field="Budget(limit)")
        object.__setattr__(self, "limit", Decimal(str(self.limit)))
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
