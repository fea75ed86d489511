"""The canvas's lines and tables in a report (text, HTML), and its JSON."""

from __future__ import annotations

import dataclasses
import html as _html
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ._report_plots import amount

if TYPE_CHECKING:
    from .canvas import Canvas


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def money(x: Decimal | None, currency: str, unknown: bool = False) -> str:
    if x is None:
        return "unknown" if unknown else "-"
    sign = "-" if x < 0 else ""
    return f"{sign}{amount(abs(x))} {currency}"


def ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}" if x >= 1 else f"{x:.4g}"


def rows(c: Canvas) -> list[tuple[str, str]]:
    """The canvas's (label, value) rows: what is configured, then what it gives."""
    cur = c.currency
    unknown = c.cost is None  # some call's cost is unknown
    out: list[tuple[str, str]] = []
    if c.owner is not None:
        out.append(("owner", c.owner))
    if c.intended_use is not None:
        out.append(("intended use", c.intended_use))
    if c.limits:
        out.append(("limits", "; ".join(c.limits)))
    if c.value_per_accepted is not None:
        out.append(("value per accepted answer", money(c.value_per_accepted, cur)))
        out.append(("accepted AI answers", f"{c.accepted_ai:,}"))
        out.append(("value delivered", money(c.value, cur)))
        out.append(("AI cost", money(c.cost, cur, True)))
        out.append(("ROI (value / AI cost)", "unknown" if unknown else ratio(c.roi)))
        out.append(("AI cost per unit of value", "unknown" if unknown else ratio(c.cost_per_value)))
        out.append(("net value (value - AI cost)", money(c.net_value, cur, unknown)))
    if c.baseline_cost is not None:
        out.append(("baseline cost per task", money(c.baseline_cost, cur)))
        out.append(("savings vs baseline", money(c.savings, cur, unknown)))
    if c.eligible_units:
        out.append(
            ("adoption", f"{pct(c.adoption)} ({c.ai_units:,} of {c.eligible_units:,} units)")
        )
    return out


def week_text(c: Canvas) -> str:
    return ", ".join(
        f"{w.week} {pct(w.rate)} ({w.ai_units:,}/{w.eligible_units:,})" for w in c.weeks
    )


def text_lines(c: Canvas) -> list[str]:
    """The canvas in a text report: one line of settings and figures, one of adoption."""
    shown = [f"{label} {value}" for label, value in rows(c) if label != "adoption"]
    out = []
    if shown:
        out.append(f"{c.feature}: canvas: " + "; ".join(shown))
    if c.eligible_units:
        out.append(
            f"{c.feature}: adoption {pct(c.adoption)} ({c.ai_units:,} of {c.eligible_units:,} "
            f"units served by the AI arm); by ISO week: {week_text(c)}"
        )
    return out


def html_table(c: Canvas) -> str:
    """The canvas in an HTML report: a two-column table, and adoption per week."""
    found = rows(c)
    if not found:
        return ""
    cells = "".join(
        f"<tr><th>{_html.escape(label)}</th><td>{_html.escape(value)}</td></tr>"
        for label, value in found
    )
    parts = [f'<table class="canvas"><caption>Canvas</caption>{cells}</table>']
    if c.weeks:
        parts.append(
            '<table class="adoption"><caption>Adoption by ISO week</caption><tr><th>week</th>'
            "<th>starts</th><th>AI units</th><th>eligible units</th><th>adoption</th></tr>"
        )
        for w in c.weeks:
            parts.append(
                f"<tr><td>{w.week}</td><td>{w.starts}</td><td>{w.ai_units:,}</td>"
                f"<td>{w.eligible_units:,}</td><td>{pct(w.rate)}</td></tr>"
            )
        parts.append("</table>")
    return "".join(parts)


def as_dict(c: Canvas) -> dict[str, Any]:
    """The canvas as JSON holds it (amounts as Decimals, made strings by the report's JSON)."""
    data = dataclasses.asdict(c)
    data["adoption"] = c.adoption
    data["weeks"] = [{**dataclasses.asdict(w), "rate": w.rate} for w in c.weeks]
    return data
