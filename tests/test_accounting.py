"""Cost, price tables, fallback costs, budgets, latency SLO and aiguard.stats()."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from _modes import Mode
from clients import MESSAGE, anthropic_client, openai_client
from hypothesis import given
from hypothesis import strategies as st

import aiguard
from aiguard import Reason, Source, Usage

PRICES = {
    "currency": "USD",
    "models": {
        "gpt-4.1-mini": {"input": "0.40", "cached_input": "0.10", "output": "1.60"},
        "claude-test-1": {
            "input": "3",
            "cached_input": "0.30",
            "cache_write": "3.75",
            "output": "15",
        },
        "ticket-clf": {"per_call": "0.00002"},
    },
}


def test_openai_cost_follows_openai_rule(mode: Mode) -> None:
    """Cached OpenAI tokens are billed at the cached price and not twice."""
    aiguard.configure(prices=PRICES)
    client = openai_client()

    @mode.guard("draft")
    def draft() -> Any:
        return client.chat.completions.create(model="gpt-4.1-mini", messages=[])

    outcome = mode.outcome(draft)
    # 200 uncached at 0.40/M + 1000 cached at 0.10/M + 80 out at 1.60/M (dated model -> prefix)
    assert outcome.cost == Decimal("0.000308")


def test_anthropic_cost_follows_anthropic_rule(mode: Mode) -> None:
    """Anthropic cache reads and writes are billed at their own prices, on top of input."""
    aiguard.configure(prices=PRICES)
    client = anthropic_client()

    @mode.guard("draft")
    def draft() -> Any:
        return client.messages.create(model="claude-test-1", max_tokens=5, messages=[])

    # 100 input at 3/M + 300 read at 0.30/M + 50 write at 3.75/M + 20 out at 15/M
    assert mode.outcome(draft).cost == Decimal("0.0008775")


def test_flat_per_call_price_for_non_token_models(mode: Mode) -> None:
    """A classifier with a per-call price and the guard's model= name."""
    aiguard.configure(prices=PRICES)

    @mode.guard("triage", model="ticket-clf")
    def triage() -> str:
        return "billing"

    assert mode.outcome(triage).cost == Decimal("0.00002")


def test_unknown_model_is_unknown_cost_warned_once(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """A model missing from the table: cost None (not zero), a warning logged once."""
    aiguard.configure(prices=PRICES)

    @mode.guard("x", model="mystery-model")
    def f() -> dict[str, Any]:
        return {"input_tokens": 10, "output_tokens": 1}

    with caplog.at_level("WARNING", logger="aiguard"):
        assert [mode.outcome(f).cost for _ in range(3)] == [None, None, None]
    assert sum("mystery-model" in r.getMessage() for r in caplog.records) == 1
    s = aiguard.stats("x")
    assert s.unknown_cost_calls == 3 and s.cost == 0 and s.cost_per_call is None


def test_fallback_costs_count(mode: Mode) -> None:
    """Rules and human review declare their own cost; the call's cost includes them."""
    aiguard.configure(prices=PRICES)
    queue = aiguard.ReviewQueue(":memory:")

    def rules(t: str) -> str:
        raise LookupError

    @mode.guard(
        "tri",
        model="ticket-clf",
        confidence="score",
        threshold=0.9,
        fallback=[
            aiguard.Rules(rules, cost="0.000001"),
            aiguard.HumanReview(queue=queue, respond=lambda i: "pending", cost="0.50"),
        ],
    )
    def triage(t: str) -> dict[str, Any]:
        return {"score": 0.1}

    outcome = mode.outcome(triage, "x")
    assert outcome.source is Source.HUMAN
    assert outcome.cost == Decimal("0.00002") + Decimal("0.000001") + Decimal("0.50")
    assert aiguard.stats("tri").cost == outcome.cost


def test_price_file_errors_name_model_field_and_value(tmp_path: Path) -> None:
    """A bad price file fails at load time naming the model, the field and the value."""
    path = tmp_path / "prices.toml"
    path.write_text('[models."gpt-x"]\ninput = "-1"\n')
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.configure(prices=path)
    message = str(info.value)
    assert "prices.toml" in message and "model 'gpt-x'" in message
    assert "field 'input'" in message and "'-1'" in message
    path.write_text('[models."gpt-x"]\ninpt = "1"\n')
    with pytest.raises(aiguard.ConfigError, match="field 'inpt'"):
        aiguard.PriceTable.load(path)


def test_prices_in_the_config_file(mode: Mode, tmp_path: Path) -> None:
    """load_config reads prices from a path or inline."""
    (tmp_path / "prices.json").write_text('{"models": {"m": {"per_call": "0.01"}}}')
    (tmp_path / "aiguard.toml").write_text('prices = "prices.json"\n')
    aiguard.load_config(tmp_path / "aiguard.toml")

    @mode.guard("p", model="m")
    def f() -> int:
        return 1

    assert mode.outcome(f).cost == Decimal("0.01")


usage_st = st.builds(
    Usage,
    input_tokens=st.integers(0, 10**7),
    output_tokens=st.integers(0, 10**6),
    cache_read_tokens=st.integers(0, 10**6),
).filter(lambda u: u.cache_read_tokens <= u.input_tokens)
price_st = st.decimals(min_value=0, max_value=100, places=6)


@given(st.lists(usage_st, min_size=1, max_size=30), price_st, price_st, price_st)
def test_costs_sum_exactly(
    usages: list[Usage], pin: Decimal, pcached: Decimal, pout: Decimal
) -> None:
    """For any calls and prices, the per-call costs are exact and add up with no drift."""
    table = aiguard.PriceTable(
        models={"m": {"input": pin, "cached_input": pcached, "output": pout}}
    )

    def exact(u: Usage) -> Decimal:
        return (
            Decimal(u.input_tokens - u.cache_read_tokens) * pin
            + Decimal(u.cache_read_tokens) * pcached
            + Decimal(u.output_tokens) * pout
        ) / Decimal(10**6)

    costs = [table.cost("m", u) for u in usages]
    for u, c in zip(usages, costs, strict=True):
        assert c == exact(u)
    total = sum((c for c in costs if c is not None), Decimal(0))
    assert total == sum((exact(u) for u in usages), Decimal(0))


def test_stats_sum_costs_exactly_over_many_calls(mode: Mode) -> None:
    """10,000 calls at a price float arithmetic would drift on: the total is exact."""
    aiguard.configure(prices={"models": {"m": {"per_call": "0.0001"}}})

    @mode.guard("drift", model="m")
    def f() -> int:
        return 1

    for _ in range(10_000):
        mode.call(f)
    assert aiguard.stats("drift").cost == Decimal("1")
    assert aiguard.stats("drift").cost_per_call == Decimal("0.0001")


def test_budget_stops_model_calls_then_rolls_over(
    mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the window's budget the model is not called (over_budget); the next window resets."""
    from aiguard._runtime import budgets as budget_module

    now = [1_000_000.0]
    monkeypatch.setattr(budget_module.time, "time", lambda: now[0])
    aiguard.configure(prices={"models": {"m": {"per_call": "0.40"}}})
    calls = {"n": 0}

    @mode.guard(
        "b", model="m", budget=aiguard.Budget(limit="1.00", per="hour"),
        fallback=aiguard.Rules(lambda: "rules"),
    )  # fmt: skip
    def f() -> str:
        calls["n"] += 1
        return "model"

    # 1.20 spent: the third call went over
    assert [mode.call(f), mode.call(f), mode.call(f)] == ["model"] * 3
    blocked = mode.outcome(f)
    assert blocked.reason is Reason.OVER_BUDGET and blocked.value == "rules"
    assert calls["n"] == 3
    assert "spent 1.2 of the 1.00 budget" in (blocked.detail or "")
    now[0] += 3600
    assert mode.call(f) == "model"


def test_budget_counts_fallback_costs(mode: Mode) -> None:
    """Fallback handlers' costs count against the budget too."""

    @mode.guard(
        "bf",
        budget=aiguard.Budget(limit="1", per="day"),
        fallback=aiguard.Rules(lambda: "human-ish", cost="0.6"),
        rollout=aiguard.Rollout(percent=0, key=lambda: "k"),
    )
    def f() -> str:
        return "model"

    assert mode.outcome(f).reason is Reason.NOT_IN_ROLLOUT
    assert mode.outcome(f).reason is Reason.NOT_IN_ROLLOUT
    aiguard.set_rollout("bf", 100)
    assert mode.outcome(f).reason is Reason.OVER_BUDGET  # 1.2 spent by the fallback alone


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 1.5}, "floats drift"),
        ({"limit": "-1"}, "must be a finite amount >= 0"),
        ({"limit": "1", "per": "week"}, r"per='week'\) is invalid"),
        ({"limit": "1", "per": 0}, r"per=0\) is invalid"),
    ],
)
def test_bad_budgets(kwargs: dict[str, Any], message: str) -> None:
    """Budget() validates its limit and window."""
    with pytest.raises(aiguard.ConfigError, match=message):
        aiguard.Budget(**kwargs)


def test_stats_snapshot(mode: Mode) -> None:
    """Calls by source and reason, fallback rate, latency percentiles, tokens, SLO breaches."""

    @mode.guard(
        "st",
        confidence="score",
        threshold=0.5,
        latency_slo=0.015,
        fallback=aiguard.Default({"score": 1.0}),
    )
    def f(score: float, delay: float) -> dict[str, Any]:
        time.sleep(delay)
        return {"score": score, "input_tokens": 10, "output_tokens": 2}

    for i in range(20):
        mode.call(f, 0.9 if i % 4 else 0.1, 0.02 if i == 0 else 0.0)
    s = aiguard.stats("st")
    assert s.calls == 20
    assert s.by_source == {"model": 15, "default": 5}
    assert s.by_reason == {"served": 15, "low_confidence": 5}
    assert s.fallback_rate == 0.25
    assert s.input_tokens == 200 and s.output_tokens == 40
    assert s.slo_breaches == 1 and s.latency_slo == 0.015 and s.slo_met is True
    assert s.latency_p50 is not None and s.latency_p50 < 0.01
    assert s.latency_p99 is not None and 0.02 <= s.latency_p99 < 0.03


def test_stats_are_thread_safe() -> None:
    """8 threads x 2,000 calls: every call is counted once."""

    @aiguard.guard("thr")
    def f() -> int:
        return 1

    def work() -> None:
        for _ in range(2000):
            f()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = aiguard.stats("thr")
    assert s.calls == 16_000 and s.by_reason == {"served": 16_000}


@given(st.lists(st.floats(1e-6, 100), min_size=1, max_size=200))
def test_latency_percentiles_are_within_the_bucket_error(latencies: list[float]) -> None:
    """The histogram's p50/p95/p99 lie within 12.5 % above the true nearest-rank value."""
    import math

    from aiguard._runtime.stats import FeatureStats
    from aiguard.stats import _snapshot

    fs = FeatureStats("h")
    for x in latencies:
        fs.record(Source.MODEL, Reason.SERVED, x, None, 0)
    snap = _snapshot(fs, "USD")
    ordered = sorted(latencies)
    for q, got in ((0.5, snap.latency_p50), (0.95, snap.latency_p95), (0.99, snap.latency_p99)):
        true = ordered[max(1, math.ceil(q * len(ordered))) - 1]
        assert got is not None and true <= got * (1 + 1e-9) and got <= true * 1.125 + 1e-12


def test_snapshot_prefix_needs_a_date(mode: Mode, caplog: pytest.LogCaptureFixture) -> None:
    """A dated snapshot finds its base model price; another model sharing a prefix does not."""
    aiguard.configure(prices={"models": {"gpt-4o": {"input": "2.5", "output": "10"}}})

    @mode.guard("snap")
    def f(model: str) -> dict[str, Any]:
        return {"model": model, "input_tokens": 1_000_000, "output_tokens": 0}

    assert mode.outcome(f, "gpt-4o-2024-08-06").cost == Decimal("2.5")
    assert mode.outcome(f, "gpt-4o-mini-2024-07-18").cost is None


def test_per_token_model_without_usage_is_unknown_not_zero(
    mode: Mode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A model priced per token whose result carries no usage costs 'unknown', warned once."""
    aiguard.configure(prices=PRICES)

    @mode.guard("nousage", model="gpt-4.1-mini")
    def f() -> str:
        return "just text"

    with caplog.at_level("WARNING", logger="aiguard"):
        assert [mode.outcome(f).cost, mode.outcome(f).cost] == [None, None]
    assert sum("no token usage was read" in r.getMessage() for r in caplog.records) == 1


def test_a_feature_has_one_budget_shared_by_its_guards(mode: Mode) -> None:
    """Two guards of one feature share its spend; declaring another budget is refused."""
    aiguard.configure(prices={"models": {"m": {"per_call": "0.6"}}})
    budget = aiguard.Budget(limit="1", per="day")
    a = mode.guard("shared-b", model="m", budget=budget, fallback=aiguard.Default("fb"))(
        lambda: "a"
    )
    b = mode.guard("shared-b", model="m", budget=budget, fallback=aiguard.Default("fb"))(
        lambda: "b"
    )
    assert [mode.call(a), mode.call(b), mode.call(a)] == ["a", "b", "fb"]
    with pytest.raises(aiguard.ConfigError, match="a feature has one budget"):
        mode.guard("shared-b", budget=aiguard.Budget(limit="2"))(lambda: 1)


def test_too_precise_prices_name_the_model_and_field() -> None:
    """A price finer than the money unit is refused, naming the model and the field."""
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.configure(prices={"models": {"m": {"input": "0.0000001"}}})
    assert "model 'm'" in str(info.value) and "field 'input'" in str(info.value)


def test_fallback_costs_count_even_when_the_model_cost_is_unknown(mode: Mode) -> None:
    """A model with no price still lets its handlers' own cost count against the budget."""

    @mode.guard(
        "unk-b",
        budget=aiguard.Budget(limit="2", per="day"),
        fallback=aiguard.Rules(lambda: "rules", cost="1"),
    )
    def f() -> str:
        raise ConnectionError

    reasons = [mode.outcome(f).reason for _ in range(4)]
    assert reasons == [Reason.ERROR, Reason.ERROR, Reason.OVER_BUDGET, Reason.OVER_BUDGET]


# -- cache writes: 5-minute and 1-hour prices --------------------------------------------------

MESSAGE_1H = {
    **MESSAGE,
    "usage": {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_input_tokens": 300,
        "cache_creation_input_tokens": 50,
        "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 20},
    },
}


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        # 100 input at 3/M + 300 read at 0.30/M + 30 5-minute writes at 3.75/M
        # + 20 1-hour writes at 6/M + 20 output at 15/M = 922.5/M
        ({"cache_write": "3.75", "cache_write_1h": "6"}, Decimal("0.0009225")),
        # 1-hour price left out: twice the input price, 6/M
        ({"cache_write": "3.75"}, Decimal("0.0009225")),
        # both left out: 5-minute writes at input (3/M), 1-hour ones at twice it (6/M):
        # 300 + 90 + 90 + 120 + 300 = 900/M
        ({}, Decimal("0.0009")),
        # a 1-hour price set apart: 20 x 10/M instead of 20 x 6/M
        ({"cache_write": "3.75", "cache_write_1h": "10"}, Decimal("0.0010025")),
    ],
)
def test_a_message_with_both_kinds_of_cache_writes_is_priced_by_hand(
    mode: Mode, price: dict[str, str], expected: Decimal
) -> None:
    """A real Anthropic Message with 5-minute and 1-hour writes: each kind at its own price,
    the cost equal to the hand computation; the same in stats."""
    aiguard.configure(
        prices={"models": {"claude-test-1": {"input": "3", "cached_input": "0.30",
                                             "output": "15", **price}}}
    )  # fmt: skip
    client = anthropic_client(MESSAGE_1H)

    @mode.guard("writes")
    def draft() -> Any:
        return client.messages.create(model="claude-test-1", max_tokens=5, messages=[])

    outcome = mode.outcome(draft)
    assert outcome.usage is not None and outcome.usage.cache_write_1h_tokens == 20
    assert outcome.cost == expected
    assert aiguard.stats("writes").cost == expected


def test_default_1_hour_price_never_prices_writes_at_zero() -> None:
    """Left out, the 1-hour price is twice input, but never under the 5-minute price in force;
    0 only when given as 0."""
    from aiguard.pricing import ModelPrice

    assert ModelPrice(input="3").pico_rates().cache_write_1h == 6 * 10**6
    assert ModelPrice(input="3", cache_write="7").pico_rates().cache_write_1h == 7 * 10**6
    assert ModelPrice(input="0", cache_write="3.75").pico_rates().cache_write_1h == 3_750_000
    assert ModelPrice(input="3", cache_write_1h="0").pico_rates().cache_write_1h == 0
    one_hour = Usage(input_tokens=10**6, cache_write_tokens=10**6, cache_write_1h_tokens=10**6)
    assert ModelPrice(cache_write="3.75").cost(one_hour) == Decimal("3.75")


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_price_files_take_the_1_hour_price(tmp_path: Path, suffix: str) -> None:
    """TOML and JSON price files accept cache_write_1h; a bad one names the model, the field
    and the value."""
    path = tmp_path / f"prices{suffix}"
    good = {"models": {"c": {"input": "3", "cache_write": "3.75", "cache_write_1h": "6"}}}
    if suffix == ".json":
        import json

        path.write_text(json.dumps(good))
    else:
        path.write_text('[models.c]\ninput = "3"\ncache_write = "3.75"\ncache_write_1h = "6"\n')
    table = aiguard.PriceTable.load(path)
    assert table.models["c"].cache_write_1h == Decimal("6")
    usage = Usage(100, cache_write_tokens=50, cache_write_1h_tokens=20)
    assert table.cost("c", usage) == Decimal("0.0003825")  # 50x3 + 30x3.75 + 20x6, per M
    if suffix == ".json":
        path.write_text('{"models": {"c": {"cache_write_1h": "-6"}}}')
    else:
        path.write_text('[models.c]\ncache_write_1h = "-6"\n')
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.PriceTable.load(path)
    message = str(info.value)
    assert "model 'c'" in message and "field 'cache_write_1h'" in message and "'-6'" in message
    with pytest.raises(aiguard.ConfigError, match="cache_write_1h"):
        aiguard.ModelPrice(cache_write_1h="0.0000001")


write_usage_st = st.builds(
    lambda read, w5, w1, uncached, out: Usage(
        input_tokens=read + w5 + w1 + uncached,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=w5 + w1,
        cache_write_1h_tokens=w1,
    ),
    *[st.integers(0, 10**7)] * 5,
)


@given(
    st.lists(write_usage_st, min_size=1, max_size=20), st.lists(price_st, min_size=6, max_size=6)
)
def test_costs_with_cache_writes_are_exact(usages: list[Usage], prices: list[Decimal]) -> None:
    """Every kind of token at its own price: each cost is exactly the decimal computation,
    and the costs add up with no drift."""
    pin, pcached, pwrite, pwrite_1h, pout, pcall = prices
    table = aiguard.PriceTable(
        models={"m": {"input": pin, "cached_input": pcached, "cache_write": pwrite,
                      "cache_write_1h": pwrite_1h, "output": pout, "per_call": pcall}}
    )  # fmt: skip

    def exact(u: Usage) -> Decimal:
        return (
            Decimal(u.input_tokens - u.cache_read_tokens - u.cache_write_tokens) * pin
            + Decimal(u.cache_read_tokens) * pcached
            + Decimal(u.cache_write_tokens - u.cache_write_1h_tokens) * pwrite
            + Decimal(u.cache_write_1h_tokens) * pwrite_1h
            + Decimal(u.output_tokens) * pout
        ) / Decimal(10**6) + pcall

    costs = [table.cost("m", u) for u in usages]
    assert costs == [exact(u) for u in usages]
    assert sum(costs, Decimal(0)) == sum((exact(u) for u in usages), Decimal(0))  # type: ignore[arg-type]


def test_stats_count_cache_writes(mode: Mode) -> None:
    """aiguard.stats() adds up cache writes and their 1-hour part, as it does cache reads."""
    client = anthropic_client(MESSAGE_1H)

    @mode.guard("stats-writes")
    def draft() -> Any:
        return client.messages.create(model="claude-test-1", max_tokens=5, messages=[])

    for _ in range(3):
        mode.call(draft)
    s = aiguard.stats("stats-writes")
    assert (s.input_tokens, s.cache_read_tokens) == (3 * 450, 3 * 300)
    assert (s.cache_write_tokens, s.cache_write_1h_tokens) == (3 * 50, 3 * 20)
