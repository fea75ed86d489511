"""Helpers for testing code that uses aiguard.

Example:
    >>> import aiguard
    >>> from aiguard.testing import capture_outcomes
    >>> @aiguard.guard("echo")
    ... def echo(x: int) -> int:
    ...     return x
    >>> with capture_outcomes() as outcomes:
    ...     _ = echo(1), echo(2)
    >>> [o.value for o in outcomes]
    [1, 2]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ._runtime import lifecycle, stats
from ._runtime.state import runtime
from .outcome import Outcome

__all__ = [
    "Telemetry",
    "capture_outcomes",
    "capture_telemetry",
    "isolated",
    "reset_stats",
    "strict",
]


@contextlib.contextmanager
def capture_outcomes() -> Iterator[list[Outcome[Any]]]:
    """Collect the Outcome of every guarded call, in any thread, while the block runs.

    Example:
        >>> from aiguard.testing import capture_outcomes
        >>> with capture_outcomes() as outcomes:
        ...     pass
        >>> outcomes
        []
    """
    captured: list[Outcome[Any]] = []
    observer = captured.append
    with runtime.lock:
        runtime.observers = (*runtime.observers, observer)
    try:
        yield captured
    finally:
        with runtime.lock:
            runtime.observers = tuple(o for o in runtime.observers if o is not observer)


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Restore all of aiguard's process state when the block ends: configuration, control
    state, store and recorder, workers, budgets, gates, events and error counts. What the block
    starts (a store, a recorder, control pollers, a budget store) is stopped and closed.

    Example:
        >>> import aiguard
        >>> from aiguard.testing import isolated
        >>> with isolated():
        ...     aiguard.configure(store=":memory:")
    """
    saved = lifecycle.snapshot()
    try:
        yield
    finally:
        lifecycle.restore(saved)


def reset_stats() -> None:
    """Forget every feature's :func:`aiguard.stats` figures in this process.

    Example:
        >>> import aiguard
        >>> from aiguard.testing import reset_stats
        >>> reset_stats()
        >>> aiguard.stats("anything").calls
        0
    """
    stats.reset()


@contextlib.contextmanager
def strict() -> Iterator[None]:
    """Re-raise aiguard's internal failures instead of logging them, so tests see the bug.

    Example:
        >>> from aiguard.testing import strict
        >>> with strict():
        ...     pass
    """
    before = runtime.strict
    runtime.strict = True
    try:
        yield
    finally:
        runtime.strict = before


class Telemetry:
    """What :func:`capture_telemetry` collected: finished spans and metric points.

    Example:
        >>> from aiguard.testing import capture_telemetry
        >>> with capture_telemetry() as telemetry:
        ...     pass
        >>> telemetry.spans(), telemetry.metric_points("aiguard.calls")
        ([], [])
    """

    def __init__(self, spans: Any, metrics: Any) -> None:
        self._spans = spans
        self._metrics = metrics

    def spans(self, name: str | None = None) -> list[Any]:
        """Finished spans (``ReadableSpan``), oldest first; only those named ``name`` if given."""
        found = list(self._spans.get_finished_spans())
        return [s for s in found if name is None or s.name == name]

    def metric_points(self, name: str) -> list[Any]:
        """The data points of the metric ``name`` collected so far."""
        data = self._metrics.get_metrics_data()
        points: list[Any] = []
        for rm in data.resource_metrics if data is not None else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points

    def metric(self, name: str) -> Any:
        """The metric ``name`` (its ``.data`` and ``.unit``), or None."""
        data = self._metrics.get_metrics_data()
        for rm in data.resource_metrics if data is not None else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        return metric
        return None


@contextlib.contextmanager
def capture_telemetry() -> Iterator[Telemetry]:
    """Install in-memory OpenTelemetry SDK providers for the block (needs opentelemetry-sdk).

    The global tracer and meter providers are replaced for the block and put back afterwards,
    which OpenTelemetry's API only allows through its private globals: for tests only.

    Example:
        >>> import aiguard
        >>> from aiguard.testing import capture_telemetry
        >>> @aiguard.guard("otel-demo", model="m-1")
        ... def f() -> str:
        ...     return "ok"
        >>> with capture_telemetry() as telemetry:
        ...     _ = f()
        >>> [span.name for span in telemetry.spans()]
        ['chat m-1']
    """
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    saved = (
        otel_trace._TRACER_PROVIDER,
        otel_trace._TRACER_PROVIDER_SET_ONCE,
        metrics_internal._METER_PROVIDER,
        metrics_internal._METER_PROVIDER_SET_ONCE,
    )
    otel_trace._TRACER_PROVIDER_SET_ONCE = Once()
    otel_trace._TRACER_PROVIDER = None
    otel_trace.set_tracer_provider(tracer_provider)
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    otel_metrics.set_meter_provider(meter_provider)
    try:
        yield Telemetry(exporter, reader)
    finally:
        (
            otel_trace._TRACER_PROVIDER,
            otel_trace._TRACER_PROVIDER_SET_ONCE,
            metrics_internal._METER_PROVIDER,
            metrics_internal._METER_PROVIDER_SET_ONCE,
        ) = saved
        tracer_provider.shutdown()
        meter_provider.shutdown()
