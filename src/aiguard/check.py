"""Checks for CI and cron: every feature's targets against the report's and the quality figures.

``aiguard.check()`` (and ``aiguard check``, ``aiguard report --check``) evaluates each configured
target of each feature. A target whose figure has no value yet (no calls, no evidence, not
enough calls for drift) is **no data**: shown, never a failure. A failing drift target
(``confidence_psi``, ``confidence_ks``, ``label_psi``) is a control event (``drift``), and, when
the feature's configuration says ``drift_rollback = true``, rolls its rollout back one stage.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from . import _control_edit, events
from . import _quality_sql as qsql
from ._runtime.state import runtime
from .events import ControlEvent, EventKind
from .report import report
from .store import configured as configured_store
from .targets import Target, parse_targets

__all__ = ["CheckResult", "TargetResult", "check"]

DRIFT = frozenset({"confidence_psi", "confidence_ks", "label_psi"})


@dataclasses.dataclass(frozen=True, slots=True)
class TargetResult:
    """One target of one feature: the figure (None: no data yet) and whether it holds.

    Example:
        >>> import aiguard
        >>> r = aiguard.TargetResult("reply", aiguard.Target.parse("ece <= 0.05"), 0.08, False)
        >>> r.status
        'FAIL'
    """

    feature: str
    target: Target
    value: float | None
    ok: bool | None

    @property
    def status(self) -> str:
        """``PASS``, ``FAIL`` or ``no data``."""
        return "no data" if self.ok is None else ("PASS" if self.ok else "FAIL")

    def describe(self) -> str:
        shown = _value(self.target.metric, self.value)
        return f"{self.status}  {self.feature}: {self.target}: {shown}"


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    """Every target checked, and the control events the check caused (drift, rollbacks).

    ``ok`` is False when any target fails; a target without data does not fail.

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:", features={"reply": {"targets": ["calls >= 5"]}})
        >>> @aiguard.guard("reply")
        ... def reply(text: str) -> str:
        ...     return "ok"
        >>> reply("hi")
        'ok'
        >>> result = aiguard.check()
        >>> result.ok, [r.status for r in result.results]
        (False, ['FAIL'])
    """

    results: list[TargetResult]
    events: list[ControlEvent] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[TargetResult]:
        return [r for r in self.results if r.ok is False]

    def to_text(self, *, verbose: bool = False) -> str:
        """Failing targets and those without data (all of them with ``verbose``), the events,
        and a count."""
        lines = [r.describe() for r in self.results if verbose or r.ok is not True]
        lines += [f"{e.kind.value}: {e.feature}: {e.reason}" for e in self.events]
        counts = {s: sum(r.status == s for r in self.results) for s in ("FAIL", "PASS", "no data")}
        lines.append(
            f"{len(self.results)} targets: {counts['FAIL']} failing, {counts['PASS']} passing, "
            f"{counts['no data']} without data"
        )
        return "\n".join(lines)


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "no data"
    if metric.endswith("_rate"):
        return f"{100 * value:.2f}%"
    if metric.endswith("_latency"):
        return f"{value:.3f} s"
    return f"{value:.4g}"


def check(
    feature: str | None = None,
    *,
    since: str | float | None = None,
    store: Any = None,
    features: Mapping[str, Any] | None = None,
    control: str | os.PathLike[str] | None = None,
) -> CheckResult:
    """Check each feature's targets (``feature``, or every configured feature with targets).

    Args:
        feature: one feature, or all.
        since: the window of the figures (``"7d"``, an ISO date, a POSIX time; drift compares
            this window, default the last 7 days, with its reference).
        store: the store to read (default: the configured one).
        features: feature configurations (``aiguard.FeatureConfig`` or mappings with
            ``targets`` and ``drift_rollback``; default: those configured).
        control: where a drift rollback is written (a control file path or ``redis://`` URL;
            default: the control sources configured, else this process only).

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:", features={"reply": {"targets": ["ece <= 0.1"]}})
        >>> print(aiguard.check().to_text())
        no data  reply: ece <= 0.1: no data
        1 targets: 0 failing, 0 passing, 1 without data
    """
    configs = dict(runtime.features if features is None else features)
    names = [feature] if feature is not None else sorted(configs)
    store = configured_store() if store is None else store
    results: list[TargetResult] = []
    caused: list[ControlEvent] = []
    for name in names:
        cfg = configs.get(name)
        wanted = list(parse_targets(_get(cfg, "targets", ()), where=f"feature {name!r}: targets"))
        if not wanted:
            continue
        rep = report(name, since=since, by=(), store=store, targets={name: wanted})
        breaches = []
        for target, value, ok in rep.targets.get(name, [(t, None, None) for t in wanted]):
            metric = target.metric
            results.append(TargetResult(name, target, value, ok))
            if ok is False and metric in DRIFT:
                breaches.append(f"{metric} {value:.3f} breaks {target}")
        if breaches:
            why = "; ".join(breaches)
            event = ControlEvent(EventKind.DRIFT, name, why)
            events.emit(event)
            caused.append(event)
            if _get(cfg, "drift_rollback", False):
                rolled = _rollback(name, why, store, control)
                if rolled is not None:
                    caused.append(rolled)
    return CheckResult(results, caused)


def _get(cfg: Any, key: str, default: Any) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _rollback(
    feature: str, why: str, store: Any, control: str | os.PathLike[str] | None
) -> ControlEvent | None:
    """Roll ``feature`` back one stage: the stage below in its Rollout when a guard of it lives
    in this process, else the highest rollout percentage below the current one that its calls
    were recorded at (0 % if none). Written to the control source (``control``, else the
    configured ones); with none, in this process only (as a rollout gate does)."""
    d = qsql.db(store)
    with runtime.lock:
        live = [c for c in list(runtime.cores) if c.feature == feature and c.spec.rollout]
    percent: float | None = None
    if control is not None:
        said = _control_edit.load(control).features.get(feature)
        percent = None if said is None else said.rollout
    if percent is None and live:
        percent = live[0].settings.percent
    if percent is None:
        latest = qsql.latest_call(d, feature)
        percent = None if latest is None else latest[1]
    if percent is None or percent <= 0:
        return None  # no rollout in force: nothing to roll back
    if live:
        to = live[0].spec.rollout.previous(percent)
    else:
        to = max((p for p in qsql.percents(d, feature) if p < percent), default=0.0)
    if control is not None or _control_edit.configured():
        written = _control_edit.write(
            feature, control, why=f"drift: {why}", via="check", rollout=to
        )
        where = ", ".join(written)
    else:
        with runtime.lock:
            prev = runtime.rollbacks.get(feature)
            origin = prev[0] if prev is not None and prev[1] == percent else percent
            runtime.rollbacks[feature] = (origin, to)
            runtime.bump()
        where = "this process"
    event = ControlEvent(
        EventKind.ROLLBACK,
        feature,
        f"drift: {why}; rolled back from {percent:g}% to {to:g}% ({where})",
    )
    events.emit(event)
    return event
