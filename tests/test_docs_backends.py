"""The Phoenix and Prometheus recipes of docs/observability.md run against the real backends.

Each recipe's python block runs as written, as a program of its own (a subprocess: it sets the
global OpenTelemetry providers, as an application does), against a Phoenix or Prometheus server
started for the test on free ports; the block reads the addresses from the environment variables
it documents. Its output is compared with the ``text`` block that follows it: the lines it prints,
and aiguard's warnings (the lines that start with ``aiguard:``) on its standard error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from backends import free_port, phoenix_server, prometheus_server

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "observability.md"
BLOCK = re.compile(r"```(python|yaml)\n(.*?)```\n(?:\n```text\n(.*?)```\n)?", re.DOTALL)


def recipe(title: str) -> dict[str, tuple[str, str | None]]:
    """The blocks of the section ``### {title}``: ``{"python": (code, output), "yaml": ...}``."""
    text = PAGE.read_text()
    start = text.index(f"\n### {title}\n")
    end = min(i for i in (text.find("\n### ", start + 1), text.find("\n## ", start + 1)) if i > 0)
    return {m.group(1): (m.group(2), m.group(3)) for m in BLOCK.finditer(text[start:end])}


def run(code: str, expected: str | None, env: dict[str, str]) -> None:
    """Run the block as a program and check that it prints what the page shows."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AIGUARD_"))},
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    shown = (expected or "").splitlines()
    assert [x for x in shown if not x.startswith("aiguard:")] == done.stdout.splitlines()
    for warning in (x for x in shown if x.startswith("aiguard:")):
        assert warning in done.stderr


def test_the_page_has_both_recipes() -> None:
    """Each recipe has its program, followed by what it prints; Prometheus's has its config."""
    phoenix, prometheus = recipe("Phoenix recipe"), recipe("Prometheus recipe")
    assert phoenix["python"][1] is not None
    assert prometheus["python"][1] is not None
    assert "localhost:9464" in prometheus["yaml"][0]


def test_phoenix_recipe_runs_against_phoenix() -> None:
    """The Phoenix recipe sends its spans to a real Phoenix and prints them as Phoenix has them."""
    code, expected = recipe("Phoenix recipe")["python"]
    with phoenix_server() as phoenix:
        run(code, expected, {"PHOENIX_URL": phoenix.url})


def test_prometheus_recipe_runs_against_prometheus() -> None:
    """Prometheus, with the page's prometheus.yml, scrapes the recipe's program, and the
    program's PromQL queries print the page's figures."""
    blocks = recipe("Prometheus recipe")
    code, expected = blocks["python"]
    port = free_port()
    config = blocks["yaml"][0].replace("localhost:9464", f"127.0.0.1:{port}")
    with prometheus_server(config) as prometheus:
        run(code, expected, {"PROMETHEUS_URL": prometheus.url, "METRICS_PORT": str(port)})
