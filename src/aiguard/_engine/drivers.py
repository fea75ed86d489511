"""The two drivers: they only execute what the engine decides.

``wrap_sync`` and ``wrap_async`` build the wrapper of a guarded function once, at decoration;
per call they read the compiled settings, run the pre-call checks, call the model (under the
timeout: a worker thread for sync calls, ``asyncio.timeout`` for async ones), hand the result to
``finish.settle`` and, when it is not served, walk the fallback chain. Sync and async differ
only in ``await`` and in how the timeout is enforced.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from time import perf_counter
from typing import Any, ParamSpec, TypeVar

from .._runtime import deadlines, ids, telemetry
from .._runtime.records import Served
from .._runtime.state import runtime
from ..cache import MISS
from ..outcome import Outcome
from . import caching, finish, retrying, streams
from .chain import drive_async, drive_sync
from .core import Core
from .streams import StreamRecord

P = ParamSpec("P")
R = TypeVar("R")


def wrap_sync(fn: Callable[P, R], core: Core) -> Any:
    Expired = deadlines.Expired
    timed = deadlines.call
    stuck = core.blocked  # [True] once a call was found blocked in C: the pool from then on
    settle = finish.settler(core)
    api = telemetry.trace_api  # api._TRACER_PROVIDER is None: no tracing, one attribute read
    kind = streams.kind
    streamy = core.spec.stream is not False
    declared = core.spec.stream in ("pass", "buffer")
    cache = core.cache
    shade = None if core.shadow is None else core.shadow.after_sync  # a shadow candidate

    def run(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if api._TRACER_PROVIDER is None:
            return body(args, kwargs, None)
        tracer = telemetry.tracer()
        if tracer is None:
            return body(args, kwargs, None)
        checked = _checked(core, args, kwargs)  # the span's kind says whether a model is called
        span, token = _begin(tracer, core, checked)
        if span is None:
            return body(args, kwargs, None, checked)
        try:
            record = body(args, kwargs, span, checked)
        except BaseException as exc:
            telemetry.abort(span, token, exc)  # a stream may have ended it already
            raise
        if record.__class__ is StreamRecord:
            telemetry.detach(token)  # the stream ends its span when it ends
        else:
            telemetry.stop_once(span, token)
        return record

    def body(args: tuple[Any, ...], kwargs: dict[str, Any], span: Any, checked: Any = None) -> Any:
        s = core.settings
        if s.generation != runtime.generation:
            s = core.refresh()
        n = ids.next_number()
        timeout = s.call_timeout
        t0 = perf_counter()
        arm = None
        pre = s.pre
        if checked is not None or pre is not None:
            blocked, arm, detail = checked or pre(args, kwargs)  # type: ignore[misc]
            if blocked is not None:
                ctx = core.context(s, n, args, kwargs, blocked, detail=detail, arm=arm, span=span)
                return drive_sync(core, ctx, t0, None)
        key = MISS
        if cache is not None:
            key = cache.key(args, kwargs)
            entry = cache.lookup(key)
            if entry is not MISS:
                return caching.hit(core, s, n, args, kwargs, entry, t0, arm, span)
        try:
            if timeout is None:
                result = fn(*args, **kwargs)
            else:
                result = timed(fn, args, kwargs, timeout, stuck)
        except Expired:
            return drive_sync(core, core.failed(s, n, args, kwargs, None, arm, span), t0, None)
        except core.catch as exc:
            ctx = core.caught(s, n, args, kwargs, exc, t0, arm, span)
            if core.retry is not None:
                again = retrying.again_sync(core, s, n, args, kwargs, exc, t0, t0, arm, span)
                if cache is not None:
                    cache.keep(key, again)
                return again
            return drive_sync(core, ctx, t0, perf_counter())
        except Exception as exc:
            core.unhandled(s, n, args, kwargs, exc, t0, span=span, arm=arm)
            raise
        t1 = perf_counter()
        if streamy and kind(result) == 1:
            return StreamRecord(streams.start_sync(core, s, n, args, kwargs, result, t0, arm, span))
        out = settle(s, n, args, kwargs, result, t0, t1, arm, span)
        if out.__class__ is Served:
            if cache is not None:
                cache.keep(key, out)
            return out
        return drive_sync(core, out, t0, t1)

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        record = body(args, kwargs, None) if api._TRACER_PROVIDER is None else run(args, kwargs)
        if shade is not None:
            shade(record, args, kwargs)
        if declared and record.__class__ is not StreamRecord:  # a fallback's answer, as a stream
            return streams.Replay(record.value, record)  # type: ignore[return-value]
        return record.value  # type: ignore[no-any-return]

    def outcome(*args: P.args, **kwargs: P.kwargs) -> Outcome[R]:
        record = body(args, kwargs, None) if api._TRACER_PROVIDER is None else run(args, kwargs)
        if shade is not None:
            shade(record, args, kwargs)
        if record.__class__ is Served:
            return finish.served_outcome(record)
        if record.__class__ is StreamRecord:
            return streams.consume(record.value)
        return record  # type: ignore[no-any-return]

    return _attach(call, outcome, core)


def wrap_async(fn: Callable[P, Awaitable[R]], core: Core) -> Any:
    timeout_cm = asyncio.timeout
    settle = finish.settler(core)
    api = telemetry.trace_api  # api._TRACER_PROVIDER is None: no tracing, one attribute read

    kind = streams.kind
    streamy = core.spec.stream is not False
    declared = core.spec.stream in ("pass", "buffer")
    cache = core.cache
    shared = cache is not None and cache.shared  # Redis: its I/O off the event loop
    shade = None if core.shadow is None else core.shadow.after_async  # a shadow candidate

    async def run(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if api._TRACER_PROVIDER is None:
            return await body(args, kwargs, None)
        tracer = telemetry.tracer()
        if tracer is None:
            return await body(args, kwargs, None)
        checked = _checked(core, args, kwargs)
        span, token = _begin(tracer, core, checked)
        if span is None:
            return await body(args, kwargs, None, checked)
        try:
            record = await body(args, kwargs, span, checked)
        except BaseException as exc:
            telemetry.abort(span, token, exc)  # a stream may have ended it already
            raise
        if record.__class__ is StreamRecord:
            telemetry.detach(token)  # the stream ends its span when it ends
        else:
            telemetry.stop_once(span, token)
        return record

    async def body(
        args: tuple[Any, ...], kwargs: dict[str, Any], span: Any, checked: Any = None
    ) -> Any:
        s = core.settings
        if s.generation != runtime.generation:
            s = core.refresh()
        n = ids.next_number()
        timeout = s.call_timeout
        limit = None
        t0 = perf_counter()
        arm = None
        pre = s.pre
        if checked is not None or pre is not None:
            blocked, arm, detail = checked or pre(args, kwargs)  # type: ignore[misc]
            if blocked is not None:
                ctx = core.context(s, n, args, kwargs, blocked, detail=detail, arm=arm, span=span)
                return await drive_async(core, ctx, t0, None)
        key = MISS
        if cache is not None:
            key = cache.key(args, kwargs)
            if shared:
                entry = await asyncio.to_thread(cache.lookup, key)
            else:
                entry = cache.lookup(key)
            if entry is not MISS:
                return caching.hit(core, s, n, args, kwargs, entry, t0, arm, span)
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
            if core.retry is not None:
                again = await retrying.again_async(core, s, n, args, kwargs, exc, t0, t0, arm, span)
                if cache is not None:
                    await _keep(cache, shared, key, again)
                return again
            return await drive_async(core, ctx, t0, perf_counter())
        except Exception as exc:
            if limit is not None and limit.expired():
                ctx = core.failed(s, n, args, kwargs, None, arm, span)
                return await drive_async(core, ctx, t0, None)
            core.unhandled(s, n, args, kwargs, exc, t0, span=span, arm=arm)
            raise
        t1 = perf_counter()
        if streamy and kind(result) == 2:
            proxy = await streams.start_async(core, s, n, args, kwargs, result, t0, arm, span)
            return StreamRecord(proxy)
        out = settle(s, n, args, kwargs, result, t0, t1, arm, span)
        if out.__class__ is Served:
            if cache is not None:
                await _keep(cache, shared, key, out)
            return out
        return await drive_async(core, out, t0, t1)

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        traced = api._TRACER_PROVIDER is not None
        record = await (run(args, kwargs) if traced else body(args, kwargs, None))
        if shade is not None:
            shade(record, args, kwargs)
        if declared and record.__class__ is not StreamRecord:  # a fallback's answer, as a stream
            return streams.AsyncReplay(record.value, record)  # type: ignore[return-value]
        return record.value  # type: ignore[no-any-return]

    async def outcome(*args: P.args, **kwargs: P.kwargs) -> Outcome[R]:
        traced = api._TRACER_PROVIDER is not None
        record = await (run(args, kwargs) if traced else body(args, kwargs, None))
        if shade is not None:
            shade(record, args, kwargs)
        if record.__class__ is Served:
            return finish.served_outcome(record)
        if record.__class__ is StreamRecord:
            return await streams.consume_async(record.value)
        return record  # type: ignore[no-any-return]

    return _attach(call, outcome, core)


async def _keep(cache: Any, shared: bool, key: Any, record: Any) -> None:
    """Keep a served answer in the cache (Redis I/O in a worker thread)."""
    if shared:
        await asyncio.to_thread(cache.keep, key, record)
    else:
        cache.keep(key, record)


def _prologue(core: Core, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The start of a generator function's guarded call, at its first iteration: settings,
    call number, span (left open: the stream ends it) and the pre-call checks."""
    s = core.settings
    if s.generation != runtime.generation:
        s = core.refresh()
    n = ids.next_number()
    t0 = perf_counter()
    blocked, arm, detail = _checked(core, args, kwargs)
    span = None
    if telemetry.trace_api._TRACER_PROVIDER is not None:
        tracer = telemetry.tracer()
        if tracer is not None:
            span, token = _begin(tracer, core, (blocked, arm, detail))
            if span is not None:
                telemetry.detach(token)
    return s, n, span, t0, arm, blocked, detail


_UNCHECKED = (None, None, None)


def _checked(core: Core, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The pre-call checks, run before the span starts (traced calls): its kind depends on
    whether the model is called."""
    s = core.settings
    if s.generation != runtime.generation:
        s = core.refresh()
    pre = s.pre
    return _UNCHECKED if pre is None else pre(args, kwargs)


def _begin(tracer: Any, core: Core, checked: Any) -> tuple[Any, Any]:
    """The call's span: the model call's (CLIENT, ``{operation} {model}``) when the checks let
    the model be called, else the guarded call's own (INTERNAL, ``aiguard {feature}``)."""
    acct = core.acct
    if checked[0] is None:
        return telemetry.begin(tracer, acct.span_name, telemetry.CLIENT, acct.start_attributes)
    return telemetry.begin(
        tracer, acct.call_span_name, telemetry.INTERNAL, acct.call_start_attributes
    )


def wrap_sync_gen(fn: Callable[P, Iterator[R]], core: Core) -> Any:
    """A generator function, guarded: the wrapper is a generator function too."""
    buffered = core.spec.stream == "buffer"

    def stream(args: tuple[Any, ...], kwargs: dict[str, Any], box: list[Any]) -> Iterator[Any]:
        s, n, span, t0, arm, blocked, detail = _prologue(core, args, kwargs)
        run = streams.Run(core, s, n, args, kwargs, t0, arm, span)
        box.append(run)
        if blocked is not None:
            ctx = core.context(s, n, args, kwargs, blocked, detail=detail, arm=arm, span=span)
            yield from streams.fallback_sync(run, ctx)
            return
        try:
            source = fn(*args, **kwargs)
        except BaseException as exc:
            if not isinstance(exc, core.catch):
                streams.unhandled(run, exc)
                raise
            yield from streams.fallback_sync(run, run.failed_context(exc))
            return
        yield from streams.run_sync(run, source, buffered)

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        return (yield from stream(args, kwargs, []))

    def outcome(*args: P.args, **kwargs: P.kwargs) -> Outcome[R]:
        box: list[Any] = []
        for _ in stream(args, kwargs, box):
            pass
        return box[0].box[-1]  # type: ignore[no-any-return]  # this call's own Outcome

    return _attach(call, outcome, core)


def wrap_async_gen(fn: Callable[P, AsyncIterator[R]], core: Core) -> Any:
    """An async generator function, guarded: the wrapper is an async generator function too."""
    buffered = core.spec.stream == "buffer"

    def stream(args: tuple[Any, ...], kwargs: dict[str, Any], box: list[Any]) -> Any:
        s, n, span, t0, arm, blocked, detail = _prologue(core, args, kwargs)
        run = streams.Run(core, s, n, args, kwargs, t0, arm, span)
        box.append(run)
        if blocked is not None:
            ctx = core.context(s, n, args, kwargs, blocked, detail=detail, arm=arm, span=span)
            return streams.fallback_async(run, ctx)
        try:
            source = fn(*args, **kwargs)
        except BaseException as exc:
            if not isinstance(exc, core.catch):
                streams.unhandled(run, exc)
                raise
            return streams.fallback_async(run, run.failed_context(exc))
        return streams.run_async(run, source, buffered)

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[R]:
        gen = stream(args, kwargs, [])
        try:
            async for chunk in gen:
                yield chunk
        finally:
            await gen.aclose()

    async def outcome(*args: P.args, **kwargs: P.kwargs) -> Outcome[R]:
        box: list[Any] = []
        gen = stream(args, kwargs, box)
        try:
            async for _ in gen:
                pass
        finally:
            await gen.aclose()
        return box[0].box[-1]  # type: ignore[no-any-return]  # this call's own Outcome

    return _attach(call, outcome, core)


def _attach(call: Callable[..., Any], outcome: Callable[..., Any], core: Core) -> Any:
    functools.update_wrapper(outcome, call.__wrapped__)  # type: ignore[attr-defined]
    outcome.__name__ = outcome.__qualname__ = f"{call.__qualname__}.outcome"
    call.outcome = outcome  # type: ignore[attr-defined]
    call.feature = core.feature  # type: ignore[attr-defined]
    call._aiguard_core = core  # type: ignore[attr-defined]
    return call
