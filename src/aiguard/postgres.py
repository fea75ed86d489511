"""The PostgreSQL store: one review queue, feedback table and call-record table for a fleet.

Install the extra (``pip install 'aiguard[postgres]'``, psycopg 3) and configure
``aiguard.configure(store="postgresql://user@host/db")``. It implements the same :class:`Store`
interface as the SQLite store and passes the same test suite. Several replicas and reviewers use
it at once: a review item is claimed by one reviewer only (``FOR UPDATE SKIP LOCKED``), a claim
that lapses returns the item to the queue. aiguard creates and migrates its tables (versioned in
``aiguard_meta``, under an advisory lock so replicas starting together migrate once); a database
at a newer schema version than this aiguard is refused.

The tables live in a PostgreSQL schema of their own: ``aiguard`` by default, another one with
``PostgresStore(url, schema=...)`` or the URL's ``?schema=`` parameter (so that
``configure(store=...)``, ``$AIGUARD_STORE`` and the CLI's ``--store`` can name it). Versions
before this one put them in ``public``: when the schema is not named, ``aiguard`` holds no
tables of aiguard and ``public`` does, the store keeps using ``public`` and logs a warning
naming the tables and the statements that move them (nothing is moved behind your back).

When the server cannot be reached, ``feedback()`` and review operations raise
:class:`aiguard.StoreError` (never pretend), and call records wait in their bounded queue to be
retried.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import _feedback_figures
from ._checks import seconds
from ._report_sql import Run
from ._runtime import errors as _errors
from ._runtime import serialize as _serialize
from ._runtime.records import CALL_RECORD_COLUMNS, SHADOW_COLUMNS
from ._runtime.state import track
from ._sql import (
    _REVIEW_COLUMNS,
    ATTACH_FEEDBACK,
    CALL_RECORD_LIST,
    FEEDBACK_COLUMNS,
    MIGRATION_TIMEOUT,
    SCHEMA_VERSION,
    ReviewItem,
    _check_claim,
    _item,
    _SqlReads,
    figures_to_params,
    review_insert,
    review_params,
)
from .exceptions import ConfigError, ReviewError, StoreError

__all__ = ["DEFAULT_SCHEMA", "PostgresStore", "schema_of"]

logger = logging.getLogger("aiguard")

DEFAULT_SCHEMA = "aiguard"
"""The PostgreSQL schema of aiguard's tables when none is named."""
LEGACY_SCHEMA = "public"  # where versions before the default schema put the tables

_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

_TABLES = [
    """CREATE TABLE IF NOT EXISTS review_items (
        id TEXT PRIMARY KEY, feature TEXT NOT NULL, call_id TEXT NOT NULL, reason TEXT NOT NULL,
        arguments TEXT NOT NULL, model_result TEXT, confidence DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
        answer TEXT, reviewer TEXT, note TEXT, resolved_at DOUBLE PRECISION,
        claimed_by TEXT, claimed_until DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS review_items_by_feature "
    "ON review_items (feature, status, created_at)",
    """CREATE TABLE IF NOT EXISTS stage_figures (
        process TEXT NOT NULL, feature TEXT NOT NULL, percent DOUBLE PRECISION NOT NULL,
        calls BIGINT NOT NULL, errors BIGINT NOT NULL, timeouts BIGINT NOT NULL,
        low_confidence BIGINT NOT NULL, fallbacks BIGINT NOT NULL, gate TEXT,
        updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (process, feature, percent))""",
    """CREATE TABLE IF NOT EXISTS call_records (
        call_id TEXT PRIMARY KEY, feature TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL,
        source TEXT, reason TEXT NOT NULL, confidence DOUBLE PRECISION,
        threshold DOUBLE PRECISION, arm TEXT, rollout_percent DOUBLE PRECISION, model TEXT,
        input_tokens BIGINT, output_tokens BIGINT, cache_read_tokens BIGINT, cost_pico BIGINT,
        latency DOUBLE PRECISION NOT NULL, model_latency DOUBLE PRECISION, trace_id TEXT,
        span_id TEXT, inputs TEXT, output TEXT, detail TEXT, cache_write_tokens BIGINT,
        cache_write_1h_tokens BIGINT, segments TEXT, label TEXT)""",
    # version 5: the cache-write columns, on a table created before (its rows keep NULL)
    "ALTER TABLE call_records ADD COLUMN IF NOT EXISTS cache_write_tokens BIGINT",
    "ALTER TABLE call_records ADD COLUMN IF NOT EXISTS cache_write_1h_tokens BIGINT",
    # version 6: segments and the served label (rows written before keep NULL), drift baselines
    "ALTER TABLE call_records ADD COLUMN IF NOT EXISTS segments TEXT",
    "ALTER TABLE call_records ADD COLUMN IF NOT EXISTS label TEXT",
    """CREATE TABLE IF NOT EXISTS baselines (
        feature TEXT NOT NULL, name TEXT NOT NULL, saved_at DOUBLE PRECISION NOT NULL,
        data TEXT NOT NULL, PRIMARY KEY (feature, name))""",
    "CREATE INDEX IF NOT EXISTS call_records_by_feature ON call_records (feature, started_at)",
    """CREATE TABLE IF NOT EXISTS feedback (
        id BIGSERIAL PRIMARY KEY, call_id TEXT NOT NULL, feature TEXT, kind TEXT NOT NULL,
        accepted INTEGER, score DOUBLE PRECISION, label TEXT, edited TEXT,
        edit_distance DOUBLE PRECISION, comment TEXT, by TEXT, attributes TEXT,
        created_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS feedback_by_call ON feedback (call_id, id)",
    "CREATE INDEX IF NOT EXISTS feedback_by_feature ON feedback (feature, created_at)",
    # version 7: who issued which call ids (feedback from other processes)
    """CREATE TABLE IF NOT EXISTS call_issuers (
        process TEXT PRIMARY KEY, issued BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
    # version 8: shadow candidates' calls
    """CREATE TABLE IF NOT EXISTS shadow_calls (
        call_id TEXT NOT NULL, feature TEXT NOT NULL, candidate TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, latency DOUBLE PRECISION NOT NULL, model TEXT,
        input_tokens BIGINT, output_tokens BIGINT, cost_pico BIGINT,
        confidence DOUBLE PRECISION, agreed INTEGER, error TEXT,
        PRIMARY KEY (call_id, candidate))""",
    "CREATE INDEX IF NOT EXISTS shadow_calls_by_feature ON shadow_calls (feature, started_at)",
]

_VERSION_8 = [
    # the rollout unit's hash, escalated calls, and what a cache hit saved (rows written before
    # keep NULL); after the feedback figures of version 7, as in SQLite
    "ALTER TABLE call_records ADD COLUMN IF NOT EXISTS unit TEXT",
    "ALTER TABLE call_records ADD COLUMN IF NOT EXISTS escalated INTEGER",
    "ALTER TABLE call_records ADD COLUMN IF NOT EXISTS saved_pico BIGINT",
]


class PostgresStore(_SqlReads):
    """A :class:`aiguard.Store` on PostgreSQL (psycopg 3, a small connection pool).

    ``schema``: the PostgreSQL schema of aiguard's tables (created if missing); default: the
    URL's ``schema`` query parameter (``postgresql://host/db?schema=ops``), else ``aiguard``.
    With neither, tables an earlier version left in ``public`` (and none in ``aiguard``) keep
    being used, with a warning saying how to move them. Naming two different schemas, or a
    schema that is not a plain identifier, is a ConfigError.
    Every operation has a deadline of ``timeout`` seconds (default 5) to get a connection, and
    another to run: connect, statement and transaction timeouts, TCP keepalives, and a watchdog
    that hangs up a connection stuck past it (a partitioned network). Past a deadline the
    operation raises StoreError; it never blocks its caller for longer.

    Example:
        >>> import aiguard
        >>> from aiguard.postgres import DEFAULT_SCHEMA
        >>> DEFAULT_SCHEMA
        'aiguard'
        >>> # aiguard.configure(store="postgresql://app@db.internal/app?schema=ops")
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 8,
        timeout: float | timedelta = 5.0,
    ) -> None:
        timeout = seconds("PostgresStore(timeout)", timeout)
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError(
                "the PostgreSQL store needs psycopg 3: pip install 'aiguard[postgres]'"
            ) from exc
        conninfo, in_url = schema_of(url)
        if schema is not None:
            _check_schema(f"PostgresStore(schema={schema!r})", schema)
            if in_url is not None and in_url != schema:
                raise ConfigError(
                    f"PostgresStore(schema={schema!r}) differs from the URL's schema={in_url!r}: "
                    "name the schema once"
                )
        named = schema if schema is not None else in_url
        self.url = url
        self.schema: str = named if named is not None else DEFAULT_SCHEMA
        self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        try:
            from psycopg_pool import PoolTimeout

            self._errors = (psycopg.Error, PoolTimeout)
        except ImportError:  # pragma: no cover
            pass
        self._timeout = timeout

        def new_pool() -> Any:
            return ConnectionPool(
                conninfo,
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
                kwargs=_connection_settings(self.schema, timeout),
                open=False,
                name="aiguard",
            )

        self._new_pool = new_pool
        self._lock = threading.Lock()
        self._pool_now: Any = new_pool()
        try:
            self._pool_now.open(wait=True, timeout=timeout)
            if named is None:
                self._find_earlier_tables()
            self._migrate()
        except self._errors as exc:
            self._pool_now.close()
            raise StoreError(f"cannot open the PostgreSQL store at {_safe(url)}: {exc}") from exc
        except BaseException:
            self._pool_now.close()
            raise
        track(self)

    @contextlib.contextmanager
    def _conn(self, work: float | None = None) -> Iterator[Any]:
        """A pooled connection whose use has a deadline: ``timeout`` seconds after it was asked
        for (the wait for it included; ``work`` seconds more when given), a watchdog shuts its
        socket, so a statement stuck on a partitioned network fails (StoreError) instead of
        blocking its caller; the pool then discards the connection."""
        deadline = time.monotonic() + self._timeout + (work or 0.0)
        with self._pool.connection(timeout=self._timeout) as conn:
            left = max(0.05, deadline - time.monotonic())
            watchdog = threading.Timer(left, _hang_up, args=(conn,))
            watchdog.daemon = True
            watchdog.start()
            try:
                yield conn
            finally:
                watchdog.cancel()

    @property
    def _pool(self) -> Any:
        """The connection pool of this process (a forked child opens its own on first use)."""
        pool = self._pool_now
        if pool is None:
            with self._lock:
                if self._pool_now is None:
                    pool = self._new_pool()
                    try:
                        pool.open(wait=True, timeout=self._timeout)
                    except self._errors as exc:
                        pool.close()
                        raise self._fail(exc) from exc
                    self._pool_now = pool
                pool = self._pool_now
        return pool

    def _after_fork(self) -> None:
        # The parent's pool is the parent's: its connections' sockets are shared with it (closing
        # them here would end the parent's sessions) and its worker threads are not here.
        self._pool_now = None

    _mark = "%s"
    _dialect = "postgres"

    def _find_earlier_tables(self) -> None:
        """With no schema named: keep using the tables an earlier version put in ``public``
        when ``aiguard`` has none (a warning says how to move them); warn when both have some
        (those in ``public`` are not read)."""
        with self._conn() as conn:
            found = {
                row[0]: row[1]
                for row in conn.execute(
                    "SELECT table_schema, array_agg(table_name::text ORDER BY table_name) "
                    "FROM information_schema.tables WHERE table_schema IN (%s, %s) "
                    "AND table_name = ANY(%s) GROUP BY table_schema",
                    (DEFAULT_SCHEMA, LEGACY_SCHEMA, list(TABLE_NAMES)),
                ).fetchall()
            }
        earlier = found.get(LEGACY_SCHEMA, [])
        if "aiguard_meta" not in earlier:
            return
        names = ", ".join(earlier)
        moves = " ".join(
            f"ALTER TABLE {LEGACY_SCHEMA}.{t} SET SCHEMA {DEFAULT_SCHEMA};" for t in earlier
        )
        if "aiguard_meta" in found.get(DEFAULT_SCHEMA, []):
            _errors.warn_once(
                f"postgres-earlier-tables:{_safe(self.url)}",
                "aiguard: the PostgreSQL store %s uses its tables in schema %s; schema %s also "
                "holds aiguard tables from an earlier version (%s), which are not read: move "
                "their rows into schema %s, or drop them",
                _safe(self.url), DEFAULT_SCHEMA, LEGACY_SCHEMA, names, DEFAULT_SCHEMA,
            )  # fmt: skip
            return
        _errors.warn_once(
            f"postgres-earlier-tables:{_safe(self.url)}",
            "aiguard: the PostgreSQL store %s keeps using the tables an earlier version of "
            "aiguard created in schema %s (%s); they belong in schema %s now. To move them, "
            "with every process of the fleet stopped: BEGIN; CREATE SCHEMA IF NOT EXISTS %s; %s "
            "COMMIT; or keep them where they are, and this warning away, by naming the schema: "
            "?schema=%s in the store's URL",
            _safe(self.url), LEGACY_SCHEMA, names, DEFAULT_SCHEMA, DEFAULT_SCHEMA, moves,
            LEGACY_SCHEMA,
        )  # fmt: skip
        self.schema = LEGACY_SCHEMA
        pool, self._pool_now = self._pool_now, self._new_pool()
        pool.close()
        self._pool_now.open(wait=True, timeout=self._timeout)

    def __repr__(self) -> str:
        return f"PostgresStore({_safe(self.url)!r}, schema={self.schema!r})"

    # -- plumbing ----------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> StoreError:
        return StoreError(f"PostgreSQL store {_safe(self.url)}: {exc}")

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._conn() as conn, conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
        except self._errors as exc:
            raise self._fail(exc) from exc

    @contextlib.contextmanager
    def _session(self, timeout: float) -> Iterator[Run]:
        """One connection, one transaction, for several statements (the report's temporary
        table is dropped at its end): they may take ``timeout`` seconds in all, or the store's
        own timeout if longer; then StoreError."""
        work = max(timeout, self._timeout)
        ms = max(1, int(work * 1000))
        try:
            with self._conn(work) as conn, conn.transaction(), conn.cursor() as cur:
                cur.execute(f"SET LOCAL statement_timeout = {ms}")
                cur.execute(f"SET LOCAL idle_in_transaction_session_timeout = {ms}")
                # compiling a report's expressions took longer than running them; its groups
                # are hashed (in memory, else in batches on disk), never sorted: the planner
                # has no statistics on the grouped expressions and guessed millions of groups
                # (a sort of 5 million calls spilled to disk: 15 s instead of 3.4), and the
                # calls are read by parallel workers
                cur.execute("SET LOCAL jit = off")
                cur.execute("SET LOCAL work_mem = '64MB'")
                cur.execute("SET LOCAL enable_sort = off")
                cur.execute("SET LOCAL enable_incremental_sort = off")
                cur.execute("SET LOCAL enable_nestloop = off")
                cur.execute("SET LOCAL parallel_setup_cost = 0")
                cur.execute("SET LOCAL parallel_tuple_cost = 0")

                def run(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
                    cur.execute(sql, params)
                    return cur.fetchall() if cur.description is not None else []

                yield run
        except self._errors as exc:
            raise self._fail(exc) from exc

    def _migrate(self) -> None:
        with self._conn(MIGRATION_TIMEOUT) as conn, conn.transaction():
            ms = int(max(MIGRATION_TIMEOUT, self._timeout) * 1000)
            conn.execute(f"SET LOCAL statement_timeout = {ms}")
            conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {ms}")
            # the lock first: replicas creating the schema at once would collide in the catalog
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"aiguard:{self.schema}",))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS aiguard_meta (key TEXT PRIMARY KEY, value TEXT)"
            )
            row = conn.execute(
                "SELECT value FROM aiguard_meta WHERE key = 'schema_version'"
            ).fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the PostgreSQL store {_safe(self.url)} (schema {self.schema}) has schema "
                    f"version {version}, newer than this aiguard understands ({SCHEMA_VERSION}): "
                    "upgrade aiguard"
                )
            if version < SCHEMA_VERSION:
                for statement in _TABLES:
                    conn.execute(statement)
                # version 7: each call's feedback figures, kept by triggers
                for statement in _feedback_figures.postgres_statements(self.schema):
                    conn.execute(statement)
                if version < 7:
                    conn.execute(_feedback_figures.POSTGRES_BACKFILL)
                for statement in _VERSION_8:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO aiguard_meta VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (str(SCHEMA_VERSION),),
                )

    # -- review queue ------------------------------------------------------------------------

    def claim_review(
        self, *, reviewer: str, feature: str | None, lease: float
    ) -> ReviewItem | None:
        now = time.time()
        where, params = self._where(feature=feature, status="pending")
        rows = self._run(
            f"UPDATE review_items SET claimed_by = %s, claimed_until = %s WHERE id = ("
            f"SELECT id FROM review_items{where} AND (claimed_until IS NULL OR claimed_until < %s)"
            " ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) "
            f"RETURNING {_REVIEW_COLUMNS}",
            (reviewer, now + lease, *params, now),
        )
        return _item(rows[0]) if rows else None

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
            with self._conn() as conn, conn.transaction():
                row = conn.execute(
                    "SELECT status, claimed_by, claimed_until FROM review_items WHERE id = %s "
                    "FOR UPDATE",
                    (review_id,),
                ).fetchone()
                if row is None:
                    raise ReviewError(f"no review item with id {review_id!r}")
                if row[0] != "pending":
                    raise ReviewError(f"review item {review_id!r} is already {row[0]}")
                _check_claim(review_id, row[1], row[2], reviewer)
                updated = conn.execute(
                    "UPDATE review_items SET status = 'resolved', answer = %s, reviewer = %s, "
                    f"note = %s, resolved_at = %s WHERE id = %s RETURNING {_REVIEW_COLUMNS}",
                    (encoded, reviewer, note, time.time(), review_id),
                ).fetchone()
                if feedback is not None:
                    columns = [c for c in FEEDBACK_COLUMNS if c != "id"]
                    conn.execute(
                        f"INSERT INTO feedback ({','.join(columns)}) "
                        f"VALUES ({','.join(['%s'] * len(columns))})",
                        tuple(feedback.get(c) for c in columns),
                    )
        except self._errors as exc:
            raise self._fail(exc) from exc
        assert updated is not None
        return _item(updated)

    # -- rollout figures ---------------------------------------------------------------------

    def save_stage_figures(self, process: str, rows: list[Any]) -> None:
        try:
            with self._conn() as conn, conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO stage_figures VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT (process, feature, percent) DO UPDATE SET calls = EXCLUDED.calls, "
                    "errors = EXCLUDED.errors, timeouts = EXCLUDED.timeouts, "
                    "low_confidence = EXCLUDED.low_confidence, fallbacks = EXCLUDED.fallbacks, "
                    "gate = EXCLUDED.gate, updated_at = EXCLUDED.updated_at",
                    figures_to_params(process, rows),
                )
        except self._errors as exc:
            raise self._fail(exc) from exc

    # -- call records and feedback -----------------------------------------------------------

    def add_call_records(
        self, rows: list[tuple[Any, ...]], *, issued: tuple[str, int] | None = None
    ) -> None:
        """Insert call records in one transaction, with ``issued`` (the writing process and
        its highest call counter) when given; feedback that was waiting for these calls is
        attached to them in the same transaction."""
        if not rows and issued is None:
            return
        try:
            with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
                self._insert_rows(cur, rows, issued)
        except self._errors as exc:
            raise self._fail(exc) from exc

    def _attach_lock(self, cur: Any, *, exclusive: bool) -> None:
        """This schema's lock between writing call records (shared: writers never wait on each
        other) and writing feedback whose call is not recorded yet (exclusive): whichever
        commits second sees the other's rows, so such feedback is never left unattached
        beside its call's record (READ COMMITTED alone lets each miss the other)."""
        kind = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        cur.execute(f"SELECT {kind}(hashtext(%s))", (f"aiguard:{self.schema}:feedback",))

    def _insert_rows(
        self, cur: Any, rows: list[tuple[Any, ...]], issued: tuple[str, int] | None
    ) -> None:
        """Call records, this process's issued counter, and the feedback waiting for them, in
        the open transaction."""
        if issued is not None:
            cur.execute(
                "INSERT INTO call_issuers (process, issued, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (process) DO UPDATE SET "
                "issued = GREATEST(call_issuers.issued, EXCLUDED.issued), "
                "updated_at = EXCLUDED.updated_at",
                (*issued, time.time()),
            )
        if not rows:
            return
        self._attach_lock(cur, exclusive=False)
        marks = ",".join(["%s"] * len(CALL_RECORD_COLUMNS))
        cur.executemany(
            f"INSERT INTO call_records ({CALL_RECORD_LIST}) VALUES ({marks}) "
            "ON CONFLICT (call_id) DO NOTHING",
            rows,
        )
        cur.execute(ATTACH_FEEDBACK)

    def add_shadow_calls(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert shadow calls' rows (tuples in ``SHADOW_COLUMNS`` order) in one transaction;
        a row whose call and candidate are stored already is left as it is."""
        if not rows:
            return
        marks = ",".join(["%s"] * len(SHADOW_COLUMNS))
        try:
            with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO shadow_calls ({', '.join(SHADOW_COLUMNS)}) VALUES ({marks}) "
                    "ON CONFLICT (call_id, candidate) DO NOTHING",
                    rows,
                )
        except self._errors as exc:
            raise self._fail(exc) from exc

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
        try:
            with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
                self._insert_rows(cur, rows, issued)
                sql = review_insert("%s", ignore=True)
                for item in items:
                    cur.execute(sql, review_params(item))
                    added += max(0, cur.rowcount)
        except self._errors as exc:
            raise self._fail(exc) from exc
        return added

    def add_feedback(
        self, row: dict[str, Any], *, call_record: tuple[Any, ...] | None = None
    ) -> int:
        """Insert one feedback row (and the call's record, if given and not stored yet) in one
        transaction; returns the feedback's id. A row without a ``feature`` is feedback on a
        call of another process whose record is not here yet: it takes its call's feature if
        the record landed meanwhile, else keeps NULL until it does."""
        columns = [c for c in FEEDBACK_COLUMNS if c != "id"]
        marks = ",".join(["%s"] * len(columns))
        try:
            with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
                waiting = row.get("feature") is None
                if waiting:
                    self._attach_lock(cur, exclusive=True)
                if call_record is not None:
                    self._insert_rows(cur, [call_record], None)
                cur.execute(
                    f"INSERT INTO feedback ({','.join(columns)}) VALUES ({marks}) RETURNING id",
                    tuple(row.get(c) for c in columns),
                )
                found = cur.fetchone()
                if waiting:
                    cur.execute(ATTACH_FEEDBACK)
        except self._errors as exc:
            raise self._fail(exc) from exc
        return int(found[0]) if found else 0

    def close(self) -> None:
        pool, self._pool_now = self._pool_now, None
        if pool is not None:
            pool.close()


def _connection_settings(schema: str, timeout: float) -> dict[str, Any]:
    """libpq settings that give every network operation a deadline: the connection (connect
    timeout), the statements and transactions (server-side timeouts), and a dead or silent peer
    (TCP keepalives and TCP_USER_TIMEOUT)."""
    ms = max(1, int(timeout * 1000))
    return {
        "options": (
            f"-c search_path={schema} -c statement_timeout={ms} "
            f"-c idle_in_transaction_session_timeout={ms}"
        ),
        "connect_timeout": max(1, math.ceil(timeout)),
        "keepalives": 1,
        "keepalives_idle": max(1, math.ceil(timeout)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": ms,
    }


def _hang_up(conn: Any) -> None:
    """Shut the socket of a connection whose operation ran past its deadline (from the
    watchdog's thread): the blocked call then fails at once."""
    try:
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # already closed, or never opened: nothing is stuck on it
        return


TABLE_NAMES = (
    "aiguard_meta",
    *sorted(set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", "\n".join(_TABLES)))),
)
"""aiguard's tables in a PostgreSQL schema."""


def schema_of(url: str) -> tuple[str, str | None]:
    """The URL without aiguard's ``schema`` query parameter, and that parameter (None when
    absent); ConfigError when it is not a plain identifier or given twice.

    Example:
        >>> from aiguard.postgres import schema_of
        >>> schema_of("postgresql://app@db/app?schema=ops&connect_timeout=3")
        ('postgresql://app@db/app?connect_timeout=3', 'ops')
    """
    if not isinstance(url, str) or "?" not in url:
        return url, None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = [v for k, v in query if k == "schema"]
    if not given:
        return url, None
    if len(given) > 1:
        raise ConfigError(
            f"store URL {_safe(url)!r}: schema is given {len(given)} times ({given!r}): "
            "give it once"
        )
    _check_schema(f"store URL {_safe(url)!r}: schema={given[0]!r}", given[0])
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), given[0]


def _check_schema(where: str, schema: Any) -> None:
    if not isinstance(schema, str) or not _SCHEMA.match(schema):
        raise ConfigError(
            f"{where} is invalid: give a plain identifier (a letter or _, then letters, "
            "digits or _, 63 characters at most), e.g. 'aiguard'"
        )


def _safe(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
