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
from decimal import Decimal
from typing import Any, Generic, TypeVar

from ._runtime import errors
from ._runtime.money import to_decimal
from ._runtime.records import bound_arguments
from .exceptions import ConfigError
from .outcome import Attempt, Reason, Source
from .pricing import to_pico
from .review import ReviewQueue
from .store import ReviewItem
from .usage import Usage

__all__ = ["Default", "Fallback", "FallbackContext", "HumanReview", "Rules"]

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
        try:
            model_sig, rules_sig = inspect.signature(fn), inspect.signature(self.fn)
        except (TypeError, ValueError):
            return  # builtins without a signature: nothing to check
        try:
            for args, kwargs in _placeholders(model_sig):
                rules_sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise ConfigError(
                f"feature {feature!r}: fallback {self.name}{rules_sig} must accept the "
                f"parameters of {fn.__qualname__}{model_sig}: {exc}"
            ) from None

    def handle(self, ctx: FallbackContext) -> T:
        return self.fn(*ctx.args, **ctx.kwargs)

    def __repr__(self) -> str:
        return f"Rules({getattr(self.fn, '__qualname__', self.fn)!s})"


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
