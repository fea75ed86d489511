"""Each call's feedback figures on its record (``fb_*`` columns, kept by triggers), on real
SQLite and PostgreSQL: whatever order feedback and records arrive in (feedback before its
call's record, a record written again, several pieces of feedback on one call), the columns say
what the call's feedback rows say, by the rule the report documents."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from services import fresh_store

from aiguard._feedback_figures import COLUMNS
from aiguard._report_data import DECISIONS, NOT_UNDOING
from aiguard._runtime.records import CALL_RECORD_COLUMNS

KINDS = (*DECISIONS, *NOT_UNDOING)
CASES = itertools.count()
NAMES = [name for name, _, _ in COLUMNS]


def expected(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one call from its feedback rows (in id order), by the documented rule."""
    if not rows:
        return dict.fromkeys(NAMES)
    decisions = [r for r in rows if r["kind"] in DECISIONS]
    audits = [r for r in rows if r["kind"] == "audited"]
    scores = [r["score"] for r in rows if r["score"] is not None]
    undoing = [r for r in rows if r["kind"] not in NOT_UNDOING]
    stands = undoing[-1] if undoing else rows[0]
    return {
        "fb_decision": decisions[-1]["kind"] if decisions else None,
        "fb_distance": decisions[-1]["edit_distance"] if decisions else None,
        "fb_verdict": audits[-1]["accepted"] if audits else None,
        "fb_score_sum": sum(scores) if scores else None,
        "fb_score_n": len(scores),
        "fb_attributes": stands["attributes"],
    }


def record(call_id: str) -> tuple[Any, ...]:
    row = dict.fromkeys(CALL_RECORD_COLUMNS)
    row.update(call_id=call_id, feature="f", started_at=1000.0, source="model",
               reason="served", latency=0.01)  # fmt: skip
    return tuple(row[c] for c in CALL_RECORD_COLUMNS)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with fresh_store(request.param, tmp_path / "figures.db") as found:
        yield found


def figures_of(store: Any, call_id: str) -> dict[str, Any]:
    mark = "?" if store._mark == "?" else "%s"
    [row] = store._run(f"SELECT {', '.join(NAMES)} FROM call_records WHERE call_id = {mark}",
                       (call_id,))  # fmt: skip
    return dict(zip(NAMES, row, strict=True))


feedback_row = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(KINDS),
        "accepted": st.sampled_from([None, 0, 1]),
        "score": st.one_of(st.none(), st.integers(-5, 5).map(float)),
        "edit_distance": st.one_of(st.none(), st.sampled_from([0.0, 0.25, 1.0])),
        "attributes": st.one_of(st.none(), st.sampled_from(['{"plan": "pro"}', '{"n": 1}'])),
    }
)
# where the call's record is written: before all feedback, after the i-th, or twice
steps = st.tuples(st.lists(feedback_row, max_size=6), st.integers(0, 6), st.booleans())


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=steps)
def test_the_columns_say_what_the_feedback_says_in_any_order(
    store: Any, case: tuple[list[dict[str, Any]], int, bool]
) -> None:
    rows, at, again = case
    call_id = f"ag_case_{next(CASES)}"  # a call of its own for every run, replays included
    at = min(at, len(rows))
    for i, row in enumerate(rows):
        if i == at:
            store.add_call_records([record(call_id)])
        store.add_feedback({**row, "call_id": call_id, "feature": "f", "created_at": 1001.0})
    if at >= len(rows):
        store.add_call_records([record(call_id)])
    if again:  # a record written again (a retried batch): replaced in SQLite, kept in PostgreSQL
        store.add_call_records([record(call_id)])
    stored = store.feedback_rows(call_id=call_id)
    assert len(stored) == len(rows)
    assert figures_of(store, call_id) == expected(sorted(stored, key=lambda r: r["id"]))


def test_feedback_on_a_call_not_recorded_changes_nothing_until_it_lands(store: Any) -> None:
    store.add_call_records([record("ag_other")])
    store.add_feedback({"call_id": "ag_late", "feature": None, "kind": "rejected",
                        "created_at": 1001.0})  # fmt: skip
    assert figures_of(store, "ag_other") == dict.fromkeys(NAMES)
    store.add_call_records([record("ag_late")])
    assert figures_of(store, "ag_late")["fb_decision"] == "rejected"
