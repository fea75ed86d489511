"""Telemetry that fails: a span processor, an exporter, a metric reader and instruments that
raise. The OpenTelemetry API promises never to throw into the caller; so does aiguard: every
call is served, and the failures are counted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import aiguard
from aiguard._runtime import errors
from aiguard.testing import capture_telemetry


def _guarded(feature: str) -> Any:
    @aiguard.guard(feature, model="m-1", confidence="p", threshold=0.5,
                   fallback=aiguard.Default({"p": 1.0}))  # fmt: skip
    def f(p: float) -> dict[str, float]:
        return {"p": p}

    return f


def test_a_span_processor_raising_at_start_and_end() -> None:
    """on_start and on_end raise: calls are served (model and fallback), failures counted."""

    class Broken(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            raise RuntimeError("processor down")

        def on_end(self, span: Any) -> None:
            raise RuntimeError("processor down")

    with capture_telemetry():
        trace.get_tracer_provider().add_span_processor(Broken())  # type: ignore[attr-defined]
        f = _guarded("tel-proc")
        assert [f.outcome(0.9).source, f.outcome(0.1).source] == [
            aiguard.Source.MODEL,
            aiguard.Source.DEFAULT,
        ]
    assert sum(n for k, n in errors.counts().items() if k.startswith("telemetry")) >= 2


def test_an_exporter_that_raises() -> None:
    """A span exporter that raises on every export: calls are served."""

    class Down(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            raise ConnectionError("collector down")

        def shutdown(self) -> None:
            pass

    with capture_telemetry():
        provider = trace.get_tracer_provider()
        provider.add_span_processor(SimpleSpanProcessor(Down()))  # type: ignore[attr-defined]
        f = _guarded("tel-exp")
        assert all(f.outcome(0.9).source is aiguard.Source.MODEL for _ in range(20))


def test_a_metric_reader_whose_export_raises() -> None:
    """A periodic metric reader whose exporter raises on every export: calls are served."""

    class Down(MetricExporter):
        def __init__(self) -> None:
            super().__init__()

        def export(self, metrics_data: Any, timeout_millis: float = 0, **_: Any) -> Any:
            raise ConnectionError("collector down")

        def force_flush(self, timeout_millis: float = 0) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 0, **_: Any) -> None:
            pass

    from opentelemetry.sdk.metrics import MeterProvider

    with capture_telemetry():
        reader = PeriodicExportingMetricReader(Down(), export_interval_millis=50)
        provider = MeterProvider(metric_readers=[reader])
        from opentelemetry.metrics import _internal as metrics_internal

        saved = metrics_internal._METER_PROVIDER
        metrics_internal._METER_PROVIDER = provider
        try:
            f = _guarded("tel-reader")
            assert all(f.outcome(0.9).source is aiguard.Source.MODEL for _ in range(50))
            reader.collect()
            assert f.outcome(0.1).source is aiguard.Source.DEFAULT
        finally:
            metrics_internal._METER_PROVIDER = saved
            provider.shutdown()


def test_instruments_that_raise() -> None:
    """A meter provider whose instruments raise on every record: calls are served; the
    accounting failure is counted, never raised."""

    class Raising:
        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any, **kwargs: Any) -> None:
                raise RuntimeError("instrument broken")

            return fail

    class Meter:
        def __getattr__(self, name: str) -> Any:
            return lambda *args, **kwargs: Raising()

    class Provider:
        def get_meter(self, *args: Any, **kwargs: Any) -> Meter:
            return Meter()

    from opentelemetry.metrics import _internal as metrics_internal

    saved = metrics_internal._METER_PROVIDER
    metrics_internal._METER_PROVIDER = Provider()  # type: ignore[assignment]
    try:
        f = _guarded("tel-inst")
        assert [f.outcome(0.9).source for _ in range(3)] == [aiguard.Source.MODEL] * 3
        assert f.outcome(0.1).source is aiguard.Source.DEFAULT
    finally:
        metrics_internal._METER_PROVIDER = saved
    assert errors.counts().get("accounting of 'tel-inst'", 0) == 4
