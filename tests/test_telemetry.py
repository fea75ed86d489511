"""OpenTelemetry: spans, attributes, parent/child structure, metrics, events, OTLP export."""

from __future__ import annotations

import http.server
import threading
from typing import Any

import pytest
from _modes import Mode
from clients import MESSAGE, anthropic_client, openai_client
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

import aiguard
from aiguard._runtime import errors
from aiguard._runtime import telemetry as _telemetry
from aiguard.testing import capture_telemetry

PRICES = {"models": {"gpt-4.1-mini": {"input": "0.40", "cached_input": "0.10", "output": "1.60"}}}


def test_no_sdk_means_no_span_work(mode: Mode, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no provider set, aiguard notices and does no span or metric work at all."""
    assert _telemetry.no_tracer() and _telemetry.tracer() is None
    assert _telemetry.no_meter() and _telemetry.meters() is None

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("span or metric work without a provider")

    monkeypatch.setattr(_telemetry, "tracer", forbidden)
    monkeypatch.setattr(_telemetry, "meters", forbidden)
    monkeypatch.setattr(_telemetry, "begin", forbidden)

    @mode.guard("quiet", fallback=aiguard.Default(0))
    def f(fail: bool) -> int:
        if fail:
            raise RuntimeError
        return 1

    assert (mode.call(f, False), mode.call(f, True)) == (1, 0)


def test_span_per_call_with_genai_and_aiguard_attributes(mode: Mode) -> None:
    """One CLIENT span named '{operation} {model}' with GenAI and aiguard.* attributes."""
    aiguard.configure(prices=PRICES)
    with capture_telemetry() as telemetry:
        client = openai_client()

        @mode.guard(
            "draft", model="gpt-4.1-mini", provider="openai", confidence=lambda r: 0.9,
            threshold=0.5, rollout=aiguard.Rollout(percent=100, key="user"),
        )  # fmt: skip
        def draft(user: str) -> Any:
            return client.chat.completions.create(model="gpt-4.1-mini", messages=[])

        outcome = mode.outcome(draft, "u1")
    [span] = telemetry.spans()
    assert span.name == "chat gpt-4.1-mini" and span.kind is SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4.1-mini"
    assert attrs["gen_ai.response.model"] == "gpt-4.1-mini-2025-04-14"
    assert attrs["gen_ai.usage.input_tokens"] == 1200
    assert attrs["gen_ai.usage.output_tokens"] == 80
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert attrs["aiguard.feature"] == "draft"
    assert attrs["aiguard.call_id"] == outcome.call_id
    assert attrs["aiguard.source"] == "model" and attrs["aiguard.reason"] == "served"
    assert attrs["aiguard.confidence"] == 0.9 and attrs["aiguard.threshold"] == 0.5
    assert attrs["aiguard.rollout.percent"] == 100 and attrs["aiguard.rollout.arm"] == "ai"
    assert "aiguard.killed" not in attrs  # set only when a kill switch or the breaker stopped it
    assert attrs["aiguard.cost"] == pytest.approx(0.000308)
    assert attrs["aiguard.cost.currency"] == "USD"
    assert "error.type" not in attrs


def test_feature_name_when_no_model_is_known(mode: Mode) -> None:
    """Without a model name, the span is named after the feature."""
    with capture_telemetry() as telemetry:

        @mode.guard("triage")
        def triage() -> str:
            return "x"

        mode.call(triage)
    assert [s.name for s in telemetry.spans()] == ["triage"]


def test_fallback_handlers_get_child_spans(mode: Mode) -> None:
    """Each fallback handler tried has a child span of the call's span."""

    def rules(t: str) -> str:
        raise LookupError("no keyword")

    with capture_telemetry() as telemetry:

        @mode.guard("tri", fallback=[rules, aiguard.Default("other")])
        def triage(t: str) -> str:
            raise ConnectionError("model down")

        assert mode.call(triage, "x") == "other"
    spans = {s.name: s for s in telemetry.spans()}
    model, call = spans["tri"], spans["aiguard tri"]
    assert (model.kind, call.kind) == (SpanKind.CLIENT, SpanKind.INTERNAL)
    rules_span = spans[
        "aiguard.fallback rules:test_fallback_handlers_get_child_spans.<locals>.rules"
    ]
    default_span = spans["aiguard.fallback default"]
    for child in (rules_span, default_span):
        assert child.parent is not None and child.parent.span_id == call.context.span_id
        assert child.context.trace_id == call.context.trace_id
    assert rules_span.status.status_code is StatusCode.ERROR
    # the model failed: an error on its span, with an exception event ...
    assert model.status.status_code is StatusCode.ERROR
    assert [e.name for e in model.events] == ["exception"]
    assert dict(model.attributes or {})["error.type"] == "ConnectionError"
    # ... but a fallback answered: the guarded call is not an error
    assert call.status.status_code is StatusCode.UNSET
    attrs = dict(call.attributes or {})
    assert attrs["aiguard.reason"] == "error" and attrs["aiguard.source"] == "default"
    assert attrs["error.type"] == "ConnectionError"
    assert attrs["aiguard.fallback.handlers"] == (rules_span.name.split(" ", 1)[1], "default")


def test_a_self_tracing_client_span_is_a_child_and_counts_once(mode: Mode) -> None:
    """The Anthropic client's own GenAI span nests under aiguard's; tokens agree, not doubled."""
    with capture_telemetry() as telemetry:
        client = anthropic_client()

        @mode.guard("draft", model="claude-test-1")
        def draft() -> Any:
            return client.messages.create(model="claude-test-1", max_tokens=5, messages=[])

        mode.call(draft)
    spans = telemetry.spans()
    ours = next(s for s in spans if s.name == "chat claude-test-1")
    theirs = next(s for s in spans if s is not ours)
    assert theirs.parent is not None and theirs.parent.span_id == ours.context.span_id
    a, b = dict(ours.attributes or {}), dict(theirs.attributes or {})
    assert a["gen_ai.usage.input_tokens"] == b["gen_ai.usage.input_tokens"] == 450
    assert a["gen_ai.usage.cache_read.input_tokens"] == 300
    assert aiguard.stats("draft").input_tokens == 450  # counted once


def test_metrics_follow_the_conventions(mode: Mode) -> None:
    """Duration and token histograms with the advised buckets; aiguard counters."""
    aiguard.configure(prices=PRICES)
    with capture_telemetry() as telemetry:
        client = openai_client()

        @mode.guard("m", model="gpt-4.1-mini", confidence=lambda r: 0.2, threshold=0.5,
                    fallback=aiguard.Default("d"))  # fmt: skip
        def f() -> Any:
            return client.chat.completions.create(model="gpt-4.1-mini", messages=[])

        mode.call(f)
        duration = telemetry.metric("gen_ai.client.operation.duration")
        tokens = telemetry.metric("gen_ai.client.token.usage")
        calls = telemetry.metric_points("aiguard.calls")
        fallbacks = telemetry.metric_points("aiguard.fallbacks")
        cost = telemetry.metric_points("aiguard.cost")
    assert duration.unit == "s"
    [point] = duration.data.data_points
    assert tuple(point.explicit_bounds) == _telemetry.DURATION_BUCKETS
    assert point.attributes["gen_ai.operation.name"] == "chat"
    assert tokens.unit == "{token}"
    by_type = {p.attributes["gen_ai.token.type"]: p for p in tokens.data.data_points}
    assert by_type["input"].sum == 1200 and by_type["output"].sum == 80
    assert tuple(by_type["input"].explicit_bounds) == _telemetry.TOKEN_BUCKETS
    [c] = calls
    assert c.value == 1 and dict(c.attributes) == {
        "aiguard.feature": "m", "aiguard.source": "default", "aiguard.reason": "low_confidence"
    }  # fmt: skip
    assert fallbacks[0].value == 1
    assert cost[0].value == pytest.approx(0.000308)


def test_trips_become_span_events_and_counters(mode: Mode) -> None:
    """An automatic kill is a span event on the call that tripped it, and a counter."""
    with capture_telemetry() as telemetry:

        @mode.guard(
            "ev", breaker=aiguard.Breaker(max_error_rate=0.5, min_calls=2, window=2),
            fallback=aiguard.Default("d"),
        )  # fmt: skip
        def f() -> str:
            raise ConnectionError

        mode.call(f), mode.call(f)
        points = telemetry.metric_points("aiguard.control.events")
    events = [e for s in telemetry.spans() for e in s.events if e.name != "exception"]
    assert [e.name for e in events] == ["aiguard.trip"]
    assert "error rate 1 > 0.5" in events[0].attributes["aiguard.event.reason"]
    assert [(dict(p.attributes), p.value) for p in points] == [
        ({"aiguard.feature": "ev", "aiguard.event": "trip"}, 1)
    ]


def test_a_provider_installed_later_is_picked_up(mode: Mode) -> None:
    """Calls before a provider is set make no spans; calls after it do."""

    @mode.guard("late")
    def f() -> int:
        return 1

    mode.call(f)
    with capture_telemetry() as telemetry:
        mode.call(f)
    mode.call(f)
    assert len(telemetry.spans()) == 1


def test_the_call_span_is_current_while_the_model_runs(mode: Mode) -> None:
    """Guarded calls, sync or async, get their span, current while the model runs."""
    seen: list[Any] = []
    with capture_telemetry() as telemetry:

        @mode.guard("aspan", model="m")
        def f() -> str:
            seen.append(trace.get_current_span().get_span_context().span_id)
            return "ok"

        assert mode.call(f) == "ok"
    [span] = telemetry.spans()
    assert seen == [span.context.span_id]


def test_telemetry_failures_never_fail_the_call(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """A span processor that raises is logged once and counted; calls still succeed."""
    from opentelemetry.sdk.trace import SpanProcessor

    class Exploding(SpanProcessor):
        def on_end(self, span: Any) -> None:
            raise RuntimeError("exporter down")

    with capture_telemetry():
        trace.get_tracer_provider().add_span_processor(Exploding())  # type: ignore[attr-defined]

        @mode.guard("boom")
        def f() -> int:
            return 1

        with caplog.at_level("WARNING", logger="aiguard"):
            assert [mode.call(f), mode.call(f), mode.call(f)] == [1, 1, 1]
    assert sum("exporter down" in r.getMessage() for r in caplog.records) == 1
    assert errors.counts()["telemetry: end span"] == 3


def test_export_over_otlp_http_to_a_local_receiver(mode: Mode) -> None:
    """A real OTLP/HTTP exporter sends the span; the protobuf payload holds its attributes."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    received: list[bytes] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with capture_telemetry():
            exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{server.server_port}/v1/traces")
            trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]

            @mode.guard("otlp", model="m-1", fallback=aiguard.Default("d"))
            def f() -> str:
                raise TimeoutError

            outcome = mode.outcome(f)
    finally:
        server.shutdown()
    spans = [
        span
        for body in received
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    [model] = [s for s in spans if s.name == "chat m-1"]  # the model call: it failed
    [call] = [s for s in spans if s.name == "aiguard otlp"]  # the guarded call: answered
    attrs = {a.key: a.value for a in model.attributes}
    assert attrs["aiguard.call_id"].string_value == outcome.call_id
    assert attrs["error.type"].string_value == "TimeoutError"
    assert attrs["gen_ai.request.model"].string_value == "m-1"
    assert model.status.code == 2  # STATUS_CODE_ERROR
    assert [e.name for e in model.events] == ["exception"]
    attrs = {a.key: a.value for a in call.attributes}
    assert attrs["aiguard.call_id"].string_value == outcome.call_id
    assert attrs["aiguard.reason"].string_value == "timeout"
    assert attrs["aiguard.source"].string_value == "default"
    assert "gen_ai.request.model" not in attrs  # not a model call
    assert call.status.code == 0  # unset: a fallback answered
    assert call.trace_id == model.trace_id


def test_a_processor_failing_at_span_start_does_not_fail_fallbacks(mode: Mode) -> None:
    """A span processor whose on_start raises: the fallback still serves."""
    from opentelemetry.sdk.trace import SpanProcessor

    class Exploding(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            raise RuntimeError("processor down")

    with capture_telemetry():
        trace.get_tracer_provider().add_span_processor(Exploding())  # type: ignore[attr-defined]

        @mode.guard("boom2", fallback=aiguard.Default("fb"))
        def f() -> str:
            raise ConnectionError

        outcome = mode.outcome(f)
    assert outcome.value == "fb" and not outcome.attempts[0].failed


def test_span_work_failing_never_fails_the_call(
    mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even if starting the call's span raises, the call is served."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer broken")

    with capture_telemetry():
        monkeypatch.setattr(telemetry_tracer(), "start_span", broken)

        @mode.guard("boom3")
        def f() -> int:
            return 1

        assert mode.call(f) == 1
    assert errors.counts()["telemetry: start span"] == 1


def telemetry_tracer() -> Any:
    return _telemetry.tracer()


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


def test_cache_writes_on_the_span_and_in_the_metrics(mode: Mode) -> None:
    """A Message with 5-minute and 1-hour writes: the span carries the GenAI cache-creation
    count (and the 1-hour part); aiguard.cache.tokens counts reads and writes by duration; the
    conventions' token histogram keeps input and output only (cache tokens are part of input)."""
    with capture_telemetry() as telemetry:
        client = anthropic_client(MESSAGE_1H)

        @mode.guard("writes", model="claude-test-1")
        def draft() -> Any:
            return client.messages.create(model="claude-test-1", max_tokens=5, messages=[])

        mode.call(draft)
        mode.call(draft)
        cache = telemetry.metric("aiguard.cache.tokens")
        tokens = telemetry.metric_points("gen_ai.client.token.usage")
    ours = next(s for s in telemetry.spans() if s.name == "chat claude-test-1")
    attrs = dict(ours.attributes or {})
    assert attrs["gen_ai.usage.input_tokens"] == 450
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 300
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 50
    assert attrs["aiguard.usage.cache_creation_1h.input_tokens"] == 20
    assert cache.unit == "{token}"
    by_kind = {
        (p.attributes["aiguard.cache.operation"], p.attributes.get("aiguard.cache.ttl")): p.value
        for p in cache.data.data_points
    }
    assert by_kind == {("read", None): 600, ("write", "5m"): 60, ("write", "1h"): 40}
    assert all(p.attributes["gen_ai.provider.name"] == "anthropic" for p in cache.data.data_points)
    assert {p.attributes["gen_ai.token.type"] for p in tokens} == {"input", "output"}


def test_no_cache_writes_no_cache_write_figures(mode: Mode) -> None:
    """An OpenAI completion with cache reads and no writes: the span has no cache-write figure
    (set when there are any) and no 1-hour part; the metric has no write points."""
    with capture_telemetry() as telemetry:
        client = openai_client()

        @mode.guard("reads", model="gpt-4.1-mini")
        def draft() -> Any:
            return client.chat.completions.create(model="gpt-4.1-mini", messages=[])

        mode.call(draft)
        points = telemetry.metric_points("aiguard.cache.tokens")
    [span] = telemetry.spans()
    attrs = dict(span.attributes or {})
    assert "gen_ai.usage.cache_creation.input_tokens" not in attrs
    assert "aiguard.usage.cache_creation_1h.input_tokens" not in attrs
    assert [(p.attributes["aiguard.cache.operation"], p.value) for p in points] == [("read", 1000)]
