"""Call records: what is written, capture, overflow, flush, and the store interface."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _modes import Mode

import aiguard
from aiguard._runtime import records as _records
from aiguard._runtime.state import runtime as state
from aiguard.store import configured
from aiguard.testing import capture_telemetry


def records() -> list[dict[str, Any]]:
    aiguard.flush()
    return configured().call_records()


def test_each_call_is_recorded(tmp_path: Path) -> None:
    """Every guarded call has a row: ids, reason, confidence, arm, model, tokens, cost, latency."""
    aiguard.configure(store=tmp_path / "a.db", prices={"models": {"m": {"per_call": "0.001"}}})

    @aiguard.guard(
        "t", model="m", confidence="score", threshold=0.5,
        rollout=aiguard.Rollout(percent=100, key="user"), fallback=aiguard.Default({"x": 1}),
    )  # fmt: skip
    def f(user: str, score: float) -> dict[str, Any]:
        return {"score": score, "input_tokens": 12, "output_tokens": 3}

    served = f.outcome("u", 0.9)
    low = f.outcome("u", 0.1)
    by_id = {r["call_id"]: r for r in records()}
    r = by_id[served.call_id]
    assert (r["feature"], r["source"], r["reason"], r["confidence"]) == (
        "t",
        "model",
        "served",
        0.9,
    )
    assert (r["arm"], r["rollout_percent"], r["model"]) == ("ai", 100, "m")
    assert (r["input_tokens"], r["output_tokens"], r["cost_pico"]) == (12, 3, 10**9)
    assert r["latency"] > 0 and r["started_at"] == pytest.approx(served.started_at)
    assert r["inputs"] is None and r["output"] is None  # capture is off by default
    low_row = by_id[low.call_id]
    assert (low_row["source"], low_row["reason"]) == ("default", "low_confidence")
    assert low_row["detail"] == "confidence 0.1 < threshold 0.5"


def test_capture_with_redaction_and_a_size_cap(tmp_path: Path) -> None:
    """With capture on, inputs (by name) and outputs are kept, redacted and capped."""

    def redact(value: Any) -> Any:
        if isinstance(value, dict) and "email" in value:
            return {**value, "email": "***"}
        return value

    aiguard.configure(store=tmp_path / "a.db", capture=True, redact=redact, capture_max_bytes=64)

    @aiguard.guard("t")
    def f(text: str, email: str) -> str:
        return "y" * 200

    f("hello", email="a@b.c")
    [r] = records()
    assert json.loads(r["inputs"]) == {"text": "hello", "email": "***"}
    out = json.loads(r["output"])
    assert set(out) == {"$truncated"} and len(out["$truncated"]) <= 64


def test_trace_and_span_ids_are_recorded(tmp_path: Path) -> None:
    """With a tracer, the record holds the call span's trace and span ids."""
    aiguard.configure(store=tmp_path / "a.db")

    @aiguard.guard("t")
    def f() -> int:
        return 1

    with capture_telemetry() as telemetry:
        f()
    [span] = telemetry.spans()
    [r] = records()
    assert r["trace_id"] == format(span.context.trace_id, "032x")
    assert r["span_id"] == format(span.context.span_id, "016x")


def test_overflow_drops_records_counts_and_logs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full queue drops call records (counted, logged once), never feedback."""
    monkeypatch.setattr(_records, "INTERVAL", 3600)  # the writer stays asleep
    aiguard.configure(store=tmp_path / "a.db", record_queue_bytes=5 * _records.ITEM_BYTES)
    recorder = state.recorder

    @aiguard.guard("t")
    def f() -> int:
        return 1

    with caplog.at_level("WARNING", logger="aiguard"):
        outcomes = [f.outcome() for _ in range(8)]
    assert recorder.dropped == 3
    assert sum("records are being dropped" in r.getMessage() for r in caplog.records) == 1
    assert len(records()) == 5
    with pytest.raises(aiguard.UnknownCall):
        outcomes[-1].accept()  # its record was dropped: feedback says so rather than guess
    outcomes[0].accept()


def test_no_store_no_recording() -> None:
    """Without a store nothing is recorded and calls work."""

    @aiguard.guard("t")
    def f() -> int:
        return 1

    assert f() == 1 and state.recorder is None


def test_record_calls_off(tmp_path: Path) -> None:
    """configure(record_calls=False) turns recording off."""
    aiguard.configure(store=tmp_path / "a.db", record_calls=False)

    @aiguard.guard("t")
    def f() -> int:
        return 1

    f()
    assert state.recorder is None
    assert configured().call_records() == []


def test_store_down_keeps_records_for_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing write keeps the batch queued; it is written once the store works again."""
    monkeypatch.setattr(_records, "INTERVAL", 3600)  # only this test's drains write
    aiguard.configure(store=tmp_path / "a.db")
    recorder = state.recorder
    store = configured()
    real = store.add_call_records
    calls = {"n": 0}

    def flaky(rows: list[Any]) -> None:
        calls["n"] += 1
        if calls["n"] <= 4:
            raise aiguard.StoreError("connection lost")
        real(rows)

    store.add_call_records = flaky  # type: ignore[method-assign]

    @aiguard.guard("t")
    def f() -> int:
        return 1

    f()
    assert recorder.drain() == 0  # the batch and one row refused: the store is down
    tries = calls["n"]
    assert recorder.drain() == 0 and calls["n"] == tries  # backing off: not hammered
    assert recorder.drain(force=True) == 0  # a flush tries now; the store still refuses
    assert recorder.drain(force=True) == 1  # it works again: nothing was lost
    assert len(store.call_records()) == 1 and recorder.dropped == 0


def test_records_are_flushed_at_exit(tmp_path: Path) -> None:
    """A process that exits normally writes what it had queued."""
    path = tmp_path / "exit.db"
    script = textwrap.dedent(f"""
        import aiguard, aiguard._runtime.records as r
        r.INTERVAL = 3600
        aiguard.configure(store={str(path)!r})
        f = aiguard.guard("t")(lambda: 1)
        for _ in range(50):
            f()
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert len(aiguard.SQLiteStore(path).call_records()) == 50


def test_schema_is_versioned(tmp_path: Path) -> None:
    """The store is at schema version 8 and has the documented tables and columns (the
    feedback figures after the call record's own of version 6, then the columns of version 8;
    shadow calls in their own table)."""
    import sqlite3

    from aiguard._feedback_figures import COLUMNS as FEEDBACK_FIGURES
    from aiguard._runtime.records import SHADOW_COLUMNS
    from aiguard.store import CALL_RECORD_COLUMNS

    aiguard.SQLiteStore(tmp_path / "v.db").close()
    db = sqlite3.connect(tmp_path / "v.db")
    assert db.execute("SELECT value FROM aiguard_meta").fetchall() == [("8",)]
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    expected = {"review_items", "stage_figures", "call_records", "feedback", "baselines"}
    assert expected | {"call_issuers", "shadow_calls"} <= tables
    columns = [r[1] for r in db.execute("PRAGMA table_info(call_records)")]
    own = CALL_RECORD_COLUMNS.index("unit")
    assert tuple(columns[:own]) == CALL_RECORD_COLUMNS[:own]
    figures = [c for c, _, _ in FEEDBACK_FIGURES]
    assert columns[own:] == [*figures, *CALL_RECORD_COLUMNS[own:]]
    shadow = tuple(r[1] for r in db.execute("PRAGMA table_info(shadow_calls)"))
    assert shadow == SHADOW_COLUMNS


def test_one_bad_row_does_not_block_the_others(tmp_path: Path) -> None:
    """A row the store refuses is dropped and counted; the rest of the batch is written."""
    aiguard.configure(store=tmp_path / "a.db")
    recorder = state.recorder
    store = configured()
    real = store.add_call_records
    bad: list[str] = []

    def picky(rows: list[Any]) -> None:
        if any(r[0] in bad for r in rows):
            raise aiguard.StoreError("bad row")
        real(rows)

    store.add_call_records = picky  # type: ignore[method-assign]

    @aiguard.guard("t")
    def f() -> int:
        return 1

    with recorder._write_lock:  # the writer thread waits: the four rows go in one batch
        ids = [f.outcome().call_id for _ in range(4)]
        bad.append(ids[1])
    recorder.drain()
    assert len(store.call_records()) == 3 and recorder.dropped == 0  # refused once: kept
    f()  # a good row written with it proves the store is up
    recorder.drain()
    assert len(store.call_records()) == 4 and recorder.dropped == 1  # refused twice: dropped
    assert recorder.drop_reasons == {"refused by the store: StoreError: bad row": 1}


def _message_with_writes() -> dict[str, Any]:
    return {
        "type": "message", "role": "assistant", "model": "claude-x",
        "usage": {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 300,
                  "cache_creation_input_tokens": 50,
                  "cache_creation": {"ephemeral_5m_input_tokens": 30,
                                     "ephemeral_1h_input_tokens": 20}},
    }  # fmt: skip


def test_records_carry_cache_writes(mode: Mode, tmp_path: Path) -> None:
    """A served call, a call routed to a fallback and a call without usage: each record has
    the cache writes its usage says (NULL without usage), from the queue's every form."""
    aiguard.configure(store=tmp_path / "w.db")

    @mode.guard("w", confidence=lambda r: r.get("score", 1.0), threshold=0.5,
                fallback=aiguard.Default("d"))  # fmt: skip
    def f(low: bool, usage: bool) -> dict[str, Any]:
        return {**(_message_with_writes() if usage else {}), "score": 0.1 if low else 0.9}

    served = mode.outcome(f, False, True)
    routed = mode.outcome(f, True, True)
    bare = mode.outcome(f, False, False)
    by_id = {r["call_id"]: r for r in records()}
    for o in (served, routed):
        row = by_id[o.call_id]
        assert (row["input_tokens"], row["cache_read_tokens"]) == (450, 300)
        assert (row["cache_write_tokens"], row["cache_write_1h_tokens"]) == (50, 20)
    row = by_id[bare.call_id]
    assert (row["cache_write_tokens"], row["cache_write_1h_tokens"]) == (None, None)


def test_rows_are_built_in_column_order(tmp_path: Path) -> None:
    """The row of a queued call has one value per column, each where its column is named."""
    aiguard.configure(store=tmp_path / "o.db")

    @aiguard.guard("o")
    def f() -> dict[str, Any]:
        return _message_with_writes()

    f()
    recorder = state.recorder
    assert recorder is not None
    [item] = list(recorder.queue)
    row = recorder._row(item)
    assert len(row) == len(_records.CALL_RECORD_COLUMNS)
    named = dict(zip(_records.CALL_RECORD_COLUMNS, row, strict=True))
    assert (named["feature"], named["cache_write_tokens"], named["cache_write_1h_tokens"]) == (
        "o",
        50,
        20,
    )
    assert recorder._known_of(row)[0] == "o"
