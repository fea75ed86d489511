"""OpenTelemetry: a span per guarded call, metrics, and control events; API only.

aiguard never installs a TracerProvider or MeterProvider. Until the application sets one, the
global provider is unset, and ``tracer()`` / ``meters()`` return None after one attribute read, so
the telemetry path costs almost nothing; a provider set later is picked up on the next call.
Everything here is wrapped so that a telemetry failure never fails a call: it is logged once and
counted (``runtime.error_counts``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from opentelemetry.metrics import Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._version import __version__
from . import errors as _internal
from . import semconv
from .state import runtime

# GenAI semantic conventions (development): advised histogram buckets.
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

_SCOPE = "aiguard"
_CLIENT = SpanKind.CLIENT


def _global_tracer_provider() -> Any:
    try:
        return otel_trace._TRACER_PROVIDER  # set by set_tracer_provider(); None until then
    except AttributeError:  # pragma: no cover - a future API without the private global
        provider = otel_trace.get_tracer_provider()
        return None if isinstance(provider, otel_trace.ProxyTracerProvider) else provider


_metrics_internal: Any
try:
    from opentelemetry.metrics import _internal as _metrics_internal
except ImportError:  # pragma: no cover - a future API without the private module
    _metrics_internal = None


if _metrics_internal is not None and hasattr(_metrics_internal, "_METER_PROVIDER"):

    def no_meter() -> bool:
        """True while no MeterProvider is set: one attribute read, for the per-call path."""
        return _metrics_internal._METER_PROVIDER is None

else:  # pragma: no cover

    def no_meter() -> bool:
        return _global_meter_provider() is None


def _global_meter_provider() -> Any:
    try:
        return _metrics_internal._METER_PROVIDER
    except AttributeError:  # pragma: no cover
        provider = otel_metrics.get_meter_provider()
        return None if type(provider).__name__ == "_ProxyMeterProvider" else provider


class _Shim:
    """Stands in for the API modules if a future API drops their private globals: the same
    attribute names, read through the public getters."""

    @property
    def _TRACER_PROVIDER(self) -> Any:
        return _global_tracer_provider()

    @property
    def _METER_PROVIDER(self) -> Any:
        return _global_meter_provider()


# What the per-call path reads: ``trace_api._TRACER_PROVIDER is None`` and
# ``metrics_api._METER_PROVIDER is None`` mean "no provider set", in one attribute read.
trace_api: Any = otel_trace if hasattr(otel_trace, "_TRACER_PROVIDER") else _Shim()
metrics_api: Any = (
    _metrics_internal
    if _metrics_internal is not None and hasattr(_metrics_internal, "_METER_PROVIDER")
    else _Shim()
)


if hasattr(otel_trace, "_TRACER_PROVIDER"):

    def no_tracer() -> bool:
        """True while no TracerProvider is set: one attribute read, for the per-call path."""
        return otel_trace._TRACER_PROVIDER is None

else:  # pragma: no cover - a future API without the private global

    def no_tracer() -> bool:
        return _global_tracer_provider() is None


def tracer() -> Any:
    """aiguard's tracer, or None when no TracerProvider has been set (cached per provider, in
    the runtime)."""
    provider = _global_tracer_provider()
    if provider is None:
        return None
    cached = runtime.tracer
    if cached is None or cached[0] is not provider:
        try:
            cached = (provider, provider.get_tracer(_SCOPE, __version__))
        except Exception as exc:
            _internal.report("telemetry: get_tracer", exc)
            return None
        runtime.tracer = cached
    return cached[1]


class Tally:
    """Running totals of one counter, kept by aiguard and reported when the SDK collects (an
    observable counter): adding to it costs a dict lookup under a lock, where a synchronous SDK
    counter hashes the attribute set on every call. ``key`` names one attribute set; the dict
    of attributes is made once, the first time the key is seen."""

    __slots__ = ("lock", "totals")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[Any, list[Any]] = {}  # key -> [attributes, total]

    def add(self, key: Any, attributes: Mapping[str, Any], amount: float) -> None:
        with self.lock:
            entry = self.totals.get(key)
            if entry is None:
                self.totals[key] = [dict(attributes), amount]
            else:
                entry[1] += amount

    def observe(self, options: Any = None) -> list[Observation]:
        with self.lock:
            return [Observation(total, attrs) for attrs, total in self.totals.values()]


class Meters:
    """aiguard's instruments on one MeterProvider, in the GenAI conventions generation in force
    when they were made (``semconv.latest()``).

    Histograms (recorded per call): the model call's duration (``gen_ai.client.operation.duration``,
    or ``gen_ai.client.inference.duration`` in the latest generation), the guarded call's
    (``aiguard.call.duration``), the tokens per call, and the time to first chunk of a stream
    (latest generation only). Counters are ``Tally``-backed observable counters.
    """

    def __init__(self, provider: Any) -> None:
        meter = provider.get_meter(_SCOPE, __version__)
        self.latest = latest = semconv.latest()
        self.duration = meter.create_histogram(
            "gen_ai.client.inference.duration" if latest else "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.call_duration = meter.create_histogram(
            "aiguard.call.duration",
            unit="s",
            description="Guarded call duration, fallback chain included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens: Any = None  # the older generation's token histogram
        self.input_tokens: Any = None  # the latest generation's per-operation histograms
        self.output_tokens: Any = None
        self.first_chunk: Any = None
        if latest:
            self.input_tokens = meter.create_histogram(
                "gen_ai.client.inference.operation.input_tokens",
                unit="{token}",
                description="Input tokens per inference operation.",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            )
            self.output_tokens = meter.create_histogram(
                "gen_ai.client.inference.operation.output_tokens",
                unit="{token}",
                description="Output tokens per inference operation.",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            )
            self.first_chunk = meter.create_histogram(
                "gen_ai.client.inference.time_to_first_chunk",
                unit="s",
                description="Time to receive the first chunk of a streamed response.",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
        else:
            self.tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
            )
        self.calls = self._counter(
            meter, "aiguard.calls", "{call}", "Guarded calls, by source, reason and rollout arm."
        )
        self.cost = self._counter(meter, "aiguard.cost", "{currency}", "Cost of guarded calls.")
        self.cost_unknown = self._counter(
            meter,
            "aiguard.cost.unknown",
            "{call}",
            "Guarded calls whose cost is unknown (left out of aiguard.cost).",
        )
        self.fallbacks = self._counter(
            meter, "aiguard.fallbacks", "{call}", "Guarded calls served by a fallback handler."
        )
        self.cache_tokens = self._counter(
            meter,
            "aiguard.cache.tokens",
            "{token}",
            "Input tokens read from and written to a prompt cache.",
        )
        # the latest generation's usage counters: input, output, cache read, cache write,
        # reasoning (in that order); None in the older generation
        self.usage: tuple[Tally, ...] | None = None
        if latest:
            self.usage = tuple(
                self._counter(meter, f"gen_ai.client.inference.usage.{name}", "{token}", text)
                for name, text in _USAGE_COUNTERS
            )
        self.feedback = meter.create_counter(
            "aiguard.feedback", unit="{feedback}", description="Feedback recorded, by kind."
        )
        self.control_events = meter.create_counter(
            "aiguard.control.events",
            unit="{event}",
            description="Kills, revivals, trips, probes, recoveries and rollbacks.",
        )

    @staticmethod
    def _counter(meter: Any, name: str, unit: str, description: str) -> Tally:
        tally = Tally()
        meter.create_observable_counter(
            name, callbacks=[tally.observe], unit=unit, description=description
        )
        return tally


_USAGE_COUNTERS = (
    ("input_tokens", "Input tokens used, cached ones included."),
    ("output_tokens", "Output tokens used, reasoning ones included."),
    ("cache_read.input_tokens", "Input tokens served from a provider-managed cache."),
    ("cache_write.input_tokens", "Input tokens written to a provider-managed cache."),
    ("reasoning.output_tokens", "Output tokens used for reasoning."),
)


def meters() -> Meters | None:
    """aiguard's instruments, or None when no MeterProvider has been set (cached per provider,
    in the runtime)."""
    provider = _global_meter_provider()
    if provider is None:
        return None
    cached = runtime.meters
    if cached is None or cached[0] is not provider:
        try:
            cached = (provider, Meters(provider))
        except Exception as exc:
            _internal.report("telemetry: create instruments", exc)
            return None
        runtime.meters = cached
    return cached[1]


def start(tracer: Any, name: str) -> tuple[Any, Any]:
    """Start the call's span and make it current (so a model client's own span is its child)."""
    try:
        span = tracer.start_span(name, kind=_CLIENT)
        token = otel_context.attach(otel_trace.set_span_in_context(span))
    except Exception as exc:
        _internal.report("telemetry: start span", exc)
        return None, None
    return span, token


def stop(span: Any, token: Any) -> None:
    """Detach and end the call's span (whatever happened in between)."""
    try:
        otel_context.detach(token)
        span.end()
    except Exception as exc:
        _internal.report("telemetry: end span", exc)


def stop_once(span: Any, token: Any) -> None:
    """Detach the call's span, and end it unless a stream already did."""
    try:
        otel_context.detach(token)
        if span.is_recording():
            span.end()
    except Exception as exc:
        _internal.report("telemetry: end span", exc)


def detach(token: Any) -> None:
    """Detach the call's span from the context, leaving it open (a stream ends it later)."""
    try:
        otel_context.detach(token)
    except Exception as exc:
        _internal.report("telemetry: detach span", exc)


def end(span: Any) -> None:
    """End a span whose context was detached already."""
    try:
        span.end()
    except Exception as exc:
        _internal.report("telemetry: end span", exc)


def describe(span: Any, attributes: Mapping[str, Any], error: str | None) -> None:
    """Set the span's attributes (and error status), if it is recording."""
    try:
        if not span.is_recording():
            return
        span.set_attributes(attributes)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
    except Exception as exc:
        _internal.report("telemetry: span attributes", exc)


class child:
    """A child span around one fallback handler (the call's span is current). Telemetry
    failures when it starts or ends are reported, never raised; the handler's own exception is
    recorded on the span and passes through."""

    __slots__ = ("attributes", "name", "span", "token", "tracer")

    def __init__(self, tracer: Any, name: str, attributes: Mapping[str, Any]) -> None:
        self.tracer, self.name, self.attributes = tracer, name, attributes
        self.span: Any = None
        self.token: Any = None

    def __enter__(self) -> None:
        try:
            self.span = self.tracer.start_span(self.name, kind=SpanKind.INTERNAL,
                                               attributes=self.attributes)  # fmt: skip
            self.token = otel_context.attach(otel_trace.set_span_in_context(self.span))
        except Exception as exc:
            _internal.report("telemetry: fallback span", exc)

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        span, token = self.span, self.token
        try:
            if token is not None:
                otel_context.detach(token)
            if span is not None:
                if exc is not None:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                span.end()
        except Exception as failure:
            _internal.report("telemetry: fallback span", failure)


def evaluation(fb: Any, ids: tuple[str | None, str | None]) -> None:
    """Feedback as a ``gen_ai.evaluation.result`` event in the call's trace, and a counter."""
    m = meters()
    if m is not None:
        m.feedback.add(
            1, {"aiguard.feature": fb.feature or "", "aiguard.feedback.kind": fb.kind.value}
        )
    tracer_ = tracer()
    if tracer_ is None:
        return
    attrs: dict[str, Any] = {
        "gen_ai.evaluation.name": f"aiguard.feedback.{fb.kind.value}",
        "aiguard.call_id": fb.call_id,
        "aiguard.feedback.kind": fb.kind.value,
    }
    if fb.feature:
        attrs["aiguard.feature"] = fb.feature
    if fb.score is not None:
        attrs["gen_ai.evaluation.score.value"] = float(fb.score)
    elif fb.accepted is not None:
        attrs["gen_ai.evaluation.score.value"] = 1.0 if fb.accepted else 0.0
    label = fb.kind.value if fb.label is None else str(fb.label)
    attrs["gen_ai.evaluation.score.label"] = label
    if fb.comment:
        attrs["gen_ai.evaluation.explanation"] = fb.comment
    if fb.edit_distance is not None:
        attrs["aiguard.feedback.edit_distance"] = fb.edit_distance
    parent = None
    links: tuple[Any, ...] = ()
    trace_id, span_id = ids
    if trace_id and span_id:
        call = otel_trace.SpanContext(
            int(trace_id, 16),
            int(span_id, 16),
            is_remote=True,
            trace_flags=otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED),
        )
        parent = otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(call))
        links = (otel_trace.Link(call),)
    span = tracer_.start_span(
        f"evaluation {fb.feature or ''}".strip(), context=parent, links=links, attributes=attrs
    )
    span.add_event("gen_ai.evaluation.result", attrs)
    span.end()


def control_event(event: Any) -> None:
    """A control event (``aiguard.ControlEvent``) on the current span and as a counter."""
    span = otel_trace.get_current_span()
    if span.is_recording():
        attrs = {"aiguard.feature": event.feature, "aiguard.event.reason": event.reason}
        if event.by:
            attrs["aiguard.event.by"] = event.by
        span.add_event(f"aiguard.{event.kind.value}", attrs)
    m = meters()
    if m is not None:
        m.control_events.add(
            1, {"aiguard.feature": event.feature, "aiguard.event": event.kind.value}
        )
