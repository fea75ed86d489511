"""The ``guard`` decorator: one line around the function that calls a model."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from time import perf_counter
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

from . import _core, _ids, _telemetry, _timeouts
from ._core import Core, Spec
from ._state import UNSET, state
from .breaker import Breaker
from .budget import Budget
from .exceptions import ConfigError
from .fallbacks import Fallback
from .outcome import Outcome
from .rollout import Rollout

__all__ = ["AsyncGuarded", "Guarded", "guard"]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
S = TypeVar("S")

FallbackSpec = Fallback | Callable[..., Any]


class Guarded(Protocol[P, R]):
    """A guarded sync function: call it as before, or ask for the whole :class:`Outcome`.

    Example:
        >>> import aiguard
        >>> @aiguard.guard("echo")
        ... def echo(text: str) -> str:
        ...     return text
        >>> echo.outcome("hi").value
        'hi'
    """

    feature: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def outcome(self, *args: P.args, **kwargs: P.kwargs) -> Outcome[R]: ...

    # A guarded method, looked up on an instance, binds ``self`` like any function.
    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Guarded[P, R]: ...

    @overload
    def __get__(
        self: Guarded[Concatenate[S, P2], R], instance: S, owner: type[Any] | None = None
    ) -> Callable[P2, R]: ...


class AsyncGuarded(Protocol[P, R]):
    """A guarded ``async def`` function; ``outcome(...)`` is awaitable too.

    Example:
        >>> import asyncio, aiguard
        >>> @aiguard.guard("echo")
        ... async def echo(text: str) -> str:
        ...     return text
        >>> asyncio.run(echo.outcome("hi")).value
        'hi'
    """

    feature: str

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...

    def outcome(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, Outcome[R]]: ...

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> AsyncGuarded[P, R]: ...

    @overload
    def __get__(
        self: AsyncGuarded[Concatenate[S, P2], R], instance: S, owner: type[Any] | None = None
    ) -> Callable[P2, Coroutine[Any, Any, R]]: ...


class _Decorator:
    """What ``guard(...)`` returns: apply it to a sync or an async function."""

    __slots__ = ("spec",)

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncGuarded[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> Guarded[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Guarded[P, Any] | AsyncGuarded[P, Any]:
        if not callable(fn):
            raise ConfigError(
                f"feature {self.spec.feature!r}: guard() needs a function, got {fn!r}"
            )
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigError(
                f"feature {self.spec.feature!r}: {fn.__qualname__} is a generator function; "
                "guard a function that returns the model's result"
            )
        if inspect.iscoroutinefunction(fn):
            return _wrap_async(fn, Core(fn, self.spec, is_async=True))
        return _wrap_sync(fn, Core(fn, self.spec, is_async=False))


def guard(
    feature: str,
    *,
    confidence: str | Callable[[Any], Any] | None = UNSET,
    threshold: float | None = UNSET,
    fallback: FallbackSpec | Sequence[FallbackSpec] | None = (),
    validate: Callable[[Any], Any] | type | Sequence[Callable[[Any], Any] | type] = (),
    timeout: float | timedelta | None = UNSET,
    catch: type[Exception] | tuple[type[Exception], ...] = Exception,
    rollout: Rollout | None = None,
    breaker: Breaker | None = None,
    model: str | None = None,
    provider: str | None = None,
    operation: str = "chat",
    usage: Callable[[Any], Any] | bool | None = None,
    budget: Budget | None = None,
    latency_slo: float | timedelta | None = None,
) -> _Decorator:
    """Guard the function that calls a model: serve its result only when it is good enough.

    Each call runs the function, reads the result's confidence and checks it; a result that
    passes is returned as is, anything else (an exception in ``catch``, a timeout, a failed
    validation, a confidence below ``threshold`` or not a number in [0, 1]) goes to the
    ``fallback`` chain, whose first handler that answers is served. The wrapped function keeps
    its signature and return type; ``fn.outcome(...)`` returns the whole :class:`Outcome`.

    Args:
        feature: the AI feature's name; configuration, metrics and review items use it.
        confidence: where the result's confidence is: an attribute name, a mapping key, or a
            callable taking the result and returning a float in [0, 1].
        threshold: results whose confidence is below it are not served (reason
            ``low_confidence``); equal is served.
        fallback: a handler or an ordered chain: :class:`Rules`, :class:`Default`,
            :class:`HumanReview`, your own :class:`Fallback`, or a plain callable (as ``Rules``).
        validate: callables (or pydantic model types) that check a result; raising or returning
            ``False`` rejects it (reason ``invalid_output``).
        timeout: seconds (or a timedelta) to wait for the model; async calls are cancelled, sync
            calls run in a bounded worker pool and are abandoned (reason ``timeout``).
        catch: exception types that go to the fallback chain (reason ``error``); others
            propagate unchanged.
        rollout: a staged :class:`Rollout`: units outside it get the fallback chain (reason
            ``not_in_rollout``, source ``baseline``).
        breaker: a :class:`Breaker`: the automatic kill on quality (reason ``auto_killed``).
        model: the model's name (``gen_ai.request.model``; the price-table entry when the result
            does not name its model).
        provider: the provider (``gen_ai.provider.name``) when the result does not tell it.
        operation: ``gen_ai.operation.name`` (default ``"chat"``).
        usage: how to read tokens from a result: ``None`` (default) reads OpenAI, Anthropic and
            dict shapes; a callable returns a :class:`Usage` (or a mapping of its fields);
            ``False`` reads none.
        budget: a :class:`Budget`: over it, the model is not called (reason ``over_budget``).
        latency_slo: the latency objective in seconds (or a timedelta) for the whole call;
            calls over it are counted (``aiguard.stats(feature).slo_breaches``).

    Kill switches (:func:`aiguard.kill`, control files, OpenFeature) are checked before the
    model is called: a killed feature's fallback chain serves with reason ``killed``.

    ``confidence``, ``threshold`` and ``timeout`` left out here come from the feature's
    configuration (``aiguard.configure(features=...)`` or ``aiguard.load_config(path)``); given
    here, they win. Invalid values raise :class:`aiguard.ConfigError` at decoration time.

    Example:
        >>> import aiguard
        >>> @aiguard.guard("ticket-triage", confidence="score", threshold=0.8,
        ...                fallback=aiguard.Default({"label": "other", "score": 1.0}))
        ... def triage(ticket: str) -> dict[str, object]:
        ...     return {"label": "billing", "score": 0.95 if "invoice" in ticket else 0.3}
        >>> triage("invoice missing")["label"], triage("hello")["label"]
        ('billing', 'other')
    """
    feature = _core.check_feature(feature)
    spec = Spec(
        feature=feature,
        confidence=_core.check_confidence(feature, confidence),
        threshold=_core.check_threshold(feature, threshold),
        timeout=_core.check_timeout(feature, timeout),
        validate=_core.check_validate(feature, validate),
        catch=_core.check_catch(feature, catch),
        fallback=_core.check_fallback(feature, fallback),
        rollout=_check_policy(feature, "rollout", rollout, Rollout),
        breaker=_check_policy(feature, "breaker", breaker, Breaker),
        model=_check_name(feature, "model", model),
        provider=_check_name(feature, "provider", provider),
        operation=_check_name(feature, "operation", operation) or "chat",
        usage=_check_usage(feature, usage),
        budget=_check_policy(feature, "budget", budget, Budget),
        latency_slo=_core.check_timeout(feature, latency_slo, name="latency_slo"),
    )
    if spec.threshold not in (None, UNSET) and spec.confidence is None:
        # Both from the decorator; Core.compile checks the settings merged with configuration.
        raise ConfigError(
            f"feature {feature!r}: threshold={spec.threshold!r} needs confidence=: say which "
            "attribute, key or callable gives the result's confidence"
        )
    return _Decorator(spec)


def _check_name(feature: str, name: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    raise ConfigError(f"feature {feature!r}: {name}={value!r} is invalid: must be a non-empty name")


def _check_usage(feature: str, value: Any) -> Any:
    if value is None or isinstance(value, bool) or callable(value):
        return value
    raise ConfigError(
        f"feature {feature!r}: usage={value!r} is invalid: give a callable that reads a Usage "
        "from the result, None (built-in readers) or False"
    )


def _check_policy(feature: str, name: str, value: Any, kind: type) -> Any:
    if value is None or isinstance(value, kind):
        return value
    raise ConfigError(
        f"feature {feature!r}: {name}={value!r} is invalid: give an aiguard.{kind.__name__}(...)"
    )


# -- drivers: they only execute what Core decides --------------------------------------------------


def _wrap_sync(fn: Callable[P, R], core: Core) -> Guarded[P, R]:
    pool_call = _timeouts.call
    TimedOut = _timeouts.TimedOut
    span_name = core.acct.span_name
    no_tracer = _telemetry.no_tracer

    def run(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if no_tracer():
            return body(args, kwargs, None)
        tracer = _telemetry.tracer()
        span, token = (None, None) if tracer is None else _telemetry.start(tracer, span_name)
        if span is None:
            return body(args, kwargs, None)
        try:
            return body(args, kwargs, span)
        finally:
            _telemetry.stop(span, token)

    def body(args: tuple[Any, ...], kwargs: dict[str, Any], span: Any) -> Any:
        s = core.settings
        if s.generation != state.generation:
            s = core.refresh()
        n = _ids.next_number()
        timeout = s.timeout
        t0 = perf_counter()
        arm = None
        pre = s.pre
        if pre is not None:
            blocked, arm, detail = pre(args, kwargs)
            if blocked is not None:
                ctx = core.context(s, n, args, kwargs, blocked, detail=detail, arm=arm, span=span)
                return _drive_sync(core, ctx, t0, None)
        try:
            if timeout is None:
                result = fn(*args, **kwargs)
            else:
                result = pool_call(fn, args, kwargs, timeout)
        except TimedOut:
            return _drive_sync(core, core.failed(s, n, args, kwargs, None, arm, span), t0, None)
        except core.catch as exc:
            ctx = core.caught(s, n, args, kwargs, exc, t0, arm, span)
            return _drive_sync(core, ctx, t0, perf_counter())
        except Exception as exc:
            core.unhandled(s, n, args, kwargs, exc, t0, span=span, arm=arm)
            raise
        t1 = perf_counter()
        out = core.settle(s, n, args, kwargs, result, t0, t1, arm, span)
        return out if out.__class__ is tuple else _drive_sync(core, out, t0, t1)

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        record = body(args, kwargs, None) if no_tracer() else run(args, kwargs)
        return record[2] if record.__class__ is tuple else record.value  # type: ignore[no-any-return]

    def outcome(*args: P.args, **kwargs: P.kwargs) -> Outcome[R]:
        record = body(args, kwargs, None) if no_tracer() else run(args, kwargs)
        return core.served(record) if record.__class__ is tuple else record

    return _attach(call, outcome, core)  # type: ignore[no-any-return]


def _drive_sync(core: Core, ctx: Any, t0: float, t1: float | None) -> Outcome[Any]:
    flow = core.flow(ctx, t0, t1)
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
        return stop.value  # type: ignore[no-any-return]


def _handler_span(ctx: Any, handler: Fallback) -> Any:
    """A child span around one fallback handler, when the call has a span."""
    if ctx.span is None:
        return contextlib.nullcontext()
    tracer = _telemetry.tracer()
    attributes = {
        "aiguard.feature": ctx.feature,
        "aiguard.call_id": ctx.call_id,
        "aiguard.fallback.handler": handler.name,
        "aiguard.source": handler.source.value,
        "aiguard.reason": ctx.reason.value,
    }
    if tracer is None:
        return contextlib.nullcontext()
    return _telemetry.child(tracer, f"aiguard.fallback {handler.name}", attributes)


def _wrap_async(fn: Callable[P, Awaitable[R]], core: Core) -> AsyncGuarded[P, R]:
    timeout_cm = asyncio.timeout
    span_name = core.acct.span_name
    no_tracer = _telemetry.no_tracer

    async def run(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if no_tracer():
            return await body(args, kwargs, None)
        tracer = _telemetry.tracer()
        span, token = (None, None) if tracer is None else _telemetry.start(tracer, span_name)
        if span is None:
            return await body(args, kwargs, None)
        try:
            return await body(args, kwargs, span)
        finally:
            _telemetry.stop(span, token)

    async def body(args: tuple[Any, ...], kwargs: dict[str, Any], span: Any) -> Any:
        s = core.settings
        if s.generation != state.generation:
            s = core.refresh()
        n = _ids.next_number()
        timeout = s.timeout
        limit = None
        t0 = perf_counter()
        arm = None
        pre = s.pre
        if pre is not None:
            blocked, arm, detail = pre(args, kwargs)
            if blocked is not None:
                ctx = core.context(s, n, args, kwargs, blocked, detail=detail, arm=arm, span=span)
                return await _drive_async(core, ctx, t0, None)
        try:
            if timeout is None:
                result = await fn(*args, **kwargs)
            else:
                async with timeout_cm(timeout) as limit:
                    result = await fn(*args, **kwargs)
        except core.catch as exc:
            if limit is not None and limit.expired():
                ctx = core.failed(s, n, args, kwargs, None, arm, span)
                return await _drive_async(core, ctx, t0, None)
            ctx = core.caught(s, n, args, kwargs, exc, t0, arm, span)
            return await _drive_async(core, ctx, t0, perf_counter())
        except Exception as exc:
            if limit is not None and limit.expired():
                ctx = core.failed(s, n, args, kwargs, None, arm, span)
                return await _drive_async(core, ctx, t0, None)
            core.unhandled(s, n, args, kwargs, exc, t0, span=span, arm=arm)
            raise
        t1 = perf_counter()
        out = core.settle(s, n, args, kwargs, result, t0, t1, arm, span)
        return out if out.__class__ is tuple else await _drive_async(core, out, t0, t1)

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        record = await (body(args, kwargs, None) if no_tracer() else run(args, kwargs))
        return record[2] if record.__class__ is tuple else record.value  # type: ignore[no-any-return]

    async def outcome(*args: P.args, **kwargs: P.kwargs) -> Outcome[R]:
        record = await (body(args, kwargs, None) if no_tracer() else run(args, kwargs))
        return core.served(record) if record.__class__ is tuple else record

    return _attach(call, outcome, core)  # type: ignore[no-any-return]


async def _drive_async(core: Core, ctx: Any, t0: float, t1: float | None) -> Outcome[Any]:
    flow = core.flow(ctx, t0, t1)
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
        return stop.value  # type: ignore[no-any-return]


def _attach(call: Callable[..., Any], outcome: Callable[..., Any], core: Core) -> Any:
    functools.update_wrapper(outcome, call.__wrapped__)  # type: ignore[attr-defined]
    outcome.__name__ = outcome.__qualname__ = f"{call.__qualname__}.outcome"
    call.outcome = outcome  # type: ignore[attr-defined]
    call.feature = core.feature  # type: ignore[attr-defined]
    call._aiguard_core = core  # type: ignore[attr-defined]
    return call
