"""A guarded function returning a client's stream whose ``create()`` fails before returning it:
what the caller gets from the fallback chain."""

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
    assert outcome is not None and (outcome.reason, outcome.source) == (Reason.ERROR, Source.DEFAULT)


@pytest.mark.xfail(
    strict=True,
    reason="create() raised before returning its stream: the fallback's answer is a plain "
    "generator, which has no `with` and no `.outcome`, unlike the stream it stands for",
)
def test_the_fallbacks_stream_supports_with_and_outcome(
    llm_server: LLMServer, client: openai.OpenAI
) -> None:
    llm_server.reply(status=429)
    stream = chat(client, stream="pass")()
    with stream:
        assert list(stream) == ["busy"]
    assert stream.outcome.reason is Reason.ERROR


@pytest.mark.xfail(
    strict=True,
    reason="with stream=None, aiguard cannot know before the function returns that it returns a "
    "stream: the fallback's value is served as it is, and iterating a str gives its characters",
)
def test_by_default_the_fallbacks_answer_is_one_chunk(
    llm_server: LLMServer, client: openai.OpenAI
) -> None:
    llm_server.reply(status=429)
    assert list(chat(client)()) == ["busy"]
