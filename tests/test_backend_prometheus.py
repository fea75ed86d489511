"""aiguard's metrics as Prometheus scrapes them: the OpenTelemetry Prometheus exporter's endpoint.

The application side is the one an SRE sets up without a collector: a MeterProvider whose reader
is ``opentelemetry-exporter-prometheus``'s ``PrometheusMetricReader``, served over HTTP by
``prometheus_client``. The test scrapes the endpoint with the Accept header Prometheus sends,
parses the answer with ``prometheus_client``'s strict OpenMetrics parser, and checks the metric
families, their types, their labels and their values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _modes import Mode
from backends import global_providers, scrape
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import aiguard

# The families aiguard exposes, as Prometheus names them (the exporter's rules: dots become
# underscores, the unit `s` becomes `_seconds`, a unit in braces is dropped, a counter's samples
# get `_total`), with their type and their labels (besides the exporter's otel_scope_* labels).
# One place to update when aiguard's metrics change.
GEN_AI = {"gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"}
CALL = {"aiguard_feature", "aiguard_source", "aiguard_reason"}
FAMILIES: dict[str, tuple[str, set[str]]] = {
    "gen_ai_client_operation_duration_seconds": (
        "histogram",
        GEN_AI | {"gen_ai_response_model", "aiguard_feature"},
    ),
    "aiguard_call_duration_seconds": ("histogram", CALL),
    "aiguard_cost_unknown": ("counter", {"aiguard_feature"}),
    "gen_ai_client_token_usage": (
        "histogram",
        GEN_AI | {"gen_ai_response_model", "gen_ai_token_type"},
    ),
    "aiguard_cache_tokens": (
        "counter",
        GEN_AI | {"gen_ai_response_model", "aiguard_cache_operation"},
    ),
    "aiguard_calls": ("counter", CALL),
    "aiguard_fallbacks": ("counter", CALL),
    "aiguard_cost": ("counter", {"aiguard_feature", "aiguard_cost_currency"}),
}
# The labels of a call that raised (no response, so no response model).
FAILED_DURATION_LABELS = GEN_AI | {"error_type", "aiguard_feature"}

PRICES = {"models": {"gpt-4.1-mini": {"input": "0.40", "cached_input": "0.10", "output": "1.60"}}}
USAGE = {"prompt_tokens": 1200, "completion_tokens": 80, "cached_tokens": 1000}


@pytest.fixture
def endpoint() -> Iterator[str]:
    """A Prometheus exporter serving this test's MeterProvider at a free port of 127.0.0.1."""
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader])
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        with global_providers(meter_provider=provider):
            yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        provider.shutdown()


def labels(sample: Any) -> dict[str, str]:
    """The sample's labels, without the exporter's otel_scope_* ones and without the empty ones
    (the exporter gives every sample of a family every label name of the family; Prometheus
    takes an empty label as an absent one)."""
    return {k: v for k, v in sample.labels.items() if v and not k.startswith("otel_scope_")}


def test_prometheus_scrapes_aiguards_metric_families(mode: Mode, endpoint: str) -> None:
    """A scrape returns valid OpenMetrics with the GenAI duration and token histograms and
    aiguard's counters, each with its labels and the values of the calls made."""
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

    mode.call(triage, "my invoice is wrong")
    mode.call(triage, "hello")
    with pytest.raises(ConnectionError):
        mode.call(summarise, "a long text")

    content_type, body = scrape(endpoint)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    ours = {name: f for name, f in families.items() if name.startswith(("gen_ai_", "aiguard_"))}
    assert {name: f.type for name, f in ours.items()} == {n: t for n, (t, _) in FAMILIES.items()}
    for name, (_, label_names) in FAMILIES.items():
        shapes = {frozenset(labels(s)) - {"le"} for s in ours[name].samples}
        if name == "gen_ai_client_operation_duration_seconds":
            assert shapes == {frozenset(label_names), frozenset(FAILED_DURATION_LABELS)}, name
        else:
            assert shapes == {frozenset(label_names)}, name
        assert all(s.labels["otel_scope_name"] == "aiguard" for s in ours[name].samples)

    def value(family: str, sample: str, **match: str) -> float:
        found = [
            s.value
            for s in ours[family].samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in match.items())
        ]
        assert len(found) == 1, (family, sample, match, found)
        return float(found[0])

    model = {"gen_ai_request_model": "gpt-4.1-mini"}
    duration = "gen_ai_client_operation_duration_seconds"
    answered = {"gen_ai_response_model": "gpt-4.1-mini-2025-04-14"}
    assert value(duration, duration + "_count", **answered) == 2
    assert value(duration, duration + "_count", error_type="ConnectionError", **model) == 1
    # the histogram keeps the boundaries the GenAI conventions advise
    bounds = {s.labels["le"] for s in ours[duration].samples if s.name == duration + "_bucket"}
    assert {"0.01", "81.92", "+Inf"} <= bounds
    usage = "gen_ai_client_token_usage"
    assert value(usage, usage + "_sum", gen_ai_token_type="input") == 2400
    assert value(usage, usage + "_sum", gen_ai_token_type="output") == 160
    assert value(usage, usage + "_count", gen_ai_token_type="input") == 2
    cache = "aiguard_cache_tokens"
    assert value(cache, cache + "_total", aiguard_cache_operation="read") == 2000
    assert value("aiguard_calls", "aiguard_calls_total", aiguard_reason="served") == 1
    assert value("aiguard_calls", "aiguard_calls_total", aiguard_reason="low_confidence") == 1
    assert (
        value("aiguard_calls", "aiguard_calls_total", aiguard_reason="error", aiguard_source="none")
        == 1
    )
    assert value("aiguard_fallbacks", "aiguard_fallbacks_total", aiguard_source="default") == 1
    cost = value("aiguard_cost", "aiguard_cost_total", aiguard_cost_currency="USD")
    assert cost == pytest.approx(2 * 0.000308)
