"""What the SQL stores (SQLite, PostgreSQL) share: the review item, the schema version, the
reads and the row conversions. Both store modules import this one; only ``store.open_store``
imports ``postgres`` (inside the function, for a ``postgresql://`` URL)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any, Literal

from ._report_data import Aggregates, Dialect
from ._report_sql import Run, in_sql
from ._runtime import serialize as _serialize
from ._runtime.records import CALL_RECORD_COLUMNS
from .exceptions import ReviewError
from .limits import Limits, StageFigures

SCHEMA_VERSION = 8

ATTACH_FEEDBACK = (
    "UPDATE feedback SET feature = (SELECT c.feature FROM call_records c "
    "WHERE c.call_id = feedback.call_id) WHERE feature IS NULL AND EXISTS "
    "(SELECT 1 FROM call_records c WHERE c.call_id = feedback.call_id)"
)
"""Give the feedback rows whose call was not recorded yet (``feature`` NULL: written by another
process than the call's, before the call's record landed) their call's feature, for the calls
recorded now. Run in the transaction that writes call records, so such feedback counts from the
moment its call's record exists. Found through the index on (feature, created_at), where they
sort first: with none waiting, this costs one index probe."""

REPORT_TIMEOUT = 300.0
"""Seconds a report's statements may take together, unless the store's own deadline is longer:
a report reads the whole window, which takes longer than a store's other operations."""

MIGRATION_TIMEOUT = 600.0
"""Seconds a PostgreSQL store's upgrade may take: the upgrade to schema version 7 writes each
call's feedback figures once (78 s for 1.75 million calls with feedback, on 2 busy cores)."""

CALL_RECORD_LIST = ", ".join(CALL_RECORD_COLUMNS)
"""The call-record columns by name, in row order: every read and write names them, so a
table's own column order never matters."""

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


_REVIEW_COLUMNS = (
    "id, feature, call_id, reason, arguments, model_result, confidence, created_at, status, "
    "answer, reviewer, note, resolved_at, claimed_by, claimed_until"
)


class _SqlReads:
    """What the SQL stores do alike: writing a review item, and every read. ``_mark`` is the
    driver's placeholder; ``_run(sql, params)`` runs one statement and returns its rows."""

    _mark = "?"
    _dialect: Dialect = "sqlite"

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _session(self, timeout: float) -> contextlib.AbstractContextManager[Run]:
        """Several statements on one connection, within ``timeout`` seconds in all."""
        raise NotImplementedError

    def _where(self, **conditions: Any) -> tuple[str, tuple[Any, ...]]:
        return _where(self._mark, **conditions)

    def add_review(self, item: ReviewItem) -> None:
        self._run(review_insert(self._mark), review_params(item))

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
        rows = self._run(
            f"SELECT {CALL_RECORD_LIST} FROM call_records WHERE call_id = {self._mark}", (call_id,)
        )
        return dict(zip(CALL_RECORD_COLUMNS, rows[0], strict=True)) if rows else None

    def call_records(
        self, *, feature: str | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        where, params = self._where(feature=feature, since=("started_at", since))
        rows = self._run(
            f"SELECT {CALL_RECORD_LIST} FROM call_records{where} ORDER BY started_at", params
        )
        return [dict(zip(CALL_RECORD_COLUMNS, r, strict=True)) for r in rows]

    def feedback_rows(
        self, *, feature: str | None = None, since: float | None = None, call_id: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = self._where(feature=feature, since=("created_at", since), call_id=call_id)
        rows = self._run(f"SELECT * FROM feedback{where} ORDER BY id", params)
        return [dict(zip(FEEDBACK_COLUMNS, r, strict=True)) for r in rows]

    def issued(self, process: str) -> int | None:
        """The highest call counter ``process`` (the ``ag_<16 hex>`` part of its call ids) had
        issued when its record writer last wrote to this store; None when it never did."""
        rows = self._run(
            f"SELECT issued FROM call_issuers WHERE process = {self._mark}", (process,)
        )
        return int(rows[0][0]) if rows else None

    def report_aggregates(
        self,
        *,
        feature: str | None,
        since: float | None,
        splits: Sequence[str],
        timeout: float | None = None,
    ) -> Aggregates | None:
        """The report's aggregates computed by the database, over the calls started from
        ``since`` (all when None) and the feedback on them; None when this database cannot.
        Its statements run on one connection within ``timeout`` seconds (default
        ``REPORT_TIMEOUT``), then StoreError."""
        with self._session(REPORT_TIMEOUT if timeout is None else timeout) as run:
            return in_sql(run, self._dialect, feature, since, splits, ln=self._ln)

    _ln = True  # the database has ln()


def review_insert(mark: str, *, ignore: bool = False) -> str:
    """The INSERT of one review item (``review_params`` order); ``ignore``: an item whose id is
    stored already is left as it is (an audit item written again on a retry)."""
    marks = ",".join([mark] * 13)
    insert = "INSERT OR IGNORE INTO" if ignore and mark == "?" else "INSERT INTO"
    conflict = " ON CONFLICT (id) DO NOTHING" if ignore and mark != "?" else ""
    return f"{insert} review_items ({_REVIEW_COLUMNS}) VALUES ({marks},NULL,NULL){conflict}"


def review_params(item: ReviewItem) -> tuple[Any, ...]:
    """A review item's values for ``review_insert``."""
    return (
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
    )


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
