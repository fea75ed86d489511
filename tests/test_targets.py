"""Targets: units checked against the figure when a target is read (in code, in a config file,
in the CLI), targets given as a list or a mapping."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiguard
from aiguard.cli import main
from aiguard.targets import KINDS, METRICS, parse_targets

RATES = sorted(m for m, kind in KINDS.items() if kind == "fraction")
NON_NEGATIVE = sorted(m for m, kind in KINDS.items() if kind != "score")


def test_every_figure_has_a_kind() -> None:
    """Each figure a target can name has the kind its units are checked against."""
    assert set(KINDS) == set(METRICS)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("acceptance_rate >= 85", "85"),  # a percentage without %
        ("acceptance_rate >= 1.5", "1.5"),
        ("acceptance_rate >= 150 %", "150 %"),
        ("error_rate <= -2 %", "-2 %"),
        ("p95_latency <= -1s", "-1 s"),
        ("p99_latency <= -0.5 ms", "-0.5 ms"),
        ("cost_per_call <= -0.01 USD", "-0.01 USD"),
        ("cost_per_accepted <= -1", "-1"),
        ("calls >= -1", "-1"),
        ("confidence_psi <= -0.1", "-0.1"),
        ("ece <= 5", "5"),
        ("p95_latency <= 1e999 s", "1e999 s"),
    ],
)
def test_impossible_targets_are_config_errors_naming_target_and_value(
    text: str, value: str
) -> None:
    """A value its figure can never take is refused, naming the target and the value."""
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.Target.parse(text)
    message = str(info.value)
    assert repr(text) in message and value in message


def test_a_percentage_without_percent_sign_says_how_to_write_it() -> None:
    """'acceptance_rate >= 85' suggests '85 %' and 0.85."""
    with pytest.raises(aiguard.ConfigError, match=r"'85 %'.*0\.85"):
        aiguard.Target.parse("acceptance_rate >= 85")


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [
        ("acceptance_rate >= 85%", 0.85, "%"),
        ("acceptance_rate >= 85 %", 0.85, "%"),
        ("acceptance_rate >= 0.85", 0.85, None),
        ("acceptance_rate >= 1", 1.0, None),
        ("error_rate <= 0 %", 0.0, "%"),
        ("p95_latency <= 500ms", 0.5, "ms"),
        ("p95_latency <= 0.5 s", 0.5, "s"),
        ("p95_latency <= 0.5", 0.5, None),
        ("p50_latency <= 250 us", 0.00025, "us"),
        ("p50_latency <= 250 µs", 0.00025, "µs"),
        ("cost_per_call <= 0.002 EUR", 0.002, "EUR"),
        ("cost_per_call<=1EUR", 1.0, "EUR"),
        ("mean_score >= -1", -1.0, None),
        ("ece <= 5 %", 0.05, "%"),
        ("label_psi <= 0.25", 0.25, None),
        ("calls >= 100", 100.0, None),
    ],
)
def test_targets_that_fit_their_figure(text: str, value: float, unit: str | None) -> None:
    """Rates take % or a fraction, latencies s/ms/us, costs a currency code; values convert."""
    t = aiguard.Target.parse(text)
    assert t.value == pytest.approx(value) and t.unit == unit and str(t) == text.strip()


@pytest.mark.parametrize(
    "text", ["acceptance_rate >= 40 s", "p95_latency <= 2 min", "calls >= 5 %", "ece <= 1 USD"]
)
def test_a_unit_of_another_kind_is_refused(text: str) -> None:
    """A unit that does not fit the figure is an error naming the figure's units."""
    with pytest.raises(aiguard.ConfigError, match="does not fit"):
        aiguard.Target.parse(text)


@given(st.sampled_from(RATES), st.floats(0, 1))
def test_any_fraction_is_a_rate(metric: str, value: float) -> None:
    """Every fraction from 0 to 1 is a valid rate target, read back exactly."""
    t = aiguard.Target.parse(f"{metric} >= {value!r}")
    assert t.value == value and t.check(value) is True


@given(st.sampled_from(RATES), st.integers(0, 100))
def test_any_percentage_is_a_rate(metric: str, percent: int) -> None:
    """'N %' is N / 100 exactly: a figure of N / 100 meets '>= N %'."""
    t = aiguard.Target.parse(f"{metric} >= {percent} %")
    assert t.value == percent / 100 and t.check(percent / 100) is True


@given(
    st.sampled_from(RATES),
    st.floats(min_value=1, exclude_min=True, allow_nan=False, allow_infinity=False),
)
def test_a_rate_above_one_without_percent_is_refused(metric: str, value: float) -> None:
    """No rate can exceed 1: such a target could never be met (or always is)."""
    with pytest.raises(aiguard.ConfigError, match=metric):
        aiguard.Target.parse(f"{metric} <= {value!r}")


@given(
    st.sampled_from(NON_NEGATIVE),
    st.floats(max_value=0, exclude_max=True, allow_nan=False, allow_infinity=False),
)
def test_negative_values_are_refused_except_for_scores(metric: str, value: float) -> None:
    """Rates, latencies, costs, counts and indices are never negative."""
    unit = {"duration": " ms", "money": " USD", "fraction": " %"}.get(KINDS[metric], "")
    with pytest.raises(aiguard.ConfigError, match="negative"):
        aiguard.Target.parse(f"{metric} >= {value!r}{unit}")


@given(st.text(max_size=40))
def test_hostile_text_is_a_config_error_or_a_valid_target(text: str) -> None:
    """Any text either parses into a checked target or raises ConfigError, nothing else."""
    try:
        t = aiguard.Target.parse(text)
    except aiguard.ConfigError:
        return
    assert t.metric in METRICS and math.isfinite(t.value)


def test_a_target_built_directly_is_checked_too() -> None:
    """Target(...) holds the same rules as Target.parse."""
    with pytest.raises(aiguard.ConfigError, match="85"):
        aiguard.Target("acceptance_rate", ">=", 85)
    with pytest.raises(aiguard.ConfigError, match="unknown figure"):
        aiguard.Target("acceptance", ">=", 0.5)
    with pytest.raises(aiguard.ConfigError, match="comparison"):
        aiguard.Target("calls", "==", 5)
    assert aiguard.Target("acceptance_rate", ">=", 0.85, "%").check(0.9) is True


def test_targets_as_a_list_or_a_mapping() -> None:
    """parse_targets reads a list of texts, one text, or a figure -> condition mapping."""
    as_list = parse_targets(["acceptance_rate >= 85 %", "p95_latency <= 500 ms"])
    as_mapping = parse_targets({"acceptance_rate": ">= 85 %", "p95_latency": "<= 500 ms"})
    assert [(t.metric, t.op, t.value) for t in as_list] == [
        (t.metric, t.op, t.value) for t in as_mapping
    ]
    assert [t.value for t in parse_targets("calls >= 3")] == [3.0]
    with pytest.raises(aiguard.ConfigError, match=r"'>= 85'.*acceptance_rate|acceptance_rate"):
        parse_targets({"acceptance_rate": ">= 85"})
    with pytest.raises(aiguard.ConfigError, match="condition"):
        parse_targets({"acceptance_rate": "85 %"})
    with pytest.raises(aiguard.ConfigError, match="targets=5"):
        parse_targets(5)


def test_configure_checks_targets_in_either_form() -> None:
    """configure(features=...) takes targets as a list or a mapping, checked at once."""
    aiguard.configure(
        store=":memory:", features={"reply": {"targets": {"acceptance_rate": ">= 85%"}}}
    )
    from aiguard._runtime.state import runtime

    assert runtime.features["reply"].targets == ("acceptance_rate >= 85%",)
    with pytest.raises(aiguard.ConfigError, match=r"reply.*acceptance_rate >= 85'.*85"):
        aiguard.configure(features={"reply": {"targets": ["acceptance_rate >= 85"]}})
    with pytest.raises(aiguard.ConfigError, match="p95_latency <= -1s"):
        aiguard.configure(features={"reply": {"targets": {"p95_latency": "<= -1s"}}})


def _seed(tmp_path: Path) -> Path:
    path = tmp_path / "t.db"
    aiguard.configure(store=path)

    @aiguard.guard("reply")
    def reply(text: str) -> str:
        return text

    @aiguard.guard("triage")
    def triage(text: str) -> str:
        return text

    for i in range(4):
        reply.outcome(f"q{i}").accept()
        triage.outcome(f"q{i}").reject()
    return path


def test_report_takes_targets_as_a_list_for_every_feature(tmp_path: Path) -> None:
    """report(targets=[...]) checks the list against every feature (it used to crash)."""
    _seed(tmp_path)
    result = aiguard.report(targets=["acceptance_rate >= 50 %", "calls >= 4"])
    verdicts = {name: [(str(t), ok) for t, _, ok in rows] for name, rows in result.targets.items()}
    assert verdicts == {
        "reply": [("acceptance_rate >= 50 %", True), ("calls >= 4", True)],
        "triage": [("acceptance_rate >= 50 %", False), ("calls >= 4", True)],
    }
    by_condition = aiguard.report(targets={"acceptance_rate": ">= 50 %"})
    assert [ok for _, _, ok in by_condition.targets["triage"]] == [False]
    by_feature = aiguard.report(targets={"reply": {"calls": ">= 5"}})
    assert [ok for _, _, ok in by_feature.targets["reply"]] == [False]
    assert by_feature.targets["triage"] == []  # no targets configured for it


def test_report_checks_targets_before_reading(tmp_path: Path) -> None:
    """A target that does not fit its figure is refused by report(), naming it."""
    _seed(tmp_path)
    with pytest.raises(aiguard.ConfigError, match=r"acceptance_rate >= 85'"):
        aiguard.report(targets=["acceptance_rate >= 85"])
    with pytest.raises(aiguard.ConfigError, match=r"for 'reply'.*p95_latency <= -1 s"):
        aiguard.report(targets={"reply": ["p95_latency <= -1 s"]})


def test_a_cost_target_in_another_currency_is_refused(tmp_path: Path) -> None:
    """Costs are in the price table's currency; a EUR target against USD costs is an error."""
    _seed(tmp_path)
    aiguard.configure(prices={"currency": "USD", "models": {}})
    with pytest.raises(aiguard.ConfigError, match=r"EUR.*USD"):
        aiguard.report(targets=["cost_per_call <= 0.01 EUR"])
    assert aiguard.report(targets=["cost_per_call <= 0.01 USD"]).currency == "USD"


@pytest.mark.parametrize(
    ("target", "value"),
    [("acceptance_rate >= 85", "85"), ("p95_latency <= -1s", "-1 s"), ("calls >= -3", "-3")],
)
def test_config_file_and_cli_check_targets_the_same_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, value: str
) -> None:
    """A config file with an impossible target fails to load, naming the target and value;
    `aiguard report --config` exits 2 with that message."""
    path = _seed(tmp_path)
    config = tmp_path / "aiguard.toml"
    config.write_text(f'[features.reply]\ntargets = ["{target}"]\n')
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.load_config(config)
    assert target in str(info.value) and value in str(info.value)
    code = main(["--store", str(path), "report", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and target in err and value in err


def test_a_config_file_takes_targets_as_a_table(tmp_path: Path) -> None:
    """[features.NAME.targets] as a TOML table of figure = condition, checked the same way."""
    config = tmp_path / "aiguard.toml"
    config.write_text(
        '[features.triage.targets]\nacceptance_rate = ">= 85 %"\np95_latency = "<= 500 ms"\n'
    )
    loaded = aiguard.load_config(config)
    assert loaded.features["triage"].targets == (
        "acceptance_rate >= 85 %",
        "p95_latency <= 500 ms",
    )
    config.write_text('[features.triage.targets]\nacceptance_rate = ">= 85"\n')
    with pytest.raises(aiguard.ConfigError, match=r"acceptance_rate >= 85'.*value 85"):
        aiguard.load_config(config)


def test_check_reads_targets_in_either_form(tmp_path: Path) -> None:
    """aiguard.check(features=...) takes a feature's targets as a mapping too, checked."""
    _seed(tmp_path)
    result = aiguard.check(features={"reply": {"targets": {"calls": ">= 4"}}})
    assert [(str(r.target), r.ok) for r in result.results] == [("calls >= 4", True)]
    with pytest.raises(aiguard.ConfigError, match=r"feature 'reply'.*calls >= -1"):
        aiguard.check(features={"reply": {"targets": ["calls >= -1"]}})
