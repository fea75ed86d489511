"""OpenTelemetry: a span per guarded call, metrics, and control events; API only.

aiguard never installs a TracerProvider or MeterProvider. Until the application sets one, the
global provider is unset, and ``tracer()`` / ``meters()`` return None after one attribute read, so
the telemetry path costs almost nothing; a provider set later is picked up on the next call.
Everything here is wrapped so that a telemetry failure never fails a call: it is logged once and
counted (``runtime.error_counts``).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from opentelemetry.metrics import Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._version import __version__
from . import errors as _internal
from . import semconv, serialize
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
_INTERNAL = SpanKind.INTERNAL
CLIENT, INTERNAL = _CLIENT, _INTERNAL


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
        semconv.current[0] = semconv.latest()  # the conventions generation, per provider
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
        self.shadow = self._counter(
            meter,
            "aiguard.shadow.calls",
            "{call}",
            "Shadow candidate calls, by outcome (ran, failed, timeout, skipped, dropped).",
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
            description="Control events: kills, revivals, trips, probes, recoveries, rollbacks, "
            "drift, and settings that reject every result (misconfigured).",
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


def abort(span: Any, token: Any, exc: BaseException) -> None:
    """The call ended by an exception that is not aiguard's to handle (cancellation, Ctrl-C,
    an outer deadline): its span is an error of that type (unless a stream ended it already),
    then detached and ended."""
    try:  # an Exception was recorded by the call's own end (publish): only the others here
        if not isinstance(exc, Exception) and span.is_recording():
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
    except Exception as failure:
        _internal.report("telemetry: end span", failure)
    stop_once(span, token)


def stop_once(span: Any, token: Any) -> None:
    """Detach the call's span, and end it unless a stream already did."""
    try:
        if token is not None:
            otel_context.detach(token)
        if span.is_recording():
            span.end()
    except Exception as exc:
        _internal.report("telemetry: end span", exc)


def begin(tracer: Any, name: str, kind: SpanKind, attributes: Mapping[str, Any]) -> tuple[Any, Any]:
    """Start the call's span with what is known before the call (so a sampler sees it), and make
    it current (a model client's own spans are its children)."""
    try:
        span = tracer.start_span(name, kind=kind, attributes=attributes)
        token = otel_context.attach(otel_trace.set_span_in_context(span))
    except Exception as exc:
        _internal.report("telemetry: start span", exc)
        return None, None
    return span, token


def exception_event(span: Any, exc: BaseException | None, detail: str | None) -> None:
    """The model call's failure on its span: status ERROR and an ``exception`` event, with the
    exception's type (its message only through ``redact=``: ``exception_attributes``); aiguard's
    own timeout is ``timeout`` with its detail."""
    if exc is None:
        span.add_event(
            "exception", {"exception.type": "timeout", "exception.message": detail or "timed out"}
        )
        span.set_status(Status(StatusCode.ERROR, "timeout"))
        return
    span.add_event("exception", exception_attributes(exc))
    span.set_status(Status(StatusCode.ERROR, safe_text(exc)))


def failed_try(span: Any, exc: BaseException) -> None:
    """A model try that failed and was retried (``retry=``): an ``exception`` event on the model
    call's span, its status left to the call's last try."""
    try:
        if span.is_recording():
            span.add_event("exception", {**exception_attributes(exc), "aiguard.retried": True})
    except Exception as failure:
        _internal.report("telemetry: exception event", failure)


def model_span_done(
    span: Any,
    tracer: Any,
    name: str,
    model_attributes: Mapping[str, Any],
    exc: BaseException | None,
    failed: bool,
    detail: str | None,
    call_attributes: Mapping[str, Any],
) -> Any:
    """The model was called and the call goes on to the fallback chain: end the model call's
    CLIENT span (an error, with an exception event, when the model failed) and start the
    guarded call's INTERNAL span from the same start, for the rest of the call: a sibling of the
    model call's span, or its child when that span is the trace's root (one trace either way).
    Returns the new span (None when it cannot be made)."""
    try:
        if not span.is_recording():
            return None
        span.set_attributes(model_attributes)
        if failed:
            exception_event(span, exc, detail)
    except Exception as exc_:
        _internal.report("telemetry: model span", exc_)
    try:
        span.end()
    except Exception as exc_:  # a span processor failing on end: the call still gets its span
        _internal.report("telemetry: model span", exc_)
    try:
        # a sibling of the model call's span; when that span is a trace's root, its child (a
        # root of its own would start another trace)
        parent = getattr(span, "parent", None)
        context = otel_trace.set_span_in_context(
            otel_trace.NonRecordingSpan(parent) if parent is not None else span
        )
        return tracer.start_span(
            name,
            context=context,
            kind=_INTERNAL,
            attributes=call_attributes,
            start_time=getattr(span, "start_time", None),
            links=(otel_trace.Link(span.get_span_context()),),
        )
    except Exception as exc_:
        _internal.report("telemetry: model span", exc_)
        return None


def attach(span: Any) -> Any:
    """Make ``span`` current; its token (None if that failed)."""
    try:
        return otel_context.attach(otel_trace.set_span_in_context(span))
    except Exception as exc:
        _internal.report("telemetry: attach span", exc)
        return None


def detach(token: Any) -> None:
    """Detach the call's span from the context, leaving it open (a stream ends it later)."""
    try:
        otel_context.detach(token)
    except Exception as exc:
        _internal.report("telemetry: detach span", exc)


def end(span: Any) -> None:
    """End a span whose context was detached already (unless it was ended)."""
    try:
        if span.is_recording():
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

    __slots__ = ("attributes", "name", "parent", "span", "token", "tracer")

    def __init__(
        self, tracer: Any, name: str, attributes: Mapping[str, Any], parent: Any = None
    ) -> None:
        self.tracer, self.name, self.attributes = tracer, name, attributes
        self.span: Any = None
        self.token: Any = None
        self.parent = parent  # the call's span (else the current one)

    def __enter__(self) -> None:
        try:
            context = None
            if self.parent is not None:
                context = otel_trace.set_span_in_context(self.parent)
            self.span = self.tracer.start_span(self.name, context=context,
                                               kind=SpanKind.INTERNAL,
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
                    span.add_event("exception", exception_attributes(exc))
                    span.set_status(Status(StatusCode.ERROR, safe_text(exc)))
                span.end()
        except Exception as failure:
            _internal.report("telemetry: fallback span", failure)


def evaluation(fb: Any, ids: tuple[str | None, str | None], response_id: str | None = None) -> None:
    """Feedback as a ``gen_ai.evaluation.result`` event, and a counter.

    The event is on a short span of its own (``evaluation {feature}``), a child of whatever span
    is current where the feedback is given (else the root of a new trace), with a Link to the
    call's span: the call's trace is not stretched to the time of the feedback. The score label
    is plain text (a structured label as compact JSON); the comment goes through ``redacted``.
    """
    m = meters()
    if m is not None:
        m.feedback.add(
            1, {"aiguard.feature": fb.feature or "", "aiguard.feedback.kind": fb.kind.value}
        )
    tracer_ = tracer()
    if tracer_ is None:
        return
    result: dict[str, Any] = {"gen_ai.evaluation.name": f"aiguard.feedback.{fb.kind.value}"}
    if fb.score is not None:
        result["gen_ai.evaluation.score.value"] = float(fb.score)
    elif fb.accepted is not None:
        result["gen_ai.evaluation.score.value"] = 1.0 if fb.accepted else 0.0
    result["gen_ai.evaluation.score.label"] = _label(fb)
    if fb.comment:
        explanation = redacted(fb.comment)
        if explanation:
            result["gen_ai.evaluation.explanation"] = explanation
    if response_id:
        result["gen_ai.response.id"] = response_id
    attrs: dict[str, Any] = {
        **result,
        "aiguard.call_id": fb.call_id,
        "aiguard.feedback.kind": fb.kind.value,
    }
    if fb.feature:
        attrs["aiguard.feature"] = fb.feature
    if fb.edit_distance is not None:
        attrs["aiguard.feedback.edit_distance"] = fb.edit_distance
    links: tuple[Any, ...] = ()
    trace_id, span_id = ids
    if trace_id and span_id:
        call = otel_trace.SpanContext(
            int(trace_id, 16),
            int(span_id, 16),
            is_remote=True,
            trace_flags=otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED),
        )
        links = (otel_trace.Link(call, {"aiguard.call_id": fb.call_id}),)
    span = tracer_.start_span(
        f"evaluation {fb.feature or ''}".strip(),
        kind=SpanKind.INTERNAL,
        links=links,
        attributes=attrs,
    )
    try:
        span.add_event("gen_ai.evaluation.result", result)
    finally:
        span.end()


def _label(fb: Any) -> str:
    """The score label: the feedback's label as plain text (a str as itself, anything else as
    compact JSON), through the ``redact=`` hook when one is configured; the kind's name when
    there is no label (or the hook fails)."""
    if fb.label is None:
        return str(fb.kind.value)
    text = fb.label if isinstance(fb.label, str) else serialize.dumps(fb.label)
    if runtime.redact is None:
        return _cut(text)
    shown = redacted(text, default=fb.kind.value)
    return str(fb.kind.value) if shown is None else shown


# -- free texts: what telemetry may show ----------------------------------------------------------

MAX_TEXT = 4096  # characters of one redacted text kept on a span (more is cut, and says so)


def _cut(text: str) -> str:
    if len(text) <= MAX_TEXT:
        return text
    return f"{text[:MAX_TEXT]}... ({len(text)} characters)"


def redacted(text: str, default: str | None = None) -> str | None:
    """``text`` (an exception message, a feedback comment) as telemetry may show it.

    With a ``redact=`` hook configured (``aiguard.configure(redact=...)``, the one applied to
    captured inputs), the hook is given the text and what it returns is shown: a str (cut after
    ``MAX_TEXT`` characters), or None to leave it out. Without a hook, or when the hook raises
    or returns something else: ``default`` (the failure is reported once and counted).
    ``configure(redact=lambda value: value)`` shows texts as they are.
    """
    hook = runtime.redact
    if hook is None:
        return default
    try:
        shown = hook(text)
    except Exception as exc:
        _internal.report("telemetry: redact hook", exc)
        return default
    if shown is None:
        return None
    if not isinstance(shown, str):
        _internal.report(
            "telemetry: redact hook",
            TypeError(f"the redact hook returned a {type(shown).__name__}, not text"),
        )
        return default
    return _cut(shown)


def safe_text(exc: BaseException) -> str:
    """What telemetry may say of exception ``exc`` (a span's status description, a detail):
    its type name, and its message only as the ``redact=`` hook returns it.

    Example: ``ValueError`` without a hook; ``ValueError: bad key sk-***`` with a hook that
    masks keys.
    """
    kind = type(exc).__qualname__
    try:
        message = str(exc)
    except Exception:
        return kind
    shown = redacted(message) if message else None
    return f"{kind}: {shown}" if shown else kind


def exception_attributes(exc: BaseException) -> dict[str, str]:
    """The attributes of an ``exception`` span event for ``exc``, instead of
    ``span.record_exception(exc)`` (which puts the message and traceback on the span as they
    are): ``exception.type`` always; ``exception.message`` and ``exception.stacktrace`` only
    as the ``redact=`` hook returns them."""
    cls = type(exc)
    module = cls.__module__
    attrs = {
        "exception.type": cls.__qualname__
        if module in ("builtins", "__main__")
        else f"{module}.{cls.__qualname__}"
    }
    if runtime.redact is None:
        return attrs
    try:
        message = str(exc)
        stack = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    except Exception:
        return attrs
    shown = redacted(message) if message else None
    if shown:
        attrs["exception.message"] = shown
    shown_stack = redacted(stack)
    if shown_stack:
        attrs["exception.stacktrace"] = shown_stack
    return attrs


# Reasons whose detail, when no exception is behind it, aiguard writes from configuration and
# figures alone (a kill's reason, a budget's figures, a threshold, its own timeout, a stream cut
# by its own timeout or abandoned): shown as they are. Any other detail can hold what an
# exception or a validator said, or a piece of the model's output.
_OWN_DETAIL = frozenset(
    {"low_confidence", "killed", "auto_killed", "over_budget", "not_in_rollout",
     "missing_rollout_key", "timeout", "interrupted", "abandoned"}
)  # fmt: skip


def detail_text(reason: str, detail: str, exception: BaseException | None) -> str | None:
    """A call's detail as its span may show it (``aiguard.detail``, the status description).

    aiguard's own texts as they are; a text that can hold an exception's message, a validator's
    words or model output, only as the ``redact=`` hook returns it; without a hook, the
    exception's type name (nothing when there is no exception).
    """
    if exception is None and reason in _OWN_DETAIL:
        if reason == "missing_rollout_key":  # "what: ExcType: message": up to the type only
            return ": ".join(detail.split(": ")[:2])
        return detail
    default = None if exception is None else type(exception).__qualname__
    return redacted(detail, default)


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
