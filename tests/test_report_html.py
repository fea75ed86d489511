"""The report as a person reads it: the HTML page opened in headless Chromium (readable axis labels
inside their plots, money with its currency, a fixed colour per source, only plots with something
to show), and unknown costs shown as unknown in the text, the HTML and the JSON alike."""

from __future__ import annotations

import json
import re
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import _browser
import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiguard
from aiguard._report_plots import amount, color, nice_top

PRICE = "0.00044"  # per call of model "m": a cost per call the old axis cut to ".00044"


def _seed(tmp_path: Path) -> None:
    """Three features in one store, prices in EUR:

    - ``triage``: no rollout; one answer in three has a low confidence and rules serve the call;
    - ``reply``: a 50 % rollout, a template as baseline, one answer in five has a low confidence
      and a default serves the call (sources baseline, default, model);
    - ``unpriced``: a model missing from the price table, under a rollout with a free template.
    """
    aiguard.configure(
        store=tmp_path / "r.db",
        prices={"currency": "EUR", "models": {"m": {"per_call": PRICE}}},
        features={
            "triage": {"targets": ["cost_per_call <= 0.0004 EUR", "acceptance_rate >= 50 %"]},
            "unpriced": {"targets": ["cost_per_call <= 0.001 EUR"]},
        },
    )

    def by_rules(text: str) -> dict[str, Any]:
        return {"label": "rules", "score": 1.0}

    @aiguard.guard(
        "triage", model="m", confidence="score", threshold=0.5, fallback=aiguard.Rules(by_rules)
    )
    def triage(text: str) -> dict[str, Any]:
        return {"label": "model", "score": 0.2 if int(text) % 3 == 0 else 0.9}

    @aiguard.guard(
        "reply", model="m", confidence="score", threshold=0.5,
        rollout=aiguard.Rollout(percent=50, key="user"),
        fallback=aiguard.Default({"label": "template", "score": 1.0}),
    )  # fmt: skip
    def reply(user: str, text: str) -> dict[str, Any]:
        return {"label": "model", "score": 0.2 if int(text) % 5 == 0 else 0.9}

    @aiguard.guard(
        "unpriced", model="no-price", rollout=aiguard.Rollout(percent=50, key="user"),
        fallback=aiguard.Default("template"),
    )  # fmt: skip
    def unpriced(user: str, text: str) -> str:
        return "model"

    for i in range(60):
        (triage.outcome(str(i)).accept if i % 4 else triage.outcome(str(i)).reject)()
        reply.outcome(f"user-{i}", str(i)).accept()
        unpriced.outcome(f"user-{i}", str(i)).accept()
    aiguard.flush()


def _inside(box: list[float], outer: list[float]) -> bool:
    return (
        box[0] >= outer[0] - 0.5
        and box[1] >= outer[1] - 0.5
        and box[2] <= outer[2] + 0.5
        and box[3] <= outer[3] + 0.5
    )


def _legend(plot: dict[str, Any]) -> dict[str, str]:
    return dict(plot["legend"])


def _plot(plots: list[dict[str, Any]], title: str) -> dict[str, Any]:
    [found] = [p for p in plots if p["title"] == title]
    return found


def test_html_axis_labels_are_complete_inside_their_plots_with_currency(tmp_path: Path) -> None:
    """Every label of every plot lies inside its SVG (nothing cut: '0.0005 EUR', not
    '.0005'), money is in fixed notation with the price table's currency, and a cost per call
    of 0.00044 is drawn against a round axis."""
    _seed(tmp_path)
    plots = _browser.plots(aiguard.report("triage").to_html(), tmp_path)
    for p in plots:
        assert p["view_box"] == f"0 0 {p['box'][2] - p['box'][0]:g} {p['box'][3] - p['box'][1]:g}"
        for t in p["texts"]:
            assert t["text"].strip(), p["title"]
            assert _inside(t["box"], p["box"]), (p["title"], t)
            assert not re.search(r"\d[eE][+-]?\d", t["text"]), t  # no scientific notation
    per_call = _plot(plots, "Cost per call, per day (EUR)")
    ticks = [t["text"] for t in per_call["texts"] if t["cls"] == "tick"]
    assert ticks == ["0 EUR", "0.00025 EUR", "0.0005 EUR"]
    [label] = [t for t in per_call["texts"] if t["cls"] == "target-label"]
    assert label["text"] == "target cost_per_call <= 0.0004 EUR"
    assert label["fill"] == "rgb(220, 38, 38)"  # the target's red, as drawn
    per_day = _plot(plots, "Cost per day (EUR)")
    assert all(t["text"].endswith(" EUR") for t in per_day["texts"] if t["cls"] == "tick")
    page = aiguard.report("triage").to_html()
    assert "COST/CALL (EUR)" in page and "Amounts in EUR" in page


def test_html_sources_keep_their_colour_across_reports(tmp_path: Path) -> None:
    """A source has the same colour in every report, whichever other sources appear: triage
    has model and rules, reply baseline, default and model."""
    _seed(tmp_path)
    triage = _browser.plots(aiguard.report("triage").to_html(), tmp_path, "triage")
    reply = _browser.plots(aiguard.report("reply").to_html(), tmp_path, "reply")
    a = _legend(_plot(triage, "Calls per day, by source"))
    b = _legend(_plot(reply, "Calls per day, by source"))
    assert set(a) == {"model", "rules"} and set(b) == {"baseline", "default", "model"}
    assert a["model"] == b["model"] == "rgb(37, 99, 235)"
    assert len(set(b.values())) == 3 and a["rules"] not in b.values()
    bars = _plot(reply, "Calls per day, by source")
    assert set(bars["fills"]) == set(b.values())  # the bars are painted as the legend says
    arms = _legend(_plot(reply, "Acceptance per day, by arm"))
    assert arms["ai"] == a["model"]  # the AI arm is drawn as the model


def test_html_plots_only_what_has_something_to_show(tmp_path: Path) -> None:
    """No 'by arm' plot without a rollout, no cost plots while costs are unknown, and every
    plot drawn has marks."""
    _seed(tmp_path)
    triage = _browser.plots(aiguard.report("triage").to_html(), tmp_path, "triage")
    reply = _browser.plots(aiguard.report("reply").to_html(), tmp_path, "reply")
    unpriced = _browser.plots(aiguard.report("unpriced").to_html(), tmp_path, "unpriced")
    triage = [p for p in triage if not p["title"].startswith("Reliability")]  # quality.md's
    assert [p["title"] for p in triage] == [
        "Acceptance per day",
        "Latency (whole call), calls per bucket",
        "Cost per day (EUR)",
        "Cost per call, per day (EUR)",
        "Calls per day, by source",
    ]
    assert "Acceptance per day, by arm" in [p["title"] for p in reply]
    assert [p["title"] for p in unpriced] == [
        "Acceptance per day, by arm",
        "Latency (whole call), calls per bucket",
        "Calls per day, by source",
    ]
    assert all(p["marks"] > 0 for p in triage + reply + unpriced)


def test_unknown_cost_is_unknown_in_text_html_and_json(tmp_path: Path) -> None:
    """With the AI arm's cost unknown (its model has no price), the overall cost per call is
    unknown too, not 0: in the figures, the text, the HTML and the JSON, with the share priced."""
    _seed(tmp_path)
    result = aiguard.report("unpriced", by="arm")
    [f] = result.features
    groups = {g.group: g for g in result.groups["unpriced"]}
    ai, base = groups["arm=ai"], groups["arm=baseline"]
    assert (f.cost, f.cost_per_call, f.cost_per_accepted) == (None, None, None)
    assert (ai.cost, ai.cost_per_call, ai.priced) == (None, None, 0)
    assert base.cost_per_call == 0 and base.priced == base.calls
    assert f.priced == base.calls and f.known_cost == 0
    [(_, figure, verdict)] = result.targets["unpriced"]
    assert (figure, verdict) == (None, None)
    text = result.to_text()
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:4]}
    assert rows["unpriced"][-2:] == ["unknown", "unknown"]
    assert rows["arm=ai"][-2:] == ["unknown", "unknown"]
    assert rows["arm=baseline"][-2:] == ["0", "0"]
    share = f"{100 * base.calls / f.calls:.1f}%"
    assert f"for the {base.calls} of {f.calls} calls with a known cost ({share})" in text
    assert "target cost_per_call <= 0.001 EUR: unknown n/a" in text
    page = result.to_html()
    first_row = re.search(r"<tr><td>unpriced</td>(.*?)</tr>", page)
    assert first_row and first_row.group(1).endswith("<td>unknown</td><td>unknown</td>")
    assert f"calls with a known cost ({share})" in page
    data = json.loads(result.to_json())
    [jf] = data["features"]
    assert (jf["cost"], jf["cost_per_call"], jf["cost_per_accepted"]) == (None, None, None)
    assert (jf["priced"], jf["known_cost"], data["currency"]) == (base.calls, "0", "EUR")
    jgroups = {g["group"]: g for g in data["groups"]["unpriced"]}
    assert jgroups["arm=ai"]["cost_per_call"] is None
    assert jgroups["arm=baseline"]["cost_per_call"] == "0"
    assert data["targets"]["unpriced"] == [
        {"target": "cost_per_call <= 0.001 EUR", "figure": None, "met": None}
    ]
    assert all(v is None for v in data["series"]["unpriced"]["cost_per_call"])


def test_a_fully_priced_feature_shows_its_costs(tmp_path: Path) -> None:
    """Every call priced (the model's, the free rules' after it): the cost figures are known."""
    _seed(tmp_path)
    [f] = aiguard.report("triage").features
    assert f.priced == f.calls == 60  # the model is called (and paid) on every call
    assert f.cost == f.known_cost == 60 * Decimal(PRICE)
    exact = (f.cost / 60).quantize(Decimal("1e-12"), rounding=ROUND_DOWN)
    assert f.cost_per_call == exact.normalize()


@given(st.decimals(min_value=0, max_value=10**6, places=12, allow_nan=False))
def test_amounts_are_fixed_notation_and_exact_enough(value: Decimal) -> None:
    """An amount is written without exponent, to 6 decimals or 3 significant digits, and reads
    back within that rounding."""
    text = amount(value)
    assert "e" not in text.lower() and not text.startswith(".")
    assert abs(Decimal(text) - value) <= max(Decimal("0.0000005"), value * Decimal("0.005"))


@given(st.floats(min_value=1e-12, max_value=1e12))
def test_axis_tops_are_round_and_cover_the_values(value: float) -> None:
    """The top of a value axis is 1, 2 or 5 x 10^k, at least the highest value."""
    top = nice_top(value)
    assert top >= value * (1 - 1e-9)
    mantissa = f"{top:e}".split("e")[0]
    assert mantissa in {"1.000000", "2.000000", "5.000000"}


@given(st.text(min_size=1, max_size=20))
def test_colours_depend_on_the_name_only(name: str) -> None:
    """A series' colour is a function of its name (stable across processes: no hash seed)."""
    assert color(name) == color(name) and re.fullmatch(r"#[0-9a-f]{6}", color(name))


@pytest.mark.parametrize("name", ["model", "rules", "default", "human", "baseline", "none"])
def test_sources_have_distinct_fixed_colours(name: str) -> None:
    """The sources' colours are fixed and differ from each other."""
    sources = ["model", "rules", "default", "human", "baseline", "none"]
    assert [color(s) for s in sources].count(color(name)) == 1
