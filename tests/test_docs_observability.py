"""Every python example of docs/observability.md whose output the page shows runs as written and
prints exactly that.

The page has three kinds of python blocks:

- the examples of "What aiguard emits" and "In tests: ``capture_telemetry()``": one reader's
  session, each block going on from the ones before it (they share ``triage``, the price table
  and ``capture_telemetry``). A block runs in-process, in a fresh namespace after the session's
  earlier blocks (their output discarded), inside the isolation every test gets
  (``aiguard.testing.isolated()``, in conftest); ``capture_telemetry()`` is the block's own;
- the programs of "How to see it": each sets the global OpenTelemetry providers, as an
  application does, so each runs as a program of its own (a subprocess, ``PYTHONPATH`` at
  ``src``). The OTLP program runs with the environment of the page's command line, its endpoint
  pointed at a stand-in OTLP/HTTP receiver started by the test, which checks what it delivered;
- the programs of "Recipes that run": run by tests/test_docs_backends.py, against the real servers
  and ``tests/test_docs_backends.py`` runs them against real ones.

The output is compared with the ``text`` block that follows the python block: the lines it
prints, and the warnings aiguard logs (the lines that start with ``aiguard:``; on a program's
standard error).
"""

from __future__ import annotations

import contextlib
import http.server
import io
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "observability.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.DOTALL | re.MULTILINE)
HEADING = re.compile(r"^(##|###) (.+)$", re.MULTILINE)

SESSION = ("What aiguard emits", "In tests: `capture_telemetry()`")  # "## " sections
PROGRAMS = "How to see it"
RECIPES = "Recipes that run"


class Block(NamedTuple):
    line: int
    section: str  # the "## " section it is in
    code: str
    expected: str | None  # the text block that follows it (only blank lines between), if any
    before: str  # the page's text before the block (for the command line that runs it)


def page_blocks() -> list[Block]:
    text = PAGE.read_text()
    fences = list(FENCE.finditer(text))
    found = []
    for i, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        nxt = fences[i + 1] if i + 1 < len(fences) else None
        expected = None
        if nxt and nxt.group(1) == "text" and not text[fence.end() : nxt.start()].strip():
            expected = nxt.group(2)
        sections = [m.group(2) for m in HEADING.finditer(text, 0, fence.start()) if m[1] == "##"]
        found.append(
            Block(
                text.count("\n", 0, fence.start()) + 1,
                sections[-1] if sections else "",
                fence.group(2),
                expected,
                text[: fence.start()],
            )
        )
    return found


BLOCKS = page_blocks()
SHOWN = [b for b in BLOCKS if b.expected is not None]


def compare(expected: str, printed: str, warned: list[str]) -> None:
    """The block printed the page's lines, and logged the page's ``aiguard:`` lines (no other)."""
    shown = expected.splitlines()
    assert printed.splitlines() == [x for x in shown if not x.startswith("aiguard:")]
    assert sorted(set(warned)) == sorted({x for x in shown if x.startswith("aiguard:")})


def test_the_page_has_its_examples() -> None:
    """The parser finds the page's blocks: the session's, the programs' and the recipes'."""
    sections = [b.section for b in SHOWN]
    assert sum(s in SESSION for s in sections) >= 4
    assert sections.count(PROGRAMS) == 2
    assert sections.count(RECIPES) == 2
    assert {b.section for b in BLOCKS} <= {*SESSION, PROGRAMS, RECIPES}


# -- the session: in-process -----------------------------------------------------------------


@pytest.mark.parametrize(
    "block",
    [b for b in SHOWN if b.section in SESSION],
    ids=lambda b: f"line-{b.line}",
)
def test_example_prints_what_the_page_shows(
    block: Block, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block, after the session's blocks before it, prints the text block that follows it."""
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    earlier = [b for b in BLOCKS if b.section in SESSION and b.line < block.line]
    with contextlib.redirect_stdout(io.StringIO()):
        for before in earlier:
            exec(compile(before.code, f"{PAGE.name}:{before.line}", "exec"), namespace)
    caplog.clear()
    out = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="aiguard"), contextlib.redirect_stdout(out):
        exec(compile(block.code, f"{PAGE.name}:{block.line}", "exec"), namespace)
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("aiguard")]
    assert block.expected is not None
    compare(block.expected, out.getvalue(), warned)


# -- the programs of "How to see it": subprocesses ----------------------------------------------


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A stand-in OTLP/HTTP receiver: ``(its base URL, the (path, body) of each request)``."""
    received: list[tuple[str, bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", received
    finally:
        server.shutdown()
        server.server_close()


def command_environment(block: Block) -> dict[str, str]:
    """The variables of the last command line before the block that runs ``python app.py``."""
    lines = [x for x in block.before.splitlines() if x.endswith(" python app.py")]
    assert lines, "the page shows how to run the program"
    return dict(word.split("=", 1) for word in shlex.split(lines[-1])[:-2])


def run_program(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AIGUARD_"))},
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done


def aiguard_lines(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.startswith("aiguard:")]


def delivered(received: list[tuple[str, bytes]]) -> tuple[list[str], set[str], set[str]]:
    """The span names (sorted), the service names and the metric names (with data) received."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans: list[str] = []
    services: set[str] = set()
    metric_names: set[str] = set()
    for path, body in received:
        if path == "/v1/traces":
            for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
                for a in rs.resource.attributes:
                    if a.key == "service.name":
                        services.add(a.value.string_value)
                spans += [span.name for ss in rs.scope_spans for span in ss.spans]
        elif path == "/v1/metrics":
            for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
                for sm in rm.scope_metrics:
                    metric_names |= {m.name for m in sm.metrics}
    return sorted(spans), services, metric_names


def test_the_sdk_setup_delivers_over_otlp() -> None:
    """The OTLP program, run with the page's command line against a stand-in receiver, prints
    what the page shows and delivers the spans and metrics the page lists."""
    [block] = [b for b in SHOWN if b.section == PROGRAMS and "OTLPSpanExporter" in b.code]
    env = command_environment(block)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4318"
    with otlp_receiver() as (url, received):
        done = run_program(block.code, {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": url})
    assert block.expected is not None
    compare(block.expected, done.stdout, aiguard_lines(done.stderr))
    spans, services, metric_names = delivered(received)
    assert spans == [
        "aiguard ticket-triage",
        "aiguard.fallback default",
        "chat gpt-4.1-mini",
        "chat gpt-4.1-mini",
    ]
    assert services == {"ticket-service"}
    assert metric_names == {
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
        "aiguard.call.duration",
        "aiguard.calls",
        "aiguard.fallbacks",
        "aiguard.cost.unknown",
    }


def test_the_console_exporter_program_prints_what_the_page_shows() -> None:
    """The console exporter program prints its spans as the page shows them."""
    [block] = [b for b in SHOWN if b.section == PROGRAMS and "ConsoleSpanExporter" in b.code]
    done = run_program(block.code, {})
    assert block.expected is not None
    compare(block.expected, done.stdout, aiguard_lines(done.stderr))


def test_the_recipes_are_the_ones_run_against_their_backends() -> None:
    """The programs of "Recipes that run" need a Phoenix or a Prometheus server:
    tests/test_docs_backends.py runs each against the real one. Here: it runs exactly these."""
    import test_docs_backends as backends

    recipes = [b for b in SHOWN if b.section == RECIPES]
    run_there = [
        code
        for title in ("Phoenix recipe", "Prometheus recipe")
        for kind, (code, _) in backends.recipe(title).items()
        if kind == "python"
    ]
    assert sorted(b.code for b in recipes) == sorted(run_there)
