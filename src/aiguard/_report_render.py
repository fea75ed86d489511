"""Rendering a Report: a terminal table, one self-contained HTML page with SVG plots, JSON."""

from __future__ import annotations

import dataclasses
import html as _html
import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _canvas_render, _report_cascade
from ._report_plots import Frame, amount, bars, lines, nice_top, vertical_target

if TYPE_CHECKING:
    from .report import FeatureFigures, Report, SegmentGap


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _secs(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def _cost_unknown(f: FeatureFigures) -> bool:
    """Whether some call of ``f`` has no known cost: every cost figure of it is unknown."""
    return f.priced < f.calls


def _money(f: FeatureFigures, x: Decimal | None) -> str:
    if _cost_unknown(f):
        return "unknown"
    return "-" if x is None else amount(x)


def _interval(f: FeatureFigures) -> str:
    if f.acceptance_interval is None:
        return "-"
    lo, hi = f.acceptance_interval
    return f"[{100 * lo:.0f}, {100 * hi:.0f}]"


def _row(f: FeatureFigures) -> list[str]:
    return [
        f.group or f.feature,
        str(f.calls),
        _pct(f.acceptance_rate),
        _interval(f),
        "-" if f.edit_ratio is None else f"{f.edit_ratio:.2f}",
        _pct(f.correction_rate),
        _pct(f.fallback_rate),
        _secs(f.p95_latency),
        _money(f, f.cost_per_call),
        _money(f, f.cost_per_accepted),
    ]


def _header(currency: str) -> list[str]:
    return [
        "FEATURE / GROUP", "CALLS", "ACCEPT", "95% CI", "EDIT", "CORRECT", "FALLBACK", "P95",
        f"COST/CALL ({currency})", f"COST/ACCEPTED ({currency})",
    ]  # fmt: skip


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _tokens(f: FeatureFigures) -> str | None:
    """The feature's token totals in one line; None when its calls reported none."""
    if not (f.input_tokens or f.output_tokens):
        return None
    return (
        f"tokens: input {f.input_tokens:,} (cache read {f.cache_read_tokens:,}, cache write "
        f"{f.cache_write_tokens:,} of which 1 h {f.cache_write_1h_tokens:,}), output "
        f"{f.output_tokens:,}"
    )


def _cost_note(f: FeatureFigures, currency: str) -> str | None:
    """Why the feature's cost figures are unknown, with what is known; None when all is."""
    if not _cost_unknown(f):
        return None
    if not f.priced:
        return (
            f"cost unknown: none of the {f.calls:,} calls has a known cost (is the model in the "
            "price table?)"
        )
    return (
        f"cost unknown: {amount(f.known_cost)} {currency} for the {f.priced:,} of {f.calls:,} "
        f"calls with a known cost ({_pct(f.priced / f.calls)}); cost per call and per accepted "
        "answer unknown"
    )


def _target_value(
    metric: str, value: float | None, f: FeatureFigures | None = None, currency: str = ""
) -> str:
    if metric.startswith("cost"):
        if f is not None and _cost_unknown(f):
            return "unknown"
        return "-" if value is None else f"{amount(value)} {currency}".rstrip()
    if value is None:
        return "-"
    if metric.endswith("_rate"):
        return _pct(value)
    if metric.endswith("_latency"):
        return _secs(value)
    return f"{value:g}"


def _gap(g: SegmentGap) -> str:
    """One segment gap in words."""
    ratio = "-" if g.ratio is None else f"{g.ratio:.2f}"
    return (
        f"segment {g.split}={g.segment} {g.figure} {_pct(g.value)} vs best "
        f"{g.split}={g.best_segment} {_pct(g.best_value)}: {100 * g.difference:+.1f} points "
        f"worse (95% CI {100 * g.interval[0]:+.1f} to {100 * g.interval[1]:+.1f}), "
        f"ratio {ratio}" + (" FLAGGED" if g.flagged else "")
    )


def _calibration_line(cal: Any) -> str:
    if cal.ece is None:
        return "calibration: no judged answers yet (feedback or audits on the model's answers)"
    worst = max((b for b in cal.bins if b.count and b.gap is not None), key=lambda b: abs(b.gap))
    return (
        f"calibration: ECE {cal.ece:.3f} over {cal.n:,} judged answers; widest gap "
        f"{100 * worst.gap:+.1f} points at confidence {worst.low:.2f}-{worst.high:.2f} "
        f"({_pct(worst.accuracy)} right at {worst.mean_confidence:.2f} mean confidence)"
    )


def _ci(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f" (95% CI {_pct(interval[0])} to {_pct(interval[1])})"


def _shadow_lines(report: Report, feature: str) -> list[str]:
    """One sentence per shadow candidate of ``feature``: agreement, latency, cost, and the
    served answer's acceptance when the candidate disagreed vs agreed."""
    money = report.currency
    out = []
    for s in report.shadows.get(feature, []):
        parts = [f"shadow {s.candidate}: {s.calls} calls, {s.errors} failed"]
        if s.compared:
            parts.append(
                f"agreement {_pct(s.agreement_rate)}{_ci(s.agreement_interval)} "
                f"over {s.compared} compared"
            )
        parts.append(
            f"latency p50 {_secs(s.candidate_p50_latency)} / p95 {_secs(s.candidate_p95_latency)}"
            f" vs current model {_secs(s.model_p50_latency)} / {_secs(s.model_p95_latency)}"
        )
        if s.cost_pairs:
            ratio = "" if s.cost_ratio is None else f" (x{s.cost_ratio:.2f})"
            parts.append(
                f"cost per call {s.candidate_cost_per_call} {money} vs "
                f"{s.model_cost_per_call} {money}{ratio} over {s.cost_pairs} priced calls"
            )
        else:
            parts.append("cost unknown")
        if s.disagreed_decided or s.agreed_decided:
            parts.append(
                f"served answer accepted {_pct(s.acceptance_when_disagreed)}"
                f"{_ci(s.acceptance_when_disagreed_interval)} of {s.disagreed_decided} decided "
                f"when the candidate disagreed, {_pct(s.acceptance_when_agreed)}"
                f"{_ci(s.acceptance_when_agreed_interval)} of {s.agreed_decided} when it agreed"
            )
        out.append("; ".join(parts))
    return out


def text(report: Report) -> str:
    if not report.features:
        return "No call records in the store for this selection."
    money = report.currency
    rows = [_header(money)]
    for f in report.features:
        rows.append(_row(f))
        rows += [["  " + r[0], *r[1:]] for r in (_row(g) for g in report.groups.get(f.feature, []))]
    out = _table(rows)
    for f in report.features:
        for line in (_tokens(f), _cost_note(f, money), *_report_cascade.lines(f, money)):
            if line is not None:
                out.append(f"{f.feature}: {line}")
        diff = report.ai_vs_baseline.get(f.feature)
        if diff is not None:
            d, lo, hi = diff
            out.append(
                f"{f.feature}: AI vs baseline acceptance {100 * d:+.1f} points "
                f"(95% CI {100 * lo:+.1f} to {100 * hi:+.1f})"
            )
        for gap in report.segment_flags.get(f.feature, []):
            if gap.flagged:
                out.append(f"{f.feature}: {_gap(gap)}")
        out += [f"{f.feature}: {line}" for line in _shadow_lines(report, f.feature)]
        q = report.quality.get(f.feature)
        if q is not None:
            out.append(f"{f.feature}: {_calibration_line(q.calibration)}")
            out.append(q.drift.describe())
        canvas = report.canvas.get(f.feature)
        if canvas is not None:
            out += _canvas_render.text_lines(canvas)
        for target, actual, ok in report.targets.get(f.feature, []):
            verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
            shown = _target_value(target.metric, actual, f, money)
            out.append(f"{f.feature}: target {target}: {shown} {verdict}")
    return "\n".join(out)


# -- SVG plots --------------------------------------------------------------------------------


def _target(report: Report, feature: str, metric: str) -> tuple[float, str] | None:
    for t, _, _ in report.targets.get(feature, []):
        if t.metric == metric:
            return t.value, f"target {t}"
    return None


def _shows(values: list[float | None]) -> bool:
    """Whether a series has something to draw: a value above 0."""
    return any(v is not None and v > 0 for v in values)


def _plots(report: Report, feature: str) -> list[str]:
    """The plots of a feature that have something to show (see docs/report.md)."""
    s = report.series[feature]
    days, money = s["days"], report.currency
    out = []
    acceptance = {arm: v for arm, v in s["acceptance"].items() if any(x is not None for x in v)}
    if acceptance:
        by_arm = set(acceptance) != {"all"}  # calls under a rollout carry their arm
        out.append(
            lines(
                "Acceptance per day, by arm" if by_arm else "Acceptance per day",
                days,
                acceptance,
                Frame(len(days), 1.0, lambda v: f"{v:.0%}"),
                _target(report, feature, "acceptance_rate"),
                keys=by_arm,
            )
        )
    hist = s["latency_histogram"]
    counts = [float(c) for c in hist["counts"]]
    if any(counts):
        hi = hist["high"]
        labels = [_secs(hi * (i + 1) / len(counts)) for i in range(len(counts))]
        frame = Frame(len(counts), nice_top(max(counts)), lambda v: f"{v:g}")
        chart = bars("Latency (whole call), calls per bucket", labels, {"calls": counts}, frame)
        target = _target(report, feature, "p95_latency")
        if target is not None:
            mark = vertical_target(frame, target[0] / hi if hi else 0.0, target[1])
            chart = chart.replace("</svg>", mark + "</svg>", 1)
        out.append(chart)

    def in_money(v: float) -> str:
        return f"{amount(v)} {money}"

    if _shows(s["cost"]):
        top = nice_top(max(v for v in s["cost"] if v is not None))
        cost = [0.0 if v is None else v for v in s["cost"]]
        out.append(
            bars(f"Cost per day ({money})", days, {"cost": cost}, Frame(len(days), top, in_money))
        )
    cpc_target = _target(report, feature, "cost_per_call")
    if _shows(s["cost_per_call"]):
        known = [v for v in s["cost_per_call"] if v is not None]
        top = nice_top(max([*known, cpc_target[0] if cpc_target else 0.0]))
        out.append(
            lines(
                f"Cost per call, per day ({money})",
                days,
                {"cost per call": s["cost_per_call"]},
                Frame(len(days), top, in_money),
                cpc_target,
            )
        )
    sources = {k: [float(x) for x in v] for k, v in s["sources"].items()}
    totals = [sum(col) for col in zip(*sources.values(), strict=True)] if sources else []
    if any(totals):
        frame = Frame(len(days), nice_top(max(totals)), lambda v: f"{v:g}")
        out.append(bars("Calls per day, by source", days, sources, frame))
    return out


_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em;color:#111}"
    "table{border-collapse:collapse;margin:1em 0}td,th{padding:4px 10px;"
    "border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child"
    "{text-align:left}figure{display:inline-block;vertical-align:top;margin:1em 1em 1em 0}"
    "figcaption{font-weight:600;margin-bottom:4px}"
    "svg text{font:10px system-ui,sans-serif;fill:#444}svg text.target-label{fill:#dc2626}"
    ".legend{font-size:12px}.key{margin-right:12px}.key i{display:inline-block;width:10px;"
    "height:10px;margin-right:4px}.pass{color:#15803d}.fail{color:#b91c1c}"
)


def html(report: Report) -> str:
    when = datetime.fromtimestamp(report.generated_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    money = report.currency
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>aiguard report</title><style>{_STYLE}</style></head><body>",
        f"<h1>aiguard report</h1><p>Generated {when}. Amounts in {_html.escape(money)}.</p>",
    ]
    if not report.features:
        parts.append("<p>No call records in the store for this selection.</p>")
    for f in report.features:
        name = _html.escape(f.feature)
        parts.append(f'<section class="feature" id="f-{name}"><h2>{name}</h2><table><tr>')
        parts += [f"<th>{_html.escape(h)}</th>" for h in _header(money)]
        parts.append("</tr>")
        for row in [_row(f)] + [_row(g) for g in report.groups.get(f.feature, [])]:
            parts.append("<tr>" + "".join(f"<td>{_html.escape(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
        for line, cls in (
            (_tokens(f), "tokens"),
            (_cost_note(f, money), "cost"),
            *((x, "cascade") for x in _report_cascade.lines(f, money)),
        ):
            if line is not None:
                parts.append(f'<p class="{cls}">{_html.escape(line[0].upper() + line[1:])}.</p>')
        diff = report.ai_vs_baseline.get(f.feature)
        if diff is not None:
            d, lo, hi = diff
            parts.append(
                f"<p>AI vs baseline acceptance: {100 * d:+.1f} points "
                f"(95% CI {100 * lo:+.1f} to {100 * hi:+.1f}).</p>"
            )
        gaps = report.segment_flags.get(f.feature, [])
        if gaps:
            parts.append(
                "<table class=segments><tr><th>segment</th><th>figure</th><th>value</th>"
                "<th>best</th><th>worse by</th><th>95% CI</th><th>ratio</th><th></th></tr>"
            )
            for g in gaps:
                cells = [
                    f"{g.split}={g.segment}", g.figure, _pct(g.value),
                    f"{g.split}={g.best_segment} {_pct(g.best_value)}",
                    f"{100 * g.difference:+.1f} pts",
                    f"{100 * g.interval[0]:+.1f} to {100 * g.interval[1]:+.1f}",
                    "-" if g.ratio is None else f"{g.ratio:.2f}",
                ]  # fmt: skip
                parts.append(
                    "<tr>" + "".join(f"<td>{_html.escape(c)}</td>" for c in cells)
                    + ('<td class="fail">FLAGGED</td>' if g.flagged else "<td></td>") + "</tr>"
                )  # fmt: skip
            parts.append("</table>")
        parts += _shadow_html(report, f.feature)
        q = report.quality.get(f.feature)
        if q is not None:
            line = _calibration_line(q.calibration)
            parts.append(f"<p>{_html.escape(line[0].upper() + line[1:])}.</p>")
            if q.calibration.n:
                parts.append(q.calibration.svg())
            parts.append(f"<p>{_html.escape(q.drift.describe())}.</p>")
        canvas = report.canvas.get(f.feature)
        if canvas is not None:
            parts.append(_canvas_render.html_table(canvas))
        rows = report.targets.get(f.feature, [])
        if rows:
            parts.append("<table class=targets><tr><th>target</th><th>figure</th><th></th></tr>")
            for t, actual, ok in rows:
                cls, word = (
                    ("", "n/a") if ok is None else (("pass", "PASS") if ok else ("fail", "FAIL"))
                )
                parts.append(
                    f"<tr><td>{_html.escape(str(t))}</td><td>"
                    f"{_html.escape(_target_value(t.metric, actual, f, money))}</td>"
                    f'<td class="{cls}">{word}</td></tr>'
                )
            parts.append("</table>")
        parts += _plots(report, f.feature)
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)


def _shadow_html(report: Report, feature: str) -> list[str]:
    """The shadow candidates of ``feature`` as a table: one row per candidate."""
    found = report.shadows.get(feature, [])
    if not found:
        return []
    money = _html.escape(report.currency)
    head = [
        "candidate", "calls", "failed", "agreement", "95% CI", "p50 / p95",
        "current p50 / p95", f"cost per call ({money})", "current cost per call", "cost ratio",
        "accepted when disagreed", "accepted when agreed",
    ]  # fmt: skip
    parts = ["<table class=shadow><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for s in found:
        cells = [
            str(s.candidate), str(s.calls), str(s.errors), _pct(s.agreement_rate),
            "-" if s.agreement_interval is None
            else f"{_pct(s.agreement_interval[0])} to {_pct(s.agreement_interval[1])}",
            f"{_secs(s.candidate_p50_latency)} / {_secs(s.candidate_p95_latency)}",
            f"{_secs(s.model_p50_latency)} / {_secs(s.model_p95_latency)}",
            "-" if s.candidate_cost_per_call is None else str(s.candidate_cost_per_call),
            "-" if s.model_cost_per_call is None else str(s.model_cost_per_call),
            "-" if s.cost_ratio is None else f"{s.cost_ratio:.2f}",
            f"{_pct(s.acceptance_when_disagreed)} of {s.disagreed_decided}",
            f"{_pct(s.acceptance_when_agreed)} of {s.agreed_decided}",
        ]  # fmt: skip
        parts.append("<tr>" + "".join(f"<td>{_html.escape(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    return parts


# -- JSON ------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A value as JSON holds it: an amount of money as an exact decimal string."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):  # not JSON
        return None
    return value


def as_json(report: Report) -> str:
    figures = dataclasses.asdict
    data = {
        "generated_at": report.generated_at,
        "currency": report.currency,
        "since": report.since,
        "features": [figures(f) for f in report.features],
        "groups": {name: [figures(g) for g in gs] for name, gs in report.groups.items()},
        "ai_vs_baseline": {
            name: None if d is None else dict(zip(("difference", "low", "high"), d, strict=True))
            for name, d in report.ai_vs_baseline.items()
        },
        "targets": {
            name: [{"target": str(t), "figure": actual, "met": ok} for t, actual, ok in rows]
            for name, rows in report.targets.items()
        },
        "series": report.series,
        "segment_flags": {
            name: [figures(g) for g in gaps] for name, gaps in report.segment_flags.items()
        },
        "quality": {
            name: {
                "figures": q.figures,
                "calibration": {
                    "n": q.calibration.n,
                    "ece": q.calibration.ece,
                    "bins": [figures(b) for b in q.calibration.bins],
                },
                "drift": figures(q.drift),
            }
            for name, q in report.quality.items()
        },
        "canvas": {name: _canvas_render.as_dict(c) for name, c in report.canvas.items()},
        "shadows": {name: [figures(s) for s in found] for name, found in report.shadows.items()},
    }
    return json.dumps(_plain(data), ensure_ascii=False, allow_nan=False)
