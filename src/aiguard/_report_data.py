"""The report's aggregates: computed in the database (SQLite and PostgreSQL), or in Python for a
store without SQL (and as the reference the SQL is tested against).

Both produce the same :class:`Aggregates` from the calls of a window and the feedback on those
calls (whenever it was given):

- ``sums``: rows ``(i, feature, key, day, arm, source, *SUMS)``: ``i`` 0 is the whole feature,
  ``i`` 1.. the split ``splits[i - 1]`` (``key`` its value), ``i`` -1 the daily series (``day``:
  days since 1970-01-01 UTC, ``arm``: the rollout arm or ``all``); every row is also split by
  source, so ``by_source`` and the totals are sums of rows;
- ``percentiles``: ``(i, feature, key) -> (p50, p95, p99)`` of the whole call's latency, by the
  nearest rank;
- ``histogram``: ``feature -> (highest latency, counts of 20 equal buckets from 0 to it)``.

Per call, from its feedback rows: the decision is the latest (highest id) row of kind
accepted/edited/rejected/corrected; the audit verdict the latest ``audited`` row's ``accepted``,
counted on calls whose model answered with a confidence (the answer judged was the model's);
scores are every score given; a feedback attribute is read from the call's latest row that is
not a comment, a rating or an audit (else its first row). A split names a call column (``model``,
``source``, ``arm``, ``reason``), or a segment recorded on the call, else a feedback attribute of
that name. Values are text: a JSON value that is not a string reads as Python's ``str()`` of it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from .exceptions import ConfigError

Dialect = Literal["sqlite", "postgres"]

DECISIONS = ("accepted", "edited", "rejected", "corrected")
NOT_UNDOING = ("commented", "rated", "audited")  # never replace a call's latest feedback
CALL_SPLITS = ("model", "source", "arm", "reason")
QUANTILES = (0.50, 0.95, 0.99)
BUCKETS = 20
TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
          "cache_write_1h_tokens")  # fmt: skip
SUMS = (
    "calls", "accepted", "edited", "rejected", "corrected", "dist_sum", "dist_n", "score_sum",
    "score_n", "served", "errors", "timeouts", "cost", "priced", *TOKENS, "audited",
    "audit_errors",
)  # fmt: skip
FLOAT_SUMS = frozenset({"dist_sum", "score_sum"})
MARK = "\x1f"  # before the JSON text of a value that is not a string
DAY = 86400


@dataclasses.dataclass(frozen=True, slots=True)
class Aggregates:
    """What a report is built from (see the module's docstring)."""

    sums: list[tuple[Any, ...]]
    percentiles: dict[tuple[int, str, str | None], tuple[float | None, ...]]
    histogram: dict[str, tuple[float, list[int]]]


def check_splits(splits: Sequence[str]) -> None:
    """A split must be a name that can be looked up in a JSON object by SQL."""
    for s in splits:
        if (
            not isinstance(s, str)
            or not s
            or len(s) > 100
            or '"' in s
            or any(ord(ch) < 32 for ch in s)
        ):
            raise ConfigError(
                f"by={s!r} is invalid: give model, source, arm, reason, or a segment or feedback "
                "attribute name (1 to 100 characters, no double quote or control character)"
            )


def key_text(raw: Any) -> str:
    """A group's name from the key the aggregation returns."""
    if raw is None:
        return "none"
    if isinstance(raw, str) and raw.startswith(MARK):
        return str(json.loads(raw[1:]))
    return str(raw)


def rank(q: float, n: int) -> int:
    """The nearest rank (from 1) of the quantile ``q`` of ``n`` sorted values."""
    return max(1, math.ceil(q * n))


def day_of(t: float) -> int:
    return math.floor(t / DAY)


# -- in Python ------------------------------------------------------------------------------------


def in_python(
    calls: Iterable[dict[str, Any]], feedback: Iterable[dict[str, Any]], splits: Sequence[str]
) -> Aggregates:
    """The aggregates computed in Python from call records and feedback rows (dicts)."""
    calls = list(calls)
    wanted = {c["call_id"] for c in calls}
    per_call: dict[str, dict[str, Any]] = {}
    for row in sorted((r for r in feedback if r["call_id"] in wanted), key=lambda r: r["id"]):
        p = per_call.setdefault(row["call_id"], {"score_sum": 0.0, "score_n": 0, "row": row})
        if row["score"] is not None:
            p["score_sum"] += row["score"]
            p["score_n"] += 1
        if row["kind"] in DECISIONS:
            p["decision"] = row
        elif row["kind"] == "audited":
            p["audit"] = row
        if row["kind"] not in NOT_UNDOING:
            p["row"] = row
    sums: dict[tuple[Any, ...], list[Any]] = {}
    latencies: dict[tuple[int, str, str | None], list[float]] = defaultdict(list)
    by_feature: dict[str, list[float]] = defaultdict(list)
    for c in calls:
        p = per_call.get(c["call_id"], {})
        keys = []
        for s in splits:
            if s in CALL_SPLITS:
                keys.append(str(c[s] or "none"))
                continue
            seg = _segment(c.get("segments"), s)
            if seg is None and "row" in p:
                seg = _attribute(p["row"]["attributes"], s)
            keys.append("none" if seg is None else seg)
        decision: dict[str, Any] = p.get("decision") or {}
        kind = decision.get("kind")
        audit = p.get("audit")
        verdict = (
            audit["accepted"]
            if audit is not None and c["source"] == "model" and c["confidence"] is not None
            else None
        )
        values = {
            "calls": 1,
            "accepted": kind == "accepted",
            "edited": kind == "edited",
            "rejected": kind == "rejected",
            "corrected": kind == "corrected",
            "dist_sum": (decision.get("edit_distance") or 0.0) if kind == "edited" else 0.0,
            "dist_n": kind == "edited" and decision.get("edit_distance") is not None,
            "score_sum": p.get("score_sum", 0.0),
            "score_n": p.get("score_n", 0),
            "served": c["reason"] == "served",
            "errors": c["reason"] == "error",
            "timeouts": c["reason"] == "timeout",
            "cost": c["cost_pico"] or 0,
            "priced": c["cost_pico"] is not None,
            **{t: c[t] or 0 for t in TOKENS},
            "audited": verdict is not None,
            "audit_errors": verdict == 0,
        }
        source = str(c["source"] or "none")
        rows: list[tuple[Any, ...]] = [(0, c["feature"], None, None, None, source)]
        rows += [(i, c["feature"], k, None, None, source) for i, k in enumerate(keys, 1)]
        arm = str(c["arm"] or "all")
        rows.append((-1, c["feature"], None, day_of(c["started_at"]), arm, source))
        for key in rows:
            acc = sums.setdefault(key, [0] * len(SUMS))
            for j, name in enumerate(SUMS):
                acc[j] += values[name]
        latencies[(0, c["feature"], None)].append(c["latency"])
        for i, k in enumerate(keys, 1):
            latencies[(i, c["feature"], k)].append(c["latency"])
        by_feature[c["feature"]].append(c["latency"])
    percentiles: dict[tuple[int, str, str | None], tuple[float | None, ...]] = {}
    for group, values_ in latencies.items():
        values_.sort()
        percentiles[group] = tuple(values_[rank(q, len(values_)) - 1] for q in QUANTILES)
    histogram = {}
    for feature, values_ in by_feature.items():
        hi = max(values_)
        counts = [0] * BUCKETS
        for x in values_:
            counts[min(BUCKETS - 1, int(x / hi * BUCKETS)) if hi else 0] += 1
        histogram[feature] = (hi, counts)
    return Aggregates(
        [(*k, *(float(v) if n in FLOAT_SUMS else int(v) for n, v in zip(SUMS, acc, strict=True)))
         for k, acc in sums.items()],
        percentiles,
        histogram,
    )  # fmt: skip


def _segment(text: str | None, name: str) -> str | None:
    data = _object(text)
    value = data.get(name)
    if value is None:
        return None
    return value if isinstance(value, str) else MARK + json.dumps(value)


def _attribute(text: str | None, name: str) -> str | None:
    data = _object(text)
    if name not in data:
        return None
    value = data[name]
    return value if isinstance(value, str) else MARK + json.dumps(value)


def _object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# -- in SQL ---------------------------------------------------------------------------------------


def _literal(text: str, dialect: Dialect) -> str:
    quoted = "'" + text.replace("'", "''") + "'"
    return quoted.replace("%", "%%") if dialect == "postgres" else quoted


def _key(split: str, dialect: Dialect) -> str:
    """The SQL of a split's value for the call ``pc`` (NULL when it has none)."""
    if split in CALL_SPLITS:
        return f"COALESCE(NULLIF(w.{split}, ''), 'none')"
    if dialect == "sqlite":
        path = _literal(f'$."{split}"', dialect)
        segment = (
            f"CASE json_type(w.segments, {path}) WHEN 'text' THEN json_extract(w.segments, {path})"
            f" WHEN 'null' THEN NULL ELSE char(31) || (w.segments -> {path}) END"
        )
        attribute = (
            f"CASE json_type(r.attributes, {path}) WHEN 'text' THEN "
            f"json_extract(r.attributes, {path}) ELSE char(31) || (r.attributes -> {path}) END"
        )
    else:
        name = _literal(split, dialect)
        segment = (
            f"CASE json_typeof(w.segments::json -> {name}) WHEN 'string' THEN "
            f"w.segments::json ->> {name} WHEN 'null' THEN NULL "
            f"ELSE chr(31) || (w.segments::json -> {name})::text END"
        )
        attribute = (
            f"CASE json_typeof(r.attributes::json -> {name}) WHEN 'string' THEN "
            f"r.attributes::json ->> {name} "
            f"ELSE chr(31) || (r.attributes::json -> {name})::text END"
        )
    return f"COALESCE({segment}, {attribute}, 'none')"


def _window(
    dialect: Dialect, feature: str | None, since: float | None, table: str = ""
) -> tuple[str, tuple[Any, ...]]:
    """The condition on ``call_records`` of the window asked for, and its parameters."""
    mark = "?" if dialect == "sqlite" else "%s"
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if feature is not None:
        where.append(f"{table}feature = {mark}")
        params.append(feature)
    if since is not None:
        where.append(f"{table}started_at >= {mark}")
        params.append(since)
    return " AND ".join(where), tuple(params)


def _prefix(
    dialect: Dialect,
    feature: str | None,
    since: float | None,
    splits: Sequence[str],
    figures: bool = True,
) -> tuple[str, tuple[Any, ...]]:
    """``WITH f, pc``: the feedback on the window's calls summed per call, and each call of the
    window with its decision, audit verdict and scores (unless not ``figures``) and its split
    keys (``k1``, ``k2``, ...)."""
    where, params = _window(dialect, feature, since, "w.")
    fb_where, fb_params = _window(dialect, feature, since, "c.")
    decisions = ", ".join(f"'{k}'" for k in DECISIONS)
    not_undoing = ", ".join(f"'{k}'" for k in NOT_UNDOING)
    keys = "".join(f", {_key(s, dialect)} AS k{i}" for i, s in enumerate(splits, 1))
    day = (
        f"CAST(w.started_at / {DAY} AS INTEGER)"
        if dialect == "sqlite"
        else f"CAST(FLOOR(w.started_at / {DAY}) AS BIGINT)"
    )
    columns = f"""w.reason, w.cost_pico, {", ".join(f"w.{t}" for t in TOKENS)},
          COALESCE(NULLIF(w.source, ''), 'none') AS src,
          COALESCE(NULLIF(w.arm, ''), 'all') AS armk, {day} AS day,
          d.kind AS dkind, d.edit_distance AS dist, f.score_sum, f.score_n,
          CASE WHEN w.source = 'model' AND w.confidence IS NOT NULL THEN a.accepted END
            AS verdict,"""
    joins = """LEFT JOIN feedback d ON d.id = f.dec_id
          LEFT JOIN feedback a ON a.id = f.audit_id"""
    attributes = any(s not in CALL_SPLITS for s in splits)
    sql = f"""WITH f AS (
        SELECT fb.call_id,
          MAX(CASE WHEN fb.kind IN ({decisions}) THEN fb.id END) AS dec_id,
          MAX(CASE WHEN fb.kind = 'audited' THEN fb.id END) AS audit_id,
          COALESCE(MAX(CASE WHEN fb.kind NOT IN ({not_undoing}) THEN fb.id END), MIN(fb.id))
            AS row_id,
          SUM(fb.score) AS score_sum, COUNT(fb.score) AS score_n
        FROM feedback fb JOIN call_records c ON c.call_id = fb.call_id
        WHERE {fb_where} GROUP BY fb.call_id),
      pc AS (
        SELECT w.feature, w.latency, {columns if figures else ""} 1 AS one{keys}
        FROM call_records w LEFT JOIN f ON f.call_id = w.call_id
          {joins if figures else ""}
          {"LEFT JOIN feedback r ON r.id = f.row_id" if attributes else ""}
        WHERE {where})"""
    return sql, (*fb_params, *params)


def _groupings(splits: Sequence[str], series: bool) -> str:
    first = -1 if series else 0
    return "g(i) AS (VALUES " + ", ".join(f"({i})" for i in range(first, len(splits) + 1)) + ")"


def _case_key(splits: Sequence[str], table: str) -> str:
    if not splits:
        return "CAST(NULL AS TEXT)"
    whens = " ".join(f"WHEN {i} THEN {table}.k{i}" for i in range(1, len(splits) + 1))
    return f"CASE g.i {whens} END"


def sums_query(
    dialect: Dialect, feature: str | None, since: float | None, splits: Sequence[str]
) -> tuple[str, tuple[Any, ...]]:
    """Rows ``(i, feature, key, day, arm, source, *SUMS)``: per call, the figures are summed at
    the finest grain first (feature, source, day, arm and every split), then per grouping."""
    prefix, params = _prefix(dialect, feature, since, splits)
    ks = "".join(f", k{i}" for i in range(1, len(splits) + 1))

    def count(condition: str) -> str:
        return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"

    inner = {
        "calls": "COUNT(*)",
        "accepted": count("dkind = 'accepted'"),
        "edited": count("dkind = 'edited'"),
        "rejected": count("dkind = 'rejected'"),
        "corrected": count("dkind = 'corrected'"),
        "dist_sum": "SUM(CASE WHEN dkind = 'edited' THEN dist END)",
        "dist_n": "COUNT(CASE WHEN dkind = 'edited' THEN dist END)",
        "score_sum": "SUM(score_sum)",
        "score_n": "SUM(score_n)",
        "served": count("reason = 'served'"),
        "errors": count("reason = 'error'"),
        "timeouts": count("reason = 'timeout'"),
        "cost": "SUM(cost_pico)",
        "priced": "COUNT(cost_pico)",
        **{t: f"SUM({t})" for t in TOKENS},
        "audited": "COUNT(verdict)",
        "audit_errors": count("verdict = 0"),
    }
    base = ", ".join(f"{expr} AS s_{name}" for name, expr in inner.items())
    outer = ", ".join(f"SUM(b.s_{name})" for name in SUMS)
    sql = f"""{prefix},
      b AS (SELECT feature, src, day, armk{ks}, {base}
            FROM pc GROUP BY feature, src, day, armk{ks}),
      {_groupings(splits, series=True)}
    SELECT g.i AS g_i, b.feature AS g_feature, {_case_key(splits, "b")} AS g_key,
      CASE WHEN g.i = -1 THEN b.day END AS g_day, CASE WHEN g.i = -1 THEN b.armk END AS g_arm,
      b.src AS g_src, {outer}
    FROM b CROSS JOIN g GROUP BY g_i, g_feature, g_key, g_day, g_arm, g_src"""
    return sql, params


def percentiles_query(
    dialect: Dialect, feature: str | None, since: float | None, splits: Sequence[str]
) -> tuple[str, tuple[Any, ...]]:
    """PostgreSQL: rows ``(i, feature, key, p50, p95, p99)`` (``percentile_disc`` is the
    nearest rank). SQLite: rows ``(i, feature, key, n, rank, latency)``, only those whose rank
    (in their group, by latency) is one of the wanted ones."""
    prefix, params = _prefix(dialect, feature, since, splits, figures=False)
    x = (
        f"x AS (SELECT g.i, pc.feature, {_case_key(splits, 'pc')} AS gkey, pc.latency "
        "FROM pc CROSS JOIN g)"
    )
    if dialect == "postgres":
        picks = ", ".join(
            f"percentile_disc({q}) WITHIN GROUP (ORDER BY latency)" for q in QUANTILES
        )
        sql = f"""{prefix}, {_groupings(splits, series=False)}, {x}
        SELECT i, feature, gkey, {picks} FROM x GROUP BY i, feature, gkey"""
        return sql, params

    def ceil(q: float) -> str:
        return f"MAX(1, CAST({q} * n AS INTEGER) + ({q} * n > CAST({q} * n AS INTEGER)))"

    wanted = " OR ".join(f"rn = {ceil(q)}" for q in QUANTILES)
    sql = f"""{prefix}, {_groupings(splits, series=False)}, {x},
      r AS (SELECT i, feature, gkey, latency,
              ROW_NUMBER() OVER (PARTITION BY i, feature, gkey ORDER BY latency) AS rn,
              COUNT(*) OVER (PARTITION BY i, feature, gkey) AS n FROM x)
    SELECT i, feature, gkey, n, rn, latency FROM r WHERE {wanted}"""
    return sql, params


def histogram_query(
    dialect: Dialect, feature: str | None, since: float | None
) -> tuple[str, tuple[Any, ...]]:
    """Rows ``(feature, highest latency, bucket, count)``."""
    clause, params = _window(dialect, feature, since)
    c_clause, _ = _window(dialect, feature, since, "c.")
    bucket = (
        f"MIN({BUCKETS - 1}, CAST(c.latency / m.hi * {BUCKETS} AS INTEGER))"
        if dialect == "sqlite"
        else f"LEAST({BUCKETS - 1}, CAST(FLOOR(c.latency / m.hi * {BUCKETS}) AS INTEGER))"
    )
    sql = f"""WITH m AS (SELECT feature, MAX(latency) AS hi FROM call_records WHERE {clause}
                        GROUP BY feature)
    SELECT c.feature, m.hi, CASE WHEN m.hi > 0 THEN {bucket} ELSE 0 END AS bucket, COUNT(*)
    FROM call_records c JOIN m ON m.feature = c.feature WHERE {c_clause}
    GROUP BY c.feature, m.hi, bucket"""
    return sql, (*params, *params)


def in_sql(
    run: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]],
    dialect: Dialect,
    feature: str | None,
    since: float | None,
    splits: Sequence[str],
) -> Aggregates:
    """The aggregates computed by the database; ``run(sql, params)`` returns a statement's
    rows."""
    check_splits(splits)
    sums = [
        (*row[:6], *(float(v or 0) if n in FLOAT_SUMS else int(v or 0)
                     for n, v in zip(SUMS, row[6:], strict=True)))
        for row in run(*sums_query(dialect, feature, since, splits))
    ]  # fmt: skip
    percentiles: dict[tuple[int, str, str | None], tuple[float | None, ...]] = {}
    rows = run(*percentiles_query(dialect, feature, since, splits))
    if dialect == "postgres":
        percentiles = {(int(r[0]), r[1], r[2]): tuple(r[3:6]) for r in rows}
    else:
        picked: dict[tuple[int, str, str | None], list[float | None]] = {}
        for i, feat, key, n, rn, latency in rows:
            values = picked.setdefault((int(i), feat, key), [None] * len(QUANTILES))
            for j, q in enumerate(QUANTILES):
                if rank(q, n) == rn:
                    values[j] = latency
        percentiles = {k: tuple(v) for k, v in picked.items()}
    histogram: dict[str, tuple[float, list[int]]] = {}
    for feat, hi, bucket, count in run(*histogram_query(dialect, feature, since)):
        counts = histogram.setdefault(feat, (hi, [0] * BUCKETS))[1]
        counts[int(bucket)] += int(count)
    return Aggregates(sums, percentiles, histogram)
