"""The first calls of a guard, watched for a setting that rejects every result.

A confidence name that no result has, a confidence reader that raises, or a validator that
rejects everything makes every call fall back, forever, with nothing broken to see. What could not
be known at decoration is caught here: when the first :data:`WATCHED` results the model gave were
all rejected for those reasons (``invalid_confidence``, ``invalid_output``) and the feature never
served one, a ``misconfigured`` control event says so, once per feature in the process (logged at
WARNING on logger ``aiguard``, kept in ``aiguard.recent_events()``, counted in
``aiguard.control.events``).

The watch sees only the calls that were not served by the model (``finish.publish``): the served
path does not touch it, and the feature's figures say whether any result was served. It stops for
good at its first served or otherwise judged result (``low_confidence``: the confidence was read),
or once it has reported, so after its window it costs one attribute read on the fallback path.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import events
from .._runtime import errors
from .._runtime.state import runtime
from ..events import ControlEvent, EventKind
from ..outcome import Reason, Source

__all__ = ["WATCHED", "FirstCalls", "watching"]

WATCHED = 20  # results, all rejected, before the warning

# rejected for a reason a setting can cause on every call
_SUSPECT = frozenset({Reason.INVALID_CONFIDENCE, Reason.INVALID_OUTPUT})
# the model's result was read and judged: the confidence setting works
_JUDGED = frozenset({Reason.SERVED, Reason.LOW_CONFIDENCE})


class FirstCalls:
    """One guard's watch over its first results; ``core.watch`` until it stops (then None)."""

    __slots__ = ("core", "lock", "rejected", "why")

    def __init__(self, core: Any) -> None:
        self.core = core
        self.lock = threading.Lock()
        self.rejected = 0
        self.why: dict[Reason, str] = {}  # the latest detail, by reason

    def __call__(self, result: Any) -> None:
        """See one published Outcome; never raises."""
        try:
            self.see(result.reason, result.source, result.detail)
        except Exception as exc:  # pragma: no cover - a bug here must not reach the call
            self.stop()
            errors.report(f"first-calls watch of {self.core.feature!r}", exc)

    def see(self, reason: Reason, source: Source | None, detail: str | None) -> None:
        if reason in _JUDGED:
            self.stop()
            return
        if reason not in _SUSPECT:
            return  # the model gave no result to judge (error, timeout, kill, rollout, ...)
        if self.served():
            self.stop()
            return
        with self.lock:
            self.rejected += 1
            self.why[reason] = detail or reason.value
            done = self.rejected >= WATCHED
            why = dict(self.why)
        if done:
            self.stop()
            self.report(why)

    def served(self) -> bool:
        """Whether any call of the feature was served by the model (its figures say so)."""
        pairs = self.core.acct.stats.total().pairs
        return pairs.get((Source.MODEL, Reason.SERVED), 0) > 0  # type: ignore[no-any-return]

    def stop(self) -> None:
        core = self.core
        if core.watch is self:
            core.watch = None

    def report(self, why: dict[Reason, str]) -> None:
        feature = self.core.feature
        if not errors.first_time(f"misconfigured:{feature}"):
            return
        settings = self.core.settings
        hints = []
        if Reason.INVALID_CONFIDENCE in why:
            name = settings.confidence_name
            setting = f"confidence={name!r}" if name else "the confidence= callable"
            hints.append(f"invalid_confidence ({why[Reason.INVALID_CONFIDENCE]}): check {setting}")
        if Reason.INVALID_OUTPUT in why:
            hints.append(f"invalid_output ({why[Reason.INVALID_OUTPUT]}): check validate=")
        events.emit(
            ControlEvent(
                EventKind.MISCONFIGURED,
                feature,
                f"the first {WATCHED} results of the model were all rejected and none was "
                f"served: " + "; ".join(hints),
            )
        )


def watching(core: Any) -> FirstCalls | None:
    """A watch for ``core``, unless its feature was reported already in this process."""
    with runtime.lock:
        if f"misconfigured:{core.feature}" in runtime.error_seen:
            return None
    return FirstCalls(core)
