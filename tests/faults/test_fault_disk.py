"""The store's disk misbehaves: a read-only directory, a full disk, a database another process
holds locked. Calls never wait on it, what cannot be written fails clearly (StoreError), and the
books of call records balance."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiguard


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``where`` (needs root, as in CI); unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for this fault test: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_read_only_store_directory_fails_clearly_and_calls_go_on(tmp_path: Path) -> None:
    """A store in a read-only directory: configure() raises StoreError naming the path within
    1 s; guarded calls are served as if there were no store."""
    with tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        path = ro / "aiguard.db"
        t0 = time.monotonic()
        with pytest.raises(aiguard.StoreError, match=str(path)):
            aiguard.configure(store=path)
        assert time.monotonic() - t0 < 1.0

        @aiguard.guard("ro")
        def f() -> int:
            return 1

        assert [f() for _ in range(100)] == [1] * 100


def test_a_full_disk_fails_feedback_clearly_and_never_the_calls(tmp_path: Path) -> None:
    """The store's disk fills up: calls are served, feedback raises StoreError (never a silent
    loss), call records that cannot be written are kept (the writer backs off) and counted."""
    with tmpfs(tmp_path / "full", "size=512k") as disk:
        aiguard.configure(store=disk / "aiguard.db", capture=True)

        @aiguard.guard("full")
        def f(i: int) -> str:
            return "y" * 2000 + str(i)

        last = None
        for i in range(2000):  # ~4 MB of captured output: far more than the disk holds
            last = f.outcome(i)
            if i % 200 == 0:
                aiguard.flush()
        assert last is not None and last.source is aiguard.Source.MODEL
        failures = []
        for _ in range(50):  # the disk is full: feedback fails, clearly, never silently
            try:
                f.outcome(0).accept(comment="z" * 20_000)
            except aiguard.StoreError as exc:
                failures.append(exc)
        assert failures and "full" in str(failures[0])
        counts = aiguard.records.counts()
        assert counts.recorded == counts.written + counts.dropped + counts.queued
        assert counts.queued > 0  # waiting for room, not thrown away


def test_a_locked_database_fails_within_the_store_timeout(tmp_path: Path) -> None:
    """Another process holds the database locked: feedback() raises StoreError within the store's
    timeout, a call whose chain reaches HumanReview passes it on, served calls never wait."""
    path = tmp_path / "locked.db"
    aiguard.configure(store=aiguard.SQLiteStore(path, timeout=0.5))

    @aiguard.guard(
        "locked",
        confidence="p",
        threshold=0.5,
        fallback=[aiguard.HumanReview(), aiguard.Default({"p": 1.0})],
    )
    def f(p: float) -> dict[str, float]:
        return {"p": p}

    served = f.outcome(0.9)
    aiguard.flush()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        with pytest.raises(aiguard.StoreError):
            served.accept()
        assert time.monotonic() - t0 < 0.5 + 1.0
        t0 = time.monotonic()
        outcome = f.outcome(0.1)
        assert outcome.source is aiguard.Source.DEFAULT
        assert time.monotonic() - t0 < 0.5 + 1.0
        worst = 0.0
        for _ in range(200):
            t = time.monotonic()
            f(0.9)
            worst = max(worst, time.monotonic() - t)
        assert worst < 0.05
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    served.accept()  # works again once the lock is gone
