"""The span structure, context handling, metrics and redaction, with the SDK on, as a service
hits them.

Every guarded call, whatever way it ends (served, a fallback, NotServed, ModelTimeout,
ReviewPending, an exception outside ``catch``, a stream abandoned or interrupted, a task
cancelled), must leave the current span as it found it, detach its context tokens in order, end
every span it started exactly once, and count each model call once in the duration metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _modes import Mode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

import aiguard
from aiguard.testing import Telemetry, capture_telemetry

SECRET = "sk-live-9d2e41"
DURATION = "gen_ai.client.operation.duration"


@contextlib.contextmanager
def watched(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail on a context token detached out of order, or a span ended twice / touched after its
    end (what the API and the SDK log instead of raising)."""
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")
    caplog.set_level(logging.WARNING, logger="opentelemetry.sdk.trace")
    yield
    bad = [
        r.getMessage()
        for r in caplog.records
        if r.name in ("opentelemetry.context", "opentelemetry.sdk.trace")
    ]
    assert bad == []


def all_ended_once(telemetry: Telemetry) -> list[Any]:
    spans = telemetry.spans()
    assert all(s.end_time is not None for s in spans)
    ids = [s.context.span_id for s in spans]
    assert len(ids) == len(set(ids))  # exported once each: ended once each
    return spans


def by_name(spans: list[Any]) -> dict[str, Any]:
    return {s.name: s for s in spans}


def points(telemetry: Telemetry, name: str, feature: str) -> list[Any]:
    return [
        p
        for p in telemetry.metric_points(name)
        if dict(p.attributes or {}).get("aiguard.feature") == feature
    ]


def count(telemetry: Telemetry, name: str, feature: str) -> int:
    return sum(p.count for p in points(telemetry, name, feature))


# -- the current span after every way a call can end -----------------------------------------


def test_every_ending_leaves_the_current_span_as_it_was(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    aiguard.configure(store=":memory:")
    tracer = trace.get_tracer("hunt")

    def served() -> str:
        return "ok"

    def down() -> str:
        raise ConnectionError("down")

    def wrong() -> str:
        raise KeyError("not caught")

    guards = {
        "served": mode.guard("e-served", model="m")(served),
        "answered": mode.guard("e-answered", model="m", fallback=aiguard.Default("d"))(down),
        "not_served": mode.guard("e-notserved", model="m")(down),
        "timeout": mode.guard("e-timeout", model="m", timeout=0.03)(mode.sleeper(1.0, "late")),
        "review": mode.guard("e-review", model="m", fallback=aiguard.HumanReview())(down),
        "unhandled": mode.guard("e-unhandled", model="m", catch=ConnectionError)(wrong),
        "killed": mode.guard("e-killed", model="m", fallback=aiguard.Default("k"))(served),
    }
    aiguard.kill("e-killed", reason="incident")
    expected = {
        "served": None,
        "answered": None,
        "not_served": ConnectionError,
        "timeout": aiguard.ModelTimeout,
        "review": aiguard.ReviewPending,
        "unhandled": KeyError,
        "killed": None,
    }

    def one(name: str) -> Any:
        try:
            value = mode.call(guards[name])
        except Exception as exc:
            return type(exc)
        return None if value is not None else "none"

    async def one_async(name: str) -> Any:
        try:
            await guards[name]()
        except Exception as exc:
            return type(exc)
        return None

    with watched(caplog), capture_telemetry() as telemetry:
        for name, raised in expected.items():
            if mode.is_async:

                async def run(name: str = name) -> tuple[Any, bool]:
                    with tracer.start_as_current_span("outer") as outer:
                        got = await one_async(name)
                        return got, trace.get_current_span() is outer

                got, same = mode.run(run())
            else:
                with tracer.start_as_current_span("outer") as outer:
                    got = one(name)
                    same = trace.get_current_span() is outer
            assert (got, same) == (raised, True), name
            assert trace.get_current_span() is trace.INVALID_SPAN
        spans = all_ended_once(telemetry)
    # each call's spans are in its outer span's trace, under it
    outers = [s for s in spans if s.name == "outer"]
    assert len(outers) == len(expected)
    for s in spans:
        if s.name != "outer":
            assert s.parent is not None
            assert s.context.trace_id in {o.context.trace_id for o in outers}


def test_a_cancelled_task_leaves_the_context_and_ends_its_spans(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracer = trace.get_tracer("hunt")
    handler_started = asyncio.Event()

    class Slow(aiguard.Fallback):
        name = "slow"

        def handle(self, ctx: Any) -> Any:  # pragma: no cover - async only
            return None

        async def handle_async(self, ctx: Any) -> Any:
            handler_started.set()
            await asyncio.sleep(5)

    @aiguard.guard("c-model", model="m", timeout=5)
    async def in_model() -> str:
        await asyncio.sleep(5)
        return "late"

    @aiguard.guard("c-handler", model="m", fallback=Slow())
    async def in_handler() -> str:
        raise ConnectionError("down")

    async def main() -> None:
        nonlocal handler_started
        handler_started = asyncio.Event()
        with tracer.start_as_current_span("outer") as outer:
            for fn in (in_model, in_handler):
                task = asyncio.create_task(fn())
                if fn is in_model:
                    await asyncio.sleep(0.01)
                else:
                    await handler_started.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert trace.get_current_span() is outer

    with watched(caplog), capture_telemetry() as telemetry:
        asyncio.run(main())
        spans = all_ended_once(telemetry)
    found = by_name(spans)
    assert {"outer", "chat m", "aiguard c-handler", "aiguard.fallback slow"} <= set(found)
    assert len(spans) == 5  # two model spans, the call's span, the handler's, outer


# -- streams ------------------------------------------------------------------------------------


def test_returned_streams_abandoned_interrupted_or_fallen_back_keep_the_context(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    tracer = trace.get_tracer("hunt")

    def chunks(n: int, fail_at: int | None = None) -> Iterator[str]:
        for i in range(n):
            if i == fail_at:
                raise ConnectionError("cut")
            yield f"c{i}"

    async def achunks(n: int, fail_at: int | None = None) -> Any:
        for i in range(n):
            if i == fail_at:
                raise ConnectionError("cut")
            yield f"c{i}"

    make = achunks if mode.is_async else chunks

    @aiguard.guard("st-abandon", model="m", stream="pass")
    def abandon_sync() -> Any:
        return chunks(5)

    @aiguard.guard("st-cut", model="m", stream="pass")
    def cut_sync() -> Any:
        return chunks(5, fail_at=2)

    @aiguard.guard("st-first", model="m", stream="pass", fallback=aiguard.Default("fb"))
    def first_sync() -> Any:
        return chunks(5, fail_at=0)

    @aiguard.guard("st-abandon", model="m", stream="pass")
    async def abandon_async() -> Any:
        return make(5)

    @aiguard.guard("st-cut", model="m", stream="pass")
    async def cut_async() -> Any:
        return make(5, fail_at=2)

    @aiguard.guard("st-first", model="m", stream="pass", fallback=aiguard.Default("fb"))
    async def first_async() -> Any:
        return make(5, fail_at=0)

    with watched(caplog), capture_telemetry() as telemetry:
        if mode.is_async:

            async def run() -> None:
                with tracer.start_as_current_span("outer") as outer:
                    stream = await abandon_async()
                    assert trace.get_current_span() is outer
                    assert await stream.__anext__() == "c0"
                    await stream.aclose()
                    assert trace.get_current_span() is outer
                    stream = await cut_async()
                    with pytest.raises(aiguard.StreamInterrupted):
                        async for _ in stream:
                            pass
                    assert trace.get_current_span() is outer
                    stream = await first_async()
                    assert [c async for c in stream] == ["fb"]
                    assert trace.get_current_span() is outer

            mode.run(run())
        else:
            with tracer.start_as_current_span("outer") as outer:
                stream = abandon_sync()
                assert trace.get_current_span() is outer
                assert next(stream) == "c0"
                stream.close()
                assert trace.get_current_span() is outer
                stream = cut_sync()
                with pytest.raises(aiguard.StreamInterrupted):
                    list(stream)
                assert trace.get_current_span() is outer
                assert list(first_sync()) == ["fb"]
                assert trace.get_current_span() is outer
        spans = all_ended_once(telemetry)
    models = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert len(models) == 3
    assert sorted(dict(s.attributes or {}).get("aiguard.reason", "-") for s in models) == [
        "-",  # the stream that fell back: its reason is on the call's span
        "abandoned",
        "interrupted",
    ]
    [call] = [s for s in spans if s.name == "aiguard st-first"]
    assert call.kind is SpanKind.INTERNAL and call.status.status_code is StatusCode.UNSET


def test_a_generator_function_falling_back_at_first_iteration_in_another_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The generator is made under one span and first iterated under another, each ``next`` in a
    fresh copy of the context (as a server's thread pool iterates a sync stream): its spans hang
    under the span current at its first iteration, the context is left as found."""
    tracer = trace.get_tracer("hunt")

    @aiguard.guard("g-first", model="m", fallback=aiguard.Default("fb"))
    def gen() -> Iterator[str]:
        raise ConnectionError("down")
        yield "never"  # pragma: no cover

    with watched(caplog), capture_telemetry() as telemetry:
        with tracer.start_as_current_span("made"):
            stream = gen()
        with tracer.start_as_current_span("iterated") as iterated:
            got = []
            while True:
                try:
                    got.append(contextvars.copy_context().run(next, stream))
                except StopIteration:
                    break
            assert trace.get_current_span() is iterated
        assert got == ["fb"]
        spans = by_name(all_ended_once(telemetry))
    model, call = spans["chat m"], spans["aiguard g-first"]
    parent = spans["iterated"].context.span_id
    assert model.parent.span_id == parent and call.parent.span_id == parent
    assert spans["aiguard.fallback default"].parent.span_id == call.context.span_id


def test_nested_guarded_calls_nest_their_spans(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """An inner guarded call (failing, answered by its fallback) inside an outer one's model
    function, and another inside the outer's fallback handler."""

    def inner_down() -> str:
        raise ConnectionError("inner down")

    inner = mode.guard("n-inner", model="mi", fallback=aiguard.Default("i"))(inner_down)
    helper = aiguard.guard("n-helper", model="mh")(lambda: "h")  # sync, in a sync handler

    if mode.is_async:

        async def outer_body() -> str:
            return await inner() + "!"

        outer = aiguard.guard("n-outer", model="mo")(outer_body)
    else:
        outer = aiguard.guard("n-outer", model="mo")(lambda: inner() + "!")
    second = mode.guard("n-second", model="m2", fallback=lambda: helper() + "?")(inner_down)

    with watched(caplog), capture_telemetry() as telemetry:
        assert mode.call(outer) == "i!"
        assert mode.call(second) == "h?"
        spans = by_name(all_ended_once(telemetry))
    handler = next(s for s in spans.values() if s.name.startswith("aiguard.fallback rules"))
    assert handler.parent.span_id == spans["aiguard n-second"].context.span_id
    assert spans["chat mh"].parent.span_id == handler.context.span_id
    outer_span = spans["chat mo"]
    inner_model, inner_call = spans["chat mi"], spans["aiguard n-inner"]
    assert outer_span.parent is None
    assert inner_model.parent.span_id == outer_span.context.span_id
    assert inner_call.parent.span_id == outer_span.context.span_id  # a sibling of its model span
    assert outer_span.status.status_code is StatusCode.UNSET
    assert inner_model.status.status_code is StatusCode.ERROR


# -- metrics --------------------------------------------------------------------------------


def test_metrics_agree_with_stats_over_every_ending(mode: Mode) -> None:
    """One ``aiguard.call.duration`` point per call, the calls counter equal to ``stats()``,
    and one model duration point per model call (a timeout and each retried try included),
    none for a call that never reached the model."""
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) % 3:
            raise ConnectionError("reset")
        return "ok"

    fns = [
        (mode.guard("m-served", model="m")(lambda: "ok"), 1),
        (mode.guard("m-answered", model="m", fallback=aiguard.Default("d"))(flaky), 1),
        (
            mode.guard("m-timeout", model="m", timeout=0.02, fallback=aiguard.Default("d"))(
                mode.sleeper(1.0)
            ),
            1,
        ),
        (
            mode.guard("m-retried", model="m", retry=aiguard.Retry(attempts=3, backoff=0.001))(
                flaky
            ),
            3,
        ),
        (mode.guard("m-killed", model="m", fallback=aiguard.Default("k"))(lambda: "ok"), 0),
    ]
    aiguard.kill("m-killed", reason="incident")
    with capture_telemetry() as telemetry:
        for _ in range(2):
            for fn, _tries in fns:
                tries.clear()
                mode.call(fn)
        for fn, per_call in fns:
            feature = fn.feature
            stats = aiguard.stats(feature)
            assert stats.calls == 2
            assert count(telemetry, "aiguard.call.duration", feature) == 2, feature
            calls = sum(p.value for p in points(telemetry, "aiguard.calls", feature))
            assert calls == stats.calls, feature
            assert count(telemetry, DURATION, feature) == 2 * per_call, feature
            fallbacks = sum(p.value for p in points(telemetry, "aiguard.fallbacks", feature))
            assert fallbacks == stats.calls - stats.by_source.get("model", 0), feature


def _chunks_after(delay: float) -> Iterator[str]:
    time.sleep(delay)
    yield "a"
    yield "b"


def test_a_stream_after_retries_is_timed_as_its_own_try() -> None:
    tries: list[int] = []

    @aiguard.guard("sr-served", model="m", retry=aiguard.Retry(attempts=3, backoff=0.001))
    def sr() -> Any:
        tries.append(1)
        if len(tries) < 3:
            time.sleep(0.1)
            raise ConnectionError("reset")
        return _chunks_after(0.01)

    with capture_telemetry() as telemetry:
        assert list(sr()) == ["a", "b"]
        [call] = points(telemetry, "aiguard.call.duration", "sr-served")
        found = points(telemetry, DURATION, "sr-served")
    assert sum(p.count for p in found) == 3
    served = [p for p in found if "error.type" not in dict(p.attributes or {})]
    [last] = served
    # the two failed tries took 0.2 s; the streamed try itself about 0.01 s
    assert last.sum < 0.1, (last.sum, call.sum)
    assert sum(p.sum for p in found) <= call.sum


def test_a_retried_stream_failing_before_its_first_chunk_keeps_its_tries() -> None:
    tries: list[int] = []

    def broken() -> Iterator[str]:
        raise ConnectionError("first chunk")
        yield "never"  # pragma: no cover

    @aiguard.guard(
        "sr-fallback",
        model="m",
        retry=aiguard.Retry(attempts=3, backoff=0.001),
        fallback=aiguard.Default("d"),
    )
    def sr() -> Any:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("reset")
        return broken()

    with capture_telemetry() as telemetry:
        outcome = sr.outcome()
        found = points(telemetry, DURATION, "sr-fallback")
    assert outcome.value == "d"
    assert sum(p.count for p in found) == 3  # three model calls
    # every try is an attempt, the stream's failed one last (as when retries run out)
    assert [a.handler for a in outcome.attempts] == ["model", "model", "model", "default"]


# -- a span processor that raises -------------------------------------------------------------


class FailingOnEnd(SpanProcessor):
    def on_end(self, span: Any) -> None:
        raise RuntimeError("exporter down")


class FailingOnStart(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("processor down")


def test_a_processor_failing_on_end_still_gives_the_call_its_span(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    @mode.guard("pe-end", model="m", fallback=aiguard.Default("d"))
    def pe() -> str:
        raise ConnectionError("down")

    with watched(caplog), capture_telemetry() as telemetry:
        provider: Any = trace.get_tracer_provider()
        provider.add_span_processor(FailingOnEnd())
        assert mode.call(pe) == "d"
        spans = by_name(telemetry.spans())
    call = spans["aiguard pe-end"]
    assert call.kind is SpanKind.INTERNAL
    assert dict(call.attributes or {})["aiguard.source"] == "default"


def test_a_processor_failing_on_start_or_end_never_leaks_context(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """Every path (served, fallback, stream, blocked) with a processor raising at span start,
    then at span end: the calls are served and the current span is left as it was."""
    served = mode.guard("pf-served", model="m")(lambda: "ok")

    def down() -> str:
        raise ConnectionError("down")

    answered = mode.guard("pf-answered", model="m", fallback=aiguard.Default("d"))(down)
    killed = mode.guard("pf-killed", model="m", fallback=aiguard.Default("k"))(lambda: "ok")
    aiguard.kill("pf-killed", reason="incident")
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")
    for processor in (FailingOnStart(), FailingOnEnd()):
        with capture_telemetry():
            provider: Any = trace.get_tracer_provider()
            provider.add_span_processor(processor)
            if mode.is_async:

                async def run() -> list[Any]:
                    got = [await served(), await answered(), await killed()]
                    assert trace.get_current_span() is trace.INVALID_SPAN
                    return got

                got = mode.run(run())
            else:
                got = [served(), answered(), killed()]
            assert got == ["ok", "d", "k"]
            assert trace.get_current_span() is trace.INVALID_SPAN
    assert [r for r in caplog.records if r.name == "opentelemetry.context"] == []


# -- redaction --------------------------------------------------------------------------------


def everything_shown(telemetry: Telemetry, metrics: tuple[str, ...] = ()) -> str:
    parts: list[str] = []
    for span in telemetry.spans():
        parts.append(span.name)
        parts.extend(str(v) for v in (span.attributes or {}).values())
        parts.append(str(span.status.description))
        for event in span.events:
            parts.extend(str(v) for v in (event.attributes or {}).values())
        for link in span.links:
            parts.extend(str(v) for v in (link.attributes or {}).values())
    for name in metrics:
        for p in telemetry.metric_points(name):
            parts.extend(str(v) for v in (p.attributes or {}).values())
    return "\n".join(parts)


METRICS = (DURATION, "aiguard.call.duration", "aiguard.calls", "aiguard.fallbacks")


def test_no_secret_from_a_model_a_handler_a_validator_or_feedback_without_a_hook(
    mode: Mode,
) -> None:
    """Property: a secret in a model's exception, a retried try's, a fallback handler's, a
    validator's, an interrupted stream's or a feedback comment reaches no span, event, link or
    metric attribute without a ``redact=`` hook."""
    aiguard.configure(store=":memory:")
    holder = [""]

    def fails() -> str:
        raise RuntimeError(holder[0])

    def rejects(value: Any) -> None:
        raise ValueError(holder[0])

    class Leaky(aiguard.Fallback):
        name = "leaky"

        def handle(self, ctx: Any) -> Any:
            raise LookupError(holder[0])

        async def handle_async(self, ctx: Any) -> Any:
            raise LookupError(holder[0])

    chain = [Leaky(), aiguard.Default("d")]
    guarded = [
        mode.guard("r-model", model="m", fallback=chain)(fails),
        mode.guard(
            "r-retry", model="m", fallback=chain, retry=aiguard.Retry(attempts=2, backoff=0.001)
        )(fails),
        mode.guard("r-valid", model="m", fallback=chain, validate=rejects)(lambda: "x"),
    ]

    def interrupted() -> Iterator[str]:
        yield "a"
        raise RuntimeError(holder[0])

    streamed = aiguard.guard("r-stream", model="m")(interrupted)

    with capture_telemetry() as telemetry:

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.text(max_size=40), st.text(max_size=40))
        def check(before: str, after: str) -> None:
            holder[0] = f"{before}{SECRET}{after}"
            for fn in guarded:
                outcome = mode.outcome(fn)
                assert outcome.value == "d"
            with contextlib.suppress(aiguard.StreamInterrupted):
                list(streamed())
            aiguard.feedback(outcome, kind="rejected", comment=holder[0])

        check()
        shown = everything_shown(telemetry, METRICS)
    assert "leaky" in shown and "r-stream" in shown
    assert SECRET not in shown


def test_an_unreadable_rollout_key_shows_no_message_without_a_hook(mode: Mode) -> None:
    class Request:
        @property
        def user(self) -> str:
            raise ValueError(f"session {SECRET} expired")

    rollout = aiguard.Rollout(key="request.user", percent=50)
    fn = mode.guard("r-rollout", model="m", rollout=rollout, fallback=aiguard.Default("d"))(
        lambda request: "ai"
    )
    with capture_telemetry() as telemetry:
        assert mode.call(fn, Request()) == "d"
        shown = everything_shown(telemetry)
    assert "missing_rollout_key" in shown
    assert SECRET not in shown


# -- feedback ---------------------------------------------------------------------------------


def test_feedback_span_links_the_call_and_leaves_the_context(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    aiguard.configure(store=":memory:")
    fn = mode.guard("fb-call", model="m", fallback=aiguard.Default("d"))(
        lambda: (_ for _ in ()).throw(ConnectionError("down"))
    )
    tracer = trace.get_tracer("hunt")
    with watched(caplog), capture_telemetry() as telemetry:
        outcome = mode.outcome(fn)
        with tracer.start_as_current_span("request") as request:
            aiguard.feedback(outcome, kind="accepted")
            assert trace.get_current_span() is request
        spans = by_name(all_ended_once(telemetry))
    evaluation = spans["evaluation fb-call"]
    assert evaluation.parent.span_id == request.get_span_context().span_id
    [link] = evaluation.links
    # the link names the guarded call's span (the rest of the call after its model span)
    call = spans["aiguard fb-call"]
    assert (link.context.trace_id, link.context.span_id) in {
        (call.context.trace_id, call.context.span_id),
        (spans["chat m"].context.trace_id, spans["chat m"].context.span_id),
    }


def test_a_cancelled_model_call_is_not_shown_as_a_success() -> None:
    @aiguard.guard("c-honest", model="m")
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    async def main() -> None:
        task = asyncio.create_task(slow())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture_telemetry() as telemetry:
        asyncio.run(main())
        [span] = telemetry.spans()
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.ERROR
    assert "error.type" in dict(span.attributes or {})
