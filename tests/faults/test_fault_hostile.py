"""Hostile inputs: nothing escapes but a named aiguard error at configuration time, or a
recorded fallback at call time with the model's answer or the fallback served.

Each input once observed to escape has a test of its own, asserting the exact outcome; then
hypothesis checks the invariant over confidence values, rollout keys, usage objects, prices,
durations, feedback fields and control-file contents: configuration raises ``ConfigError`` (a
``ValueError``) or succeeds, and a call ends with a normal ``Outcome``.
"""

from __future__ import annotations

import json
import math
import numbers
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _modes import Mode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiguard
from aiguard import Reason, Source
from aiguard._runtime import errors
from aiguard.control import read_control_file
from aiguard.events import EventKind
from aiguard.store import configured

HYPOTHESIS = settings(max_examples=200, deadline=None)
WITH_FIXTURE = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# -- hostile objects -------------------------------------------------------------------------------


class Boom(RuntimeError):
    """What the hostile objects below raise."""


class RaisingStr:
    def __str__(self) -> str:
        raise Boom("__str__")

    def __repr__(self) -> str:
        return "RaisingStr()"


class RaisingEq:
    def __eq__(self, other: object) -> bool:
        raise Boom("__eq__")

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "RaisingEq()"


class RaisingHash:
    def __hash__(self) -> int:
        raise Boom("__hash__")

    def __repr__(self) -> str:
        return "RaisingHash()"


class RaisingRepr:
    def __repr__(self) -> str:
        raise Boom("__repr__")


class RaisingBool:
    def __bool__(self) -> bool:
        raise Boom("__bool__")


class RaisingFloat:
    """Not a number type, but has a __float__ that fails."""

    def __float__(self) -> float:
        raise Boom("__float__")


class RealRaisingFloat(RaisingFloat):
    """A registered numbers.Real whose __float__ fails."""

    def __repr__(self) -> str:
        return "RealRaisingFloat()"


numbers.Real.register(RealRaisingFloat)

hostile_objects = st.sampled_from(
    [RaisingStr, RaisingEq, RaisingHash, RaisingRepr, RaisingBool, RaisingFloat, RealRaisingFloat]
).map(lambda cls: cls())

huge_ints = st.sampled_from([10**400, -(10**400), 2**70, 2**63]) | st.just(5000).map(
    lambda digits: 10**digits  # an int with no text form: repr() raises
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.fractions(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(exclude_categories=())),  # lone surrogates included
    st.binary(max_size=8),
    hostile_objects,
    st.just(np.False_),
    st.just(np.float64("nan")),
    st.just(np.array([1, 2])),
)
anything = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def _attempt(build: Callable[[], Any]) -> tuple[Any, str | None]:
    """``build()``'s value and None, or None and the message of the ConfigError it raised
    (any other exception escapes, and fails the test)."""
    try:
        return build(), None
    except aiguard.ConfigError as exc:
        message = str(exc)
        assert message.strip(), "a ConfigError without a message"
        return None, message


# -- confidence ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "confidence",
    [10**400, -(10**400), Fraction(10**400, 3), RealRaisingFloat()],
    ids=["10**400", "-10**400", "huge-fraction", "raising-float"],
)
def test_a_confidence_that_is_no_float_goes_to_the_fallback(mode: Mode, confidence: Any) -> None:
    """A number that cannot be read as a float is `invalid_confidence`: the fallback serves."""
    result = {"score": confidence}

    @mode.guard("conf", confidence="score", threshold=0.5, fallback=aiguard.Default("fallback"))
    def model(text: str) -> dict[str, Any]:
        return result

    outcome = mode.outcome(model, "hi")
    assert outcome.reason is Reason.INVALID_CONFIDENCE
    assert outcome.source is Source.DEFAULT and outcome.value == "fallback"
    assert outcome.confidence is None and outcome.model_result is result
    assert outcome.detail is not None and "cannot be read as a float" in outcome.detail


# -- rollout keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("\ud800", "UnicodeEncodeError"),
        (np.array([1, 2]), "ValueError: The truth value"),
        (RaisingStr(), "Boom: __str__"),
        (RaisingEq(), "Boom: __eq__"),
    ],
    ids=["surrogate", "numpy-array", "raising-str", "raising-eq"],
)
def test_a_rollout_key_that_cannot_be_bucketed_is_a_missing_key(
    mode: Mode, key: Any, why: str
) -> None:
    """The call goes to the fallback chain as `missing_rollout_key`, and the detail says why."""

    @mode.guard(
        "keys",
        rollout=aiguard.Rollout(percent=50, key="user"),
        fallback=aiguard.Default("fallback"),
    )
    def model(user: Any) -> str:
        return "ai"

    outcome = mode.outcome(model, key)
    assert outcome.reason is Reason.MISSING_ROLLOUT_KEY
    assert outcome.source is Source.BASELINE and outcome.value == "fallback"
    assert outcome.arm == "baseline" and outcome.model_result is None
    assert outcome.detail is not None
    assert f"the rollout key (a {type(key).__name__}) cannot be bucketed: {why}" in outcome.detail


def test_a_rollout_key_path_that_raises_is_a_missing_key(mode: Mode) -> None:
    """A key read through an attribute that raises ("user.id"): missing, with why."""

    class User:
        @property
        def id(self) -> str:
            raise Boom("no id")

    @mode.guard(
        "key-path",
        rollout=aiguard.Rollout(percent=50, key="user.id"),
        fallback=aiguard.Default("fallback"),
    )
    def model(user: Any) -> str:
        return "ai"

    outcome = mode.outcome(model, User())
    assert outcome.reason is Reason.MISSING_ROLLOUT_KEY and outcome.value == "fallback"
    assert outcome.detail == "the rollout key cannot be read: Boom: no id"


@pytest.mark.parametrize("key", [RaisingHash(), RaisingEq()], ids=["raising-hash", "raising-eq"])
def test_a_segment_that_cannot_compare_the_value_does_not_match(mode: Mode, key: Any) -> None:
    """A segment over a value whose __hash__ or __eq__ raises: not matched; the key decides
    (here the 100 % rollout serves the model)."""

    @mode.guard(
        "segment",
        rollout=aiguard.Rollout(percent=100, key="user", exclude={"user": {"blocked"}}),
        fallback=aiguard.Default("fallback"),
    )
    def model(user: Any) -> str:
        return "ai"

    outcome = mode.outcome(model, key)
    assert outcome.reason is Reason.SERVED and outcome.value == "ai"


# -- usage -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        aiguard.Usage(input_tokens=-5, output_tokens=3, model="m"),
        {"input_tokens": -5, "output_tokens": 3, "model": "m"},
        aiguard.Usage(input_tokens=10**40, model="m"),
    ],
    ids=["Usage", "mapping", "astronomical"],
)
@pytest.mark.parametrize("served", [True, False], ids=["served", "not-served"])
def test_a_usage_reader_with_impossible_counts_is_an_internal_failure(
    mode: Mode, answer: Any, served: bool
) -> None:
    """Negative (or astronomical) tokens from a custom reader: the call is answered as if no
    reader had read anything (usage unknown), and the failure is counted."""
    aiguard.configure(prices={"models": {"m": {"input": "1", "output": "2"}}})

    @mode.guard(
        "neg-usage",
        model="m",
        confidence="score",
        threshold=0.5,
        usage=lambda result: answer,
        fallback=aiguard.Default("fallback"),
    )
    def model(text: str) -> dict[str, float]:
        return {"score": 0.9 if served else 0.1}

    outcome = mode.outcome(model, "hi")
    if served:
        assert outcome.reason is Reason.SERVED and outcome.value == {"score": 0.9}
    else:
        assert outcome.reason is Reason.LOW_CONFIDENCE and outcome.value == "fallback"
        assert outcome.source is Source.DEFAULT
    assert outcome.usage is None and outcome.cost is None
    assert errors.counts().get("usage reader of 'neg-usage'", 0) >= 1


# -- durations and numbers at configuration time ---------------------------------------------------


@pytest.mark.parametrize("per", [float("nan"), float("inf"), -1.0, 0, 10**400, "fortnight"])
def test_a_budget_window_that_is_no_duration_is_a_config_error(per: Any) -> None:
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.Budget(limit="1", per=per)
    assert f"Budget(per={per!r})" in str(info.value)


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("threshold", 10**400),
        ("threshold", Fraction(10**400, 7)),
        ("threshold", RealRaisingFloat()),
        ("latency_slo", 10**400),
        ("timeout", 10**400),
        ("timeout", 1e10),
        ("timeout", timedelta(days=365 * 300)),
        ("timeout", RealRaisingFloat()),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_a_number_too_large_for_a_float_is_a_config_error(argument: str, value: Any) -> None:
    kwargs: dict[str, Any] = {argument: value}
    if argument == "threshold":
        kwargs["confidence"] = "score"
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.guard("numbers", fallback=aiguard.Default(None), **kwargs)
    assert f"{argument}={value!r}"[:300] in str(info.value)


def test_a_huge_int_with_no_text_form_is_still_named() -> None:
    """10**5000 has no repr (Python's limit on int digits): the message describes it."""
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.guard("numbers", confidence="score", threshold=10**5000)
    assert "threshold=<int of 16610 bits>" in str(info.value)


def test_the_longest_wait_a_thread_can_make_is_a_timeout_that_works(mode: Mode) -> None:
    """timeout=threading.TIMEOUT_MAX is accepted, and calls are served (no OverflowError)."""

    @mode.guard("longest", timeout=threading.TIMEOUT_MAX, fallback=aiguard.Default("fallback"))
    def model(text: str) -> str:
        return "ai"

    for _ in range(3):
        outcome = mode.outcome(model, "hi")
        assert outcome.reason is Reason.SERVED and outcome.value == "ai"


@pytest.mark.parametrize("per", [10**400, float("nan")], ids=["10**400", "nan"])
def test_a_rollout_percent_too_large_for_a_float_is_a_config_error(per: Any) -> None:
    with pytest.raises(aiguard.ConfigError, match=r"Rollout\(percent\)="):
        aiguard.Rollout(key="user", percent=per)
    with pytest.raises(aiguard.ConfigError, match=r"set_rollout\('f', percent\)="):
        aiguard.set_rollout("f", per)


# -- validators ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returned", "shown"),
    [
        (np.False_, "np.False_"),
        (False, "False"),
        (0, "0"),
        ("", "''"),
        ([], "[]"),
    ],
    ids=["numpy-False", "False", "zero", "empty-str", "empty-list"],
)
def test_a_validator_returning_a_false_value_rejects(mode: Mode, returned: Any, shown: str) -> None:
    @mode.guard("validator", validate=lambda r: returned, fallback=aiguard.Default("fallback"))
    def model(text: str) -> str:
        return "ai"

    outcome = mode.outcome(model, "hi")
    assert outcome.reason is Reason.INVALID_OUTPUT
    assert outcome.source is Source.DEFAULT and outcome.value == "fallback"
    assert outcome.detail is not None
    assert outcome.detail.startswith("validator ")
    assert outcome.detail.endswith(f".<lambda> returned {shown}")


@pytest.mark.parametrize("returned", [np.array([True, False]), RaisingBool()])
def test_a_validator_returning_neither_true_nor_false_rejects(mode: Mode, returned: Any) -> None:
    @mode.guard("validator", validate=lambda r: returned, fallback=aiguard.Default("fallback"))
    def model(text: str) -> str:
        return "ai"

    outcome = mode.outcome(model, "hi")
    assert outcome.reason is Reason.INVALID_OUTPUT and outcome.value == "fallback"
    assert outcome.detail is not None and "which is neither true nor false" in outcome.detail


@pytest.mark.parametrize("returned", [None, True, 1, "ok", np.True_, [0]])
def test_a_validator_returning_none_or_a_true_value_passes(mode: Mode, returned: Any) -> None:
    @mode.guard("validator", validate=lambda r: returned, fallback=aiguard.Default("fallback"))
    def model(text: str) -> str:
        return "ai"

    outcome = mode.outcome(model, "hi")
    assert outcome.reason is Reason.SERVED and outcome.value == "ai"


# -- feedback --------------------------------------------------------------------------------------


@pytest.fixture
def call_id() -> str:
    """The id of one recorded call, in an in-memory store."""
    aiguard.configure(store=":memory:")

    @aiguard.guard("fb")
    def reply(text: str) -> str:
        return "Thanks, we are on it."

    return reply.outcome("late order").call_id


BAD_FEEDBACK = [
    ("kind", "bogus", "choose one of accepted, edited"),
    ("attributes", [1, 2], "give a mapping of attribute names"),
    ("attributes", {1: "x"}, "give a mapping of attribute names"),
    ("score", 2**70, "must be a finite number from -2**53 to 2**53"),
    ("score", float("nan"), "must be a finite number"),
    ("score", float("inf"), "must be a finite number"),
    ("score", -float("inf"), "must be a finite number"),
    ("score", "5", "must be a finite number"),
    ("comment", object(), "must be text or None"),
    ("comment", "\ud800", "cannot be stored as UTF-8 text"),
    ("by", 42, "must be text or None"),
    ("label", 10**5000, "cannot be stored as JSON"),
    ("label", {"text": "\udfff"}, "cannot be stored as UTF-8 text"),
    ("accepted", "yes", "must be True or False"),
]


@pytest.mark.parametrize(
    ("argument", "value", "problem"),
    BAD_FEEDBACK,
    ids=[f"{argument}-{i}" for i, (argument, _, _) in enumerate(BAD_FEEDBACK)],
)
def test_bad_feedback_fields_are_config_errors(
    call_id: str, argument: str, value: Any, problem: str
) -> None:
    """Each is a ConfigError naming the argument and the value, and nothing is stored."""
    kwargs: dict[str, Any] = {argument: value}
    if argument not in ("score", "accepted"):
        kwargs["score"] = 4  # so that the feedback says something
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.feedback(call_id, **kwargs)
    message = str(info.value)
    assert f"feedback({call_id!r}): {argument}=" in message and problem in message
    if argument != "label" or value != 10**5000:
        assert f"{argument}={value!r}" in message
    assert configured().feedback_rows(call_id=call_id) == []


def test_the_mean_score_stays_finite(call_id: str) -> None:
    """Only finite scores are stored: a `mean_score >= 3` target is judged on real scores."""
    for bad in (float("inf"), float("nan"), 2**70):
        with pytest.raises(aiguard.ConfigError):
            aiguard.feedback(call_id, score=bad)
    aiguard.feedback(call_id, score=2)
    aiguard.flush()
    report = aiguard.report("fb", targets={"fb": ["mean_score >= 3"]})
    assert report.features[0].mean_score == 2
    [(_, value, passed)] = report.targets["fb"]
    assert value == 2 and passed is False


def test_valid_feedback_still_works(call_id: str) -> None:
    fb = aiguard.feedback(
        call_id,
        score=np.float64(4.5),
        attributes={"plan": "pro"},
        comment="quick",
        kind="rated",
        label={"team": "billing"},
    )
    assert fb.score == 4.5 and type(fb.score) is float
    assert fb.attributes == {"plan": "pro"} and fb.kind is aiguard.FeedbackKind.RATED
    [row] = configured().feedback_rows(call_id=call_id)
    assert row["score"] == 4.5 and json.loads(row["attributes"]) == {"plan": "pro"}


# -- control files ---------------------------------------------------------------------------------


def _deep_json(levels: int) -> str:
    return '{"features": {"t": {"reason": ' + "[" * levels + "]" * levels + "}}}"


def test_a_control_file_nested_1000_deep_is_a_config_error(tmp_path: Path) -> None:
    for name, text in [
        ("control.json", _deep_json(1000)),
        ("control.toml", "[features.t]\nreason = " + "[" * 1000 + "]" * 1000 + "\n"),
    ]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(aiguard.ConfigError) as info:
            aiguard.configure(control=path)
        assert (
            str(info.value) == f"control file {str(path)!r} cannot be read: it is nested too deep"
        )


def test_a_poller_keeps_the_last_good_state_when_the_file_becomes_too_deep(
    mode: Mode, tmp_path: Path
) -> None:
    path = tmp_path / "control.json"
    path.write_text(json.dumps({"features": {"t": {"killed": True, "reason": "x"}}}))
    aiguard.configure(control=path, control_interval=0.02)

    @mode.guard("t", fallback=aiguard.Default("fallback"))
    def model(text: str) -> str:
        return "ai"

    assert mode.outcome(model, "a").reason is Reason.KILLED
    path.write_text(_deep_json(1000))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [e for e in aiguard.recent_events() if e.kind is EventKind.CONTROL_ERROR]
        if found:
            break
        time.sleep(0.02)
    assert found and "nested too deep; keeping the last good state" in found[0].reason
    outcome = mode.outcome(model, "a")
    assert outcome.reason is Reason.KILLED and outcome.value == "fallback"


# -- a control URL that cannot be reached ----------------------------------------------------------


def test_an_unreachable_redis_control_url_is_a_config_error() -> None:
    pytest.importorskip("redis")
    url = "redis://127.0.0.1:1/0"
    t0 = time.monotonic()
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.configure(control=url)
    assert time.monotonic() - t0 < 5
    message = str(info.value)
    assert message.startswith(f"control={url!r} cannot be read: ConnectionError")
    assert "127.0.0.1:1" in message


def test_a_control_url_error_hides_the_password() -> None:
    pytest.importorskip("redis")
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.configure(control="redis://user:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in str(info.value)
    assert "control='redis://user:***@127.0.0.1:1/0'" in str(info.value)


def test_a_control_url_redis_cannot_parse_is_a_config_error() -> None:
    pytest.importorskip("redis")
    with pytest.raises(aiguard.ConfigError, match=r"control='redis://h:port/0' is invalid"):
        aiguard.configure(control="redis://h:port/0")


# -- prices ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["1e999999", Decimal("1e999999"), "1e999999999", 10**400, 10**5000, "1e-999999999"],
    ids=["str", "Decimal", "str-huge-exponent", "10**400", "10**5000", "str-tiny"],
)
def test_an_impossible_price_is_a_config_error(value: Any) -> None:
    """Decimal overflow (1e999999 * 10**6) used to escape; prices are at most 10^18."""
    with pytest.raises(aiguard.ConfigError, match="model 'm', field 'input'"):
        aiguard.PriceTable.parse({"models": {"m": {"input": value}}})
    with pytest.raises(aiguard.ConfigError, match=r"ModelPrice\(\.\.\.\): field 'per_call'"):
        aiguard.ModelPrice(per_call=value)
    with pytest.raises(aiguard.ConfigError, match=r"Budget\(limit\)="):
        aiguard.Budget(limit=value)


# == hypothesis ====================================================================================

confidences = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1),
    st.integers(),
    huge_ints,
    st.fractions(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(exclude_categories=())),
    st.none(),
    st.booleans(),
    hostile_objects,
    st.just(np.float64(0.5)),
    st.just(np.array([0.5])),
)


@HYPOTHESIS
@given(confidence=confidences, threshold=st.none() | st.floats(0, 1))
def test_any_confidence_ends_in_an_outcome(confidence: Any, threshold: float | None) -> None:
    """Served with the confidence as a float in [0, 1], or the fallback serves."""

    @aiguard.guard(
        "h-conf",
        confidence=lambda r: confidence,
        threshold=threshold,
        fallback=aiguard.Default("fallback"),
    )
    def model() -> str:
        return "ai"

    outcome = model.outcome()
    if outcome.reason is Reason.SERVED:
        assert outcome.value == "ai" and outcome.confidence is not None
        assert 0.0 <= outcome.confidence <= 1.0
        assert type(outcome.confidence) is float
    else:
        assert outcome.reason in (Reason.INVALID_CONFIDENCE, Reason.LOW_CONFIDENCE)
        assert outcome.value == "fallback" and outcome.source is Source.DEFAULT
        assert outcome.detail


rollout_keys = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=())),
    st.binary(),
    st.integers(),
    huge_ints,
    st.floats(allow_nan=True),
    st.recursive(st.integers() | st.text(max_size=3), lambda c: st.lists(c, max_size=3)),
    hostile_objects,
    st.just(np.array([1, 2])),
    st.just(np.array([])),
    st.none(),
)


@HYPOTHESIS
@given(key=rollout_keys, segment=st.booleans(), callable_key=st.booleans())
def test_any_rollout_key_ends_in_an_outcome(key: Any, segment: bool, callable_key: bool) -> None:
    """In the rollout (served), outside it, or a missing key: the fallback serves as baseline."""

    @aiguard.guard(
        "h-keys",
        rollout=aiguard.Rollout(
            percent=50,
            key=(lambda user: user) if callable_key else "user",
            include={"user": {"vip"}} if segment else None,
        ),
        fallback=aiguard.Default("fallback"),
    )
    def model(user: Any) -> str:
        return "ai"

    outcome = model.outcome(key)
    if outcome.reason is Reason.SERVED:
        assert outcome.value == "ai" and outcome.arm == "ai"
    else:
        assert outcome.reason in (Reason.NOT_IN_ROLLOUT, Reason.MISSING_ROLLOUT_KEY)
        assert outcome.value == "fallback" and outcome.source is Source.BASELINE
        assert outcome.detail


usage_fields = st.sampled_from(
    [
        "input_tokens",
        "output_tokens",
        "prompt_tokens",
        "completion_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "cached_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "model",
        "provider",
        "type",
        "role",
        "usage",
        "prompt_tokens_details",
        "input_tokens_details",
    ]
)
usage_objects = st.dictionaries(usage_fields, anything, max_size=6) | st.dictionaries(
    st.just("usage"), st.dictionaries(usage_fields, anything, max_size=6), min_size=1
)


usage_instances = st.builds(
    aiguard.Usage,
    input_tokens=st.integers() | huge_ints | anything,
    output_tokens=st.integers(),
    cache_read_tokens=st.integers(-5, 5),
    model=st.none() | st.just("m") | anything,
)


@HYPOTHESIS
@given(
    result=usage_objects,
    reader_answer=st.none() | usage_objects | usage_instances | anything,
    custom=st.booleans(),
    score=st.sampled_from([0.9, 0.1]),
)
def test_any_usage_object_ends_in_an_outcome(
    result: dict[str, Any], reader_answer: Any, custom: bool, score: float
) -> None:
    """The model's answer (or the fallback) is served; the usage is a valid Usage or unknown."""
    aiguard.configure(prices={"models": {"m": {"input": "1", "output": "2", "per_call": "0.1"}}})
    answer = {**result, "score": score}

    @aiguard.guard(
        "h-usage",
        model="m",
        confidence="score",
        threshold=0.5,
        usage=(lambda r: reader_answer) if custom else None,
        fallback=aiguard.Default("fallback"),
    )
    def model() -> dict[str, Any]:
        return answer

    outcome = model.outcome()
    if score == 0.9:
        assert outcome.reason is Reason.SERVED and outcome.value is answer
    else:
        assert outcome.reason is Reason.LOW_CONFIDENCE and outcome.value == "fallback"
    usage = outcome.usage
    if usage is not None:
        counts = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
        )
        assert all(type(n) is int and 0 <= n <= 10**30 for n in counts)
        assert usage.model is None or isinstance(usage.model, str)
    assert outcome.cost is None or outcome.cost >= 0


price_fields = st.sampled_from(["input", "cached_input", "cache_write", "output", "per_call"])
prices = st.one_of(
    scalars,
    st.decimals(allow_nan=True, allow_infinity=True, places=None),
    st.from_regex(r"\A-?[0-9]{0,3}(\.[0-9]{0,14})?([eE][-+]?[0-9]{1,10})?\Z"),
)


@HYPOTHESIS
@given(
    entry=st.dictionaries(price_fields | st.text(max_size=4), prices, max_size=4),
    currency=st.just("USD") | anything,
    name=st.text(alphabet=st.characters(exclude_categories=()), max_size=5),
    raw=st.none() | anything,
)
def test_any_price_is_a_table_or_a_config_error(
    entry: dict[str, Any], currency: Any, name: str, raw: Any
) -> None:
    """PriceTable.parse and ModelPrice take any values: a price table, or ConfigError."""
    for build in (
        lambda: aiguard.PriceTable.parse({"currency": currency, "models": {name: entry}}),
        lambda: aiguard.PriceTable.parse(raw),
        lambda: aiguard.PriceTable(models={name: entry}),
    ):
        table, _ = _attempt(build)
        for model in table.models if table is not None else ():
            cost = table.cost(model, aiguard.Usage(input_tokens=10**6, output_tokens=10**6))
            assert cost is not None and cost >= 0
    price, _ = _attempt(lambda: aiguard.ModelPrice(**entry))
    if price is not None:
        assert all(type(r) is int and r >= 0 for r in price.pico_rates())


durations = st.one_of(
    scalars,
    st.floats(min_value=1e-3, max_value=1e3),
    st.timedeltas(),
    st.just(threading.TIMEOUT_MAX),
    st.just(threading.TIMEOUT_MAX * 2),
)


@HYPOTHESIS
@given(value=durations)
def test_any_duration_is_accepted_and_works_or_is_a_config_error(value: Any) -> None:
    """guard(timeout=...): ConfigError naming it, or a guard whose calls end in an Outcome."""
    for build, name in (
        (lambda: aiguard.Budget(limit="1", per=value), "Budget(per="),
        (lambda: aiguard.guard("h-slo", latency_slo=value), "latency_slo="),
    ):
        _, error = _attempt(build)
        assert error is None or name in error
    decorator, error = _attempt(
        lambda: aiguard.guard("h-timeout", timeout=value, fallback=aiguard.Default("fallback"))
    )
    if decorator is None:
        assert error is not None and "timeout=" in error
        return

    @decorator
    def model() -> str:
        return "ai"

    outcome = model.outcome()
    if outcome.reason is Reason.SERVED:
        assert outcome.value == "ai"
    else:  # a timeout so short that the worker could not answer in time
        assert outcome.reason is Reason.TIMEOUT and outcome.value == "fallback"


feedback_fields = st.fixed_dictionaries(
    {},
    optional={
        "score": anything | st.floats(-5, 5),
        "attributes": anything | st.dictionaries(st.text(max_size=4), anything, max_size=3),
        "comment": anything,
        "label": anything,
        "kind": anything | st.sampled_from([k.value for k in aiguard.FeedbackKind]),
        "accepted": anything,
        "by": anything,
        "edited": anything,
    },
)


@WITH_FIXTURE
@given(fields=feedback_fields)
def test_any_feedback_is_stored_or_a_config_error(call_id: str, fields: dict[str, Any]) -> None:
    """feedback() with any values: a stored Feedback, or a ConfigError naming the call."""
    before = len(configured().feedback_rows(call_id=call_id))
    fb, error = _attempt(lambda: aiguard.feedback(call_id, **fields))
    if fb is None:
        assert error is not None and error.startswith(f"feedback({call_id!r})")
        assert len(configured().feedback_rows(call_id=call_id)) == before
        return
    assert fb.call_id == call_id
    assert fb.score is None or math.isfinite(fb.score)
    rows = configured().feedback_rows(call_id=call_id)
    assert len(rows) == before + 1 and rows[-1]["id"] == fb.id


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(exclude_categories=()), max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
feature_controls = st.dictionaries(
    st.sampled_from(["killed", "reason", "by", "rollout", "threshold"]) | st.text(max_size=6),
    json_values,
    max_size=4,
)
control_shaped = st.fixed_dictionaries(
    {},
    optional={
        "all": feature_controls | json_values,
        "features": st.dictionaries(st.text(max_size=8), feature_controls | json_values)
        | json_values,
    },
)


def _toml_value(value: Any) -> str:
    """``value`` in TOML's inline syntax (None, which TOML lacks, as a string)."""
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float | str):
        return json.dumps(value)  # JSON strings are TOML basic strings
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _to_toml(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in data.items())


@HYPOTHESIS
@given(
    text=st.text(alphabet=st.characters(exclude_categories=()))
    | st.binary()
    | st.integers(0, 3000).map(_deep_json),  # nested up to 3,000 levels
    data=control_shaped | st.dictionaries(st.text(max_size=6), json_values),
    suffix=st.sampled_from([".toml", ".json"]),
)
def test_any_control_file_is_a_state_or_a_config_error_naming_it(
    tmp_path_factory: pytest.TempPathFactory, text: str | bytes, data: dict[str, Any], suffix: str
) -> None:
    """Arbitrary text, and arbitrary nested data in the file's format: a ControlState, or a
    ConfigError naming the file."""
    path = tmp_path_factory.mktemp("control") / f"control{suffix}"
    shaped = json.dumps(data) if suffix == ".json" else _to_toml(data)
    contents = [
        text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"),
        shaped.encode("utf-8", "surrogatepass"),
    ]
    for content in contents:
        path.write_bytes(content)
        state, error = _attempt(lambda: read_control_file(path))
        if state is None:
            assert error is not None and error.startswith(f"control file {str(path)!r}")
        else:
            assert isinstance(state, aiguard.ControlState)


def test_a_config_file_nested_too_deep_is_a_config_error(tmp_path: Path) -> None:
    """load_config() on a file nested 1,000 levels deep: ConfigError naming the file."""
    path = tmp_path / "deep.json"
    path.write_text('{"features": ' + "[" * 1000 + "]" * 1000 + "}")
    with pytest.raises(aiguard.ConfigError, match="nested too deep"):
        aiguard.load_config(path)


def test_an_unreadable_control_source_changes_nothing(tmp_path: Path) -> None:
    """configure(store=..., prices=..., control=<unreachable>) raises ConfigError and applies
    none of its settings: the store, prices and control sources stay as they were."""
    before_store = tmp_path / "before.db"
    aiguard.configure(store=before_store)
    with pytest.raises(aiguard.ConfigError, match="cannot be read"):
        aiguard.configure(
            store=tmp_path / "after.db",
            prices={"models": {"m": {"per_call": "1"}}},
            control="redis://127.0.0.1:1/0",
        )
    from aiguard.store import configured

    assert str(before_store) in repr(configured())
    from aiguard._runtime.state import runtime

    assert runtime.prices is None
