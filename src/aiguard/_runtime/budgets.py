"""Budgets' spend and reservations in this process, per feature and window (kept in the runtime).

A call reserves its worst-case cost before the model runs (:meth:`BudgetRun.reserve`) and settles
to its real cost after (:meth:`BudgetRun.settle`). The reservation travels from the one to the
other in a context variable, as a :class:`Hold`: the call path between them carries nothing, and
a guard without a budget never touches it. Shared through Redis, a run hands out reservations
from leases of budget its ledger (``aiguard.redis.RedisBudgets``) took atomically from Redis.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from decimal import Decimal
from typing import Any

from . import errors
from .money import pico_of, to_decimal
from .state import runtime, track


def for_feature(feature: str, declared: Any, new: BudgetRun) -> tuple[Any, BudgetRun]:
    """(the budget declared first for ``feature``, its run); ``new`` is used if none was."""
    with runtime.lock:
        found = runtime.budgets.get(feature)
        if found is not None:
            return found
        new.feature = feature
        runtime.budgets[feature] = (declared, new)
        shared = runtime.budget_store
    if shared is not None:
        shared.attach(new, feature)
    return declared, new


def declared(feature: str) -> BudgetRun | None:
    """The budget run of ``feature``, if a guard declared one."""
    found = runtime.budgets.get(feature)
    return None if found is None else found[1]


UNKNOWABLE = 3  # blind calls ending with an unknown cost before the one-at-a-time gate stops


class Hold:
    """One call's reservation, from the pre-call check to the settle step. A hold that is never
    settled (the call was cancelled, or a BaseException left it) is charged in full when it is
    freed, with the context of the call."""

    __slots__ = ("blind", "epoch", "open", "parent", "pico", "run")

    def __init__(self, run: BudgetRun, pico: int, blind: bool, parent: Hold | None) -> None:
        self.run = run
        self.pico = pico
        self.blind = blind  # admitted with no worst case known: one such call at a time
        self.epoch = run.epoch
        self.parent = parent  # the hold of an enclosing guarded call in this context
        self.open = True

    def __del__(self) -> None:
        if self.open:
            with contextlib.suppress(Exception):  # never raise from a finalizer
                self.run.settle(self, None)


# The holds of the guarded calls under way in this thread or task, innermost first.
held: contextvars.ContextVar[Hold | None] = contextvars.ContextVar("aiguard_hold", default=None)


class BudgetRun:
    """One feature's spend and reservations in the current window.

    Alone, ``spent`` is this process's spend, and a call is admitted while ``spent +
    reserved`` is below the limit. Shared (``aiguard.configure(budgets=...)``), calls are
    admitted from the lease this process holds (``held``, taken from Redis by the ledger);
    ``used`` is what settled calls spent out of it and is not yet in Redis, and
    ``fleet_spent``/``fleet_leased`` are the fleet's figures as last read. All amounts are
    integer pico-units.
    """

    __slots__ = (
        "__weakref__",
        "_lock",
        "amount",
        "blind",
        "charged",
        "charged_pico",
        "down",
        "epoch",
        "extra",
        "feature",
        "fleet_leased",
        "fleet_spent",
        "held",
        "in_flight",
        "largest",
        "ledger",
        "limit",
        "pace",
        "recent",
        "reserved",
        "seconds",
        "shared_key",
        "spent",
        "stale",
        "unknowable",
        "used",
        "window",
    )

    def __init__(self, amount: Decimal, seconds: float) -> None:
        self.amount = amount
        self.limit = pico_of(amount)
        self.seconds = seconds
        self.feature = ""
        self._lock = threading.Lock()
        self.window = 0
        self.spent = 0  # alone: this window's spend
        self.reserved = 0  # reservations of the calls under way
        self.in_flight = 0
        self.blind = False  # a call admitted with no worst case known is under way
        self.unknowable = 0  # such calls that ended with their cost still unknown
        self.largest = 0  # the largest known cost of one call so far (any window)
        self.charged = 0  # calls of unknown cost charged their reservation
        self.charged_pico = 0
        self.epoch = 0  # bumped at fork: a child settles none of the parent's holds
        # shared through a ledger (RedisBudgets)
        self.ledger: Any = None
        self.shared_key: str | None = None
        self.held = 0  # lease held in Redis for this window
        self.extra = 0  # lease granted locally while Redis was unreachable
        self.used = 0  # spent out of the lease, not yet added to Redis
        self.fleet_spent = 0  # the fleet's spend and leases, as last read from Redis
        self.fleet_leased = 0
        self.down = False  # the last Redis operation failed: the call path does not try it
        self.recent = 0  # reserved since the last sync, and in the sync interval before it:
        self.pace = 0  # how big a lease to take
        self.stale: list[tuple[int, int, int]] = []  # (window, used, lease) of past windows
        track(self)

    def _after_fork(self) -> None:
        # the parent's calls under way, and its lease, are the parent's: none of it is ours
        self.epoch += 1
        self.reserved = self.in_flight = 0
        self.blind = False
        if self.ledger is not None:
            self.held = self.extra = self.used = 0
            self.stale = []
        else:
            self.spent = 0  # a forked worker counts its own spend, from zero

    def _roll(self, now: float) -> None:
        window = int(now // self.seconds)
        if window != self.window:
            if self.used or self.held:
                self.stale.append((self.window, self.used, self.held))
                del self.stale[:-4]
            self.window = window
            # the calls under way keep their reservations: they settle in the new window
            self.spent = self.used = self.held = self.extra = 0
            self.fleet_spent = self.fleet_leased = 0

    # -- the view -----------------------------------------------------------------------------

    def _spent(self) -> int:
        return self.spent if self.ledger is None else self.fleet_spent + self.used

    def spent_out(self) -> bool:
        """Has this window's spend reached the limit (reservations left out)? For a call that
        holds a reservation and asks whether to spend more (another try)."""
        with self._lock:
            self._roll(time.time())
            return self._spent() >= self.limit

    def _refusal(self, now: float, why: str = "") -> str:
        left = (self.window + 1) * self.seconds - now
        shared = "" if self.ledger is None else " (the fleet's, through Redis)"
        return (
            f"spent {to_decimal(self._spent())} of the {self.amount} budget for this window"
            f"{shared}; reserved {to_decimal(self.reserved)} by {self.in_flight} call(s) under "
            f"way; window of {self.seconds:g} s, next in {left:.0f} s{why}"
        )

    def figures(self) -> dict[str, Any]:
        with self._lock:
            now = time.time()
            self._roll(now)
            return {
                "limit": self.amount,
                "spent": to_decimal(self._spent()),
                "reserved": to_decimal(self.reserved),
                "in_flight": self.in_flight,
                "leased": to_decimal(self.fleet_leased) if self.ledger is not None else None,
                "window_seconds": self.seconds,
                "window_ends": (self.window + 1) * self.seconds,
                "largest_cost": to_decimal(self.largest) if self.largest else None,
                "charged_calls": self.charged,
                "charged": to_decimal(self.charged_pico),
                "shared": self.ledger is not None,
            }

    # -- reserve and settle -------------------------------------------------------------------

    def reserve(self, pico: int | None) -> Hold | str:
        """Admit one call that may cost up to ``pico`` (None: its worst case is unknown):
        its Hold, or why it is refused. Never raises."""
        now = time.time()
        with self._lock:
            self._roll(now)
            blind = False
            if pico is None:
                if self.largest:
                    pico = self.largest
                elif runtime.prices is None or self.unknowable >= UNKNOWABLE:
                    # nothing can price these calls: gating them one at a time would only
                    # throttle the service (the unknown costs are warned about as they end)
                    pico = 0
                elif self.blind:
                    return self._refusal(
                        now,
                        "; no worst-case cost is known yet (give the guard estimate=): one "
                        "call at a time until a cost is seen",
                    )
                else:
                    pico, blind = 0, True
                    errors.warn_once(
                        f"budget-blind:{self.feature}",
                        "aiguard: %s: no worst-case cost is known for its calls yet (no "
                        "max_tokens argument priced by the table, no estimate=): the budget "
                        "admits one call at a time until a cost is seen; give the guard "
                        "estimate= (one call's worst-case cost)",
                        self.feature,
                    )
            if self.ledger is None:
                if self.spent + self.reserved >= self.limit:
                    return self._refusal(now)
                return self._admit(pico, blind)
            if self.fleet_spent + self.used >= self.limit:
                return self._refusal(now)  # spent already: no lease can change that
            need = pico - (self.held + self.extra - self.reserved - self.used)
            if need <= 0:
                return self._admit(pico, blind)
            need = max(need, 1)
            down, window, ledger = self.down, self.window, self.ledger
        grant = None if down else ledger.take(self, window, need, pico)
        with self._lock:
            if window != self.window:  # the window rolled meanwhile: its lease is gone
                return self._refusal(now, "; the window changed during the reservation")
            if grant is None:  # Redis unreachable: this process's own view decides
                self.down = True
                if self.fleet_spent + self.fleet_leased + self.extra >= self.limit:
                    return self._refusal(now, "; Redis unreachable: the last known figures")
                self.extra += need
            elif grant == 0:
                if self.held + self.extra - self.reserved - self.used >= pico:
                    return self._admit(pico, blind)  # another call's lease covers it
                return self._refusal(now)
            if self.held + self.extra - self.reserved - self.used < pico:
                return self._refusal(now)
            return self._admit(pico, blind)

    def _admit(self, pico: int, blind: bool) -> Hold:
        if blind:
            self.blind = True
        self.reserved += pico
        self.recent += pico
        self.in_flight += 1
        return Hold(self, pico, blind, None)

    def granted(self, window: int, grant: int, spent: int, leased: int) -> None:
        """The ledger took ``grant`` for ``window``; the fleet's figures after it."""
        with self._lock:
            if window == self.window:
                self.held += grant
                self.fleet_spent, self.fleet_leased = spent, leased
                self.down = False

    def settle(self, hold: Hold, cost: int | None, known: int = 0) -> None:
        """The call of ``hold`` ended: release its reservation and charge its real ``cost``
        (None: unknown, charged the reservation plus ``known``, the handlers' own cost)."""
        hold.open = False
        now = time.time()
        with self._lock:
            if hold.epoch != self.epoch:
                return  # a parent's call, inherited by a forked child: not ours
            self._roll(now)
            self.reserved -= hold.pico
            self.in_flight -= 1
            if hold.blind:
                self.blind = False
            if cost is None:
                cost = hold.pico + known
                self.charged += 1
                self.charged_pico += hold.pico
                if hold.blind:
                    self.unknowable += 1
                    if self.unknowable == UNKNOWABLE:
                        errors.warn_once(
                            f"budget-unknowable:{self.feature}",
                            "aiguard: %s: %d calls admitted one at a time ended with their "
                            "cost unknown: the budget stops admitting one at a time and cannot "
                            "bound concurrent calls; price the model in the price table or "
                            "give the guard estimate=",
                            self.feature,
                            UNKNOWABLE,
                        )
            elif cost > self.largest:
                self.largest = cost
            if cost > 0:
                if self.ledger is None:
                    self.spent += cost
                else:
                    self.used += cost

    def spend(self, pico: int) -> None:
        """Add the cost of a call that held no reservation (its model was not called)."""
        if pico <= 0:
            return
        now = time.time()
        with self._lock:
            self._roll(now)
            if self.ledger is None:
                self.spent += pico
            else:
                self.used += pico

    # -- the ledger's side --------------------------------------------------------------------

    def take_sync(self) -> tuple[int, int, int, list[tuple[int, int, int]]]:
        """For the ledger's sync: (window, spend to add to Redis, lease to give back, what past
        windows still owe), taken out of this run; ``give_back`` puts it back if the sync
        fails."""
        with self._lock:
            self._roll(time.time())
            used, self.used = self.used, 0
            paid = min(used, self.held)  # the spend came out of the lease
            self.held -= paid
            idle = max(0, min(self.held, self.held + self.extra - self.reserved))
            self.held -= idle  # lease no call holds goes back to the fleet
            stale, self.stale = self.stale, []
            self.pace, self.recent = self.recent, 0
            return self.window, used, paid + idle, stale

    def give_back(
        self, window: int, used: int, lease: int, stale: list[tuple[int, int, int]]
    ) -> None:
        """A sync failed: keep what it took, to share it next time."""
        with self._lock:
            self.down = True
            self.stale = (stale + self.stale)[-4:]
            if window == self.window:
                self.used += used
                self.held += lease
            else:
                self.stale.append((window, used, lease))

    def synced(self, window: int, spent: int, leased: int) -> None:
        """A sync succeeded: the fleet's figures for ``window`` after it."""
        with self._lock:
            self.down = False
            self.extra = 0  # what was granted locally is now counted in Redis as spend
            if window == self.window:
                self.fleet_spent, self.fleet_leased = spent, leased

    def detach(self) -> None:
        """Stop sharing: from now on this process counts alone, from the fleet's view."""
        with self._lock:
            if self.ledger is None:
                return
            self.spent = self.fleet_spent + self.used
            self.ledger = None
            self.held = self.extra = self.used = 0
            self.stale = []
