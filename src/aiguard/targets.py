"""Targets per feature ("the product canvas as code"): figures with the value they must reach."""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable
from typing import Any

from .exceptions import ConfigError

__all__ = ["METRICS", "Target"]

#: The figures a target can name, and what each means.
METRICS = {
    "calls": "guarded calls",
    "acceptance_rate": "accepted or edited / calls with a decision",
    "edit_ratio": "mean edit distance of edited answers",
    "correction_rate": "corrected / calls with a decision",
    "rejection_rate": "rejected or corrected / calls with a decision",
    "fallback_rate": "calls not served by the model / calls",
    "error_rate": "calls whose model call raised / calls",
    "timeout_rate": "calls whose model call timed out / calls",
    "p50_latency": "median latency of the whole call (s)",
    "p95_latency": "95th percentile latency (s)",
    "p99_latency": "99th percentile latency (s)",
    "cost_per_call": "cost / calls with a known cost",
    "cost_per_accepted": "cost / accepted answers",
    "mean_score": "mean rating",
    "audited_error_rate": "audited wrong / audited (served answers an auditor judged)",
    "ece": "expected calibration error of the confidence (0: calibrated)",
    "confidence_psi": "population stability index of the confidence, recent vs reference",
    "confidence_ks": "Kolmogorov-Smirnov statistic of the confidence, recent vs reference",
    "label_psi": "population stability index of the served labels, recent vs reference",
}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
_DIVISORS = {"s": 1, "ms": 1000, "%": 100}  # divide: 35 / 100 is exactly 0.35, 35 * 0.01 is not
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_PATTERN = re.compile(
    r"^\s*(?P<metric>[a-z_0-9]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>[0-9.eE+-]+)\s*"
    r"(?P<unit>[A-Za-z%]+)?\s*$"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A figure, a comparison and a value: ``Target.parse("p95_latency <= 0.5 s")``.

    Units: ``s`` and ``ms`` for latencies, ``%`` for rates, a currency code for costs (kept as
    written, not converted).

    Example:
        >>> import aiguard
        >>> t = aiguard.Target.parse("acceptance_rate >= 40 %")
        >>> (t.metric, t.op, t.value, t.check(0.42))
        ('acceptance_rate', '>=', 0.4, True)
    """

    metric: str
    op: str
    value: float
    unit: str | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> Target:
        """Parse ``"metric OP value [unit]"``; ConfigError names what is wrong."""
        if isinstance(text, Target):
            return text
        m = _PATTERN.match(text) if isinstance(text, str) else None
        if m is None:
            raise ConfigError(
                f"target {text!r} is invalid: write 'metric OP value [unit]', "
                "e.g. 'p95_latency <= 0.5 s'"
            )
        metric, op, unit = m["metric"], m["op"], m["unit"]
        if metric not in METRICS:
            raise ConfigError(
                f"target {text!r}: unknown figure {metric!r}; known: {', '.join(METRICS)}"
            )
        try:
            value = float(m["value"])
        except ValueError:
            raise ConfigError(f"target {text!r}: value {m['value']!r} is not a number") from None
        if unit is not None:
            if unit in _DIVISORS and (
                (unit == "%" and metric.endswith("_rate"))
                or (unit != "%" and metric.endswith("_latency"))
            ):
                value /= _DIVISORS[unit]
            elif not (_CURRENCY.match(unit) and metric.startswith("cost")):
                raise ConfigError(
                    f"target {text!r}: unit {unit!r} does not fit {metric!r} (use s or ms for "
                    "latencies, % for rates, a currency code such as USD for costs)"
                )
        return cls(metric, op, value, unit, text.strip())

    def check(self, actual: float | None) -> bool | None:
        """True/False against ``actual``; None when there is no figure yet."""
        if actual is None:
            return None
        return bool(_OPS[self.op](actual, self.value))

    def __str__(self) -> str:
        return self.text or f"{self.metric} {self.op} {self.value:g}"
