"""aiguard's spans in a real Arize Phoenix server, read back through Phoenix's own REST API.

Phoenix runs in a subprocess on free ports of 127.0.0.1 (see ``tests/backends.py``; ``.ci/run``
installs it into its own virtualenv). The application side is what the observability page sets
up: the OpenTelemetry SDK with a BatchSpanProcessor and the OTLP/HTTP exporter. The spans are
asserted as an SRE reads them in Phoenix: the model calls, and the guarded calls around them.
"""

from __future__ import annotations

import json
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


def test_phoenix_shows_the_model_calls_and_the_guarded_calls(mode: Mode, phoenix: Phoenix) -> None:
    """Phoenix receives one LLM span per model call, named after the model, with the GenAI
    attributes (and its own token counts made from them); a call that went on to the fallback
    chain adds the guarded call's span under it, in the same trace, with the handler's span under
    that. A model that failed is an error with its exception event (the type, not the message);
    the guarded call is an error only when nothing was served."""
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

    spans = phoenix.spans(project, expected=6)
    assert sorted(s["name"] for s in spans) == [
        "aiguard summary",
        "aiguard ticket-triage",
        "aiguard.fallback default",
        "chat gpt-4.1-mini",
        "chat gpt-4.1-mini",
        "chat gpt-4.1-mini",
    ]
    # Every span of a call carries its call id: group them, by name.
    calls: dict[str, dict[str, Any]] = {}
    for span in spans:
        named = calls.setdefault(span["attributes"]["aiguard.call_id"], {})
        assert span["name"] not in named
        named[span["name"]] = span
    assert {call_id: set(named) for call_id, named in calls.items()} == {
        served.call_id: {"chat gpt-4.1-mini"},
        fell_back.call_id: {
            "chat gpt-4.1-mini",
            "aiguard ticket-triage",
            "aiguard.fallback default",
        },
        failed.call_id: {"chat gpt-4.1-mini", "aiguard summary"},
    }
    models = {call_id: named["chat gpt-4.1-mini"] for call_id, named in calls.items()}

    # Phoenix keeps its own (OpenInference) span kind, not the OTLP one: a model call (a chat
    # span) is an LLM; aiguard's own spans, without gen_ai.* attributes, are not.
    assert {s["span_kind"] for s in models.values()} == {"LLM"}
    assert {s["span_kind"] for s in spans if s["name"] != "chat gpt-4.1-mini"} == {"UNKNOWN"}
    # Each model call's span is its trace's root.
    assert all(s["parent_id"] is None for s in models.values())

    for outcome in (served, fell_back):
        model = models[outcome.call_id]
        attributes = model["attributes"]
        assert (model["status_code"], model["events"]) == ("UNSET", [])
        assert {k: v for k, v in attributes.items() if k.startswith("gen_ai.")} == {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4.1-mini",
            "gen_ai.response.model": "gpt-4.1-mini-2025-04-14",
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 80,
            "gen_ai.usage.cache_read.input_tokens": 1000,
        }
        # What Phoenix's UI shows in its token and model columns, made from the gen_ai.* names.
        assert attributes["llm.model_name"] == "gpt-4.1-mini"
        assert attributes["llm.token_count.prompt"] == 1200
        assert attributes["llm.token_count.completion"] == 80
        assert attributes["llm.token_count.total"] == 1280
        assert attributes["aiguard.feature"] == "ticket-triage"

    # A served call is its model call's span alone, with the call's outcome on it.
    answered = models[served.call_id]["attributes"]
    assert answered["aiguard.reason"] == "served"
    assert answered["aiguard.source"] == "model"
    assert answered["aiguard.cost"] == pytest.approx(0.000308)

    # A call a fallback answered: the model call's span (not an error: its result was returned,
    # then rejected) has the model's figures only; the guarded call's span, its child in the
    # same trace, has the outcome and is not an error; the handler's span is under that.
    rejected = models[fell_back.call_id]
    assert {k for k in rejected["attributes"] if k.startswith("aiguard.")} == {
        "aiguard.feature",
        "aiguard.call_id",
    }
    guarded = calls[fell_back.call_id]["aiguard ticket-triage"]
    handler = calls[fell_back.call_id]["aiguard.fallback default"]
    trace_id = rejected["context"]["trace_id"]
    assert guarded["parent_id"] == rejected["context"]["span_id"]
    assert handler["parent_id"] == guarded["context"]["span_id"]
    assert {guarded["context"]["trace_id"], handler["context"]["trace_id"]} == {trace_id}
    assert (guarded["status_code"], handler["status_code"]) == ("UNSET", "UNSET")
    assert not [k for k in guarded["attributes"] if k.startswith(("gen_ai.", "llm."))]
    assert guarded["attributes"]["aiguard.feature"] == "ticket-triage"
    assert guarded["attributes"]["aiguard.reason"] == "low_confidence"
    assert guarded["attributes"]["aiguard.source"] == "default"
    assert guarded["attributes"]["aiguard.detail"] == "confidence 0.3 < threshold 0.8"
    assert guarded["attributes"]["aiguard.cost"] == pytest.approx(0.000308)
    assert handler["attributes"]["aiguard.fallback.handler"] == "default"
    assert handler["attributes"]["aiguard.source"] == "default"

    # A call whose model failed and that served nothing: the model call's span is an error with
    # its exception event, and no token counts; the guarded call's span, its child, is an error
    # too. The exception's message reaches neither (no redact= hook): its type only.
    error = models[failed.call_id]
    assert error["status_code"] == "ERROR"
    assert error["status_message"] == "ConnectionError"
    assert error["attributes"]["error.type"] == "ConnectionError"
    assert error["attributes"]["gen_ai.request.model"] == "gpt-4.1-mini"
    assert not [k for k in error["attributes"] if k.startswith(("gen_ai.usage.", "llm.token"))]
    [event] = error["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.type"] == "ConnectionError"
    assert not event["attributes"].get("exception.message")  # Phoenix shows an empty one
    call = calls[failed.call_id]["aiguard summary"]
    assert call["parent_id"] == error["context"]["span_id"]
    assert call["context"]["trace_id"] == error["context"]["trace_id"]
    assert call["status_code"] == "ERROR"
    assert call["status_message"] == "error: ConnectionError"
    assert call["attributes"]["error.type"] == "ConnectionError"
    assert call["attributes"]["aiguard.reason"] == "error"
    assert "aiguard.source" not in call["attributes"]
    assert "model endpoint down" not in json.dumps(spans)
