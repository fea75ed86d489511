"""The guard decorator: serving, routing, timeouts, errors; sync and async side by side."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import threading
import time
from datetime import timedelta
from typing import Any

import pydantic
import pytest
from _modes import Mode

import aiguard
from aiguard import Reason, Source


@dataclasses.dataclass
class Triage:
    label: str
    score: Any


def test_served_result_is_returned_unchanged(mode: Mode) -> None:
    """A result at or above the threshold is the very object the model returned."""
    result = Triage("billing", 0.9)

    @mode.guard("t", confidence="score", threshold=0.8)
    def triage(ticket: str) -> Triage:
        return result

    assert mode.call(triage, "invoice") is result
    outcome = mode.last_outcome()
    assert outcome is not None
    assert outcome.value is result
    assert outcome.source is Source.MODEL and outcome.reason is Reason.SERVED
    assert outcome.confidence == 0.9 and outcome.threshold == 0.8
    assert outcome.feature == "t"
    assert outcome.latency >= outcome.model_latency >= 0  # type: ignore[operator]
    assert abs(outcome.started_at - time.time()) < 5
    outcome = mode.outcome(triage, "invoice")
    assert outcome.value is result and outcome.reason is Reason.SERVED


def test_threshold_equal_is_served_below_is_not(mode: Mode) -> None:
    """Confidence equal to the threshold is served; just below goes to the fallback."""

    @mode.guard(
        "t", confidence="score", threshold=0.8, fallback=aiguard.Default(Triage("other", 1.0))
    )
    def triage(score: float) -> Triage:
        return Triage("bug", score)

    assert mode.outcome(triage, 0.8).source is Source.MODEL
    low = mode.outcome(triage, 0.7999)
    assert low.source is Source.DEFAULT and low.reason is Reason.LOW_CONFIDENCE
    assert low.value == Triage("other", 1.0)
    assert low.confidence == 0.7999
    assert low.model_result == Triage("bug", 0.7999)


@pytest.mark.parametrize(
    ("confidence", "expected"),
    [
        ("score", 0.9),  # attribute
        (lambda r: r.score, 0.9),  # callable
    ],
)
def test_confidence_from_attribute_or_callable(
    mode: Mode, confidence: Any, expected: float
) -> None:
    """confidence= may name an attribute or be a callable on the result."""

    @mode.guard("t", confidence=confidence, threshold=0.5)
    def triage() -> Triage:
        return Triage("bug", 0.9)

    assert mode.outcome(triage).confidence == expected


def test_confidence_from_mapping_key(mode: Mode) -> None:
    """confidence= may name a key of a dict (or any Mapping) result."""

    @mode.guard("t", confidence="p", threshold=0.5)
    def triage() -> dict[str, Any]:
        return {"label": "bug", "p": 0.75}

    assert mode.outcome(triage).confidence == 0.75


@pytest.mark.parametrize(
    ("score", "detail"),
    [
        (float("nan"), "outside [0, 1]"),
        (1.5, "outside [0, 1]"),
        (-0.1, "outside [0, 1]"),
        ("0.9", "not a number"),
        (True, "not a number"),
        (None, "missing"),
        ([0.9], "not a number"),
    ],
)
def test_invalid_confidence_is_never_served(mode: Mode, score: Any, detail: str) -> None:
    """Missing, NaN, out-of-range or wrongly typed confidences go to the fallback chain."""

    @mode.guard("t", confidence="score", threshold=0.1, fallback=aiguard.Default("fallback"))
    def triage() -> Any:
        return Triage("bug", score)

    outcome = mode.outcome(triage)
    assert outcome.value == "fallback"
    assert outcome.reason is Reason.INVALID_CONFIDENCE
    assert outcome.confidence is None
    assert outcome.detail is not None and detail in outcome.detail


def test_missing_confidence_attribute_is_invalid_confidence(mode: Mode) -> None:
    """A result without the confidence attribute or key is not served."""

    @mode.guard("t", confidence="score", fallback=aiguard.Default(None))
    def triage() -> object:
        return object()

    outcome = mode.outcome(triage)
    assert outcome.reason is Reason.INVALID_CONFIDENCE
    assert outcome.detail == "confidence 'score' is missing"


def test_confidence_extractor_that_raises_is_invalid_confidence(mode: Mode) -> None:
    """A confidence callable that raises does not break the call."""

    @mode.guard("t", confidence=lambda r: r["nope"], fallback=aiguard.Default("d"))
    def triage() -> dict[str, float]:
        return {}

    outcome = mode.outcome(triage)
    assert outcome.reason is Reason.INVALID_CONFIDENCE and outcome.value == "d"


def test_numpy_and_int_confidences_are_numbers(mode: Mode) -> None:
    """numpy floats and plain ints in [0, 1] are valid confidences."""
    import numpy as np

    scores = iter([np.float32(0.9), np.float64(0.95), 1])

    @mode.guard("t", confidence="score", threshold=0.5)
    def triage() -> Triage:
        return Triage("x", next(scores))

    confidences = [mode.outcome(triage).confidence for _ in range(3)]
    assert confidences == pytest.approx([0.9, 0.95, 1.0])


def test_low_confidence_without_fallback_raises_not_served_with_outcome(mode: Mode) -> None:
    """With no fallback, a low-confidence result raises NotServed carrying the Outcome."""

    @mode.guard("t", confidence="score", threshold=0.8)
    def triage() -> Triage:
        return Triage("bug", 0.3)

    with pytest.raises(aiguard.NotServed) as info:
        mode.call(triage)
    outcome = info.value.outcome
    assert outcome.reason is Reason.LOW_CONFIDENCE
    assert outcome.confidence == 0.3 and outcome.source is None
    assert outcome.model_result == Triage("bug", 0.3)
    assert "0.3 < threshold 0.8" in str(info.value)
    assert mode.last_outcome() is outcome


def test_model_exception_goes_to_fallback_with_reason_error(mode: Mode) -> None:
    """An exception from the model is recorded and the fallback answers."""
    boom = RuntimeError("model down")

    @mode.guard("t", fallback=aiguard.Default("d"))
    def triage() -> str:
        raise boom

    outcome = mode.outcome(triage)
    assert outcome.value == "d" and outcome.reason is Reason.ERROR
    assert outcome.exception is boom and outcome.source is Source.DEFAULT


def test_model_exception_without_fallback_propagates_unchanged(mode: Mode) -> None:
    """With no fallback left, the model's own exception object propagates."""
    boom = KeyError("k")

    @mode.guard("t")
    def triage() -> str:
        raise boom

    with pytest.raises(KeyError) as info:
        mode.call(triage)
    assert info.value is boom
    outcome = mode.last_outcome()
    assert outcome is not None
    assert outcome.exception is boom and outcome.reason is Reason.ERROR


def test_exceptions_outside_catch_propagate_without_fallback(mode: Mode) -> None:
    """Only the exception types in catch= go to the fallback chain."""
    calls: list[str] = []

    def rules(kind: type[Exception]) -> str:
        calls.append("rules")
        return "r"

    @mode.guard("t", catch=ConnectionError, fallback=rules)
    def triage(kind: type[Exception]) -> str:
        raise kind("x")

    assert mode.call(triage, ConnectionRefusedError) == "r"
    with pytest.raises(ValueError, match="x"):
        mode.call(triage, ValueError)
    assert calls == ["rules"]
    last = mode.last_outcome()
    assert last is not None and isinstance(last.exception, ValueError)


def test_wrong_call_arguments_raise_not_fallback(mode: Mode) -> None:
    """A call whose arguments do not fit the function is the caller's bug: TypeError raises."""

    @mode.guard("t", fallback=aiguard.Default("d"))
    def triage(ticket: str) -> str:
        return ticket

    with pytest.raises(TypeError):
        mode.call(triage, 1, 2)


def test_type_error_inside_the_model_goes_to_fallback(mode: Mode) -> None:
    """A TypeError raised by the model's own code is a model failure like any other."""

    @mode.guard("t", fallback=aiguard.Default("d"))
    def f(ticket: str) -> str:
        return ticket + 1  # type: ignore[operator]

    assert mode.call(f, "x") == "d"
    assert mode.last_outcome().reason is Reason.ERROR  # type: ignore[union-attr]


def test_base_exceptions_are_never_caught(mode: Mode) -> None:
    """KeyboardInterrupt and friends pass straight through; catch= cannot ask otherwise."""

    @mode.guard("t", fallback=aiguard.Default("d"))
    def triage() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mode.call(triage)
    with pytest.raises(aiguard.ConfigError, match="catch=<class 'BaseException'> is invalid"):
        mode.guard("t", catch=BaseException)


def test_timeout_stops_waiting_and_falls_back(mode: Mode) -> None:
    """Over its timeout a call is interrupted (sync: an exception raised in its thread) or
    cancelled (async); the fallback answers."""
    release, cancelled = threading.Event(), threading.Event()
    slow = mode.blocker(release, "model", cancelled=cancelled)
    guarded = mode.guard("t", timeout=0.05, fallback=aiguard.Default("late"))(slow)

    started = time.perf_counter()
    outcome = mode.outcome(guarded)
    elapsed = time.perf_counter() - started
    release.set()
    assert outcome.value == "late" and outcome.reason is Reason.TIMEOUT
    assert outcome.model_latency is None
    assert elapsed < 1.0
    assert cancelled.is_set()  # the function saw the interruption: its own clean-up ran


def test_timeout_without_fallback_raises_model_timeout(mode: Mode) -> None:
    """With no fallback, a timed-out call raises ModelTimeout (a TimeoutError)."""
    release = threading.Event()
    guarded = mode.guard("t", timeout=timedelta(milliseconds=30))(mode.blocker(release, "model"))

    with pytest.raises(TimeoutError) as info:
        mode.call(guarded)
    release.set()
    assert isinstance(info.value, aiguard.ModelTimeout)
    assert info.value.outcome.reason is Reason.TIMEOUT


def test_timeout_serves_a_fast_call_and_keeps_context(mode: Mode) -> None:
    """Under a timeout, a fast call is served and sees the caller's contextvars."""
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    @mode.guard("t", timeout=2)
    def fast() -> str:
        return var.get()

    mode.set_var(var, "caller")
    assert mode.call(fast) == "caller"


def test_model_own_timeout_error_is_reason_timeout_and_propagates(mode: Mode) -> None:
    """A TimeoutError raised by the model itself is a timeout; alone, it propagates as is."""
    err = TimeoutError("socket")

    @mode.guard("t", timeout=1)
    def triage() -> str:
        raise err

    with pytest.raises(TimeoutError) as info:
        mode.call(triage)
    assert info.value is err
    last = mode.last_outcome()
    assert last is not None and last.reason is Reason.TIMEOUT


async def test_outer_cancellation_is_not_a_timeout() -> None:
    """Cancelling the caller's task cancels the guarded call; no fallback runs."""
    ran: list[str] = []

    @aiguard.guard("t", timeout=5, fallback=lambda: ran.append("fallback"))
    async def slow() -> str:
        await asyncio.sleep(5)
        return "model"

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ran == []


def test_validate_callable_rejects_with_invalid_output(mode: Mode) -> None:
    """A validator returning False or raising sends the result to the fallback."""

    def has_label(r: Triage) -> bool:
        return bool(r.label)

    def not_other(r: Triage) -> None:
        if r.label == "other":
            raise ValueError("other is not allowed")

    @mode.guard("t", validate=[has_label, not_other], fallback=aiguard.Default("d"))
    def triage(label: str) -> Triage | str:
        return Triage(label, 1.0)

    assert mode.outcome(triage, "bug").reason is Reason.SERVED
    empty = mode.outcome(triage, "")
    assert empty.reason is Reason.INVALID_OUTPUT and "has_label returned False" in str(empty.detail)
    other = mode.outcome(triage, "other")
    assert other.reason is Reason.INVALID_OUTPUT and "other is not allowed" in str(other.detail)


def test_validate_with_pydantic_model_type(mode: Mode) -> None:
    """A pydantic model type validates dict results and objects with attributes."""

    class Answer(pydantic.BaseModel):
        label: str
        score: float

    @mode.guard("t", validate=Answer, fallback=aiguard.Default("d"))
    def triage(result: Any) -> Any:
        return result

    assert mode.call(triage, {"label": "bug", "score": 0.5}) == {"label": "bug", "score": 0.5}
    assert mode.call(triage, Triage("bug", 0.5)) == Triage("bug", 0.5)
    assert mode.call(triage, {"label": "bug"}) == "d"
    assert mode.last_outcome().reason is Reason.INVALID_OUTPUT  # type: ignore[union-attr]


def test_call_ids_are_unique_and_stable(mode: Mode) -> None:
    """Every call gets its own id; an Outcome's id does not change when read again."""

    @mode.guard("t")
    def f() -> int:
        return 1

    ids = set()
    for _ in range(1000):
        mode.call(f)
        first = mode.last_outcome()
        assert first is not None
        assert mode.last_outcome() is first
        ids.add(first.call_id)
    assert len(ids) == 1000
    assert all(i.startswith("ag_") for i in ids)


def test_signature_and_metadata_are_kept() -> None:
    """inspect sees the wrapped function's signature, name and docstring."""

    def triage(ticket: str, *, lang: str = "en") -> str:
        """Triage a ticket."""
        return ticket

    guarded = aiguard.guard("t")(triage)
    assert inspect.signature(guarded) == inspect.signature(triage)
    assert inspect.signature(guarded.outcome) == inspect.signature(triage)
    assert guarded.__name__ == "triage" and guarded.__doc__ == "Triage a ticket."
    assert guarded.feature == "t"


def test_async_wrapper_is_a_coroutine_function() -> None:
    """Frameworks that check iscoroutinefunction still see an async function."""

    @aiguard.guard("t")
    async def f() -> int:
        return 1

    assert inspect.iscoroutinefunction(f)
    assert inspect.iscoroutinefunction(f.outcome)
    assert asyncio.iscoroutinefunction(f)


def test_guarded_methods_bind_self(mode: Mode) -> None:
    """Guarding a method works; its outcome is reachable via the class or last_outcome()."""

    class Service:
        def __init__(self) -> None:
            self.prefix = "svc"

        @mode.guard("t")
        def answer(self, q: str) -> str:
            return f"{self.prefix}:{q}"

    s = Service()
    assert mode.call(s.answer, "x") == "svc:x"
    assert mode.outcome(Service.answer, s, "y").value == "svc:y"


@pytest.mark.parametrize("bad", ["stream", "buffered", 1, 0.5])
def test_stream_mode_is_checked_at_decoration(bad: Any) -> None:
    """stream= takes 'pass', 'buffer', True, False or None: anything else names the value."""
    with pytest.raises(aiguard.ConfigError, match=rf"stream={bad!r} is invalid"):
        aiguard.guard("t", stream=bad)


def test_first_chunk_timeout_is_checked_at_decoration() -> None:
    with pytest.raises(aiguard.ConfigError, match="first_chunk_timeout=-1 is invalid"):
        aiguard.guard("t", first_chunk_timeout=-1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confidence": "s", "threshold": 1.5}, "threshold=1.5 is invalid"),
        ({"confidence": "s", "threshold": -0.1}, "threshold=-0.1 is invalid"),
        ({"confidence": "s", "threshold": "0.8"}, "threshold='0.8' is invalid"),
        ({"confidence": "s", "threshold": float("nan")}, "threshold=nan is invalid"),
        ({"threshold": 0.5}, "threshold=0.5 needs confidence="),
        ({"timeout": 0}, "timeout=0 is invalid"),
        ({"timeout": -1}, "timeout=-1 is invalid"),
        ({"timeout": "1s"}, "timeout='1s' is invalid"),
        ({"confidence": 3}, "confidence=3 is invalid"),
        ({"catch": "ValueError"}, "catch='ValueError' is invalid"),
        ({"fallback": [42]}, "fallback[0]=42 is invalid"),
        ({"fallback": [aiguard.Default]}, "fallback[0]=Default is a class"),
        ({"validate": [1]}, "validate[0]=1 is invalid"),
    ],
)
def test_bad_arguments_fail_at_decoration_naming_field_and_value(
    kwargs: dict[str, Any], message: str
) -> None:
    """Invalid guard() arguments raise ConfigError naming the feature, field and value."""
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.guard("ticket-triage", **kwargs)(lambda: 1)
    assert message in str(info.value)
    assert "'ticket-triage'" in str(info.value)


@pytest.mark.parametrize("feature", ["", "  ", " x", 3, None])
def test_bad_feature_names_are_refused(feature: Any) -> None:
    """The feature name must be a non-empty string."""
    with pytest.raises(aiguard.ConfigError, match="feature="):
        aiguard.guard(feature)


def test_config_error_is_a_value_error() -> None:
    """ConfigError can be caught as ValueError too."""
    with pytest.raises(ValueError, match="threshold"):
        aiguard.guard("t", confidence="s", threshold=2)


def test_observer_failure_does_not_fail_the_call(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """An internal failure (here an outcome observer) is logged once and counted."""
    from aiguard._runtime import errors
    from aiguard._runtime.state import runtime as state

    def broken(outcome: Any) -> None:
        raise RuntimeError("observer bug")

    state.observers = (broken,)

    @mode.guard("t")
    def f() -> int:
        return 1

    with caplog.at_level("WARNING", logger="aiguard"):
        assert [mode.call(f), mode.call(f), mode.call(f)] == [1, 1, 1]
    assert sum("observer bug" in r.getMessage() for r in caplog.records) == 1
    assert errors.counts()["outcome observer"] == 3


def test_strict_mode_reraises_internal_failures(mode: Mode) -> None:
    """Under aiguard.testing.strict(), internal failures surface in tests."""
    from aiguard._runtime.state import runtime as state
    from aiguard.testing import strict

    def broken(outcome: Any) -> None:
        raise RuntimeError("observer bug")

    state.observers = (broken,)

    @mode.guard("t")
    def f() -> int:
        return 1

    with strict(), pytest.raises(RuntimeError, match="observer bug"):
        mode.call(f)


def test_last_outcome_is_per_thread() -> None:
    """Each thread sees the outcome of its own latest call."""

    @aiguard.guard("t")
    def echo(x: int) -> int:
        return x

    echo(0)
    seen: dict[int, Any] = {}

    def worker(i: int) -> None:
        seen[i] = aiguard.last_outcome()
        echo(i)
        seen[i] = (seen[i], aiguard.last_outcome().value)  # type: ignore[union-attr]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(seen[i] == (None, i) for i in range(1, 5))
    assert aiguard.last_outcome().value == 0  # type: ignore[union-attr]
