"""Streams, the sync deadline watchdog and retries, as a production service hits them: nested
timeouts blocked in C, budgeted streams interleaved or read in another thread, retries under a
budget or returning a stream, hostile chunks, dropped and cancelled streams, spans and record
counts."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import aiguard
from aiguard import Reason
from aiguard._runtime.budgets import held
from aiguard._runtime.deadlines import TimedOut
from aiguard.testing import capture_telemetry

PRICES: dict[str, Any] = {"currency": "USD", "models": {"m1": {"input": "1", "output": "1"}}}
ONE_DOLLAR = {"input_tokens": 1_000_000, "output_tokens": 0}  # costs 1 at PRICES' m1


def priced_source(usage: dict[str, int] = ONE_DOLLAR) -> Iterator[str]:
    """A returned stream (a generator object) that returns its usage."""
    yield "a"
    yield "b"
    return usage  # type: ignore[return-value]


def budgeted(feature: str) -> Any:
    @aiguard.guard(feature, model="m1", budget=aiguard.Budget(limit="100", per="day"), estimate="5")
    def call() -> Iterator[str]:
        return priced_source()

    return call


@pytest.fixture
def fresh_holds() -> Iterator[None]:
    """A leaked budget hold stays in this thread's context: keep it out of other tests."""
    token = held.set(None)
    yield
    held.reset(token)


def busy(seconds: float) -> None:
    """Pure-Python work: an interruption can land anywhere in it."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


# -- retries ---------------------------------------------------------------------------------------


def test_retry_with_a_budget_serves_the_retried_call() -> None:
    tries: list[int] = []

    @aiguard.guard(
        "hunt-retry-budget",
        retry=aiguard.Retry(attempts=3, backoff=0.001),
        budget=aiguard.Budget(limit="10"),
        fallback=aiguard.Default("fallback"),
    )
    def flaky() -> str:
        tries.append(1)
        if len(tries) < 2:
            raise ConnectionError("connection reset by peer")
        return "ok"

    assert flaky() == "ok"
    outcome = aiguard.last_outcome()
    assert outcome is not None and outcome.reason is Reason.SERVED
    assert len(outcome.attempts) == 1
    assert aiguard.budget_figures("hunt-retry-budget").in_flight == 0


class ListStream:
    """A returned stream object (like openai.Stream): iterable, closeable."""

    def __init__(self, items: list[str]) -> None:
        self._items = iter(items)
        self.closed = False

    def __iter__(self) -> ListStream:
        return self

    def __next__(self) -> str:
        return next(self._items)

    def close(self) -> None:
        self.closed = True


def test_a_retried_call_that_returns_a_stream_is_guarded_as_a_stream() -> None:
    tries: list[int] = []

    @aiguard.guard("hunt-retry-stream", retry=aiguard.Retry(attempts=3, backoff=0.001))
    def flaky() -> ListStream:
        tries.append(1)
        if len(tries) < 2:
            raise ConnectionError("connection reset by peer")
        return ListStream(["a", "b"])

    assert list(flaky()) == ["a", "b"]
    outcome = aiguard.last_outcome()
    assert outcome is not None and outcome.reason is Reason.SERVED
    assert outcome.value == "ab"
    assert outcome.time_to_first_chunk is not None
    assert len(outcome.attempts) == 1


def test_retry_within_the_timeout_records_the_timed_out_try() -> None:
    """A first try that fails fast, a second that overruns what is left of the timeout."""
    tries: list[int] = []

    @aiguard.guard(
        "hunt-retry-timeout",
        timeout=0.3,
        retry=aiguard.Retry(attempts=3, backoff=0.001),
        fallback=aiguard.Default("fallback"),
    )
    def flaky() -> str:
        tries.append(1)
        if len(tries) < 2:
            raise ConnectionError("connection reset by peer")
        busy(2.0)
        return "late"

    started = time.perf_counter()
    assert flaky() == "fallback"
    assert time.perf_counter() - started < 1.5
    outcome = aiguard.last_outcome()
    assert outcome is not None and outcome.reason is Reason.TIMEOUT
    models = [a for a in outcome.attempts if a.handler == "model"]
    assert [type(a.error) for a in models] == [ConnectionError, TimeoutError]


# -- the sync deadline watchdog --------------------------------------------------------------------


def test_an_outer_timeout_still_holds_after_a_nested_guard_timed_out() -> None:
    @aiguard.guard("hunt-inner", timeout=0.3, fallback=aiguard.Default("inner-fallback"))
    def inner() -> str:
        time.sleep(0.6)  # blocked in C past both deadlines
        return "inner"

    @aiguard.guard("hunt-outer", timeout=0.2, fallback=aiguard.Default("outer-fallback"))
    def outer() -> str:
        answer = inner()
        for _ in range(80):  # 0.8 s of Python: interruptible
            time.sleep(0.01)
        return answer

    started = time.perf_counter()
    assert outer() == "outer-fallback"
    assert time.perf_counter() - started < 1.1  # ~0.6 s when the outer deadline holds


def test_racing_deadlines_in_threads_never_leak_the_interruption() -> None:
    """Many calls racing their deadlines in several threads, nested guards, a function that
    swallows BaseException: no TimedOut ever reaches the caller's code."""
    leaks: list[str] = []
    errors: list[str] = []

    @aiguard.guard("hunt-race-inner", timeout=0.003, fallback=aiguard.Default("fb"))
    def inner(d: float) -> str:
        busy(d)
        return "inner"

    @aiguard.guard("hunt-race-swallow", timeout=0.003, fallback=aiguard.Default("fb"))
    def swallow(d: float) -> str:
        try:
            busy(d)
        except BaseException:
            return "swallowed"
        return "done"

    @aiguard.guard("hunt-race-outer", timeout=0.004, fallback=aiguard.Default("fb"))
    def outer(d: float) -> str:
        answer = inner(d)
        busy(d)
        return answer

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(150):
            d = rnd.uniform(0.0, 0.006)
            fn = rnd.choice([inner, swallow, outer])
            try:
                fn(d)
                total = 0
                for k in range(300):  # the caller's own code, after the call
                    total += k
            except TimedOut:
                leaks.append(fn.__name__)
            except BaseException as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert leaks == []
    assert errors == []


# -- budgets and streams ---------------------------------------------------------------------------


@pytest.mark.usefixtures("fresh_holds")
def test_interleaved_budgeted_streams_of_two_features_release_their_reservations() -> None:
    aiguard.configure(prices=PRICES)
    x, y = budgeted("hunt-bx"), budgeted("hunt-by")
    first, second = x(), y()
    assert list(first) == ["a", "b"]
    assert list(second) == ["a", "b"]
    for feature in ("hunt-bx", "hunt-by"):
        figures = aiguard.budget_figures(feature)
        assert (figures.in_flight, figures.reserved, figures.spent) == (0, 0, 1), feature


@pytest.mark.usefixtures("fresh_holds")
def test_a_budgeted_stream_consumed_in_another_thread_releases_its_reservation() -> None:
    aiguard.configure(prices=PRICES)
    call = budgeted("hunt-bt")
    stream = call()
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(stream))
    reader.start()
    reader.join()
    assert got == ["a", "b"]
    figures = aiguard.budget_figures("hunt-bt")
    assert (figures.in_flight, figures.reserved, figures.spent) == (0, 0, 1)


def test_sequential_budgeted_streams_settle_their_reservations() -> None:
    aiguard.configure(prices=PRICES)
    call = budgeted("hunt-bs")
    for _ in range(3):
        assert list(call()) == ["a", "b"]
    figures = aiguard.budget_figures("hunt-bs")
    assert (figures.in_flight, figures.reserved, figures.spent) == (0, 0, 3)


def test_outcome_of_a_generator_function_is_its_own_when_its_fallback_streams() -> None:
    @aiguard.guard("hunt-backup")
    def backup() -> Iterator[str]:
        yield "b1"
        yield "b2"

    @aiguard.guard("hunt-main", fallback=aiguard.Rules(lambda: backup()))
    def main() -> Iterator[str]:
        raise ConnectionError("down")
        yield "never"

    outcome = main.outcome()
    assert outcome.feature == "hunt-main"
    assert outcome.source is aiguard.Source.RULES


# -- hostile chunks --------------------------------------------------------------------------------


def test_chunks_whose_class_claims_str_do_not_break_the_stream() -> None:
    @aiguard.guard("hunt-mock-chunks")
    def model() -> Iterator[Any]:
        yield mock.Mock(spec=str)
        yield mock.Mock(spec=str)

    assert len(list(model())) == 2
    outcome = aiguard.last_outcome()
    assert outcome is not None and outcome.reason is Reason.SERVED


class Hostile:
    """A chunk whose every unknown attribute read raises something else than AttributeError."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name} here")


def test_hostile_chunks_and_unreadable_usage_pass_through() -> None:
    hostile = Hostile()

    @aiguard.guard("hunt-hostile")
    def model() -> Iterator[Any]:
        yield hostile
        yield {"text": "x", "usage": "not a usage"}

    assert list(model()) == [hostile, {"text": "x", "usage": "not a usage"}]
    outcome = aiguard.last_outcome()
    assert outcome is not None and outcome.reason is Reason.SERVED


# -- telemetry -------------------------------------------------------------------------------------


def test_an_unhandled_error_before_the_first_chunk_ends_the_span_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> Iterator[str]:
        raise KeyError("boom")
        yield "never"

    @aiguard.guard("hunt-span-once", model="m1", catch=(ValueError,))
    def model() -> Iterator[str]:
        return broken()

    with capture_telemetry() as telemetry, caplog.at_level(logging.WARNING):
        with pytest.raises(KeyError):
            model()
        assert len(telemetry.spans()) == 1
    assert "ended span" not in caplog.text


def test_dropped_and_threaded_sync_streams_are_recorded_closed_and_their_spans_ended(
    tmp_path: Path,
) -> None:
    aiguard.configure(store=tmp_path / "a.db")
    sources: list[ListStream] = []

    @aiguard.guard("hunt-drop", model="m1")
    def model() -> ListStream:
        sources.append(ListStream(["a", "b", "c"]))
        return sources[-1]

    @aiguard.guard("hunt-drop-gen", model="m1")
    def gen() -> Iterator[str]:
        yield "a"
        yield "b"

    with capture_telemetry() as telemetry:
        stream = model()  # dropped, never iterated
        del stream
        threaded = model()  # consumed in another thread
        reader = threading.Thread(target=lambda: list(threaded))
        reader.start()
        reader.join()
        it = gen()  # a generator function's stream, dropped after one chunk
        assert next(it) == "a"
        del it
        gc.collect()
        reasons = [span.attributes.get("aiguard.reason") for span in telemetry.spans()]
    assert sorted(reasons) == sorted(["abandoned", "served", "abandoned"])
    assert sources[0].closed
    aiguard.flush()
    counts = aiguard.records.counts()
    assert (counts.recorded, counts.written, counts.dropped) == (3, 3, 0)


# -- async streams ---------------------------------------------------------------------------------


class SlowAsyncStream:
    def __init__(self, closed: list[str]) -> None:
        self.i = 0
        self.closed = closed

    def __aiter__(self) -> SlowAsyncStream:
        return self

    async def __anext__(self) -> str:
        self.i += 1
        if self.i > 3:
            raise StopAsyncIteration
        if self.i > 1:
            await asyncio.sleep(0.05)
        return f"c{self.i}"

    async def aclose(self) -> None:
        self.closed.append("returned")


def test_async_streams_cancelled_or_dropped_are_recorded_and_closed(tmp_path: Path) -> None:
    aiguard.configure(store=tmp_path / "a.db")
    closed: list[str] = []

    @aiguard.guard("hunt-async-returned")
    async def returned() -> SlowAsyncStream:
        return SlowAsyncStream(closed)

    @aiguard.guard("hunt-async-gen")
    async def gen() -> AsyncIterator[str]:
        try:
            for i in range(5):
                await asyncio.sleep(0.05)
                yield f"g{i}"
        finally:
            closed.append("gen")

    async def drain(stream: Any) -> None:
        async for _ in stream:
            pass

    async def main() -> list[Any]:
        reasons: list[Any] = []
        stream = await returned()  # dropped, never iterated
        del stream
        gc.collect()
        await asyncio.sleep(0.02)
        stream = await returned()  # cancelled mid-iteration
        task = asyncio.create_task(drain(stream))
        await asyncio.sleep(0.08)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        reasons.append(stream.outcome.reason)
        task = asyncio.create_task(drain(gen()))  # a generator function, cancelled
        await asyncio.sleep(0.12)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.02)
        return reasons

    with capture_telemetry() as telemetry:
        assert asyncio.run(main()) == [Reason.ABANDONED]
        spans = telemetry.spans()
    assert closed.count("returned") == 2
    assert closed.count("gen") == 1
    assert len(spans) == 3
    aiguard.flush()
    counts = aiguard.records.counts()
    assert (counts.recorded, counts.written, counts.dropped) == (3, 3, 0)
