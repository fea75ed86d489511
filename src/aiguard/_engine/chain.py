"""Running the fallback chain that ``decide.flow`` walks, for a call that was not served: each
handler in a child span when the call has one, then the call concluded (``finish.conclude``).
Used by the drivers and by streams that fail before their first chunk."""

from __future__ import annotations

import contextlib
from time import perf_counter
from types import EllipsisType
from typing import Any

from .._runtime import telemetry
from ..fallbacks import Fallback
from ..outcome import Outcome
from . import decide, finish
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
    flow = decide.flow(core.chain)
    try:
        handler = next(flow)
        while True:
            try:
                with _handler_span(ctx, handler):
                    value = handler.handle(ctx)
            except Exception as exc:
                handler = flow.send((False, exc))
            else:
                handler = flow.send((True, value))
    except StopIteration as stop:
        model = finish.model_seconds(ctx, t0, t1, tried_at, ended)
        return finish.conclude(core, ctx, t0, t1, stop.value, model)


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
    return telemetry.child(tracer, f"aiguard.fallback {handler.name}", attributes)


async def drive_async(
    core: Core,
    ctx: Any,
    t0: float,
    t1: float | None,
    tried_at: float | EllipsisType | None = ...,
) -> Outcome[Any]:
    """The same as ``drive_sync``, awaiting each handler."""
    ended = perf_counter()
    flow = decide.flow(core.chain)
    try:
        handler = next(flow)
        while True:
            try:
                with _handler_span(ctx, handler):
                    value = await handler.handle_async(ctx)
            except Exception as exc:
                handler = flow.send((False, exc))
            else:
                handler = flow.send((True, value))
    except StopIteration as stop:
        model = finish.model_seconds(ctx, t0, t1, tried_at, ended)
        return finish.conclude(core, ctx, t0, t1, stop.value, model)
