"""Quality limits over a window of calls: used by the automatic kill and by rollout gates."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ._checks import unit_interval
from .exceptions import ConfigError

__all__ = ["Limits", "StageFigures"]


def _rate(name: str, value: Any) -> float | None:
    return None if value is None else unit_interval(name, value)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Highest acceptable rates over a window of model calls; ``None`` leaves a rate unchecked.

    A rate goes over its limit when it is strictly greater, and only once the window holds at
    least ``min_calls`` calls. The rates: errors (reason ``error``), timeouts (``timeout``), low
    confidence (``low_confidence`` and ``invalid_confidence``), and fallbacks (any model call
    whose result was not served).

    Example:
        >>> import aiguard
        >>> limits = aiguard.Limits(max_error_rate=0.2, min_calls=10)
        >>> limits.breach(calls=20, errors=5, timeouts=0, low_confidence=0, fallbacks=5)
        'error rate 0.25 > 0.2 over 20 calls'
    """

    max_error_rate: float | None = None
    max_timeout_rate: float | None = None
    max_low_confidence_rate: float | None = None
    max_fallback_rate: float | None = None
    min_calls: int = 20

    def __post_init__(self) -> None:
        for f in ("max_error_rate", "max_timeout_rate", "max_low_confidence_rate"):
            _rate(f, getattr(self, f))
        _rate("max_fallback_rate", self.max_fallback_rate)
        if isinstance(self.min_calls, bool) or not isinstance(self.min_calls, int):
            raise ConfigError(f"min_calls={self.min_calls!r} is invalid: must be a whole number")
        if self.min_calls < 1:
            raise ConfigError(f"min_calls={self.min_calls!r} is invalid: must be at least 1")

    @property
    def active(self) -> bool:
        """True when at least one rate is limited."""
        return any(
            x is not None
            for x in (
                self.max_error_rate,
                self.max_timeout_rate,
                self.max_low_confidence_rate,
                self.max_fallback_rate,
            )
        )

    def breach(
        self, *, calls: int, errors: int, timeouts: int, low_confidence: int, fallbacks: int
    ) -> str | None:
        """Why these counts go over a limit, or ``None`` when they do not."""
        if calls < self.min_calls or calls == 0:
            return None
        for label, count, limit in (
            ("error rate", errors, self.max_error_rate),
            ("timeout rate", timeouts, self.max_timeout_rate),
            ("low-confidence rate", low_confidence, self.max_low_confidence_rate),
            ("fallback rate", fallbacks, self.max_fallback_rate),
        ):
            if limit is not None:
                rate = count / calls
                if rate > limit and not math.isclose(rate, limit):
                    return f"{label} {rate:.3g} > {limit:g} over {calls} calls"
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class StageFigures:
    """Counts of model calls at one percentage (from one process, or summed); with the gate
    in force, ``breach()`` says why the stage fails, or None.

    Example:
        >>> from aiguard.limits import Limits, StageFigures
        >>> f = StageFigures("triage", 25.0, calls=40, errors=8,
        ...                  gate=Limits(max_error_rate=0.1, min_calls=20))
        >>> f.breach() is not None
        True
    """

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
