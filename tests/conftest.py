from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings
from llm_server import LLMServer

from aiguard import events
from aiguard._runtime import errors, stats
from aiguard.testing import isolated

pytest_plugins = ["_modes"]  # the `mode` fixture: each behaviour in sync and async

settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _clean_aiguard_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with default configuration and no AIGUARD_STORE, and leaves none."""
    monkeypatch.delenv("AIGUARD_STORE", raising=False)
    errors.reset()
    events.clear()
    stats.reset()
    with isolated():
        yield
    errors.reset()
    events.clear()


@pytest.fixture
def llm_server() -> Iterator[LLMServer]:
    """A local OpenAI and Anthropic API server for this test (``tests/llm_server.py``)."""
    with LLMServer() as server:
        yield server
    assert server.errors == [], f"the LLM server failed while answering: {server.errors!r}"
