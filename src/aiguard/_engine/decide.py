"""Decisions, written once for both drivers: pure functions, no state and no I/O.

``judge`` says whether a model result may be served; ``flow`` walks the fallback chain as a
generator that yields the next handler to run and is sent back what it did, and returns the
:class:`Verdict`; the sync and async drivers only execute what these decide.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Generator, Sequence
from typing import Any, NamedTuple, Protocol

from .._runtime.money import to_decimal
from ..exceptions import ConfigError, StoreError
from ..fallbacks import Escalate, Fallback, _Queued
from ..outcome import Attempt, Reason
from .settings import _MISSING, Extract

SERVED = Reason.SERVED
BASELINE_REASONS = frozenset({Reason.NOT_IN_ROLLOUT, Reason.MISSING_ROLLOUT_KEY})
# the reasons an Escalate handler runs for: the first model answered badly, failed or timed out
ESCALATES = frozenset(
    {
        Reason.LOW_CONFIDENCE,
        Reason.INVALID_CONFIDENCE,
        Reason.INVALID_OUTPUT,
        Reason.ERROR,
        Reason.TIMEOUT,
    }
)


class Checks(Protocol):
    """What ``judge`` reads: a call's settings, or an Escalate handler's own checks."""

    @property
    def extract(self) -> Extract | None: ...

    @property
    def confidence_name(self) -> str | None: ...

    @property
    def threshold(self) -> float | None: ...


def judge(
    validators: Sequence[Callable[[Any], Any]], result: Any, s: Checks
) -> tuple[Reason, float | None, str | None]:
    """May ``result`` be served? ``(reason, confidence, detail)``; reason ``served`` if so."""
    for check in validators:
        try:
            ok = check(result)
        except Exception as exc:
            return Reason.INVALID_OUTPUT, None, f"{_name(check)} rejected the result: {_shown(exc)}"
        if ok is None or ok is True:
            continue
        try:  # any other value rejects when it is false: 0, "", numpy.False_
            if ok:
                continue
        except Exception as exc:  # neither true nor false (a numpy array): not a pass
            return (
                Reason.INVALID_OUTPUT,
                None,
                f"{_name(check)} returned {_shown(ok)}, which is neither true nor false: "
                f"{_shown(exc)}",
            )
        return Reason.INVALID_OUTPUT, None, f"{_name(check)} returned {_shown(ok)}"
    extract = s.extract
    if extract is None:
        return SERVED, None, None
    try:
        raw = extract(result)
    except Exception as exc:
        return Reason.INVALID_CONFIDENCE, None, f"reading the confidence failed: {_shown(exc)}"
    if raw.__class__ is float:
        c: float = raw
    elif isinstance(raw, numbers.Real) and not isinstance(raw, bool):
        try:
            c = float(raw)
        except Exception as exc:  # 10**400, a huge Fraction, a __float__ that fails
            return (
                Reason.INVALID_CONFIDENCE,
                None,
                f"confidence {_shown(raw)} cannot be read as a float: {_shown(exc)}",
            )
    elif raw is _MISSING or raw is None:
        where = f" {s.confidence_name!r}" if s.confidence_name else ""
        return Reason.INVALID_CONFIDENCE, None, f"confidence{where} is missing"
    else:
        return (
            Reason.INVALID_CONFIDENCE,
            None,
            f"confidence {_shown(raw)} is a {type(raw).__name__}, not a number",
        )
    if not 0.0 <= c <= 1.0:  # also false for NaN
        return Reason.INVALID_CONFIDENCE, None, f"confidence {c!r} is outside [0, 1]"
    threshold = s.threshold
    if threshold is not None and c < threshold:
        return Reason.LOW_CONFIDENCE, c, f"confidence {c:g} < threshold {threshold:g}"
    return SERVED, c, None


# The clients' own timeout errors, by (package, class name) anywhere in the exception's classes:
# recognised without importing the clients (none of them is a dependency).
PROVIDER_TIMEOUTS = frozenset(
    {
        ("openai", "APITimeoutError"),
        ("anthropic", "APITimeoutError"),
        ("httpx", "TimeoutException"),
        ("httpx2", "TimeoutException"),
        ("httpcore", "TimeoutException"),
        ("httpcore2", "TimeoutException"),
    }
)


# An HTTP error status from the provider: the request was refused, nothing was generated or billed.
STATUS_ERRORS = frozenset(
    {
        ("openai", "APIStatusError"),
        ("anthropic", "APIStatusError"),
        ("httpx", "HTTPStatusError"),
        ("httpx2", "HTTPStatusError"),
    }
)


def _is_a(exc: BaseException, known: frozenset[tuple[str, str]]) -> bool:
    return any((c.__module__.partition(".")[0], c.__name__) in known for c in type(exc).__mro__)


def is_status_error(exc: BaseException) -> bool:
    """Did the provider answer with an HTTP error status (429, 500, 529, ...)?"""
    return _is_a(exc, STATUS_ERRORS)


def is_timeout(exc: BaseException, extra: tuple[type[BaseException], ...] = ()) -> bool:
    """Is ``exc`` a timeout: a TimeoutError, a model client's timeout error, or one of the
    guard's ``timeout_errors``?"""
    if isinstance(exc, TimeoutError) or (extra and isinstance(exc, extra)):
        return True
    return _is_a(exc, PROVIDER_TIMEOUTS)


def failure(
    exc: BaseException | None,
    timeout: float | None,
    timeout_errors: tuple[type[BaseException], ...] = (),
) -> tuple[Reason, str]:
    """Reason and detail of a model call that raised ``exc`` (None: aiguard's timeout fired)."""
    if exc is None:
        return Reason.TIMEOUT, f"the model gave no result within {timeout:g} s"
    return (Reason.TIMEOUT if is_timeout(exc, timeout_errors) else Reason.ERROR), _shown(exc)


def misuse(
    signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bool:
    """True when the call's arguments do not fit the function: the caller's bug, not the
    model's, so the TypeError propagates instead of going to the fallback chain."""
    if signature is None:
        return False
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return True
    return False


class Verdict(NamedTuple):
    """How the fallback chain ended: who answered (None: nobody), with what, after which
    attempts, at what cost of the handlers, the review item when one was queued, the store
    failures among the attempts (internal failures to report), and whether a handler's cost is
    unknown (an escalated model call without a price: then so is the call's)."""

    handler: Fallback | None
    value: Any
    attempts: tuple[Attempt, ...]
    spent: int
    queued: _Queued | None
    store_failures: tuple[Attempt, ...]
    unknown: bool


class Ran(NamedTuple):
    """What an Escalate handler's model call did: the answer (when served), the error (None:
    served; an EscalationRejected, the call's exception, or a TimeoutError), how long it took
    and what it cost in pico-units (None: unknown)."""

    value: Any
    error: BaseException | None
    latency: float
    cost: int | None


_verdict = functools.partial(tuple.__new__, Verdict)  # C-level: the fallback path is hot too


def flow(
    chain: Sequence[Fallback], reason: Reason | None = None
) -> Generator[Fallback, tuple[bool, Any], Verdict]:
    """Walk the fallback chain: yields each handler, is sent ``(ok, value_or_exception)``, or
    for an Escalate handler ``(ok, Ran)``. Escalate handlers are skipped unless the call's
    ``reason`` is one they run for (``ESCALATES``)."""
    attempts: list[Attempt] = []
    store_failures: tuple[Attempt, ...] = ()
    spent = 0  # what the handlers that ran cost
    unknown = False
    for handler in chain:
        if isinstance(handler, Escalate) and reason not in ESCALATES:
            continue
        ok, value = yield handler
        spent += handler.cost_pico
        if value.__class__ is Ran:  # an escalation: timed and priced
            cost = value.cost
            if cost is None:
                unknown = True
            else:
                spent += cost
            tried = Attempt(
                handler.name,
                handler.source,
                value.error,
                value.latency,
                None if cost is None else to_decimal(cost + handler.cost_pico),
            )
            attempts.append(tried)
            if value.error is not None:
                continue
            return _verdict(
                (handler, value.value, tuple(attempts), spent, None, store_failures, unknown)
            )
        if not ok:
            if isinstance(value, ConfigError):
                raise value  # a configuration bug is surfaced, not passed on
            failed = Attempt(handler.name, handler.source, value)
            attempts.append(failed)
            if isinstance(value, StoreError):
                store_failures += (failed,)
            continue
        attempts.append(Attempt(handler.name, handler.source))
        queued = value if isinstance(value, _Queued) else None
        answer = value.placeholder if queued is not None else value
        return _verdict((handler, answer, tuple(attempts), spent, queued, store_failures, unknown))
    return _verdict((None, None, tuple(attempts), spent, None, store_failures, unknown))


def _name(check: Callable[..., Any]) -> str:
    name = getattr(check, "__qualname__", None)
    return "validator " + (name if isinstance(name, str) else type(check).__name__)


def _shown(value: Any, limit: int = 2000) -> str:
    """``repr(value)`` for an Outcome's detail: never raises, cut after ``limit`` characters.
    Only on the paths that do not serve the model's result."""
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__qualname__} object whose repr() failed>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
