"""aiguard around the real openai and anthropic clients, over HTTP to the local LLM server:
usage and cost of served calls, error statuses, malformed answers, timeouts, disconnects and the
clients' own retries, each through the sync and the async driver."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from _modes import Body, Mode
from llm_server import (
    LLMServer,
    Reply,
    anthropic_client,
    async_anthropic_client,
    async_openai_client,
    openai_client,
)

import aiguard
from aiguard import Reason, Source

APIS = ["openai", "anthropic"]
PRICES: dict[str, Any] = {
    "currency": "USD",
    "models": {
        "gpt-4.1-mini": {"input": "0.40", "cached_input": "0.10", "output": "1.60"},
        "claude-test-1": {
            "input": "3",
            "cached_input": "0.30",
            "cache_write": "3.75",
            "output": "15",
        },
    },
}
# what the server names: dated snapshots of the models in the table
SNAPSHOT = {"openai": "gpt-4.1-mini-2025-04-14", "anthropic": "claude-test-1-20250929"}
REQUESTED = {"openai": "gpt-4.1-mini", "anthropic": "claude-test-1"}
MESSAGES: list[Any] = [{"role": "user", "content": "my invoice is wrong"}]
FALLBACK = "(fallback)"


def model(mode: Mode, server: LLMServer, api: str, **client: Any) -> Body:
    """The model function a service writes: one ``create`` call with a client on the server
    (made with ``client`` options), returning the client's response. ``async def`` with the
    async client in async mode."""
    create: dict[str, Any] = {"model": REQUESTED[api], "messages": MESSAGES}
    if api == "anthropic":
        create["max_tokens"] = 100
    if mode.is_async:
        maker = async_openai_client if api == "openai" else async_anthropic_client

        async def ask_async(ticket: str) -> Any:
            async with maker(server, **client) as made:
                if isinstance(made, openai.AsyncOpenAI):
                    return await made.chat.completions.create(**create)
                return await made.messages.create(**create)

        return ask_async

    def ask(ticket: str) -> Any:
        if api == "openai":
            with openai_client(server, **client) as made:
                return made.chat.completions.create(**create)
        with anthropic_client(server, **client) as made_anthropic:
            return made_anthropic.messages.create(**create)

    return ask


def per_million(*terms: tuple[int, str]) -> Decimal:
    """Sum of tokens x price per million, by hand."""
    return sum((Decimal(n) * Decimal(price) for n, price in terms), Decimal(0)) / 1_000_000


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("aiguard")]


# -- a served call: usage and cost ----------------------------------------------------------


def test_openai_usage_and_cost(mode: Mode, llm_server: LLMServer) -> None:
    """The usage aiguard reads is what the server sent, and the cost is the price table's."""
    aiguard.configure(prices=PRICES)
    sent = {
        "prompt_tokens": 2000,
        "completion_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 1536},
        "completion_tokens_details": {"reasoning_tokens": 64},
    }
    llm_server.reply(model=SNAPSHOT["openai"], usage=sent)
    f = mode.guard("http-openai-usage", fallback=aiguard.Default(FALLBACK))(
        model(mode, llm_server, "openai")
    )
    outcome = mode.outcome(f, "ticket")
    assert outcome.reason is Reason.SERVED and outcome.source is Source.MODEL
    assert isinstance(outcome.value, openai.types.chat.ChatCompletion)
    assert outcome.usage == aiguard.Usage(
        input_tokens=2000,
        output_tokens=150,
        cache_read_tokens=1536,
        cache_write_tokens=0,
        reasoning_tokens=64,
        model=SNAPSHOT["openai"],
        provider="openai",
    )
    # 464 uncached at 0.40, 1536 cached at 0.10, 150 output at 1.60, per million
    assert outcome.cost == per_million((464, "0.40"), (1536, "0.10"), (150, "1.60"))
    assert aiguard.stats("http-openai-usage").cost == outcome.cost


def test_anthropic_usage_and_cost(mode: Mode, llm_server: LLMServer) -> None:
    """Anthropic's input leaves the cache reads and writes out: aiguard adds them, and prices
    each part at its own rate."""
    aiguard.configure(prices=PRICES)
    sent = {
        "input_tokens": 120,
        "cache_read_input_tokens": 4000,
        "cache_creation_input_tokens": 800,
        "cache_creation": {"ephemeral_5m_input_tokens": 800, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 45,
    }
    llm_server.reply(model=SNAPSHOT["anthropic"], usage=sent)
    f = mode.guard("http-anthropic-usage", fallback=aiguard.Default(FALLBACK))(
        model(mode, llm_server, "anthropic")
    )
    outcome = mode.outcome(f, "ticket")
    assert outcome.reason is Reason.SERVED
    assert isinstance(outcome.value, anthropic.types.Message)
    assert outcome.usage == aiguard.Usage(
        input_tokens=120 + 4000 + 800,
        output_tokens=45,
        cache_read_tokens=4000,
        cache_write_tokens=800,
        model=SNAPSHOT["anthropic"],
        provider="anthropic",
    )
    assert outcome.cost == per_million((120, "3"), (4000, "0.30"), (800, "3.75"), (45, "15"))


def test_anthropic_one_hour_cache_writes_cost_more(mode: Mode, llm_server: LLMServer) -> None:
    """1-hour cache writes cost 2x the input price (3.75 is the 5-minute rate, 1.25x)."""
    aiguard.configure(prices=PRICES)
    sent = {
        "input_tokens": 100,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600},
        "output_tokens": 10,
    }
    llm_server.reply(model=SNAPSHOT["anthropic"], usage=sent)
    f = mode.guard("http-anthropic-1h")(model(mode, llm_server, "anthropic"))
    outcome = mode.outcome(f, "ticket")
    billed = per_million((100, "3"), (400, "3.75"), (600, "6"), (10, "15"))
    assert outcome.cost == billed


# -- the provider refuses: an HTTP error status ----------------------------------------------


@pytest.mark.parametrize(
    ("api", "status", "error"),
    [
        ("openai", 429, openai.RateLimitError),
        ("openai", 500, openai.InternalServerError),
        ("anthropic", 429, anthropic.RateLimitError),
        ("anthropic", 500, anthropic.InternalServerError),
        ("anthropic", 529, anthropic.OverloadedError),
    ],
)
def test_error_status_goes_to_the_fallback_and_costs_nothing(
    mode: Mode,
    llm_server: LLMServer,
    caplog: pytest.LogCaptureFixture,
    api: str,
    status: int,
    error: type[Exception],
) -> None:
    """429, 500, 529: reason ``error``, the fallback serves, the client's own exception is
    kept, the cost is 0 (nothing was billed) and nothing warns about an unknown cost."""
    aiguard.configure(prices=PRICES)
    llm_server.reply(status=status, retry_after=1)
    feature = f"http-status-{api}-{status}"
    f = mode.guard(feature, model=REQUESTED[api], fallback=aiguard.Default(FALLBACK))(
        model(mode, llm_server, api)
    )
    with caplog.at_level("WARNING", logger="aiguard"):
        outcome = mode.outcome(f, "ticket")
    assert outcome.reason is Reason.ERROR and outcome.source is Source.DEFAULT
    assert outcome.value == FALLBACK
    assert type(outcome.exception) is error
    assert outcome.exception.status_code == status  # type: ignore[attr-defined]
    assert outcome.cost == 0 and outcome.usage is None
    assert aiguard.stats(feature).unknown_cost_calls == 0
    assert warnings(caplog) == []
    assert len(llm_server.requests) == 1


# -- a malformed 200 --------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_invalid_json_goes_to_the_fallback_at_unknown_cost(
    mode: Mode, llm_server: LLMServer, caplog: pytest.LogCaptureFixture, api: str
) -> None:
    """A 200 whose body is not JSON: both clients raise ``json.JSONDecodeError`` (not one of
    their own errors); aiguard records reason ``error`` with it, the fallback serves, and the
    cost is unknown (the provider answered 200: it may have billed), with a warning naming it."""
    aiguard.configure(prices=PRICES)
    llm_server.reply(raw=b'{"id": "chatcmpl-1", "choices": [')
    feature = f"http-bad-json-{api}"
    f = mode.guard(feature, model=REQUESTED[api], fallback=aiguard.Default(FALLBACK))(
        model(mode, llm_server, api)
    )
    with caplog.at_level("WARNING", logger="aiguard"):
        outcome = mode.outcome(f, "ticket")
    assert outcome.reason is Reason.ERROR and outcome.value == FALLBACK
    assert type(outcome.exception).__name__ == "JSONDecodeError"
    assert outcome.cost is None
    assert aiguard.stats(feature).unknown_cost_calls == 1
    assert any("JSONDecodeError" in m and "cost is unknown" in m for m in warnings(caplog))


@pytest.mark.parametrize("api", APIS)
def test_missing_fields_are_served_unless_validated(
    mode: Mode, llm_server: LLMServer, caplog: pytest.LogCaptureFixture, api: str
) -> None:
    """A 200 whose JSON lacks required fields: the clients do not validate responses, they
    return an object with those fields ``None``. aiguard serves it as is (nothing tells it the
    answer is broken), with no usage and an unknown cost; a validator on the field sends it to
    the fallback with reason ``invalid_output``."""
    aiguard.configure(prices=PRICES)
    content = "choices" if api == "openai" else "content"
    llm_server.reply(omit=(content, "usage"))
    unchecked = mode.guard(f"http-missing-{api}", model=REQUESTED[api])(
        model(mode, llm_server, api)
    )
    with caplog.at_level("WARNING", logger="aiguard"):
        served = mode.outcome(unchecked, "ticket")
    assert served.reason is Reason.SERVED
    assert getattr(served.value, content) is None and served.value.usage is None
    assert served.usage is None and served.cost is None
    assert any("no token usage was read" in m for m in warnings(caplog))

    def answered(response: Any) -> bool:
        return bool(getattr(response, content))

    checked = mode.guard(
        f"http-missing-checked-{api}",
        model=REQUESTED[api],
        validate=answered,
        fallback=aiguard.Default(FALLBACK),
    )(model(mode, llm_server, api))
    rejected = mode.outcome(checked, "ticket")
    assert rejected.reason is Reason.INVALID_OUTPUT and rejected.value == FALLBACK
    assert rejected.model_result is not None and rejected.cost is None


@pytest.mark.parametrize("api", APIS)
def test_validating_with_the_response_type(mode: Mode, llm_server: LLMServer, api: str) -> None:
    """``validate=`` the client's response type rejects a response missing required fields."""
    content = "choices" if api == "openai" else "content"
    llm_server.reply(omit=(content, "usage"))
    response_type = openai.types.chat.ChatCompletion if api == "openai" else anthropic.types.Message
    f = mode.guard(
        f"http-validate-type-{api}", validate=response_type, fallback=aiguard.Default(FALLBACK)
    )(model(mode, llm_server, api))
    outcome = mode.outcome(f, "ticket")
    assert outcome.reason is Reason.INVALID_OUTPUT and outcome.value == FALLBACK


# -- timeouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_client_timeout_is_a_timeout_of_unknown_cost(
    mode: Mode, llm_server: LLMServer, caplog: pytest.LogCaptureFixture, api: str
) -> None:
    """The client's own timeout (0.2 s; the server holds its headers 2 s): reason ``timeout``,
    the client's APITimeoutError kept, the cost unknown, and the warning names the failure."""
    aiguard.configure(prices=PRICES)
    llm_server.reply(delay=2)
    feature = f"http-client-timeout-{api}"
    f = mode.guard(feature, model=REQUESTED[api], fallback=aiguard.Default(FALLBACK))(
        model(mode, llm_server, api, timeout=0.2)
    )
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="aiguard"):
        outcome = mode.outcome(f, "ticket")
    assert time.monotonic() - started < 1.5
    assert outcome.reason is Reason.TIMEOUT and outcome.value == FALLBACK
    expected = openai.APITimeoutError if api == "openai" else anthropic.APITimeoutError
    assert type(outcome.exception) is expected
    assert outcome.cost is None
    messages = warnings(caplog)
    assert any("APITimeoutError" in m and "cost is unknown" in m for m in messages), messages


@pytest.mark.parametrize("api", APIS)
def test_aiguard_timeout_shorter_than_the_clients(
    mode: Mode, llm_server: LLMServer, api: str
) -> None:
    """aiguard's ``timeout=`` (0.2 s) under the client's (5 s), the server silent: the call
    returns within the timeout and a small margin, reason ``timeout``, the cost unknown."""
    aiguard.configure(prices=PRICES)
    llm_server.reply(hang=True)
    f = mode.guard(
        f"http-guard-timeout-{api}",
        model=REQUESTED[api],
        timeout=0.2,
        fallback=aiguard.Default(FALLBACK),
    )(model(mode, llm_server, api, timeout=5))
    started = time.monotonic()
    outcome = mode.outcome(f, "ticket")
    elapsed = time.monotonic() - started
    assert outcome.reason is Reason.TIMEOUT and outcome.value == FALLBACK
    assert 0.2 <= elapsed < 0.6, elapsed
    assert outcome.exception is None and outcome.model_latency is None
    assert outcome.cost is None
    assert len(llm_server.requests) == 1


def test_aiguard_timeout_warning_names_the_timeout(
    mode: Mode, llm_server: LLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The unknown-cost warning of a call cut by aiguard's timeout names the timeout."""
    aiguard.configure(prices=PRICES)
    llm_server.reply(hang=True)
    f = mode.guard(
        "http-guard-timeout-warning",
        model=REQUESTED["openai"],
        timeout=0.2,
        fallback=aiguard.Default(FALLBACK),
    )(model(mode, llm_server, "openai", timeout=5))
    with caplog.at_level("WARNING", logger="aiguard"):
        outcome = mode.outcome(f, "ticket")
    assert outcome.reason is Reason.TIMEOUT and outcome.cost is None
    messages = warnings(caplog)
    assert not any("return the client's response" in m for m in messages), messages
    assert any("time" in m and "cost is unknown" in m for m in messages), messages


# -- disconnects and retries ------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_disconnect_before_the_response(
    mode: Mode, llm_server: LLMServer, caplog: pytest.LogCaptureFixture, api: str
) -> None:
    """The server closes the connection without answering: the client's APIConnectionError,
    reason ``error``, the cost unknown (the request was sent), and the warning names it."""
    aiguard.configure(prices=PRICES)
    llm_server.reply(disconnect=True)
    feature = f"http-disconnect-{api}"
    f = mode.guard(feature, model=REQUESTED[api], fallback=aiguard.Default(FALLBACK))(
        model(mode, llm_server, api)
    )
    with caplog.at_level("WARNING", logger="aiguard"):
        outcome = mode.outcome(f, "ticket")
    assert outcome.reason is Reason.ERROR and outcome.value == FALLBACK
    expected = openai.APIConnectionError if api == "openai" else anthropic.APIConnectionError
    assert type(outcome.exception) is expected
    assert outcome.cost is None and aiguard.stats(feature).unknown_cost_calls == 1
    messages = warnings(caplog)
    assert any("APIConnectionError" in m and "cost is unknown" in m for m in messages), messages


@pytest.mark.parametrize("api", APIS)
def test_client_retries_are_one_guarded_call(mode: Mode, llm_server: LLMServer, api: str) -> None:
    """With ``max_retries=2`` and a 500, the client sends 3 requests; aiguard sees one call
    that raised once (the last attempt's error), costs nothing, and whose model latency
    spans the three attempts."""
    aiguard.configure(prices=PRICES)
    llm_server.reply(status=500, retry_after=0.05)
    feature = f"http-retries-{api}"
    f = mode.guard(feature, model=REQUESTED[api], fallback=aiguard.Default(FALLBACK))(
        model(mode, llm_server, api, max_retries=2)
    )
    outcome = mode.outcome(f, "ticket")
    attempts = [r.headers["x-stainless-retry-count"] for r in llm_server.requests]
    assert attempts == ["0", "1", "2"]
    assert outcome.reason is Reason.ERROR and outcome.value == FALLBACK
    assert outcome.exception.status_code == 500  # type: ignore[union-attr]
    assert outcome.cost == 0
    assert outcome.model_latency is not None and outcome.model_latency >= 0.1
    stats = aiguard.stats(feature)
    assert stats.calls == 1 and stats.by_reason == {"error": 1}


@pytest.mark.parametrize("api", APIS)
def test_retry_that_succeeds_is_served(mode: Mode, llm_server: LLMServer, api: str) -> None:
    """A 429 then a 200: the client's retry answers, and aiguard serves it with the usage and
    cost of the answer alone (the refused attempt was not billed)."""
    aiguard.configure(prices=PRICES)
    llm_server.script(Reply(status=429, retry_after=0.01), Reply(model=SNAPSHOT[api]))
    f = mode.guard(f"http-retry-ok-{api}", fallback=aiguard.Default(FALLBACK))(
        model(mode, llm_server, api, max_retries=1)
    )
    outcome = mode.outcome(f, "ticket")
    assert len(llm_server.requests) == 2
    assert outcome.reason is Reason.SERVED and outcome.usage is not None
    if api == "openai":  # the server's default usage
        expected = per_million((200, "0.40"), (1000, "0.10"), (80, "1.60"))
    else:
        expected = per_million((100, "3"), (300, "0.30"), (50, "3.75"), (20, "15"))
    assert outcome.cost == expected
