"""What happened on one guarded call: :class:`Outcome`, its :class:`Source` and :class:`Reason`."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .usage import Usage

if TYPE_CHECKING:
    from .feedback import Feedback

__all__ = ["Attempt", "Outcome", "Reason", "Source"]

T = TypeVar("T")


class Source(enum.StrEnum):
    """Who produced the value that was served.

    ``baseline`` is the fallback chain serving a unit outside a staged rollout, so AI and
    baseline can be compared; ``escalate`` a bigger model's answer (:class:`aiguard.Escalate`)
    served after the first model's was not; ``cache`` an answer the model gave to an earlier
    call with the same key (:class:`aiguard.Cache`).

    Example:
        >>> import aiguard
        >>> aiguard.Source.RULES == "rules"
        True
    """

    MODEL = "model"
    RULES = "rules"
    DEFAULT = "default"
    HUMAN = "human"
    BASELINE = "baseline"
    ESCALATE = "escalate"
    CACHE = "cache"


class Reason(enum.StrEnum):
    """Why the call ended as it did: ``served`` when the model's result was served.

    Every other reason names why the model's result was not served and the fallback chain ran,
    but two, for streams whose chunks already reached the caller: ``interrupted`` (the stream
    failed midway) and ``abandoned`` (the caller stopped reading).

    Example:
        >>> import aiguard
        >>> aiguard.Reason("low_confidence") is aiguard.Reason.LOW_CONFIDENCE
        True
    """

    SERVED = "served"
    LOW_CONFIDENCE = "low_confidence"
    INVALID_CONFIDENCE = "invalid_confidence"
    INVALID_OUTPUT = "invalid_output"
    ERROR = "error"
    TIMEOUT = "timeout"
    KILLED = "killed"
    AUTO_KILLED = "auto_killed"
    OVER_BUDGET = "over_budget"
    NOT_IN_ROLLOUT = "not_in_rollout"
    MISSING_ROLLOUT_KEY = "missing_rollout_key"
    INTERRUPTED = "interrupted"
    ABANDONED = "abandoned"


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One handler that was tried: its name, its source, and why it failed if it did.

    ``Outcome.attempts`` lists, in order, the model's failed tries when ``retry=`` retried it
    (handler ``"model"``, each with its ``latency`` and ``cost``), then every fallback handler
    tried; the last one answered unless all failed.

    Example:
        >>> import aiguard
        >>> a = aiguard.Attempt(handler="rules:keyword_triage", source=aiguard.Source.RULES,
        ...                     error=LookupError("no keyword"))
        >>> a.failed
        True
    """

    handler: str
    source: Source
    error: BaseException | None = None
    latency: float | None = None
    cost: Decimal | None = None

    @property
    def failed(self) -> bool:
        """True when the handler raised and the call was passed on."""
        return self.error is not None


# What a model call's reason counts as, per rate: (error, timeout, low_confidence, fallback).
_FLAGS: dict[Reason, tuple[int, int, int, int]] = {
    Reason.SERVED: (0, 0, 0, 0),
    Reason.ERROR: (1, 0, 0, 1),
    Reason.TIMEOUT: (0, 1, 0, 1),
    Reason.LOW_CONFIDENCE: (0, 0, 1, 1),
    Reason.INVALID_CONFIDENCE: (0, 0, 1, 1),
    Reason.INVALID_OUTPUT: (0, 0, 0, 1),
    Reason.INTERRUPTED: (1, 0, 0, 0),  # a stream that failed after chunks were released
    Reason.ABANDONED: (0, 0, 0, 0),  # the caller stopped reading: not the model's fault
}
MODEL_REASONS = frozenset(_FLAGS)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """The result of one guarded call, as a value.

    Attributes:
        value: what was served: the model's result or a fallback's (``None`` on the outcome
            carried by an exception, when nothing was served).
        call_id: unique, stable id of the call; feedback and review items refer to it.
        feature: the guarded feature's name.
        source: who produced ``value`` (``None`` when nothing was served).
        reason: why the call ended this way (``served`` when the model's result was served).
        confidence: the confidence read from the model's result, when it was a valid number.
        threshold: the threshold in force for the call, if any.
        latency: wall time of the whole guarded call, in seconds.
        model_latency: wall time of the model call alone, in seconds (``None`` if not called).
        exception: the exception raised by the model call, when there was one.
        attempts: the fallback handlers tried, in order, with why each that failed did.
        review_id: the human-review item created for this call, if any.
        model_result: the model's own result (served or rejected), if it returned one.
        detail: a short human-readable explanation of a non-served reason.
        started_at: when the call started, as a POSIX timestamp.
        arm: ``"ai"`` or ``"baseline"`` for a call under a staged rollout, else ``None``.
        rollout_percent: the rollout percentage in force for the call, if any.
        usage: tokens and model read from the model's result (served or not), if any.
        cost: the call's cost (the model's by the price table plus the fallback handlers'
            own), or ``None`` when unknown (no price for the model).
        time_to_first_chunk: for a stream, seconds from the call to its first chunk (``latency``
            runs to its last); ``None`` for other calls.
        saved_cost: for an answer served from the cache (source ``cache``), what the model call
            that produced it cost (``None`` when unknown, and for every other call).

    Example:
        >>> import aiguard
        >>> @aiguard.guard("greet")
        ... def greet(name: str) -> str:
        ...     return f"hello {name}"
        >>> o = greet.outcome("ada")
        >>> (o.value, o.source, o.reason)
        ('hello ada', <Source.MODEL: 'model'>, <Reason.SERVED: 'served'>)
    """

    value: T
    call_id: str
    feature: str
    source: Source | None
    reason: Reason
    confidence: float | None = None
    threshold: float | None = None
    latency: float = 0.0
    model_latency: float | None = None
    exception: BaseException | None = None
    attempts: tuple[Attempt, ...] = ()
    review_id: str | None = None
    model_result: Any = None
    detail: str | None = None
    started_at: float = 0.0
    arm: str | None = None
    rollout_percent: float | None = None
    usage: Usage | None = None
    cost: Decimal | None = None
    time_to_first_chunk: float | None = None
    saved_cost: Decimal | None = None

    @property
    def served(self) -> bool:
        """True when the model's own result was served."""
        return self.reason is Reason.SERVED

    @property
    def fallback(self) -> bool:
        """True when a fallback handler produced the value (an answer from the cache is the
        model's, served again: not a fallback)."""
        return (
            self.source is not None
            and self.source is not Source.MODEL
            and (self.source is not Source.CACHE)
        )

    @property
    def escalated(self) -> bool:
        """True when an :class:`aiguard.Escalate` handler ran its bigger model on this call
        (whether or not its answer was served: see ``attempts``)."""
        return any(a.source is Source.ESCALATE for a in self.attempts)

    # -- feedback (see aiguard.feedback) ---------------------------------------------------------
    # Each method says which feedback it is (``_accepting`` and the like); ``feedback()``
    # records it, ``afeedback()`` (the a-twins) records it in a thread, awaited.

    def accept(
        self, *, by: str | None = None, comment: str | None = None, **extra: Any
    ) -> Feedback:
        """The user used the answer as served."""
        return _feedback()(self, **_accepting(by, comment, extra))

    async def aaccept(
        self, *, by: str | None = None, comment: str | None = None, **extra: Any
    ) -> Feedback:
        """:meth:`accept`, awaited: the store is written in a thread, the event loop runs on.

        Example:
            >>> import asyncio, aiguard
            >>> aiguard.configure(store=":memory:")
            >>> @aiguard.guard("greet")
            ... async def greet(name: str) -> str:
            ...     return f"hello {name}"
            >>> async def main() -> bool | None:
            ...     outcome = await greet.outcome("ada")
            ...     return (await outcome.aaccept(by="ada")).accepted
            >>> asyncio.run(main())
            True
        """
        return await _afeedback()(self, **_accepting(by, comment, extra))

    def reject(self, *, reason: str | None = None, by: str | None = None, **extra: Any) -> Feedback:
        """The user did not use the answer (``reason`` is kept as the comment)."""
        return _feedback()(self, **_rejecting(reason, by, extra))

    async def areject(
        self, *, reason: str | None = None, by: str | None = None, **extra: Any
    ) -> Feedback:
        """:meth:`reject`, awaited (see :meth:`aaccept`)."""
        return await _afeedback()(self, **_rejecting(reason, by, extra))

    def edit(self, new_value: Any, *, by: str | None = None, **extra: Any) -> Feedback:
        """The user kept an edited version; the edit distance is measured."""
        return _feedback()(self, **_editing(new_value, by, extra))

    async def aedit(self, new_value: Any, *, by: str | None = None, **extra: Any) -> Feedback:
        """:meth:`edit`, awaited (see :meth:`aaccept`)."""
        return await _afeedback()(self, **_editing(new_value, by, extra))

    def correct(self, label: Any, *, by: str | None = None, **extra: Any) -> Feedback:
        """The answer was wrong; ``label`` is the right one."""
        return _feedback()(self, **_correcting(label, by, extra))

    async def acorrect(self, label: Any, *, by: str | None = None, **extra: Any) -> Feedback:
        """:meth:`correct`, awaited (see :meth:`aaccept`)."""
        return await _afeedback()(self, **_correcting(label, by, extra))

    def rate(self, score: float, *, by: str | None = None, **extra: Any) -> Feedback:
        """A rating of the answer."""
        return _feedback()(self, **_rating(score, by, extra))

    async def arate(self, score: float, *, by: str | None = None, **extra: Any) -> Feedback:
        """:meth:`rate`, awaited (see :meth:`aaccept`)."""
        return await _afeedback()(self, **_rating(score, by, extra))


# What each Outcome feedback method records, as ``aiguard.feedback`` arguments: one place for
# the sync method and its async twin.


def _accepting(by: str | None, comment: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    return {"accepted": True, "by": by, "comment": comment, **extra}


def _rejecting(reason: str | None, by: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    return {"accepted": False, "comment": reason, "by": by, **extra}


def _editing(new_value: Any, by: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    return {"edited": new_value, "by": by, **extra}


def _correcting(label: Any, by: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    return {"label": label, "by": by, **extra}


def _rating(score: float, by: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    return {"score": score, "by": by, **extra}


def _feedback() -> Callable[..., Feedback]:
    # imported at first use: the engine imports this module, and feedback the stores
    from .feedback import feedback

    return feedback


def _afeedback() -> Callable[..., Awaitable[Feedback]]:
    from .feedback import afeedback

    return afeedback
