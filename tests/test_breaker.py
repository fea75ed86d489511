"""The automatic kill: trip on quality, probe after the cool-down, recover or reopen."""

from __future__ import annotations

import time
from typing import Any

import pytest
from _modes import Mode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiguard
from aiguard import EventKind, Reason, events


class Model:
    def __init__(self) -> None:
        self.healthy = False
        self.calls = 0

    def __call__(self, ticket: str) -> dict[str, Any]:
        self.calls += 1
        if not self.healthy:
            raise ConnectionError("model down")
        return {"label": "bug", "score": 0.9}


def kinds(feature: str) -> list[str]:
    return [e.kind.value for e in aiguard.recent_events(feature)]


def test_trips_probes_and_recovers(mode: Mode) -> None:
    """Over the error limit the feature trips; after the cool-down probes close it again."""
    model = Model()
    breaker = aiguard.Breaker(
        max_error_rate=0.5, min_calls=10, window=20, cooldown=0.2, probe_share=0.5, probes=2
    )
    triage = mode.guard("cb", breaker=breaker, fallback=lambda ticket: "rules")(model)
    reasons = [mode.outcome(triage, "t").reason for _ in range(10)]
    assert reasons == [Reason.ERROR] * 10  # the 10th call trips it
    assert kinds("cb") == ["trip"]
    tripped = mode.outcome(triage, "t")
    assert tripped.reason is Reason.AUTO_KILLED and tripped.value == "rules"
    assert "error rate 1 > 0.5 over 10 calls" in (tripped.detail or "")
    assert model.calls == 10  # the model is not called while open

    model.healthy = True
    time.sleep(0.25)
    # half-open: one call in two probes the model; two good probes close the breaker
    results = [mode.outcome(triage, "t").reason for _ in range(4)]
    assert results == [Reason.SERVED, Reason.AUTO_KILLED, Reason.SERVED, Reason.SERVED]
    assert kinds("cb") == ["trip", "probe", "probe", "recover"]
    assert mode.call(triage, "t") == {"label": "bug", "score": 0.9}
    assert all(mode.outcome(triage, "t").reason is Reason.SERVED for _ in range(20))


def test_bad_probe_reopens(mode: Mode) -> None:
    """A probe that fails reopens the breaker for another cool-down."""
    model = Model()
    breaker = aiguard.Breaker(
        max_error_rate=0.5, min_calls=4, window=4, cooldown=0.1, probe_share=1.0, probes=1
    )
    triage = mode.guard("re", breaker=breaker, fallback=lambda ticket: "rules")(model)
    for _ in range(4):
        mode.call(triage, "t")
    time.sleep(0.15)
    assert mode.outcome(triage, "t").reason is Reason.ERROR  # the probe, still failing
    assert kinds("re") == ["trip", "probe", "reopen"]
    assert mode.outcome(triage, "t").reason is Reason.AUTO_KILLED


def test_low_confidence_rate_trips(mode: Mode) -> None:
    """Each rate can trip: here the low-confidence rate."""

    @mode.guard(
        "lc",
        confidence="score",
        threshold=0.8,
        breaker=aiguard.Breaker(max_low_confidence_rate=0.3, min_calls=10),
        fallback=aiguard.Default({"label": "other"}),
    )
    def triage(score: float) -> dict[str, float]:
        return {"score": score}

    for i in range(10):
        mode.call(triage, 0.5 if i % 2 else 0.9)  # 50% low confidence
    outcome = mode.outcome(triage, 0.9)
    assert outcome.reason is Reason.AUTO_KILLED
    assert "low-confidence rate 0.5 > 0.3" in (outcome.detail or "")


def test_no_trip_below_min_calls_or_at_the_limit(mode: Mode) -> None:
    """Fewer than min_calls never trips; a rate equal to its limit is not over it."""
    model = Model()
    breaker = aiguard.Breaker(max_error_rate=0.5, min_calls=10, window=10)
    triage = mode.guard("lim", breaker=breaker, fallback=lambda ticket: "rules")(model)
    for _ in range(9):
        mode.call(triage, "t")
    assert mode.outcome(triage, "t").reason is Reason.ERROR  # 10th call trips only after it runs
    model2 = Model()
    flip = {"n": 0}

    def half(ticket: str) -> dict[str, Any]:
        flip["n"] += 1
        model2.healthy = flip["n"] % 2 == 0
        return model2(ticket)

    triage2 = mode.guard("lim2", breaker=breaker, fallback=lambda ticket: "rules")(half)
    reasons = {mode.outcome(triage2, "t").reason for _ in range(40)}
    assert Reason.AUTO_KILLED not in reasons


def test_time_window_forgets_old_failures(mode: Mode) -> None:
    """Failures older than window_seconds no longer count."""
    model = Model()
    breaker = aiguard.Breaker(max_error_rate=0.5, min_calls=5, window=100, window_seconds=0.1)
    triage = mode.guard("tw", breaker=breaker, fallback=lambda ticket: "rules")(model)
    for _ in range(4):
        mode.call(triage, "t")
    time.sleep(0.15)
    model.healthy = True
    for _ in range(4):
        mode.call(triage, "t")
    model.healthy = False
    assert mode.outcome(triage, "t").reason is Reason.ERROR  # 1 error in 5 recent calls
    assert "trip" not in kinds("tw")


def test_revive_resets_the_breaker(mode: Mode) -> None:
    """aiguard.revive() closes a tripped breaker."""
    model = Model()
    breaker = aiguard.Breaker(max_error_rate=0.5, min_calls=3, window=3, cooldown=60)
    triage = mode.guard("rv", breaker=breaker, fallback=lambda ticket: "rules")(model)
    for _ in range(3):
        mode.call(triage, "t")
    assert mode.outcome(triage, "t").reason is Reason.AUTO_KILLED
    model.healthy = True
    aiguard.revive("rv")
    assert mode.outcome(triage, "t").reason is Reason.SERVED


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs at least one limit"),
        ({"max_error_rate": 1.5}, "max_error_rate=1.5 is invalid"),
        ({"max_error_rate": 0.1, "min_calls": 0}, "min_calls=0 is invalid"),
        ({"max_error_rate": 0.1, "window": 5}, "window=5) is invalid"),
        ({"max_error_rate": 0.1, "cooldown": 0}, "cooldown=0) is invalid"),
        ({"max_error_rate": 0.1, "probe_share": 0}, "probe_share=0) is invalid"),
    ],
)
def test_bad_breakers_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    """Breaker() validates at construction, naming the field and the value."""
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.Breaker(**kwargs)
    assert message in str(info.value)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.booleans(), min_size=1, max_size=80))
def test_trips_exactly_when_the_window_goes_over_the_limit(
    mode: Mode, failures: list[bool]
) -> None:
    """For any sequence of results, the breaker trips at the first window over the limit."""
    events.clear()  # one test function, many hypothesis examples
    breaker = aiguard.Breaker(
        max_error_rate=0.4, min_calls=5, window=10, window_seconds=None, cooldown=60
    )
    it = iter(failures)

    def model() -> str:
        if next(it):
            raise ConnectionError
        return "ok"

    triage = mode.guard("prop", breaker=breaker, fallback=aiguard.Default("fb"))(model)
    window: list[bool] = []
    tripped = False
    for failed in failures:
        outcome = mode.outcome(triage)
        if tripped:
            assert outcome.reason is Reason.AUTO_KILLED
            next(it)
            continue
        assert outcome.reason is (Reason.ERROR if failed else Reason.SERVED)
        window = [*window, failed][-10:]
        if len(window) >= 5 and sum(window) / len(window) > 0.4:
            tripped = True
    assert (EventKind.TRIP.value in kinds("prop")) == tripped
