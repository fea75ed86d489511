"""Guarded streams: generator functions, and the streams the real openai and anthropic clients
return over HTTP from the local LLM server; each behaviour through the sync and async drivers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from _modes import Mode
from llm_server import (
    LLMServer,
    anthropic_client,
    async_anthropic_client,
    async_openai_client,
    openai_client,
)

import aiguard
from aiguard import Reason, Source
from aiguard.testing import capture_telemetry

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
MESSAGES: list[Any] = [{"role": "user", "content": "write me a story"}]


def per_million(*terms: tuple[int, str]) -> Decimal:
    return sum((Decimal(n) * Decimal(p) for n, p in terms), Decimal(0)) / 1_000_000


# -- generator functions -------------------------------------------------------------------------


def story(
    mode: Mode,
    chunks: list[Any],
    *,
    interval: float = 0.0,
    first_delay: float = 0.0,
    fail_after: int | None = None,
    returns: Any = None,
    closed: list[bool] | None = None,
) -> Any:
    """A model as a generator function (async generator in async mode): ``chunks`` after
    ``first_delay``, ``interval`` apart, failing after ``fail_after`` chunks; its ``finally``
    appends to ``closed``."""
    if mode.is_async:

        async def agen() -> AsyncIterator[Any]:
            try:
                await asyncio.sleep(first_delay)
                for i, chunk in enumerate(chunks):
                    if fail_after is not None and i == fail_after:
                        raise ConnectionError("connection reset by peer")
                    if i:
                        await asyncio.sleep(interval)
                    yield chunk
            finally:
                if closed is not None:
                    closed.append(True)

        return agen

    def gen() -> Iterator[Any]:
        try:
            _wait(first_delay)
            for i, chunk in enumerate(chunks):
                if fail_after is not None and i == fail_after:
                    raise ConnectionError("connection reset by peer")
                if i:
                    _wait(interval)
                yield chunk
            return returns
        finally:
            if closed is not None:
                closed.append(True)

    return gen


def _wait(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.002)


def collect(mode: Mode, stream: Any, *, stop_after: int | None = None) -> list[Any]:
    """Iterate a guarded stream as a caller does (``async for`` in async mode)."""
    if mode.is_async:

        async def read() -> list[Any]:
            got: list[Any] = []
            async for chunk in stream:
                got.append(chunk)
                if stop_after is not None and len(got) >= stop_after:
                    await stream.aclose()
                    break
            return got

        return mode.run(read())  # type: ignore[no-any-return]
    got = []
    for chunk in stream:
        got.append(chunk)
        if stop_after is not None and len(got) >= stop_after:
            stream.close()
            break
    return got


def read_into(mode: Mode, stream: Any, got: list[Any]) -> None:
    """Iterate ``stream`` to its end, appending each chunk to ``got`` as it arrives."""
    if mode.is_async:

        async def read() -> None:
            async for chunk in stream:
                got.append(chunk)

        mode.run(read())
        return
    for chunk in stream:
        got.append(chunk)


def guarded_gen(mode: Mode, feature: str, body: Any, **kwargs: Any) -> Any:
    return aiguard.guard(feature, **kwargs)(body)


def last(mode: Mode) -> aiguard.Outcome[Any]:
    outcome = mode.last_outcome()
    assert outcome is not None
    return outcome


def test_a_generator_function_stays_one(mode: Mode) -> None:
    """The guarded function is a generator function again: the caller iterates it as before."""
    import inspect

    fn = guarded_gen(mode, "s-kind", story(mode, ["a"]))
    check = inspect.isasyncgenfunction if mode.is_async else inspect.isgeneratorfunction
    assert check(fn)
    assert fn.__name__ in ("gen", "agen")


def test_chunks_pass_through_and_the_whole_stream_is_timed(mode: Mode) -> None:
    fn = guarded_gen(mode, "s-pass", story(mode, ["Once ", "upon ", "a time"], interval=0.05))
    started = time.perf_counter()
    assert collect(mode, fn()) == ["Once ", "upon ", "a time"]
    elapsed = time.perf_counter() - started
    outcome = last(mode)
    assert (outcome.reason, outcome.source, outcome.value) == (
        Reason.SERVED,
        Source.MODEL,
        "Once upon a time",
    )
    assert outcome.time_to_first_chunk is not None and outcome.time_to_first_chunk < 0.05
    assert 0.1 <= outcome.latency <= elapsed  # to the last chunk, not to the first
    assert outcome.model_latency == outcome.latency
    assert aiguard.stats("s-pass").calls == 1


def test_a_generator_can_return_its_usage() -> None:
    """A sync generator's ``return`` value is its usage (an async generator cannot return one)."""
    mode = Mode("sync", None)
    aiguard.configure(prices=PRICES)
    fn = guarded_gen(
        mode, "s-usage", story(mode, ["x"], returns={"input_tokens": 1000, "output_tokens": 10}),
        model="gpt-4.1-mini",
    )  # fmt: skip
    assert collect(mode, fn()) == ["x"]
    outcome = last(mode)
    assert outcome.usage is not None and outcome.usage.input_tokens == 1000
    assert outcome.cost == per_million((1000, "0.40"), (10, "1.60"))


def test_a_failure_before_the_first_chunk_goes_to_the_fallback(mode: Mode) -> None:
    fn = guarded_gen(
        mode, "s-early", story(mode, ["never"], fail_after=0),
        fallback=aiguard.Default("Sorry, try again."),
    )  # fmt: skip
    assert collect(mode, fn()) == ["Sorry, try again."]  # one chunk: the fallback's answer
    outcome = last(mode)
    assert (outcome.reason, outcome.source) == (Reason.ERROR, Source.DEFAULT)
    assert isinstance(outcome.exception, ConnectionError)


def test_a_fallback_that_streams_is_streamed(mode: Mode) -> None:
    fn = guarded_gen(
        mode, "s-early2", story(mode, ["never"], fail_after=0),
        fallback=aiguard.Rules(lambda: iter(["Sorry, ", "try again."])),
    )  # fmt: skip
    assert collect(mode, fn()) == ["Sorry, ", "try again."]


def test_without_a_fallback_the_first_iteration_raises_like_a_call(mode: Mode) -> None:
    fn = guarded_gen(mode, "s-early3", story(mode, ["never"], fail_after=0))
    with pytest.raises(ConnectionError):
        collect(mode, fn())
    assert last(mode).reason is Reason.ERROR


def test_a_failure_after_chunks_is_stream_interrupted(mode: Mode) -> None:
    fn = guarded_gen(
        mode, "s-cut", story(mode, ["Once ", "upon ", "a time"], fail_after=2),
        fallback=aiguard.Default("never used"),
    )  # fmt: skip
    got: list[Any] = []
    with pytest.raises(aiguard.StreamInterrupted) as info:
        read_into(mode, fn(), got)
    assert got == ["Once ", "upon "]
    assert isinstance(info.value.__cause__, ConnectionError)
    outcome = info.value.outcome
    assert (outcome.reason, outcome.source, outcome.value) == (
        Reason.INTERRUPTED,
        Source.MODEL,
        "Once upon ",
    )
    assert "after 2 chunks" in (outcome.detail or "")
    assert last(mode) is outcome or last(mode).call_id == outcome.call_id
    assert aiguard.stats("s-cut").calls == 1


def test_a_caller_that_stops_early_is_recorded_and_the_stream_closed(mode: Mode) -> None:
    closed: list[bool] = []
    fn = guarded_gen(mode, "s-stop", story(mode, ["a", "b", "c", "d"], closed=closed))
    assert collect(mode, fn(), stop_after=2) == ["a", "b"]
    outcome = last(mode)
    assert (outcome.reason, outcome.value) == (Reason.ABANDONED, "ab")
    assert closed == [True]


def test_first_chunk_timeout_sends_the_call_to_the_fallback(mode: Mode) -> None:
    fn = guarded_gen(
        mode, "s-first", story(mode, ["late"], first_delay=2.0),
        first_chunk_timeout=0.1, fallback=aiguard.Default("fallback"),
    )  # fmt: skip
    started = time.perf_counter()
    assert collect(mode, fn()) == ["fallback"]
    assert time.perf_counter() - started < 1.0
    outcome = last(mode)
    assert outcome.reason is Reason.TIMEOUT
    assert outcome.detail == "the model sent no first chunk within 0.1 s"


def test_timeout_bounds_the_whole_stream(mode: Mode) -> None:
    fn = guarded_gen(
        mode, "s-whole", story(mode, list("abcdefgh"), interval=0.1),
        timeout=0.25, fallback=aiguard.Default("never used"),
    )  # fmt: skip
    got: list[Any] = []
    started = time.perf_counter()
    with pytest.raises(aiguard.StreamInterrupted) as info:
        read_into(mode, fn(), got)
    assert time.perf_counter() - started < 1.0
    assert 1 <= len(got) <= 4
    assert isinstance(info.value.__cause__, TimeoutError)
    assert info.value.outcome.reason is Reason.INTERRUPTED
    assert "did not end within 0.25 s" in (info.value.outcome.detail or "")


def test_buffered_streams_are_judged_before_anything_is_released(mode: Mode) -> None:
    fn = guarded_gen(
        mode, "s-buffer", story(mode, ["I am ", "not sure"]), stream="buffer",
        validate=lambda text: "not sure" not in text,
        fallback=aiguard.Default("A human will answer."),
    )  # fmt: skip
    assert collect(mode, fn()) == ["A human will answer."]
    outcome = last(mode)
    assert (outcome.reason, outcome.model_result) == (Reason.INVALID_OUTPUT, "I am not sure")

    ok = guarded_gen(
        mode, "s-buffer-ok", story(mode, ["All ", "good"], interval=0.05), stream="buffer",
        validate=lambda text: text.startswith("All"),
    )  # fmt: skip
    assert collect(mode, ok()) == ["All ", "good"]
    assert last(mode).reason is Reason.SERVED


def test_pass_through_records_the_verdict_at_the_end(mode: Mode) -> None:
    """Chunks already sent are not taken back; the verdict is recorded, and the breaker and the
    statistics count it."""
    fn = guarded_gen(
        mode, "s-judged", story(mode, ["I am ", "not sure"]),
        confidence=lambda text: 0.2, threshold=0.5, fallback=aiguard.Default("unused"),
        breaker=aiguard.Breaker(max_low_confidence_rate=0.5, min_calls=3, cooldown=60),
    )  # fmt: skip
    for _ in range(3):
        assert collect(mode, fn()) == ["I am ", "not sure"]
        outcome = last(mode)
        assert (outcome.reason, outcome.source) == (Reason.LOW_CONFIDENCE, Source.MODEL)
        assert "judged after the stream was sent" in (outcome.detail or "")
    assert collect(mode, fn()) == ["unused"]  # the breaker opened on them
    assert last(mode).reason is Reason.AUTO_KILLED


def test_a_killed_stream_serves_the_fallback(mode: Mode) -> None:
    fn = guarded_gen(mode, "s-kill", story(mode, ["model"]), fallback=aiguard.Default("off"))
    aiguard.kill("s-kill", reason="test")
    assert collect(mode, fn()) == ["off"]
    assert last(mode).reason is Reason.KILLED


def test_the_span_covers_the_stream(mode: Mode) -> None:
    with capture_telemetry() as telemetry:
        fn = guarded_gen(mode, "s-span", story(mode, ["a", "b", "c"], interval=0.05))
        assert collect(mode, fn()) == ["a", "b", "c"]
    [span] = telemetry.spans()
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 >= 0.1
    assert dict(span.attributes or {})["aiguard.reason"] == "served"


# -- the real clients over HTTP --------------------------------------------------------------


class Clients:
    """One client per test, open for the whole test (a stream outlives the call)."""

    def __init__(self, mode: Mode, server: LLMServer, **options: Any) -> None:
        self.mode = mode
        if mode.is_async:
            self.openai: Any = async_openai_client(server, **options)
            self.anthropic: Any = async_anthropic_client(server, **options)
        else:
            self.openai = openai_client(server, **options)
            self.anthropic = anthropic_client(server, **options)

    def model(self, api: str, *, include_usage: bool = True) -> Any:
        """A function returning the client's stream, as a service writes it."""
        if api == "openai":
            create: dict[str, Any] = {
                "model": "gpt-4.1-mini", "messages": MESSAGES, "stream": True,
            }  # fmt: skip
            if include_usage:
                create["stream_options"] = {"include_usage": True}
            make = self.openai.chat.completions.create
        else:
            create = {"model": "claude-test-1", "messages": MESSAGES, "max_tokens": 100,
                      "stream": True}  # fmt: skip
            make = self.anthropic.messages.create
        if self.mode.is_async:

            async def ask_async() -> Any:
                return await make(**create)

            return ask_async

        def ask() -> Any:
            return make(**create)

        return ask

    def close(self) -> None:
        if self.mode.is_async:

            async def close() -> None:
                await self.openai.close()
                await self.anthropic.close()

            self.mode.run(close())
        else:
            self.openai.close()
            self.anthropic.close()


@pytest.fixture
def clients(mode: Mode, llm_server: LLMServer) -> Iterator[Clients]:
    made = Clients(mode, llm_server)
    yield made
    made.close()


def call_stream(mode: Mode, fn: Any) -> Any:
    return mode.run(fn()) if mode.is_async else fn()


def test_openai_stream_usage_cost_and_timing(
    mode: Mode, llm_server: LLMServer, clients: Clients
) -> None:
    aiguard.configure(prices=PRICES)
    llm_server.reply(text="Your invoice is fixed.", chunks=4, chunk_interval=0.05)
    fn = aiguard.guard("h-openai")(clients.model("openai"))
    stream = call_stream(mode, fn)
    expected = openai.AsyncStream if mode.is_async else openai.Stream
    assert isinstance(stream, expected)  # the caller's type checks keep working
    chunks = collect(mode, stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Your invoice is fixed."
    outcome = stream.outcome
    assert outcome is not None and outcome.reason is Reason.SERVED
    assert outcome.value == "Your invoice is fixed."
    assert outcome.usage is not None
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens) == (1200, 80)
    assert outcome.usage.cache_read_tokens == 1000
    assert outcome.cost == per_million((200, "0.40"), (1000, "0.10"), (80, "1.60"))
    assert outcome.time_to_first_chunk is not None
    assert outcome.latency >= 0.15 > outcome.time_to_first_chunk  # 3 intervals after the first
    assert aiguard.stats("h-openai").unknown_cost_calls == 0


def test_openai_stream_without_include_usage_says_why_cost_is_unknown(
    mode: Mode, llm_server: LLMServer, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    aiguard.configure(prices=PRICES)
    llm_server.reply(text="ok", chunks=2)
    fn = aiguard.guard("h-openai-nousage")(clients.model("openai", include_usage=False))
    with caplog.at_level(logging.WARNING, logger="aiguard"):
        stream = call_stream(mode, fn)
        collect(mode, stream)
    assert stream.outcome.cost is None and stream.outcome.usage is None
    warned = [r.getMessage() for r in caplog.records if "include_usage" in r.getMessage()]
    assert len(warned) == 1 and "h-openai-nousage" in warned[0]


def test_anthropic_stream_usage_and_cost(
    mode: Mode, llm_server: LLMServer, clients: Clients
) -> None:
    aiguard.configure(prices=PRICES)
    llm_server.reply(text="Your invoice is fixed.", chunks=3)
    fn = aiguard.guard("h-anthropic")(clients.model("anthropic"))
    stream = call_stream(mode, fn)
    expected = anthropic.AsyncStream if mode.is_async else anthropic.Stream
    assert isinstance(stream, expected)
    collect(mode, stream)
    outcome = stream.outcome
    assert outcome is not None and outcome.reason is Reason.SERVED
    assert outcome.value == "Your invoice is fixed."
    usage = outcome.usage
    assert usage is not None
    # the server's default: 100 input + 300 cache reads + 50 cache writes, 20 output
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (450, 300, 50)
    assert usage.output_tokens == 20
    assert outcome.cost == per_million((100, "3"), (300, "0.30"), (50, "3.75"), (20, "15"))


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_an_error_status_before_the_stream_goes_to_the_fallback(
    mode: Mode, llm_server: LLMServer, clients: Clients, api: str
) -> None:
    aiguard.configure(prices=PRICES)
    llm_server.reply(status=529 if api == "anthropic" else 429)
    fn = aiguard.guard("h-status", fallback=aiguard.Default("busy"), stream="pass")(
        clients.model(api)
    )
    assert collect(mode, call_stream(mode, fn)) == ["busy"]
    outcome = last(mode)
    assert (outcome.reason, outcome.cost) == (Reason.ERROR, Decimal(0))


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_no_first_chunk_in_time_goes_to_the_fallback(
    mode: Mode, llm_server: LLMServer, clients: Clients, api: str
) -> None:
    llm_server.reply(first_chunk_delay=3.0)
    fn = aiguard.guard(
        "h-first", first_chunk_timeout=0.3, fallback=aiguard.Default("slow"), stream="pass"
    )(clients.model(api))
    started = time.perf_counter()
    assert collect(mode, call_stream(mode, fn)) == ["slow"]
    assert time.perf_counter() - started < 1.5
    outcome = last(mode)
    assert outcome.reason is Reason.TIMEOUT
    assert outcome.detail == "the model sent no first chunk within 0.3 s"


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_timeout_during_the_stream_is_stream_interrupted(
    mode: Mode, llm_server: LLMServer, clients: Clients, api: str
) -> None:
    aiguard.configure(prices=PRICES)
    llm_server.reply(text="one two three four five six", chunks=6, chunk_interval=0.2)
    fn = aiguard.guard("h-mid", timeout=0.5, fallback=aiguard.Default("unused"))(clients.model(api))
    started = time.perf_counter()
    stream = call_stream(mode, fn)
    got: list[Any] = []
    with pytest.raises(aiguard.StreamInterrupted) as info:
        read_into(mode, stream, got)
    assert time.perf_counter() - started < 1.5
    assert got
    assert isinstance(info.value.__cause__, TimeoutError)
    outcome = info.value.outcome
    assert outcome.reason is Reason.INTERRUPTED
    if api == "anthropic":  # message_start told the input: partial tokens and cost
        assert outcome.usage is not None and outcome.usage.input_tokens == 450
        assert outcome.cost is not None and outcome.cost > 0


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_disconnect_mid_stream_is_stream_interrupted_never_a_transport_error(
    mode: Mode, llm_server: LLMServer, clients: Clients, api: str
) -> None:
    llm_server.reply(text="one two three four five", chunks=5, disconnect_after=2)
    fn = aiguard.guard("h-cut", fallback=aiguard.Default("unused"))(clients.model(api))
    stream = call_stream(mode, fn)
    with pytest.raises(aiguard.StreamInterrupted) as info:
        collect(mode, stream)
    assert info.value.__cause__ is not None
    assert info.value.outcome.reason is Reason.INTERRUPTED
    assert aiguard.stats("h-cut").calls == 1


def test_with_closes_the_stream_early_and_records_it(
    mode: Mode, llm_server: LLMServer, clients: Clients
) -> None:
    llm_server.reply(text="one two three four five", chunks=5, chunk_interval=0.02)
    fn = aiguard.guard("h-with")(clients.model("openai"))
    if mode.is_async:

        async def read() -> list[Any]:
            got = []
            async with await fn() as stream:
                async for chunk in stream:
                    got.append(chunk)
                    if len(got) == 2:
                        break
            return got

        assert len(mode.run(read())) == 2
    else:
        with fn() as stream:
            for i, _ in enumerate(stream):
                if i == 1:
                    break
    outcome = last(mode)
    assert outcome.reason is Reason.ABANDONED


def test_anthropic_stream_prices_one_hour_cache_writes(
    mode: Mode, llm_server: LLMServer, clients: Clients
) -> None:
    """The cache-write split of message_start reaches the stream's usage and cost."""
    aiguard.configure(prices=PRICES)
    sent = {
        "input_tokens": 100,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600},
        "output_tokens": 10,
    }
    llm_server.reply(text="cached", chunks=2, usage=sent)
    stream = call_stream(mode, aiguard.guard("h-1h")(clients.model("anthropic")))
    collect(mode, stream)
    usage = stream.outcome.usage
    assert usage is not None
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (1000, 600)
    # 1-hour writes default to 2x input (6 per million here), 5-minute ones the table's 3.75
    assert stream.outcome.cost == per_million((100, "3"), (400, "3.75"), (600, "6"), (10, "15"))
