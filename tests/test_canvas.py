"""The product canvas: its settings checked at configuration, and what the report makes of them
(value delivered, ROI, cost per unit of value, savings, adoption per ISO week)."""

from __future__ import annotations

import json
import random
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from services import fresh_store

import aiguard
from aiguard import _canvas_sql
from aiguard._runtime.records import CALL_RECORD_COLUMNS
from aiguard.canvas import iso_week
from aiguard.rollout import unit_hash

PRICES = {"currency": "USD", "models": {"small": {"input": "1", "output": "2"}}}
CANVAS = {
    "owner": "support-ai@acme.example",
    "value_per_accepted": "4.50",
    "baseline_cost": "6.00",
    "intended_use": "Route incoming support tickets to a queue",
    "limits": ["Not for legal questions", "English only"],
}


def _usage(model: str = "small") -> dict[str, Any]:
    return {"model": model, "usage": {"prompt_tokens": 1000, "completion_tokens": 250}}


# -- configuration -------------------------------------------------------------------------------


def test_canvas_settings_are_read_from_configure_and_the_config_file(tmp_path: Path) -> None:
    """configure(features=...) and a TOML config file give the same canvas, texts stripped,
    amounts exact, a currency named by an amount kept."""
    aiguard.configure(features={"triage": {**CANVAS, "owner": "  ana  ",
                                           "value_per_accepted": "4.50 USD"}})  # fmt: skip
    from aiguard._runtime.state import runtime

    cfg = runtime.features["triage"]
    assert (cfg.owner, cfg.value_per_accepted, cfg.currency) == ("ana", Decimal("4.50"), "USD")
    assert cfg.limits == ("Not for legal questions", "English only")
    path = tmp_path / "aiguard.toml"
    path.write_text(
        '[features.triage]\nowner = "ana"\nvalue_per_accepted = 4.5\nbaseline_cost = "6"\n'
        'intended_use = "Route tickets"\nlimits = "English only"\n'
    )
    loaded = aiguard.load_config(path).features["triage"]
    assert (loaded.value_per_accepted, loaded.baseline_cost) == (Decimal("4.5"), Decimal("6"))
    assert (loaded.limits, loaded.intended_use) == ("English only", "Route tickets")


@pytest.mark.parametrize(
    ("settings_", "named"),
    [
        ({"value_per_accepted": -1}, ["value_per_accepted", "-1"]),
        ({"baseline_cost": "-0.5"}, ["baseline_cost", "-0.5"]),
        ({"value_per_accepted": "four"}, ["value_per_accepted", "four"]),
        ({"value_per_accepted": "1e-13"}, ["value_per_accepted", "1e-13"]),
        ({"value_per_accepted": True}, ["value_per_accepted", "True"]),
        ({"owner": "  "}, ["owner", "'  '"]),
        ({"intended_use": ""}, ["intended_use", "''"]),
        ({"limits": []}, ["limits", "[]"]),
        ({"limits": ["ok", ""]}, ["limits[1]", "''"]),
        ({"currency": "dollars"}, ["currency", "dollars"]),
        ({"value_per_accepted": "4 EUR", "baseline_cost": "3 USD"}, ["4 EUR", "3 USD"]),
    ],
)
def test_bad_canvas_settings_name_the_field_and_the_value(
    settings_: dict[str, Any], named: list[str]
) -> None:
    """A bad canvas setting is a ConfigError at configuration naming the field and the value,
    and changes nothing."""
    aiguard.configure(features={"triage": {"owner": "ana"}})
    with pytest.raises(aiguard.ConfigError) as caught:
        aiguard.configure(features={"triage": settings_})
    for text in named:
        assert text in str(caught.value)
    from aiguard._runtime.state import runtime

    assert runtime.features["triage"].owner == "ana"


def test_canvas_amounts_must_be_in_the_price_tables_currency() -> None:
    """An amount in another currency than the price table's is refused, whichever comes
    first: the features or the prices."""
    aiguard.configure(prices=PRICES)
    with pytest.raises(aiguard.ConfigError, match=r"'EUR'.*price table's currency 'USD'"):
        aiguard.configure(features={"triage": {"value_per_accepted": "4 EUR"}})
    aiguard.configure(prices=None, features={"triage": {"value_per_accepted": "4 EUR"}})
    with pytest.raises(aiguard.ConfigError, match="value_per_accepted"):
        aiguard.configure(prices=PRICES)
    aiguard.configure(prices={**PRICES, "currency": "EUR"})  # the same currency: fine


@given(st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False))
@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_exact_amount_is_kept_exactly(amount: Decimal) -> None:
    """Amounts up to 12 decimals are kept exactly, given as text, Decimal or with a code."""
    for given_ in (amount, str(amount), f"{amount} USD", f"USD {amount}"):
        cfg = aiguard.FeatureConfig(value_per_accepted=given_)
        assert cfg.value_per_accepted == amount


# -- value, ROI, savings -------------------------------------------------------------------------


def _served_and_decided(tmp_path: Path, model: str = "small") -> tuple[Any, list[Any]]:
    """A feature with a fallback, calls of which some are accepted, edited, rejected; returns
    the guard and the outcomes with what was decided on each."""
    aiguard.configure(store=tmp_path / "c.db", prices=PRICES, features={"triage": CANVAS})

    @aiguard.guard("triage", confidence="score", threshold=0.5,
                   fallback=aiguard.Default({"label": "other", "score": 1.0}))  # fmt: skip
    def triage(text: str, score: float) -> dict[str, Any]:
        return {"label": "billing", "score": score, **_usage(model)}

    rng = random.Random(7)
    decided = []
    for i in range(60):
        outcome = triage.outcome(f"ticket {i}", rng.choice([0.2, 0.9, 0.95]))
        kind = rng.choice(["accept", "edit", "reject", None])
        if kind == "accept":
            outcome.accept()
        elif kind == "edit":
            outcome.edit({"label": "billing-2"})
        elif kind == "reject":
            outcome.reject()
        decided.append((outcome, kind))
    return triage, decided


def test_value_roi_and_savings_from_the_accepted_ai_answers(tmp_path: Path) -> None:
    """Value counts the model's answers accepted or edited (never a fallback's), ROI is value
    over the AI cost of every call, savings the baseline cost of those answers less that cost."""
    _, decided = _served_and_decided(tmp_path)
    kept = sum(1 for o, kind in decided if o.source == "model" and kind in ("accept", "edit"))
    fallback_accepted = sum(1 for o, kind in decided if o.source != "model" and kind)
    assert kept and fallback_accepted  # both kinds are there to tell apart
    cost = sum((o.cost for o, _ in decided), Decimal(0))
    result = aiguard.report("triage")
    c = result.canvas["triage"]
    assert c.accepted_ai == kept
    assert c.value == Decimal("4.50") * kept
    assert c.cost == cost == result.features[0].cost
    assert c.roi == pytest.approx(float(Decimal("4.50") * kept / cost))
    assert c.cost_per_value == pytest.approx(float(cost / (Decimal("4.50") * kept)))
    assert c.savings == Decimal("6.00") * kept - cost
    assert c.net_value == Decimal("4.50") * kept - cost
    assert (c.owner, c.limits) == (CANVAS["owner"], tuple(CANVAS["limits"]))
    text = result.to_text()
    assert f"accepted AI answers {kept}" in text and "owner support-ai@acme.example" in text
    data = json.loads(result.to_json())["canvas"]["triage"]
    assert Decimal(data["value"]) == c.value and Decimal(data["savings"]) == c.savings
    assert '<table class="canvas">' in result.to_html()


def test_roi_is_unknown_while_a_cost_is_unknown(tmp_path: Path) -> None:
    """A model without a price makes the cost unknown: value is known, ROI, cost per value,
    net value and savings are not, and the text says unknown."""
    _served_and_decided(tmp_path, model="unpriced")
    result = aiguard.report("triage")
    c = result.canvas["triage"]
    assert c.value is not None and c.cost is None
    assert (c.roi, c.cost_per_value, c.net_value, c.savings) == (None, None, None, None)
    assert "ROI (value / AI cost) unknown" in result.to_text()


def test_a_report_in_another_currency_refuses_the_canvas(tmp_path: Path) -> None:
    """The report's currency must be the one the canvas names: nothing converts."""
    _served_and_decided(tmp_path)
    aiguard.configure(features={"triage": {**CANVAS, "currency": "USD"}})
    with pytest.raises(aiguard.ConfigError, match="canvas amounts are in USD"):
        aiguard.report("triage", currency="EUR")


# -- adoption ------------------------------------------------------------------------------------


def test_adoption_counts_distinct_units_served_by_the_ai_arm(tmp_path: Path) -> None:
    """Each call records a hash of its unit (never the key); adoption is the distinct units
    whose AI-arm call the model answered over every unit under the rollout; an excluded unit
    is not eligible."""
    aiguard.configure(store=tmp_path / "a.db", prices=PRICES, features={"reply": CANVAS})
    rollout = aiguard.Rollout(percent=40, key="user", exclude={"user": ["staff"]})

    @aiguard.guard("reply", rollout=rollout, fallback=aiguard.Default("template"))
    def reply(user: str, text: str) -> dict[str, Any]:
        return {"answer": "ok", **_usage()}

    users = [f"user-{i}" for i in range(50)]
    outcomes = [reply.outcome(u, "hi") for u in users * 3 + ["staff"] * 4]
    served = {o_user for o_user, o in zip(users * 3, outcomes, strict=False)
              if o.arm == "ai" and o.source == "model"}  # fmt: skip
    assert 0 < len(served) < len(users)
    result = aiguard.report("reply")
    c = result.canvas["reply"]
    assert (c.ai_units, c.eligible_units) == (len(served), len(users))
    assert c.adoption == pytest.approx(len(served) / len(users))
    [week] = c.weeks
    assert (week.ai_units, week.eligible_units) == (len(served), len(users))
    from aiguard.store import configured

    rows = configured().call_records(feature="reply")
    stored_units = {r["unit"] for r in rows if r["unit"] is not None}
    assert stored_units == {unit_hash("reply", u) for u in users}
    assert not any(u in json.dumps(r) for r in rows for u in users)  # the key is never kept
    assert "adoption" in result.to_text() and "Adoption by ISO week" in result.to_html()


def test_a_full_rollout_still_records_units(tmp_path: Path) -> None:
    """At 100 % (no bucketing needed) and for included units, the unit is still recorded."""
    aiguard.configure(store=tmp_path / "f.db")

    @aiguard.guard("full", rollout=aiguard.Rollout(percent=100, key="user"))
    def full(user: str) -> str:
        return "ok"

    for u in ["a", "b", "a", ""]:
        full(u)
    c = aiguard.report("full").canvas["full"]
    assert (c.ai_units, c.eligible_units) == (2, 2)


def _row(feature: str, started: float, unit: str | None, arm: str, source: str) -> tuple[Any, ...]:
    row = dict.fromkeys(CALL_RECORD_COLUMNS)
    row.update(call_id=f"ag_t_{random.getrandbits(64):x}", feature=feature, started_at=started,
               source=source, reason="served" if source == "model" else "not_in_rollout",
               arm=arm, latency=0.01, unit=unit)  # fmt: skip
    return tuple(row[c] for c in CALL_RECORD_COLUMNS)


CALLS = st.lists(
    st.tuples(
        st.floats(min_value=1.5e9, max_value=1.5e9 + 40 * 86400),
        st.sampled_from(["u1", "u2", "u3", "u4", "u5", None]),
        st.sampled_from(["ai", "baseline"]),
        st.sampled_from(["model", "rules", "baseline", "cache", "human", None]),
    ),
    max_size=60,
)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@given(calls=CALLS, since=st.sampled_from([None, 1.5e9 + 10 * 86400]))
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
def test_adoption_in_sql_equals_the_python_reference(
    kind: str, calls: list[Any], since: float | None, tmp_path: Path
) -> None:
    """SQLite and PostgreSQL count the same units per ISO week as the Python reference."""
    rows = [_row("f", t, u, arm, src) for t, u, arm, src in calls]
    rows.append(_row("other", 1.5e9, "u1", "ai", "model"))  # another feature: not counted
    with fresh_store(kind, tmp_path / f"{random.getrandbits(32)}.db") as store:
        if rows:
            store.add_call_records(rows)
        found = _canvas_sql.adoption_counts(store, "f", since)
        expected = _canvas_sql.in_python(r for r in store.call_records(feature="f", since=since))
    assert found == expected
    for week, _, _ in found[1]:  # each week starts on a Monday, and is named as ISO 8601 does
        name, starts = iso_week(7 * week - 3)
        day = date.fromisoformat(starts)
        assert day.weekday() == 0
        assert name == "{}-W{:02d}".format(*day.isocalendar()[:2])
