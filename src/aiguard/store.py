"""Durable storage for what must not be lost: the human review queue (and, later, feedback).

:class:`Store` is the interface; :class:`SQLiteStore` is the embedded default (stdlib ``sqlite3``,
WAL mode, ``synchronous=FULL``: an item is on disk before ``add_review`` returns). The schema is
versioned in the ``aiguard_meta`` table; a database written by a newer aiguard is refused with a
clear error rather than written to.

Schema, version 8 (version 1 had ``review_items``; 2 added ``stage_figures``; 3 added
``call_records`` and ``feedback``; 4 added the claim columns of ``review_items``; 5 added the
cache-write columns of ``call_records``, NULL in the rows written before; 6 its ``segments`` and
``label`` and the ``baselines`` table; 7 the ``call_issuers`` table and each call's feedback
figures, kept by triggers; 8 ``unit``, ``escalated`` and ``saved_pico``, and the
``shadow_calls`` table)::

    aiguard_meta(key TEXT PRIMARY KEY, value TEXT)          -- 'schema_version' -> '8'
    review_items(
        id TEXT PRIMARY KEY, feature TEXT, call_id TEXT, reason TEXT,
        arguments TEXT,            -- JSON, by the rule in aiguard._runtime.serialize
        model_result TEXT,         -- JSON or NULL
        confidence REAL, created_at REAL,
        status TEXT,               -- 'pending' | 'resolved'
        answer TEXT,               -- JSON or NULL
        reviewer TEXT, note TEXT, resolved_at REAL,
        claimed_by TEXT, claimed_until REAL)  -- a reviewer's claim, until it lapses
    stage_figures(                 -- model-call counts per process, feature and rollout percent
        process TEXT, feature TEXT, percent REAL,
        calls INTEGER, errors INTEGER, timeouts INTEGER, low_confidence INTEGER,
        fallbacks INTEGER,
        gate TEXT,                 -- JSON of the aiguard.Limits in force, or NULL
        updated_at REAL, PRIMARY KEY (process, feature, percent))
    call_records(                  -- one row per guarded call (written in batches)
        call_id TEXT PRIMARY KEY, feature TEXT, started_at REAL, source TEXT, reason TEXT,
        confidence REAL, threshold REAL, arm TEXT, rollout_percent REAL, model TEXT,
        input_tokens INTEGER, output_tokens INTEGER, cache_read_tokens INTEGER,
        cost_pico INTEGER,         -- cost in 10^-12 of the currency; NULL: unknown
        latency REAL, model_latency REAL, trace_id TEXT, span_id TEXT,
        inputs TEXT, output TEXT,  -- JSON, only when capture is on (redacted, capped)
        detail TEXT,
        cache_write_tokens INTEGER, cache_write_1h_tokens INTEGER,  -- the 1-hour part
        segments TEXT, label TEXT,
        fb_decision TEXT, fb_distance REAL, fb_verdict INTEGER,  -- the call's feedback,
        fb_score_sum REAL, fb_score_n INTEGER, fb_attributes TEXT,  -- kept by triggers
        unit TEXT,                 -- a hash of the rollout unit, never the key
        escalated INTEGER, saved_pico INTEGER)  -- an Escalate ran; what a cache hit saved
    feedback(                      -- every piece of feedback, kept (the latest counts)
        id INTEGER PRIMARY KEY, call_id TEXT, feature TEXT, kind TEXT,
        accepted INTEGER, score REAL, label TEXT, edited TEXT, edit_distance REAL,
        comment TEXT, by TEXT, attributes TEXT, created_at REAL)
        -- feature NULL: the call's record is not in the store yet (given in another process)
    call_issuers(                  -- each process's call ids: the highest counter issued, as of
        process TEXT PRIMARY KEY,  -- its writer's last write ('ag_' + 16 hex digits)
        issued INTEGER, updated_at REAL)
    shadow_calls(                  -- a shadow candidate's run on a call, never served
        call_id TEXT, feature TEXT, candidate TEXT, started_at REAL, latency REAL, model TEXT,
        input_tokens INTEGER, output_tokens INTEGER, cost_pico INTEGER, confidence REAL,
        agreed INTEGER, error TEXT, PRIMARY KEY (call_id, candidate))
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from . import _feedback_figures
from ._checks import seconds
from ._report_data import Aggregates
from ._report_sql import TEMP_TABLES, Run
from ._runtime import errors, lifecycle
from ._runtime import serialize as _serialize
from ._runtime.records import (
    CALL_RECORD_COLUMNS,
    SHADOW_COLUMNS,
    issued_argument,
    set_audit_writer,
)
from ._runtime.state import STORE_ENV, track
from ._sql import (
    ATTACH_FEEDBACK,
    CALL_RECORD_LIST,
    FEEDBACK_COLUMNS,
    SCHEMA_VERSION,
    ReviewItem,
    ReviewStatus,
    _check_claim,
    _SqlReads,
    figures_to_params,
    review_insert,
    review_params,
)
from .exceptions import ConfigError, ReviewError, StoreError
from .limits import StageFigures

__all__ = ["ReviewItem", "SQLiteStore", "Store", "configured", "open_store"]

FORK_WAIT = 2.0  # the most a fork waits for a running SQLite statement to end
OPEN_WAIT = 1.0  # the most opening waits for another process's mode switch
# Call records per INSERT statement: one SQLite step per statement, so the GIL changes hands a
# few dozen times per batch rather than twice per row (row by row, a batch under GIL contention
# held SQLite's write lock for seconds); few enough that binding them never holds the GIL long.
ROWS_PER_STATEMENT = 50


@runtime_checkable
class Store(Protocol):
    """What a durable store provides. Implementations must be safe to use from many threads.

    Example:
        >>> import aiguard
        >>> isinstance(aiguard.SQLiteStore(":memory:"), aiguard.Store)
        True
    """

    def add_review(self, item: ReviewItem) -> None:
        """Persist a new pending item; durable when this returns."""

    def get_review(self, review_id: str) -> ReviewItem | None:
        """The item with this id, or None."""

    def list_reviews(
        self, *, feature: str | None, status: ReviewStatus | None, limit: int
    ) -> list[ReviewItem]:
        """Items, oldest first, filtered by feature and status when given."""

    def count_reviews(self, *, feature: str | None, status: ReviewStatus | None) -> int:
        """How many items match."""

    def claim_review(
        self, *, reviewer: str, feature: str | None, lease: float
    ) -> ReviewItem | None:
        """Give the oldest unclaimed pending item to ``reviewer`` for ``lease`` seconds (a
        claim that lapses returns the item to the queue); None when there is none. Atomic: an
        item goes to one reviewer only."""

    def resolve_review(
        self,
        review_id: str,
        *,
        answer: Any,
        reviewer: str | None,
        note: str | None,
        feedback: dict[str, Any] | None = None,
    ) -> ReviewItem:
        """Mark a pending item resolved; ReviewError if unknown, already resolved, or claimed
        by another reviewer. ``feedback``: a feedback row written in the same transaction."""

    def close(self) -> None:
        """Release connections."""

    def add_call_records(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert call records (tuples in ``CALL_RECORD_COLUMNS`` order). Optionally with a
        keyword ``issued=(process, counter)``: the writing process's highest call counter,
        saved in the same transaction (see ``issued`` below)."""

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        """One call record by id, or None."""

    def call_records(
        self, *, feature: str | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """Call records, oldest first."""

    def add_feedback(
        self, row: dict[str, Any], *, call_record: tuple[Any, ...] | None = None
    ) -> int:
        """Insert one feedback row, durable when this returns; its id. With ``call_record``
        (a call's row, when feedback comes before the call's record was written), write that
        record too, in the same transaction, unless the store has it already."""

    def feedback_rows(
        self, *, feature: str | None = None, since: float | None = None, call_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Feedback rows, oldest first."""

    # Optional: a store whose ``add_call_records`` takes ``issued=`` and that has
    # ``issued(process) -> int | None`` (as SQLiteStore does) lets ``feedback()`` in one process
    # accept feedback on a call of another process before that call's record is written (the
    # row is kept with ``feature`` NULL until the record lands) and tell a never-issued id.
    # Optional: a store that also has ``save_stage_figures(process, rows)`` and
    # ``stage_figures(feature | None)`` (as SQLiteStore does) shares rollout-gate figures
    # between processes for ``aiguard rollout check`` and ``aiguard status``.


class SQLiteStore(_SqlReads):
    """The embedded default store: one SQLite file (or ``":memory:"``), WAL mode.

    Example:
        >>> import aiguard
        >>> store = aiguard.SQLiteStore(":memory:")
        >>> store.count_reviews(feature=None, status="pending")
        0
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float | timedelta = 5.0) -> None:
        self.path = os.fspath(path)
        self.timeout = seconds("SQLiteStore(timeout)", timeout)
        self._lock = threading.Lock()
        try:
            self._db = self._connect()
            self._migrate()
            limit = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store at {self.path!r}: {exc}") from exc
        self._inherited: list[sqlite3.Connection] = []  # parents' connections, after forks
        self._rows_per_statement = max(
            1, min(ROWS_PER_STATEMENT, limit // len(CALL_RECORD_COLUMNS))
        )
        track(self)

    def _before_fork(self) -> None:
        # No statement may be running at the fork: SQLite keeps per-file lock state in process
        # memory, and a child that inherits it mid-transaction waits on itself for ever.
        self._forking = self._lock.acquire(timeout=FORK_WAIT)

    def _after_fork_in_parent(self) -> None:
        if self.__dict__.pop("_forking", False):
            self._lock.release()

    def _after_fork(self) -> None:
        """In a forked child: a connection of its own (SQLite connections must not cross a
        fork). The parent's is left alone: closing it here could checkpoint the parent's WAL.
        An in-memory database cannot be re-opened: the child keeps its private copy."""
        self.__dict__.pop("_forking", None)  # the lock itself was re-created
        if self.path == ":memory:":
            return
        # Keep the parent's connection object alive, unused: were it garbage-collected here,
        # SQLite would close it, and closing it in the child can disturb the parent's locks.
        self._inherited.append(self._db)
        try:
            self._db = self._connect()
            self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            errors.report(f"re-opening {self!r} after fork", exc)

    def _connect(self) -> sqlite3.Connection:
        # a locked database is waited for at most `timeout` seconds, then StoreError
        return sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=self.timeout
        )

    def _migrate(self) -> None:
        db = self._db
        if self.path != ":memory:":
            # Two processes opening a new file at once can find it locked for the mode switch:
            # that, and only that, is tried again, for at most OPEN_WAIT seconds. Any other
            # failure (a read-only directory, a full disk, not a database) fails at once.
            deadline = time.monotonic() + OPEN_WAIT
            pause = 0.01
            while True:
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                        raise
                    time.sleep(pause)
                    pause = min(0.1, pause * 2)
        db.execute("PRAGMA synchronous=FULL")
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS aiguard_meta (key TEXT PRIMARY KEY, value TEXT)"
                )
                row = db.execute(
                    "SELECT value FROM aiguard_meta WHERE key = 'schema_version'"
                ).fetchone()
                version = int(row[0]) if row else 0
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"the store at {self.path!r} has schema version {version}, newer than "
                        f"this aiguard understands ({SCHEMA_VERSION}): upgrade aiguard"
                    )
                if version < 1:
                    db.execute(
                        """CREATE TABLE IF NOT EXISTS review_items (
                            id TEXT PRIMARY KEY, feature TEXT NOT NULL, call_id TEXT NOT NULL,
                            reason TEXT NOT NULL, arguments TEXT NOT NULL, model_result TEXT,
                            confidence REAL, created_at REAL NOT NULL,
                            status TEXT NOT NULL DEFAULT 'pending', answer TEXT,
                            reviewer TEXT, note TEXT, resolved_at REAL)"""
                    )
                    db.execute(
                        "CREATE INDEX IF NOT EXISTS review_items_by_feature "
                        "ON review_items (feature, status, created_at)"
                    )
                if version < 2:
                    db.execute(
                        """CREATE TABLE IF NOT EXISTS stage_figures (
                            process TEXT NOT NULL, feature TEXT NOT NULL, percent REAL NOT NULL,
                            calls INTEGER NOT NULL, errors INTEGER NOT NULL,
                            timeouts INTEGER NOT NULL, low_confidence INTEGER NOT NULL,
                            fallbacks INTEGER NOT NULL, gate TEXT, updated_at REAL NOT NULL,
                            PRIMARY KEY (process, feature, percent))"""
                    )
                if version < 3:
                    db.execute(
                        """CREATE TABLE IF NOT EXISTS call_records (
                            call_id TEXT PRIMARY KEY, feature TEXT NOT NULL,
                            started_at REAL NOT NULL, source TEXT, reason TEXT NOT NULL,
                            confidence REAL, threshold REAL, arm TEXT, rollout_percent REAL,
                            model TEXT, input_tokens INTEGER, output_tokens INTEGER,
                            cache_read_tokens INTEGER, cost_pico INTEGER, latency REAL NOT NULL,
                            model_latency REAL, trace_id TEXT, span_id TEXT, inputs TEXT,
                            output TEXT, detail TEXT)"""
                    )
                    db.execute(
                        "CREATE INDEX IF NOT EXISTS call_records_by_feature "
                        "ON call_records (feature, started_at)"
                    )
                    db.execute(
                        """CREATE TABLE IF NOT EXISTS feedback (
                            id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL,
                            feature TEXT, kind TEXT NOT NULL, accepted INTEGER, score REAL,
                            label TEXT, edited TEXT, edit_distance REAL, comment TEXT, by TEXT,
                            attributes TEXT, created_at REAL NOT NULL)"""
                    )
                    db.execute(
                        "CREATE INDEX IF NOT EXISTS feedback_by_call ON feedback (call_id, id)"
                    )
                    db.execute(
                        "CREATE INDEX IF NOT EXISTS feedback_by_feature "
                        "ON feedback (feature, created_at)"
                    )
                if version < 4:
                    db.execute("ALTER TABLE review_items ADD COLUMN claimed_by TEXT")
                    db.execute("ALTER TABLE review_items ADD COLUMN claimed_until REAL")
                if version < 5:  # rows already written keep NULL: their writes are unknown
                    db.execute("ALTER TABLE call_records ADD COLUMN cache_write_tokens INTEGER")
                    db.execute("ALTER TABLE call_records ADD COLUMN cache_write_1h_tokens INTEGER")
                if version < 6:  # segments and served label; saved drift baselines
                    db.execute("ALTER TABLE call_records ADD COLUMN segments TEXT")
                    db.execute("ALTER TABLE call_records ADD COLUMN label TEXT")
                    db.execute(
                        """CREATE TABLE IF NOT EXISTS baselines (
                            feature TEXT NOT NULL, name TEXT NOT NULL, saved_at REAL NOT NULL,
                            data TEXT NOT NULL, PRIMARY KEY (feature, name))"""
                    )
                if version < 7:  # each call's feedback figures, kept by triggers
                    for name, sqlite_type, _ in _feedback_figures.COLUMNS:
                        db.execute(f"ALTER TABLE call_records ADD COLUMN {name} {sqlite_type}")
                    for statement in _feedback_figures.sqlite_statements():
                        db.execute(statement)
                    db.execute(_feedback_figures.SQLITE_BACKFILL)
                    # who issued which call ids (feedback from other processes)
                    db.execute(
                        """CREATE TABLE IF NOT EXISTS call_issuers (
                            process TEXT PRIMARY KEY, issued INTEGER NOT NULL,
                            updated_at REAL NOT NULL)"""
                    )
                if version < 8:  # the rollout unit's hash, escalated calls, what a cache hit saved
                    db.execute("ALTER TABLE call_records ADD COLUMN unit TEXT")
                    db.execute("ALTER TABLE call_records ADD COLUMN escalated INTEGER")
                    db.execute("ALTER TABLE call_records ADD COLUMN saved_pico INTEGER")
                if version < 8:  # shadow candidates' calls
                    db.execute(
                        """CREATE TABLE IF NOT EXISTS shadow_calls (
                            call_id TEXT NOT NULL, feature TEXT NOT NULL,
                            candidate TEXT NOT NULL, started_at REAL NOT NULL,
                            latency REAL NOT NULL, model TEXT, input_tokens INTEGER,
                            output_tokens INTEGER, cost_pico INTEGER, confidence REAL,
                            agreed INTEGER, error TEXT, PRIMARY KEY (call_id, candidate))"""
                    )
                    db.execute(
                        "CREATE INDEX IF NOT EXISTS shadow_calls_by_feature "
                        "ON shadow_calls (feature, started_at)"
                    )
                if version < SCHEMA_VERSION:
                    db.execute(
                        "INSERT OR REPLACE INTO aiguard_meta VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc

    def claim_review(
        self, *, reviewer: str, feature: str | None, lease: float
    ) -> ReviewItem | None:
        now = time.time()
        where, params = self._where(feature=feature, status="pending")
        try:
            with self._lock:
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    row = db.execute(
                        f"SELECT id FROM review_items{where} AND "
                        "(claimed_until IS NULL OR claimed_until < ?) "
                        "ORDER BY created_at, id LIMIT 1",
                        (*params, now),
                    ).fetchone()
                    if row is not None:
                        db.execute(
                            "UPDATE review_items SET claimed_by = ?, claimed_until = ? "
                            "WHERE id = ?",
                            (reviewer, now + lease, row[0]),
                        )
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc
        return None if row is None else self.get_review(row[0])

    def resolve_review(
        self,
        review_id: str,
        *,
        answer: Any,
        reviewer: str | None,
        note: str | None,
        feedback: dict[str, Any] | None = None,
    ) -> ReviewItem:
        encoded = _serialize.dumps(answer)
        try:
            with self._lock:
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    row = db.execute(
                        "SELECT status, claimed_by, claimed_until FROM review_items WHERE id = ?",
                        (review_id,),
                    ).fetchone()
                    if row is None:
                        raise ReviewError(f"no review item with id {review_id!r}")
                    if row[0] != "pending":
                        raise ReviewError(f"review item {review_id!r} is already {row[0]}")
                    _check_claim(review_id, row[1], row[2], reviewer)
                    db.execute(
                        "UPDATE review_items SET status = 'resolved', answer = ?, reviewer = ?,"
                        " note = ?, resolved_at = ? WHERE id = ?",
                        (encoded, reviewer, note, time.time(), review_id),
                    )
                    if feedback is not None:
                        _insert_feedback(db, feedback)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc
        resolved = self.get_review(review_id)
        assert resolved is not None
        return resolved

    def save_stage_figures(self, process: str, rows: list[StageFigures]) -> None:
        params = figures_to_params(process, rows)
        try:
            with self._lock:
                self._db.executemany(
                    "INSERT OR REPLACE INTO stage_figures VALUES (?,?,?,?,?,?,?,?,?,?)", params
                )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc

    # -- call records and feedback ----------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction under the store's lock, rolled back if the block raises; a SQLite
        error is a StoreError naming the store."""
        try:
            with self._lock:
                db = self._db
                db.execute("BEGIN")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc

    def add_call_records(
        self, rows: list[tuple[Any, ...]], *, issued: tuple[str, int] | None = None
    ) -> None:
        """Insert call records (tuples in ``CALL_RECORD_COLUMNS`` order), in one transaction,
        with ``issued`` (the writing process and its highest call counter) when given; feedback
        that was waiting for these calls is attached to them in the same transaction."""
        if not rows and issued is None:
            return
        with self._transaction() as db:
            self._insert_rows(db, rows, issued)

    def add_shadow_calls(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert shadow calls' rows (tuples in ``SHADOW_COLUMNS`` order) in one transaction;
        a row whose call and candidate are stored already is left as it is."""
        if not rows:
            return
        marks = ",".join("?" * len(SHADOW_COLUMNS))
        with self._transaction() as db:
            db.executemany(
                f"INSERT OR IGNORE INTO shadow_calls ({', '.join(SHADOW_COLUMNS)}) "
                f"VALUES ({marks})",
                rows,
            )

    def add_audited_records(
        self,
        rows: list[tuple[Any, ...]],
        items: list[ReviewItem],
        *,
        issued: tuple[str, int] | None = None,
    ) -> int:
        """Insert call records and audit items (review items of reason ``audit``) in one
        transaction; an item whose id is stored already is left as it is. Returns how many
        items were new."""
        added = 0
        with self._transaction() as db:
            self._insert_rows(db, rows, issued)
            sql = review_insert("?", ignore=True)
            for item in items:
                added += max(0, db.execute(sql, review_params(item)).rowcount)
        return added

    def _insert_rows(
        self,
        db: sqlite3.Connection,
        rows: list[tuple[Any, ...]],
        issued: tuple[str, int] | None = None,
    ) -> None:
        if issued is not None:
            db.execute(
                "INSERT INTO call_issuers (process, issued, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (process) DO UPDATE SET issued = MAX(issued, excluded.issued), "
                "updated_at = excluded.updated_at",
                (*issued, time.time()),
            )
        if not rows:
            return
        row_marks = "(" + ",".join("?" * len(CALL_RECORD_COLUMNS)) + ")"
        per = self._rows_per_statement
        # many rows per statement: one step of SQLite per chunk, so the GIL is handed over a
        # few times per batch, not twice per row (under load, a batch written row by row held
        # the write lock for seconds)
        for i in range(0, len(rows), per):
            chunk = rows[i : i + per]
            db.execute(
                f"INSERT OR REPLACE INTO call_records ({CALL_RECORD_LIST}) VALUES "
                + ",".join([row_marks] * len(chunk)),
                list(itertools.chain.from_iterable(chunk)),
            )
        db.execute(ATTACH_FEEDBACK)

    def add_feedback(
        self, row: dict[str, Any], *, call_record: tuple[Any, ...] | None = None
    ) -> int:
        """Insert one feedback row durably (and the call's record, if given and not stored yet,
        in the same transaction); returns the feedback's id. A row without a ``feature`` is
        feedback on a call of another process whose record is not here yet: it takes its
        call's feature if the record landed meanwhile, else keeps NULL until it does."""
        with self._transaction() as db:
            if call_record is not None:
                call_marks = ",".join("?" * len(CALL_RECORD_COLUMNS))
                db.execute(
                    f"INSERT OR IGNORE INTO call_records ({CALL_RECORD_LIST}) "
                    f"VALUES ({call_marks})",
                    call_record,
                )
            row_id = _insert_feedback(db, row)
            if call_record is not None or row.get("feature") is None:
                db.execute(ATTACH_FEEDBACK)
            return row_id

    def report_aggregates(
        self,
        *,
        feature: str | None,
        since: float | None,
        splits: Sequence[str],
        timeout: float | None = None,
    ) -> Aggregates | None:
        """The report's aggregates computed by SQLite (None before SQLite 3.38, whose JSON
        functions the queries need: the report then computes them in Python)."""
        if sqlite3.sqlite_version_info < (3, 38):
            return None
        return super().report_aggregates(
            feature=feature, since=since, splits=splits, timeout=timeout
        )

    @contextlib.contextmanager
    def _session(self, timeout: float) -> Iterator[Run]:
        """The store's connection for several statements (its temporary table dropped after);
        past ``timeout`` seconds the running statement is interrupted (StoreError)."""
        deadline = time.monotonic() + timeout

        def past_deadline() -> int:
            return int(time.monotonic() > deadline)

        def run(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
            return self._db.execute(sql, params).fetchall()

        try:
            with self._lock:
                if "_ln" not in self.__dict__:
                    try:
                        self._db.execute("SELECT ln(1)")
                        self._ln = True
                    except sqlite3.OperationalError:  # built without its math functions
                        self._ln = False
                self._db.set_progress_handler(past_deadline, 10_000)
                try:
                    yield run
                finally:
                    self._db.set_progress_handler(None, 0)
                    for table in TEMP_TABLES:
                        self._db.execute(f"DROP TABLE IF EXISTS temp.{table}")
        except sqlite3.Error as exc:
            if time.monotonic() > deadline:
                raise StoreError(
                    f"SQLite store {self.path!r}: the report ran past its deadline of "
                    f"{timeout:g} s ({exc})"
                ) from exc
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"


def _insert_feedback(db: sqlite3.Connection, row: dict[str, Any]) -> int:
    """Insert one feedback row in the open transaction; its id."""
    columns = [c for c in FEEDBACK_COLUMNS if c != "id"]
    cur = db.execute(
        f"INSERT INTO feedback ({','.join(columns)}) VALUES ({','.join('?' * len(columns))})",
        tuple(row.get(c) for c in columns),
    )
    return int(cur.lastrowid or 0)


def open_store(spec: Any) -> Store:
    """A Store from a configuration value: a Store as is, ``postgresql://...`` as PostgreSQL,
    a path (or ``":memory:"``) as SQLite.

    Example:
        >>> import aiguard
        >>> aiguard.open_store(":memory:")
        SQLiteStore(':memory:')
    """
    if isinstance(spec, Store):
        return spec
    if isinstance(spec, str) and spec.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(spec)
    if isinstance(spec, str | os.PathLike):
        text = os.fspath(spec)
        if text.startswith("sqlite:///"):
            text = text[len("sqlite:///") :]
        if not text:
            raise ConfigError("store='' is invalid: give a file path, ':memory:' or a Store")
        return SQLiteStore(text)
    raise ConfigError(
        f"store={spec!r} is invalid: give a file path, ':memory:' or an aiguard.Store instance"
    )


def configured() -> Store:
    """The store configured for this process (``configure(store=...)`` or ``$AIGUARD_STORE``),
    opened on first use; ConfigError naming the fix when there is none.

    Example:
        >>> import aiguard
        >>> from aiguard.store import configured
        >>> aiguard.configure(store=":memory:")
        >>> configured()
        SQLiteStore(':memory:')
    """
    store = lifecycle.store()
    if store is None:
        raise ConfigError(
            "no store is configured for aiguard's durable data (review queue, feedback): call "
            "aiguard.configure(store='aiguard.db') or set the environment variable "
            f"{STORE_ENV}=aiguard.db"
        )
    return store  # type: ignore[no-any-return]


def _write_audited(
    store: Any,
    rows: list[tuple[Any, ...]],
    reviews: list[dict[str, Any]],
    issued: tuple[str, int] | None = None,
) -> int:
    """Write call records with audit items (the fields of each): in one transaction when the
    store has ``add_audited_records`` (SQLite, PostgreSQL), else the records, then each item
    the store does not hold yet. Returns how many items were new (a batch written again after
    an error that came after its commit counts its items once). ``issued``: the writing
    process's highest call counter, passed on to a store that takes it."""
    items = [ReviewItem(**fields) for fields in reviews]
    add = getattr(store, "add_audited_records", None)
    if add is not None:
        added = add(rows, items, **issued_argument(add, issued))
        return added if isinstance(added, int) else len(items)
    store.add_call_records(rows, **issued_argument(store.add_call_records, issued))
    added = 0
    for item in items:
        if store.get_review(item.id) is None:
            store.add_review(item)
            added += 1
    return added


lifecycle.set_opener(open_store)
set_audit_writer(_write_audited)
