"""Every python example of docs/streaming.md runs as written and prints what the page shows.

Each block runs alone, in a fresh namespace. A block that uses the openai or anthropic client
talks to the local LLM server: the clients read its address from ``OPENAI_BASE_URL`` and
``ANTHROPIC_BASE_URL``, as a reader's would read the provider's. The block's output is compared
with the ``text`` block that follows it: the lines the block prints, and the warnings aiguard
logs (the lines that start with ``aiguard:``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path

import pytest
from llm_server import LLMServer, Reply

PAGE = Path(__file__).resolve().parents[1] / "docs" / "streaming.md"
BLOCK = re.compile(r"```python\n(.*?)```\n(?:\n```text\n(.*?)```\n)?", re.DOTALL)
ANSWER = Reply(text="Your refund was sent on Monday.", chunks=4, chunk_interval=0.01)


def blocks() -> list[tuple[int, str, str | None]]:
    """``(line, code, expected output)`` for each python block of the page."""
    text = PAGE.read_text()
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in BLOCK.finditer(text)
    ]


BLOCKS = blocks()


def needs_server(code: str) -> bool:
    return bool(re.search(r"^import (openai|anthropic)$", code, re.MULTILINE))


def test_the_page_has_its_examples() -> None:
    """The pattern finds the page's blocks, each followed by the output it prints."""
    assert len(BLOCKS) >= 10
    assert all(expected is not None for _, _, expected in BLOCKS)
    assert sum(needs_server(code) for _, code, _ in BLOCKS) >= 3


@pytest.mark.filterwarnings("error::DeprecationWarning")  # e.g. a model name the client retired
@pytest.mark.parametrize(
    ("line", "code", "expected"), BLOCKS, ids=[f"line-{line}" for line, _, _ in BLOCKS]
)
def test_example_runs_and_prints_what_the_page_shows(
    line: int,
    code: str,
    expected: str | None,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The block runs on its own and prints the ``text`` block that follows it."""
    if needs_server(code):
        server: LLMServer = request.getfixturevalue("llm_server")
        server.script(ANSWER)
        for name in ("OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "ANTHROPIC_AUTH_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    out = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="aiguard"), contextlib.redirect_stdout(out):
        exec(compile(code, f"{PAGE.name}:{line}", "exec"), {"__name__": "__docs__"})
    printed = out.getvalue().splitlines()
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("aiguard")]
    shown = (expected or "").splitlines()
    assert [x for x in shown if not x.startswith("aiguard:")] == printed
    for warning in (x for x in shown if x.startswith("aiguard:")):
        assert warning in warned
