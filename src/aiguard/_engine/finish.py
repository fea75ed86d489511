"""Finishing a call: its Outcome, accounting, telemetry and record, whatever its path.

The served path keeps a :class:`~aiguard._runtime.records.Served` record and builds the Outcome
only when somebody asks (``last_outcome()``, ``fn.outcome()``, an observer); every other path
builds its Outcome here and ``publish``-es it. Failures in accounting, telemetry or recording are
internal failures: logged once, counted, never raised into the call.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from time import perf_counter
from types import EllipsisType
from typing import Any

from .._runtime import errors, ids, telemetry
from .._runtime.money import pico_of, to_decimal
from .._runtime.records import Extras, Served, brief, compact, label_of, served, span_ids
from .._runtime.state import runtime
from ..exceptions import ModelTimeout, NotServed, ReviewPending
from ..fallbacks import FallbackContext
from ..outcome import MODEL_REASONS, Attempt, Outcome, Reason, Source
from .decide import BASELINE_REASONS, SERVED, Verdict, judge

MODEL = Source.MODEL  # enum attribute lookups cost ~0.1 µs: the hot path uses these names

_last: contextvars.ContextVar[Outcome[Any] | Served | None] = contextvars.ContextVar(
    "aiguard_last_outcome", default=None
)


def served_outcome(record: Served) -> Outcome[Any]:
    """The Outcome of a served call, from its record."""
    s = record.settings
    cost = record.cost
    return Outcome(
        value=record.value,
        call_id=record.call_id,
        feature=record.core.feature,
        source=Source.MODEL,
        reason=Reason.SERVED,
        confidence=record.confidence,
        threshold=s.threshold,
        latency=record.t2 - record.t0,
        model_latency=record.t1 - record.t0,
        model_result=record.value,
        started_at=ids.wall_time(record.t0),
        arm=record.arm,
        rollout_percent=s.percent,
        usage=record.usage,
        cost=None if cost is None else to_decimal(cost),
    )


def settler(core: Any) -> Callable[..., Served | FallbackContext]:
    """The per-call ``settle`` of one guard, its fixed parts bound once at decoration."""
    validators = core.validators
    context = core.context
    monitor = core.monitor
    feature = core.feature
    signature = core.signature
    acct = core.acct
    reader = acct.reader
    cost_of = acct.cost
    report = acct.report
    attributes = acct.attributes
    count = acct.record  # the feature's figures: all a served call reports without a budget
    unbudgeted = acct.budget is None
    metrics = telemetry.metrics_api  # ._METER_PROVIDER is None: no metrics

    def settle(
        s: Any,
        n: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result: Any,
        t0: float,
        t1: float,
        arm: str | None,
        span: Any,
    ) -> Served | FallbackContext:
        """Judge the model's result: a served call is accounted for and its record returned
        (the Outcome is built lazily); otherwise the context for the fallback chain."""
        reason, confidence, detail = judge(validators, result, s)
        if reason is not SERVED:
            return context(  # type: ignore[no-any-return]
                s,
                n,
                args,
                kwargs,
                reason,
                result=result,
                confidence=confidence,
                detail=detail,
                arm=arm,
                span=span,
            )
        usage = None
        if reader is not None:
            try:
                usage = reader(result)
            except Exception as exc:
                errors.report(f"usage reader of {feature!r}", exc)
        cost = None if runtime.prices is None else cost_of(usage, True, 0)
        t2 = perf_counter()
        record = served((core, n, result, confidence, s, t0, t1, t2, arm, usage, cost))
        _last.set(record)
        if monitor is not None:
            monitor(SERVED)
        if unbudgeted and metrics._METER_PROVIDER is None:
            try:
                count(MODEL, SERVED, t2 - t0, usage, cost)
            except Exception as exc:
                errors.report(f"accounting of {feature!r}", exc)
        else:
            report(MODEL, SERVED, t2 - t0, usage, cost, t1 - t0, arm=arm)
        if span is not None:  # from the figures: no Outcome is built for the span
            telemetry.describe(
                span,
                *attributes(
                    ids.call_id(n), MODEL, SERVED, confidence, s.threshold, s.percent, arm,
                    usage, cost, (), None, None, result=result,
                ),
            )  # fmt: skip
        recorder = runtime.recorder
        if recorder is not None:
            tags = s.tags
            if tags is not None:  # segments or audit: read now, the arguments are gone later
                tagged(recorder, record, tags, signature, args, kwargs, span)
            elif recorder.capture is None:  # the queue keeps no value (its label): memory bounded
                row = (core, n, confidence, s, t0, t1, t2, arm, usage, cost, label_of(result))
                if span is None:
                    recorder.put(row)
                else:
                    recorder.put(Extras(row, None, span_ids(span), None))
            else:
                recorder.put(Extras(record, (signature, args, kwargs), span_ids(span), None))
        if runtime.observers:
            notify(served_outcome(record))
        return record

    return settle


def tagged(
    recorder: Any,
    record: Served,
    tags: Any,
    signature: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    span: Any,
) -> None:
    """Queue a served call of a guard with segments or an audit share: its segment values, and,
    when its id is chosen for audit, its value and arguments (for the audit item)."""
    segments = tags.read(args, kwargs)
    audit = tags.audited_number(record.number)
    if audit or recorder.capture is not None:
        inputs = (signature, args, kwargs)
        recorder.put(Extras(record, inputs, span_ids(span), None, segments, audit))
    else:
        recorder.put(Extras(compact(record), None, span_ids(span), None, segments))


def outcome(
    core: Any,
    ctx: FallbackContext,
    t0: float,
    t1: float | None,
    source: Source | None,
    value: Any,
    attempts: tuple[Any, ...],
    spent: int = 0,
    review_id: str | None = None,
    unknown: bool = False,
) -> Outcome[Any]:
    """The Outcome of a call that was not served by the model (``unknown``: a fallback
    handler's cost is unknown, so the call's is)."""
    if source is not None and ctx.reason in BASELINE_REASONS:
        source = Source.BASELINE
    acct = core.acct
    usage = ctx.usage if ctx.usage is not None else acct.usage(ctx.model_result)
    failure = ctx.exception
    if failure is None and ctx.reason is Reason.TIMEOUT:  # aiguard's own timeout fired
        failure = TimeoutError(ctx.detail or "timed out")
    cost = acct.cost(usage, ctx.reason in MODEL_REASONS, spent, failure)
    prior = ctx.model_attempts
    if prior:  # retried: every try is an attempt, and the call costs what they all cost
        extra = sum_cost(prior)
        if ctx.model_result is None:  # the last try failed: it is the last of them
            cost = None if extra is None else extra + spent
        else:
            cost = None if cost is None or extra is None else cost + extra
        attempts = (*prior, *attempts)
    if unknown:
        cost = None
    return Outcome(
        value=value,
        call_id=ctx.call_id,
        feature=core.feature,
        source=source,
        reason=ctx.reason,
        confidence=ctx.confidence,
        threshold=ctx.threshold,
        latency=perf_counter() - t0,
        model_latency=None if t1 is None else t1 - t0,
        exception=ctx.exception,
        attempts=attempts,
        review_id=review_id,
        model_result=ctx.model_result,
        detail=ctx.detail,
        started_at=ids.wall_time(t0),
        arm=ctx.arm,
        rollout_percent=ctx.rollout_percent,
        usage=usage,
        cost=None if cost is None else to_decimal(cost),
    )


def sum_cost(attempts: tuple[Attempt, ...]) -> int | None:
    """What model tries cost in all, in pico-units; None if one's cost is unknown."""
    total = 0
    for attempt in attempts:
        if attempt.cost is None:
            return None
        total += pico_of(attempt.cost)
    return total


def model_seconds(
    ctx: FallbackContext,
    t0: float,
    t1: float | None,
    tried_at: float | EllipsisType | None,
    ended: float,
) -> float | None:
    """How long the model try that ``ctx`` describes ran, for the duration metric: from
    ``tried_at`` (``...``: the call's start) to ``t1``, or to ``ended`` (when the fallback chain
    took over) if the try has no end of its own (aiguard's timeout fired, a stream failed before
    its first chunk). None when the model was not called, or when ``tried_at`` is None: that try
    is one of ``ctx.model_attempts``, each of which has its own latency."""
    if tried_at is None or ctx.reason not in MODEL_REASONS:
        return None
    start = t0 if tried_at is ... else tried_at
    return (ended if t1 is None else t1) - start


def conclude(
    core: Any,
    ctx: FallbackContext,
    t0: float,
    t1: float | None,
    verdict: Verdict,
    model: float | None = None,
) -> Outcome[Any]:
    """The end of the fallback chain: publish its Outcome; raise when nothing was served (the
    model's exception, ModelTimeout or NotServed) or a review is pending without a
    placeholder. ``model``: the last model try's duration (``model_seconds``)."""
    for attempt in verdict.store_failures:
        if attempt.error is not None:
            errors.report(f"fallback {attempt.handler} of {core.feature!r}", attempt.error)
    handler = verdict.handler
    queued = verdict.queued
    result = outcome(
        core,
        ctx,
        t0,
        t1,
        None if handler is None else handler.source,
        verdict.value,
        verdict.attempts,
        verdict.spent,
        None if queued is None else queued.item.id,
        verdict.unknown,
    )
    publish(core, result, ctx.span, ctx=ctx, spent=verdict.spent, model=model)
    if handler is not None:
        if queued is not None and not queued.has_placeholder:
            raise ReviewPending(queued.item.id, result)
        return result
    if ctx.exception is not None:
        raise ctx.exception
    if ctx.reason is Reason.TIMEOUT:
        raise ModelTimeout(
            result, f"feature {core.feature!r}: {ctx.detail} and no fallback answered"
        )
    raise NotServed(result)


def publish(
    core: Any,
    result: Outcome[Any],
    span: Any = None,
    *,
    count: bool = True,
    ctx: FallbackContext | None = None,
    spent: int = 0,
    model: float | EllipsisType | None = ...,
    call: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
) -> None:
    """Make ``result`` the last outcome, and account for it everywhere it counts. ``spent``:
    what the fallback handlers cost, counted in the budget even when the model's cost (and so
    the call's) is unknown. ``model``: the duration of the last model try, for the metrics
    (``...``: ``result.model_latency``); the model's earlier tries are ``ctx.model_attempts``,
    or (with no ``ctx``: a served retry, a stream) ``result.attempts``. ``call``: the call's
    arguments, when there is no ``ctx`` (for segments and audit sampling)."""
    _last.set(result)
    if count and core.monitor is not None:
        core.monitor(result.reason)
    acct = core.acct
    cost = result.cost
    exc = result.exception
    acct.report(
        result.source,
        result.reason,
        result.latency,
        result.usage,
        None if cost is None else pico_of(cost),
        result.model_latency if model is ... else model,
        type(exc).__qualname__
        if exc is not None
        else ("timeout" if result.reason is Reason.TIMEOUT else None),
        spent,
        arm=result.arm,
        tries=ctx.model_attempts if ctx is not None else result.attempts,
        first_chunk=result.time_to_first_chunk,
    )
    watch = core.watch  # the first calls' watch: None once its window is over
    if watch is not None:
        watch(result)
    if span is not None:
        model = getattr(span, "kind", None) is telemetry.CLIENT  # the model call's own span
        telemetry.describe(span, *acct.span_attributes(result, model=model))
        if (
            model
            and (result.exception is not None or result.reason is Reason.INTERRUPTED)
            and span.is_recording()
        ):
            try:  # the model failed: an error where error views look
                telemetry.exception_event(span, result.exception, result.detail)
            except Exception as exc:
                errors.report("telemetry: exception event", exc)
    recorder = runtime.recorder
    if recorder is not None:
        if ctx is not None:
            call = (ctx.args, ctx.kwargs)
        segments = None
        audit = False
        tags = core.settings.tags
        if tags is not None:
            if call is not None:
                segments = tags.read(*call)
            audit = (
                result.reason is SERVED and result.source is MODEL and tags.audited(result.call_id)
            )
        if recorder.capture is None and not audit:  # the figures only: no value held
            recorder.put(Extras(brief(result), None, span_ids(span), acct.model, segments))
        else:
            inputs = None if call is None else (core.signature, *call)
            recorder.put(Extras(result, inputs, span_ids(span), acct.model, segments, audit))
    if runtime.observers:
        notify(result)


def notify(result: Outcome[Any]) -> None:
    for observer in runtime.observers:
        try:
            observer(result)
        except Exception as exc:
            errors.report("outcome observer", exc)


def last_outcome() -> Outcome[Any] | None:
    """The Outcome of the latest guarded call in this thread or asyncio task, if any.

    Example:
        >>> import aiguard
        >>> @aiguard.guard("greet")
        ... def greet(name: str) -> str:
        ...     return "hi " + name
        >>> greet("ada")
        'hi ada'
        >>> aiguard.last_outcome().call_id.startswith("ag_")
        True
    """
    last = _last.get()
    if last is None or last.__class__ is Outcome:
        return last
    result = served_outcome(last)  # type: ignore[arg-type]
    _last.set(result)
    return result
