"""The queries behind calibration, tuning, audits and drift: counts aggregated in the database.

Each query reads one feature's call records in a window and the feedback of those calls only,
and returns a few rows of counts (per confidence bin, per 0.01 bucket, per 0.001 cell, per
label). One SQL text serves SQLite and PostgreSQL, except the floor of a number (SQLite's CAST
truncates, which is the floor of a confidence in [0, 1]; PostgreSQL's CAST rounds, so FLOOR
comes first).

Evidence of correctness of a model's answer (calls with ``source = 'model'`` and a confidence):
the latest decision (the feedback row with the highest id among ``accepted``, ``edited``,
``rejected``, ``corrected``), or the latest ``audited`` row's verdict (``accepted`` 1: right, 0:
wrong), which wins when a call has both. Both are columns of the call's record, kept by the
database as feedback arrives (:mod:`aiguard._feedback_figures`), so no query joins the calls to
their feedback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .exceptions import ConfigError

DECISIONS = "('accepted', 'edited', 'rejected', 'corrected')"
GOOD = "('accepted', 'edited')"


@dataclasses.dataclass(frozen=True, slots=True)
class Db:
    """One store's SQL: ``run(sql, params)`` and its placeholder."""

    run: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]
    mark: str

    @property
    def postgres(self) -> bool:
        return self.mark == "%s"

    def cell(self, column: str, cells: int) -> str:
        """The cell index of ``column`` (a number in [0, 1]) among ``cells`` equal cells, the
        top one holding 1.0: ``floor(column * cells + 1e-9)``, at most ``cells - 1``."""
        scaled = f"{column} * {int(cells)} + 1e-9"
        floor = (
            f"CAST(FLOOR({scaled}) AS INTEGER)" if self.postgres else f"CAST({scaled} AS INTEGER)"
        )
        return f"(CASE WHEN {column} >= 1 THEN {int(cells) - 1} ELSE {floor} END)"


def db(store: Any) -> Db:
    """The SQL access of ``store``; ConfigError for a store that is not an SQL store."""
    run = getattr(store, "_run", None)
    mark = getattr(store, "_mark", None)
    if run is None or mark not in ("?", "%s"):
        raise ConfigError(
            f"store={store!r} cannot compute quality figures: they are aggregated in SQL, so "
            "give an aiguard.SQLiteStore or an aiguard.postgres.PostgresStore"
        )
    return Db(run, mark)


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """Which call records: one feature, from ``since`` (inclusive) to ``until`` (exclusive)."""

    feature: str
    since: float | None = None
    until: float | None = None
    model: str | None = None
    percent: float | None = None  # only calls at this rollout percentage

    def where(
        self, mark: str, *extra: str, alias: str = "", by_feature: bool = True
    ) -> tuple[str, tuple[Any, ...]]:
        """`` WHERE ...`` over these calls (columns prefixed by ``alias.`` when given; without
        the feature's condition when ``by_feature`` is False)."""
        p = f"{alias}." if alias else ""
        clauses = [f"{p}{x}" for x in extra]
        params: list[Any] = []
        if by_feature:
            clauses.insert(0, f"{p}feature = {mark}")
            params.append(self.feature)
        for clause, value in (
            (f"{p}started_at >= {mark}", self.since),
            (f"{p}started_at < {mark}", self.until),
            (f"{p}model = {mark}", self.model),
            (f"{p}rollout_percent = {mark}", self.percent),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return " WHERE " + (" AND ".join(clauses) or "1 = 1"), tuple(params)


JUDGEABLE = ("source = 'model'", "confidence IS NOT NULL", "confidence >= 0", "confidence <= 1")


def _evidence(d: Db, w: Window) -> tuple[str, tuple[Any, ...]]:
    """``{select} FROM call_records w WHERE ...``: the judged model answers of the window, each
    with its latest decision (``w.fb_decision``) and latest audit verdict (``w.fb_verdict``),
    columns of its record kept by the database (:mod:`aiguard._feedback_figures`)."""
    where, params = w.where(d.mark, *JUDGEABLE, alias="w")
    judged = " AND (w.fb_decision IS NOT NULL OR w.fb_verdict IS NOT NULL)"
    return "{select} FROM call_records w" + where + judged, params


# an evidence row's verdict: the audit when there is one, else the decision
CORRECT = (
    "(CASE WHEN w.fb_verdict IS NOT NULL THEN (CASE WHEN w.fb_verdict = 1 THEN 1 ELSE 0 END) "
    f"WHEN w.fb_decision IN {GOOD} THEN 1 ELSE 0 END)"
)


def calibration_bins(d: Db, w: Window, bins: int) -> list[tuple[str | None, int, int, int, float]]:
    """``(model, bin, count, correct, sum of confidences)`` of the judged model answers."""
    sql, params = _evidence(d, w)
    select = (
        f"SELECT w.model, {d.cell('w.confidence', bins)} AS b, COUNT(*), SUM({CORRECT}), "
        "SUM(w.confidence)"
    )
    rows = d.run(sql.replace("{select}", select) + " GROUP BY w.model, b", params)
    return [(r[0], int(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows]


def tuning_buckets(d: Db, w: Window) -> dict[int, list[int]]:
    """Per 0.01 bucket of confidence: ``[calls with a confidence, judged, correct, decided,
    accepted]`` (the last four over model answers only; decided/accepted from decisions only)."""
    out = {b: [n, 0, 0, 0, 0] for b, n in confidence_histogram(d, w, 100).items()}
    sql, params = _evidence(d, w)
    select = (
        f"SELECT {d.cell('w.confidence', 100)} AS b, COUNT(*), SUM({CORRECT}), "
        "SUM(CASE WHEN w.fb_decision IS NOT NULL THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN w.fb_decision IN {GOOD} THEN 1 ELSE 0 END)"
    )
    for r in d.run(sql.replace("{select}", select) + " GROUP BY b", params):
        out.setdefault(int(r[0]), [0, 0, 0, 0, 0])[1:] = [int(x) for x in r[1:]]
    return out


def audit_bands(d: Db, w: Window, bins: int) -> list[tuple[int, int, int]]:
    """``(band, audited, wrong)`` of the window's audited model answers (as the report's
    audited error rate); band -1: no confidence."""
    where, params = w.where(d.mark, "source = 'model'", "fb_verdict IN (0, 1)", alias="w")
    sql = (
        "SELECT (CASE WHEN w.confidence IS NULL OR w.confidence < 0 OR w.confidence > 1 THEN -1 "
        f"ELSE {d.cell('w.confidence', bins)} END) AS b, COUNT(*), "
        f"SUM(CASE WHEN w.fb_verdict = 0 THEN 1 ELSE 0 END) FROM call_records w{where} GROUP BY b"
    )
    return [(int(r[0]), int(r[1]), int(r[2])) for r in d.run(sql, params)]


def confidence_histogram(d: Db, w: Window, cells: int) -> dict[int, int]:
    """Calls with a confidence in [0, 1], per cell of width 1/cells."""
    where, params = w.where(d.mark, "confidence IS NOT NULL", "confidence >= 0", "confidence <= 1")
    sql = f"SELECT {d.cell('confidence', cells)} AS b, COUNT(*) FROM call_records{where} GROUP BY b"
    return {int(r[0]): int(r[1]) for r in d.run(sql, params)}


def distributions(
    d: Db, windows: list[Window], cells: int
) -> list[tuple[dict[int, int], dict[str, int]]]:
    """Per window (of one feature): calls with a confidence in [0, 1] per cell of width
    1/cells, and calls per served label; all windows in one read of the calls (a call in two
    windows counts in both)."""
    if not windows:
        return []
    conditions: list[str] = []
    params: list[Any] = []
    for i, w in enumerate(windows):
        where, found = w.where(d.mark, alias="w")
        conditions.append(f"(p.part = {i} AND {where.removeprefix(' WHERE ')})")
        params += found
    parts = " UNION ALL ".join(f"SELECT {i} AS part" for i in range(len(windows)))
    judged = "w.confidence IS NOT NULL AND w.confidence >= 0 AND w.confidence <= 1"
    sql = (
        f"SELECT p.part, (CASE WHEN {judged} THEN {d.cell('w.confidence', cells)} END) AS b, "
        f"w.label, COUNT(*) FROM call_records w CROSS JOIN ({parts}) p "
        f"WHERE ({' OR '.join(conditions)}) AND (({judged}) OR w.label IS NOT NULL) "
        "GROUP BY p.part, b, w.label"
    )
    out: list[tuple[dict[int, int], dict[str, int]]] = [({}, {}) for _ in windows]
    for part, cell, label, n in d.run(sql, tuple(params)):
        hist, labels = out[int(part)]
        if cell is not None:
            hist[int(cell)] = hist.get(int(cell), 0) + int(n)
        if label is not None:
            labels[str(label)] = labels.get(str(label), 0) + int(n)
    return out


def latest_call(d: Db, feature: str) -> tuple[float, float | None, float | None] | None:
    """``(started_at, rollout_percent, threshold)`` of the feature's latest call record."""
    rows = d.run(
        "SELECT started_at, rollout_percent, threshold FROM call_records WHERE feature = "
        f"{d.mark} ORDER BY started_at DESC LIMIT 1",
        (feature,),
    )
    return None if not rows else (float(rows[0][0]), rows[0][1], rows[0][2])


def first_call(d: Db, feature: str, percent: float | None) -> float | None:
    """When the feature's first call (at ``percent``, when given) was made."""
    where, params = Window(feature, percent=percent).where(d.mark)
    rows = d.run(f"SELECT MIN(started_at) FROM call_records{where}", params)
    return None if not rows or rows[0][0] is None else float(rows[0][0])


def percents(d: Db, feature: str) -> list[float]:
    """Every rollout percentage the feature's calls were recorded at, ascending."""
    rows = d.run(
        "SELECT DISTINCT rollout_percent FROM call_records WHERE feature = "
        f"{d.mark} AND rollout_percent IS NOT NULL",
        (feature,),
    )
    return sorted(float(r[0]) for r in rows)


def save_baseline(d: Db, feature: str, name: str, saved_at: float, data: str) -> None:
    m = d.mark
    d.run(
        f"INSERT INTO baselines (feature, name, saved_at, data) VALUES ({m}, {m}, {m}, {m}) "
        "ON CONFLICT (feature, name) DO UPDATE SET saved_at = excluded.saved_at, "
        "data = excluded.data",
        (feature, name, saved_at, data),
    )


def load_baseline(d: Db, feature: str, name: str) -> tuple[float, str] | None:
    rows = d.run(
        f"SELECT saved_at, data FROM baselines WHERE feature = {d.mark} AND name = {d.mark}",
        (feature, name),
    )
    return None if not rows else (float(rows[0][0]), str(rows[0][1]))
