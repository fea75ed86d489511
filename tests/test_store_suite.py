"""One store suite, run against every store: SQLite and PostgreSQL pass the same tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import fresh_store

import aiguard


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh store of each kind."""
    with fresh_store(request.param, tmp_path / "suite.db") as s:
        yield s


def submit(queue: aiguard.ReviewQueue, n: int = 1, feature: str = "f") -> list[aiguard.ReviewItem]:
    return [
        queue.submit(
            feature=feature,
            call_id=f"c{i}",
            reason="low_confidence",
            arguments={"i": i},
            model_result={"label": "x"},
            confidence=0.2,
        )
        for i in range(n)
    ]


def test_review_round_trip(store: Any) -> None:
    """Submit, list, get, resolve: the same on every store."""
    queue = aiguard.ReviewQueue(store)
    [item] = submit(queue)
    assert queue.pending("f") == [item]
    assert queue.count("f") == 1 and queue.count("other") == 0
    done = queue.resolve(item.id, {"label": "y"}, reviewer="ana", note="n")
    assert done.status == "resolved" and done.answer == {"label": "y"}
    assert queue.pending("f") == [] and queue.resolved("f")[0].id == item.id
    with pytest.raises(aiguard.ReviewError, match="already resolved"):
        queue.resolve(item.id, "z")
    with pytest.raises(aiguard.ReviewError, match="no review item"):
        queue.get("rv_missing")


def test_claims_go_to_one_reviewer_and_lapse(store: Any) -> None:
    """An item is claimed by one reviewer; a lapsed claim returns it to the queue."""
    queue = aiguard.ReviewQueue(store)
    a, b = submit(queue, 2)
    first = queue.claim("ana", lease=0.2)
    second = queue.claim("bob", lease=0.2)
    assert {first.id, second.id} == {a.id, b.id}  # type: ignore[union-attr]
    assert queue.claim("cy") is None
    with pytest.raises(aiguard.ReviewError, match="claimed by 'ana'"):
        queue.resolve(first.id, "x", reviewer="bob")  # type: ignore[union-attr]
    time.sleep(0.3)
    again = queue.claim("cy")
    assert again is not None and again.claimed_by == "cy"
    queue.resolve(again.id, "x", reviewer="cy")


def test_concurrent_claims_never_share_an_item(store: Any) -> None:
    """8 reviewers claiming at once from one queue: every item exactly once."""
    queue = aiguard.ReviewQueue(store)
    items = submit(queue, 40)
    got: list[str] = []
    lock = threading.Lock()

    def reviewer(name: str) -> None:
        while (item := queue.claim(name)) is not None:
            queue.resolve(item.id, "ok", reviewer=name)
            with lock:
                got.append(item.id)

    threads = [threading.Thread(target=reviewer, args=(f"r{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(i.id for i in items)


def test_call_records_and_feedback(store: Any) -> None:
    """Records written in batches and feedback rows read back alike."""
    from aiguard.store import CALL_RECORD_COLUMNS

    row = dict.fromkeys(CALL_RECORD_COLUMNS)
    row.update(call_id="ag_1", feature="f", started_at=1.0, reason="served", latency=0.5,
               cost_pico=10**9, source="model")  # fmt: skip
    store.add_call_records([tuple(row[c] for c in CALL_RECORD_COLUMNS)])
    store.add_call_records([tuple(row[c] for c in CALL_RECORD_COLUMNS)])  # idempotent
    assert store.get_call("ag_1")["cost_pico"] == 10**9
    assert [r["call_id"] for r in store.call_records(feature="f")] == ["ag_1"]
    assert store.call_records(since=2.0) == []
    first = store.add_feedback({"call_id": "ag_1", "feature": "f", "kind": "rejected",
                                "accepted": 0, "created_at": 1.0})  # fmt: skip
    second = store.add_feedback({"call_id": "ag_1", "feature": "f", "kind": "accepted",
                                 "accepted": 1, "created_at": 2.0})  # fmt: skip
    assert second > first
    assert [r["kind"] for r in store.feedback_rows(call_id="ag_1")] == ["rejected", "accepted"]


def test_guarded_calls_feedback_and_report_on_the_store(store: Any) -> None:
    """End to end on each store: calls recorded, feedback, report."""
    aiguard.configure(store=store)

    @aiguard.guard("suite")
    def f(x: int) -> int:
        return x

    for i in range(5):
        f.outcome(i).accept()
    figures = aiguard.report("suite").features[0]
    assert (figures.calls, figures.accepted) == (5, 5)


def test_newer_schema_is_refused(store: Any) -> None:
    """A database at a newer schema version than the library is a clear error."""
    from aiguard.store import SCHEMA_VERSION

    if isinstance(store, aiguard.SQLiteStore):
        store._run("UPDATE aiguard_meta SET value = ? WHERE key = 'schema_version'",
                   (str(SCHEMA_VERSION + 1),))  # fmt: skip
        with pytest.raises(aiguard.StoreError, match="newer than this aiguard"):
            aiguard.SQLiteStore(store.path)
    else:
        from aiguard.postgres import PostgresStore

        store._run("UPDATE aiguard_meta SET value = %s WHERE key = 'schema_version'",
                   (str(SCHEMA_VERSION + 1),))  # fmt: skip
        with pytest.raises(aiguard.StoreError, match="newer than this aiguard"):
            PostgresStore(store.url, schema=store.schema)


def test_a_resolution_and_its_feedback_commit_together(store: Any) -> None:
    """If the feedback row cannot be written, the item stays pending: no half resolution."""
    queue = aiguard.ReviewQueue(store)
    [item] = submit(queue)
    store._run("DROP TABLE feedback")
    with pytest.raises(aiguard.StoreError):
        queue.resolve(item.id, "x", reviewer="ana")
    assert queue.get(item.id).status == "pending"
