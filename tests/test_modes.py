"""Every behaviour of a guarded call, through the sync and the async driver alike (`mode`)."""

from __future__ import annotations

import inspect
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from _modes import Mode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiguard
from aiguard import Reason, Source
from aiguard.testing import capture_outcomes, capture_telemetry

# -- the served path ---------------------------------------------------------------------------


def test_served_at_threshold(mode: Mode) -> None:
    """A result whose confidence equals the threshold is served as is, with a full Outcome."""
    result = {"label": "bug", "score": 0.8}

    @mode.guard("m-served", confidence="score", threshold=0.8, fallback=aiguard.Default("d"))
    def triage(ticket: str) -> dict[str, Any]:
        return result

    assert mode.call(triage, "it crashed") is result
    outcome = mode.outcome(triage, "it crashed")
    assert outcome.value is result and outcome.model_result is result
    assert (outcome.source, outcome.reason) == (Source.MODEL, Reason.SERVED)
    assert outcome.served and not outcome.fallback
    assert (outcome.confidence, outcome.threshold) == (0.8, 0.8)
    assert outcome.model_latency is not None
    assert outcome.latency >= outcome.model_latency >= 0
    assert outcome.call_id.startswith("ag_")
    assert (outcome.feature, outcome.attempts, outcome.exception) == ("m-served", (), None)
    assert (outcome.arm, outcome.review_id, outcome.detail) == (None, None, None)


def test_each_call_has_its_own_id(mode: Mode) -> None:
    """Two calls get two distinct call ids."""

    @mode.guard("m-ids")
    def echo(text: str) -> str:
        return text

    first, second = mode.outcome(echo, "a"), mode.outcome(echo, "b")
    assert (first.value, second.value) == ("a", "b")
    assert first.call_id != second.call_id


def test_served_within_timeout(mode: Mode) -> None:
    """A model that answers before its timeout is served (the sync pool / async timeout path)."""
    guarded = mode.guard("m-quick", timeout=5.0)(mode.sleeper(0.0, "fast"))
    outcome = mode.outcome(guarded, "x")
    assert (outcome.value, outcome.reason, outcome.source) == ("fast", Reason.SERVED, Source.MODEL)


# -- results that are not served ---------------------------------------------------------------


def test_below_threshold_goes_to_rules(mode: Mode) -> None:
    """A confidence below the threshold is not served: Rules answers with the same arguments."""
    result = {"label": "bug", "score": 0.79}
    seen: list[tuple[str, str]] = []

    def keyword_rules(ticket: str, lang: str = "en") -> dict[str, Any]:
        seen.append((ticket, lang))
        return {"label": "billing"}

    @mode.guard("m-low", confidence="score", threshold=0.8, fallback=aiguard.Rules(keyword_rules))
    def triage(ticket: str, lang: str = "en") -> dict[str, Any]:
        return result

    outcome = mode.outcome(triage, "invoice", lang="fr")
    assert outcome.value == {"label": "billing"}
    assert (outcome.source, outcome.reason) == (Source.RULES, Reason.LOW_CONFIDENCE)
    assert (outcome.confidence, outcome.threshold) == (0.79, 0.8)
    assert outcome.model_result is result and outcome.fallback and not outcome.served
    assert outcome.detail == "confidence 0.79 < threshold 0.8"
    assert [(a.handler, a.source, a.failed) for a in outcome.attempts] == [
        (f"rules:{keyword_rules.__qualname__}", Source.RULES, False)
    ]
    assert seen == [("invoice", "fr")]


@pytest.mark.parametrize(
    ("result", "detail"),
    [
        pytest.param({"label": "bug"}, "confidence 'score' is missing", id="missing"),
        pytest.param({"label": "bug", "score": None}, "confidence 'score' is missing", id="none"),
        pytest.param({"score": 1.5}, "confidence 1.5 is outside [0, 1]", id="above-one"),
        pytest.param({"score": -0.1}, "confidence -0.1 is outside [0, 1]", id="negative"),
        pytest.param({"score": math.nan}, "confidence nan is outside [0, 1]", id="nan"),
        pytest.param({"score": "high"}, "confidence 'high' is a str, not a number", id="str"),
        pytest.param({"score": True}, "confidence True is a bool, not a number", id="bool"),
    ],
)
def test_invalid_confidence(mode: Mode, result: dict[str, Any], detail: str) -> None:
    """A confidence missing or not a number in [0, 1] is invalid_confidence, never served."""

    @mode.guard("m-badconf", confidence="score", threshold=0.0, fallback=aiguard.Default("d"))
    def triage(ticket: str) -> dict[str, Any]:
        return result

    outcome = mode.outcome(triage, "x")
    assert (outcome.value, outcome.source) == ("d", Source.DEFAULT)
    assert outcome.reason is Reason.INVALID_CONFIDENCE
    assert outcome.confidence is None and outcome.model_result is result
    assert outcome.detail == detail


def test_confidence_from_a_callable(mode: Mode) -> None:
    """confidence= may be a callable over the result; its value is compared with the threshold."""

    @mode.guard("m-confcall", confidence=lambda r: r[1], threshold=0.5, fallback=lambda n: "low")
    def score(n: int) -> tuple[str, float]:
        return ("high", n / 10)

    assert mode.call(score, 9) == ("high", 0.9)
    assert mode.call(score, 2) == "low"
    assert mode.last_outcome().reason is Reason.LOW_CONFIDENCE  # type: ignore[union-attr]


def test_validator_returning_false_is_invalid_output(mode: Mode) -> None:
    """A validator that returns False rejects the result: invalid_output, the fallback serves."""

    def known_label(result: dict[str, Any]) -> bool:
        return result["label"] in {"bug", "billing"}

    @mode.guard("m-valfalse", validate=known_label, fallback=aiguard.Default({"label": "other"}))
    def triage(ticket: str) -> dict[str, Any]:
        return {"label": "poetry"}

    outcome = mode.outcome(triage, "x")
    assert outcome.value == {"label": "other"}
    assert (outcome.reason, outcome.source) == (Reason.INVALID_OUTPUT, Source.DEFAULT)
    assert outcome.model_result == {"label": "poetry"}
    assert outcome.detail == f"validator {known_label.__qualname__} returned False"


def test_validator_raising_is_invalid_output(mode: Mode) -> None:
    """A validator that raises rejects the result; the detail carries its exception."""

    def has_label(result: dict[str, Any]) -> None:
        if "label" not in result:
            raise ValueError("no label")

    @mode.guard("m-valraise", validate=[has_label], fallback=aiguard.Default({"label": "other"}))
    def triage(ticket: str) -> dict[str, Any]:
        return {"text": "?"}

    outcome = mode.outcome(triage, "x")
    assert (outcome.reason, outcome.value) == (Reason.INVALID_OUTPUT, {"label": "other"})
    assert outcome.detail is not None and "ValueError('no label')" in outcome.detail
    assert outcome.exception is None  # the model did not fail: its result did


# -- exceptions --------------------------------------------------------------------------------


def test_caught_exception_goes_to_fallback(mode: Mode) -> None:
    """An exception in catch= is reason error: the fallback serves, the Outcome keeps the error."""
    boom = ConnectionError("model down")

    def rules(ticket: str) -> str:
        return "rules"

    @mode.guard("m-error", catch=(ConnectionError,), fallback=aiguard.Rules(rules))
    def triage(ticket: str) -> str:
        raise boom

    outcome = mode.outcome(triage, "x")
    assert (outcome.value, outcome.source, outcome.reason) == ("rules", Source.RULES, Reason.ERROR)
    assert outcome.exception is boom
    assert outcome.model_latency is not None and outcome.model_result is None
    assert [(a.handler, a.failed) for a in outcome.attempts] == [
        (f"rules:{rules.__qualname__}", False)
    ]


def test_uncaught_exception_propagates_and_is_recorded(mode: Mode) -> None:
    """An exception outside catch= propagates unchanged; its Outcome is still published."""
    bug = KeyError("parser bug")
    fallback_calls: list[str] = []

    def rules(ticket: str) -> str:
        fallback_calls.append(ticket)
        return "rules"

    @mode.guard("m-uncaught", catch=ConnectionError, fallback=rules)
    def triage(ticket: str) -> str:
        raise bug

    with capture_outcomes() as outcomes, pytest.raises(KeyError) as info:
        mode.call(triage, "x")
    assert info.value is bug
    [outcome] = outcomes
    assert (outcome.reason, outcome.source, outcome.value) == (Reason.ERROR, None, None)
    assert outcome.exception is bug and outcome.attempts == ()
    assert fallback_calls == []
    assert aiguard.stats("m-uncaught").by_reason == {"error": 1}


def test_no_fallback_answers_reraises_the_model_error(mode: Mode) -> None:
    """When every handler fails after a model error, the model's own exception propagates."""
    boom = ConnectionError("model down")

    def rules(ticket: str) -> str:
        raise LookupError("no keyword")

    @mode.guard("m-allfail", fallback=rules)
    def triage(ticket: str) -> str:
        raise boom

    with capture_outcomes() as outcomes, pytest.raises(ConnectionError) as info:
        mode.call(triage, "x")
    assert info.value is boom
    [outcome] = outcomes
    assert (outcome.reason, outcome.source) == (Reason.ERROR, None)
    assert [type(a.error) for a in outcome.attempts] == [LookupError]


def test_misuse_type_error_propagates_and_is_not_a_model_error(mode: Mode) -> None:
    """Arguments that do not fit the signature raise TypeError; the breaker does not count it."""
    model_calls: list[str] = []
    breaker = aiguard.Breaker(max_error_rate=0.5, min_calls=2, window=10)

    @mode.guard("m-misuse", breaker=breaker, fallback=aiguard.Default("d"))
    def triage(ticket: str) -> str:
        model_calls.append(ticket)
        return "model"

    with capture_outcomes() as outcomes:
        for _ in range(4):
            with pytest.raises(TypeError):
                mode.call(triage, "a", "b")
    assert model_calls == []
    assert [o.reason for o in outcomes] == [Reason.ERROR] * 4
    assert all(isinstance(o.exception, TypeError) and o.value is None for o in outcomes)
    outcome = mode.outcome(triage, "ok")  # four "errors", yet the breaker is still closed
    assert (outcome.value, outcome.reason) == ("model", Reason.SERVED)


def test_type_error_inside_the_model_is_a_model_error(mode: Mode) -> None:
    """A TypeError raised by the model itself (arguments fit) goes to the fallback chain."""

    @mode.guard("m-innertype", fallback=aiguard.Default("d"))
    def triage(ticket: str) -> str:
        return str(len(ticket) + ticket)  # type: ignore[operator]

    outcome = mode.outcome(triage, "x")
    assert (outcome.value, outcome.reason) == ("d", Reason.ERROR)
    assert isinstance(outcome.exception, TypeError)


# -- timeouts ----------------------------------------------------------------------------------


def test_timeout_goes_to_fallback(mode: Mode) -> None:
    """A model slower than timeout= is abandoned: reason timeout, the fallback serves quickly."""
    guarded = mode.guard("m-timeout", timeout=0.05, fallback=aiguard.Default("late"))(
        mode.sleeper(2.0, "model")
    )
    outcome = mode.outcome(guarded, "x")
    assert (outcome.value, outcome.source, outcome.reason) == (
        "late",
        Source.DEFAULT,
        Reason.TIMEOUT,
    )
    assert outcome.model_latency is None and outcome.exception is None
    assert 0.04 <= outcome.latency < 1.5  # it did not wait for the model
    assert outcome.detail == "the model gave no result within 0.05 s"


def test_timeout_without_fallback_raises_model_timeout(mode: Mode) -> None:
    """A timeout with no fallback raises ModelTimeout (a TimeoutError) carrying the Outcome."""
    guarded = mode.guard("m-timeout-bare", timeout=0.05)(mode.sleeper(2.0, "model"))
    with pytest.raises(aiguard.ModelTimeout) as info:
        mode.call(guarded, "x")
    assert isinstance(info.value, TimeoutError)
    outcome = info.value.outcome
    assert (outcome.reason, outcome.source, outcome.value) == (Reason.TIMEOUT, None, None)
    assert outcome.feature == "m-timeout-bare"


def test_model_timeout_error_is_reason_timeout(mode: Mode) -> None:
    """The model's own TimeoutError (no timeout= set) is reason timeout, with the exception."""
    late = TimeoutError("upstream read timed out")

    @mode.guard("m-owntimeout", fallback=aiguard.Default("d"))
    def triage(ticket: str) -> str:
        raise late

    outcome = mode.outcome(triage, "x")
    assert (outcome.value, outcome.reason, outcome.exception) == ("d", Reason.TIMEOUT, late)


def test_timeout_is_enforced_whatever_catch_says(mode: Mode) -> None:
    """timeout= applies even when catch= leaves TimeoutError out: reason timeout, fallback."""
    guarded = mode.guard(
        "m-timeout-catch", timeout=0.05, catch=ConnectionError, fallback=aiguard.Default("late")
    )(mode.sleeper(2.0, "model"))
    outcome = mode.outcome(guarded, "x")
    assert (outcome.value, outcome.reason) == ("late", Reason.TIMEOUT)


def test_misuse_under_a_timeout_propagates(mode: Mode) -> None:
    """Under timeout= too (the worker pool in sync), a caller's TypeError is not a model error."""

    @mode.guard("m-misuse-timeout", timeout=5.0, fallback=aiguard.Default("d"))
    def triage(ticket: str) -> str:
        return "model"

    with capture_outcomes() as outcomes, pytest.raises(TypeError):
        mode.call(triage, ticket="x", lang="fr")
    [outcome] = outcomes
    assert (outcome.reason, outcome.source, outcome.attempts) == (Reason.ERROR, None, ())
    assert mode.call(triage, "x") == "model"


# -- fallbacks ---------------------------------------------------------------------------------


def test_no_fallback_after_low_confidence_raises_not_served(mode: Mode) -> None:
    """Low confidence and no fallback: NotServed carries the Outcome (nothing was served)."""
    result = {"score": 0.2}

    @mode.guard("m-notserved", confidence="score", threshold=0.5)
    def triage(ticket: str) -> dict[str, float]:
        return result

    with pytest.raises(aiguard.NotServed) as info:
        mode.call(triage, "x")
    assert not isinstance(info.value, aiguard.ModelTimeout)
    outcome = info.value.outcome
    assert (outcome.reason, outcome.source, outcome.value) == (Reason.LOW_CONFIDENCE, None, None)
    assert (outcome.confidence, outcome.model_result) == (0.2, result)


def test_fallback_chain_in_order(mode: Mode) -> None:
    """A failing handler passes the call to the next; attempts list both; later ones never run."""
    later: list[str] = []

    def keyword_rules(ticket: str) -> str:
        raise LookupError("no keyword matched")

    def never(ticket: str) -> str:
        later.append(ticket)
        return "never"

    @mode.guard(
        "m-chain",
        fallback=[aiguard.Rules(keyword_rules), aiguard.Default("other"), aiguard.Rules(never)],
    )
    def triage(ticket: str) -> str:
        raise ConnectionError("down")

    outcome = mode.outcome(triage, "x")
    assert (outcome.value, outcome.source) == ("other", Source.DEFAULT)
    first, second = outcome.attempts
    assert (first.handler, first.source, first.failed) == (
        f"rules:{keyword_rules.__qualname__}",
        Source.RULES,
        True,
    )
    assert isinstance(first.error, LookupError)
    assert (second.handler, second.source, second.failed) == ("default", Source.DEFAULT, False)
    assert later == []


def test_default_serves_the_same_object(mode: Mode) -> None:
    """Default(value) serves that very object, every time, with source default."""
    value = {"label": "other"}

    @mode.guard("m-default", fallback=aiguard.Default(value))
    def triage(ticket: str) -> dict[str, str]:
        raise ConnectionError("down")

    assert mode.call(triage, "a") is value
    assert mode.call(triage, "b") is value
    assert mode.last_outcome().source is Source.DEFAULT  # type: ignore[union-attr]


def test_plain_callable_fallback_gets_the_context_arguments(mode: Mode) -> None:
    """A plain callable fallback is Rules: it gets positional and keyword arguments as given."""

    def rules(a: int, b: int = 0, *, c: int = 0) -> int:
        return a + b + c

    @mode.guard("m-callable", fallback=rules)
    def add(a: int, b: int = 0, *, c: int = 0) -> int:
        raise ConnectionError("down")

    assert mode.call(add, 1, 2, c=3) == 6
    assert mode.call(add, 1) == 1


def test_human_review_raises_review_pending(mode: Mode) -> None:
    """HumanReview queues the call in the configured store and raises ReviewPending."""
    aiguard.configure(store=":memory:")

    @mode.guard("m-review", confidence="score", threshold=0.8, fallback=aiguard.HumanReview())
    def triage(ticket: str) -> dict[str, Any]:
        return {"label": "bug", "score": 0.4}

    with pytest.raises(aiguard.ReviewPending) as info:
        mode.call(triage, "crash?")
    pending = info.value
    outcome = pending.outcome
    assert pending.review_id and outcome.review_id == pending.review_id
    assert (outcome.reason, outcome.source) == (Reason.LOW_CONFIDENCE, Source.HUMAN)
    [item] = aiguard.ReviewQueue().pending("m-review")
    assert (item.id, item.call_id, item.feature) == (pending.review_id, outcome.call_id, "m-review")
    assert item.arguments == {"ticket": "crash?"}
    assert (item.reason, item.confidence) == ("low_confidence", 0.4)


def test_human_review_with_placeholder(mode: Mode) -> None:
    """HumanReview(respond=...) queues the call and serves the placeholder instead of raising."""
    queue = aiguard.ReviewQueue(":memory:")

    @mode.guard(
        "m-review-placeholder",
        fallback=aiguard.HumanReview(queue=queue, respond=lambda item: {"pending": item.id}),
    )
    def triage(ticket: str) -> dict[str, Any]:
        raise ConnectionError("down")

    outcome = mode.outcome(triage, "crash?")
    assert outcome.value == {"pending": outcome.review_id}
    assert (outcome.source, outcome.reason) == (Source.HUMAN, Reason.ERROR)
    assert [item.id for item in queue.pending("m-review-placeholder")] == [outcome.review_id]


# -- kill switches, rollouts, breaker, budget --------------------------------------------------


def test_kill_and_revive(mode: Mode) -> None:
    """A killed feature skips the model (reason killed); revive() brings the model back."""
    model_calls: list[str] = []

    @mode.guard("m-kill", fallback=aiguard.Default("rules"))
    def triage(ticket: str) -> str:
        model_calls.append(ticket)
        return "model"

    assert mode.call(triage, "before") == "model"
    aiguard.kill("m-kill", reason="incident 42")
    outcome = mode.outcome(triage, "during")
    assert (outcome.value, outcome.reason, outcome.source) == (
        "rules",
        Reason.KILLED,
        Source.DEFAULT,
    )
    assert outcome.model_latency is None
    assert outcome.detail is not None and "incident 42" in outcome.detail
    aiguard.revive("m-kill")
    assert mode.call(triage, "after") == "model"
    assert model_calls == ["before", "after"]


def test_rollout_zero_percent_serves_the_baseline(mode: Mode) -> None:
    """Rollout(percent=0): the model is not called, the fallback serves as source baseline."""
    model_calls: list[str] = []

    @mode.guard(
        "m-rollout-0",
        rollout=aiguard.Rollout(percent=0, key="user"),
        fallback=aiguard.Default("template"),
    )
    def draft(user: str, text: str) -> str:
        model_calls.append(user)
        return "ai"

    outcomes = [mode.outcome(draft, f"user-{n}", "hi") for n in range(10)]
    assert {(o.value, o.reason, o.source, o.arm) for o in outcomes} == {
        ("template", Reason.NOT_IN_ROLLOUT, Source.BASELINE, "baseline")
    }
    assert all(o.rollout_percent == 0 for o in outcomes)
    assert model_calls == []


def test_rollout_full_serves_the_ai_arm(mode: Mode) -> None:
    """Rollout(percent=100): every unit gets the model, arm ai."""

    @mode.guard(
        "m-rollout-100",
        rollout=aiguard.Rollout(percent=100, key="user"),
        fallback=aiguard.Default("template"),
    )
    def draft(user: str, text: str) -> str:
        return "ai"

    outcomes = [mode.outcome(draft, f"user-{n}", text="hi") for n in range(10)]
    assert {(o.value, o.reason, o.source, o.arm) for o in outcomes} == {
        ("ai", Reason.SERVED, Source.MODEL, "ai")
    }
    assert all(o.rollout_percent == 100 for o in outcomes)


def test_set_rollout_moves_units_in_at_run_time(mode: Mode) -> None:
    """aiguard.set_rollout() changes a live guard's percentage; None goes back to the code's."""

    @mode.guard(
        "m-rollout-live",
        rollout=aiguard.Rollout(percent=0, key="user"),
        fallback=aiguard.Default("template"),
    )
    def draft(user: str) -> str:
        return "ai"

    assert mode.outcome(draft, "u1").reason is Reason.NOT_IN_ROLLOUT
    aiguard.set_rollout("m-rollout-live", 100)
    outcome = mode.outcome(draft, "u1")
    assert (outcome.value, outcome.arm, outcome.rollout_percent) == ("ai", "ai", 100)
    aiguard.set_rollout("m-rollout-live", None)
    assert mode.outcome(draft, "u1").reason is Reason.NOT_IN_ROLLOUT


def test_missing_rollout_key_serves_the_baseline(mode: Mode) -> None:
    """Below 100 %, a unit with an empty rollout key gets the baseline: missing_rollout_key."""
    model_calls: list[str] = []

    @mode.guard(
        "m-rollout-nokey",
        rollout=aiguard.Rollout(percent=99, key="user"),
        fallback=aiguard.Default("template"),
    )
    def draft(user: str) -> str:
        model_calls.append(user)
        return "ai"

    outcome = mode.outcome(draft, "")
    assert (outcome.value, outcome.reason, outcome.source) == (
        "template",
        Reason.MISSING_ROLLOUT_KEY,
        Source.BASELINE,
    )
    assert model_calls == []


def test_breaker_trips_after_errors(mode: Mode) -> None:
    """After min_calls errors over max_error_rate, the breaker skips the model: auto_killed."""
    model_calls: list[int] = []

    @mode.guard(
        "m-breaker",
        breaker=aiguard.Breaker(max_error_rate=0.5, min_calls=4, window=10, cooldown=60),
        fallback=aiguard.Default("rules"),
    )
    def triage(n: int) -> str:
        model_calls.append(n)
        raise ConnectionError("model down")

    outcomes = [mode.outcome(triage, n) for n in range(6)]
    assert [o.reason for o in outcomes] == [Reason.ERROR] * 4 + [Reason.AUTO_KILLED] * 2
    assert {o.value for o in outcomes} == {"rules"}
    assert model_calls == [0, 1, 2, 3]
    assert outcomes[-1].model_latency is None


def test_budget_exhausted_is_over_budget(mode: Mode) -> None:
    """Once a window's spend reaches the budget, the model is skipped: over_budget."""
    aiguard.configure(prices={"models": {"clf-v3": {"per_call": "0.00002"}}})
    model_calls: list[int] = []

    @mode.guard(
        "m-budget",
        model="clf-v3",
        budget=aiguard.Budget(limit="0.00005", per="day"),
        fallback=aiguard.Default("paused"),
    )
    def draft(n: int) -> str:
        model_calls.append(n)
        return "draft"

    outcomes = [mode.outcome(draft, n) for n in range(5)]
    assert [o.value for o in outcomes] == ["draft"] * 3 + ["paused"] * 2
    assert [o.reason for o in outcomes[3:]] == [Reason.OVER_BUDGET] * 2
    assert [o.cost for o in outcomes] == [Decimal("0.00002")] * 3 + [Decimal(0)] * 2
    detail = outcomes[-1].detail
    assert detail is not None and detail.startswith("spent 0.00006 of the 0.00005 budget")
    assert model_calls == [0, 1, 2]


def test_configuration_applies_to_live_guards(mode: Mode) -> None:
    """Confidence and threshold from configure(features=...) apply, and changes reach live
    guards on their next call."""
    aiguard.configure(features={"m-config": {"confidence": "score", "threshold": 0.5}})

    @mode.guard("m-config", fallback=aiguard.Default("d"))
    def triage(ticket: str) -> dict[str, float]:
        return {"score": 0.6}

    outcome = mode.outcome(triage, "x")
    assert (outcome.reason, outcome.threshold) == (Reason.SERVED, 0.5)
    aiguard.configure(features={"m-config": {"confidence": "score", "threshold": 0.7}})
    outcome = mode.outcome(triage, "x")
    assert (outcome.value, outcome.reason, outcome.threshold) == (
        "d",
        Reason.LOW_CONFIDENCE,
        0.7,
    )


def test_usage_and_cost_are_read_from_the_result(mode: Mode) -> None:
    """Tokens are read from the result and priced by the table; stats add them up."""
    aiguard.configure(prices={"models": {"gpt-x": {"input": "1", "output": "2"}}})

    @mode.guard("m-usage")
    def draft(text: str) -> dict[str, Any]:
        return {"text": "ok", "model": "gpt-x", "input_tokens": 1000, "output_tokens": 500}

    outcome = mode.outcome(draft, "x")
    assert outcome.usage is not None
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens) == (1000, 500)
    assert outcome.usage.model == "gpt-x"
    assert outcome.cost == Decimal("0.002")
    stats = aiguard.stats("m-usage")
    assert (stats.input_tokens, stats.output_tokens, stats.cost) == (1000, 500, Decimal("0.002"))


# -- what a call leaves behind -----------------------------------------------------------------


def test_last_outcome_after_a_call(mode: Mode) -> None:
    """aiguard.last_outcome() is the Outcome of the latest call, served or not."""

    @mode.guard("m-last", confidence="score", threshold=0.5, fallback=aiguard.Default("d"))
    def triage(score: float) -> dict[str, float]:
        return {"score": score}

    value = mode.call(triage, 0.9)
    last = mode.last_outcome()
    assert last is not None and last.value is value and last.reason is Reason.SERVED
    mode.call(triage, 0.1)
    last = mode.last_outcome()
    assert last is not None and (last.value, last.reason) == ("d", Reason.LOW_CONFIDENCE)
    assert last.confidence == 0.1


def test_stats_count_by_source_and_reason(mode: Mode) -> None:
    """aiguard.stats(feature) counts calls by source and by reason."""

    @mode.guard("m-stats", confidence="score", threshold=0.5, fallback=lambda score: "rules")
    def triage(score: float | None) -> dict[str, float]:
        if score is None:
            raise ConnectionError("down")
        return {"score": score}

    for score in (0.9, 0.8, 0.1, None):
        mode.call(triage, score)
    stats = aiguard.stats("m-stats")
    assert stats.calls == 4
    assert stats.by_source == {"model": 2, "rules": 2}
    assert stats.by_reason == {"served": 2, "low_confidence": 1, "error": 1}
    assert stats.fallback_rate == 0.5


def test_guarded_function_keeps_its_signature(mode: Mode) -> None:
    """The guarded function keeps name, signature and kind (a coroutine function in async)."""

    def triage(ticket: str, *, lang: str = "en") -> dict[str, Any]:
        return {"label": "bug"}

    guarded = mode.guard("m-signature")(triage)
    assert inspect.signature(guarded) == inspect.signature(triage)
    assert inspect.signature(guarded.outcome) == inspect.signature(triage)
    assert guarded.__name__ == "triage" and guarded.feature == "m-signature"
    assert inspect.iscoroutinefunction(guarded) is mode.is_async
    assert inspect.iscoroutinefunction(guarded.outcome) is mode.is_async


def test_call_records_land_in_the_store(mode: Mode, tmp_path: Path) -> None:
    """After flush(), each call has a record in the store, and report() counts them."""
    path = tmp_path / "a.db"
    aiguard.configure(store=str(path))

    @mode.guard("m-records", confidence="score", threshold=0.5, fallback=aiguard.Default("d"))
    def triage(score: float) -> dict[str, float]:
        return {"score": score}

    served = mode.outcome(triage, 0.9)
    low = mode.outcome(triage, 0.2)
    aiguard.flush()
    store = aiguard.SQLiteStore(path)
    try:
        by_id = {r["call_id"]: r for r in store.call_records(feature="m-records")}
    finally:
        store.close()
    assert set(by_id) == {served.call_id, low.call_id}
    row = by_id[served.call_id]
    assert (row["source"], row["reason"], row["confidence"]) == ("model", "served", 0.9)
    assert row["started_at"] == pytest.approx(served.started_at)
    row = by_id[low.call_id]
    assert (row["source"], row["reason"]) == ("default", "low_confidence")
    assert row["detail"] == "confidence 0.2 < threshold 0.5"
    [figures] = aiguard.report("m-records").features
    assert figures.calls == 2 and figures.by_source == {"model": 1, "default": 1}


def test_feedback_by_call_id(mode: Mode, tmp_path: Path) -> None:
    """Feedback is recorded against a call by its id, or through the Outcome."""
    aiguard.configure(store=tmp_path / "a.db")

    @mode.guard("m-feedback")
    def reply(text: str) -> str:
        return "Thanks, we are on it."

    first = mode.outcome(reply, "x")
    fb = aiguard.feedback(first.call_id, kind="accepted", by="u1")
    assert (fb.call_id, fb.feature, fb.kind, fb.accepted, fb.by) == (
        first.call_id,
        "m-feedback",
        aiguard.FeedbackKind.ACCEPTED,
        True,
        "u1",
    )
    edited = mode.outcome(reply, "y").edit("Thanks, we are on it!")
    assert edited.kind is aiguard.FeedbackKind.EDITED
    assert edited.edit_distance == pytest.approx(1 / 21)
    with pytest.raises(aiguard.UnknownCall):
        aiguard.feedback("ag_no_such_call", accepted=True)


def test_telemetry_span_per_call(mode: Mode) -> None:
    """A served call is one CLIENT span named '{operation} {model}'; a call whose model failed
    has its model call's span (an error) and the guarded call's own span (answered)."""
    with capture_telemetry() as telemetry:

        @mode.guard("m-otel", model="m-1", fallback=aiguard.Default("d"))
        def triage(fail: bool) -> str:
            if fail:
                raise ConnectionError("down")
            return "ok"

        served = mode.outcome(triage, False)
        failed = mode.outcome(triage, True)
    models = telemetry.spans("chat m-1")
    assert len(models) == 2
    attrs = [dict(span.attributes or {}) for span in models]
    assert [a["aiguard.call_id"] for a in attrs] == [served.call_id, failed.call_id]
    assert (attrs[0]["aiguard.reason"], attrs[0]["aiguard.source"]) == ("served", "model")
    assert attrs[1]["error.type"] == "ConnectionError"
    [call] = telemetry.spans("aiguard m-otel")
    call_attrs = dict(call.attributes or {})
    assert (call_attrs["aiguard.call_id"], call_attrs["aiguard.reason"]) == (
        failed.call_id,
        "error",
    )
    assert call_attrs["aiguard.source"] == "default" and call_attrs["aiguard.feature"] == "m-otel"
    [handler] = telemetry.spans("aiguard.fallback default")
    assert handler.parent is not None and handler.parent.span_id == call.context.span_id


# -- an invariant ------------------------------------------------------------------------------


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    confidence=st.floats(min_value=0.0, max_value=1.0),
    threshold=st.floats(min_value=0.0, max_value=1.0),
)
def test_served_iff_confidence_reaches_threshold(
    mode: Mode, confidence: float, threshold: float
) -> None:
    """For any confidence c and threshold t in [0, 1], the call is served iff c >= t."""

    @mode.guard(
        "m-invariant", confidence="c", threshold=threshold, fallback=aiguard.Default("rules")
    )
    def model(x: int) -> dict[str, float]:
        return {"c": confidence}

    outcome = mode.outcome(model, 1)
    assert outcome.served is (confidence >= threshold)
    expected = Reason.SERVED if confidence >= threshold else Reason.LOW_CONFIDENCE
    assert outcome.reason is expected
    assert outcome.confidence == confidence
