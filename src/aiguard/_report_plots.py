"""The report's SVG plots: lines and stacked bars with readable axes, in fixed colours.

Each plot is a ``<figure>`` holding one ``<svg class="plot">`` of a fixed size. Its left margin
is as wide as its longest value label, so no label is cut ("0.0005 USD", not ".0005"); labels
near an edge are moved inside. The value axis runs from 0 to a round top (1, 2 or 5 x 10^k)
with a tick in the middle; amounts of money are written in fixed notation with their currency,
never in scientific notation. A series has the same colour in every report: sources and arms
have fixed colours, any other name one picked from its hash (not from the order of the names).
"""

from __future__ import annotations

import hashlib
import html
import math
from collections.abc import Callable, Sequence
from decimal import Decimal

W, H, TOP, BOTTOM, RIGHT = 560, 220, 14, 40, 14
CHAR = 7.0  # the width of a character of the 10px labels, generously (DejaVu Sans digits: 6.4)

#: Fixed colours: a source (or arm) is drawn in the same colour in every report.
COLORS = {
    "model": "#2563eb",
    "ai": "#2563eb",
    "rules": "#10b981",
    "default": "#f59e0b",
    "human": "#8b5cf6",
    "baseline": "#64748b",
    "none": "#ef4444",
    "all": "#0f766e",
}
_OTHER = ["#ec4899", "#0891b2", "#84cc16", "#a16207", "#7c3aed", "#be123c", "#0d9488", "#4d7c0f"]
TARGET = "#dc2626"


def color(name: str) -> str:
    """The colour of a series: fixed for the sources and arms, else from the name's hash."""
    found = COLORS.get(name)
    if found is not None:
        return found
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
    return _OTHER[digest[0] % len(_OTHER)]


def amount(value: Decimal | float) -> str:
    """An amount of money in fixed notation, to 6 decimals or 3 significant digits if finer:
    0.000396, 0.00000044, 12.5 (never 4.4e-07)."""
    d = value if isinstance(value, Decimal) else Decimal(f"{value:.12g}")
    if not d.is_finite():
        return str(d)
    if d.is_zero():
        return "0"
    places = max(6, 2 - d.adjusted())
    text = f"{d.quantize(Decimal(1).scaleb(-places)):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def nice_top(value: float) -> float:
    """The smallest of 1, 2 or 5 x 10^k at least ``value`` (1 for nothing)."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1, 2, 5, 10):
        top = float(Decimal(m).scaleb(exp))
        if top >= value * (1 - 1e-12):
            return top
    return float(Decimal(10).scaleb(exp))  # pragma: no cover - 10 x 10^k always suffices


def _width(text: str) -> float:
    return len(text) * CHAR


class Frame:
    """The plot area of one plot: ``n`` slots along x, values from 0 to ``top`` along y, a left
    margin wide enough for the value labels."""

    def __init__(self, n: int, top: float, fmt: Callable[[float], str]) -> None:
        self.n, self.top, self.fmt = max(n, 1), top, fmt
        self.ticks = [0.0, top / 2, top]
        self.labels = [fmt(v) for v in self.ticks]
        self.left = max(40.0, math.ceil(max(_width(t) for t in self.labels)) + 10.0)

    def x(self, i: float) -> float:
        return self.left + (i + 0.5) * (W - self.left - RIGHT) / self.n

    def y(self, value: float) -> float:
        share = min(max(value / self.top, 0.0), 1.0) if self.top else 0.0
        return H - BOTTOM - share * (H - BOTTOM - TOP)

    def slot(self) -> float:
        return (W - self.left - RIGHT) / self.n

    def axes(self, categories: Sequence[str]) -> list[str]:
        """Both axes, the value ticks and up to 7 category labels, all inside the view box."""
        out = [
            f'<line x1="{self.left}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" '
            'stroke="#999"/>',
            f'<line x1="{self.left}" y1="{TOP}" x2="{self.left}" y2="{H - BOTTOM}" stroke="#999"/>',
        ]
        for value, label in zip(self.ticks, self.labels, strict=True):
            y = self.y(value)
            out.append(
                f'<line x1="{self.left - 3}" y1="{y:.1f}" x2="{self.left}" y2="{y:.1f}" '
                f'stroke="#999"/><text class="tick" x="{self.left - 5}" y="{y + 3.5:.1f}" '
                f'text-anchor="end">{html.escape(label)}</text>'
            )
        step = max(1, math.ceil(len(categories) / 7))
        for i, raw in enumerate(categories):
            if i % step:
                continue
            label = raw[5:] if len(raw) == 10 and raw[4] == "-" else raw  # a date: MM-DD
            half = _width(label) / 2
            x = min(max(self.x(i), half + 2), W - 2 - half)
            out.append(
                f'<text class="category" x="{x:.1f}" y="{H - BOTTOM + 15}" '
                f'text-anchor="middle">{html.escape(label)}</text>'
            )
        return out

    def target(self, value: float, label: str) -> list[str]:
        """A horizontal dashed line at ``value``, its label above it (below near the top)."""
        y = self.y(value)
        text_y = y - 4 if y - 4 - 10 >= 0 else y + 12
        return [
            f'<line class="target" x1="{self.left}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" '
            f'stroke="{TARGET}" stroke-dasharray="6 4"/>',
            f'<text class="target-label" x="{W - RIGHT - 2}" y="{text_y:.1f}" text-anchor="end" '
            f'fill="{TARGET}">{html.escape(label)}</text>',
        ]


def figure(
    title: str, body: list[str], legend: Sequence[tuple[str, str]], keys: bool = False
) -> str:
    """A plot: its caption, its SVG, and a legend when it has more than one series (or
    ``keys``: a single series whose name says something, such as an arm)."""
    items = "".join(
        f'<span class="key"><i style="background:{c}"></i>{html.escape(n)}</span>'
        for n, c in legend
    )
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f'<svg class="plot" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{html.escape(title)}">'
        + "".join(body)
        + "</svg>"
        + (f"<div class=legend>{items}</div>" if len(legend) > 1 or keys else "")
        + "</figure>"
    )


def lines(
    title: str,
    days: Sequence[str],
    series: dict[str, list[float | None]],
    frame: Frame,
    target: tuple[float, str] | None = None,
    keys: bool = False,
) -> str:
    """One line (dots where a day stands alone) per series."""
    body = frame.axes(days)
    legend = []
    for name, values in series.items():
        c = color(name)
        legend.append((name, c))
        points = [(i, v) for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{frame.x(i):.1f},{frame.y(v):.1f}" for i, v in points)
            body.append(
                f'<polyline class="series" points="{path}" fill="none" stroke="{c}" '
                'stroke-width="2"/>'
            )
        for i, v in points:
            body.append(f'<circle cx="{frame.x(i):.1f}" cy="{frame.y(v):.1f}" r="3" fill="{c}"/>')
    if target is not None:
        body += frame.target(target[0], target[1])
    return figure(title, body, legend, keys)


def bars(
    title: str,
    labels: Sequence[str],
    stacks: dict[str, list[float]],
    frame: Frame,
    target: tuple[float, str] | None = None,
) -> str:
    """Stacked bars, one stack per label, one colour per series."""
    body = frame.axes(labels)
    width = frame.slot() * 0.7
    legend = []
    base = [0.0] * len(labels)
    for name, values in stacks.items():
        c = color(name)
        legend.append((name, c))
        for i, v in enumerate(values):
            if v <= 0:
                continue
            y0, y1 = frame.y(base[i]), frame.y(base[i] + v)
            body.append(
                f'<rect class="bar" x="{frame.x(i) - width / 2:.1f}" y="{y1:.1f}" '
                f'width="{width:.1f}" height="{max(y0 - y1, 0.5):.1f}" fill="{c}"/>'
            )
            base[i] += v
    if target is not None:
        body += frame.target(target[0], target[1])
    return figure(title, body, legend)


def vertical_target(frame: Frame, x_share: float, label: str) -> str:
    """A vertical dashed line at ``x_share`` of the x axis, its label on the side with room."""
    x = frame.left + min(max(x_share, 0.0), 1.0) * (W - frame.left - RIGHT)
    width = _width(label)
    if x - 4 - width >= 0:
        at, anchor = x - 4, "end"
    else:
        at, anchor = max(2.0, min(x + 4, W - 2 - width)), "start"
    return (
        f'<line class="target" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" '
        f'stroke="{TARGET}" stroke-dasharray="6 4"/><text class="target-label" '
        f'x="{at:.1f}" y="{TOP + 10}" fill="{TARGET}" text-anchor="{anchor}">'
        f"{html.escape(label)}</text>"
    )
