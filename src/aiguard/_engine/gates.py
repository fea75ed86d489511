"""Rollout quality gates at run time, and their figures shared through the store.

Each guard with a rollout keeps, for the percentage in force, the counts of its model calls
(calls, errors, timeouts, low confidence, fallbacks). A gate breach rolls this process back to the
previous stage. A runtime worker writes the counts to the configured store every few seconds, one
row per process, feature and percentage, so ``aiguard rollout check`` and ``aiguard status`` can
judge a stage over every replica's calls.
"""

from __future__ import annotations

import threading

from .. import events
from .._runtime import errors, ids, lifecycle
from .._runtime.state import runtime, track
from ..events import ControlEvent, EventKind
from ..limits import Limits, StageFigures
from ..outcome import _FLAGS, Reason
from ..rollout import Rollout

FLUSH_SECONDS = 2.0
FLUSHER = "aiguard-gates"


class GateRun:
    """One guard's gate: counts at the current percentage; rolls back on a breach."""

    __slots__ = (
        "__weakref__",
        "_lock",
        "feature",
        "limits",
        "percent",
        "rolled_back",
        "rollout",
        "stages",
        "totals",
    )

    def __init__(self, rollout: Rollout, feature: str) -> None:
        self.rollout = rollout
        self.feature = feature
        self._lock = threading.Lock()
        self.percent: float | None = None
        self.limits: Limits | None = None
        self.totals = [0, 0, 0, 0, 0]
        # every percentage this process has been at -> its counts (so figures that caused a
        # rollback are still written after it)
        self.stages: dict[float, tuple[list[int], Limits | None]] = {}
        self.rolled_back = False
        track(self)
        with runtime.lock:
            runtime.gates.add(self)
            if FLUSHER not in runtime.workers:
                lifecycle.add_worker(FLUSHER, flush, FLUSH_SECONDS, final=flush)

    def _after_fork(self) -> None:
        """A forked child counts its own calls (the parent writes its figures)."""
        self.totals = [0, 0, 0, 0, 0]
        self.stages = {self.percent: (self.totals, self.limits)} if self.percent is not None else {}

    def at(self, percent: float) -> None:
        """The percentage in force changed (or not): start counting afresh when it did."""
        with self._lock:
            if percent != self.percent:
                self.percent = percent
                self.limits = self.rollout.gate_at(percent)
                self.totals = [0, 0, 0, 0, 0]  # a stage (re-)entered is judged afresh
                self.stages[percent] = (self.totals, self.limits)
                self.rolled_back = False

    def record(self, reason: Reason) -> None:
        flags = _FLAGS.get(reason)
        if flags is None:
            return
        with self._lock:
            t = self.totals
            t[0] += 1
            t[1] += flags[0]
            t[2] += flags[1]
            t[3] += flags[2]
            t[4] += flags[3]
            limits, percent = self.limits, self.percent
            if limits is None or self.rolled_back or percent is None or percent == 0:
                return
            why = limits.breach(
                calls=t[0], errors=t[1], timeouts=t[2], low_confidence=t[3], fallbacks=t[4]
            )
            if why is None:
                return
            self.rolled_back = True
        to = self.rollout.previous(percent)
        with runtime.lock:
            # keep the percentage the control layers ask for, so a second rollback goes further
            # down instead of back up to it
            prev = runtime.rollbacks.get(self.feature)
            origin = prev[0] if prev is not None and prev[1] == percent else percent
            runtime.rollbacks[self.feature] = (origin, to)
            runtime.bump()
        events.emit(
            ControlEvent(
                EventKind.ROLLBACK,
                self.feature,
                f"gate breached at {percent:g}%: {why}; rolled back to {to:g}% in this process",
            )
        )

    def figures(self) -> list[StageFigures]:
        """This process's counts at every percentage it has been at."""
        with self._lock:
            return [
                StageFigures(self.feature, percent, t[0], t[1], t[2], t[3], t[4], gate)
                for percent, (t, gate) in self.stages.items()
                if t[0]
            ]


def flush() -> None:
    """Write every gate's figures to the configured store (if any); never raises."""
    rows = [f for run in list(runtime.gates) for f in run.figures()]
    if not rows:
        return
    try:
        store = lifecycle.store()
    except Exception as exc:
        errors.report("rollout figures flush", exc)
        return
    save = getattr(store, "save_stage_figures", None)
    if save is None:
        return  # no store, or one without rollout figures (they are optional)
    try:
        save(ids.process_id(), rows)
    except Exception as exc:
        errors.report("rollout figures flush", exc)
