"""The exceptions aiguard raises into your code, and only these.

Everything else that goes wrong inside aiguard (a store that cannot be reached, an observer that
fails) is logged once and counted, never raised. The hierarchy::

    AiguardError
    ├── ConfigError (also ValueError)   bad configuration: names the field and the value
    ├── StoreError                      the durable store failed or is not configured
    ├── ReviewError (also LookupError)  unknown review id, or an item already resolved
    ├── UnknownCall (also LookupError)  feedback for a call id no record has
    ├── ReviewPending                   a HumanReview fallback queued the call: answer pending
    ├── EscalationRejected              (never raised into your code: the error of an
    │                                   Escalate attempt whose bigger model's answer failed
    │                                   its checks, in Outcome.attempts)
    └── NotServed                       nothing servable: the result was rejected and no
        │                               fallback was left (low or invalid confidence,
        │                               invalid output)
        └── ModelTimeout (also TimeoutError)   the model timed out and no fallback was left

An exception raised by the model function itself, when no fallback is left, propagates unchanged:
aiguard does not wrap your errors.

Example:
    >>> import aiguard
    >>> issubclass(aiguard.ModelTimeout, TimeoutError)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .outcome import Outcome

__all__ = [
    "AiguardError",
    "ConfigError",
    "EscalationRejected",
    "ModelTimeout",
    "NotServed",
    "ReviewError",
    "ReviewPending",
    "StoreError",
    "StreamInterrupted",
    "UnknownCall",
]


class AiguardError(Exception):
    """Base class of every exception aiguard raises.

    Example:
        >>> import aiguard
        >>> issubclass(aiguard.ReviewPending, aiguard.AiguardError)
        True
    """


class ConfigError(AiguardError, ValueError):
    """A configuration value is wrong; the message names the field and the value.

    Example:
        >>> import aiguard
        >>> try:
        ...     aiguard.guard("triage", confidence="score", threshold=1.5)
        ... except aiguard.ConfigError as e:
        ...     print(e)
        feature 'triage': threshold=1.5 is invalid: must be a number in [0, 1]
    """


class StoreError(AiguardError):
    """The durable store is not configured or could not be used.

    Example:
        >>> import aiguard
        >>> issubclass(aiguard.StoreError, aiguard.AiguardError)
        True
    """


class ReviewError(AiguardError, LookupError):
    """A review-queue operation named an unknown item, or one already resolved.

    Example:
        >>> import aiguard
        >>> issubclass(aiguard.ReviewError, LookupError)
        True
    """


class UnknownCall(AiguardError, LookupError):
    """Feedback names a call id that no call record (or recent call) has.

    Example:
        >>> import aiguard
        >>> issubclass(aiguard.UnknownCall, LookupError)
        True
    """


class ReviewPending(AiguardError):
    """The call was put in the human review queue; its answer is pending.

    ``review_id`` names the queued item (resolve it with :class:`aiguard.ReviewQueue`) and
    ``outcome`` is the call's :class:`aiguard.Outcome`.

    Example:
        >>> import aiguard
        >>> def show(e: aiguard.ReviewPending) -> str:
        ...     return f"queued as {e.review_id} for {e.outcome.feature}"
    """

    def __init__(self, review_id: str, outcome: Outcome[Any]) -> None:
        super().__init__(
            f"feature {outcome.feature!r}: call {outcome.call_id} is pending human review "
            f"(review id {review_id}, reason {outcome.reason.value})"
        )
        self.review_id = review_id
        self.outcome = outcome


class NotServed(AiguardError):
    """The model's result was not servable and no fallback was left to answer.

    Raised for reasons such as ``low_confidence``, ``invalid_confidence`` and ``invalid_output``;
    ``outcome`` carries the confidence, the rejected result (``outcome.model_result``) and the
    fallbacks that were tried.

    Example:
        >>> import aiguard
        >>> @aiguard.guard("triage", confidence="score", threshold=0.9)
        ... def triage(text: str) -> dict[str, object]:
        ...     return {"label": "bug", "score": 0.5}
        >>> try:
        ...     triage("it crashed")
        ... except aiguard.NotServed as e:
        ...     print(e.outcome.reason, e.outcome.confidence)
        low_confidence 0.5
    """

    def __init__(self, outcome: Outcome[Any], message: str | None = None) -> None:
        super().__init__(
            message
            or (
                f"feature {outcome.feature!r}: result not served ({outcome.reason.value}"
                f"{_detail(outcome)}) and no fallback answered"
            )
        )
        self.outcome = outcome


class EscalationRejected(AiguardError):
    """An :class:`aiguard.Escalate` handler's bigger model answered, but its answer failed the
    handler's checks (``reason``: ``low_confidence``, ``invalid_confidence`` or
    ``invalid_output``), so the call went on to the next handler. Never raised into your code:
    it is the ``error`` of that handler's :class:`aiguard.Attempt` in ``Outcome.attempts``.

    Example:
        >>> import aiguard
        >>> e = aiguard.EscalationRejected(aiguard.Reason.LOW_CONFIDENCE, "confidence 0.4 < "
        ...                                "threshold 0.7", {"label": "bug"}, 0.4)
        >>> e.reason, e.confidence
        (<Reason.LOW_CONFIDENCE: 'low_confidence'>, 0.4)
    """

    def __init__(self, reason: Any, detail: str | None, result: Any, confidence: float | None):
        super().__init__(f"the bigger model's answer was not served ({reason}: {detail})")
        self.reason = reason
        self.detail = detail
        self.result = result
        self.confidence = confidence


class ModelTimeout(NotServed, TimeoutError):
    """The model call timed out and no fallback was left to answer.

    Example:
        >>> import aiguard
        >>> issubclass(aiguard.ModelTimeout, TimeoutError)
        True
    """


class StreamInterrupted(AiguardError):
    """A guarded stream failed after some of its chunks were released to the caller.

    Nothing released can be taken back, so no fallback runs: the call is recorded with reason
    ``interrupted`` (its partial answer, tokens and cost in ``outcome``), and the failure (the
    client's error, or a ``TimeoutError`` when ``timeout=`` ran out mid-stream) is the
    exception's ``__cause__``. A failure before the first chunk is not this: it goes to the
    fallback chain like any call's.

    Example:
        >>> import aiguard
        >>> @aiguard.guard("story")
        ... def story():
        ...     yield "Once upon"
        ...     raise ConnectionError("connection reset")
        >>> chunks = []
        >>> try:
        ...     for chunk in story():
        ...         chunks.append(chunk)
        ... except aiguard.StreamInterrupted as e:
        ...     print(chunks, e.outcome.reason, repr(e.__cause__))
        ['Once upon'] interrupted ConnectionError('connection reset')
    """

    def __init__(self, outcome: Outcome[Any]) -> None:
        super().__init__(
            f"feature {outcome.feature!r}: the stream was interrupted: {outcome.detail}"
        )
        self.outcome = outcome


def _detail(outcome: Outcome[Any]) -> str:
    if outcome.confidence is not None and outcome.threshold is not None:
        return f": confidence {outcome.confidence:g} < threshold {outcome.threshold:g}"
    if outcome.detail:
        return f": {outcome.detail}"
    return ""
