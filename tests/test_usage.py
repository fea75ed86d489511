"""Reading tokens and model names from the real clients' response types and from dicts."""

from __future__ import annotations

from typing import Any

import pytest
from clients import CHAT, MESSAGE, RESPONSE, anthropic_client, openai_client

import aiguard
from aiguard import Usage, read_usage


def test_openai_chat_completion() -> None:
    """OpenAI prompt tokens already include cached ones; completion includes reasoning."""
    completion = openai_client().chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert read_usage(completion) == Usage(
        input_tokens=1200,
        output_tokens=80,
        cache_read_tokens=1000,
        reasoning_tokens=30,
        model="gpt-4.1-mini-2025-04-14",
        provider="openai",
    )


def test_openai_response() -> None:
    """OpenAI Responses: input tokens include cached ones."""
    response = openai_client(RESPONSE).responses.create(model="gpt-4.1-mini", input="hi")
    usage = read_usage(response)
    assert usage == Usage(
        input_tokens=500, output_tokens=40, cache_read_tokens=200, reasoning_tokens=10,
        model="gpt-4.1-mini", provider="openai",
    )  # fmt: skip
    assert usage is not None and usage.uncached_input_tokens == 300


def test_anthropic_message_counts_cache_tokens_once() -> None:
    """Anthropic input tokens exclude cache reads and writes: the total adds them."""
    message = anthropic_client().messages.create(
        model="claude-test-1", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    usage = read_usage(message)
    assert usage == Usage(
        input_tokens=450, output_tokens=20, cache_read_tokens=300, cache_write_tokens=50,
        model="claude-test-1", provider="anthropic",
    )  # fmt: skip
    assert usage is not None and usage.uncached_input_tokens == 100


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"usage": {"prompt_tokens": 10, "completion_tokens": 2}}, Usage(10, 2)),
        ({"input_tokens": 7, "output_tokens": 3, "model": "m"}, Usage(7, 3, model="m")),
        ({"input_tokens": 7, "output_tokens": 3, "cached_tokens": 5}, Usage(7, 3, 5)),
        ({"label": "x"}, None),
        ("plain string", None),
        (None, None),
        ({"usage": {"prompt_tokens": "lots"}}, Usage(0, 0)),
    ],
)
def test_plain_shapes(result: Any, expected: Usage | None) -> None:
    """Dicts in either vocabulary; results with no usage give None; junk counts as 0."""
    assert read_usage(result) == expected


def test_guard_records_usage_and_model() -> None:
    """The Outcome carries the tokens and model of the call."""
    client = openai_client()

    @aiguard.guard("draft")
    def draft(text: str) -> Any:
        return client.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": text}]
        )

    outcome = draft.outcome("hi")
    assert outcome.usage is not None and outcome.usage.input_tokens == 1200
    assert outcome.usage.model == "gpt-4.1-mini-2025-04-14"


def test_custom_reader_and_reading_off() -> None:
    """usage= may be a callable returning a Usage or a mapping; usage=False reads nothing."""

    @aiguard.guard("c", usage=lambda r: {"input_tokens": r["n"], "output_tokens": 1})
    def custom() -> dict[str, int]:
        return {"n": 42}

    @aiguard.guard("off", usage=False)
    def off() -> dict[str, Any]:
        return dict(CHAT)

    assert custom.outcome().usage == Usage(42, 1)
    assert off.outcome().usage is None


def test_a_malformed_usage_never_fails_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """A reader that raises is an internal failure: logged once, the call is served."""

    def broken(result: Any) -> Usage:
        raise ValueError("odd usage object")

    @aiguard.guard("m", usage=broken)
    def f() -> str:
        return "ok"

    with caplog.at_level("WARNING", logger="aiguard"):
        assert [f(), f()] == ["ok", "ok"]
        assert f.outcome().usage is None
    assert sum("odd usage object" in r.getMessage() for r in caplog.records) == 1


def test_anthropic_dict_message_too() -> None:
    """The same Anthropic rule applies to the message as a plain dict."""
    assert read_usage(dict(MESSAGE)) == Usage(450, 20, 300, 50, model="claude-test-1",
                                               provider="anthropic")  # fmt: skip


def test_reader_values_become_whole_token_counts() -> None:
    """A custom reader returning Decimals, floats or numeric strings gives whole counts."""
    from decimal import Decimal

    aiguard.configure(prices={"models": {"m": {"input": "1", "output": "1"}}})

    def reader(result: Any) -> dict[str, Any]:
        return {"input_tokens": Decimal(5), "output_tokens": "7.0x"}

    @aiguard.guard("odd", model="m", usage=reader)
    def f() -> str:
        return "ok"

    outcome = f.outcome()
    assert outcome.usage == Usage(5, 0, model=None)
    assert outcome.cost is not None
