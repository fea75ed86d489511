"""The report: figures, intervals, targets, the terminal table, HTML in a browser, export."""

from __future__ import annotations

import json
from dataclasses import fields as dataclasses_fields
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import _browser
import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiguard
from aiguard.cli import main
from aiguard.report import newcombe


def test_wilson_matches_reference_values() -> None:
    """The Wilson interval equals published values (e.g. 40/100: 0.3094-0.4980)."""
    low, high = aiguard.wilson(40, 100)  # type: ignore[misc]
    assert (round(low, 4), round(high, 4)) == (0.3094, 0.498)
    assert aiguard.wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert aiguard.wilson(0, 0) is None


def test_newcombe_matches_the_paper() -> None:
    """Newcombe (1998), example (56/70 vs 48/80): difference 0.2, CI 0.0524 to 0.3339."""
    d, low, high = newcombe(56, 70, 48, 80)  # type: ignore[misc]
    assert (round(d, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)


@given(st.integers(0, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_is_sane(kn: tuple[int, int]) -> None:
    """Within [0, 1] and containing the observed proportion."""
    k, n = kn
    interval = aiguard.wilson(k, n)
    if n == 0:
        assert interval is None
        return
    assert interval is not None
    low, high = interval
    assert 0.0 <= low <= k / n <= high <= 1.0


@pytest.mark.parametrize(
    ("text", "metric", "op", "value"),
    [
        ("acceptance_rate >= 0.40", "acceptance_rate", ">=", 0.40),
        ("p95_latency <= 0.5 s", "p95_latency", "<=", 0.5),
        ("p95_latency <= 500 ms", "p95_latency", "<=", 0.5),
        ("cost_per_call <= 0.002 USD", "cost_per_call", "<=", 0.002),
        ("error_rate <= 2 %", "error_rate", "<=", 0.02),
    ],
)
def test_targets_parse(text: str, metric: str, op: str, value: float) -> None:
    """Targets read as the issue writes them, with units."""
    t = aiguard.Target.parse(text)
    assert (t.metric, t.op) == (metric, op) and t.value == pytest.approx(value)


@pytest.mark.parametrize("text", ["acceptance >= 1", "p95_latency << 1", "cost_per_call <= x"])
def test_bad_targets_are_config_errors(text: str) -> None:
    """An unknown figure or a malformed target names what is wrong."""
    with pytest.raises(aiguard.ConfigError, match="target"):
        aiguard.Target.parse(text)


def seed(tmp_path: Path) -> Path:
    """200 calls: a 50 % rollout, feedback with a known pattern."""
    path = tmp_path / "r.db"
    aiguard.configure(
        store=path,
        capture=True,
        prices={"models": {"m": {"per_call": "0.001"}}},
        features={
            "reply": {
                "targets": [
                    "acceptance_rate >= 0.40",
                    "p95_latency <= 0.5 s",
                    "cost_per_call <= 0.0004 USD",
                    "error_rate <= 0.02",
                ]
            }
        },
    )

    @aiguard.guard(
        "reply", model="m", rollout=aiguard.Rollout(percent=50, key="user"),
        fallback=aiguard.Default("template"),
    )  # fmt: skip
    def reply(user: str, text: str) -> str:
        return f"AI: {text}"

    for i in range(200):
        o = reply.outcome(f"user-{i}", f"question {i}")
        plan = "pro" if i % 2 else "free"
        if o.arm == "ai":
            (o.accept if i % 4 else o.reject)(attributes={"plan": plan})
        elif i % 5 == 0:
            o.accept(attributes={"plan": plan})
        else:
            o.correct("other", attributes={"plan": plan})
    return path


def test_report_figures_groups_and_targets(tmp_path: Path) -> None:
    """Acceptance per arm, the AI-vs-baseline difference, cost per accepted, targets."""
    seed(tmp_path)
    result = aiguard.report("reply", by=["arm", "plan"])
    [f] = result.features
    groups = {g.group: g for g in result.groups["reply"]}
    ai, base = groups["arm=ai"], groups["arm=baseline"]
    assert f.calls == 200 and ai.calls + base.calls == 200
    assert ai.acceptance_rate == pytest.approx(ai.accepted / ai.decided)
    assert base.correction_rate == pytest.approx(base.corrected / base.decided)
    assert {"plan=pro", "plan=free"} <= set(groups)
    d, low, high = result.ai_vs_baseline["reply"]  # type: ignore[misc]
    assert d == pytest.approx(ai.acceptance_rate - base.acceptance_rate)  # type: ignore[operator]
    assert low < d < high
    exact = f.cost / (f.accepted + f.edited)  # kept to 10^-12, rounded down
    assert f.cost_per_accepted == exact.quantize(Decimal("1e-12"), rounding=ROUND_DOWN).normalize()
    verdicts = {str(t): ok for t, _, ok in result.targets["reply"]}
    assert verdicts["acceptance_rate >= 0.40"] is True
    assert verdicts["cost_per_call <= 0.0004 USD"] is False  # 0.001 x the share of AI calls
    text = result.to_text()
    assert "AI vs baseline acceptance" in text and "FAIL" in text and "PASS" in text


def test_cli_report_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """aiguard report prints the table and writes HTML; aiguard export writes JSON lines."""
    path = seed(tmp_path)
    config = tmp_path / "aiguard.toml"
    config.write_text('[features.reply]\ntargets = ["acceptance_rate >= 0.99"]\n')
    html = tmp_path / "report.html"
    code = main(["--store", str(path), "report", "--config", str(config), "--html", str(html)])
    out = capsys.readouterr().out
    assert code == 0 and "reply" in out and "acceptance_rate >= 0.99" in out and "FAIL" in out
    assert html.read_text().startswith("<!doctype html>")
    data = tmp_path / "data.jsonl"
    assert main(["--store", str(path), "export", "--feature", "reply", "--output", str(data)]) == 0
    lines = [json.loads(x) for x in data.read_text().splitlines()]
    assert len(lines) == 200
    corrected = [x for x in lines if x["feedback"] == "corrected"]
    assert corrected and all(x["label"] == "other" for x in corrected)
    accepted = next(x for x in lines if x["feedback"] == "accepted")
    assert accepted["label"] == accepted["output"] and accepted["input"]["text"].startswith("q")


def test_html_report_plots_render_in_a_browser(tmp_path: Path) -> None:
    """Opened in headless Chromium, every plot lays out with a real size and its marks."""
    seed(tmp_path)
    page = aiguard.report("reply").to_html()
    assert "<script" not in page and "http" not in page.split("<body>", 1)[1]  # self-contained
    plots = _browser.plots(page, tmp_path)
    assert len(plots) == 5
    assert all(p["box"][2] - p["box"][0] > 100 and p["box"][3] - p["box"][1] > 100 for p in plots)
    assert all(p["marks"] > 0 for p in plots)
    assert sum(p["targets"] for p in plots) >= 3  # acceptance, p95 latency, cost per call


def test_percent_targets_are_exact() -> None:
    """35 % is exactly 0.35: a figure of 0.35 passes '>= 35 %'."""
    assert aiguard.Target.parse("acceptance_rate >= 35 %").check(0.35) is True


@pytest.mark.parametrize("text", ["p95_latency <= 2 min", "acceptance_rate >= 40 s"])
def test_units_must_fit_the_figure(text: str) -> None:
    """A unit that does not fit the figure is refused rather than ignored."""
    with pytest.raises(aiguard.ConfigError, match="does not fit"):
        aiguard.Target.parse(text)


def seed_writes(tmp_path: Path) -> Path:
    """Three calls of a model with cache reads and 5-minute and 1-hour writes, one without."""
    path = tmp_path / "w.db"
    aiguard.configure(store=path, capture=True)
    usage = {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 300,
             "cache_creation_input_tokens": 50,
             "cache_creation": {"ephemeral_5m_input_tokens": 30,
                                "ephemeral_1h_input_tokens": 20}}  # fmt: skip

    @aiguard.guard("cached")
    def cached(text: str) -> Any:
        if text == "none":
            return "no usage"
        return {"type": "message", "role": "assistant", "model": "claude-x", "usage": usage}

    for text in ("a", "b", "c", "none"):
        cached(text)
    aiguard.flush()
    return path


def test_report_adds_up_cache_writes_in_text_html_and_json(tmp_path: Path) -> None:
    """The report's figures, its terminal table, its HTML page and its JSON carry the cache
    reads and writes (and the 1-hour part) next to the input and output tokens."""
    seed_writes(tmp_path)
    result = aiguard.report("cached", by="model")
    [f] = result.features
    assert (f.input_tokens, f.output_tokens) == (1350, 60)
    assert (f.cache_read_tokens, f.cache_write_tokens, f.cache_write_1h_tokens) == (900, 150, 60)
    [group] = [g for g in result.groups["cached"] if g.group == "model=claude-x"]
    assert group.cache_write_tokens == 150
    line = "tokens: input 1,350 (cache read 900, cache write 150 of which 1 h 60), output 60"
    assert f"cached: {line}" in result.to_text()
    assert "cache write 150 of which 1 h 60" in result.to_html()
    data = json.loads(result.to_json())
    [jf] = data["features"]
    assert (jf["cache_write_tokens"], jf["cache_write_1h_tokens"]) == (150, 60)
    assert (jf["cache_read_tokens"], jf["input_tokens"]) == (900, 1350)
    # no price table: the cost is unknown (null), not 0; what is known is an exact decimal
    assert (jf["cost"], jf["cost_per_call"], jf["priced"], jf["known_cost"]) == (None, None, 0, "0")
    assert any(g["cache_write_tokens"] == 150 for g in data["groups"]["cached"])


def test_report_json_is_complete_and_strict(tmp_path: Path) -> None:
    """The JSON form has every feature figure, the targets with their verdicts and the
    series, and is strict JSON (no NaN)."""
    seed(tmp_path)
    result = aiguard.report("reply", by=["arm"])
    text = result.to_json()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    [f] = data["features"]
    assert set(f) == {field.name for field in dataclasses_fields(aiguard.FeatureFigures)}
    assert f["calls"] == 200 and Decimal(f["cost"]) == result.features[0].cost
    verdicts = {t["target"]: t["met"] for t in data["targets"]["reply"]}
    assert verdicts["acceptance_rate >= 0.40"] is True
    assert data["ai_vs_baseline"]["reply"]["low"] < data["ai_vs_baseline"]["reply"]["high"]
    assert len(data["series"]["reply"]["calls"]) == len(data["series"]["reply"]["days"])


def test_cli_report_json_and_export_keep_cache_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """From the store: `aiguard report --json` writes the cache writes, `aiguard export`
    writes each call's usage with them (null for a call without usage)."""
    path = seed_writes(tmp_path)
    out = tmp_path / "report.json"
    assert main(["--store", str(path), "report", "--json", str(out)]) == 0
    assert "cache write 150 of which 1 h 60" in capsys.readouterr().out
    [f] = json.loads(out.read_text())["features"]
    assert (f["cache_write_tokens"], f["cache_write_1h_tokens"]) == (150, 60)
    data = tmp_path / "data.jsonl"
    assert main(["--store", str(path), "export", "--feature", "cached", "--output", str(data)]) == 0
    lines = [json.loads(x) for x in data.read_text().splitlines()]
    usages = [line["usage"] for line in lines]
    assert usages.count(None) == 1
    assert [u["cache_write_tokens"] for u in usages if u] == [50, 50, 50]
    assert [u["cache_write_1h_tokens"] for u in usages if u] == [20, 20, 20]
