"""Rendering a Report: a terminal table, one self-contained HTML page with SVG plots, JSON."""

from __future__ import annotations

import dataclasses
import html as _html
import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import FeatureFigures, Report, SegmentGap

_COLORS = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#64748b", "#ec4899"]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _secs(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def _money(x: Any) -> str:
    return "-" if x is None else f"{x:.6f}".rstrip("0").rstrip(".")


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
        _money(f.cost_per_call),
        _money(f.cost_per_accepted),
    ]


HEADER = [
    "FEATURE / GROUP", "CALLS", "ACCEPT", "95% CI", "EDIT", "CORRECT", "FALLBACK", "P95",
    "COST/CALL", "COST/ACCEPTED",
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


def _target_value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric.endswith("_rate"):
        return _pct(value)
    if metric.endswith("_latency"):
        return _secs(value)
    if metric.startswith("cost"):
        return _money(value)
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


def text(report: Report) -> str:
    if not report.features:
        return "No call records in the store for this selection."
    rows = [HEADER]
    for f in report.features:
        rows.append(_row(f))
        rows += [["  " + r[0], *r[1:]] for r in (_row(g) for g in report.groups.get(f.feature, []))]
    out = _table(rows)
    for f in report.features:
        tokens = _tokens(f)
        if tokens is not None:
            out.append(f"{f.feature}: {tokens}")
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
        q = report.quality.get(f.feature)
        if q is not None:
            out.append(f"{f.feature}: {_calibration_line(q.calibration)}")
            out.append(q.drift.describe())
        for target, actual, ok in report.targets.get(f.feature, []):
            verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
            out.append(
                f"{f.feature}: target {target}: {_target_value(target.metric, actual)} {verdict}"
            )
    return "\n".join(out)


# -- SVG plots --------------------------------------------------------------------------------

W, H, PAD = 560, 220, 40


def _svg(title: str, body: list[str], legend: list[tuple[str, str]]) -> str:
    items = "".join(
        f'<span class="key"><i style="background:{c}"></i>{_html.escape(n)}</span>'
        for n, c in legend
    )
    return (
        f"<figure><figcaption>{_html.escape(title)}</figcaption>"
        f'<svg class="plot" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{_html.escape(title)}">'
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#999"/>'
        f'<line x1="{PAD}" y1="10" x2="{PAD}" y2="{H - PAD}" stroke="#999"/>'
        + "".join(body)
        + f"</svg><div class=legend>{items}</div></figure>"
    )


def _scale(value: float, top: float) -> float:
    return H - PAD - (value / top if top else 0) * (H - PAD - 10)


def _x(i: int, n: int) -> float:
    return PAD + (i + 0.5) * (W - PAD - 10) / max(n, 1)


def _axis(top: float, fmt: str, labels: list[str]) -> list[str]:
    out = [
        f'<text x="{PAD - 4}" y="{_scale(top, top) + 4:.1f}" text-anchor="end">'
        f"{fmt.format(top)}</text>",
        f'<text x="{PAD - 4}" y="{H - PAD + 4}" text-anchor="end">0</text>',
    ]
    step = max(1, len(labels) // 6)
    for i, label in enumerate(labels):
        if i % step == 0:
            out.append(
                f'<text x="{_x(i, len(labels)):.1f}" y="{H - PAD + 16}" text-anchor="middle">'
                f"{_html.escape(label[5:] if len(label) == 10 else label)}</text>"
            )
    return out


def _target_line(y_value: float, top: float, label: str) -> list[str]:
    y = _scale(min(y_value, top), top)
    return [
        f'<line class="target" x1="{PAD}" y1="{y:.1f}" x2="{W - 10}" y2="{y:.1f}" '
        f'stroke="#dc2626" stroke-dasharray="6 4"/>',
        f'<text x="{W - 12}" y="{y - 4:.1f}" text-anchor="end" fill="#dc2626">'
        f"{_html.escape(label)}</text>",
    ]


def _lines(
    title: str, days: list[str], series: dict[str, list[float | None]], top: float, fmt: str,
    target: tuple[float, str] | None = None,
) -> str:  # fmt: skip
    body = _axis(top, fmt, days)
    legend = []
    for k, (name, values) in enumerate(series.items()):
        color = _COLORS[k % len(_COLORS)]
        legend.append((name, color))
        points = [(i, v) for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{_x(i, len(days)):.1f},{_scale(v, top):.1f}" for i, v in points)
            body.append(f'<polyline class="series" points="{path}" fill="none" stroke="{color}" '
                        'stroke-width="2"/>')  # fmt: skip
        for i, v in points:
            body.append(f'<circle cx="{_x(i, len(days)):.1f}" cy="{_scale(v, top):.1f}" r="3" '
                        f'fill="{color}"/>')  # fmt: skip
    if target is not None:
        body += _target_line(target[0], top, target[1])
    return _svg(title, body, legend)


def _bars(
    title: str, labels: list[str], stacks: dict[str, list[float]], fmt: str,
    target: tuple[float, str] | None = None,
) -> str:  # fmt: skip
    totals = [sum(s[i] for s in stacks.values()) for i in range(len(labels))]
    top = max([*totals, target[0] if target else 0, 1e-12]) * 1.1
    body = _axis(top, fmt, labels)
    width = (W - PAD - 10) / max(len(labels), 1) * 0.7
    legend = []
    base = [0.0] * len(labels)
    for k, (name, values) in enumerate(stacks.items()):
        color = _COLORS[k % len(_COLORS)]
        legend.append((name, color))
        for i, v in enumerate(values):
            if v <= 0:
                continue
            y0, y1 = _scale(base[i], top), _scale(base[i] + v, top)
            body.append(f'<rect class="bar" x="{_x(i, len(labels)) - width / 2:.1f}" '
                        f'y="{y1:.1f}" width="{width:.1f}" height="{max(y0 - y1, 0.5):.1f}" '
                        f'fill="{color}"/>')  # fmt: skip
            base[i] += v
    if target is not None:
        body += _target_line(target[0], top, target[1])
    return _svg(title, body, legend)


def _histogram(hist: dict[str, Any], target: tuple[float, str] | None) -> str:
    hi, counts = hist["high"], [float(c) for c in hist["counts"]]
    if not any(counts):
        return _bars("Latency (whole call)", [], {}, "{:g}")
    labels = [_secs(hi * (i + 1) / len(counts)) for i in range(len(counts))]
    chart = _bars("Latency (whole call), calls per bucket", labels, {"calls": counts}, "{:.0f}")
    if target is None:
        return chart
    x = PAD + min(target[0] / hi, 1.0) * (W - PAD - 10) if hi else PAD
    mark = (
        f'<line class="target" x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{H - PAD}" stroke="#dc2626" '
        f'stroke-dasharray="6 4"/><text x="{x - 4:.1f}" y="20" fill="#dc2626" '
        f'text-anchor="end">{_html.escape(target[1])}</text>'
    )
    return chart.replace("</svg>", mark + "</svg>", 1)


def _target(report: Report, feature: str, metric: str) -> tuple[float, str] | None:
    for t, _, _ in report.targets.get(feature, []):
        if t.metric == metric:
            return t.value, f"target {t}"
    return None


def html(report: Report) -> str:
    when = datetime.fromtimestamp(report.generated_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>aiguard report</title><style>",
        "body{font:14px system-ui,sans-serif;margin:2em;color:#111}"
        "table{border-collapse:collapse;margin:1em 0}td,th{padding:4px 10px;"
        "border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child"
        "{text-align:left}figure{display:inline-block;margin:1em 1em 1em 0}"
        "figcaption{font-weight:600;margin-bottom:4px}svg text{font-size:10px;fill:#444}"
        ".legend{font-size:12px}.key{margin-right:12px}.key i{display:inline-block;width:10px;"
        "height:10px;margin-right:4px}.pass{color:#15803d}.fail{color:#b91c1c}",
        "</style></head><body>",
        f"<h1>aiguard report</h1><p>Generated {when}.</p>",
    ]
    if not report.features:
        parts.append("<p>No call records in the store for this selection.</p>")
    for f in report.features:
        name = _html.escape(f.feature)
        parts.append(f'<section class="feature" id="f-{name}"><h2>{name}</h2><table><tr>')
        parts += [f"<th>{h}</th>" for h in HEADER]
        parts.append("</tr>")
        for row in [_row(f)] + [_row(g) for g in report.groups.get(f.feature, [])]:
            parts.append("<tr>" + "".join(f"<td>{_html.escape(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
        tokens = _tokens(f)
        if tokens is not None:
            parts.append(f'<p class="tokens">{_html.escape(tokens[0].upper() + tokens[1:])}.</p>')
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
        q = report.quality.get(f.feature)
        if q is not None:
            parts.append(f"<p>{_html.escape(_calibration_line(q.calibration)[0].upper())}"
                         f"{_html.escape(_calibration_line(q.calibration)[1:])}.</p>")  # fmt: skip
            if q.calibration.n:
                parts.append(q.calibration.svg())
            parts.append(f"<p>{_html.escape(q.drift.describe())}.</p>")
        rows = report.targets.get(f.feature, [])
        if rows:
            parts.append("<table class=targets><tr><th>target</th><th>figure</th><th></th></tr>")
            for t, actual, ok in rows:
                cls, word = (
                    ("", "n/a") if ok is None else (("pass", "PASS") if ok else ("fail", "FAIL"))
                )
                parts.append(
                    f"<tr><td>{_html.escape(str(t))}</td><td>"
                    f"{_html.escape(_target_value(t.metric, actual))}</td>"
                    f'<td class="{cls}">{word}</td></tr>'
                )
            parts.append("</table>")
        s = report.series[f.feature]
        days = s["days"]
        acc_target = _target(report, f.feature, "acceptance_rate")
        parts.append(
            _lines("Acceptance per day, by arm", days, s["acceptance"], 1.0, "{:.0%}", acc_target)
        )
        parts.append(_histogram(s["latency_histogram"], _target(report, f.feature, "p95_latency")))
        parts.append(_bars("Cost per day", days, {"cost": s["cost"]}, "{:.4g}"))
        cpc = [v for v in s["cost_per_call"] if v is not None]
        cpc_target = _target(report, f.feature, "cost_per_call")
        cpc_top = max([*cpc, cpc_target[0] if cpc_target else 0, 1e-12]) * 1.1
        parts.append(
            _lines(
                "Cost per call, per day",
                days,
                {"cost per call": s["cost_per_call"]},
                cpc_top,
                "{:.2g}",
                cpc_target,
            )
        )
        parts.append(
            _bars(
                "Calls per day, by source",
                days,
                {k: [float(x) for x in v] for k, v in s["sources"].items()},
                "{:.0f}",
            )
        )
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)


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
    }
    return json.dumps(_plain(data), ensure_ascii=False, allow_nan=False)
