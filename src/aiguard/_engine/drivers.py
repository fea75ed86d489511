"""The two drivers: they only execute what the engine decides.

``wrap_sync`` and ``wrap_async`` build the wrapper of a guarded function once, at decoration;
per call they read the compiled settings, run the pre-call checks, call the model (under the
timeout: a worker thread for sync calls, ``asyncio.timeout`` for async ones), hand the result to
``finish.settle`` and, when it is not served, walk the fallback chain. Sync and async differ
only in ``await`` and in how the timeout is enforced.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, ParamSpec, TypeVar

from .._runtime import deadlines, ids, telemetry
from .._runtime.records import Served
from .._runtime.state import runtime
from ..fallbacks import Fallback
from ..outcome import Outcome
from . import decide, finish
from .core import Core

P = ParamSpec("P")
R = TypeVar("R")


def wrap_sync(fn: Callable[P, R], core: Core) -> Any:
    Expired = deadlines.Expired
    timed = deadlines.call
    stuck = core.blocked  # [True] once a call was found blocked in C: the pool from then on
    settle = finish.settler(core)
    span_name = core.acct.span_name
    api = telemetry.trace_api  # api._TRACER_PROVIDER is None: no tracing, one attribute read

    def run(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if api._TRACER_PROVIDER is None:
            return body(args, kwargs, None)
        tracer = telemetry.tracer()
        span, token = (None, None) if tracer is None else telemetry.start(tracer, span_name)
        if span is None:
            return body(args, kwargs, None)
        try:
            return body(args, kwargs, span)
        finally:
            telemetry.stop(span, token)

    def body(args: tuple[Any, ...], kwargs: dict[str, Any], span: Any) -> Any:
        s = core.settings
        if s.generation != runtime.generation:
            s = core.refresh()
        n = ids.next_number()
        timeout = s.timeout
        t0 = perf_counter()
        arm = None
        pre = s.pre
        if pre is not None:
            blocked, arm, detail = pre(args, kwargs)
            if blocked is not None:
                ctx = core.context(s, n, args, kwargs, blocked, detail=detail, arm=arm, span=span)
                return drive_sync(core, ctx, t0, None)
        try:
            if timeout is None:
                result = fn(*args, **kwargs)
            elif stuck[0]:
                result = deadlines.pool().call(fn, args, kwargs, timeout)
            else:
                result = timed(fn, args, kwargs, timeout, stuck)
        except Expired:
            return drive_sync(core, core.failed(s, n, args, kwargs, None, arm, span), t0, None)
        except core.catch as exc:
            ctx = core.caught(s, n, args, kwargs, exc, t0, arm, span)
            return drive_sync(core, ctx, t0, perf_counter())
        except Exception as exc:
            core.unhandled(s, n, args, kwargs, exc, t0, span=span, arm=arm)
            raise
        t1 = perf_counter()
        out = settle(s, n, args, kwargs, result, t0, t1, arm, span)
        return out if out.__class__ is Served else drive_sync(core, out, t0, t1)

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        record = body(args, kwargs, None) if api._TRACER_PROVIDER is None else run(args, kwargs)
        return record.value  # type: ignore[no-any-return]

    def outcome(*args: P.args, **kwargs: P.kwargs) -> Outcome[R]:
        record = body(args, kwargs, None) if api._TRACER_PROVIDER is None else run(args, kwargs)
        return finish.served_outcome(record) if record.__class__ is Served else record

    return _attach(call, outcome, core)


def drive_sync(core: Core, ctx: Any, t0: float, t1: float | None) -> Outcome[Any]:
    """Run the fallback chain that ``decide.flow`` walks, then conclude the call."""
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
        return finish.conclude(core, ctx, t0, t1, stop.value)


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


def wrap_async(fn: Callable[P, Awaitable[R]], core: Core) -> Any:
    timeout_cm = asyncio.timeout
    settle = finish.settler(core)
    span_name = core.acct.span_name
    api = telemetry.trace_api  # api._TRACER_PROVIDER is None: no tracing, one attribute read

    async def run(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if api._TRACER_PROVIDER is None:
            return await body(args, kwargs, None)
        tracer = telemetry.tracer()
        span, token = (None, None) if tracer is None else telemetry.start(tracer, span_name)
        if span is None:
            return await body(args, kwargs, None)
        try:
            return await body(args, kwargs, span)
        finally:
            telemetry.stop(span, token)

    async def body(args: tuple[Any, ...], kwargs: dict[str, Any], span: Any) -> Any:
        s = core.settings
        if s.generation != runtime.generation:
            s = core.refresh()
        n = ids.next_number()
        timeout = s.timeout
        limit = None
        t0 = perf_counter()
        arm = None
        pre = s.pre
        if pre is not None:
            blocked, arm, detail = pre(args, kwargs)
            if blocked is not None:
                ctx = core.context(s, n, args, kwargs, blocked, detail=detail, arm=arm, span=span)
                return await drive_async(core, ctx, t0, None)
        try:
            if timeout is None:
                result = await fn(*args, **kwargs)
            else:
                async with timeout_cm(timeout) as limit:
                    result = await fn(*args, **kwargs)
        except core.catch as exc:
            if limit is not None and limit.expired():
                ctx = core.failed(s, n, args, kwargs, None, arm, span)
                return await drive_async(core, ctx, t0, None)
            ctx = core.caught(s, n, args, kwargs, exc, t0, arm, span)
            return await drive_async(core, ctx, t0, perf_counter())
        except Exception as exc:
            if limit is not None and limit.expired():
                ctx = core.failed(s, n, args, kwargs, None, arm, span)
                return await drive_async(core, ctx, t0, None)
            core.unhandled(s, n, args, kwargs, exc, t0, span=span, arm=arm)
            raise
        t1 = perf_counter()
        out = settle(s, n, args, kwargs, result, t0, t1, arm, span)
        return out if out.__class__ is Served else await drive_async(core, out, t0, t1)

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        traced = api._TRACER_PROVIDER is not None
        record = await (run(args, kwargs) if traced else body(args, kwargs, None))
        return record.value  # type: ignore[no-any-return]

    async def outcome(*args: P.args, **kwargs: P.kwargs) -> Outcome[R]:
        traced = api._TRACER_PROVIDER is not None
        record = await (run(args, kwargs) if traced else body(args, kwargs, None))
        return finish.served_outcome(record) if record.__class__ is Served else record

    return _attach(call, outcome, core)


async def drive_async(core: Core, ctx: Any, t0: float, t1: float | None) -> Outcome[Any]:
    """The same as ``drive_sync``, awaiting each handler."""
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
        return finish.conclude(core, ctx, t0, t1, stop.value)


def _attach(call: Callable[..., Any], outcome: Callable[..., Any], core: Core) -> Any:
    functools.update_wrapper(outcome, call.__wrapped__)  # type: ignore[attr-defined]
    outcome.__name__ = outcome.__qualname__ = f"{call.__qualname__}.outcome"
    call.outcome = outcome  # type: ignore[attr-defined]
    call.feature = core.feature  # type: ignore[attr-defined]
    call._aiguard_core = core  # type: ignore[attr-defined]
    return call
