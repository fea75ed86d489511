"""Running the fallback chain that ``decide.flow`` walks, for a call that was not served: each
handler in a child span when the call has one, then the call concluded (``finish.conclude``).
Used by the drivers and by streams that fail before their first chunk."""

from __future__ import annotations

import contextlib
import dataclasses
from time import perf_counter
from types import EllipsisType
from typing import Any

from .._runtime import telemetry
from ..fallbacks import Escalate, Fallback
from ..outcome import Outcome, Reason
from . import decide, escalation, finish
from .core import Core


def drive_sync(
    core: Core,
    ctx: Any,
    t0: float,
    t1: float | None,
    tried_at: float | EllipsisType | None = ...,
) -> Outcome[Any]:
    """Run the fallback chain that ``decide.flow`` walks, then conclude the call.
    ``tried_at``: when the model try ``ctx`` describes started (see ``finish.model_seconds``)."""
    ended = perf_counter()
    ctx, made, token = split(core, ctx)
    flow = decide.flow(core.chain, ctx.reason)
    try:
        handler = next(flow)
        while True:
            try:
                with _handler_span(ctx, handler):
                    if isinstance(handler, Escalate):  # timed and priced: never raises
                        ran = escalation.run_sync(core.escalations[id(handler)], ctx)
                        sent: tuple[bool, Any] = (ran.error is None, ran)
                    else:
                        sent = (True, handler.handle(ctx))
            except Exception as exc:
                sent = (False, exc)
            handler = flow.send(sent)
    except StopIteration as stop:
        model = finish.model_seconds(ctx, t0, t1, tried_at, ended)
        return finish.conclude(core, ctx, t0, t1, stop.value, model)
    finally:
        if made is not None:
            telemetry.stop_once(made, token)


def split(core: Core, ctx: Any) -> tuple[Any, Any, Any]:
    """A call whose model was called goes on to the fallback chain: its model call's span
    (CLIENT) ends there, an error if the model failed, and the rest of the call gets the
    guarded call's own span (INTERNAL), current until the call ends. ``(ctx, the new span or
    None, its context token)``."""
    span = ctx.span
    if span is None or getattr(span, "kind", None) is not telemetry.CLIENT:
        return ctx, None, None
    tracer = telemetry.tracer()
    if tracer is None:
        return ctx, None, None
    acct = core.acct
    timed_out = ctx.exception is None and ctx.reason is Reason.TIMEOUT
    failed = ctx.exception is not None or timed_out
    try:
        model = acct.model_attributes(ctx.model_result, ctx.exception, timed_out)
    except Exception:
        model = {}
    model["aiguard.call_id"] = ctx.call_id
    made = telemetry.model_span_done(
        span, tracer, acct.call_span_name, model, ctx.exception, failed, ctx.detail,
        acct.call_start_attributes,
    )  # fmt: skip
    if made is None:
        return ctx, None, None
    return dataclasses.replace(ctx, span=made), made, telemetry.attach(made)


def _handler_span(ctx: Any, handler: Fallback) -> Any:
    """A child span around one fallback handler, when the call has a span."""
    if ctx.span is None:
        return contextlib.nullcontext()
    tracer = telemetry.tracer()
    attributes = {
        "aiguard.feature": ctx.feature,
        "aiguard.call_id": ctx.call_id,
        "aiguard.fallback.handler": handler.name,
        "aiguard.source": handler.source.value,
        "aiguard.reason": ctx.reason.value,
    }
    if tracer is None:
        return contextlib.nullcontext()
    return telemetry.child(tracer, f"aiguard.fallback {handler.name}", attributes, ctx.span)


async def drive_async(
    core: Core,
    ctx: Any,
    t0: float,
    t1: float | None,
    tried_at: float | EllipsisType | None = ...,
) -> Outcome[Any]:
    """The same as ``drive_sync``, awaiting each handler."""
    ended = perf_counter()
    ctx, made, token = split(core, ctx)
    flow = decide.flow(core.chain, ctx.reason)
    try:
        handler = next(flow)
        while True:
            try:
                with _handler_span(ctx, handler):
                    if isinstance(handler, Escalate):  # timed and priced: never raises
                        ran = await escalation.run_async(core.escalations[id(handler)], ctx)
                        sent: tuple[bool, Any] = (ran.error is None, ran)
                    else:
                        sent = (True, await handler.handle_async(ctx))
            except Exception as exc:
                sent = (False, exc)
            handler = flow.send(sent)
    except StopIteration as stop:
        model = finish.model_seconds(ctx, t0, t1, tried_at, ended)
        return finish.conclude(core, ctx, t0, t1, stop.value, model)
    finally:
        if made is not None:
            telemetry.stop_once(made, token)
