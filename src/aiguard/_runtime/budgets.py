"""Budgets' spend in this process, per feature and window (kept in the runtime)."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

from .money import pico_of, to_decimal
from .state import runtime, track


def for_feature(feature: str, declared: Any, new: BudgetRun) -> tuple[Any, BudgetRun]:
    """(the budget declared first for ``feature``, its run); ``new`` is used if none was."""
    with runtime.lock:
        found = runtime.budgets.get(feature)
        if found is not None:
            return found
        runtime.budgets[feature] = (declared, new)
        shared = runtime.budget_store
    if shared is not None:
        shared.attach(new, feature)
    return declared, new


class BudgetRun:
    """One feature's spend in the current window.

    Alone, ``spent`` is this process's spend. Shared (``aiguard.configure(budgets=...)``),
    ``fleet`` is the fleet's total as last read back and ``pending`` what this process spent
    since; the check adds the two.
    """

    __slots__ = (
        "__weakref__",
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

    def __init__(self, amount: Decimal, seconds: float) -> None:
        self.amount = amount
        self.limit = pico_of(amount)
        self.seconds = seconds
        self._lock = threading.Lock()
        self.window = 0
        self.spent = 0  # this window's spend as this process knows it: fleet + pending
        self.fleet = 0
        self.pending = 0
        self.shared_key: str | None = None
        track(self)

    def _after_fork(self) -> None:
        self.pending = 0  # the parent shares what it spent; this process starts its own
        self.spent = self.fleet

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
