"""Spend limits per feature and window: over the limit, the model is not called."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

from .exceptions import ConfigError
from .pricing import to_decimal, to_pico

__all__ = ["Budget"]

_WINDOWS = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclasses.dataclass(frozen=True, slots=True)
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
        if isinstance(per, timedelta):
            per = per.total_seconds()
        if isinstance(per, bool) or not isinstance(per, int | float) or per <= 0:
            raise ConfigError(f"Budget(per={self.per!r}) is invalid: must be a positive duration")
        return float(per)


_shared: dict[str, tuple[Budget, BudgetRun]] = {}
_shared_lock = threading.Lock()


def for_feature(feature: str, budget: Budget) -> BudgetRun:
    """The spend of ``feature`` in this process, shared by every guard of the feature; a guard
    that declares a different budget for the same feature is a ConfigError."""
    with _shared_lock:
        found = _shared.get(feature)
        if found is None:
            run = BudgetRun(budget)
            _shared[feature] = (budget, run)
            from ._state import state

            if state.budgets is not None:
                state.budgets.attach(run, feature)
            return run
        declared, run = found
        if declared != budget:
            raise ConfigError(
                f"feature {feature!r}: budget={budget!r} differs from the budget another guard "
                f"of this feature declared ({declared!r}); a feature has one budget"
            )
        return run


class BudgetRun:
    """One feature's spend in the current window.

    Alone, ``spent`` is this process's spend. Shared (``aiguard.configure(budgets=...)``),
    ``fleet`` is the fleet's total as last read back and ``pending`` what this process spent
    since; the check adds the two.
    """

    __slots__ = (
        "_lock",
        "amount",
        "fleet",
        "limit",
        "pending",
        "seconds",
        "shared_key",
        "spent",
        "window",
    )

    def __init__(self, budget: Budget) -> None:
        self.amount = budget.limit
        self.limit = to_pico(budget.limit)
        self.seconds = budget.seconds
        self._lock = threading.Lock()
        self.window = 0
        self.spent = 0  # this window's spend as this process knows it: fleet + pending
        self.fleet = 0
        self.pending = 0
        self.shared_key: str | None = None

    def _roll(self, now: float) -> None:
        window = int(now // self.seconds)
        if window != self.window:
            self.window = window
            self.spent = self.fleet = self.pending = 0

    def take_pending(self) -> tuple[int, int]:
        """(window, spend not yet shared), resetting it: for the budget store's sync."""
        with self._lock:
            self._roll(time.time())
            pending, self.pending = self.pending, 0
            return self.window, pending

    def give_back(self, window: int, pending: int) -> None:
        """A sync failed: keep the spend to share it next time."""
        with self._lock:
            if window == self.window:
                self.pending += pending

    def set_fleet(self, window: int, total: int) -> None:
        """The fleet's total for ``window``, as the budget store just read it."""
        with self._lock:
            if window == self.window:
                self.fleet = total
                self.spent = total + self.pending

    def exhausted(self) -> str | None:
        """Why the model may not be called now, or None."""
        now = time.time()
        with self._lock:
            self._roll(now)
            if self.spent < self.limit:
                return None
            spent = self.spent
            left = (self.window + 1) * self.seconds - now
        return (
            f"spent {to_decimal(spent)} of the {self.amount} budget for this "
            f"window; next window in {left:.0f} s"
        )

    def spend(self, pico: int) -> None:
        """Add one call's cost."""
        if pico <= 0:
            return
        now = time.time()
        with self._lock:
            self._roll(now)
            self.spent += pico
            self.pending += pico

    def remaining(self) -> Decimal:
        with self._lock:
            self._roll(time.time())
            return to_decimal(max(0, self.limit - self.spent))
