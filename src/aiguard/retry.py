"""Retries of the model call, before the fallback chain: a transient failure gets another try.

``guard(retry=aiguard.Retry(attempts=3))`` calls the model again after a failure it can recover
from (a timeout, a rate limit, an overloaded or failing server, a dropped connection), waiting
between tries. Every try counts against the call's ``timeout`` (a try is not started when the
time left is shorter than its wait) and its budget (no try once the budget is spent). Each failed
try is in ``Outcome.attempts`` (handler ``"model"``, with its exception, latency and cost); when
the tries run out, the fallback chain answers as usual.

Turn the model clients' own retries off (``openai.OpenAI(max_retries=0)``,
``anthropic.Anthropic(max_retries=0)``; both retry twice by default): retries inside the
function are invisible to aiguard, so they multiply the latency under its timeout, their costs
and failures are not counted, and the breaker never sees the failures they hide.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ._checks import seconds, shown
from .exceptions import ConfigError

__all__ = ["Retry", "transient"]

# The clients' "the request did not get through" errors, by (package, class) in the MRO: no
# import of the clients (none of them is a dependency).
_CONNECTION_ERRORS = frozenset(
    {
        ("openai", "APIConnectionError"),
        ("anthropic", "APIConnectionError"),
        ("httpx", "TransportError"),
        ("httpx2", "TransportError"),
        ("httpcore", "NetworkError"),
        ("httpcore2", "NetworkError"),
    }
)
_TIMEOUTS = frozenset(
    {
        ("openai", "APITimeoutError"),
        ("anthropic", "APITimeoutError"),
        ("httpx", "TimeoutException"),
        ("httpx2", "TimeoutException"),
    }
)
# 408 request timeout, 409 conflict (the providers' "retry": lock contention), 429 rate limited,
# 5xx (529: Anthropic overloaded)
_RETRY_STATUS = frozenset({408, 409, 429})


def _in(exc: BaseException, known: frozenset[tuple[str, str]]) -> bool:
    return any((c.__module__.partition(".")[0], c.__name__) in known for c in type(exc).__mro__)


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if isinstance(code, int):
        return code
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def transient(exc: BaseException) -> bool:
    """Is ``exc`` a failure worth another try: a timeout, a dropped connection, or an HTTP
    status that says "try again" (408, 409, 429, 5xx)? The default of ``Retry(on=...)``.

    Example:
        >>> import aiguard
        >>> aiguard.retry.transient(TimeoutError()), aiguard.retry.transient(ValueError())
        (True, False)
    """
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if _in(exc, _TIMEOUTS) or _in(exc, _CONNECTION_ERRORS):
        return True
    code = _status(exc)
    return code is not None and (code in _RETRY_STATUS or 500 <= code <= 599)


def retry_after(exc: BaseException) -> float | None:
    """The seconds an HTTP error's ``retry-after`` header asks to wait, if it has one."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("retry-after-ms")
        if value is not None:
            return max(0.0, float(value) / 1000)
        value = headers.get("retry-after")
        return None if value is None else max(0.0, float(value))
    except (TypeError, ValueError, AttributeError):
        return None  # an HTTP date, or garbage: the backoff decides


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """Try the model up to ``attempts`` times in all before the fallback chain.

    Between tries it waits ``backoff`` seconds, doubling each time up to ``max_backoff``, with
    jitter (a random share of up to half the wait taken off, so replicas do not retry in step);
    a ``retry-after`` header on the failure is honoured when it asks for longer, up to
    ``max_backoff``. ``on`` says which failures are retried: exception types, or a callable
    taking the exception and returning a bool; the default, :func:`transient`, retries
    timeouts, dropped connections and HTTP 408/409/429/5xx. A result that is served, or
    rejected by a validator or the confidence threshold, is not retried.

    Example:
        >>> import aiguard
        >>> calls = []
        >>> @aiguard.guard("flaky", retry=aiguard.Retry(attempts=3, backoff=0.001))
        ... def flaky(text: str) -> str:
        ...     calls.append(text)
        ...     if len(calls) < 3:
        ...         raise ConnectionError("reset by peer")
        ...     return text.upper()
        >>> flaky("hi"), len(calls)
        ('HI', 3)
        >>> [a.handler for a in aiguard.last_outcome().attempts]
        ['model', 'model']
    """

    attempts: int = 3
    backoff: float | timedelta = 0.2
    max_backoff: float | timedelta = 5.0
    on: type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool] = (
        transient
    )
    jitter: bool = True

    def __post_init__(self) -> None:
        n = self.attempts
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 100:
            raise ConfigError(
                f"Retry(attempts={shown(n)}) is invalid: must be a whole number from 1 to 100 "
                "(the first try included)"
            )
        seconds("Retry(backoff)", self.backoff)
        seconds("Retry(max_backoff)", self.max_backoff)
        on = self.on
        types = on if isinstance(on, tuple) else (on,)
        if isinstance(on, type | tuple):
            for t in types:
                if not (isinstance(t, type) and issubclass(t, BaseException)):
                    raise ConfigError(
                        f"Retry(on={shown(on)}) is invalid: give exception types, or a callable "
                        "taking the exception and returning True to retry"
                    )
        elif not callable(on):
            raise ConfigError(
                f"Retry(on={shown(on)}) is invalid: give exception types, or a callable taking "
                "the exception and returning True to retry"
            )
        if n == 1:
            raise ConfigError(
                "Retry(attempts=1) never retries: leave retry= out, or give attempts >= 2"
            )

    def retries(self, exc: BaseException) -> bool:
        """Is ``exc`` retried? (A failing ``on`` callable means no.)"""
        on = self.on
        if isinstance(on, type | tuple):
            return isinstance(exc, on)
        try:
            return bool(on(exc))
        except Exception:
            return False

    def wait(self, retry: int, exc: BaseException | None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        base = _secs(self.backoff)
        cap = _secs(self.max_backoff)
        wait: float = min(cap, base * 2.0 ** (retry - 1))
        if self.jitter:
            wait *= 1 - random.random() / 2
        if exc is not None:
            asked = retry_after(exc)
            if asked is not None and asked > wait:
                wait = min(asked, cap)
        return wait


def _secs(value: Any) -> float:
    result: float = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return result
