"""Each call's feedback summed up on its call record, kept by the database itself.

The report and the quality figures need, per call, what its feedback says: the latest decision
(the feedback row with the highest id among ``accepted``, ``edited``, ``rejected``,
``corrected``) and its edit distance, the latest audit verdict (``audited`` rows), the sum and
count of scores, and the attributes of the row that stands for the call (the latest that is not
a comment, rating or audit; else the first). Finding those by joining every call of a window to
its feedback was most of a report's time (3 of 4 joins over the feedback at 5 million calls), so
they are columns of ``call_records`` (``fb_*``), written by triggers in the same transaction as
the rows they come from:

- a feedback row inserted refreshes its call's columns (when its call is recorded);
- a call record inserted after its feedback (feedback sent before the record reached the store,
  or a record written again) takes its feedback's figures at once.

The triggers recompute a call's columns from all of its feedback rows, so the result never
depends on the order rows arrive in. SQLite runs them per row (a few index lookups); PostgreSQL
per statement, over the rows the statement inserted (a bulk load is one grouped pass).
"""

from __future__ import annotations

from ._report_data import DECISIONS, NOT_UNDOING

COLUMNS = (
    ("fb_decision", "TEXT", "TEXT"),
    ("fb_distance", "REAL", "DOUBLE PRECISION"),
    ("fb_verdict", "INTEGER", "INTEGER"),
    ("fb_score_sum", "REAL", "DOUBLE PRECISION"),
    ("fb_score_n", "INTEGER", "INTEGER"),
    ("fb_attributes", "TEXT", "TEXT"),
)
"""``(column, SQLite type, PostgreSQL type)`` of the feedback figures on ``call_records``."""

_DECISIONS = "(" + ", ".join(f"'{k}'" for k in DECISIONS) + ")"
_NOT_UNDOING = "(" + ", ".join(f"'{k}'" for k in NOT_UNDOING) + ")"
_AUDIT = "f.kind = 'audited'"


def _sqlite_set(call: str) -> str:
    """SQLite: ``SET`` assignments of one call's figures (``call``: the SQL of its id)."""

    def latest(column: str, condition: str) -> str:
        return (
            f"(SELECT f.{column} FROM feedback f WHERE f.call_id = {call} AND {condition} "
            "ORDER BY f.id DESC LIMIT 1)"
        )

    row = (
        f"(SELECT f.attributes FROM feedback f WHERE f.call_id = {call} ORDER BY "
        f"f.kind IN {_NOT_UNDOING}, CASE WHEN f.kind IN {_NOT_UNDOING} THEN f.id ELSE -f.id END "
        "LIMIT 1)"
    )
    return ", ".join(
        (
            f"fb_decision = {latest('kind', f'f.kind IN {_DECISIONS}')}",
            f"fb_distance = {latest('edit_distance', f'f.kind IN {_DECISIONS}')}",
            f"fb_verdict = {latest('accepted', _AUDIT)}",
            f"fb_score_sum = (SELECT SUM(f.score) FROM feedback f WHERE f.call_id = {call})",
            f"fb_score_n = (SELECT COUNT(f.score) FROM feedback f WHERE f.call_id = {call})",
            f"fb_attributes = {row}",
        )
    )


def sqlite_statements() -> list[str]:
    """SQLite: the columns' triggers (the columns are added by the migration)."""
    refresh = f"UPDATE call_records SET {_sqlite_set('NEW.call_id')} WHERE call_id = NEW.call_id"
    return [
        "CREATE TRIGGER IF NOT EXISTS aiguard_feedback_figures AFTER INSERT ON feedback "
        f"BEGIN {refresh}; END",
        "CREATE TRIGGER IF NOT EXISTS aiguard_call_feedback_figures AFTER INSERT ON call_records "
        "WHEN EXISTS (SELECT 1 FROM feedback WHERE call_id = NEW.call_id) "
        f"BEGIN {refresh}; END",
    ]


SQLITE_BACKFILL = (
    f"UPDATE call_records SET {_sqlite_set('call_records.call_id')} "
    "WHERE call_id IN (SELECT call_id FROM feedback)"
)
"""SQLite: the figures of the calls recorded before the columns existed."""


def _postgres_update(calls: str, schema: str = "") -> str:
    """PostgreSQL: one grouped pass over the feedback of the calls ``calls`` (a subquery of
    call ids) that sets their figures; ``schema``: the tables' qualifier (with its dot)."""

    def latest(column: str, condition: str) -> str:
        return f"(array_agg(f.{column} ORDER BY f.id DESC) FILTER (WHERE {condition}))[1]"

    first = f"f.kind IN {_NOT_UNDOING}"
    return (
        f"UPDATE {schema}call_records c SET fb_decision = a.decision, fb_distance = a.distance, "
        "fb_verdict = a.verdict, fb_score_sum = a.score_sum, fb_score_n = a.score_n, "
        "fb_attributes = a.attributes FROM (SELECT f.call_id, "
        f"{latest('kind', f'f.kind IN {_DECISIONS}')} AS decision, "
        f"{latest('edit_distance', f'f.kind IN {_DECISIONS}')} AS distance, "
        f"{latest('accepted', _AUDIT)} AS verdict, "
        "SUM(f.score) AS score_sum, COUNT(f.score) AS score_n, "
        f"(array_agg(f.attributes ORDER BY {first}, CASE WHEN {first} THEN f.id ELSE -f.id END)"
        f")[1] AS attributes FROM {schema}feedback f WHERE f.call_id IN ({calls}) "
        "GROUP BY f.call_id) a "
        "WHERE c.call_id = a.call_id"
    )


def postgres_statements(schema: str) -> list[str]:
    """PostgreSQL: the columns and their triggers, in ``schema`` (an identifier checked by the
    store). A trigger's function names the tables in the schema of the table that fired it, so
    the tables can be moved to another schema and their triggers still work, whatever the
    session's search path."""
    here = "%1$I."  # format()'s first argument: the schema of the table that fired
    functions = (
        ("aiguard_feedback_figures", "feedback", "SELECT DISTINCT call_id FROM changed"),
        (
            "aiguard_call_feedback_figures",
            "call_records",
            "SELECT n.call_id FROM changed n WHERE EXISTS "
            f"(SELECT 1 FROM {here}feedback e WHERE e.call_id = n.call_id)",
        ),
    )
    out = [
        f"ALTER TABLE call_records ADD COLUMN IF NOT EXISTS {name} {pg_type}"
        for name, _, pg_type in COLUMNS
    ]
    for function, table, calls in functions:
        out += [
            f"CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger LANGUAGE plpgsql "
            f"AS $body$ BEGIN EXECUTE format($sql${_postgres_update(calls, here)}$sql$, "
            "TG_TABLE_SCHEMA); RETURN NULL; END $body$",
            f"DROP TRIGGER IF EXISTS {function} ON {table}",
            f"CREATE TRIGGER {function} AFTER INSERT ON {table} REFERENCING NEW TABLE AS changed "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{function}()",
        ]
    return out


POSTGRES_BACKFILL = _postgres_update("SELECT call_id FROM feedback")
"""PostgreSQL: the figures of the calls recorded before the columns existed."""
