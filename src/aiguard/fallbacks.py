"""Fallback handlers: what answers when the model's result is not served.

A guard's ``fallback=`` is one handler or an ordered chain. Each handler gets a
:class:`FallbackContext`; one that raises passes the call on to the next. A plain callable is
accepted wherever a handler is, as ``Rules(callable)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

from . import _checks
from ._runtime import errors
from ._runtime.money import to_decimal
from ._runtime.records import bound_arguments
from ._runtime.state import UNSET
from .exceptions import ConfigError
from .outcome import Attempt, Reason, Source
from .pricing import to_pico
from .review import ReviewQueue
from .store import ReviewItem
from .usage import Usage

__all__ = ["Default", "Escalate", "Fallback", "FallbackContext", "HumanReview", "Rules"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class FallbackContext:
    """What a fallback handler knows about the call it must answer.

    Example:
        >>> import aiguard
        >>> class Echo(aiguard.Fallback):
        ...     source = aiguard.Source.RULES
        ...     def handle(self, ctx: aiguard.FallbackContext) -> object:
        ...         return f"{ctx.reason}: {ctx.arguments}"
    """

    feature: str
    call_id: str
    reason: Reason
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    model_result: Any = None
    confidence: float | None = None
    threshold: float | None = None
    exception: BaseException | None = None
    detail: str | None = None
    arm: str | None = None
    rollout_percent: float | None = None
    span: Any = dataclasses.field(default=None, repr=False, compare=False)
    signature: inspect.Signature | None = dataclasses.field(default=None, repr=False)
    # the model's failed tries before the one this context describes (``retry=``)
    model_attempts: tuple[Attempt, ...] = dataclasses.field(default=(), repr=False)
    # the usage already read for the model's result (a stream's, from its chunks)
    usage: Usage | None = dataclasses.field(default=None, repr=False)

    @property
    def arguments(self) -> dict[str, Any]:
        """The call's arguments by parameter name (defaults applied; a method's ``self`` or
        ``cls`` left out)."""
        return bound_arguments(self.signature, self.args, self.kwargs)


class Fallback:
    """Base class of fallback handlers. Subclasses set ``source`` and implement ``handle``.

    ``handle`` returns the value to serve or raises to pass the call on. ``handle_async`` is used
    by async guards; by default it calls ``handle`` and awaits the result if it is awaitable.

    Example:
        >>> import aiguard
        >>> class Cached(aiguard.Fallback):
        ...     source = aiguard.Source.RULES
        ...     def __init__(self, cache: dict[str, str]) -> None:
        ...         self.cache = cache
        ...     def handle(self, ctx: aiguard.FallbackContext) -> str:
        ...         return self.cache[ctx.args[0]]  # KeyError passes the call on
    """

    source: Source = Source.RULES
    cost_pico: int = 0  # what one run of this handler costs, in pico-units of the currency

    def __init__(self, *, cost: Decimal | str | int = 0) -> None:
        """``cost``: what one run of this handler costs (counted in the call's cost and the
        feature's budget). Subclasses with their own ``__init__`` call
        ``super().__init__(cost=...)``."""
        self._set_cost(cost)

    @property
    def cost(self) -> Decimal:
        """What one run of this handler costs (counted in the call's cost and budget)."""
        return to_decimal(self.cost_pico)

    def _set_cost(self, cost: Decimal | str | int) -> None:
        if isinstance(cost, float):
            raise ConfigError(
                f"{type(self).__name__}(cost={cost!r}) is invalid: give a Decimal, a string or an "
                "int (floats drift)"
            )
        self.cost_pico = to_pico(cost, field=f"{type(self).__name__}(cost)")

    @property
    def name(self) -> str:
        """How the handler appears in Outcome.attempts and telemetry."""
        return type(self).__name__.lower()

    def bind(self, fn: Callable[..., Any], *, is_async: bool, feature: str) -> None:
        """Check, at decoration time, that this handler can serve ``fn``; ConfigError if not."""

    def handle(self, ctx: FallbackContext) -> Any:
        """Return the value to serve, or raise to pass the call on."""
        raise NotImplementedError

    async def handle_async(self, ctx: FallbackContext) -> Any:
        """The async form of :meth:`handle`."""
        value = self.handle(ctx)
        if inspect.isawaitable(value):
            value = await value
        return value


class Rules(Fallback, Generic[T]):
    """A rule-based baseline: a plain function taking the same parameters as the model function.

    Under an async guard, ``fn`` may be ``async def``.

    Example:
        >>> import aiguard
        >>> def keyword_triage(ticket: str) -> str:
        ...     return "billing" if "invoice" in ticket else "other"
        >>> @aiguard.guard("triage", fallback=aiguard.Rules(keyword_triage))
        ... def triage(ticket: str) -> str:
        ...     raise RuntimeError("model down")
        >>> triage("where is my invoice?")
        'billing'
    """

    source = Source.RULES

    def __init__(self, fn: Callable[..., T], *, cost: Decimal | str | int = 0) -> None:
        if not callable(fn):
            raise ConfigError(f"Rules(fn): fn={fn!r} is invalid: must be callable")
        self.fn = fn
        self._set_cost(cost)

    @property
    def name(self) -> str:
        return "rules:" + getattr(self.fn, "__qualname__", type(self.fn).__name__)

    def bind(self, fn: Callable[..., Any], *, is_async: bool, feature: str) -> None:
        if not is_async and inspect.iscoroutinefunction(self.fn):
            raise ConfigError(
                f"feature {feature!r}: fallback {self.name} is async but the guarded function "
                f"{fn.__qualname__} is not: use a plain function, or guard an async def"
            )
        _takes_parameters(self.name, self.fn, fn, feature)

    def handle(self, ctx: FallbackContext) -> T:
        return self.fn(*ctx.args, **ctx.kwargs)

    def __repr__(self) -> str:
        return f"Rules({getattr(self.fn, '__qualname__', self.fn)!s})"


def _takes_parameters(
    name: str, handler_fn: Callable[..., Any], fn: Callable[..., Any], feature: str
) -> None:
    """ConfigError unless ``handler_fn`` accepts every way of passing ``fn``'s parameters."""
    try:
        model_sig, own_sig = inspect.signature(fn), inspect.signature(handler_fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: nothing to check
    try:
        for args, kwargs in _placeholders(model_sig):
            own_sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"feature {feature!r}: fallback {name}{own_sig} must accept the "
            f"parameters of {fn.__qualname__}{model_sig}: {exc}"
        ) from None


def _placeholders(sig: inspect.Signature) -> list[tuple[list[None], dict[str, None]]]:
    """The two ways a caller may pass the model's parameters: positionally, and by name."""
    args: list[None] = []
    kwargs: dict[str, None] = {}
    by_name: dict[str, None] = {}
    for p in sig.parameters.values():
        if p.kind is p.POSITIONAL_ONLY:
            args.append(None)
        elif p.kind is p.POSITIONAL_OR_KEYWORD:
            args.append(None)
            by_name[p.name] = None
        elif p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = None
    positional_only = [None for p in sig.parameters.values() if p.kind is p.POSITIONAL_ONLY]
    return [(args, kwargs), (positional_only, {**by_name, **kwargs})]


class Default(Fallback, Generic[T]):
    """Serve a fixed value. The same object is returned every time: prefer immutable values.

    Example:
        >>> import aiguard
        >>> @aiguard.guard("summary", fallback=aiguard.Default("(no summary)"))
        ... def summarise(text: str) -> str:
        ...     raise TimeoutError
        >>> summarise("long text")
        '(no summary)'
    """

    source = Source.DEFAULT

    def __init__(self, value: T, *, cost: Decimal | str | int = 0) -> None:
        self.value = value
        self._set_cost(cost)

    @property
    def name(self) -> str:
        return "default"

    def handle(self, ctx: FallbackContext) -> T:
        return self.value

    def __repr__(self) -> str:
        return f"Default({self.value!r})"


@dataclasses.dataclass(frozen=True, slots=True)
class _Queued:
    """What HumanReview hands back to the fallback flow: the item, and a placeholder if any."""

    item: ReviewItem
    placeholder: Any
    has_placeholder: bool


class HumanReview(Fallback):
    """Queue the call for a human reviewer and tell the caller the answer is pending.

    The item (feature, call id, arguments, model result and confidence, reason) is written to a
    durable :class:`ReviewQueue` before the call returns (``cost=`` is what a review costs: it
    counts in the call's cost and the feature's budget). By default the call then raises
    :class:`aiguard.ReviewPending` with the review id and the Outcome; with ``respond=``, the
    function builds a placeholder value from the :class:`ReviewItem` and that is served instead.

    Without a configured store this raises :class:`aiguard.ConfigError` naming the fix; a store
    that fails passes the call on to the next handler (logged once).

    Example:
        >>> import aiguard
        >>> queue = aiguard.ReviewQueue(":memory:")
        >>> @aiguard.guard("triage", confidence="score", threshold=0.8,
        ...                fallback=aiguard.HumanReview(queue=queue,
        ...                                             respond=lambda item: {"label": None}))
        ... def triage(ticket: str) -> dict[str, object]:
        ...     return {"label": "bug", "score": 0.4}
        >>> triage("crash?")
        {'label': None}
        >>> [item.arguments for item in queue.pending("triage")]
        [{'ticket': 'crash?'}]
    """

    source = Source.HUMAN

    def __init__(
        self,
        *,
        queue: ReviewQueue | None = None,
        respond: Callable[[ReviewItem], Any] | None = None,
        cost: Decimal | str | int = 0,
    ) -> None:
        if respond is not None and not callable(respond):
            raise ConfigError(f"HumanReview(respond=...): respond={respond!r} must be callable")
        self.queue = queue if queue is not None else ReviewQueue()
        self.respond = respond
        self._set_cost(cost)

    @property
    def name(self) -> str:
        return "human_review"

    def handle(self, ctx: FallbackContext) -> _Queued:
        item = self.queue.submit(
            feature=ctx.feature,
            call_id=ctx.call_id,
            reason=ctx.reason.value,
            arguments=ctx.arguments,
            model_result=ctx.model_result,
            confidence=ctx.confidence,
        )
        if self.respond is None:
            return _Queued(item, None, False)
        try:
            placeholder = self.respond(item)
        except Exception as exc:  # the item is queued: say so (ReviewPending) rather than orphan it
            errors.report(f"HumanReview respond of {ctx.feature!r}", exc)
            return _Queued(item, None, False)
        return _Queued(item, placeholder, True)

    async def handle_async(self, ctx: FallbackContext) -> _Queued:
        # The store is blocking I/O: keep it off the event loop.
        return await asyncio.to_thread(self.handle, ctx)

    def __repr__(self) -> str:
        return f"HumanReview(queue={self.queue!r})"


class Escalate(Fallback):
    """Escalate to a bigger model: when the first model's answer is not served (reason
    ``low_confidence``, ``invalid_confidence``, ``invalid_output``, ``error`` or ``timeout``),
    call ``fn`` with the same arguments and serve its answer if it passes this handler's own
    checks; otherwise the call goes on to the next handler.

    The bigger model's answer is checked like the first model's: ``validate=`` (default: the
    guard's own validators; ``()`` for none), then ``confidence=`` and ``threshold=`` (default:
    no confidence read, so any answer that passes validation is served). ``timeout=`` bounds its
    call (seconds or a timedelta; ``None``: no deadline). Its latency and cost are in the call's
    ``Outcome.attempts`` (handler ``escalate:<fn>``); its cost (read from its usage with
    ``usage=``, priced as ``model=`` when the answer names no model, plus ``cost=``) is added to
    the call's cost and charged to the feature's budget. An answer served by it has source
    ``escalate``; the call's reason stays the first model's (why it was escalated).

    A killed feature, a unit outside the rollout and a call over budget are not escalated (the
    handler is skipped): escalation is a second model call, which these exist to prevent. Under
    a sync guard ``fn`` must be sync; under an async guard it may be either (a sync one runs in
    a worker thread). Streamed answers are not escalated: a generator function (guarded or
    given) is a ConfigError.

    Example:
        >>> import aiguard
        >>> def big_model(ticket: str) -> dict[str, object]:
        ...     return {"label": "billing", "score": 0.97}
        >>> @aiguard.guard("triage", confidence="score", threshold=0.8,
        ...                fallback=[aiguard.Escalate(big_model, confidence="score",
        ...                                           threshold=0.8),
        ...                          aiguard.Default({"label": "other", "score": 1.0})])
        ... def small_model(ticket: str) -> dict[str, object]:
        ...     return {"label": "bug", "score": 0.4}
        >>> o = small_model.outcome("where is my invoice?")
        >>> o.value["label"], o.source, o.reason, o.escalated
        ('billing', <Source.ESCALATE: 'escalate'>, <Reason.LOW_CONFIDENCE: 'low_confidence'>, True)
    """

    source = Source.ESCALATE

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        confidence: str | Callable[[Any], Any] | None = None,
        threshold: float | None = None,
        validate: Callable[[Any], Any] | type | Any = UNSET,
        timeout: float | timedelta | None = None,
        model: str | None = None,
        provider: str | None = None,
        usage: Callable[[Any], Any] | bool | None = None,
        cost: Decimal | str | int = 0,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"Escalate(fn): fn={fn!r} is invalid: must be callable")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigError(
                f"Escalate(fn): fn={getattr(fn, '__qualname__', fn)} is a generator function: "
                "streamed answers are not escalated, give a function that returns the answer"
            )
        self.fn = fn
        with _as_escalate():
            self.confidence = _checks.check_confidence(_LABEL, confidence)
            self.threshold: float | None = _checks.check_threshold(_LABEL, threshold)
            _checks.needs_confidence(_LABEL, self.threshold, self.confidence)
            self.validators: tuple[Callable[[Any], Any], ...] | None = (
                None if validate is UNSET else _checks.check_validate(_LABEL, validate)
            )
            self.timeout: float | None = _checks.check_timeout(_LABEL, timeout)
            self.model = _checks.check_name(_LABEL, "model", model)
            self.provider = _checks.check_name(_LABEL, "provider", provider)
            self.usage = _checks.check_usage(_LABEL, usage)
        self._set_cost(cost)

    @property
    def name(self) -> str:
        return "escalate:" + getattr(self.fn, "__qualname__", type(self.fn).__name__)

    def bind(self, fn: Callable[..., Any], *, is_async: bool, feature: str) -> None:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigError(
                f"feature {feature!r}: fallback {self.name} cannot serve the generator function "
                f"{fn.__qualname__}: streamed answers are not escalated"
            )
        if not is_async and inspect.iscoroutinefunction(self.fn):
            raise ConfigError(
                f"feature {feature!r}: fallback {self.name} is async but the guarded function "
                f"{fn.__qualname__} is not: use a plain function, or guard an async def"
            )
        _takes_parameters(self.name, self.fn, fn, feature)

    def handle(self, ctx: FallbackContext) -> Any:
        """Escalate runs inside a guard's fallback chain, which times and prices the call."""
        raise TypeError("Escalate runs only in a guard's fallback chain")

    async def handle_async(self, ctx: FallbackContext) -> Any:
        raise TypeError("Escalate runs only in a guard's fallback chain")

    def __repr__(self) -> str:
        return f"Escalate({getattr(self.fn, '__qualname__', self.fn)!s})"


_LABEL = "\x00escalate"  # the "feature" of the checks' messages, replaced by "Escalate(...)"


class _as_escalate:
    """ConfigErrors of Escalate's arguments, said of Escalate rather than of a feature."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> Literal[False]:
        if isinstance(exc, ConfigError):
            raise ConfigError(
                str(exc).replace(f"feature {_LABEL!r}: ", "Escalate(...): ")
            ) from None
        return False


def as_chain(feature: str, value: Any) -> tuple[Fallback, ...]:
    """A guard's ``fallback=`` as a chain of handlers (a plain callable is taken as Rules);
    ConfigError naming the position and the value otherwise."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else (value,)
    out: list[Fallback] = []
    for i, h in enumerate(items):
        if isinstance(h, Fallback):
            out.append(h)
        elif isinstance(h, type) and issubclass(h, Fallback):
            raise ConfigError(
                f"feature {feature!r}: fallback[{i}]={h.__name__} is a class: pass an instance, "
                f"e.g. {h.__name__}(...)"
            )
        elif callable(h):
            out.append(Rules(h))
        else:
            raise ConfigError(
                f"feature {feature!r}: fallback[{i}]={h!r} is invalid: give a handler such as "
                "aiguard.Rules(fn), aiguard.Default(value), aiguard.HumanReview(), or a callable"
            )
    return tuple(out)
