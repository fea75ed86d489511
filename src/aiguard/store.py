"""Durable storage for what must not be lost: the human review queue (and, later, feedback).

:class:`Store` is the interface; :class:`SQLiteStore` is the embedded default (stdlib ``sqlite3``,
WAL mode, ``synchronous=FULL``: an item is on disk before ``add_review`` returns). The schema is
versioned in the ``aiguard_meta`` table; a database written by a newer aiguard is refused with a
clear error rather than written to.

Schema, version 4 (version 1 had ``review_items``; 2 added ``stage_figures``; 3 added
``call_records`` and ``feedback``; 4 added the claim columns of ``review_items``)::

    aiguard_meta(key TEXT PRIMARY KEY, value TEXT)          -- 'schema_version' -> '4'
    review_items(
        id TEXT PRIMARY KEY, feature TEXT, call_id TEXT, reason TEXT,
        arguments TEXT,            -- JSON, by the rule in aiguard._serialize
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
        detail TEXT)
    feedback(                      -- every piece of feedback, kept (the latest counts)
        id INTEGER PRIMARY KEY, call_id TEXT, feature TEXT, kind TEXT,
        accepted INTEGER, score REAL, label TEXT, edited TEXT, edit_distance REAL,
        comment TEXT, by TEXT, attributes TEXT, created_at REAL)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from . import _serialize
from .exceptions import ConfigError, ReviewError, StoreError
from .limits import Limits

if TYPE_CHECKING:
    from ._gates import StageFigures

__all__ = ["ReviewItem", "SQLiteStore", "Store", "open_store"]

SCHEMA_VERSION = 4

ReviewStatus = Literal["pending", "resolved"]


@dataclasses.dataclass(frozen=True, slots=True)
class ReviewItem:
    """One call waiting for (or resolved by) a human reviewer.

    Values are stored as JSON (see docs/review-queue.md for the rule): ``arguments`` maps the
    model function's parameter names to the call's values; ``answer`` is the reviewer's answer,
    the label of a labelled example.

    Example:
        >>> import aiguard
        >>> item = aiguard.ReviewItem(id="rv_1", feature="triage", call_id="ag_1",
        ...                           reason="low_confidence", arguments={"text": "hi"})
        >>> item.status
        'pending'
    """

    id: str
    feature: str
    call_id: str
    reason: str
    arguments: dict[str, Any]
    model_result: Any = None
    confidence: float | None = None
    created_at: float = 0.0
    status: ReviewStatus = "pending"
    answer: Any = None
    reviewer: str | None = None
    note: str | None = None
    resolved_at: float | None = None
    claimed_by: str | None = None
    claimed_until: float | None = None


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
        """Insert call records (tuples in ``CALL_RECORD_COLUMNS`` order)."""

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        """One call record by id, or None."""

    def call_records(
        self, *, feature: str | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """Call records, oldest first."""

    def add_feedback(self, row: dict[str, Any]) -> int:
        """Insert one feedback row, durable when this returns; its id."""

    def feedback_rows(
        self, *, feature: str | None = None, since: float | None = None, call_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Feedback rows, oldest first."""

    # Optional: a store that also has ``save_stage_figures(process, rows)`` and
    # ``stage_figures(feature | None)`` (as SQLiteStore does) shares rollout-gate figures
    # between processes for ``aiguard rollout check`` and ``aiguard status``.


_REVIEW_COLUMNS = (
    "id, feature, call_id, reason, arguments, model_result, confidence, created_at, status, "
    "answer, reviewer, note, resolved_at, claimed_by, claimed_until"
)


class _SqlReads:
    """What the SQL stores do alike: writing a review item, and every read. ``_mark`` is the
    driver's placeholder; ``_run(sql, params)`` runs one statement and returns its rows."""

    _mark = "?"

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _where(self, **conditions: Any) -> tuple[str, tuple[Any, ...]]:
        return _where(self._mark, **conditions)

    def add_review(self, item: ReviewItem) -> None:
        marks = ",".join([self._mark] * 13)
        self._run(
            f"INSERT INTO review_items ({_REVIEW_COLUMNS}) VALUES ({marks},NULL,NULL)",
            (
                item.id,
                item.feature,
                item.call_id,
                item.reason,
                _serialize.dumps(item.arguments),
                None if item.model_result is None else _serialize.dumps(item.model_result),
                item.confidence,
                item.created_at,
                item.status,
                None if item.answer is None else _serialize.dumps(item.answer),
                item.reviewer,
                item.note,
                item.resolved_at,
            ),
        )

    def get_review(self, review_id: str) -> ReviewItem | None:
        rows = self._run(
            f"SELECT {_REVIEW_COLUMNS} FROM review_items WHERE id = {self._mark}", (review_id,)
        )
        return _item(rows[0]) if rows else None

    def list_reviews(
        self, *, feature: str | None, status: ReviewStatus | None, limit: int
    ) -> list[ReviewItem]:
        where, params = self._where(feature=feature, status=status)
        rows = self._run(
            f"SELECT {_REVIEW_COLUMNS} FROM review_items{where} ORDER BY created_at, id "
            f"LIMIT {self._mark}",
            (*params, limit),
        )
        return [_item(r) for r in rows]

    def count_reviews(self, *, feature: str | None, status: ReviewStatus | None) -> int:
        where, params = self._where(feature=feature, status=status)
        return int(self._run(f"SELECT COUNT(*) FROM review_items{where}", params)[0][0])

    def stage_figures(self, feature: str | None) -> list[StageFigures]:
        where, params = self._where(feature=feature)
        rows = self._run(
            "SELECT feature, percent, calls, errors, timeouts, low_confidence, fallbacks, gate "
            f"FROM stage_figures{where} ORDER BY updated_at",
            params,
        )
        return figures_from_rows(rows)

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        rows = self._run(f"SELECT * FROM call_records WHERE call_id = {self._mark}", (call_id,))
        return dict(zip(CALL_RECORD_COLUMNS, rows[0], strict=True)) if rows else None

    def call_records(
        self, *, feature: str | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        where, params = self._where(feature=feature, since=("started_at", since))
        rows = self._run(f"SELECT * FROM call_records{where} ORDER BY started_at", params)
        return [dict(zip(CALL_RECORD_COLUMNS, r, strict=True)) for r in rows]

    def feedback_rows(
        self, *, feature: str | None = None, since: float | None = None, call_id: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = self._where(feature=feature, since=("created_at", since), call_id=call_id)
        rows = self._run(f"SELECT * FROM feedback{where} ORDER BY id", params)
        return [dict(zip(FEEDBACK_COLUMNS, r, strict=True)) for r in rows]


class SQLiteStore(_SqlReads):
    """The embedded default store: one SQLite file (or ``":memory:"``), WAL mode.

    Example:
        >>> import aiguard
        >>> store = aiguard.SQLiteStore(":memory:")
        >>> store.count_reviews(feature=None, status="pending")
        0
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store at {self.path!r}: {exc}") from exc

    def _migrate(self) -> None:
        db = self._db
        if self.path != ":memory:":
            # Two processes opening a new file at once can find it locked for the mode switch.
            for attempt in range(50):
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 49:
                        raise
                    time.sleep(0.01 * (attempt + 1))
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
                        columns = [c for c in FEEDBACK_COLUMNS if c != "id"]
                        db.execute(
                            f"INSERT INTO feedback ({','.join(columns)}) "
                            f"VALUES ({','.join('?' * len(columns))})",
                            tuple(feedback.get(c) for c in columns),
                        )
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

    def add_call_records(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert call records (tuples in ``CALL_RECORD_COLUMNS`` order), in one transaction."""
        if not rows:
            return
        marks = ",".join("?" * len(CALL_RECORD_COLUMNS))
        try:
            with self._lock:
                db = self._db
                db.execute("BEGIN")
                try:
                    db.executemany(f"INSERT OR REPLACE INTO call_records VALUES ({marks})", rows)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc

    def add_feedback(self, row: dict[str, Any]) -> int:
        """Insert one feedback row durably; returns its id."""
        columns = [c for c in FEEDBACK_COLUMNS if c != "id"]
        marks = ",".join("?" * len(columns))
        try:
            with self._lock:
                cur = self._db.execute(
                    f"INSERT INTO feedback ({','.join(columns)}) VALUES ({marks})",
                    tuple(row.get(c) for c in columns),
                )
                return int(cur.lastrowid or 0)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"


CALL_RECORD_COLUMNS = (
    "call_id", "feature", "started_at", "source", "reason", "confidence", "threshold", "arm",
    "rollout_percent", "model", "input_tokens", "output_tokens", "cache_read_tokens",
    "cost_pico", "latency", "model_latency", "trace_id", "span_id", "inputs", "output", "detail",
)  # fmt: skip
FEEDBACK_COLUMNS = (
    "id", "call_id", "feature", "kind", "accepted", "score", "label", "edited",
    "edit_distance", "comment", "by", "attributes", "created_at",
)  # fmt: skip


def _where(mark: str = "?", **conditions: Any) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause (always present, so callers can add ``AND ...``) and its parameters:
    ``name=value`` is an equality, ``name=(column, value)`` a lower bound; None is no condition.
    ``mark`` is the driver's placeholder (``?`` for sqlite3, ``%s`` for psycopg)."""
    clauses, params = ["1 = 1"], []
    for name, value in conditions.items():
        if isinstance(value, tuple):
            column, value = value
            if value is not None:
                clauses.append(f"{column} >= {mark}")
                params.append(value)
        elif value is not None:
            clauses.append(f"{name} = {mark}")
            params.append(value)
    return " WHERE " + " AND ".join(clauses), tuple(params)


def figures_to_params(process: str, rows: list[StageFigures]) -> list[tuple[Any, ...]]:
    """``stage_figures`` rows for this process's figures, stamped now."""
    now = time.time()
    return [
        (
            process,
            r.feature,
            r.percent,
            r.calls,
            r.errors,
            r.timeouts,
            r.low_confidence,
            r.fallbacks,
            None if r.gate is None else json.dumps(dataclasses.asdict(r.gate)),
            now,
        )
        for r in rows
    ]


def figures_from_rows(rows: list[tuple[Any, ...]]) -> list[StageFigures]:
    """StageFigures from ``stage_figures`` rows (feature, percent, five counts, gate JSON)."""
    from ._gates import StageFigures

    return [
        StageFigures(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            None if r[7] is None else Limits(**json.loads(r[7])),
        )
        for r in rows
    ]


def _check_claim(
    review_id: str, claimed_by: str | None, claimed_until: float | None, reviewer: str | None
) -> None:
    """A live claim by another reviewer forbids resolving the item."""
    if (
        claimed_by is not None
        and claimed_until is not None
        and claimed_until >= time.time()
        and claimed_by != reviewer
    ):
        raise ReviewError(
            f"review item {review_id!r} is claimed by {claimed_by!r} until "
            f"{time.strftime('%H:%M:%S', time.localtime(claimed_until))}"
        )


def _item(row: tuple[Any, ...]) -> ReviewItem:
    return ReviewItem(
        id=row[0],
        feature=row[1],
        call_id=row[2],
        reason=row[3],
        arguments=_serialize.loads(row[4]),
        model_result=_serialize.loads(row[5]),
        confidence=row[6],
        created_at=row[7],
        status=row[8],
        answer=_serialize.loads(row[9]),
        reviewer=row[10],
        note=row[11],
        resolved_at=row[12],
        claimed_by=row[13] if len(row) > 13 else None,
        claimed_until=row[14] if len(row) > 14 else None,
    )


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
