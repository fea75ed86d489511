"""Control events: kills, revivals, automatic trips, probes, recoveries, rollbacks, drift, and
settings found to reject every result (``misconfigured``).

Every event is logged (logger ``aiguard``), kept in a short per-process history in the runtime
(:func:`recent_events`), and emitted as telemetry (a span event and a counter).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time

from ._runtime import errors, telemetry
from ._runtime.state import runtime

__all__ = ["ControlEvent", "EventKind", "recent_events"]

logger = logging.getLogger("aiguard")


class EventKind(enum.StrEnum):
    """What happened to a feature's control state.

    Example:
        >>> import aiguard
        >>> aiguard.EventKind.TRIP.value
        'trip'
    """

    KILL = "kill"
    REVIVE = "revive"
    TRIP = "trip"
    PROBE = "probe"
    RECOVER = "recover"
    REOPEN = "reopen"
    ROLLBACK = "rollback"
    CONTROL_ERROR = "control_error"
    DRIFT = "drift"
    MISCONFIGURED = "misconfigured"  # every one of a guard's first results rejected


@dataclasses.dataclass(frozen=True, slots=True)
class ControlEvent:
    """One change of a feature's control state, with why and (when known) by whom.

    Example:
        >>> import aiguard
        >>> e = aiguard.ControlEvent(aiguard.EventKind.KILL, "triage", "bad answers", by="ops")
        >>> e.feature, e.kind.value
        ('triage', 'kill')
    """

    kind: EventKind
    feature: str
    reason: str
    by: str | None = None
    at: float = dataclasses.field(default_factory=time.time)


_LEVEL = {
    EventKind.PROBE: logging.INFO,
    EventKind.REVIVE: logging.INFO,
    EventKind.RECOVER: logging.INFO,
}


def emit(event: ControlEvent) -> None:
    """Log, keep and hand out ``event``; never raises."""
    with runtime.lock:
        runtime.events.append(event)
    by = f" by {event.by}" if event.by else ""
    logger.log(
        _LEVEL.get(event.kind, logging.WARNING),
        "aiguard: %s %s%s: %s",
        event.feature,
        event.kind.value,
        by,
        event.reason,
    )
    try:
        telemetry.control_event(event)
    except Exception as exc:
        errors.report("control event telemetry", exc)


def recent_events(feature: str | None = None) -> list[ControlEvent]:
    """The latest control events of this process (at most 1,000), oldest first.

    Example:
        >>> import aiguard
        >>> isinstance(aiguard.recent_events(), list)
        True
    """
    with runtime.lock:
        return [e for e in runtime.events if feature is None or e.feature == feature]


def clear() -> None:
    """Forget the event history (tests)."""
    with runtime.lock:
        runtime.events.clear()
