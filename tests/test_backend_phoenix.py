"""aiguard's spans in a real Arize Phoenix server, read back through Phoenix's own REST API.

Phoenix runs in a subprocess on free ports of 127.0.0.1 (see ``tests/backends.py``; ``.ci/run``
installs it into its own virtualenv). The application side is what the observability page sets
up: the OpenTelemetry SDK with a BatchSpanProcessor and the OTLP/HTTP exporter.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from _modes import Mode
from backends import Phoenix, global_providers, phoenix_server

import aiguard

PRICES = {"models": {"gpt-4.1-mini": {"input": "0.40", "cached_input": "0.10", "output": "1.60"}}}
USAGE = {"prompt_tokens": 1200, "completion_tokens": 80, "cached_tokens": 1000}


@pytest.fixture(scope="module")
def phoenix() -> Iterator[Phoenix]:
    """One Phoenix server for the module (it takes some seconds to start)."""
    with phoenix_server() as server:
        yield server


def export_to(phoenix: Phoenix, project: str) -> Any:
    """A TracerProvider that sends to ``phoenix`` over OTLP/HTTP, into ``project``."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {"service.name": "ticket-service", "openinference.project.name": project}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=phoenix.traces_endpoint))
    )
    return provider


def test_phoenix_shows_one_span_per_guarded_call(mode: Mode, phoenix: Phoenix) -> None:
    """Phoenix receives one LLM span per guarded call, named after the model, with the GenAI
    attributes (and its own token counts made from them), a child span for the fallback handler,
    and status ERROR with error.type for a call that served nothing."""
    project = f"aiguard-{mode.name}-{uuid.uuid4().hex[:8]}"
    provider = export_to(phoenix, project)
    aiguard.configure(prices=PRICES)

    @mode.guard(
        "ticket-triage",
        model="gpt-4.1-mini",
        provider="openai",
        confidence="score",
        threshold=0.8,
        fallback=aiguard.Default({"label": "other", "score": 1.0}),
    )
    def triage(ticket: str) -> dict[str, object]:
        score = 0.95 if "invoice" in ticket else 0.3
        return {"label": "billing", "score": score, "model": "gpt-4.1-mini-2025-04-14",
                "usage": USAGE}  # fmt: skip

    @mode.guard("summary", model="gpt-4.1-mini", provider="openai")
    def summarise(text: str) -> str:
        raise ConnectionError("model endpoint down")

    with global_providers(tracer_provider=provider):
        served = mode.outcome(triage, "my invoice is wrong")
        fell_back = mode.outcome(triage, "hello")
        with pytest.raises(ConnectionError):
            mode.call(summarise, "a long text")
        failed = mode.last_outcome()
    assert failed is not None
    assert provider.force_flush(10_000)
    provider.shutdown()

    spans = phoenix.spans(project, expected=4)
    calls = {s["attributes"]["aiguard.call_id"]: s for s in spans if s["parent_id"] is None}
    assert sorted(s["name"] for s in spans) == [
        "aiguard.fallback default",
        "chat gpt-4.1-mini",
        "chat gpt-4.1-mini",
        "chat gpt-4.1-mini",
    ]
    assert set(calls) == {served.call_id, fell_back.call_id, failed.call_id}

    # Phoenix keeps its own (OpenInference) span kind, not the OTLP one: a chat span is an LLM.
    assert {s["span_kind"] for s in calls.values()} == {"LLM"}
    for outcome in (served, fell_back):
        attributes = calls[outcome.call_id]["attributes"]
        assert calls[outcome.call_id]["status_code"] == "UNSET"
        assert {k: v for k, v in attributes.items() if k.startswith("gen_ai.")} == {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4.1-mini",
            "gen_ai.response.model": "gpt-4.1-mini-2025-04-14",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 80,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.cache_creation.input_tokens": 0,
        }
        # What Phoenix's UI shows in its token and model columns, made from the gen_ai.* names.
        assert attributes["llm.model_name"] == "gpt-4.1-mini"
        assert attributes["llm.token_count.prompt"] == 1200
        assert attributes["llm.token_count.completion"] == 80
        assert attributes["aiguard.feature"] == "ticket-triage"
        assert attributes["aiguard.cost"] == pytest.approx(0.000308)
    assert calls[served.call_id]["attributes"]["aiguard.reason"] == "served"
    assert calls[fell_back.call_id]["attributes"]["aiguard.reason"] == "low_confidence"
    assert calls[fell_back.call_id]["attributes"]["aiguard.source"] == "default"

    [handler] = [s for s in spans if s["parent_id"] is not None]
    assert handler["parent_id"] == calls[fell_back.call_id]["context"]["span_id"]
    assert handler["context"]["trace_id"] == calls[fell_back.call_id]["context"]["trace_id"]
    assert handler["attributes"]["aiguard.fallback.handler"] == "default"

    error = calls[failed.call_id]
    assert error["status_code"] == "ERROR"
    assert error["status_message"] == "error: ConnectionError('model endpoint down')"
    assert error["attributes"]["error.type"] == "ConnectionError"
    assert error["attributes"]["aiguard.reason"] == "error"
    assert error["attributes"]["gen_ai.request.model"] == "gpt-4.1-mini"
    assert "gen_ai.usage.input_tokens" not in error["attributes"]
