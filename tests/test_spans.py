"""The spans an SRE sees: a CLIENT span only for a model call that happened, the model's failure
an error where error views look (status and exception event) while a call a fallback answered is
not an error, attributes known before the call set at span start (for samplers), the response's
id, finish reasons and server, and both generations of the GenAI conventions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
from _modes import Mode
from llm_server import LLMServer, Reply, async_openai_client, openai_client
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

import aiguard
from aiguard._runtime import semconv
from aiguard.testing import capture_telemetry


class Recording(Sampler):
    """Samples everything, and keeps what each span had at its start."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, SpanKind | None, dict[str, Any]]] = []

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, kind: SpanKind | None = None,
        attributes: Any = None, links: Sequence[Any] | None = None, trace_state: Any = None,
    ) -> SamplingResult:  # fmt: skip
        self.seen.append((name, kind, dict(attributes or {})))
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "recording"


@contextlib.contextmanager
def sampled() -> Iterator[tuple[Recording, InMemorySpanExporter]]:
    """A TracerProvider with a recording sampler, for the block (tests only: private globals)."""
    sampler, exporter = Recording(), InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = otel_trace._TRACER_PROVIDER, otel_trace._TRACER_PROVIDER_SET_ONCE
    otel_trace._TRACER_PROVIDER_SET_ONCE = Once()
    otel_trace._TRACER_PROVIDER = None
    otel_trace.set_tracer_provider(provider)
    try:
        yield sampler, exporter
    finally:
        provider.shutdown()
        otel_trace._TRACER_PROVIDER, otel_trace._TRACER_PROVIDER_SET_ONCE = saved


def test_a_served_call_is_one_client_span_with_its_attributes_at_start(mode: Mode) -> None:
    with sampled() as (sampler, exporter):
        fn = mode.guard("s-served", model="m-1", provider="openai")(lambda: "answer")
        mode.call(fn)
    [span] = exporter.get_finished_spans()
    assert (span.name, span.kind) == ("chat m-1", SpanKind.CLIENT)
    assert span.status.status_code is StatusCode.UNSET
    [(name, kind, at_start)] = sampler.seen
    assert (name, kind) == ("chat m-1", SpanKind.CLIENT)
    assert at_start == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m-1",
        "aiguard.feature": "s-served",
    }


@pytest.mark.parametrize("how", ["killed", "not_in_rollout", "auto_killed"])
def test_a_call_that_never_reaches_the_model_has_no_client_span(mode: Mode, how: str) -> None:
    kwargs: dict[str, Any] = {"model": "m-1", "fallback": aiguard.Default("fallback")}
    if how == "not_in_rollout":
        kwargs["rollout"] = aiguard.Rollout(percent=0, key="user")
    if how == "auto_killed":
        kwargs["breaker"] = aiguard.Breaker(max_error_rate=0.5, min_calls=2, window=2)

    def model(user: str = "u") -> str:
        raise ConnectionError("down")

    fn = mode.guard(f"s-{how}", **kwargs)(model)
    if how == "killed":
        aiguard.kill(f"s-{how}", reason="test")
    if how == "auto_killed":
        mode.call(fn, "u"), mode.call(fn, "u")  # trips the breaker
    with sampled() as (sampler, exporter):
        assert mode.call(fn, "u") == "fallback"
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if not s.name.startswith("aiguard.fallback")]
    [call] = calls
    assert (call.name, call.kind) == (f"aiguard s-{how}", SpanKind.INTERNAL)
    assert not [k for k in (call.attributes or {}) if k.startswith("gen_ai.")]
    assert dict(call.attributes or {})["aiguard.reason"] == how
    assert call.status.status_code is StatusCode.UNSET  # the fallback answered
    assert all(kind is not SpanKind.CLIENT for _, kind, _ in sampler.seen)


def test_a_model_failure_is_an_error_the_answered_call_is_not(mode: Mode) -> None:
    def model() -> str:
        raise ConnectionError("refused: token sk-live-123 rejected")

    with capture_telemetry() as telemetry:
        fn = mode.guard("s-fail", model="m-1", fallback=aiguard.Default("fallback"))(model)
        assert mode.call(fn) == "fallback"
    spans = {s.name: s for s in telemetry.spans()}
    model_span, call = spans["chat m-1"], spans["aiguard s-fail"]
    assert model_span.kind is SpanKind.CLIENT and call.kind is SpanKind.INTERNAL
    assert model_span.status.status_code is StatusCode.ERROR
    [event] = model_span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ConnectionError"
    assert "sk-live" not in str(event.attributes.get("exception.message"))  # type only by default
    assert call.status.status_code is StatusCode.UNSET
    assert call.context.trace_id == model_span.context.trace_id
    default = spans["aiguard.fallback default"]
    assert default.parent is not None and default.parent.span_id == call.context.span_id


def test_nothing_served_is_an_error_of_the_call(mode: Mode) -> None:
    def model() -> str:
        raise ConnectionError("down")

    with capture_telemetry() as telemetry:
        fn = mode.guard("s-none", model="m-1")(model)
        with pytest.raises(ConnectionError):
            mode.call(fn)
    spans = {s.name: s for s in telemetry.spans()}
    assert spans["chat m-1"].status.status_code is StatusCode.ERROR
    assert spans["aiguard s-none"].status.status_code is StatusCode.ERROR


def test_an_exception_outside_catch_is_an_error_on_the_model_span(mode: Mode) -> None:
    def model() -> str:
        raise KeyError("bug")

    with capture_telemetry() as telemetry:
        fn = mode.guard("s-bug", model="m-1", catch=ConnectionError)(model)
        with pytest.raises(KeyError):
            mode.call(fn)
    [span] = telemetry.spans()
    assert span.kind is SpanKind.CLIENT and span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


ANSWER = {
    "score": 0.2, "id": "resp-1", "stop_reason": "end_turn",
    "usage": {"input_tokens": 5, "output_tokens": 2},
}  # fmt: skip


def test_a_rejected_answer_is_not_a_model_error(mode: Mode) -> None:
    with capture_telemetry() as telemetry:
        fn = mode.guard(
            "s-low", model="m-1", confidence="score", threshold=0.9,
            fallback=aiguard.Default("fallback"),
        )(lambda: ANSWER)  # fmt: skip
        assert mode.call(fn) == "fallback"
    spans = {s.name: s for s in telemetry.spans()}
    model_span, call = spans["chat m-1"], spans["aiguard s-low"]
    assert model_span.status.status_code is StatusCode.UNSET and not model_span.events
    attrs = dict(model_span.attributes or {})
    assert attrs["gen_ai.usage.input_tokens"] == 5 and attrs["gen_ai.response.id"] == "resp-1"
    assert dict(call.attributes or {})["aiguard.reason"] == "low_confidence"


def _client(mode: Mode, server: LLMServer) -> Any:
    return async_openai_client(server) if mode.is_async else openai_client(server)


def _ask(mode: Mode, client: Any, **create: Any) -> Any:
    options = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}], **create}
    if mode.is_async:

        async def ask_async() -> Any:
            return await client.chat.completions.create(**options)

        return ask_async

    def ask() -> Any:
        return client.chat.completions.create(**options)

    return ask


def test_response_id_finish_reasons_and_server(mode: Mode, llm_server: LLMServer) -> None:
    llm_server.script(Reply(text="ok"), Reply(status=429))
    client = _client(mode, llm_server)
    with capture_telemetry() as telemetry:
        fn = aiguard.guard("s-http", model="gpt-4.1-mini", fallback=aiguard.Default("fb"))(
            _ask(mode, client)
        )
        served = mode.outcome(fn)
        refused = mode.outcome(fn)
    assert served.reason is aiguard.Reason.SERVED and refused.reason is aiguard.Reason.ERROR
    model_spans = [s for s in telemetry.spans() if s.kind is SpanKind.CLIENT]
    ok, failed = sorted(model_spans, key=lambda s: s.start_time or 0)
    attrs = dict(ok.attributes or {})
    assert str(attrs["gen_ai.response.id"]).startswith("chatcmpl-")
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    attrs = dict(failed.attributes or {})
    assert attrs["error.type"] == "RateLimitError"
    assert f"http://{attrs['server.address']}:{attrs['server.port']}" == llm_server.url
    assert failed.status.status_code is StatusCode.ERROR


def test_a_stream_span_covers_it_with_its_facts(mode: Mode, llm_server: LLMServer) -> None:
    llm_server.reply(text="one two three", chunks=3, chunk_interval=0.02)
    client = _client(mode, llm_server)
    with capture_telemetry() as telemetry:
        fn = aiguard.guard("s-stream", model="gpt-4.1-mini")(
            _ask(mode, client, stream=True, stream_options={"include_usage": True})
        )
        outcome = mode.outcome(fn)
    [span] = telemetry.spans()
    attrs = dict(span.attributes or {})
    assert span.kind is SpanKind.CLIENT and outcome.reason is aiguard.Reason.SERVED
    assert str(attrs["gen_ai.response.id"]).startswith("chatcmpl-")
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["aiguard.time_to_first_chunk"] == pytest.approx(outcome.time_to_first_chunk)
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 >= 0.04


def _read_all(mode: Mode, stream: Any) -> None:
    if mode.is_async:

        async def read() -> None:
            async for _ in stream:
                pass

        mode.run(read())
        return
    for _ in stream:
        pass


def test_an_interrupted_stream_is_an_error_on_its_span(mode: Mode) -> None:
    def gen() -> Iterator[str]:
        yield "a"
        raise ConnectionError("reset")

    async def agen() -> Any:
        yield "a"
        raise ConnectionError("reset")

    with capture_telemetry() as telemetry:
        fn = aiguard.guard("s-cut", model="m-1")(agen if mode.is_async else gen)
        with pytest.raises(aiguard.StreamInterrupted):
            _read_all(mode, fn())
    [span] = telemetry.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


MESSAGE = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test-1",
    "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
    "usage": {"input_tokens": 10, "output_tokens": 2, "cache_creation_input_tokens": 30,
              "cache_read_input_tokens": 0},
}  # fmt: skip
PRICES = {"currency": "USD", "models": {"claude-test-1": {"input": "3", "output": "15"}}}


@pytest.mark.parametrize("latest", [False, True], ids=["default", "latest"])
def test_both_generations_of_names(
    mode: Mode, monkeypatch: pytest.MonkeyPatch, latest: bool
) -> None:
    """Today's names by default; under OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental
    the latest ones (cache writes, the proposed cost attributes), and not the old ones."""
    if latest:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,gen_ai_latest_experimental")
    else:
        monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    aiguard.configure(prices=PRICES)
    import anthropic

    message = anthropic.types.Message.model_validate(MESSAGE)
    with capture_telemetry() as telemetry:
        fn = mode.guard("s-names", model="claude-test-1")(lambda: message)
        outcome = mode.outcome(fn)
    assert semconv.current[0] is latest
    [span] = telemetry.spans()
    attrs = dict(span.attributes or {})
    assert attrs["aiguard.cost"] == float(outcome.cost or Decimal(0))
    if latest:
        assert attrs["gen_ai.usage.cache_write.input_tokens"] == 30
        assert "gen_ai.usage.cache_creation.input_tokens" not in attrs
        assert attrs["gen_ai.usage.cost.amount"] == float(outcome.cost or 0)
        assert attrs["gen_ai.usage.cost.currency"] == "USD"
        assert attrs["gen_ai.usage.cost.source"] == "local"
    else:
        assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 30
        assert "gen_ai.usage.cache_write.input_tokens" not in attrs
        assert not [k for k in attrs if k.startswith("gen_ai.usage.cost")]


def test_retried_tries_are_events_on_the_model_span(mode: Mode) -> None:
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("reset")
        return "answer"

    with capture_telemetry() as telemetry:
        fn = mode.guard("s-retry", model="m-1", retry=aiguard.Retry(attempts=3, backoff=0.001))(
            flaky
        )
        assert mode.call(fn) == "answer"
    [span] = telemetry.spans()
    assert span.kind is SpanKind.CLIENT and span.status.status_code is StatusCode.UNSET
    events = [e for e in span.events if e.name == "exception"]
    assert len(events) == 2
    assert all(e.attributes and e.attributes["aiguard.retried"] is True for e in events)
