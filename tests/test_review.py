"""The review queue and the SQLite store behind it."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import aiguard
from aiguard.store import SCHEMA_VERSION


def submit(queue: aiguard.ReviewQueue, feature: str = "f", **kw: Any) -> aiguard.ReviewItem:
    return queue.submit(
        feature=feature,
        call_id=kw.pop("call_id", "ag_1"),
        reason="low_confidence",
        arguments=kw.pop("arguments", {"text": "hi"}),
        **kw,
    )


def test_pending_lists_per_feature_oldest_first() -> None:
    """pending() filters by feature and keeps arrival order."""
    queue = aiguard.ReviewQueue(":memory:")
    a = submit(queue, "one", arguments={"n": 1})
    submit(queue, "two")
    c = submit(queue, "one", arguments={"n": 3})
    assert [i.id for i in queue.pending("one")] == [a.id, c.id]
    assert len(queue.pending()) == 3
    assert queue.count("one") == 2 and queue.count() == 3


def test_resolve_keeps_a_labelled_example() -> None:
    """A resolved item leaves the pending list and is kept with its answer as the label."""
    queue = aiguard.ReviewQueue(":memory:")
    item = submit(queue, model_result={"label": "bug"}, confidence=0.4)
    resolved = queue.resolve(item.id, {"label": "billing"}, reviewer="ana", note="invoice")
    assert resolved.status == "resolved" and resolved.answer == {"label": "billing"}
    assert resolved.reviewer == "ana" and resolved.note == "invoice"
    assert resolved.resolved_at is not None and resolved.resolved_at >= item.created_at
    assert queue.pending("f") == []
    [example] = queue.resolved("f")
    assert example.arguments == {"text": "hi"} and example.answer == {"label": "billing"}
    assert example.model_result == {"label": "bug"} and example.confidence == 0.4


def test_resolving_twice_or_unknown_is_a_review_error() -> None:
    """Resolving an unknown or already-resolved item raises ReviewError (a LookupError)."""
    queue = aiguard.ReviewQueue(":memory:")
    item = submit(queue)
    queue.resolve(item.id, "a")
    with pytest.raises(aiguard.ReviewError, match="already resolved"):
        queue.resolve(item.id, "b")
    with pytest.raises(LookupError, match="no review item"):
        queue.resolve("rv_nope", "b")
    with pytest.raises(aiguard.ReviewError):
        queue.get("rv_nope")
    assert queue.get(item.id).answer == "a"


def test_concurrent_resolution_has_one_winner(tmp_path: Path) -> None:
    """Two reviewers resolving the same item: exactly one succeeds."""
    queue = aiguard.ReviewQueue(tmp_path / "q.db")
    item = submit(queue)
    results: list[str] = []

    def resolve(who: str) -> None:
        try:
            queue.resolve(item.id, who, reviewer=who)
            results.append("ok")
        except aiguard.ReviewError:
            results.append("refused")

    threads = [threading.Thread(target=resolve, args=(f"r{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ok"] + ["refused"] * 7


def test_items_survive_reopening_the_file(tmp_path: Path) -> None:
    """The SQLite store is durable: a new store on the same file sees the items."""
    path = tmp_path / "q.db"
    item = submit(aiguard.ReviewQueue(path))
    again = aiguard.ReviewQueue(path)
    assert again.get(item.id) == item
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer aiguard is a clear error, never written to."""
    path = tmp_path / "q.db"
    aiguard.SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE aiguard_meta SET value = ? WHERE key = 'schema_version'",
        (str(SCHEMA_VERSION + 1),),
    )
    db.commit()
    with pytest.raises(aiguard.StoreError, match="newer than this aiguard"):
        aiguard.SQLiteStore(path)


def test_unopenable_store_is_a_store_error(tmp_path: Path) -> None:
    """A path that cannot be opened raises StoreError naming it."""
    bad = tmp_path / "missing-dir" / "q.db"
    with pytest.raises(aiguard.StoreError, match="missing-dir"):
        aiguard.SQLiteStore(bad)


def test_queue_without_store_names_the_fix() -> None:
    """A ReviewQueue with no store configured explains how to configure one."""
    with pytest.raises(aiguard.ConfigError, match=r"configure\(store="):
        aiguard.ReviewQueue().pending()


def test_store_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AIGUARD_STORE configures the store when configure(store=) was not called."""
    monkeypatch.setenv("AIGUARD_STORE", str(tmp_path / "env.db"))
    item = submit(aiguard.ReviewQueue())
    assert aiguard.ReviewQueue(tmp_path / "env.db").get(item.id).id == item.id


def test_configure_store_none_removes_it() -> None:
    """configure(store=None) turns the durable store off again."""
    aiguard.configure(store=":memory:")
    assert aiguard.ReviewQueue().count() == 0
    aiguard.configure(store=None)
    with pytest.raises(aiguard.ConfigError):
        aiguard.ReviewQueue().count()


def test_sqlite_store_satisfies_the_store_protocol() -> None:
    """SQLiteStore implements the Store interface."""
    assert isinstance(aiguard.SQLiteStore(":memory:"), aiguard.Store)
    with pytest.raises(aiguard.ConfigError, match="store=42 is invalid"):
        aiguard.open_store(42)
