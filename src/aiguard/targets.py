"""Targets per feature ("the product canvas as code"): figures with the value they must reach.

A target is checked against its figure's kind when it is parsed (at ``configure()``, when a
config file is loaded, when ``report(targets=...)`` is called): a rate takes ``%`` or a
fraction from 0 to 1, a latency a duration of 0 or more (``s``, ``ms``, ``us``), a cost an
amount of 0 or more (optionally with a currency code), a count or an index a number of 0 or
more. A target that cannot be met for its units (``acceptance_rate >= 85`` without ``%``)
is a :class:`aiguard.ConfigError` naming the target and the value, not a report that fails
forever.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from .exceptions import ConfigError

__all__ = ["METRICS", "Target", "parse_targets"]

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
    "cost_per_call": "cost / calls (unknown while a call has no known cost)",
    "cost_per_accepted": "cost / accepted answers (unknown while a call has no known cost)",
    "mean_score": "mean rating",
    "audited_error_rate": "audited wrong / audited (served answers an auditor judged)",
    "ece": "expected calibration error of the confidence (0: calibrated)",
    "confidence_psi": "population stability index of the confidence, recent vs reference",
    "confidence_ks": "Kolmogorov-Smirnov statistic of the confidence, recent vs reference",
    "label_psi": "population stability index of the served labels, recent vs reference",
    "escalation_rate": "calls escalated to a bigger model (aiguard.Escalate) / calls",
}

#: The kind of each figure, which decides the units and values its targets may take:
#: ``fraction`` (``%``, or 0 to 1), ``duration`` (``s``/``ms``/``us``, 0 or more), ``money``
#: (a currency code, 0 or more), ``count`` and ``index`` (0 or more, no unit), ``score`` (any
#: finite number, no unit).
KINDS = {
    "calls": "count",
    "acceptance_rate": "fraction",
    "edit_ratio": "fraction",
    "correction_rate": "fraction",
    "rejection_rate": "fraction",
    "fallback_rate": "fraction",
    "error_rate": "fraction",
    "timeout_rate": "fraction",
    "p50_latency": "duration",
    "p95_latency": "duration",
    "p99_latency": "duration",
    "cost_per_call": "money",
    "cost_per_accepted": "money",
    "mean_score": "score",
    "audited_error_rate": "fraction",
    "ece": "fraction",
    "confidence_psi": "index",
    "confidence_ks": "fraction",
    "label_psi": "index",
    "escalation_rate": "fraction",
}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
# divide: 35 / 100 is exactly 0.35, 35 * 0.01 is not
_DURATIONS = {"s": 1, "ms": 1000, "us": 1_000_000, "µs": 1_000_000}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_PATTERN = re.compile(
    r"^\s*(?P<metric>[A-Za-z_0-9]+)\s*(?P<op><=|>=|<|>)\s*"
    r"(?P<value>[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*"
    r"(?P<unit>[A-Za-zµ%]+)?\s*$"
)
_CONDITION = re.compile(r"^\s*(<=|>=|<|>)")


def _g(value: float) -> str:
    """A number as a person wrote it: 85, 0.85, 1.5e-06."""
    return f"{value:g}"


def _units_hint(metric: str) -> str:
    kind = KINDS[metric]
    return {
        "fraction": f"{metric} is a rate: write a percentage such as '85 %' or a fraction from "
        "0 to 1 such as 0.85",
        "duration": f"{metric} is a latency: write a duration of 0 or more in s, ms or us, "
        "such as '500 ms' or '0.5 s'",
        "money": f"{metric} is a cost: write an amount of 0 or more, optionally with a currency "
        "code, such as '0.002 USD'",
        "count": f"{metric} is a count: write a number of 0 or more, without a unit",
        "index": f"{metric} is an index of 0 or more: write a number without a unit, such as 0.2",
        "score": f"{metric} is a mean rating: write a number without a unit",
    }[kind]


def _check_value(
    text: str, metric: str, number: float, unit: str | None, written: str | None = None
) -> float:
    """The value a target compares with, from the number and unit as written; ConfigError
    naming the target and the value when they do not fit the figure's kind."""
    kind = KINDS[metric]
    shown = (written or _g(number)) + ("" if unit is None else f" {unit}")
    if not math.isfinite(number):
        raise ConfigError(f"target {text!r}: value {shown} is not a finite number")
    if unit is not None:
        fits = (
            (kind == "fraction" and unit == "%")
            or (kind == "duration" and unit in _DURATIONS)
            or (kind == "money" and _CURRENCY.match(unit) is not None)
        )
        if not fits:
            raise ConfigError(
                f"target {text!r}: unit {unit!r} does not fit {metric!r} ({_units_hint(metric)})"
            )
    if kind == "score":
        return number
    if number < 0:
        raise ConfigError(f"target {text!r}: value {shown} is negative ({_units_hint(metric)})")
    if kind == "fraction":
        if unit == "%":
            if number > 100:
                raise ConfigError(
                    f"target {text!r}: value {shown} is above 100 % ({_units_hint(metric)})"
                )
            return number / 100
        if number > 1:
            raise ConfigError(
                f"target {text!r}: value {shown} is not a fraction from 0 to 1: write "
                f"'{_g(number)} %' for a percentage, or {_g(number / 100)} as a fraction"
                f" ({metric} is a rate)"
            )
    if kind == "duration" and unit is not None:
        return number / _DURATIONS[unit]
    return number


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A figure, a comparison and a value: ``Target.parse("p95_latency <= 0.5 s")``.

    Units are checked against the figure: ``%`` or a fraction from 0 to 1 for rates (``%``
    converted: ``85 %`` is 0.85), ``s``, ``ms`` or ``us`` for latencies (converted to seconds;
    none: seconds), a currency code for costs (kept as written, not converted), none for counts,
    indices and scores. Rates, latencies, costs, counts and indices cannot be negative.

    Example:
        >>> import aiguard
        >>> t = aiguard.Target.parse("acceptance_rate >= 40 %")
        >>> (t.metric, t.op, t.value, t.check(0.42))
        ('acceptance_rate', '>=', 0.4, True)
        >>> try:
        ...     aiguard.Target.parse("acceptance_rate >= 85")
        ... except aiguard.ConfigError as exc:
        ...     print(str(exc)[:58])
        target 'acceptance_rate >= 85': value 85 is not a fraction
    """

    metric: str
    op: str
    value: float
    unit: str | None = None
    text: str = ""

    def __post_init__(self) -> None:
        """A Target built directly is held to the rules ``parse`` applies."""
        shown = self.text or f"{self.metric} {self.op} {self.value!r}"
        if self.metric not in METRICS:
            raise ConfigError(
                f"target {shown!r}: unknown figure {self.metric!r}; known: {', '.join(METRICS)}"
            )
        if self.op not in _OPS:
            raise ConfigError(
                f"target {shown!r}: comparison {self.op!r} is not one of >=, <=, >, <"
            )
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise ConfigError(f"target {shown!r}: value {self.value!r} is not a number")
        number = float(self.value)  # back to the value as written (parse divided it)
        if self.unit == "%" or self.unit in _DURATIONS:
            number *= 100 if self.unit == "%" else _DURATIONS[self.unit]
        _check_value(shown, self.metric, number, self.unit)

    @classmethod
    def parse(cls, text: str | Target) -> Target:
        """Parse ``"metric OP value [unit]"``; ConfigError names the target and what is wrong."""
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
        value = _check_value(text, metric, float(m["value"]), unit, m["value"])
        return cls(metric, op, value, unit, text.strip())

    def check(self, actual: float | None) -> bool | None:
        """True/False against ``actual``; None when there is no figure yet."""
        if actual is None:
            return None
        return bool(_OPS[self.op](actual, self.value))

    def __str__(self) -> str:
        return self.text or f"{self.metric} {self.op} {self.value:g}"


def parse_targets(value: Any, *, where: str = "targets") -> tuple[Target, ...]:
    """Targets from any of the forms a feature's ``targets`` take, each checked.

    The forms: a list (or tuple) of target texts or :class:`Target` objects; one target text;
    or a mapping from figure to condition, ``{"acceptance_rate": ">= 85 %"}``. ConfigError names
    ``where``, the target and the value when one is wrong.

    Example:
        >>> from aiguard.targets import parse_targets
        >>> [str(t) for t in parse_targets({"acceptance_rate": ">= 85 %", "p95_latency": "<= 1 s"})]
        ['acceptance_rate >= 85 %', 'p95_latency <= 1 s']
        >>> [t.value for t in parse_targets(["error_rate <= 2 %"])]
        [0.02]
    """
    try:
        return _parse_targets(value, where)
    except ConfigError as exc:
        if where == "targets" or str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: {exc}") from None


def _parse_targets(value: Any, where: str) -> tuple[Target, ...]:
    if isinstance(value, str | Target):
        return (Target.parse(value),)
    if isinstance(value, Mapping):
        found = []
        for metric, condition in value.items():
            if not isinstance(metric, str) or not isinstance(condition, str):
                raise ConfigError(
                    f"{where}={{{metric!r}: {condition!r}}} is invalid: map a figure to a "
                    "condition, such as {'acceptance_rate': '>= 85 %'}"
                )
            if _CONDITION.match(condition) is None:
                raise ConfigError(
                    f"{where}: target {metric!r}: condition {condition!r} is invalid: write "
                    "'OP value [unit]', such as '>= 85 %' (OP: >=, <=, >, <)"
                )
            found.append(Target.parse(f"{metric} {condition.strip()}"))
        return tuple(found)
    if isinstance(value, list | tuple):
        for item in value:
            if not isinstance(item, str | Target):
                raise ConfigError(
                    f"{where}: target {item!r} is invalid: give texts such as "
                    "'acceptance_rate >= 85 %'"
                )
        return tuple(Target.parse(item) for item in value)
    raise ConfigError(
        f"{where}={value!r} is invalid: give a list of targets such as "
        "['acceptance_rate >= 85 %'], or a mapping such as {'acceptance_rate': '>= 85 %'}"
    )


def is_condition_mapping(value: Any) -> bool:
    """Whether ``value`` maps figures to conditions (``{"calls": ">= 10"}``), rather than
    features to their targets: every value is a text starting with a comparison."""
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(v, str) and _CONDITION.match(v) for v in value.values())
    )
