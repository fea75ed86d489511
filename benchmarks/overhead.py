"""Per-call overhead of aiguard, against a bare call measured in the same run.

Run: ``python benchmarks/overhead.py`` (or ``nox -s bench``). Options: ``--batches N``,
``--calls N`` (per batch), ``--json PATH`` to save the figures.

Each case is timed as ``batches`` batches of ``calls`` calls; a batch's time divided by its calls
is one sample, and the table reports the median sample. Cases are interleaved batch by batch, so
a slow moment of the machine hits every case alike. Overhead = case median - bare median, and the
ratio = case median / bare median, for sync and async separately. Only opentelemetry-api is in
play (no SDK configured).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import aiguard

TICKET = "my invoice is wrong"
PRICES = aiguard.PriceTable(
    models={
        "gpt-4.1-mini": {"input": "0.40", "cached_input": "0.10", "output": "1.60"},
        "claude-sonnet-4-5": {
            "input": "3", "cached_input": "0.30", "cache_write": "3.75", "output": "15",
        },
    }
)  # fmt: skip
RESULT = {"label": "billing", "score": 0.93}
LOW = {"label": "billing", "score": 0.42}
RULES = {"label": "billing", "score": 1.0}


def bare(ticket: str) -> dict[str, Any]:
    return RESULT


def bare2(ticket: str, plan: str = "pro") -> dict[str, Any]:
    return RESULT


async def abare2(ticket: str, plan: str = "pro") -> dict[str, Any]:
    return RESULT


def bare_low(ticket: str) -> dict[str, Any]:
    return LOW


def keyword_rules(ticket: str) -> dict[str, Any]:
    return RULES


async def abare(ticket: str) -> dict[str, Any]:
    return RESULT


def text(ticket: str) -> str:
    return "billing"


async def atext(ticket: str) -> str:
    return "billing"


def _responses() -> tuple[Any, Any]:
    """A real ChatCompletion and a real Message, as the clients build them from the JSON."""
    from anthropic.types import Message
    from openai.types.chat import ChatCompletion

    chat = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": "gpt-4.1-mini-2025-04-14",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "billing"}}],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280,
                      "prompt_tokens_details": {"cached_tokens": 1000},
                      "completion_tokens_details": {"reasoning_tokens": 30}},
        }
    )  # fmt: skip
    message = Message.model_validate(
        {
            "id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": "billing"}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 300,
                      "cache_creation_input_tokens": 50,
                      "cache_creation": {"ephemeral_5m_input_tokens": 30,
                                         "ephemeral_1h_input_tokens": 20}},
        }
    )  # fmt: skip
    return chat, message


CHAT, MESSAGE = _responses()


def chat(ticket: str) -> Any:
    return CHAT


def message(ticket: str) -> Any:
    return MESSAGE


async def achat(ticket: str) -> Any:
    return CHAT


async def amessage(ticket: str) -> Any:
    return MESSAGE


async def abare_low(ticket: str) -> dict[str, Any]:
    return LOW


def guarded(fn: Callable[..., Any], **extra: Any) -> Any:
    return aiguard.guard(
        "bench", confidence="score", threshold=0.8, fallback=aiguard.Rules(keyword_rules), **extra
    )(fn)


def keyword_rules2(ticket: str, plan: str = "pro") -> dict[str, Any]:
    return RULES


def tagged(fn: Callable[..., Any]) -> Any:
    """The served case with two segments and a 2% audit share (read only when recording)."""
    return aiguard.guard(
        "bench-tagged",
        confidence="score",
        threshold=0.8,
        fallback=aiguard.Rules(keyword_rules2),
        segments=("ticket", "plan"),
        audit=0.02,
    )(fn)


# TICKET is inside this 50% rollout, so bucketing runs and the model serves.
ROLLOUT = aiguard.Rollout(percent=50, key="ticket")
BREAKER = aiguard.Breaker(max_error_rate=0.5, min_calls=20)
assert aiguard.guard("bench", rollout=ROLLOUT)(bare).outcome(TICKET).arm == "ai"

_keys = itertools.count()


def _unique(ticket: str) -> int:
    """A new key per call: every call is a miss (and its answer is kept)."""
    return next(_keys)


SYNC_CASES: dict[str, Callable[[str], Any]] = {
    "bare function": bare,
    "guarded, served by the model": guarded(bare),
    "+ rollout (in) + kill check": guarded(bare, rollout=ROLLOUT),
    "+ rollout + breaker": guarded(bare, rollout=ROLLOUT, breaker=BREAKER),
    "+ timeout=30": guarded(bare, timeout=30.0),
    "+ segments (2) + audit": tagged(bare2),
    "+ shadow, shadow_share=0.1": guarded(bare, shadow=bare, shadow_share=0.1),
    "guarded, routed to Rules": guarded(bare_low),
    "+ cache, hit": guarded(bare, cache=aiguard.Cache(ttl=3600)),
    "+ cache, miss (kept)": guarded(bare, cache=aiguard.Cache(ttl=3600, key=_unique)),
    "served str, no prices": aiguard.guard("bench-str")(text),
    "served ChatCompletion with prices": aiguard.guard("bench-chat")(chat),
    "served Message with prices": aiguard.guard("bench-message")(message),
}
ASYNC_CASES: dict[str, Callable[[str], Any]] = {
    "bare function": abare,
    "guarded, served by the model": guarded(abare),
    "+ rollout (in) + kill check": guarded(abare, rollout=ROLLOUT),
    "+ rollout + breaker": guarded(abare, rollout=ROLLOUT, breaker=BREAKER),
    "+ timeout=30": guarded(abare, timeout=30.0),
    "+ segments (2) + audit": tagged(abare2),
    "+ shadow, shadow_share=0.1": guarded(abare, shadow=abare, shadow_share=0.1),
    "guarded, routed to Rules": guarded(abare_low),
    "+ cache, hit": guarded(abare, cache=aiguard.Cache(ttl=3600)),
    "+ cache, miss (kept)": guarded(abare, cache=aiguard.Cache(ttl=3600, key=_unique)),
    "served str, no prices": aiguard.guard("bench-str")(atext),
    "served ChatCompletion with prices": aiguard.guard("bench-chat")(achat),
    "served Message with prices": aiguard.guard("bench-message")(amessage),
}
# cases timed with the price table configured (the others without: it is process-wide, so it
# is set and removed around them in each batch; the guards recompile once per change)
PRICED = {"served ChatCompletion with prices", "served Message with prices"}


def priced(on: bool) -> None:
    """Configure the price table, or none, if that is not what is in force."""
    from aiguard._runtime.state import runtime

    if (runtime.prices is not None) != on:
        aiguard.configure(prices=PRICES if on else None)


def time_sync(fn: Callable[[str], Any], calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        fn(TICKET)
    return (time.perf_counter_ns() - t0) / calls


async def time_async(fn: Callable[[str], Any], calls: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        await fn(TICKET)
    return (time.perf_counter_ns() - t0) / calls


def measure(batches: int, calls: int) -> dict[str, dict[str, float]]:
    samples: dict[str, dict[str, list[float]]] = {
        "sync": {k: [] for k in SYNC_CASES},
        "async": {k: [] for k in ASYNC_CASES},
    }
    loop = asyncio.new_event_loop()
    gc.disable()
    try:
        for name, fn in SYNC_CASES.items():  # warm up
            priced(name in PRICED)
            time_sync(fn, calls)
            loop.run_until_complete(time_async(ASYNC_CASES[name], calls))
        for _ in range(batches):
            for name, fn in SYNC_CASES.items():
                priced(name in PRICED)
                samples["sync"][name].append(time_sync(fn, calls))
            for name, fn in ASYNC_CASES.items():
                priced(name in PRICED)
                samples["async"][name].append(loop.run_until_complete(time_async(fn, calls)))
            gc.collect()
    finally:
        priced(False)
        gc.enable()
        loop.close()
    return {
        kind: {name: statistics.median(s) for name, s in cases.items()}
        for kind, cases in samples.items()
    }


def report(medians: dict[str, dict[str, float]]) -> str:
    lines = [
        f"aiguard {aiguard.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, opentelemetry-api only (no SDK)",
        "",
        f"| {'path':6} | {'case':33} | {'median/call':>11} | {'overhead':>9} | {'ratio':>6} |",
        f"|{'-' * 8}|{'-' * 35}|{'-' * 13}|{'-' * 11}|{'-' * 8}|",
    ]
    for kind, cases in medians.items():
        base = cases["bare function"]
        for name, ns in cases.items():
            over = "" if name == "bare function" else f"{(ns - base) / 1000:.2f} µs"
            ratio = "" if name == "bare function" else f"{ns / base:.1f}x"
            lines.append(f"| {kind:6} | {name:33} | {ns / 1000:8.2f} µs | {over:>9} | {ratio:>6} |")
    lines.append("")
    for kind, cases in medians.items():
        plain = cases["served str, no prices"]
        extra = ", ".join(
            f"{name.removeprefix('served ')} +{(cases[name] - plain) / 1000:.2f} µs"
            for name in sorted(PRICED)
        )
        lines.append(f"{kind}: reading usage and cost, against the served str: {extra}")
    return "\n".join(lines)


def bucketing(calls: int) -> str:
    """Per-key cost of each bucketing algorithm: uncached, functools.lru_cache, cachetools."""
    import functools

    import cachetools

    from aiguard._bucketing import Bucketing, positioner

    keys = [f"user-{i}" for i in range(1000)]  # a working set that fits every cache
    lines = [
        "",
        "Bucketing, per key (1,000 distinct keys, cycled):",
        "",
        f"| {'algorithm':12} | {'uncached':>9} | {'lru_cache':>9} | {'cachetools':>10} |",
        f"|{'-' * 14}|{'-' * 11}|{'-' * 11}|{'-' * 12}|",
    ]
    for algorithm in Bucketing:
        raw = positioner(algorithm, "bench", "bench")
        lru = functools.lru_cache(maxsize=65536)(raw)
        ct = cachetools.cached(cachetools.LRUCache(maxsize=65536))(raw)
        row = []
        for fn in (raw, lru, ct):
            samples = []
            for _ in range(7):
                t0 = time.perf_counter_ns()
                for _ in range(calls // 1000):
                    for k in keys:
                        fn(k)
                samples.append((time.perf_counter_ns() - t0) / (calls // 1000 * 1000))
            row.append(statistics.median(samples) / 1000)
        lines.append(
            f"| {algorithm.value:12} | {row[0]:6.2f} µs | {row[1]:6.2f} µs | {row[2]:7.2f} µs |"
        )
    return "\n".join(lines)


def recording(batches: int) -> str:
    """The served path with call records written to a SQLite store (queue + background writer),
    against the same guard with no store (recording is process-wide, so the two are measured one
    after the other in this run, each against the bare function); 10,000 calls a batch. Also the
    memory the recorder holds afterwards."""
    import os
    import tempfile
    import tracemalloc

    calls = 10_000

    def phase(guarded_fn: Callable[[str], Any]) -> tuple[float, float]:
        samples: dict[str, list[float]] = {"bare": [], "guarded": []}
        time_sync(guarded_fn, calls)
        for _ in range(batches):
            samples["bare"].append(time_sync(bare, calls))
            samples["guarded"].append(time_sync(guarded_fn, calls))
            aiguard.flush()
        return statistics.median(samples["bare"]), statistics.median(samples["guarded"])

    bare_off, off = phase(aiguard.guard("bench-plain", confidence="score", threshold=0.8)(bare))
    with tempfile.TemporaryDirectory() as tmp:
        aiguard.configure(store=os.path.join(tmp, "bench.db"))
        recorded = aiguard.guard("bench-rec", confidence="score", threshold=0.8)(bare)
        bare_on, on = phase(recorded)
        bare_tag, tag = phase(tagged(bare2))
        tracemalloc.start()  # apart from the timing: tracemalloc slows every allocation
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(batches):
            time_sync(recorded, calls)
            aiguard.flush()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        aiguard.configure(store=None)
    over_off, over_on = off - bare_off, on - bare_on
    return "\n".join(
        [
            "",
            "Call records to SQLite (10,000 calls a batch, written in the background):",
            "",
            f"| {'case':22} | {'bare':>9} | {'guarded':>9} | {'overhead':>9} |",
            f"|{'-' * 24}|{'-' * 11}|{'-' * 11}|{'-' * 11}|",
            f"| {'served, no store':22} | {bare_off / 1000:6.2f} µs | {off / 1000:6.2f} µs | "
            f"{over_off / 1000:6.2f} µs |",
            f"| {'served, recording':22} | {bare_on / 1000:6.2f} µs | {on / 1000:6.2f} µs | "
            f"{over_on / 1000:6.2f} µs |",
            f"| {'+ segments (2) + audit':22} | {bare_tag / 1000:6.2f} µs | {tag / 1000:6.2f} µs | "
            f"{(tag - bare_tag) / 1000:6.2f} µs |",
            "",
            "Segments and audit sampling are read only when calls are recorded: with no store, "
            "'+ segments (2) + audit' costs what a guarded call costs.",
            f"Overhead with recording / without: {over_on / over_off:.2f}x. Memory held after "
            f"{batches} x {calls:,} recorded calls: {held / 1024:.0f} KiB (bounded: at most "
            "64 MiB of queued records and 16 MiB of calls remembered for feedback, by default).",
        ]
    )


def budgets(batches: int, calls: int) -> str:
    """The served path with a budget: counted in this process, then shared through Redis (if a
    server answers on 127.0.0.1:6379); each phase interleaved with the bare function. Each call
    reserves its worst case (the per-call price) and settles to its cost."""
    import uuid

    aiguard.configure(prices={"models": {"m": {"per_call": "0.000001"}}})
    limit = aiguard.Budget(limit="1000000", per="day")
    local = aiguard.guard("bench-budget", model="m", budget=limit)(bare)
    samples: dict[str, list[float]] = {"bare function": [], "budget, local": []}

    def run(cases: dict[str, Callable[[str], Any]]) -> None:
        for fn in cases.values():
            time_sync(fn, calls)
        for _ in range(batches):
            for name, fn in cases.items():
                samples.setdefault(name, []).append(time_sync(fn, calls))

    run({"bare function": bare, "budget, local": local})  # before Redis: counted alone
    note = ""
    try:
        import redis

        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1).ping()
        from aiguard.redis import RedisBudgets

        aiguard.configure(
            budgets=RedisBudgets("redis://127.0.0.1:6379/0", prefix=f"bench-{uuid.uuid4().hex[:8]}")
        )
        shared = aiguard.guard("bench-budget-shared", model="m", budget=limit)(bare)
        run({"bare function": bare, "budget, shared (Redis)": shared})
    except Exception as exc:  # no Redis here: say so
        note = f"(shared case skipped: {exc})"
    aiguard.configure(budgets=None, prices=None)
    med = {k: statistics.median(v) for k, v in samples.items()}
    base = med["bare function"]
    lines = ["", "Budgets (a per-call price, a budget never reached):", "",
             f"| {'case':24} | {'median/call':>11} | {'overhead':>9} |",
             f"|{'-' * 26}|{'-' * 13}|{'-' * 11}|"]  # fmt: skip
    for name, ns in med.items():
        over = "" if name == "bare function" else f"{(ns - base) / 1000:.2f} µs"
        lines.append(f"| {name:24} | {ns / 1000:8.2f} µs | {over:>9} |")
    if note:
        lines.append(note)
    return "\n".join(lines)


def with_sdk(batches: int, calls: int) -> str:
    """With the OpenTelemetry SDK: a BatchSpanProcessor (exporting to a sink that drops spans),
    a span per call. Compares a guarded call with a bare SDK span carrying 8 attributes around the
    bare function, then adds SDK metrics."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Sink(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Sink(), max_queue_size=1 << 16))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("bench")
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m",
        "gen_ai.response.model": "m",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 10,
        "aiguard.feature": "bench",
        "aiguard.reason": "served",
    }

    def bare_span(ticket: str) -> Any:
        with tracer.start_as_current_span("chat m", attributes=attrs):
            return bare(ticket)

    traced = guarded(bare)
    cases: dict[str, Callable[[str], Any]] = {
        "bare SDK span, 8 attributes": bare_span,
        "guarded (span per call)": traced,
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    n = max(1, calls // 10)
    for fn in cases.values():
        time_sync(fn, n)
    for _ in range(batches):
        for name, fn in cases.items():
            samples[name].append(time_sync(fn, n))
    med = {k: statistics.median(v) for k, v in samples.items()}
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    # with metrics on: the bare span again, interleaved with the guarded call, so each ratio is
    # against a bare span measured in the same phase of the run (this machine's speed drifts)
    phase2 = {"bare SDK span, 8 attributes": bare_span, "guarded (span + SDK metrics)": traced}
    samples2: dict[str, list[float]] = {k: [] for k in phase2}
    for fn in phase2.values():
        time_sync(fn, n)
    for _ in range(batches):
        for name, fn in phase2.items():
            samples2[name].append(time_sync(fn, n))
    med2 = {k: statistics.median(v) for k, v in samples2.items()}
    base = med["bare SDK span, 8 attributes"]
    base2 = med2["bare SDK span, 8 attributes"]
    lines = [
        "",
        "With the OpenTelemetry SDK (BatchSpanProcessor, a span per call; metrics: the SDK's",
        "MeterProvider with an in-memory reader). Each ratio is against the bare span measured",
        "in the same phase:",
        "",
        f"| {'case':30} | {'median/call':>11} | {'vs bare span':>12} |",
        f"|{'-' * 32}|{'-' * 13}|{'-' * 14}|",
    ]
    for name, ns in med.items():
        lines.append(f"| {name:30} | {ns / 1000:8.2f} µs | {ns / base:11.2f}x |")
    lines.append(f"| {'bare SDK span (metrics phase)':30} | {base2 / 1000:8.2f} µs | {1:11.2f}x |")
    ns = med2["guarded (span + SDK metrics)"]
    name = "guarded (span + SDK metrics)"
    lines.append(f"| {name:30} | {ns / 1000:8.2f} µs | {ns / base2:11.2f}x |")
    provider.shutdown()
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=31)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--json", help="also write the medians (ns per call) to this file")
    parser.add_argument("--no-sdk", action="store_true", help="skip the OpenTelemetry SDK cases")
    args = parser.parse_args(argv)
    medians = measure(args.batches, args.calls)
    print(report(medians))
    print(bucketing(args.calls))
    print(recording(max(5, args.batches // 3)))
    print(budgets(args.batches, args.calls))
    if not args.no_sdk:
        print(with_sdk(args.batches, args.calls))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(medians, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
