"""A feature's system card, written from its configuration and its measured figures.

``aiguard.card("reply")`` (or ``aiguard card reply [--html]``) gathers in one document: the
owner, intended use and limits (the canvas, :mod:`aiguard.canvas`), the model(s) seen in the
call records, the fallback chain (the guard's, when this process declared it), the rollout
stage, the targets and their status, quality (acceptance, audited error rate, calibration),
segments, drift, cost and ROI, and adoption, with the period the figures cover. Every figure is
the report's (:func:`aiguard.report` over the same window), so card and report never disagree.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._card_render import SECTIONS
from ._checks import check_feature
from ._runtime.state import runtime
from .report import FeatureFigures, Report, SegmentGap, report

if TYPE_CHECKING:
    from .canvas import Canvas
    from .control import ControlState

__all__ = ["SystemCard", "card"]


@dataclasses.dataclass(frozen=True, slots=True)
class SystemCard:
    """A feature's system card: ``sections`` maps each section's id (``SECTIONS``) to its
    (label, value) rows, all text; ``report`` is the report the figures come from.

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:", features={"reply": {"owner": "ana"}})
        >>> c = aiguard.card("reply")
        >>> c.sections["purpose"][0]
        ('owner', 'ana')
        >>> "Owner, intended use and limits" in c.to_text()
        True
    """

    feature: str
    generated_at: float
    since: float | None
    sections: dict[str, list[tuple[str, str]]]
    report: Report = dataclasses.field(repr=False, compare=False)

    def to_text(self) -> str:
        """The card as plain text: a title, then each section with its rows."""
        out = [f"System card: {self.feature}"]
        for key, title in SECTIONS:
            out.append("")
            out.append(title)
            rows = self.sections.get(key) or [("", "none")]
            width = max(len(label) for label, _ in rows)
            out += [f"  {label.ljust(width)}  {value}".rstrip() for label, value in rows]
        return "\n".join(out)

    def to_html(self) -> str:
        """The card as one self-contained HTML page (no scripts)."""
        from ._card_render import html

        return html(self)

    def to_json(self) -> str:
        """The card as JSON: the feature, when it was made, the window's start, and each
        section's rows as ``[label, value]`` pairs."""
        return json.dumps(
            {
                "feature": self.feature,
                "generated_at": self.generated_at,
                "since": self.since,
                "sections": {
                    key: [list(row) for row in self.sections.get(key, [])] for key, _ in SECTIONS
                },
            },
            ensure_ascii=False,
        )


def card(
    feature: str,
    *,
    since: str | float | None = None,
    store: Any = None,
    control: ControlState | None = None,
) -> SystemCard:
    """The system card of ``feature``, from its configuration and the figures of its calls
    since ``since`` (default: every recorded call).

    Args:
        feature: the feature.
        since: only calls from then on: ``"30d"``, an ISO date, a POSIX time.
        store: the store to read (default: the configured one).
        control: the control state to read the kill switch and rollout from (default: what this
            process read from its control sources).

    Fallbacks and the rollout's stages come from the guard when this process declared it;
    otherwise the card says they are declared in code elsewhere.

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:")
        >>> aiguard.card("reply").sections["models"]
        [('models', 'no calls recorded in the period')]
    """
    check_feature(feature)
    cfg = runtime.features.get(feature)
    core = next((c for c in list(runtime.cores) if c.feature == feature), None)
    splits = ["model", "arm", *_segment_names(cfg, core)]
    found = report(feature, since=since, by=splits, store=store)
    figures = next((f for f in found.features if f.feature == feature), None)
    canvas = found.canvas.get(feature)
    if canvas is None:
        from . import canvas as canvases

        canvas = canvases.build(feature, cfg, found.currency, 0, None, _NoCalls(), None)
    groups = found.groups.get(feature, [])
    sections = {
        "period": _period(found, feature, figures),
        "purpose": _purpose(canvas),
        "models": _models(groups),
        "fallbacks": _fallbacks(core),
        "rollout": _rollout(feature, core, groups, control),
        "targets": _targets(found, feature, figures),
        "quality": _quality(found, feature, figures),
        "segments": _segments(found.segment_flags.get(feature, [])),
        "drift": _drift(found, feature),
        "cost": _cost(found, figures, canvas),
    }
    return SystemCard(feature, found.generated_at, found.since, sections, found)


class _NoCalls:
    def call_records(self, **_: Any) -> list[dict[str, Any]]:
        return []


def _segment_names(cfg: Any, core: Any) -> list[str]:
    names: list[str] = []
    for given in (getattr(core.spec, "segments", None) if core else None,
                  getattr(cfg, "segments", None)):  # fmt: skip
        if isinstance(given, dict):
            names += [str(k) for k in given]
        elif isinstance(given, tuple | list):
            for item in given:
                if isinstance(item, tuple) and item:
                    names.append(str(item[0]))
                elif isinstance(item, str):
                    names.append(item)
                else:
                    name = getattr(item, "__name__", None)
                    if isinstance(name, str):
                        names.append(name)
    return [n for n in dict.fromkeys(names) if n not in ("model", "arm")]


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f" (95% CI {100 * interval[0]:.1f}-{100 * interval[1]:.1f}%)"


def _period(found: Report, feature: str, f: FeatureFigures | None) -> list[tuple[str, str]]:
    days = found.series.get(feature, {}).get("days", [])
    start = "every recorded call" if found.since is None else _day(found.since)
    rows = [("from", start), ("to", _day(found.generated_at))]
    if days:
        plural = "s" if len(days) > 1 else ""
        rows.append(("days with calls", f"{days[0]} to {days[-1]} ({len(days)} day{plural})"))
    rows.append(("calls", f"{f.calls:,}" if f is not None else "0"))
    return rows


def _purpose(c: Canvas) -> list[tuple[str, str]]:
    return [
        ("owner", c.owner or "not given"),
        ("intended use", c.intended_use or "not given"),
        ("limits", "; ".join(c.limits) if c.limits else "not given"),
    ]


def _models(groups: list[FeatureFigures]) -> list[tuple[str, str]]:
    rows = [
        (g.group.removeprefix("model="), f"{g.calls:,} calls")
        for g in groups
        if g.group is not None and g.group.startswith("model=") and g.group != "model=none"
    ]
    return rows or [("models", "no calls recorded in the period")]


def _fallbacks(core: Any) -> list[tuple[str, str]]:
    if core is None:
        return [("chain", "declared in code (no guard for it in this process)")]
    chain = list(core.chain)
    if not chain:
        return [("chain", "none: an unserved call raises")]
    return [
        (f"{i}.", f"{handler.name} (source {getattr(handler.source, 'value', handler.source)})")
        for i, handler in enumerate(chain, 1)
    ]


def _rollout(
    feature: str, core: Any, groups: list[FeatureFigures], control: ControlState | None
) -> list[tuple[str, str]]:
    from .control import FeatureControl

    rows: list[tuple[str, str]] = []
    if control is None:
        from ._engine.settings import effective

        with runtime.lock:
            eff = effective(feature)
        killed = eff.kill.describe() if eff.kill is not None else None
        percent = eff.percent
    else:
        fc = control.features.get(feature, FeatureControl())
        every = control.all
        killed = (
            f"killed (all): {every.reason or ''}".strip()
            if every.killed
            else (f"killed: {fc.reason or ''}".strip() if fc.killed else None)
        )
        percent = fc.rollout
    rows.append(("state", killed or "live"))
    rollout = None if core is None else core.spec.rollout
    if percent is None and rollout is not None:
        percent = rollout.initial_percent
    if rollout is not None and rollout.stages:
        stages = ", ".join(f"{p:g}%" for p in rollout.stages)
        rows.append(("stages", stages))
    rows.append(("stage", "-" if percent is None else f"{percent:g}% of units"))
    arms = [g for g in groups if g.group in ("arm=ai", "arm=baseline")]
    for g in arms:
        rows.append((str(g.group), f"{g.calls:,} calls"))
    return rows


def _targets(found: Report, feature: str, f: FeatureFigures | None) -> list[tuple[str, str]]:
    from ._report_render import _target_value

    rows = []
    for t, actual, ok in found.targets.get(feature, []):
        verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        rows.append((str(t), f"{_target_value(t.metric, actual, f, found.currency)} {verdict}"))
    return rows or [("targets", "none configured")]


def _quality(found: Report, feature: str, f: FeatureFigures | None) -> list[tuple[str, str]]:
    rows = []
    if f is not None:
        rows.append(
            ("acceptance", f"{_pct(f.acceptance_rate)} of {f.decided:,} decided"
                           f"{_ci(f.acceptance_interval)}")
        )  # fmt: skip
        rows.append(
            ("audited error rate", f"{_pct(f.audited_error_rate)} of {f.audited:,} audited"
                                   f"{_ci(f.audited_error_interval)}")
        )  # fmt: skip
        rows.append(("fallback rate", _pct(f.fallback_rate)))
    q = found.quality.get(feature)
    if q is not None:
        ece = q.calibration.ece
        rows.append(
            ("calibration (ECE)", "-" if ece is None else f"{ece:.3f} over {q.calibration.n:,} "
                                                          "judged answers")
        )  # fmt: skip
    return rows


def _segments(gaps: list[SegmentGap]) -> list[tuple[str, str]]:
    if not gaps:
        return [("segments", "no segments compared")]
    rows = []
    for g in gaps:
        flag = "FLAGGED" if g.flagged else "ok"
        rows.append(
            (f"{g.split}={g.segment}", f"{g.figure} {_pct(g.value)} vs best "
             f"{g.split}={g.best_segment} {_pct(g.best_value)}: {flag}")
        )  # fmt: skip
    return rows


def _drift(found: Report, feature: str) -> list[tuple[str, str]]:
    q = found.quality.get(feature)
    if q is None:
        return [("drift", "not computed for this store")]
    return [("drift", q.drift.describe().removeprefix(f"{feature}: "))]


def _cost(found: Report, f: FeatureFigures | None, c: Canvas) -> list[tuple[str, str]]:
    from ._canvas_render import money, rows

    cur = found.currency
    out: list[tuple[str, str]] = []
    if f is not None:
        unknown = f.priced < f.calls
        out.append(("cost", money(f.cost, cur, unknown)))
        out.append(("cost per call", money(f.cost_per_call, cur, unknown)))
        out.append(("cost per accepted answer", money(f.cost_per_accepted, cur, unknown)))
    skip = {"owner", "intended use", "limits", "AI cost"}
    out += [(label, value) for label, value in rows(c) if label not in skip]
    return out
