"""The report at fleet scale: ``aiguard.report()`` over 10^4 to 5 x 10^6 call records.

Run: ``python benchmarks/report_scale.py`` (options: ``--sqlite 10000,100000,1000000``,
``--postgres 1000000,5000000`` (needs ``$AIGUARD_TEST_POSTGRES`` or a server on
127.0.0.1:5432), ``--timeout S``, ``--json FILE``).

The store is filled directly with SQL (a recursive CTE in SQLite, ``generate_series`` in
PostgreSQL), so generating a million rows takes seconds: three features, sources and reasons
mixed as in production (75 % served by the model, the rest low confidence, errors, timeouts and
a baseline arm), confidences, latencies, costs, tokens, two segments (``region``, ``plan``), a
rollout arm on one feature; 30 % of the calls have feedback (a third of it with a ``plan``
attribute), and 5 % of the model's served answers an audit verdict. Columns are drawn from a
multiplicative hash of the row number, so both stores hold the same data.

Each report runs in a fresh process: the figure is its wall time and its peak resident set
(``ru_maxrss``) both as is and above the baseline taken after the imports and the store's opening.
PostgreSQL runs in its own schema, dropped after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

PG_URL = os.environ.get("AIGUARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
DAY = 86400.0


def _u(n: str, salt: int) -> str:
    """A uniform number in [0, 1) from the row number ``n``: the same in both dialects."""
    return f"((({n} + {salt}) * 2654435761) % 4294967296) / 4294967296.0"


def _calls_select(n: str, total: int, start: float) -> str:
    u1, u2, u3, u4, u5 = (_u(n, s) for s in (11, 23, 37, 51, 73))
    span = 30 * DAY / total
    return f"""
    SELECT 'bench_' || {n},
      CASE {n} % 3 WHEN 0 THEN 'reply' WHEN 1 THEN 'triage' ELSE 'summary' END,
      {start} + {n} * {span},
      CASE WHEN {n} % 3 = 0 AND {u4} < 0.1 THEN 'baseline'
           WHEN {u1} < 0.75 THEN 'model' ELSE 'default' END,
      CASE WHEN {n} % 3 = 0 AND {u4} < 0.1 THEN 'baseline' WHEN {u1} < 0.75 THEN 'served'
           WHEN {u1} < 0.88 THEN 'low_confidence' WHEN {u1} < 0.95 THEN 'error'
           ELSE 'timeout' END,
      {u2}, 0.5,
      CASE WHEN {n} % 3 = 0 THEN (CASE WHEN {u4} < 0.1 THEN 'baseline' ELSE 'ai' END) END,
      CASE WHEN {n} % 3 = 0 THEN 10.0 END,
      CASE WHEN {n} % 2 = 0 THEN 'gpt-4.1-mini' ELSE 'claude-x' END,
      100 + {n} % 400, 20 + {n} % 50, ({n} % 3) * 100,
      CASE WHEN {u1} < 0.95 THEN 800000000 + ({n} % 7) * 1000000 END,
      0.005 + {u3} * {u3} * {u3} * {u3} * 0.5, 0.004, NULL, NULL, NULL, NULL, NULL,
      ({n} % 5) * 10, ({n} % 5) * 5,
      '{{"region": "' || CASE {n} % 3 WHEN 0 THEN 'eu' WHEN 1 THEN 'us' ELSE 'apac' END
        || '", "plan": "' || CASE WHEN {u5} < 0.3 THEN 'pro' ELSE 'free' END || '"}}',
      CASE WHEN {n} % 3 = 1 THEN (CASE WHEN {u2} < 0.5 THEN 'spam' ELSE 'ham' END) END
    """


def _feedback_select(n: str, start: float, total: int) -> str:
    u4, u6, u7 = (_u(n, s) for s in (51, 97, 131))
    span = 30 * DAY / total
    return f"""
    SELECT 'bench_' || {n},
      CASE {n} % 3 WHEN 0 THEN 'reply' WHEN 1 THEN 'triage' ELSE 'summary' END,
      CASE WHEN {u6} < 0.5 THEN 'accepted' WHEN {u6} < 0.65 THEN 'edited'
           WHEN {u6} < 0.8 THEN 'rejected' WHEN {u6} < 0.92 THEN 'corrected' ELSE 'rated' END,
      CASE WHEN {u6} < 0.65 THEN 1 WHEN {u6} < 0.92 THEN 0 END,
      CASE WHEN {u6} >= 0.92 THEN 1 + ({n} % 5) END,
      CASE WHEN {u6} >= 0.5 AND {u6} < 0.65 THEN {u7} END,
      CASE WHEN {n} % 3 = 0 THEN '{{"plan": "' || CASE WHEN {u7} < 0.5 THEN 'pro' ELSE 'free' END
           || '"}}' END,
      {start} + {n} * {span} + 60
    FROM calls_n WHERE {u4} < 0.3
    """


def _audit_select(n: str, start: float, total: int) -> str:
    u8, u9 = (_u(n, s) for s in (157, 173))
    span = 30 * DAY / total
    return f"""
    SELECT 'bench_' || {n}, CASE {n} % 3 WHEN 0 THEN 'reply' WHEN 1 THEN 'triage'
      ELSE 'summary' END, 'audited', CASE WHEN {u9} < 0.04 THEN 0 ELSE 1 END, NULL, NULL, NULL,
      {start} + {n} * {span} + 3600
    FROM calls_n WHERE {u8} < 0.05
    """


_FEEDBACK = "call_id, feature, kind, accepted, score, edit_distance, attributes, created_at"


def fill_sqlite(path: str, total: int) -> float:
    """A SQLite store of ``total`` call records; seconds it took."""
    import sqlite3

    import aiguard
    from aiguard._runtime.records import CALL_RECORD_COLUMNS

    aiguard.SQLiteStore(path).close()  # the schema
    t0 = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    start = time.time() - 30 * DAY
    numbers = f"WITH RECURSIVE calls_n(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM calls_n WHERE n < {total - 1})"  # noqa: E501
    db.execute(
        f"{numbers} INSERT INTO call_records ({', '.join(CALL_RECORD_COLUMNS)}) "
        + _calls_select("n", total, start).replace("SELECT", "SELECT", 1)
        + " FROM calls_n"
    )
    db.execute(
        f"{numbers} INSERT INTO feedback ({_FEEDBACK}) " + _feedback_select("n", start, total)
    )
    db.execute(f"{numbers} INSERT INTO feedback ({_FEEDBACK}) " + _audit_select("n", start, total))
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()
    return time.perf_counter() - t0


def fill_postgres(schema: str, total: int) -> float:
    """A PostgreSQL schema with ``total`` call records; seconds it took."""
    import psycopg

    from aiguard._runtime.records import CALL_RECORD_COLUMNS
    from aiguard.postgres import PostgresStore

    PostgresStore(PG_URL, schema=schema).close()
    t0 = time.perf_counter()
    start = time.time() - 30 * DAY
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"SET search_path = {schema}")
        conn.execute(
            f"INSERT INTO call_records ({', '.join(CALL_RECORD_COLUMNS)}) "
            + _calls_select("n", total, start)
            + f" FROM generate_series(0, {total - 1}) AS calls_n(n)"
        )
        numbers = f"WITH calls_n AS (SELECT n FROM generate_series(0, {total - 1}) AS g(n))"
        for select in (_feedback_select, _audit_select):
            conn.execute(
                f"{numbers} INSERT INTO feedback ({_FEEDBACK}) " + select("n", start, total)
            )
        conn.execute("VACUUM ANALYZE call_records")
        conn.execute("VACUUM ANALYZE feedback")
    return time.perf_counter() - t0


CHILD = r"""
import json, resource, sys, time
import aiguard
from aiguard.postgres import PostgresStore

kind, where, by = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
if kind == "sqlite":
    store = aiguard.SQLiteStore(where)
else:
    url, schema = where.rsplit("#", 1)
    store = PostgresStore(url, schema=schema)  # the report has its own deadline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
result = aiguard.report(store=store, by=by)
took = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": round(took, 2), "peak_mib": round(peak, 1),
                  "above_baseline_mib": round(peak - base, 1),
                  "calls": sum(f.calls for f in result.features),
                  "groups": sum(len(g) for g in result.groups.values())}))
"""


def measure(kind: str, where: str, by: str, timeout: float) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, kind, where, by],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite", default="10000,100000,1000000")
    parser.add_argument("--postgres", default="")
    parser.add_argument("--by", default="source,arm,region,plan")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for total in [int(x) for x in args.sqlite.split(",") if x]:
            path = os.path.join(tmp, f"scale-{total}.db")
            filled = fill_sqlite(path, total)
            row = {"store": "sqlite", "records": total, "fill_seconds": round(filled, 1),
                   **measure("sqlite", path, args.by, args.timeout)}  # fmt: skip
            print(json.dumps(row), flush=True)
            results.append(row)
            os.remove(path)
    for total in [int(x) for x in args.postgres.split(",") if x]:
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        try:
            filled = fill_postgres(schema, total)
            row = {"store": "postgres", "records": total, "fill_seconds": round(filled, 1),
                   **measure("postgres", f"{PG_URL}#{schema}", args.by, args.timeout)}  # fmt: skip
            print(json.dumps(row), flush=True)
            results.append(row)
        finally:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
