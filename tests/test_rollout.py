"""Staged rollouts through the guard: arms, reasons, segments, stages, gates."""

from __future__ import annotations

from typing import Any

import pytest
from _modes import Mode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiguard
from aiguard import Reason, Source
from aiguard._bucketing import positioner


def make(rollout: aiguard.Rollout, feature: str = "draft", mode: Mode | None = None) -> Any:
    guard = aiguard.guard if mode is None else mode.guard

    @guard(feature, rollout=rollout, fallback=aiguard.Default("template"))
    def draft(user_id: Any, text: str = "") -> str:
        return "ai"

    return draft


def inside(feature: str, key: str, percent: float) -> bool:
    return positioner(aiguard.Bucketing.LAUNCHDARKLY, feature, feature)(key) < percent / 100


def test_units_inside_get_the_model_outside_the_baseline(mode: Mode) -> None:
    """In: served by the model, arm 'ai'. Out: fallback, reason not_in_rollout, source baseline."""
    draft = make(aiguard.Rollout(percent=30, key="user_id"), mode=mode)
    seen = {True: 0, False: 0}
    for i in range(300):
        key = f"user-{i}"
        outcome = mode.outcome(draft, key, "hi")
        expected = inside("draft", key, 30)
        seen[expected] += 1
        assert (mode.call(draft, key, "hi") == "ai") == expected
        if expected:
            assert (outcome.value, outcome.arm, outcome.source) == ("ai", "ai", Source.MODEL)
            assert outcome.reason is Reason.SERVED
        else:
            assert (outcome.value, outcome.arm) == ("template", "baseline")
            assert outcome.reason is Reason.NOT_IN_ROLLOUT and outcome.source is Source.BASELINE
        assert outcome.rollout_percent == 30
    assert seen[True] > 50 and seen[False] > 150


def test_key_by_keyword_by_callable_and_by_attribute_path(mode: Mode) -> None:
    """key= may name a parameter (passed either way), be a callable, or an 'arg.attr' path."""

    class User:
        def __init__(self, uid: str) -> None:
            self.id = uid

    by_name = make(aiguard.Rollout(percent=50, key="user_id"), "k1", mode)
    by_call = make(aiguard.Rollout(percent=50, key=lambda user_id, text="": user_id), "k1", mode)
    by_path = make(aiguard.Rollout(percent=50, key="user_id.id"), "k1", mode)
    for i in range(100):
        key = f"u{i}"
        expected = "ai" if inside("k1", key, 50) else "baseline"
        assert mode.outcome(by_name, user_id=key).arm == expected
        assert mode.outcome(by_name, key).arm == expected
        assert mode.outcome(by_call, key).arm == expected
        assert mode.outcome(by_path, User(key)).arm == expected


@pytest.mark.parametrize("key", [None, ""])
def test_missing_key_is_outside_unless_at_100(mode: Mode, key: Any) -> None:
    """A missing or empty key is outside (missing_rollout_key) unless the rollout is 100%."""
    partial = make(aiguard.Rollout(percent=99.99, key="user_id"), "m1", mode)
    outcome = mode.outcome(partial, key)
    assert outcome.reason is Reason.MISSING_ROLLOUT_KEY and outcome.value == "template"
    assert outcome.source is Source.BASELINE and outcome.arm == "baseline"
    full = make(aiguard.Rollout(percent=100, key="user_id"), "m2", mode)
    assert mode.outcome(full, key).reason is Reason.SERVED


def test_zero_percent_serves_nobody(mode: Mode) -> None:
    """At 0% every unit is outside."""
    draft = make(aiguard.Rollout(percent=0, key="user_id"), "zero", mode)
    assert {mode.outcome(draft, f"u{i}").reason for i in range(200)} == {Reason.NOT_IN_ROLLOUT}


def test_segments_are_evaluated_before_the_percentage(mode: Mode) -> None:
    """An internal allowlist is in at 0%; an excluded segment is out even at 100%."""
    allow = make(
        aiguard.Rollout(percent=0, key="user_id", include={"user_id": {"alice", "bob"}}),
        "s1",
        mode,
    )
    assert mode.call(allow, "alice") == "ai" and mode.call(allow, "bob") == "ai"
    assert mode.call(allow, "carol") == "template"
    block = make(
        aiguard.Rollout(
            percent=100, key="user_id", exclude=lambda user_id, text="": user_id == "x"
        ),
        "s2",
        mode,
    )
    assert mode.call(block, "y") == "ai"
    excluded = mode.outcome(block, "x")
    assert excluded.reason is Reason.NOT_IN_ROLLOUT and excluded.detail == "excluded by segment"


def test_stages_use_the_current_stage(mode: Mode) -> None:
    """stages= with stage= rolls out to that stage's percentage."""
    draft = make(aiguard.Rollout(stages=[5, 25, 50, 100], stage=1, key="user_id"), "st", mode)
    assert mode.outcome(draft, "u1").rollout_percent == 25
    arms = {mode.outcome(draft, f"u{i}").arm for i in range(400)}
    assert arms == {"ai", "baseline"}


@pytest.mark.parametrize(
    "kwargs",
    [{"stage": 2}, {"stage": 50}, {"percent": 50}],
)
def test_current_stage_by_index_or_percentage(kwargs: dict[str, Any]) -> None:
    """The current stage may be given as its index or as its percentage."""
    rollout = aiguard.Rollout(stages=[5, 25, 50, 100], key="user_id", **kwargs)
    assert rollout.stage == 2 and rollout.initial_percent == 50


def test_set_rollout_raises_percentage_without_moving_anyone_out(mode: Mode) -> None:
    """Raising the percentage at run time keeps every unit that was in."""
    draft = make(aiguard.Rollout(percent=5, key="user_id"), "raise", mode)
    keys = [f"user-{i}" for i in range(500)]
    before = {k for k in keys if mode.outcome(draft, k).arm == "ai"}
    aiguard.set_rollout("raise", 25)
    after = {k for k in keys if mode.outcome(draft, k).arm == "ai"}
    assert before < after
    aiguard.set_rollout("raise", None)
    assert {k for k in keys if mode.outcome(draft, k).arm == "ai"} == before


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 100), min_size=2, max_size=6))
def test_guard_membership_is_sticky_under_percentage_changes(
    mode: Mode, percents: list[int]
) -> None:
    """Through the guard, a unit in at p is in at every q >= p, whatever the order of changes."""
    keys = [f"k{i}" for i in range(60)]
    draft = make(aiguard.Rollout(percent=50, key="user_id"), "sticky", mode)
    members: dict[int, set[str]] = {}
    for p in percents:
        aiguard.set_rollout("sticky", p)
        members[p] = {k for k in keys if mode.outcome(draft, k).arm == "ai"}
    for p, in_p in members.items():
        for q, in_q in members.items():
            if q >= p:
                assert in_p <= in_q


def test_outside_with_no_fallback_raises_not_served(mode: Mode) -> None:
    """A unit outside the rollout with no fallback left is NotServed (reason not_in_rollout)."""

    @mode.guard("nofb", rollout=aiguard.Rollout(percent=0, key="user_id"))
    def draft(user_id: str) -> str:
        return "ai"

    with pytest.raises(aiguard.NotServed) as info:
        mode.call(draft, "u")
    assert info.value.outcome.reason is Reason.NOT_IN_ROLLOUT


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "user_id", "percent": 101}, "percent)=101 is invalid"),
        ({"key": "user_id", "percent": -1}, "percent)=-1 is invalid"),
        ({"key": "user_id", "percent": 12.345}, "granularity is 0.01"),
        ({"key": "user_id"}, "needs percent= or stages="),
        ({"key": "user_id", "percent": 7, "stages": [5, 10]}, "must be one of the stages"),
        ({"key": "user_id", "percent": 5, "stage": 0, "stages": [5, 10]}, "not both"),
        ({"key": "user_id", "stages": [25, 5]}, "must be ascending"),
        ({"key": "user_id", "stages": [5, 25], "stage": 2}, "stage=2 is invalid"),
        ({"key": "", "percent": 5}, "Rollout(key='') is invalid"),
        ({"key": "user_id", "percent": 5, "bucketing": "flipper"}, "bucketing='flipper'"),
        ({"key": "user_id", "percent": 5.5, "bucketing": "unleash"}, "whole percents"),
    ],
)
def test_bad_rollouts_name_the_field_and_value(kwargs: dict[str, Any], message: str) -> None:
    """Rollout() validates at construction, naming the field and the value."""
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.Rollout(**kwargs)
    assert message in str(info.value)


def test_key_naming_no_parameter_fails_at_decoration() -> None:
    """A key that names no parameter of the function is a ConfigError at decoration time."""
    with pytest.raises(aiguard.ConfigError, match="'account' names no parameter"):
        make(aiguard.Rollout(percent=5, key="account"))


def test_gate_breach_rolls_back_to_the_previous_stage(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """A breach while at a stage rolls this process back one stage and records why."""
    failing = {"on": True}

    @mode.guard(
        "gated",
        rollout=aiguard.Rollout(
            stages=[5, 25, 50, 100],
            stage=3,
            key="user_id",
            gates=aiguard.Limits(max_error_rate=0.2, min_calls=10),
        ),
        fallback=aiguard.Default("template"),
    )
    def draft(user_id: str) -> str:
        if failing["on"]:
            raise RuntimeError("bad model")
        return "ai"

    with caplog.at_level("WARNING", logger="aiguard"):
        for i in range(10):
            mode.call(draft, f"u{i}")
    assert mode.outcome(draft, "u-next").rollout_percent == 50
    events = [e for e in aiguard.recent_events("gated") if e.kind is aiguard.EventKind.ROLLBACK]
    assert len(events) == 1
    assert "error rate 1 > 0.2 over 10 calls" in events[0].reason
    assert "rolled back to 50%" in events[0].reason
    assert any("rolled back" in r.getMessage() for r in caplog.records)


def test_gates_per_stage_must_match_stages() -> None:
    """One gate per stage, or a single gate for all."""
    with pytest.raises(aiguard.ConfigError, match="2 entries"):
        aiguard.Rollout(stages=[5, 25, 50], key="u", gates=[aiguard.Limits(), None])


def test_second_breach_rolls_further_down_not_back_up(mode: Mode) -> None:
    """With the percentage from control state, each breach goes one stage lower."""
    aiguard.set_rollout("down", 100)

    @mode.guard(
        "down",
        rollout=aiguard.Rollout(
            stages=[5, 25, 50, 100],
            key="user_id",
            gates=aiguard.Limits(max_error_rate=0.2, min_calls=5),
        ),
        fallback=aiguard.Default("template"),
    )
    def draft(user_id: str) -> str:
        raise RuntimeError("bad model")

    seen = []
    for i in range(3000):
        outcome = mode.outcome(draft, f"u{i}")
        if not seen or seen[-1] != outcome.rollout_percent:
            seen.append(outcome.rollout_percent)
        if outcome.rollout_percent == 0:
            break
    assert seen == [100, 50, 25, 5, 0]


def test_figures_of_a_stage_rolled_back_from_are_kept(mode: Mode) -> None:
    """The counts that caused a rollback stay in this process's figures."""
    from aiguard._runtime.state import runtime

    @mode.guard(
        "kept",
        rollout=aiguard.Rollout(
            stages=[50, 100],
            stage=1,
            key="user_id",
            gates=aiguard.Limits(max_error_rate=0.2, min_calls=5),
        ),
        fallback=aiguard.Default("template"),
    )
    def draft(user_id: str) -> str:
        raise RuntimeError

    for i in range(5):
        mode.call(draft, f"u{i}")
    # this guard's own core: a guard of "kept" from an earlier test may linger in the WeakSet
    core = draft._aiguard_core
    assert core in runtime.cores and core.feature == "kept"
    figures = {f.percent: f.calls for f in core.gate.figures()}
    assert figures == {100: 5}
    for i in range(200):
        mode.call(draft, f"v{i}")
    figures = {f.percent: f for f in core.gate.figures()}
    assert figures[100].calls == 5 and figures[100].errors == 5 and figures[50].calls > 0


def test_failing_key_callable_is_a_missing_key(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """A key callable that raises puts the call outside (missing_rollout_key), logged once."""

    def key(user_id: str) -> str:
        raise KeyError("no user")

    draft = make(aiguard.Rollout(percent=50, key=key), "badkey", mode)
    with caplog.at_level("WARNING", logger="aiguard"):
        assert mode.outcome(draft, "u").reason is Reason.MISSING_ROLLOUT_KEY
        assert mode.outcome(draft, "v").reason is Reason.MISSING_ROLLOUT_KEY
    assert sum("rollout key of 'badkey'" in r.getMessage() for r in caplog.records) == 1


def test_ambiguous_stage_is_refused() -> None:
    """A stage that is both an index and another stage's percentage is an error."""
    with pytest.raises(aiguard.ConfigError, match="ambiguous"):
        aiguard.Rollout(stages=[1, 2, 5, 10], stage=2, key="u")
    assert aiguard.Rollout(stages=[1, 2, 5, 10], percent=2, key="u").stage == 1


def test_breaker_only_sees_the_ai_arm(mode: Mode) -> None:
    """Units outside the rollout stay baseline even while the breaker is open."""

    @mode.guard(
        "armcb",
        rollout=aiguard.Rollout(percent=50, key="user_id"),
        breaker=aiguard.Breaker(max_error_rate=0.5, min_calls=3, window=3, cooldown=60),
        fallback=aiguard.Default("template"),
    )
    def draft(user_id: str) -> str:
        raise RuntimeError

    keys = [f"u{i}" for i in range(100)]
    for k in keys:
        mode.call(draft, k)
    reasons = {k: mode.outcome(draft, k).reason for k in keys}
    for k, reason in reasons.items():
        expected = Reason.AUTO_KILLED if inside("armcb", k, 50) else Reason.NOT_IN_ROLLOUT
        assert reason is expected


def test_arm_is_kept_when_the_exception_propagates(mode: Mode) -> None:
    """A call whose exception is not caught still records its rollout arm."""

    @mode.guard("armexc", catch=ValueError, rollout=aiguard.Rollout(percent=100, key="user_id"))
    def f(user_id: str) -> str:
        raise KeyError("x")

    with pytest.raises(KeyError):
        mode.call(f, "u")
    assert mode.last_outcome().arm == "ai"  # type: ignore[union-attr]
