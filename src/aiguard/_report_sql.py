"""The report's aggregates computed by SQLite or PostgreSQL, each call of the window read once.

Four steps on one connection (``run(sql, params)`` returns a statement's rows):

1. ``CREATE TEMP TABLE``: one row per call of the window, with its split keys, its figures (its
   feedback's decision, audit verdict and scores are columns of its record, kept by the
   database: :mod:`aiguard._feedback_figures`) and its latency bucket ``lb`` (log-spaced, 0.1 %
   wide; any function of the latency that never
   decreases would do: the buckets only narrow down where each wanted value lies);
2. the sums, grouped at the finest grain the report needs (feature, source, day, arm and every
   split key); the coarser groupings are summed here from those rows (they are few). SQLite
   adds each call to its group's row in a small keyed table (its GROUP BY would sort every
   call); PostgreSQL hashes;
3. per feature, split keys and latency bucket: the number of calls, and the lowest and highest
   latency;
4. the latencies of the few buckets that hold a wanted rank (p50, p95 and p99 of each group) or
   straddle a bound of the histogram, so percentiles and histogram are exact (nearest rank, as
   the Python reference), with no sort of the window's calls.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._report_data import (
    BUCKETS,
    CALL_SPLITS,
    DAY,
    FLOAT_SUMS,
    QUANTILES,
    SUMS,
    TOKENS,
    Aggregates,
    Dialect,
    check_splits,
    histogram_bucket,
    rank,
)

Run = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]

TABLE = "aiguard_report_calls"
"""The temporary table of the window's calls (one per connection, dropped after, with the
SQLite store's two tables named after it)."""

PER_E = 1000  # latency buckets per factor e: each 0.1 % wide
LOWEST, HIGHEST = -(10**6), 10**6  # buckets of a latency <= 0 and of one too large for ln()
CHUNK = 500  # bucket numbers per statement of step 4

Group = tuple[int, str, str | None]


def _literal(text: str, dialect: Dialect) -> str:
    quoted = "'" + text.replace("'", "''") + "'"
    return quoted.replace("%", "%%") if dialect == "postgres" else quoted


def _key(split: str, i: int, dialect: Dialect, segment: str) -> str:
    """The SQL of a split's value for the call ``w``: its segment (``segment``: the SQL of its
    value), else the attribute of its feedback."""
    if split in CALL_SPLITS:
        return f"COALESCE(NULLIF(w.{split}, ''), 'none')"
    if dialect == "postgres":
        attribute = _pg_value("w.fb_attributes::jsonb", "w.fb_attributes", split, null=False)
        return f"COALESCE({segment}, {attribute}, 'none')"
    path = _literal(f'$."{split}"', dialect)
    attribute = (
        f"CASE json_type(w.fb_attributes, {path}) WHEN 'text' THEN "
        f"json_extract(w.fb_attributes, {path}) ELSE char(31) || (w.fb_attributes -> {path}) END"
    )
    return f"COALESCE({segment}, {attribute}, 'none')"


def _segment(split: str, column: str, dialect: Dialect) -> str:
    """The SQL of the value of segment ``split`` in the segments text ``column``: a string as
    is, else its JSON text after ``MARK``; NULL when missing or JSON null."""
    if dialect == "postgres":
        return _pg_value(f"{column}::jsonb", column, split, null=True)
    path = _literal(f'$."{split}"', dialect)
    return (
        f"CASE json_type({column}, {path}) WHEN 'text' THEN json_extract({column}, {path})"
        f" WHEN 'null' THEN NULL ELSE char(31) || ({column} -> {path}) END"
    )


def _pg_value(parsed: str, text: str, split: str, *, null: bool) -> str:
    """PostgreSQL: the value of ``split`` in a JSON object (``parsed`` as jsonb, ``text`` as
    written): a string as is, else its JSON text after ``MARK`` (JSON null: NULL if ``null``);
    NULL when missing."""
    name = _literal(split, "postgres")
    return (
        f"CASE jsonb_typeof({parsed} -> {name}) WHEN 'string' THEN {parsed} ->> {name} "
        f"{'WHEN ' + repr('null') + ' THEN NULL ' if null else ''}"
        f"ELSE chr(31) || ({text}::json -> {name})::text END"
    )


def _window(
    dialect: Dialect, feature: str | None, since: float | None, table: str
) -> tuple[str, tuple[Any, ...]]:
    """The condition on ``call_records`` of the window asked for, and its parameters."""
    mark = "?" if dialect == "sqlite" else "%s"
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if feature is not None:
        where.append(f"{table}.feature = {mark}")
        params.append(feature)
    if since is not None:
        where.append(f"{table}.started_at >= {mark}")
        params.append(since)
    return " AND ".join(where), tuple(params)


def _bucket(dialect: Dialect, ln: bool) -> str:
    """The latency bucket of ``w.latency``: never decreasing with the latency."""
    if not ln:  # an SQLite built without its math functions: 1 ms wide buckets
        return (
            f"CASE WHEN w.latency <= 0 THEN {LOWEST} WHEN w.latency < 1000 THEN "
            f"CAST(w.latency * 1000 AS INTEGER) ELSE {HIGHEST} END"
        )
    log = (
        f"CAST(ln(w.latency) * {PER_E} AS INTEGER)"
        if dialect == "sqlite"
        else f"CAST(FLOOR(LN(w.latency) * {PER_E}) AS INTEGER)"
    )
    return (
        f"CASE WHEN w.latency <= 0 THEN {LOWEST} WHEN w.latency < 1e300 THEN {log} "
        f"ELSE {HIGHEST} END"
    )


SEGMENT_VALUES = 2000
"""PostgreSQL: at most this many distinct segments texts in a window are parsed once each and
joined to the calls as a list of values (beyond, each call's segments are parsed)."""

Statement = tuple[str, tuple[Any, ...]]


def segments_statement(
    dialect: Dialect, feature: str | None, since: float | None, splits: Sequence[str]
) -> Statement | None:
    """Rows ``(segments, s_i..)`` of the window's distinct segments texts (at most
    ``SEGMENT_VALUES + 1``), with the value of each named split ``i``; None when no split is
    named."""
    named = [(i, s) for i, s in enumerate(splits, 1) if s not in CALL_SPLITS]
    if not named:
        return None
    where, params = _window(dialect, feature, since, "w")
    values = "".join(f", {_segment(s, 'u.segments', dialect)}" for _, s in named)
    sql = (
        f"SELECT u.segments{values} FROM (SELECT DISTINCT w.segments FROM call_records w "
        f"WHERE {where} AND w.segments IS NOT NULL) u LIMIT {SEGMENT_VALUES + 1}"
    )
    return sql, params


def _segments_join(
    dialect: Dialect, splits: Sequence[str], found: list[tuple[Any, ...]] | None
) -> tuple[str, dict[int, str]]:
    """The join of the calls to their segments' values (``found``: the rows of
    ``segments_statement``; None: each call's segments are parsed), and the SQL of each named
    split's segment value. Parsing each distinct text once, rather than each call's, took a
    second off a report of a million calls in SQLite."""
    named = [(i, s) for i, s in enumerate(splits, 1) if s not in CALL_SPLITS]
    if not named:
        return "", {}
    if found is None or len(found) > SEGMENT_VALUES:
        return "", {i: _segment(s, "w.segments", dialect) for i, s in named}
    if not found:
        return "", dict.fromkeys((i for i, _ in named), "NULL")

    def text(value: Any) -> str:
        return "NULL" if value is None else _literal(str(value), dialect)

    rows = ", ".join("(" + ", ".join(text(v) for v in row) + ")" for row in found)
    columns = ", ".join(
        f"v.column{j} AS {name}"
        for j, name in enumerate(["segments", *(f"s{i}" for i, _ in named)], 1)
    )
    join = f"LEFT JOIN (SELECT {columns} FROM (VALUES {rows}) v) sk ON sk.segments = w.segments"
    return join, {i: f"sk.s{i}" for i, _ in named}


def calls_select(
    dialect: Dialect,
    feature: str | None,
    since: float | None,
    splits: Sequence[str],
    *,
    ln: bool = True,
    segments: list[tuple[Any, ...]] | None = None,
) -> Statement:
    """One row per call of the window (see the module's docstring); ``segments``: the rows of
    ``segments_statement``. Each call's feedback figures are
    columns of its record (:mod:`aiguard._feedback_figures`)."""
    where, params = _window(dialect, feature, since, "w")
    join, segment_sql = _segments_join(dialect, splits, segments)
    keys = "".join(
        f", {_key(s, i, dialect, segment_sql.get(i, 'NULL'))} AS k{i}"
        for i, s in enumerate(splits, 1)
    )
    day = (
        f"CAST(w.started_at / {DAY} AS INTEGER) - (w.started_at < 0 AND "
        f"w.started_at / {DAY} <> CAST(w.started_at / {DAY} AS INTEGER))"
        if dialect == "sqlite"
        else f"CAST(FLOOR(w.started_at / {DAY}) AS BIGINT)"
    )

    def flag(condition: str) -> str:
        return f"CASE WHEN {condition} THEN 1 ELSE 0 END"

    verdict = "CASE WHEN w.source = 'model' THEN w.fb_verdict END"
    values = {
        "accepted": flag("w.fb_decision = 'accepted'"),
        "edited": flag("w.fb_decision = 'edited'"),
        "rejected": flag("w.fb_decision = 'rejected'"),
        "corrected": flag("w.fb_decision = 'corrected'"),
        "dist_sum": "CASE WHEN w.fb_decision = 'edited' THEN COALESCE(w.fb_distance, 0.0) "
        "ELSE 0.0 END",
        "dist_n": flag("w.fb_decision = 'edited' AND w.fb_distance IS NOT NULL"),
        "score_sum": "COALESCE(w.fb_score_sum, 0.0)",
        "score_n": "COALESCE(w.fb_score_n, 0)",
        "served": flag("w.reason = 'served'"),
        "errors": flag("w.reason = 'error'"),
        "timeouts": flag("w.reason = 'timeout'"),
        "cost": "COALESCE(w.cost_pico, 0)",
        "priced": flag("w.cost_pico IS NOT NULL"),
        **{t: f"COALESCE(w.{t}, 0)" for t in TOKENS},
        "audited": flag(f"({verdict}) IS NOT NULL"),
        "audit_errors": flag(f"({verdict}) = 0"),
    }
    figures = ", ".join(f"{expr} AS s_{name}" for name, expr in values.items() if name != "calls")
    sql = f"""SELECT w.feature AS feature, COALESCE(NULLIF(w.source, ''), 'none') AS src,
        {day} AS day, COALESCE(NULLIF(w.arm, ''), 'all') AS armk{keys}, w.latency AS latency,
        {_bucket(dialect, ln)} AS lb, {figures}
      FROM call_records w {join} WHERE {where}"""
    return sql, params


def _ks(splits: Sequence[str]) -> str:
    return "".join(f", k{i}" for i in range(1, len(splits) + 1))


SUMS_TABLE, BUCKETS_TABLE = f"{TABLE}_sums", f"{TABLE}_buckets"


def finest_statements(dialect: Dialect, splits: Sequence[str], calls: Statement) -> list[Statement]:
    """Step 2: statements whose last returns rows ``(feature, src, day, armk, k1.., *SUMS)``,
    from ``calls`` (the temporary table in SQLite, the window's calls in PostgreSQL).
    PostgreSQL groups by hashing, in parallel; SQLite would sort every call to group them, so it
    adds each call to its group's row in a small keyed table instead (about twice as fast)."""
    keys = f"feature, src, day, armk{_ks(splits)}"
    source, params = calls
    if dialect == "postgres":
        sums = ", ".join("COUNT(*)" if n == "calls" else f"SUM(s_{n})" for n in SUMS)
        return [(f"SELECT {keys}, {sums} FROM ({source}) t GROUP BY {keys}", params)]
    names = ", ".join(f"s_{n}" for n in SUMS)
    values = ", ".join("1" if n == "calls" else f"s_{n}" for n in SUMS)
    adds = ", ".join(f"s_{n} = s_{n} + excluded.s_{n}" for n in SUMS)
    return [
        (f"CREATE TEMP TABLE {SUMS_TABLE} ({keys}, {names}, PRIMARY KEY ({keys}))", ()),
        (
            f"INSERT INTO {SUMS_TABLE} SELECT {keys}, {values} FROM {source} WHERE true "
            f"ON CONFLICT DO UPDATE SET {adds}",
            params,
        ),
        (f"SELECT {keys}, {names} FROM {SUMS_TABLE}", ()),
    ]


def buckets_statements(
    dialect: Dialect, splits: Sequence[str], calls: Statement
) -> list[Statement]:
    """Step 3: statements whose last returns rows ``(feature, k1.., lb, calls, lowest,
    highest)`` (as ``finest_statements``)."""
    keys = f"feature{_ks(splits)}, lb"
    source, params = calls
    if dialect == "postgres":
        return [
            (
                f"SELECT {keys}, COUNT(*), MIN(latency), MAX(latency) FROM ({source}) t "
                f"GROUP BY {keys}",
                params,
            )
        ]
    return [
        (f"CREATE TEMP TABLE {BUCKETS_TABLE} ({keys}, n, low, high, PRIMARY KEY ({keys}))", ()),
        (
            f"INSERT INTO {BUCKETS_TABLE} SELECT {keys}, 1, latency, latency FROM {source} "
            "WHERE true ON CONFLICT DO UPDATE SET n = n + 1, low = MIN(low, excluded.low), "
            "high = MAX(high, excluded.high)",
            params,
        ),
        (f"SELECT {keys}, n, low, high FROM {BUCKETS_TABLE}", ()),
    ]


def _last(run: Run, statements: list[Statement]) -> list[tuple[Any, ...]]:
    for sql, params in statements[:-1]:
        run(sql, params)
    return run(*statements[-1])


def latencies_query(
    dialect: Dialect, splits: Sequence[str], buckets: Sequence[int], calls: Statement
) -> Statement:
    """Step 4: rows ``(feature, k1.., lb, latency)`` of the buckets given."""
    listed = ", ".join(str(int(b)) for b in buckets)
    source, params = calls
    if dialect == "postgres":
        source = f"({source}) t"
    return f"SELECT feature{_ks(splits)}, lb, latency FROM {source} WHERE lb IN ({listed})", params


def in_sql(
    run: Run,
    dialect: Dialect,
    feature: str | None,
    since: float | None,
    splits: Sequence[str],
    *,
    ln: bool = True,
) -> Aggregates:
    """The aggregates computed by the database; ``run(sql, params)`` runs a statement on the one
    connection that holds the temporary tables (the caller drops them, or commits them away).
    SQLite writes the window's calls to a temporary table once and reads it three times;
    PostgreSQL reads the window three times in parallel scans (a temporary table is written and
    read by one process only)."""
    check_splits(splits)
    n = len(splits)
    segments = None
    distinct = segments_statement(dialect, feature, since, splits)
    if distinct is not None:
        segments = run(*distinct)
    calls = calls_select(dialect, feature, since, splits, ln=ln, segments=segments)
    if dialect == "sqlite":
        run(f"CREATE TEMP TABLE {TABLE} AS {calls[0]}", calls[1])
        calls = (TABLE, ())
    sums = _sums(_last(run, finest_statements(dialect, splits, calls)), n)
    counts: dict[Group, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    ranges: dict[str, dict[int, list[float]]] = defaultdict(dict)
    for row in _last(run, buckets_statements(dialect, splits, calls)):
        feat, keys, lb, number, low, high = row[0], row[1 : n + 1], row[n + 1], *row[n + 2 :]
        for group in _groups(feat, keys):
            counts[group][lb] += number
        seen = ranges[feat].get(lb)
        if seen is None:
            ranges[feat][lb] = [low, high]
        else:
            seen[0], seen[1] = min(seen[0], low), max(seen[1], high)
    # where each wanted rank lies: (group, bucket) -> [(quantile's index, rank in the bucket)]
    wanted: dict[tuple[Group, int], list[tuple[int, int]]] = defaultdict(list)
    for group, per_bucket in counts.items():
        order = sorted(per_bucket)
        cumulative, total = [], 0
        for lb in order:
            total += per_bucket[lb]
            cumulative.append(total)
        for j, q in enumerate(QUANTILES):
            r = rank(q, total)
            at = bisect.bisect_left(cumulative, r)
            before = cumulative[at - 1] if at else 0
            wanted[(group, order[at])].append((j, r - before))
    highest = {feat: max(h for _, h in buckets.values()) for feat, buckets in ranges.items()}
    histogram: dict[str, tuple[float, list[int]]] = {}
    straddling: set[tuple[str, int]] = set()
    for feat, buckets in ranges.items():
        hi, bins = highest[feat], [0] * BUCKETS
        for lb, (low, high) in buckets.items():
            first = histogram_bucket(low, hi)
            if first == histogram_bucket(high, hi):
                bins[first] += counts[(0, feat, None)][lb]
            else:
                straddling.add((feat, lb))
        histogram[feat] = (hi, bins)
    fetch = sorted({lb for (_, lb) in wanted} | {lb for (_, lb) in straddling})
    values: dict[tuple[Group, int], list[float]] = defaultdict(list)
    for start in range(0, len(fetch), CHUNK):
        for row in run(*latencies_query(dialect, splits, fetch[start : start + CHUNK], calls)):
            feat, keys, lb, latency = row[0], row[1 : n + 1], row[n + 1], row[n + 2]
            if (feat, lb) in straddling:
                histogram[feat][1][histogram_bucket(latency, highest[feat])] += 1
            for group in _groups(feat, keys):
                if (group, lb) in wanted:
                    values[(group, lb)].append(latency)
    percentiles: dict[Group, list[float | None]] = {g: [None] * len(QUANTILES) for g in counts}
    for (group, lb), picks in wanted.items():
        found = sorted(values[(group, lb)])
        for j, r in picks:
            percentiles[group][j] = found[r - 1]
    return Aggregates(sums, {g: tuple(p) for g, p in percentiles.items()}, histogram)


def _groups(feature: str, keys: Sequence[Any]) -> Iterable[Group]:
    yield (0, feature, None)
    for i, key in enumerate(keys, 1):
        yield (i, feature, key)


def _sums(rows: list[tuple[Any, ...]], n: int) -> list[tuple[Any, ...]]:
    """The report's sums rows (``_report_data``) summed from the finest rows."""
    width = len(SUMS)
    floats = [name in FLOAT_SUMS for name in SUMS]
    out: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        feat, src, day, arm = row[0], row[1], row[2], row[3]
        figures = [
            float(v or 0) if is_float else int(v or 0)
            for v, is_float in zip(row[4 + n :], floats, strict=True)
        ]
        targets = [(0, feat, None, None, None, src), (-1, feat, None, int(day), arm, src)]
        targets += [(i, feat, row[3 + i], None, None, src) for i in range(1, n + 1)]
        for target in targets:
            acc = out.get(target)
            if acc is None:
                out[target] = list(figures)
            else:
                for j in range(width):
                    acc[j] += figures[j]
    return [(*key, *acc) for key, acc in out.items()]


TEMP_TABLES = (TABLE, SUMS_TABLE, BUCKETS_TABLE)
