"""The local LLM server: the real openai and anthropic clients parse what it sends, sync and
async, streamed and not, and it does what a test scripts (errors, delays, cuts, hangs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from _modes import Mode
from llm_server import (
    LLMServer,
    Reply,
    anthropic_client,
    async_anthropic_client,
    async_openai_client,
    openai_client,
)

MESSAGES: list[Any] = [{"role": "user", "content": "my invoice is wrong"}]


def call(
    mode: Mode,
    server: LLMServer,
    api: str,
    *,
    client: dict[str, Any] | None = None,
    each: Callable[[Any], None] | None = None,
    **create: Any,
) -> Any:
    """One ``create`` call of ``api`` ("openai" or "anthropic") with the mode's client (made
    with ``client`` options); a stream comes back as a list, each item passed to ``each``
    first."""
    options: dict[str, Any] = {"messages": MESSAGES, **create}
    if api == "openai":
        options.setdefault("model", "gpt-4.1-mini")
    else:
        options.setdefault("model", "claude-test-1")
        options.setdefault("max_tokens", 100)
    take = each or (lambda item: None)

    if mode.is_async:

        async def run() -> Any:
            maker = async_openai_client if api == "openai" else async_anthropic_client
            async with maker(server, **(client or {})) as made:
                create_call = (
                    made.chat.completions.create  # type: ignore[union-attr]
                    if api == "openai"
                    else made.messages.create  # type: ignore[union-attr]
                )
                result = await create_call(**options)
                if not create.get("stream"):
                    return result
                items = []
                async for item in result:
                    take(item)
                    items.append(item)
                return items

        return mode.run(run())
    maker = openai_client if api == "openai" else anthropic_client
    with maker(server, **(client or {})) as made:  # type: ignore[operator]
        create_call = made.chat.completions.create if api == "openai" else made.messages.create
        result = create_call(**options)
        if not create.get("stream"):
            return result
        items = []
        for item in result:
            take(item)
            items.append(item)
        return items


def chat(mode: Mode, server: LLMServer, **create: Any) -> Any:
    """``chat.completions.create(**create)`` with the mode's OpenAI client."""
    return call(mode, server, "openai", **create)


def message(mode: Mode, server: LLMServer, **create: Any) -> Any:
    """``messages.create(**create)`` with the mode's Anthropic client."""
    return call(mode, server, "anthropic", **create)


def test_openai_completion(mode: Mode, llm_server: LLMServer) -> None:
    """A ChatCompletion with the scripted text, model and usage; the request is recorded."""
    llm_server.reply(
        text="billing",
        model="gpt-4.1-mini-2025-04-14",
        usage={"prompt_tokens": 900, "prompt_tokens_details": {"cached_tokens": 512}},
    )
    completion = chat(mode, llm_server)
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.choices[0].message.content == "billing"
    assert completion.model == "gpt-4.1-mini-2025-04-14"
    assert completion.usage is not None and completion.usage.prompt_tokens == 900
    assert completion.usage.total_tokens == 900 + completion.usage.completion_tokens
    details = completion.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == 512
    (received,) = llm_server.requests
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == "Bearer test"
    assert received.body["messages"] == MESSAGES and not received.stream


@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_stream(mode: Mode, llm_server: LLMServer, include_usage: bool) -> None:
    """Chunks of ``chat.completion.chunk``: the role, one per piece of text, the finish reason,
    and the usage-only chunk (empty choices) only when the request asks for it."""
    llm_server.reply(text="hello world", chunks=4)
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = chat(mode, llm_server, stream=True, **extra)
    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta]
    assert "".join(t or "" for t in texts) == "hello world"
    assert sum(1 for t in texts if t) == 4
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert [c.choices for c in usage_chunks] == [[]] and chunks[-1] is usage_chunks[0]
        assert usage_chunks[0].usage.prompt_tokens == 1200
    else:
        assert usage_chunks == []
    assert llm_server.requests[0].stream


def test_anthropic_message(mode: Mode, llm_server: LLMServer) -> None:
    """A Message with the scripted usage, cache fields and their breakdown by lifetime."""
    llm_server.reply(
        text="billing",
        usage={
            "input_tokens": 10,
            "cache_read_input_tokens": 7,
            "cache_creation_input_tokens": 5,
            "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 3},
        },
    )
    msg = message(mode, llm_server)
    assert isinstance(msg, anthropic.types.Message)
    assert msg.content[0].type == "text" and msg.content[0].text == "billing"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (10, 20)
    assert (msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (7, 5)
    assert msg.usage.cache_creation is not None
    assert msg.usage.cache_creation.ephemeral_1h_input_tokens == 3
    (received,) = llm_server.requests
    assert received.path == "/v1/messages" and "anthropic-version" in received.headers


def test_anthropic_stream(mode: Mode, llm_server: LLMServer) -> None:
    """The events of an Anthropic stream, in order, with the usage where the API puts it."""
    llm_server.reply(text="hello world", chunks=3, usage={"output_tokens": 9})
    events = message(mode, llm_server, stream=True)
    kinds = [e.type for e in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0].message.usage.input_tokens == 100
    assert events[0].message.usage.cache_read_input_tokens == 300
    assert "".join(e.delta.text for e in events[2:5]) == "hello world"
    assert events[-2].usage.output_tokens == 9


def test_anthropic_stream_sends_a_ping(llm_server: LLMServer) -> None:
    """The raw stream holds a ``ping`` event (the client skips it), framed as the API does."""
    body = {"model": "claude-test-1", "max_tokens": 10, "messages": MESSAGES, "stream": True}
    response = httpx2.post(llm_server.url + "/v1/messages", json=body)
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert "event: ping\ndata: " in response.text
    assert response.text.startswith("event: message_start\ndata: {")
    assert response.text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_anthropic_final_message(llm_server: LLMServer) -> None:
    """``messages.stream()`` rebuilds the whole Message from the events."""
    llm_server.reply(text="hello world", chunks=3)
    with (
        anthropic_client(llm_server) as client,
        client.messages.stream(model="m", max_tokens=10, messages=MESSAGES) as stream,
    ):
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "hello world"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (100, 20)


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
def test_error_statuses(
    mode: Mode, llm_server: LLMServer, api: str, status: int, error: type[Exception]
) -> None:
    """An error status with the provider's error body: the client raises its own error."""
    llm_server.reply(status=status, retry_after=1)
    call = chat if api == "openai" else message
    with pytest.raises(error) as raised:
        call(mode, llm_server)
    assert raised.value.status_code == status  # type: ignore[attr-defined]
    assert raised.value.response.headers["retry-after"] == "1"  # type: ignore[attr-defined]
    body = raised.value.body  # type: ignore[attr-defined]
    if api == "anthropic":
        assert body["type"] == "error"
        assert (
            body["error"]["type"]
            == {
                429: "rate_limit_error",
                500: "api_error",
                529: "overloaded_error",
            }[status]
        )
    else:
        assert body["type"] in ("requests", "server_error") and "message" in body


def test_script_in_order(mode: Mode, llm_server: LLMServer) -> None:
    """Scripted replies go to the requests in order, the last one repeats; retries show in the
    requests recorded."""
    llm_server.script(Reply(status=500, retry_after=0.01), Reply(text="second"))
    with pytest.raises(openai.InternalServerError):
        chat(mode, llm_server)
    assert chat(mode, llm_server).choices[0].message.content == "second"
    assert chat(mode, llm_server).choices[0].message.content == "second"
    assert len(llm_server.requests) == 3


def test_delay_before_headers(mode: Mode, llm_server: LLMServer) -> None:
    """A reply delayed past the client's timeout: the client's own timeout error."""
    llm_server.reply(delay=2)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        chat(mode, llm_server, client={"timeout": 0.2})
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_stream_paced_and_cut(mode: Mode, llm_server: LLMServer, api: str) -> None:
    """5 chunks 0.05 s apart, cut after 3: the client gets the 3 first pieces, paced, then the
    connection ends without the stream's end (openai wraps it in APIConnectionError, anthropic
    lets httpx2's RemoteProtocolError through)."""
    llm_server.reply(text="abcdefghij", chunks=5, chunk_interval=0.05, disconnect_after=3)
    got: list[str] = []
    started = time.monotonic()
    expected: type[Exception] = (
        openai.APIConnectionError if api == "openai" else httpx2.RemoteProtocolError
    )

    def take(item: Any) -> None:
        if api == "openai" and item.choices and item.choices[0].delta.content:
            got.append(item.choices[0].delta.content)
        if api == "anthropic" and item.type == "content_block_delta":
            got.append(item.delta.text)

    with pytest.raises(expected):
        call(mode, llm_server, api, stream=True, each=take)
    assert got == ["ab", "cd", "ef"]
    assert time.monotonic() - started >= 0.1  # two intervals between three chunks


def test_first_chunk_delay(llm_server: LLMServer) -> None:
    """``first_chunk_delay`` holds the first piece of text after the headers were sent."""
    llm_server.reply(chunks=2, first_chunk_delay=0.2)
    with openai_client(llm_server) as client:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        opened = time.monotonic()
        list(stream)
    assert time.monotonic() - opened >= 0.18


def test_disconnect_before_the_response(mode: Mode, llm_server: LLMServer) -> None:
    """``disconnect=True``: the connection closes with no response; the client's connection
    error."""
    llm_server.reply(disconnect=True)
    with pytest.raises(openai.APIConnectionError) as raised:
        chat(mode, llm_server)
    assert isinstance(raised.value.__cause__, httpx2.RemoteProtocolError)


def test_stop_ends_a_hang_and_leaves_no_threads() -> None:
    """A hanging reply holds the client until the server stops; stop() ends it at once and
    joins every thread of the server."""
    server = LLMServer().start()
    server.reply(hang=True)
    errors: list[Exception] = []

    def call() -> None:
        with openai_client(server, timeout=30) as client:
            try:
                client.chat.completions.create(model="m", messages=MESSAGES)
            except Exception as exc:
                errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 2
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.requests and caller.is_alive()
    stopped = time.monotonic()
    server.stop()
    caller.join(2)
    assert not caller.is_alive() and time.monotonic() - stopped < 1
    assert [type(e) for e in errors] == [openai.APIConnectionError]
    assert server.threads == []
    assert not [t for t in threading.enumerate() if t.name.startswith("llm-server")]
