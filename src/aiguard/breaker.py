"""The automatic kill: a circuit breaker on a feature's quality."""

from __future__ import annotations

import dataclasses
import enum
import threading
from datetime import timedelta
from time import monotonic

from . import events
from ._checks import seconds
from ._runtime.state import track
from ._runtime.window import Window
from .events import ControlEvent, EventKind
from .exceptions import ConfigError
from .limits import Limits
from .outcome import _FLAGS, Reason

__all__ = ["Breaker", "BreakerState"]


class BreakerState(enum.StrEnum):
    """Closed: calls reach the model. Open: tripped, the fallback serves. Half-open: probing.

    Example:
        >>> import aiguard
        >>> aiguard.BreakerState.HALF_OPEN.value
        'half_open'
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Breaker:
    """Trip a feature when its quality goes over a limit; probe, then recover.

    Over a sliding window (the last ``window`` model calls, none older than ``window_seconds``),
    when a rate goes over its limit with at least ``min_calls`` calls in the window, the feature
    trips: calls go to the fallback chain with reason ``auto_killed``. After ``cooldown``, one call
    in ``round(1 / probe_share)`` probes the model (half-open); ``probes`` good probes in a row
    close the breaker, a bad one reopens it. A probe is bad when its reason counts toward a limit
    that is set.

    Example:
        >>> import aiguard
        >>> @aiguard.guard("triage", breaker=aiguard.Breaker(max_error_rate=0.5, min_calls=4),
        ...                fallback=aiguard.Default("rules"))
        ... def triage(ticket: str) -> str:
        ...     raise ConnectionError("model down")
        >>> [triage("x") for _ in range(5)]
        ['rules', 'rules', 'rules', 'rules', 'rules']
        >>> aiguard.last_outcome().reason
        <Reason.AUTO_KILLED: 'auto_killed'>
    """

    max_error_rate: float | None = None
    max_timeout_rate: float | None = None
    max_low_confidence_rate: float | None = None
    max_fallback_rate: float | None = None
    min_calls: int = 20
    window: int = 100
    window_seconds: float | timedelta | None = 60.0
    cooldown: float | timedelta = 30.0
    probe_share: float = 0.1
    probes: int = 5

    def __post_init__(self) -> None:
        limits = self.limits  # validates the rates and min_calls
        if not limits.active:
            raise ConfigError(
                "Breaker() needs at least one limit: max_error_rate, max_timeout_rate, "
                "max_low_confidence_rate or max_fallback_rate"
            )
        for name in ("window", "probes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"Breaker({name}={v!r}) is invalid: must be a whole number >= 1")
        if self.window < self.min_calls:
            raise ConfigError(
                f"Breaker(window={self.window!r}) is invalid: smaller than min_calls="
                f"{self.min_calls!r}, so the breaker could never trip"
            )
        if self.window_seconds is not None:
            seconds("Breaker(window_seconds)", self.window_seconds)
        seconds("Breaker(cooldown)", self.cooldown)
        share = self.probe_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise ConfigError(f"Breaker(probe_share={share!r}) is invalid: must be in (0, 1]")

    @property
    def limits(self) -> Limits:
        """The rate limits, as a :class:`Limits` value."""
        return Limits(
            max_error_rate=self.max_error_rate,
            max_timeout_rate=self.max_timeout_rate,
            max_low_confidence_rate=self.max_low_confidence_rate,
            max_fallback_rate=self.max_fallback_rate,
            min_calls=self.min_calls,
        )


class BreakerRun:
    """One guard's breaker at run time. ``admit`` before the model call, ``record`` after."""

    __slots__ = (
        "__weakref__",
        "_bad",
        "_checks",
        "_counter",
        "_every",
        "_good",
        "_lock",
        "_min_calls",
        "cooldown",
        "feature",
        "limits",
        "opened_at",
        "policy",
        "state",
        "why",
        "window",
    )

    def __init__(self, policy: Breaker, feature: str) -> None:
        self.policy = policy
        self.feature = feature
        self.limits = policy.limits
        ws = policy.window_seconds
        self.window = Window(policy.window, None if ws is None else seconds("window_seconds", ws))
        self.cooldown = seconds("cooldown", policy.cooldown)
        self._every = max(1, round(1 / policy.probe_share))
        self._lock = threading.Lock()
        track(self)
        self.state = BreakerState.CLOSED
        self.opened_at = 0.0
        self.why = ""
        self._counter = 0
        self._good = 0
        limits = self.limits
        active = (
            limits.max_error_rate is not None,
            limits.max_timeout_rate is not None,
            limits.max_low_confidence_rate is not None,
            limits.max_fallback_rate is not None,
        )
        self._bad = frozenset(
            r
            for r, flags in _FLAGS.items()
            if any(f and a for f, a in zip(flags, active, strict=True))
        )
        self._min_calls = limits.min_calls
        rates = (
            limits.max_error_rate,
            limits.max_timeout_rate,
            limits.max_low_confidence_rate,
            limits.max_fallback_rate,
        )
        self._checks = tuple((i + 1, r) for i, r in enumerate(rates) if r is not None)

    def admit(self) -> str | None:
        """``None``: call the model (closed, or this call is a probe). Else why not."""
        if self.state is BreakerState.CLOSED:
            return None
        with self._lock:
            now = monotonic()
            if self.state is BreakerState.OPEN:
                wait = self.opened_at + self.cooldown - now
                if wait > 0:
                    return f"tripped ({self.why}); probing again in {wait:.3g} s"
                self.state = BreakerState.HALF_OPEN
                self._counter = 0
                self._good = 0
            if self.state is BreakerState.HALF_OPEN:
                self._counter += 1
                if (self._counter - 1) % self._every == 0:
                    probe = True
                else:
                    return f"tripped ({self.why}); half-open, this call is not a probe"
            else:
                return None
        if probe:
            events.emit(ControlEvent(EventKind.PROBE, self.feature, "half-open: probing the model"))
        return None

    def record(self, reason: Reason) -> None:
        """Count a model call's result; may trip, close or reopen the breaker."""
        flags = _FLAGS.get(reason)
        if flags is None:
            return
        event: ControlEvent | None = None
        if self.state is BreakerState.CLOSED:
            window = self.window
            with window.lock:
                c = window.add_locked(flags)
                calls = c[0]
                if calls < self._min_calls:
                    return
                for i, limit in self._checks:  # a cheap test first; the message only on a breach
                    if c[i] > limit * calls:
                        break
                else:
                    return
                why = self.limits.breach(
                    calls=calls, errors=c[1], timeouts=c[2], low_confidence=c[3], fallbacks=c[4]
                )
            if why is None:
                return
            with self._lock:
                if self.state is not BreakerState.CLOSED:
                    return
                self._open(why)
                event = ControlEvent(EventKind.TRIP, self.feature, why)
        elif self.state is BreakerState.HALF_OPEN:
            with self._lock:
                if self.state is not BreakerState.HALF_OPEN:
                    return
                if reason in self._bad:
                    self._open(f"probe failed: {reason.value}")
                    event = ControlEvent(EventKind.REOPEN, self.feature, self.why)
                else:
                    self._good += 1
                    if self._good >= self.policy.probes:
                        self.state = BreakerState.CLOSED
                        self.window.clear()
                        event = ControlEvent(
                            EventKind.RECOVER, self.feature, f"{self._good} good probes"
                        )
        if event is not None:
            events.emit(event)

    def reset(self) -> bool:
        """Close the breaker and forget the window (``aiguard.revive``); True if it was not
        closed."""
        with self._lock:
            was_open = self.state is not BreakerState.CLOSED
            self.state = BreakerState.CLOSED
            self.window.clear()
            return was_open

    def _open(self, why: str) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = monotonic()
        self.why = why
