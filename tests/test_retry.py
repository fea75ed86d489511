"""retry=aiguard.Retry(...): the model tried again after a transient failure, before the
fallback chain, within the call's timeout; each try timed, costed and in Outcome.attempts.
With fake failures, and with the real clients over HTTP against the local LLM server."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import openai
import pytest
from _modes import Mode
from llm_server import LLMServer, Reply, async_openai_client, openai_client

import aiguard
from aiguard import Reason, Source
from aiguard.retry import transient

FAST = aiguard.Retry(attempts=3, backoff=0.001, jitter=False)


def flaky(failures: list[BaseException], answer: Any = "answer") -> Any:
    """A model that raises each of ``failures`` in turn, then answers; counts its calls."""
    calls: list[float] = []

    def model(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.perf_counter())
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return answer

    model.calls = calls  # type: ignore[attr-defined]
    return model


def test_transient_failures_are_retried_then_served(mode: Mode) -> None:
    body = flaky([ConnectionError("reset"), TimeoutError("read timed out")])
    fn = mode.guard("r-ok", retry=FAST, fallback=aiguard.Default("fallback"))(body)
    outcome = mode.outcome(fn, "x")
    assert (outcome.value, outcome.reason, outcome.source) == (
        "answer",
        Reason.SERVED,
        Source.MODEL,
    )
    assert len(body.calls) == 3
    assert [a.handler for a in outcome.attempts] == ["model", "model"]
    assert [type(a.error) for a in outcome.attempts] == [ConnectionError, TimeoutError]
    assert all(a.latency is not None and a.latency >= 0 for a in outcome.attempts)
    assert outcome.model_latency is not None and outcome.model_latency >= 0


def test_when_the_tries_run_out_the_fallback_answers(mode: Mode) -> None:
    body = flaky([ConnectionError(str(i)) for i in range(5)])
    fn = mode.guard("r-out", retry=FAST, fallback=aiguard.Default("fallback"))(body)
    outcome = mode.outcome(fn, "x")
    assert (outcome.value, outcome.reason) == ("fallback", Reason.ERROR)
    assert len(body.calls) == 3
    assert [a.handler for a in outcome.attempts] == ["model", "model", "model", "default"]
    assert str(outcome.exception) == "2"  # the last try's failure


def test_failures_that_are_not_transient_are_not_retried(mode: Mode) -> None:
    body = flaky([ValueError("bad prompt")])
    fn = mode.guard("r-no", retry=FAST, fallback=aiguard.Default("fallback"))(body)
    outcome = mode.outcome(fn, "x")
    assert (outcome.value, outcome.reason, len(body.calls)) == ("fallback", Reason.ERROR, 1)
    assert [a.handler for a in outcome.attempts] == ["default"]


def test_on_chooses_what_is_retried(mode: Mode) -> None:
    body = flaky([ValueError("flaky parser")])
    retry = aiguard.Retry(attempts=2, backoff=0.001, on=ValueError)
    fn = mode.guard("r-on", retry=retry)(body)
    assert mode.call(fn, "x") == "answer"
    predicate = aiguard.Retry(attempts=2, backoff=0.001, on=lambda e: "parser" in str(e))
    body2 = flaky([ValueError("flaky parser")])
    assert mode.call(mode.guard("r-on2", retry=predicate)(body2), "x") == "answer"


def test_rejected_results_are_not_retried(mode: Mode) -> None:
    body = flaky([ConnectionError("reset")], answer={"score": 0.1})
    fn = mode.guard(
        "r-low", retry=FAST, confidence="score", threshold=0.5, fallback=aiguard.Default("fb")
    )(body)
    outcome = mode.outcome(fn, "x")
    assert (outcome.value, outcome.reason, len(body.calls)) == ("fb", Reason.LOW_CONFIDENCE, 2)
    assert [a.handler for a in outcome.attempts] == ["model", "default"]


def test_all_tries_fit_in_the_timeout(mode: Mode) -> None:
    """Tries and waits count against timeout=: no try starts when its wait would not fit."""
    calls: list[float] = []

    def slow_failure(*args: Any) -> Any:
        calls.append(time.perf_counter())
        time.sleep(0.05)
        raise ConnectionError("reset")

    if mode.is_async:
        import asyncio

        async def body(*args: Any) -> Any:
            calls.append(time.perf_counter())
            await asyncio.sleep(0.05)
            raise ConnectionError("reset")

    retry = aiguard.Retry(attempts=20, backoff=0.05, max_backoff=0.05, jitter=False)
    fn = aiguard.guard("r-time", retry=retry, timeout=0.35, fallback=aiguard.Default("fb"))(
        body if mode.is_async else slow_failure
    )
    started = time.perf_counter()
    outcome = mode.outcome(fn, "x")
    elapsed = time.perf_counter() - started
    assert outcome.value == "fb"
    assert elapsed < 0.5
    assert 2 <= len(calls) <= 4  # about 0.35 s / (0.05 + 0.05 s): never all 20


def test_the_breaker_counts_every_try(mode: Mode) -> None:
    """The failures a retry hides from the caller are not hidden from the breaker."""
    body = flaky([ConnectionError(str(i)) for i in range(100)])
    fn = mode.guard(
        "r-breaker", retry=FAST, fallback=aiguard.Default("fb"),
        breaker=aiguard.Breaker(max_error_rate=0.5, min_calls=6, cooldown=60),
    )(body)  # fmt: skip
    assert mode.outcome(fn, "x").reason is Reason.ERROR  # 3 tries: 3 errors
    assert mode.outcome(fn, "x").reason is Reason.ERROR  # 6 errors: the breaker trips
    assert mode.outcome(fn, "x").reason is Reason.AUTO_KILLED
    assert len(body.calls) == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 1}, "Retry(attempts=1) never retries"),
        ({"attempts": 0}, "Retry(attempts=0) is invalid"),
        ({"attempts": True}, "Retry(attempts=True) is invalid"),
        ({"backoff": -1}, "Retry(backoff=-1) is invalid"),
        ({"on": "ConnectionError"}, "Retry(on='ConnectionError') is invalid"),
        ({"on": (ValueError, 3)}, "Retry(on=(<class 'ValueError'>, 3)) is invalid"),
    ],
)
def test_bad_retry_settings_name_the_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(aiguard.ConfigError) as info:
        aiguard.Retry(**kwargs)
    assert message in str(info.value)


def test_retry_must_be_a_retry() -> None:
    with pytest.raises(aiguard.ConfigError, match="retry"):
        aiguard.guard("r-bad", retry=3)  # type: ignore[arg-type]


def test_transient_knows_the_clients_errors(llm_server: LLMServer) -> None:
    llm_server.script(Reply(status=429), Reply(status=400), Reply(status=503), Reply(status=529))
    seen = []
    with openai_client(llm_server) as client:
        for _ in range(4):
            try:
                client.chat.completions.create(model="gpt-4.1-mini", messages=[])
            except openai.APIStatusError as exc:
                seen.append((exc.status_code, transient(exc)))
    assert seen == [(429, True), (400, False), (503, True), (529, True)]
    assert transient(openai.APIConnectionError(request=None))  # type: ignore[arg-type]


PRICES: dict[str, Any] = {
    "currency": "USD",
    "models": {"gpt-4.1-mini": {"input": "0.40", "cached_input": "0.10", "output": "1.60"}},
}


def test_real_client_429_then_200_is_served_and_costed(mode: Mode, llm_server: LLMServer) -> None:
    """The client's own retries off, aiguard's on: the 429 try costs 0 and waits its
    retry-after; the answer costs what the price table says."""
    aiguard.configure(prices=PRICES)
    llm_server.script(Reply(status=429, retry_after=0.2), Reply(text="ok"))
    retry = aiguard.Retry(attempts=3, backoff=0.001)
    if mode.is_async:
        client: Any = async_openai_client(llm_server)

        async def ask_async(ticket: str) -> Any:
            return await client.chat.completions.create(model="gpt-4.1-mini", messages=[])

        fn = aiguard.guard("r-http", retry=retry, fallback=aiguard.Default("fb"))(ask_async)
    else:
        client = openai_client(llm_server)

        def ask(ticket: str) -> Any:
            return client.chat.completions.create(model="gpt-4.1-mini", messages=[])

        fn = aiguard.guard("r-http", retry=retry, fallback=aiguard.Default("fb"))(ask)
    outcome = mode.outcome(fn, "x")
    assert outcome.reason is Reason.SERVED
    assert len(llm_server.requests) == 2
    [tried] = outcome.attempts
    assert isinstance(tried.error, openai.RateLimitError) and tried.cost == Decimal(0)
    assert outcome.latency >= 0.2  # the retry-after was honoured
    # the default usage of the server: 1200 prompt tokens (1000 cached), 80 completion
    expected = (Decimal(200) * Decimal("0.40") + Decimal(1000) * Decimal("0.10")
                + Decimal(80) * Decimal("1.60")) / 1_000_000  # fmt: skip
    assert outcome.cost == expected
