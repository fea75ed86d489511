"""Rollout quality gates at run time, and their figures shared through the store.

Each guard with a rollout keeps, for the percentage in force, the counts of its model calls
(calls, errors, timeouts, low confidence, fallbacks). A gate breach rolls this process back to the
previous stage. A daemon thread writes the counts to the configured store every few seconds, one
row per process, feature and percentage, so ``aiguard rollout check`` and ``aiguard status`` can
judge a stage over every replica's calls.
"""

from __future__ import annotations

import atexit
import dataclasses
import threading
import time
import weakref
from typing import Any

from . import _ids, _internal, events
from ._state import state
from ._window import _FLAGS
from .events import ControlEvent, EventKind
from .exceptions import ConfigError
from .limits import Limits
from .outcome import Reason
from .rollout import Rollout

FLUSH_SECONDS = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class StageFigures:
    """Counts of model calls at one percentage (from one process, or summed)."""

    feature: str
    percent: float
    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    low_confidence: int = 0
    fallbacks: int = 0
    gate: Limits | None = None

    def breach(self) -> str | None:
        if self.gate is None:
            return None
        return self.gate.breach(
            calls=self.calls,
            errors=self.errors,
            timeouts=self.timeouts,
            low_confidence=self.low_confidence,
            fallbacks=self.fallbacks,
        )


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
        _runs.add(self)
        _start_flusher()

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
        with state.lock:
            # keep the percentage the control layers ask for, so a second rollback goes further
            # down instead of back up to it
            prev = state.rollbacks.get(self.feature)
            origin = prev[0] if prev is not None and prev[1] == percent else percent
            state.rollbacks[self.feature] = (origin, to)
            state.bump()
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


_runs: weakref.WeakSet[GateRun] = weakref.WeakSet()
_flusher: threading.Thread | None = None
_flusher_lock = threading.Lock()


def _start_flusher() -> None:
    global _flusher
    with _flusher_lock:
        if _flusher is None or not _flusher.is_alive():
            _flusher = threading.Thread(target=_flush_loop, name="aiguard-gates", daemon=True)
            _flusher.start()


def _flush_loop() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        flush()


def flush() -> None:
    """Write every gate's figures to the configured store (if any); never raises."""
    rows = [f for run in list(_runs) for f in run.figures()]
    if not rows:
        return
    try:
        store = state.store()
    except ConfigError:
        return  # no store configured: figures stay in this process
    except Exception as exc:
        _internal.report("rollout figures flush", exc)
        return
    save = getattr(store, "save_stage_figures", None)
    if save is None:
        return  # a store without rollout figures (they are optional)
    try:
        save(_ids.process_id(), rows)
    except Exception as exc:
        _internal.report("rollout figures flush", exc)


atexit.register(flush)


def summed(rows: list[StageFigures]) -> StageFigures | None:
    """Add up several processes' figures for one feature and percentage."""
    if not rows:
        return None
    first = rows[0]
    total: dict[str, Any] = {
        "calls": 0,
        "errors": 0,
        "timeouts": 0,
        "low_confidence": 0,
        "fallbacks": 0,
    }
    for r in rows:
        for k in total:
            total[k] += getattr(r, k)
    gate = next((r.gate for r in rows if r.gate is not None), None)
    return StageFigures(first.feature, first.percent, gate=gate, **total)
