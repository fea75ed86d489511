"""Faults in the call-record path: poisoned rows, a flaky store, a store down then healed.

Every case ends with the books balanced: ``recorded == written + dropped + queued``, and nothing
dropped that the store could have taken.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiguard
from aiguard._runtime import records
from aiguard._runtime.state import runtime
from aiguard.store import configured


def _settle(want_written: int, *, seconds: float = 10.0) -> aiguard.records.RecordCounts:
    """Flush until ``want_written`` records are written and nothing is queued (or time runs
    out); the counts then."""
    deadline = time.monotonic() + seconds
    while True:
        aiguard.flush()
        counts = aiguard.records.counts()
        if (counts.written >= want_written and counts.queued == 0) or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def test_poisoned_rows_never_hold_back_good_ones(tmp_path: Path) -> None:
    """Two rows SQLite refuses (2**70 tokens) at the head of the queue: the 500 good records
    behind them are written, the two are dropped with their reason, and the books balance."""
    aiguard.configure(store=tmp_path / "a.db")

    @aiguard.guard("poison", usage=lambda r: aiguard.Usage(input_tokens=r, output_tokens=0))
    def f(tokens: int) -> int:
        return tokens

    f(2**70)
    f(2**70)
    for _ in range(500):
        f(1)
    counts = _settle(500)
    assert counts.written == 500
    assert len(configured().call_records(feature="poison")) == 500
    # the two bad rows: refused twice while the store took others, dropped with the reason
    for _ in range(3):
        f(1)
        counts = _settle(counts.written + 1)
    assert counts.dropped == 2, counts
    assert any("refused by the store" in why for why in counts.drop_reasons), counts
    assert counts.recorded == counts.written + counts.dropped + counts.queued


def test_a_store_that_fails_every_other_batch_loses_nothing(tmp_path: Path) -> None:
    """Half the writes fail (a flaky connection): every record is written in the end."""
    aiguard.configure(store=tmp_path / "a.db")
    store = configured()
    real = store.add_call_records
    calls = {"n": 0}

    def flaky(rows: list[Any]) -> None:
        calls["n"] += 1
        if calls["n"] % 2:
            raise aiguard.StoreError("connection reset")
        real(rows)

    store.add_call_records = flaky  # type: ignore[method-assign]

    @aiguard.guard("flaky")
    def f(i: int) -> int:
        return i

    for batch in range(10):
        for i in range(20):
            f(batch * 20 + i)
        aiguard.flush()
    counts = _settle(200)
    assert counts.written == 200 and counts.dropped == 0, counts
    assert len(store.call_records(feature="flaky")) == 200


def test_a_store_down_then_healed_writes_everything(tmp_path: Path) -> None:
    """While the store refuses every write, records wait (the writer backs off, nothing is
    dropped); once it heals, all land: written == recorded."""
    aiguard.configure(store=tmp_path / "a.db")
    store = configured()
    real = store.add_call_records
    down = {"on": True, "tries": 0}

    def outage(rows: list[Any]) -> None:
        if down["on"]:
            down["tries"] += 1
            raise aiguard.StoreError("server closed the connection")
        real(rows)

    store.add_call_records = outage  # type: ignore[method-assign]

    @aiguard.guard("outage")
    def f(i: int) -> int:
        return i

    for i in range(300):
        f(i)
    time.sleep(1.0)  # the writer tries, fails, backs off
    tries = down["tries"]
    assert 0 < tries < 20  # backing off, not hammering the store
    counts = aiguard.records.counts()
    assert counts.dropped == 0 and counts.queued == 300
    down["on"] = False
    counts = _settle(300)
    assert counts.written == 300 and counts.dropped == 0 and counts.recorded == 300
    assert runtime.recorder is not None and runtime.recorder.backoff == 0.0


def test_the_queue_holds_figures_not_answers_and_stays_in_its_byte_budget(
    tmp_path: Path,
) -> None:
    """With the store down, 5,000 calls answering 100 KB each hold no answer in memory: the
    queue keeps within record_queue_bytes, the rest is dropped and counted."""
    import tracemalloc

    aiguard.configure(store=tmp_path / "a.db", record_queue_bytes=2**20)
    store = configured()

    def refuse(rows: list[Any]) -> None:
        raise aiguard.StoreError("down")

    store.add_call_records = refuse  # type: ignore[method-assign]

    @aiguard.guard("big", confidence=lambda r: 0.9, threshold=0.5)
    def f(i: int) -> str:
        return "x" * 100_000 + str(i)  # a fresh 100 KB answer each call

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(5000):
        f(i)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    counts = aiguard.records.counts()
    # queued counts the queue (at most record_queue_bytes // ITEM_BYTES records) and the batch
    # the writer holds while the store refuses it (at most BATCH records)
    bound = 2**20 // records.ITEM_BYTES + records.BATCH
    assert counts.queued <= bound and counts.dropped == 5000 - counts.queued, counts
    assert counts.dropped >= 5000 - bound
    assert held < 2 * 2**20, f"{held / 2**20:.1f} MiB held for 5,000 calls of 100 KB answers"


def test_records_queued_before_a_store_change_go_to_their_own_store(tmp_path: Path) -> None:
    """Records made before configure(store=B) are written to A, once; the books balance."""
    import sqlite3

    a, b = tmp_path / "a.db", tmp_path / "b.db"
    aiguard.configure(store=a)

    @aiguard.guard("switch")
    def f(i: int) -> int:
        return i

    for i in range(5):
        f(i)
    aiguard.configure(store=b)
    f(5)
    deadline = time.monotonic() + 5
    while aiguard.records.counts().queued and time.monotonic() < deadline:
        aiguard.flush()
        time.sleep(0.05)

    def count(path: Path) -> int:
        return int(sqlite3.connect(path).execute("SELECT count(*) FROM call_records").fetchone()[0])

    assert (count(a), count(b)) == (5, 1)
    c = aiguard.records.counts()
    assert c.recorded == 6 == c.written + c.dropped + c.queued


def test_feedback_during_a_store_change_stays_with_its_call(tmp_path: Path) -> None:
    """Feedback on a call recorded in store A, given after the switch to B while A's writer is
    still writing it, goes to A with the call: the call is recorded once."""
    import sqlite3

    class Slow(aiguard.SQLiteStore):
        def add_call_records(self, rows: list[Any]) -> None:
            time.sleep(0.6)
            super().add_call_records(rows)

    a, b = tmp_path / "a.db", tmp_path / "b.db"
    aiguard.configure(store=Slow(a))

    @aiguard.guard("switch-fb")
    def f(i: int) -> int:
        return i

    outcome = f.outcome(1)
    time.sleep(0.3)  # the writer is writing the call's record to A
    aiguard.configure(store=b)
    outcome.accept()
    time.sleep(1.0)
    aiguard.flush()

    def count(path: Path, table: str) -> int:
        db = sqlite3.connect(path)
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    assert (count(a, "call_records"), count(a, "feedback")) == (1, 1)
    assert (count(b, "call_records"), count(b, "feedback")) == (0, 0)
