"""Adoption counted in the database: distinct rollout units per ISO week, AI arm and eligible.

A call's ``unit`` is a hash of its rollout key (``rollout.unit_hash``), recorded when the
rollout read the key; calls without one (no rollout, an excluded segment, a missing key, rows
written before schema version 8) are not counted. A unit is eligible in a week when it has a
call then; it is served by the AI arm when one of its calls that week is in the ``ai`` arm and
was answered by an AI source (any source but those of ``NON_AI``). Weeks start on Monday, UTC
(ISO 8601); ``week`` is the number of the week since the one holding 1970-01-01 (its Monday is
day ``7 * week - 3``). The same SQL text serves SQLite and PostgreSQL but for the floor.

A store without SQL gets the same counts from its ``call_records`` (:func:`in_python`, the
reference the SQL is tested against).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

NON_AI = ("rules", "default", "human", "baseline")
WEEK_DAYS = 7

Counts = tuple[tuple[int, int], list[tuple[int, int, int]]]
"""((eligible units, AI units) over the window, [(week, eligible units, AI units), ...])."""


def _week(postgres: bool) -> str:
    x = "(started_at / 86400.0 + 3) / 7"
    if postgres:
        return f"CAST(FLOOR({x}) AS BIGINT)"
    return f"(CAST({x} AS INTEGER) - ({x} < 0 AND {x} <> CAST({x} AS INTEGER)))"


def statements(mark: str, feature: str, since: float | None) -> tuple[str, str, tuple[Any, ...]]:
    """(the window's counts, the counts per week, their parameters)."""
    postgres = mark == "%s"
    where = f"feature = {mark} AND unit IS NOT NULL"
    params: list[Any] = [feature]
    if since is not None:
        where += f" AND started_at >= {mark}"
        params.append(since)
    others = ", ".join(f"'{s}'" for s in NON_AI)
    ai = f"CASE WHEN arm = 'ai' AND source IS NOT NULL AND source NOT IN ({others}) THEN unit END"
    counts = f"COUNT(DISTINCT unit), COUNT(DISTINCT {ai})"
    total = f"SELECT {counts} FROM call_records WHERE {where}"
    week = _week(postgres)
    weekly = (
        f"SELECT {week} AS wk, {counts} FROM call_records WHERE {where} GROUP BY {week} ORDER BY wk"
    )
    return total, weekly, tuple(params)


def in_sql(run: Any, mark: str, feature: str, since: float | None) -> Counts:
    total, weekly, params = statements(mark, feature, since)
    [(eligible, ai)] = run(total, params)
    weeks = [(int(w), int(e), int(a)) for w, e, a in run(weekly, params)]
    return (int(eligible or 0), int(ai or 0)), weeks


def in_python(calls: Iterable[dict[str, Any]]) -> Counts:
    """The same counts from call records (dicts), for a store without SQL."""
    eligible: set[str] = set()
    ai: set[str] = set()
    weeks: dict[int, tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    for c in calls:
        unit = c.get("unit")
        if unit is None:
            continue
        week = math.floor((c["started_at"] / 86400.0 + 3) / WEEK_DAYS)
        eligible.add(unit)
        weeks[week][0].add(unit)
        source = c.get("source")
        if c.get("arm") == "ai" and source is not None and source not in NON_AI:
            ai.add(unit)
            weeks[week][1].add(unit)
    return (len(eligible), len(ai)), [(w, len(e), len(a)) for w, (e, a) in sorted(weeks.items())]


def adoption_counts(store: Any, feature: str, since: float | None) -> Counts:
    """The adoption counts of ``feature`` since ``since``, in the store's database when it has
    one, else from its call records."""
    run, mark = getattr(store, "_run", None), getattr(store, "_mark", None)
    if run is not None and mark in ("?", "%s"):
        return in_sql(run, mark, feature, since)
    return in_python(store.call_records(feature=feature, since=since))
