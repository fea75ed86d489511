"""Metrics: both generations of the GenAI conventions, a duration point for every model call,
the guarded call's own duration, and aiguard's counters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from _modes import Mode
from clients import MESSAGE, anthropic_client, openai_client

import aiguard
from aiguard._runtime import semconv
from aiguard.testing import capture_telemetry

FAST = aiguard.Retry(attempts=3, backoff=0.001, jitter=False)


@pytest.fixture
def latest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt in to the latest experimental GenAI conventions (read when the meters are made)."""
    monkeypatch.setenv(semconv.OPT_IN, f"http/dup, {semconv.LATEST}")


def names(telemetry: Any) -> set[str]:
    data = telemetry._metrics.get_metrics_data()
    return {
        m.name
        for rm in (data.resource_metrics if data is not None else [])
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


def test_the_current_generation_by_default(mode: Mode) -> None:
    """Default: gen_ai.client.operation.duration (with the feature) and gen_ai.client.token.usage
    by gen_ai.token.type; none of the latest generation's names."""
    with capture_telemetry() as telemetry:
        client = openai_client()

        @mode.guard("gen-old", model="gpt-4.1-mini")
        def f() -> Any:
            return client.chat.completions.create(model="gpt-4.1-mini", messages=[])

        mode.call(f)
        [duration] = telemetry.metric_points("gen_ai.client.operation.duration")
        tokens = telemetry.metric_points("gen_ai.client.token.usage")
        emitted = names(telemetry)
    assert duration.attributes["aiguard.feature"] == "gen-old"
    assert duration.attributes["gen_ai.request.model"] == "gpt-4.1-mini"
    assert {p.attributes["gen_ai.token.type"]: p.sum for p in tokens} == {
        "input": 1200,
        "output": 80,
    }
    assert not {n for n in emitted if n.startswith("gen_ai.client.inference.")}
    assert "aiguard.call.duration" in emitted


def test_the_latest_generation_when_opted_in(mode: Mode, latest: None) -> None:
    """OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental: the inference duration, usage
    counters by modality (unknown), per-operation token histograms, cache writes; not the old
    names."""
    with capture_telemetry() as telemetry:
        client = anthropic_client(MESSAGE)

        @mode.guard("gen-new", model="claude-test-1")
        def f() -> Any:
            return client.messages.create(model="claude-test-1", max_tokens=5, messages=[])

        mode.call(f)
        outcome = mode.outcome(f)
        [duration] = telemetry.metric_points("gen_ai.client.inference.duration")
        usage = {
            name: telemetry.metric_points(f"gen_ai.client.inference.usage.{name}")
            for name in ("input_tokens", "output_tokens", "cache_read.input_tokens",
                         "cache_write.input_tokens")
        }  # fmt: skip
        [per_call] = telemetry.metric_points("gen_ai.client.inference.operation.input_tokens")
        emitted = names(telemetry)
    assert duration.count == 2 and duration.attributes["aiguard.feature"] == "gen-new"
    [inputs] = usage["input_tokens"]
    assert inputs.attributes["gen_ai.token.modality"] == "unknown"
    assert inputs.attributes["gen_ai.provider.name"] == "anthropic"
    assert outcome.usage is not None and outcome.usage.cache_write_tokens == 50
    assert inputs.value == 2 * outcome.usage.input_tokens  # cache reads and writes included
    assert [p.value for p in usage["cache_write.input_tokens"]] == [100]
    assert [p.value for p in usage["cache_read.input_tokens"]] == [600]
    assert per_call.count == 2
    assert "gen_ai.client.operation.duration" not in emitted
    assert "gen_ai.client.token.usage" not in emitted


def test_a_timeout_is_a_duration_point(mode: Mode) -> None:
    """aiguard's own timeout: a point with error.type=timeout, as long as the wait (the
    Outcome's model_latency stays None, as documented); the guarded call has its own point."""
    with capture_telemetry() as telemetry:
        fn = mode.guard("m-timeout", timeout=0.05, fallback=aiguard.Default("late"))(
            mode.sleeper(1.0, "never")
        )
        outcome = mode.outcome(fn)
        [point] = telemetry.metric_points("gen_ai.client.operation.duration")
        [call] = telemetry.metric_points("aiguard.call.duration")
    assert outcome.model_latency is None
    assert point.attributes["error.type"] == "timeout"
    assert 0.04 <= point.sum < 0.5
    assert dict(call.attributes) == {
        "aiguard.feature": "m-timeout", "aiguard.source": "default", "aiguard.reason": "timeout"
    }  # fmt: skip
    assert call.sum >= point.sum


def test_each_retried_try_is_a_model_call(mode: Mode) -> None:
    """Two failed tries then an answer: three duration points, the failed ones with their error
    type, the last one timed on its own (not from the call's start)."""
    calls: list[float] = []

    def model() -> str:
        calls.append(time.perf_counter())
        if len(calls) == 1:
            time.sleep(0.1)
            raise ConnectionError("reset")
        if len(calls) == 2:
            raise TimeoutError("read timed out")
        return "answer"

    with capture_telemetry() as telemetry:
        fn = mode.guard("m-retry", retry=FAST)(model)
        assert mode.call(fn) == "answer"
        points = telemetry.metric_points("gen_ai.client.operation.duration")
    by_error = {p.attributes.get("error.type"): p for p in points}
    assert {k: p.count for k, p in by_error.items()} == {
        "ConnectionError": 1, "TimeoutError": 1, None: 1
    }  # fmt: skip
    assert by_error["ConnectionError"].sum >= 0.1
    assert by_error[None].sum < 0.05  # the last try alone


def test_calls_that_never_reach_the_model_have_no_duration_point(mode: Mode) -> None:
    """Killed: no model duration point; the call's own duration and the calls counter count it."""
    with capture_telemetry() as telemetry:

        @mode.guard("m-killed", fallback=aiguard.Default("off"))
        def f() -> str:
            return "model"

        aiguard.kill("m-killed", reason="test")
        assert mode.call(f) == "off"
        assert telemetry.metric_points("gen_ai.client.operation.duration") == []
        [call] = telemetry.metric_points("aiguard.call.duration")
        [count] = telemetry.metric_points("aiguard.calls")
    assert call.attributes["aiguard.reason"] == "killed" and count.value == 1


def test_the_rollout_arm_is_on_the_calls_counter(mode: Mode) -> None:
    """A call outside the rollout counts under its arm; no arm attribute on the durations."""
    with capture_telemetry() as telemetry:

        @mode.guard(
            "m-arm",
            rollout=aiguard.Rollout(percent=0, key=lambda: "k"),
            fallback=aiguard.Default("baseline"),
        )
        def f() -> str:
            return "model"

        outcome = mode.outcome(f)
        [count] = telemetry.metric_points("aiguard.calls")
        [call] = telemetry.metric_points("aiguard.call.duration")
    assert outcome.arm is not None
    assert count.attributes["aiguard.rollout.arm"] == outcome.arm
    assert "aiguard.rollout.arm" not in call.attributes


def test_unknown_cost_calls_are_counted(mode: Mode) -> None:
    """With no price table a model call's cost is unknown: aiguard.cost.unknown counts it by
    feature, and aiguard.cost has nothing for it."""
    with capture_telemetry() as telemetry:

        @mode.guard("m-unpriced", model="m-x")
        def f() -> str:
            return "answer"

        mode.call(f)
        mode.call(f)
        [unknown] = telemetry.metric_points("aiguard.cost.unknown")
        cost = telemetry.metric_points("aiguard.cost")
    assert dict(unknown.attributes) == {"aiguard.feature": "m-unpriced"}
    assert unknown.value == 2 and cost == []


def test_a_stream_is_timed_whole_and_its_first_chunk_apart(latest: None) -> None:
    """A guarded stream: one inference duration point to its last chunk, and the time to first
    chunk in its own histogram (the latest conventions define one)."""

    def story() -> Iterator[str]:
        yield "a"
        time.sleep(0.1)
        yield "b"

    with capture_telemetry() as telemetry:
        fn = aiguard.guard("m-stream")(story)
        assert list(fn()) == ["a", "b"]
        [duration] = telemetry.metric_points("gen_ai.client.inference.duration")
        [first] = telemetry.metric_points("gen_ai.client.inference.time_to_first_chunk")
    assert duration.sum >= 0.1
    assert first.sum < 0.05 and first.attributes["aiguard.feature"] == "m-stream"


def test_many_calls_keep_one_point_per_attribute_set(mode: Mode) -> None:
    """The attribute sets carry no call ids: 20 calls make one point per instrument."""
    with capture_telemetry() as telemetry:

        @mode.guard("m-many", model="m-y")
        def f() -> str:
            return "answer"

        for _ in range(20):
            mode.call(f)
        for name in ("gen_ai.client.operation.duration", "aiguard.call.duration",
                     "aiguard.calls"):  # fmt: skip
            [point] = telemetry.metric_points(name)
            assert "aiguard.call_id" not in point.attributes
