"""Feedback: recorded against calls, durable, measured, and visible next to traces."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import aiguard
from aiguard import FeedbackKind
from aiguard.testing import capture_telemetry


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "aiguard.db"
    aiguard.configure(store=path)
    return path


def reply_guard() -> Any:
    @aiguard.guard("reply")
    def reply(text: str) -> str:
        return "Thanks, we are on it."

    return reply


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_every_kind_of_feedback_on_an_outcome(store: Path) -> None:
    """accept, reject, edit, correct and rate record what the user did."""
    reply = reply_guard()
    a = reply.outcome("x").accept(by="u1")
    r = reply.outcome("x").reject(reason="wrong tone", by="u2")
    e = reply.outcome("x").edit("Thanks! We are on it.", by="u3")
    c = reply.outcome("x").correct("escalate")
    s = reply.outcome("x").rate(4)
    assert (a.kind, a.accepted, a.by) == (FeedbackKind.ACCEPTED, True, "u1")
    assert (r.kind, r.accepted, r.comment) == (FeedbackKind.REJECTED, False, "wrong tone")
    assert e.kind is FeedbackKind.EDITED and e.accepted is True
    assert e.edit_distance == pytest.approx(2 / 21)
    assert (c.kind, c.accepted, c.label) == (FeedbackKind.CORRECTED, False, "escalate")
    assert (s.kind, s.score, s.accepted) == (FeedbackKind.RATED, 4, None)
    assert all(fb.feature == "reply" for fb in (a, r, e, c, s))
    assert rows(store, "SELECT count(*) FROM feedback") == [(5,)]


def test_feedback_by_call_id_uses_the_served_value(store: Path) -> None:
    """aiguard.feedback(call_id, edited=...) measures the edit against what was served: the
    captured output (capture on), or ``served=``; memory keeps ids, never served values, so
    without either the distance is unknown rather than guessed."""
    reply = reply_guard()
    reply("x")
    call_id = aiguard.last_outcome().call_id  # type: ignore[union-attr]
    fb = aiguard.feedback(call_id, edited="Thanks, we are on it!", attributes={"plan": "pro"})
    assert fb.edit_distance is None and fb.attributes == {"plan": "pro"}
    fb = aiguard.feedback(call_id, edited="Thanks, we are on it!", served=reply("x"))
    assert fb.edit_distance == pytest.approx(1 / 21)
    aiguard.configure(capture=True)
    reply("x")
    call_id = aiguard.last_outcome().call_id  # type: ignore[union-attr]
    fb = aiguard.feedback(call_id, edited="Thanks, we are on it!")  # record still queued
    assert fb.edit_distance == pytest.approx(1 / 21)
    aiguard.flush()
    reply("x")
    call_id = aiguard.last_outcome().call_id  # type: ignore[union-attr]
    aiguard.flush()
    fb = aiguard.feedback(call_id, edited="Thanks, we are on it!")  # read from the store
    assert fb.edit_distance == pytest.approx(1 / 21)


def test_structured_edits_count_fields_changed(store: Path) -> None:
    """For structured values the edit is the share of fields changed."""

    @aiguard.guard("triage")
    def triage(text: str) -> dict[str, str]:
        return {"label": "bug", "team": "web", "priority": "p2"}

    fb = triage.outcome("x").edit({"label": "bug", "team": "api", "priority": "p1"})
    assert fb.edit_distance == pytest.approx(2 / 3)


def test_unknown_call_id_is_a_clear_error(store: Path) -> None:
    """Feedback for a call no record has raises UnknownCall naming it."""
    with pytest.raises(aiguard.UnknownCall, match="ag_nope"):
        aiguard.feedback("ag_nope", accepted=True)


def test_feedback_without_a_store_names_the_fix() -> None:
    """No store configured: the error says how to configure one."""
    reply = reply_guard()
    outcome = reply.outcome("x")
    with pytest.raises(aiguard.ConfigError, match=r"configure\(store="):
        outcome.accept()


def test_feedback_that_says_nothing_is_refused(store: Path) -> None:
    """At least one of accepted, score, edited, label or comment is needed."""
    outcome = reply_guard().outcome("x")
    with pytest.raises(aiguard.ConfigError, match="says nothing"):
        aiguard.feedback(outcome.call_id)


def test_feedback_twice_keeps_both_and_the_latest_counts(store: Path) -> None:
    """Both rows are kept with their times; the report counts the latest."""
    outcome = reply_guard().outcome("x")
    first = outcome.reject()
    second = outcome.accept()
    assert second.created_at >= first.created_at
    assert rows(store, "SELECT kind FROM feedback ORDER BY id") == [("rejected",), ("accepted",)]
    figures = aiguard.report("reply").features[0]
    assert (figures.accepted, figures.rejected, figures.acceptance_rate) == (1, 0, 1.0)


def test_review_resolutions_are_feedback(store: Path) -> None:
    """Resolving a review item records feedback of kind 'reviewed' with the answer as label."""

    @aiguard.guard("triage", fallback=aiguard.HumanReview(respond=lambda item: "pending"))
    def triage(text: str) -> str:
        raise RuntimeError("model down")

    outcome = triage.outcome("refund?")
    aiguard.ReviewQueue().resolve(outcome.review_id, "refunds", reviewer="ana")  # type: ignore[arg-type]
    assert rows(store, "SELECT call_id, kind, label, by FROM feedback") == [
        (outcome.call_id, "reviewed", '"refunds"', "ana")
    ]


def test_feedback_becomes_an_evaluation_event_in_the_calls_trace(store: Path) -> None:
    """A gen_ai.evaluation.result event, in the call's trace, with score and label."""
    with capture_telemetry() as telemetry:
        outcome = reply_guard().outcome("x")
        outcome.reject(reason="off topic")
        points = telemetry.metric_points("aiguard.feedback")
    call = next(s for s in telemetry.spans() if s.name == "reply")
    evaluation = next(s for s in telemetry.spans() if s.name.startswith("evaluation"))
    assert evaluation.context.trace_id == call.context.trace_id
    assert evaluation.parent is not None and evaluation.parent.span_id == call.context.span_id
    [event] = evaluation.events
    assert event.name == "gen_ai.evaluation.result"
    assert event.attributes["gen_ai.evaluation.name"] == "aiguard.feedback.rejected"
    assert event.attributes["gen_ai.evaluation.score.value"] == 0.0
    assert event.attributes["gen_ai.evaluation.score.label"] == "rejected"
    assert event.attributes["gen_ai.evaluation.explanation"] == "off topic"
    assert [(dict(p.attributes), p.value) for p in points] == [
        ({"aiguard.feature": "reply", "aiguard.feedback.kind": "rejected"}, 1)
    ]


def test_a_failing_store_raises_rather_than_pretends(store: Path) -> None:
    """If the store cannot write, feedback() raises StoreError: nothing is silently lost."""
    outcome = reply_guard().outcome("x")
    aiguard.flush()
    from aiguard.store import configured

    st = configured()
    st._db.execute("DROP TABLE feedback")  # type: ignore[attr-defined]
    with pytest.raises(aiguard.StoreError):
        outcome.accept()


@given(st.text(max_size=30), st.text(max_size=30))
def test_edit_distance_is_a_normalised_metric(a: str, b: str) -> None:
    """0 for identical texts, in [0, 1], symmetric."""
    d = aiguard.edit_distance(a, b)
    assert d is not None and 0.0 <= d <= 1.0
    assert (d == 0.0) == (a == b)
    assert d == aiguard.edit_distance(b, a)


SCRIPT = """
import sys, aiguard
aiguard.configure(store=sys.argv[1])

@aiguard.guard("reply", fallback=aiguard.HumanReview(respond=lambda item: "pending"))
def reply(text):
    if text == "hard":
        raise RuntimeError("model down")
    return "ok"

outcome = reply.outcome("easy")
fb = outcome.accept(by="user")
pending = reply.outcome("hard")
print(outcome.call_id, fb.id, pending.review_id, flush=True)
import time
time.sleep(60)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_nothing_acknowledged_is_lost_when_the_process_is_killed(tmp_path: Path) -> None:
    """SIGKILL right after feedback() and a review item return: both are in the store."""
    path = tmp_path / "kill.db"
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(SCRIPT))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        call_id, fb_id, review_id = proc.stdout.readline().split()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert rows(path, "SELECT id, call_id, kind FROM feedback") == [
        (int(fb_id), call_id, "accepted")
    ]
    assert rows(path, "SELECT id, status FROM review_items") == [(review_id, "pending")]
