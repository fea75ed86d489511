"""A store that cannot be opened: it fails once, clearly and fast, is retried in the background
with backoff, and never stalls decoration or a call."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import aiguard
from aiguard._runtime import lifecycle


def _unopenable(tmp_path: Path) -> tuple[Path, Path]:
    """A store path whose parent is a plain file (no directory can be made there), and that
    file, to be replaced by a directory to heal it."""
    blocker = tmp_path / "store-dir"
    blocker.write_text("not a directory")
    return blocker / "aiguard.db", blocker


def test_configure_with_an_unopenable_store_fails_fast_naming_path_and_cause(
    tmp_path: Path,
) -> None:
    """configure(store=...) raises StoreError within 1 s, naming the path and the cause."""
    path, _ = _unopenable(tmp_path)
    t0 = time.monotonic()
    with pytest.raises(aiguard.StoreError) as err:
        aiguard.configure(store=path)
    assert time.monotonic() - t0 < 1.0
    assert str(path) in str(err.value) and "unable to open" in str(err.value)


def test_an_unopenable_store_from_the_environment_never_stalls_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AIGUARD_STORE pointing where no store can be opened: decoration, every call (HumanReview
    included, which passes the call on), kill() and configure() stay fast; once the path works,
    the background retry opens the store and calls are recorded again."""
    monkeypatch.setattr(lifecycle, "OPEN_RETRY", (0.2, 0.4))
    path, blocker = _unopenable(tmp_path)
    monkeypatch.setenv("AIGUARD_STORE", str(path))

    t0 = time.monotonic()

    @aiguard.guard(
        "env-store",
        confidence="p",
        threshold=0.5,
        fallback=[aiguard.HumanReview(), aiguard.Default({"p": 1.0})],
    )
    def f(p: float) -> dict[str, float]:
        return {"p": p}

    assert time.monotonic() - t0 < 1.0  # decoration
    worst = 0.0
    for i in range(50):
        t = time.monotonic()
        outcome = f.outcome(0.1)  # HumanReview fails (no store), Default answers
        worst = max(worst, time.monotonic() - t)
        assert outcome.source is aiguard.Source.DEFAULT
        assert isinstance(outcome.attempts[0].error, aiguard.StoreError)
        if i % 10 == 0:
            aiguard.kill("other", reason="x")  # a new generation: every guard recompiles
            aiguard.configure(features={})
    assert worst < 0.5, f"a call waited {worst:.2f} s on an unopenable store"
    blocker.unlink()
    blocker.mkdir()  # the path works now: the background retry opens the store
    deadline = time.monotonic() + 5
    while lifecycle.store_if_open() is None:
        assert time.monotonic() < deadline, "the store was never retried"
        time.sleep(0.05)
    with pytest.raises(aiguard.ReviewPending):
        f(0.1)  # HumanReview works again
    f(0.9)
    aiguard.flush()
    assert any(r["feature"] == "env-store" for r in aiguard.SQLiteStore(path).call_records())
