"""The reliability diagram of a Calibration: inline SVG, no scripts, in the report's style.

Accuracy per confidence bin as bars (with the Wilson 95 % interval as a whisker), the mean
confidence of each bin as a point, and the diagonal of perfect calibration: a bar below the
diagonal is an over-confident bin. Drawn like the report's plots (``_report_render``): a
``<figure>`` with a caption, an ``svg.plot`` with grey axes, the same palette and legend.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .quality import Calibration

W, H, PAD = 360, 300, 40  # a square plot area: the diagonal is at 45 degrees
BAR, POINT, GRID = "#2563eb", "#f59e0b", "#999"


def _x(value: float) -> float:
    return PAD + value * (W - PAD - 10)


def _y(value: float) -> float:
    return H - PAD - value * (H - PAD - 10)


def svg(calibration: Calibration) -> str:
    """The diagram as a ``<figure>`` holding one ``<svg>``."""
    c = calibration
    ece = "-" if c.ece is None else f"{c.ece:.3f}"
    who = f" ({c.model})" if c.model else ""
    title = f"Reliability: {c.feature}{who}, {c.n:,} judged answers, ECE {ece}"
    body = [
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="{GRID}"/>',
        f'<line x1="{PAD}" y1="10" x2="{PAD}" y2="{H - PAD}" stroke="{GRID}"/>',
        f'<line class="diagonal" x1="{_x(0):.1f}" y1="{_y(0):.1f}" x2="{_x(1):.1f}" '
        f'y2="{_y(1):.1f}" stroke="{GRID}" stroke-dasharray="6 4"/>',
    ]
    for v in (0.0, 0.5, 1.0):
        body.append(
            f'<text x="{PAD - 4}" y="{_y(v) + 4:.1f}" text-anchor="end">{v:.0%}</text>'
            f'<text x="{_x(v):.1f}" y="{H - PAD + 16}" text-anchor="middle">{v:g}</text>'
        )
    body.append(
        f'<text x="{_x(0.5):.1f}" y="{H - 6}" text-anchor="middle">confidence</text>'
        f'<text x="12" y="{_y(0.5):.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {_y(0.5):.1f})">accuracy</text>'
    )
    for b in c.bins:
        if not b.count or b.accuracy is None:
            continue
        width = (_x(b.high) - _x(b.low)) * 0.8
        left = (_x(b.low) + _x(b.high)) / 2 - width / 2
        top = _y(b.accuracy)
        tip = html.escape(
            f"{b.low:.2f}-{b.high:.2f}: {b.count} answers, accuracy {b.accuracy:.1%}, "
            f"mean confidence {b.mean_confidence or 0:.3f}"
        )
        body.append(
            f'<rect class="bar" x="{left:.1f}" y="{top:.1f}" width="{width:.1f}" '
            f'height="{max(_y(0) - top, 0.5):.1f}" fill="{BAR}" fill-opacity="0.75">'
            f"<title>{tip}</title></rect>"
        )
        if b.interval is not None:
            mid = left + width / 2
            lo, hi = _y(b.interval[0]), _y(b.interval[1])
            body.append(
                f'<path class="interval" d="M{mid:.1f},{lo:.1f}V{hi:.1f}M{mid - 3:.1f},{lo:.1f}'
                f'h6M{mid - 3:.1f},{hi:.1f}h6" stroke="#111" fill="none"/>'
            )
        if b.mean_confidence is not None:
            body.append(
                f'<circle class="confidence" cx="{_x(b.mean_confidence):.1f}" cy="{top:.1f}" '
                f'r="3" fill="{POINT}"/>'
            )
    legend = "".join(
        f'<span class="key"><i style="background:{color}"></i>{html.escape(name)}</span>'
        for name, color in (
            ("accuracy (95% CI)", BAR),
            ("mean confidence", POINT),
            ("perfect calibration", GRID),
        )
    )
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f'<svg class="plot reliability" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
        f'role="img" aria-label="{html.escape(title)}">'
        + "".join(body)
        + f"</svg><div class=legend>{legend}</div></figure>"
    )
