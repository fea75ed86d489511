"""A system card as one self-contained HTML page: a section per part, no scripts; long texts
wrap inside the page's width (nothing overflows)."""

from __future__ import annotations

import html as _html
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .card import SystemCard

SECTIONS = (
    ("period", "Period"),
    ("purpose", "Owner, intended use and limits"),
    ("models", "Models"),
    ("fallbacks", "Fallbacks"),
    ("rollout", "Rollout"),
    ("targets", "Targets"),
    ("quality", "Quality"),
    ("segments", "Segments"),
    ("drift", "Drift"),
    ("cost", "Cost and ROI"),
)
"""The card's sections, in order: (id, title)."""

_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;"
    "color:#111}h1{font-size:1.6em}h2{font-size:1.15em;margin:1.4em 0 .4em}"
    "table{border-collapse:collapse;width:100%;table-layout:fixed}"
    "th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top;"
    "overflow-wrap:anywhere;word-break:break-word}th{width:34%;font-weight:600;color:#333}"
    ".pass{color:#15803d}.fail{color:#b91c1c}"
)


def _cell(value: str) -> str:
    text = _html.escape(value)
    if value.endswith(" FAIL") or value.endswith("FLAGGED"):
        return f'<td class="fail">{text}</td>'
    if value.endswith(" PASS"):
        return f'<td class="pass">{text}</td>'
    return f"<td>{text}</td>"


def html(card: SystemCard) -> str:
    when = datetime.fromtimestamp(card.generated_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    name = _html.escape(card.feature)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>System card: {name}</title><style>{_STYLE}</style></head><body>",
        f"<h1>System card: {name}</h1><p>Generated {when} by aiguard.</p>",
    ]
    for key, title in SECTIONS:
        rows = card.sections.get(key) or [("", "none")]
        parts.append(f'<section id="{key}"><h2>{_html.escape(title)}</h2><table>')
        for label, value in rows:
            parts.append(f"<tr><th>{_html.escape(label)}</th>{_cell(value)}</tr>")
        parts.append("</table></section>")
    parts.append("</body></html>")
    return "".join(parts)
