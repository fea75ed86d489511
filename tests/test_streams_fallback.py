"""Streams the fallback chain answers: a client's ``create()`` that fails before returning its
stream, and a buffered answer rejected after the model streamed it all."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from llm_server import LLMServer, openai_client

import aiguard
from aiguard import Reason, Source

MESSAGES: list[Any] = [{"role": "user", "content": "where is my refund?"}]


@pytest.fixture
def client(llm_server: LLMServer) -> Iterator[openai.OpenAI]:
    made = openai_client(llm_server)
    yield made
    made.close()


def chat(client: openai.OpenAI, **options: Any) -> Any:
    @aiguard.guard("f-chat", fallback=aiguard.Default("busy"), **options)
    def answer() -> Any:
        return client.chat.completions.create(model="gpt-4.1-mini", messages=MESSAGES, stream=True)

    return answer


def test_with_stream_pass_the_fallbacks_answer_is_an_iterator_of_chunks(
    llm_server: LLMServer, client: openai.OpenAI
) -> None:
    """stream='pass' declares a stream: the fallback's value is served as one chunk."""
    llm_server.reply(status=429)
    stream = chat(client, stream="pass")()
    assert list(stream) == ["busy"]
    outcome = aiguard.last_outcome()
    assert outcome is not None
    assert (outcome.reason, outcome.source) == (Reason.ERROR, Source.DEFAULT)


def test_the_fallbacks_stream_supports_with_and_outcome(
    llm_server: LLMServer, client: openai.OpenAI
) -> None:
    llm_server.reply(status=429)
    stream = chat(client, stream="pass")()
    with stream:
        assert list(stream) == ["busy"]
    assert stream.outcome.reason is Reason.ERROR


def test_by_default_the_fallbacks_answer_is_served_as_it_is(
    llm_server: LLMServer, client: openai.OpenAI
) -> None:
    """stream=None: before the function returns, nothing says it returns a stream, so a
    fallback's answer is served as it is (declare stream='pass' to get it as a stream)."""
    llm_server.reply(status=429)
    assert chat(client)() == "busy"


def test_a_rejected_buffered_stream_keeps_its_tokens_and_cost() -> None:
    aiguard.configure(prices={"currency": "USD", "models": {"m1": {"input": "1", "output": "2"}}})

    @aiguard.guard(
        "f-buffer", model="m1", stream="buffer", validate=lambda text: False,
        fallback=aiguard.Default("fallback"),
    )  # fmt: skip
    def answer() -> Iterator[str]:
        yield "not sure"
        return {"input_tokens": 1000, "output_tokens": 500}  # type: ignore[return-value]

    outcome = answer.outcome()
    assert (outcome.reason, outcome.value) == (Reason.INVALID_OUTPUT, "fallback")
    assert outcome.usage is not None and outcome.usage.output_tokens == 500
    assert outcome.cost is not None
