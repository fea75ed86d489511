"""The model clients' own errors: their timeouts are timeouts (issue 11, item 2)."""

from __future__ import annotations

import anthropic
import httpx2
import openai
import pytest
from _modes import Mode

import aiguard
from aiguard import Reason

REQUEST = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")


class Gateway(Exception):
    """A client error of the user's own that means "timed out"."""


@pytest.mark.parametrize(
    "error",
    [
        openai.APITimeoutError(request=REQUEST),
        anthropic.APITimeoutError(request=REQUEST),
        httpx2.ReadTimeout("read timed out", request=REQUEST),
        httpx2.ConnectTimeout("connect timed out", request=REQUEST),
        TimeoutError("the model's own"),
    ],
    ids=["openai", "anthropic", "httpx2-read", "httpx2-connect", "TimeoutError"],
)
def test_client_timeouts_are_reason_timeout(mode: Mode, error: Exception) -> None:
    """The openai, anthropic and httpx2 timeout errors (and TimeoutError) end as reason
    ``timeout``, and the fallback answers."""

    def body() -> str:
        raise error

    f = mode.guard("provider-timeout", fallback=aiguard.Default("fallback"))(body)
    outcome = mode.outcome(f)
    assert outcome.reason is Reason.TIMEOUT and outcome.value == "fallback"
    assert outcome.exception is error


def test_other_client_errors_stay_errors(mode: Mode) -> None:
    """A client error that is not a timeout (a refused connection) stays reason ``error``."""

    def body() -> str:
        raise openai.APIConnectionError(request=REQUEST)

    f = mode.guard("provider-error", fallback=aiguard.Default("fallback"))(body)
    assert mode.outcome(f).reason is Reason.ERROR


def test_timeout_errors_adds_types(mode: Mode) -> None:
    """``timeout_errors=`` makes more exception types count as timeouts."""

    def body() -> str:
        raise Gateway("504 from the gateway")

    f = mode.guard("gateway", timeout_errors=Gateway, fallback=aiguard.Default("fb"))(body)
    assert mode.outcome(f).reason is Reason.TIMEOUT
    g = mode.guard("gateway-plain", fallback=aiguard.Default("fb"))(body)
    assert mode.outcome(g).reason is Reason.ERROR


def test_the_breaker_trips_on_client_timeouts(mode: Mode) -> None:
    """Client timeouts count in the breaker's timeout rate: it trips (auto_killed)."""

    def body() -> str:
        raise openai.APITimeoutError(request=REQUEST)

    breaker = aiguard.Breaker(max_timeout_rate=0.5, min_calls=4, window=10)
    f = mode.guard("trip-on-timeouts", breaker=breaker, fallback=aiguard.Default("fb"))(body)
    reasons = [mode.outcome(f).reason for _ in range(6)]
    assert reasons[:4] == [Reason.TIMEOUT] * 4
    assert Reason.AUTO_KILLED in reasons[4:]


def test_timeout_errors_is_checked_at_decoration() -> None:
    """A timeout_errors= that is not exception types is a ConfigError naming it."""
    with pytest.raises(aiguard.ConfigError, match="timeout_errors="):
        aiguard.guard("bad-timeout-errors", timeout_errors=("504",))  # type: ignore[arg-type]


PRICES = {"models": {"gpt-x": {"input": "1", "output": "2"}}}


def _status(code: int) -> Exception:
    response = httpx2.Response(code, request=REQUEST)
    return openai.APIStatusError(f"HTTP {code}", response=response, body=None)


@pytest.mark.parametrize("code", [429, 500, 529])
def test_an_http_error_status_costs_nothing(mode: Mode, code: int) -> None:
    """The provider refused the call (429/500/529): nothing was billed, so its cost is 0 (plus
    what the fallback costs), not unknown."""
    aiguard.configure(prices=PRICES)

    def body() -> str:
        raise _status(code)

    f = mode.guard("refused", model="gpt-x", fallback=aiguard.Rules(lambda: "r", cost="0.5"))(body)
    outcome = mode.outcome(f)
    assert outcome.reason is Reason.ERROR and str(outcome.cost) == "0.5"
    assert aiguard.stats("refused").unknown_cost_calls == 0


def test_a_timeout_costs_unknown_and_the_warning_says_why(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """A timed-out call may have been billed: its cost is unknown, and the warning names the
    failure rather than blaming a missing usage reader."""
    aiguard.configure(prices=PRICES)

    def body() -> str:
        raise openai.APITimeoutError(request=REQUEST)

    f = mode.guard("timed-out-cost", model="gpt-x", fallback=aiguard.Default("fb"))(body)
    with caplog.at_level("WARNING", logger="aiguard"):
        outcome = mode.outcome(f)
    assert outcome.cost is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("APITimeoutError" in m and "cost is unknown" in m for m in messages), messages
    assert not any("return the client's response" in m for m in messages)
