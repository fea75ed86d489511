"""aiguard next to the libraries a team would otherwise wrap a model call with, in one run.

Run: ``python benchmarks/peers.py`` (options: ``--batches N``, ``--calls N`` per batch,
``--json PATH``). The peers are development dependencies (``pip install -e '.[dev]'``).

Each case runs in a process of its own (so one library's imports, threads or global state never
touch another's figures), wrapping the same function, which returns a small dict. In that
process the case and a bare call of the function are timed batch by batch, interleaved, so a
slow moment hits both alike; a batch's time over its calls is one sample, and the medians are
compared. The table shows each case's median per call, its overhead (case - bare, the bare call
timed in its own process) and its ratio to the bare call.

Cases: a bare call; ``functools.wraps``; tenacity's ``@retry`` (succeeding at once); a
pybreaker circuit breaker (closed); an OpenTelemetry span with the API only (no SDK: a no-op);
a GrowthBook and an OpenFeature flag check (an in-memory flag) before the call; Langfuse's
``@observe`` with tracing disabled; and aiguard: the served path (confidence and threshold), with
a rollout and the kill check, with the breaker too, and with the OpenTelemetry SDK recording a
span per call (a ``BatchSpanProcessor`` exporting to a sink that drops the spans).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

RESULT = {"label": "billing", "score": 0.93}
TICKET = "my invoice is wrong"


def bare(ticket: str) -> dict[str, Any]:
    return RESULT


def _wraps() -> Callable[[str], Any]:
    import functools

    def decorate(f: Callable[[str], Any]) -> Callable[[str], Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return f(*args, **kwargs)

        return wrapper

    return decorate(bare)


def _tenacity() -> Callable[[str], Any]:
    import tenacity

    return tenacity.retry(stop=tenacity.stop_after_attempt(3), reraise=True)(bare)


def _pybreaker() -> Callable[[str], Any]:
    import pybreaker

    return pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)(bare)


def _otel_noop() -> Callable[[str], Any]:
    from opentelemetry import trace

    tracer = trace.get_tracer("peers")

    def call(ticket: str) -> Any:
        with tracer.start_as_current_span("chat m"):
            return bare(ticket)

    return call


def _growthbook() -> Callable[[str], Any]:
    from growthbook import GrowthBook

    gb = GrowthBook(
        attributes={"id": TICKET},
        features={"ai-triage": {"defaultValue": False, "rules": [{"force": True}]}},
    )
    assert gb.is_on("ai-triage")

    def call(ticket: str) -> Any:
        if gb.is_on("ai-triage"):
            return bare(ticket)
        return None

    return call


def _openfeature() -> Callable[[str], Any]:
    from openfeature import api
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    api.set_provider(
        InMemoryProvider({"ai-triage": InMemoryFlag("on", {"on": True, "off": False})})
    )
    client = api.get_client()
    assert client.get_boolean_value("ai-triage", False)

    def call(ticket: str) -> Any:
        if client.get_boolean_value("ai-triage", False):
            return bare(ticket)
        return None

    return call


def _langfuse() -> Callable[[str], Any]:
    os.environ["LANGFUSE_TRACING_ENABLED"] = "false"
    os.environ.setdefault("LANGFUSE_PUBLIC_KEY", "pk-lf-peers")
    os.environ.setdefault("LANGFUSE_SECRET_KEY", "sk-lf-peers")
    os.environ.setdefault("LANGFUSE_HOST", "http://127.0.0.1:9")  # never reached: tracing is off
    from langfuse import observe

    return observe()(bare)


def _aiguard(**settings: Any) -> Callable[[str], Any]:
    import aiguard

    # the ticket is inside a 50 % rollout of this feature (as in overhead.py), so bucketing runs
    # and the model serves
    return aiguard.guard("bench", confidence="score", threshold=0.5, **settings)(bare)


def _aiguard_rollout() -> Callable[[str], Any]:
    import aiguard

    return _aiguard(rollout=aiguard.Rollout(percent=50, key="ticket"))


def _aiguard_breaker() -> Callable[[str], Any]:
    import aiguard

    return _aiguard(
        rollout=aiguard.Rollout(percent=50, key="ticket"),
        breaker=aiguard.Breaker(max_error_rate=0.5, min_calls=20),
    )


def _aiguard_sdk() -> Callable[[str], Any]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Sink(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Sink(), max_queue_size=1 << 16))
    trace.set_tracer_provider(provider)
    return _aiguard()


CASES: dict[str, Callable[[], Callable[[str], Any]]] = {
    "bare call": lambda: bare,
    "functools.wraps": _wraps,
    "tenacity @retry (succeeds)": _tenacity,
    "pybreaker (closed)": _pybreaker,
    "OpenTelemetry span, API only": _otel_noop,
    "GrowthBook flag check": _growthbook,
    "OpenFeature flag check": _openfeature,
    "Langfuse @observe, tracing off": _langfuse,
    "aiguard, served": lambda: _aiguard(),
    "aiguard + rollout + kill check": _aiguard_rollout,
    "aiguard + rollout + breaker": _aiguard_breaker,
    "aiguard, SDK span per call": _aiguard_sdk,
}


def _batch(fn: Callable[[str], Any], calls: int) -> float:
    ticket = TICKET
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn(ticket)
    return (time.perf_counter_ns() - start) / calls


def run_case(name: str, batches: int, calls: int) -> dict[str, float]:
    """In this process: the medians (ns per call) of the case and of the bare call."""
    import gc

    fn = CASES[name]()
    assert fn(TICKET) == RESULT, f"{name}: the wrapped function's result changed"
    for _ in range(3):  # warm up both
        _batch(fn, calls // 10 or 1)
        _batch(bare, calls // 10 or 1)
    gc.collect()
    gc.disable()
    try:
        mine, base = [], []
        for _ in range(batches):
            mine.append(_batch(fn, calls))
            base.append(_batch(bare, calls))
    finally:
        gc.enable()
    return {"case_ns": statistics.median(mine), "bare_ns": statistics.median(base)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=11)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.batches, args.calls)))
        return 0
    results: dict[str, dict[str, float]] = {}
    for name in CASES:
        proc = subprocess.run(
            [sys.executable, __file__, "--case", name, "--batches", str(args.batches),
             "--calls", str(args.calls)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr}", file=sys.stderr)
            return 1
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    bare_ns = results["bare call"]["case_ns"]
    print(f"Python {platform.python_version()}, {platform.machine()}; "
          f"{args.batches} batches of {args.calls:,} calls, medians\n")  # fmt: skip
    print(f"| {'case':32} | {'median/call':>11} | {'overhead':>9} | {'ratio':>7} |")
    print(f"|{'-' * 34}|{'-' * 13}|{'-' * 11}|{'-' * 9}|")
    for name, r in results.items():
        ratio = r["case_ns"] / r["bare_ns"]
        overhead = "" if name == "bare call" else f"{(r['case_ns'] - bare_ns) / 1000:6.2f} µs"
        print(f"| {name:32} | {r['case_ns'] / 1000:8.2f} µs | {overhead:>9} | {ratio:6.1f}x |")
    print("\nratio: the case's median over the bare call's, both timed in the case's process.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
