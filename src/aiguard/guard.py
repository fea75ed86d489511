"""The ``guard`` decorator: one line around the function that calls a model."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

from . import _checks
from ._engine.core import Core
from ._engine.drivers import wrap_async, wrap_async_gen, wrap_sync, wrap_sync_gen
from ._engine.settings import Spec
from ._runtime.state import UNSET
from .breaker import Breaker
from .budget import Budget, amount
from .cache import Cache
from .control import warn_near
from .exceptions import ConfigError
from .fallbacks import Fallback, as_chain
from .outcome import Outcome
from .retry import Retry
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
        if self.spec.cache is not None and (
            inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn)
        ):
            raise ConfigError(
                f"feature {self.spec.feature!r}: cache= does not cache streams, and "
                f"{fn.__qualname__} is a generator function"
            )
        if inspect.isasyncgenfunction(fn):
            wrapped = wrap_async_gen(fn, Core(fn, self.spec, is_async=True))
        elif inspect.isgeneratorfunction(fn):
            wrapped = wrap_sync_gen(fn, Core(fn, self.spec, is_async=False))
        elif inspect.iscoroutinefunction(fn):
            wrapped = wrap_async(fn, Core(fn, self.spec, is_async=True))
        else:
            wrapped = wrap_sync(fn, Core(fn, self.spec, is_async=False))
        warn_near(self.spec.feature)  # settings loaded before this guard, under a near name
        return wrapped  # type: ignore[no-any-return]


def guard(
    feature: str,
    *,
    confidence: str | Callable[[Any], Any] | None = UNSET,
    threshold: float | None = UNSET,
    fallback: FallbackSpec | Sequence[FallbackSpec] | None = (),
    validate: Callable[[Any], Any] | type | Sequence[Callable[[Any], Any] | type] = (),
    timeout: float | timedelta | None = UNSET,
    catch: type[Exception] | tuple[type[Exception], ...] = Exception,
    timeout_errors: type[Exception] | tuple[type[Exception], ...] = (),
    rollout: Rollout | None = None,
    breaker: Breaker | None = None,
    model: str | None = None,
    provider: str | None = None,
    operation: str = "chat",
    usage: Callable[[Any], Any] | bool | None = None,
    budget: Budget | None = None,
    latency_slo: float | timedelta | None = None,
    stream: str | bool | None = None,
    first_chunk_timeout: float | timedelta | None = None,
    retry: Retry | None = None,
    estimate: Decimal | str | int | None = None,
    segments: Sequence[str | Callable[..., Any]]
    | Mapping[str, str | Callable[..., Any]]
    | None = UNSET,
    audit: float | None = UNSET,
    cache: Cache | None = None,
    shadow: Callable[..., Any] | None = None,
    shadow_share: float | None = None,
    agree: Callable[[Any, Any], Any] | None = None,
    shadow_timeout: float | timedelta | None = None,
    shadow_model: str | None = None,
    shadow_budget: bool = False,
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
        validate: callables (or pydantic model types) that check a result; raising, or
            returning a false value other than ``None`` (``False``, ``0``, ``""``,
            ``numpy.False_``, or a value that is neither true nor false, such as a numpy
            array), rejects it (reason ``invalid_output``); returning ``None`` or a true value
            passes it.
        timeout: seconds (or a timedelta) to wait for the model (for a stream: its last chunk);
            async calls are cancelled, sync calls are interrupted in their thread (reason
            ``timeout``).
        catch: exception types that go to the fallback chain (reason ``error``); others
            propagate unchanged.
        timeout_errors: more exception types that count as timeouts (reason ``timeout``, the
            breaker's timeout rate). ``TimeoutError`` and the model clients' own timeout errors
            (``openai.APITimeoutError``, ``anthropic.APITimeoutError``, httpx's and httpx2's
            ``TimeoutException``) always do.
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
            Each call reserves its worst-case cost before the model runs and is charged its
            real cost after.
        latency_slo: the latency objective in seconds (or a timedelta) for the whole call;
            calls over it are counted (``aiguard.stats(feature).slo_breaches``).
        stream: how a streamed answer (a generator function's chunks, or an iterator the
            function returns, such as the ``openai``/``anthropic`` ``Stream``) is guarded:
            ``None`` (default) and ``"pass"`` release chunks as they come and judge the whole
            answer at the end, recording the verdict; ``"buffer"`` judges the whole answer
            before releasing anything (a rejected answer goes to the fallback chain);
            ``False``: a returned iterator is a plain result. See the streaming guide.
        first_chunk_timeout: seconds (or a timedelta) to wait for a stream's first chunk;
            ``timeout`` bounds the whole stream.
        retry: a :class:`Retry`: the model is tried again after a transient failure, within
            ``timeout`` and the budget, before the fallback chain (each try in
            ``Outcome.attempts``). Turn the client's own retries off (``max_retries=0``).
        estimate: one call's worst-case cost (a Decimal, a string or an int, not a float),
            reserved from the budget when the call's arguments and the price table do not
            bound it (no ``max_tokens`` argument); default: the feature's configuration, else
            the largest cost seen so far.
        segments: what each call record says of the call's segment (region, plan, language),
            for figures split by segment: a tuple of parameter names, dotted paths
            (``"user.plan"``, ``"request.headers.region"``: attributes or mapping keys) or
            callables over the call's arguments (named by their ``__name__``), or a mapping
            ``{"plan": spec}`` to name them. Resolved at decoration: a name that is no parameter
            of the function is a ConfigError. Each value is recorded as text (``str()``, at
            most 100 characters); a value that is missing, None or cannot be read is
            ``"unknown"`` (never an exception in the call).
        audit: the share of served answers (a number in [0, 1], e.g. ``0.02``) sent to the
            review queue as audit items (reason ``"audit"``), chosen by a hash of the call id;
            the answer is served as usual, unchanged, and the item is written with the call's
            record, off the call's path. Needs call recording (a store); the items keep the
            call's arguments, as :class:`HumanReview` items do.
        cache: a :class:`Cache`: a call whose key was answered by the model before is served
            from the cache (source ``cache``, no cost, ``Outcome.saved_cost`` what the answer
            cost), after the kill switch, rollout and budget checks. Only answers the model
            served are kept; a kill clears the feature's. Not for streams (a generator
            function with ``cache=`` is a ConfigError).
        shadow: a candidate function (another model, prompt or threshold) run on
            ``shadow_share`` of the calls with the same arguments, off the call's path, and never
            served: each run is recorded (latency, tokens, cost, confidence, agreement with the
            served answer) for the report. A sync guard takes a sync candidate (run in aiguard's
            shadow threads); an async guard, either (an async one runs as a task on the caller's
            loop). When the shadow pool is full the run is skipped and counted
            (:func:`aiguard.shadow.counts`). See the shadow guide.
        shadow_share: the share of calls shadowed, from 0 to 1 (default 0.1), chosen by a hash
            of the call id (every replica chooses the same calls).
        agree: ``agree(served_value, candidate_value) -> bool``; default: their labels are equal
            when both have one (a ``"label"`` key or attribute, an Enum, a bool), else the values
            are. Compared only when the model's answer was served (else agreement is unknown).
        shadow_timeout: seconds (or a timedelta) the candidate may take; default: ``timeout``,
            else 30 s.
        shadow_model: the candidate's model name, for its price when its result does not name
            its model.
        shadow_budget: ``True`` charges the candidate's cost to the guard's ``budget``; by
            default it is kept apart (the report shows it beside the feature's own cost).

    Kill switches (:func:`aiguard.kill`, control files, OpenFeature) are checked before the
    model is called: a killed feature's fallback chain serves with reason ``killed``.

    ``confidence``, ``threshold``, ``timeout``, ``segments`` and ``audit`` left out here come
    from the feature's configuration (``aiguard.configure(features=...)`` or
    ``aiguard.load_config(path)``); given here, they win (``None``: none, whatever the
    configuration says). Invalid values raise :class:`aiguard.ConfigError` at decoration time,
    and so do settings that would make every call fall back: a ``confidence``, ``validate`` or
    ``usage`` callable that cannot take the result as its one positional argument, and a
    ``confidence`` name that the function's return annotation (a dataclass, a pydantic model, a
    TypedDict, ...) says no result has. What cannot be known then is watched on the first calls:
    when the first 20 results are all rejected (``invalid_confidence``, ``invalid_output``) and
    none is served, a ``misconfigured`` control event is logged, once per feature.

    Example:
        >>> import aiguard
        >>> @aiguard.guard("ticket-triage", confidence="score", threshold=0.8,
        ...                fallback=aiguard.Default({"label": "other", "score": 1.0}))
        ... def triage(ticket: str) -> dict[str, object]:
        ...     return {"label": "billing", "score": 0.95 if "invoice" in ticket else 0.3}
        >>> triage("invoice missing")["label"], triage("hello")["label"]
        ('billing', 'other')
    """
    if callable(feature) and not isinstance(feature, str):
        name = getattr(feature, "__qualname__", None) or _checks.shown(feature)
        raise ConfigError(
            f'guard needs a feature name and must be called: write @aiguard.guard("name", ...) '
            f"above {name}, not @aiguard.guard"
        )
    feature = _checks.check_feature(feature)
    _checks.check_segments(feature, segments)
    spec = Spec(
        feature=feature,
        confidence=_checks.check_confidence(feature, confidence),
        threshold=_checks.check_threshold(feature, threshold),
        timeout=_checks.check_timeout(feature, timeout),
        validate=_checks.check_validate(feature, validate),
        catch=_checks.check_catch(feature, catch),
        timeout_errors=_checks.check_catch(feature, timeout_errors, name="timeout_errors")
        if timeout_errors != ()
        else (),
        fallback=as_chain(feature, fallback),
        rollout=_checks.check_policy(feature, "rollout", rollout, Rollout),
        breaker=_checks.check_policy(feature, "breaker", breaker, Breaker),
        model=_checks.check_name(feature, "model", model),
        provider=_checks.check_name(feature, "provider", provider),
        operation=_checks.check_name(feature, "operation", operation) or "chat",
        usage=_checks.check_usage(feature, usage),
        budget=_checks.check_policy(feature, "budget", budget, Budget),
        latency_slo=_checks.check_timeout(feature, latency_slo, name="latency_slo"),
        stream=_checks.check_stream(feature, stream),
        first_chunk_timeout=_checks.check_timeout(
            feature, first_chunk_timeout, name="first_chunk_timeout"
        ),
        retry=_checks.check_policy(feature, "retry", retry, Retry),
        estimate=None if estimate is None else amount(f"feature {feature!r}: estimate", estimate),
        segments=segments,  # checked above; resolved against the function by Core
        audit=_checks.check_audit(feature, audit),
        cache=_checks.check_policy(feature, "cache", cache, Cache),
        shadow=shadow,  # checked by Core, which knows the function
        shadow_share=shadow_share,
        agree=agree,
        shadow_timeout=shadow_timeout,
        shadow_model=shadow_model,
        shadow_budget=shadow_budget,
    )
    # both from the decorator here; Core.compile checks them merged with the configuration
    _checks.needs_confidence(feature, spec.threshold, spec.confidence)
    return _Decorator(spec)
