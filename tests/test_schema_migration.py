"""Schema version 4 -> 5 (the cache-write columns of call_records), on real databases: a SQLite
file and a PostgreSQL schema written the way aiguard at version 4 wrote them, with rows in every
table. Migrating keeps every row; the new columns are NULL in the old rows (their cache writes
are unknown) and carry the figures of new ones."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import drop_schema, require_postgres, unique

import aiguard
from aiguard._feedback_figures import COLUMNS as FEEDBACK_FIGURES
from aiguard._runtime.records import CALL_RECORD_COLUMNS
from aiguard.store import SCHEMA_VERSION

# What aiguard wrote at schema version 4 (SQLite: the statements of versions 1 to 4 in order).
SQLITE_V4 = [
    """CREATE TABLE aiguard_meta (key TEXT PRIMARY KEY, value TEXT)""",
    """CREATE TABLE review_items (
        id TEXT PRIMARY KEY, feature TEXT NOT NULL, call_id TEXT NOT NULL,
        reason TEXT NOT NULL, arguments TEXT NOT NULL, model_result TEXT,
        confidence REAL, created_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending', answer TEXT,
        reviewer TEXT, note TEXT, resolved_at REAL)""",
    "CREATE INDEX review_items_by_feature ON review_items (feature, status, created_at)",
    """CREATE TABLE stage_figures (
        process TEXT NOT NULL, feature TEXT NOT NULL, percent REAL NOT NULL,
        calls INTEGER NOT NULL, errors INTEGER NOT NULL,
        timeouts INTEGER NOT NULL, low_confidence INTEGER NOT NULL,
        fallbacks INTEGER NOT NULL, gate TEXT, updated_at REAL NOT NULL,
        PRIMARY KEY (process, feature, percent))""",
    """CREATE TABLE call_records (
        call_id TEXT PRIMARY KEY, feature TEXT NOT NULL,
        started_at REAL NOT NULL, source TEXT, reason TEXT NOT NULL,
        confidence REAL, threshold REAL, arm TEXT, rollout_percent REAL,
        model TEXT, input_tokens INTEGER, output_tokens INTEGER,
        cache_read_tokens INTEGER, cost_pico INTEGER, latency REAL NOT NULL,
        model_latency REAL, trace_id TEXT, span_id TEXT, inputs TEXT,
        output TEXT, detail TEXT)""",
    "CREATE INDEX call_records_by_feature ON call_records (feature, started_at)",
    """CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL,
        feature TEXT, kind TEXT NOT NULL, accepted INTEGER, score REAL,
        label TEXT, edited TEXT, edit_distance REAL, comment TEXT, by TEXT,
        attributes TEXT, created_at REAL NOT NULL)""",
    "CREATE INDEX feedback_by_call ON feedback (call_id, id)",
    "CREATE INDEX feedback_by_feature ON feedback (feature, created_at)",
    "ALTER TABLE review_items ADD COLUMN claimed_by TEXT",
    "ALTER TABLE review_items ADD COLUMN claimed_until REAL",
    "INSERT INTO aiguard_meta VALUES ('schema_version', '4')",
]

POSTGRES_V4 = [
    "CREATE TABLE aiguard_meta (key TEXT PRIMARY KEY, value TEXT)",
    """CREATE TABLE review_items (
        id TEXT PRIMARY KEY, feature TEXT NOT NULL, call_id TEXT NOT NULL, reason TEXT NOT NULL,
        arguments TEXT NOT NULL, model_result TEXT, confidence DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
        answer TEXT, reviewer TEXT, note TEXT, resolved_at DOUBLE PRECISION,
        claimed_by TEXT, claimed_until DOUBLE PRECISION)""",
    "CREATE INDEX review_items_by_feature ON review_items (feature, status, created_at)",
    """CREATE TABLE stage_figures (
        process TEXT NOT NULL, feature TEXT NOT NULL, percent DOUBLE PRECISION NOT NULL,
        calls BIGINT NOT NULL, errors BIGINT NOT NULL, timeouts BIGINT NOT NULL,
        low_confidence BIGINT NOT NULL, fallbacks BIGINT NOT NULL, gate TEXT,
        updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (process, feature, percent))""",
    """CREATE TABLE call_records (
        call_id TEXT PRIMARY KEY, feature TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL,
        source TEXT, reason TEXT NOT NULL, confidence DOUBLE PRECISION,
        threshold DOUBLE PRECISION, arm TEXT, rollout_percent DOUBLE PRECISION, model TEXT,
        input_tokens BIGINT, output_tokens BIGINT, cache_read_tokens BIGINT, cost_pico BIGINT,
        latency DOUBLE PRECISION NOT NULL, model_latency DOUBLE PRECISION, trace_id TEXT,
        span_id TEXT, inputs TEXT, output TEXT, detail TEXT)""",
    "CREATE INDEX call_records_by_feature ON call_records (feature, started_at)",
    """CREATE TABLE feedback (
        id BIGSERIAL PRIMARY KEY, call_id TEXT NOT NULL, feature TEXT, kind TEXT NOT NULL,
        accepted INTEGER, score DOUBLE PRECISION, label TEXT, edited TEXT,
        edit_distance DOUBLE PRECISION, comment TEXT, by TEXT, attributes TEXT,
        created_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX feedback_by_call ON feedback (call_id, id)",
    "CREATE INDEX feedback_by_feature ON feedback (feature, created_at)",
    "INSERT INTO aiguard_meta VALUES ('schema_version', '4')",
]

# the v4 rows: a call record (21 columns, in v4's order), a review item, stage figures, feedback
OLD_CALLS = [
    ("ag_old_1", "reply", 1000.0, "model", "served", 0.9, 0.5, "ai", 50.0, "claude-x",
     450, 20, 300, 877_500_000, 0.25, 0.2, "a" * 32, "b" * 16, None, '"hi"', None),
    ("ag_old_2", "reply", 1001.0, "default", "low_confidence", 0.1, 0.5, None, None, None,
     None, None, None, None, 0.01, None, None, None, None, None, "confidence 0.1 < 0.5"),
]  # fmt: skip
OLD_REVIEW = ("rv_1", "reply", "ag_old_2", "low_confidence", '{"text": "hi"}', None, 0.1, 1001.0,
              "pending", None, None, None, None, None, None)  # fmt: skip
OLD_FIGURES = ("proc-1", "reply", 50.0, 2, 0, 0, 1, 1, None, 1002.0)
OLD_FEEDBACK = ("ag_old_1", "reply", "accepted", 1, None, None, None, None, None, "ana", None,
                1003.0)  # fmt: skip


def _fill(execute: Any, mark: str) -> None:
    def marks(n: int) -> str:
        return ",".join([mark] * n)

    for row in OLD_CALLS:
        execute(f"INSERT INTO call_records VALUES ({marks(21)})", row)
    execute(f"INSERT INTO review_items VALUES ({marks(15)})", OLD_REVIEW)
    execute(f"INSERT INTO stage_figures VALUES ({marks(10)})", OLD_FIGURES)
    execute(
        "INSERT INTO feedback (call_id, feature, kind, accepted, score, label, edited, "
        f"edit_distance, comment, by, attributes, created_at) VALUES ({marks(12)})",
        OLD_FEEDBACK,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def v4_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A real version-4 database with rows, opened by this aiguard (which migrates it)."""
    if request.param == "sqlite":
        path = tmp_path / "v4.db"
        db = sqlite3.connect(path)
        for statement in SQLITE_V4:
            db.execute(statement)
        _fill(db.execute, "?")
        db.commit()
        db.close()
        store: Any = aiguard.SQLiteStore(path)
        yield store
        store.close()
        return
    url = require_postgres()
    import psycopg

    from aiguard.postgres import PostgresStore

    schema = unique("aiguard_v4")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path TO {schema}")
        for statement in POSTGRES_V4:
            conn.execute(statement)
        _fill(conn.execute, "%s")
    store = PostgresStore(url, schema=schema)
    try:
        yield store
    finally:
        store.close()
        drop_schema(schema)


def _in_table_order(figures: tuple[str, ...]) -> tuple[str, ...]:
    """The call_records columns in the table's order: the feedback figures (version 7) come
    after the columns of version 6, and the unit (version 8) after them."""
    own = CALL_RECORD_COLUMNS.index("unit")
    return CALL_RECORD_COLUMNS[:own] + figures + CALL_RECORD_COLUMNS[own:]


def _columns(store: Any) -> list[str]:
    if isinstance(store, aiguard.SQLiteStore):
        return [r[1] for r in store._run("PRAGMA table_info(call_records)")]
    rows = store._run(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'call_records' ORDER BY ordinal_position",
        (store.schema,),
    )
    return [r[0] for r in rows]


def test_migration_keeps_every_row_and_adds_the_columns(v4_store: Any) -> None:
    """The current version, the new columns last, every v4 row kept as it was with NULL
    writes, segments and label, and the feedback figures of the old feedback."""
    store = v4_store
    [(version,)] = store._run("SELECT value FROM aiguard_meta WHERE key = 'schema_version'")
    assert version == str(SCHEMA_VERSION)
    figures = tuple(name for name, _, _ in FEEDBACK_FIGURES)
    assert tuple(_columns(store)) == _in_table_order(figures)
    found = store._run(
        "SELECT call_id, fb_decision, fb_verdict, fb_score_n FROM call_records ORDER BY call_id"
    )
    assert [tuple(r) for r in found] == [("ag_old_1", "accepted", None, 0),
                                         ("ag_old_2", None, None, None)]  # fmt: skip
    rows = store.call_records(feature="reply")
    assert [r["call_id"] for r in rows] == ["ag_old_1", "ag_old_2"]
    for old, row in zip(OLD_CALLS, rows, strict=True):
        assert tuple(row[c] for c in CALL_RECORD_COLUMNS[:21]) == old
        assert (row["cache_write_tokens"], row["cache_write_1h_tokens"]) == (None, None)
        assert (row["segments"], row["label"], row["unit"]) == (None, None, None)
        assert (row["escalated"], row["saved_pico"]) == (None, None)
    assert store.get_call("ag_old_1")["cost_pico"] == 877_500_000
    [item] = store.list_reviews(feature="reply", status="pending", limit=10)
    assert (item.id, item.call_id, item.arguments) == ("rv_1", "ag_old_2", {"text": "hi"})
    [figures] = store.stage_figures("reply")
    assert (figures.calls, figures.low_confidence) == (2, 1)
    [fb] = store.feedback_rows(call_id="ag_old_1")
    assert (fb["kind"], fb["by"]) == ("accepted", "ana")


def test_a_migrated_store_records_cache_writes(v4_store: Any) -> None:
    """After the migration, new calls are recorded with their cache writes next to the old
    rows, and the report adds them up (the old rows' unknown writes count none)."""
    aiguard.configure(store=v4_store)
    client_usage = {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 300,
                    "cache_creation_input_tokens": 50,
                    "cache_creation": {"ephemeral_5m_input_tokens": 30,
                                       "ephemeral_1h_input_tokens": 20}}  # fmt: skip

    @aiguard.guard("reply")
    def reply() -> dict[str, Any]:
        return {"type": "message", "role": "assistant", "model": "claude-x",
                "usage": client_usage}  # fmt: skip

    new = reply.outcome()
    aiguard.flush()
    row = v4_store.get_call(new.call_id)
    assert (row["input_tokens"], row["cache_read_tokens"]) == (450, 300)
    assert (row["cache_write_tokens"], row["cache_write_1h_tokens"]) == (50, 20)
    [figures] = aiguard.report("reply", store=v4_store).features
    assert figures.calls == 3
    assert (figures.input_tokens, figures.cache_write_tokens) == (900, 50)
    assert (figures.cache_read_tokens, figures.cache_write_1h_tokens) == (600, 20)


def test_opening_twice_migrates_once(tmp_path: Path) -> None:
    """A SQLite file already at the current version opens as is (the columns are not added
    twice)."""
    path = tmp_path / "v4.db"
    db = sqlite3.connect(path)
    for statement in SQLITE_V4:
        db.execute(statement)
    db.commit()
    db.close()
    aiguard.SQLiteStore(path).close()
    store = aiguard.SQLiteStore(path)
    try:
        figures = tuple(name for name, _, _ in FEEDBACK_FIGURES)
        assert tuple(_columns(store)) == _in_table_order(figures)
    finally:
        store.close()
