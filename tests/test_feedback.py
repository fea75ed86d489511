"""Feedback: recorded against calls, durable, measured, and visible next to traces."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from _modes import Mode
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace

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
    """A gen_ai.evaluation.result event linked to the call's span, with score and label."""
    with capture_telemetry() as telemetry:
        outcome = reply_guard().outcome("x")
        outcome.reject(reason="off topic")
        points = telemetry.metric_points("aiguard.feedback")
    call = next(s for s in telemetry.spans() if s.name == "reply")
    evaluation = next(s for s in telemetry.spans() if s.name.startswith("evaluation"))
    [link] = evaluation.links
    assert (link.context.trace_id, link.context.span_id) == (
        call.context.trace_id,
        call.context.span_id,
    )
    assert link.attributes["aiguard.call_id"] == outcome.call_id
    [event] = evaluation.events
    assert event.name == "gen_ai.evaluation.result"
    assert event.attributes["gen_ai.evaluation.name"] == "aiguard.feedback.rejected"
    assert event.attributes["gen_ai.evaluation.score.value"] == 0.0
    assert event.attributes["gen_ai.evaluation.score.label"] == "rejected"
    assert "gen_ai.evaluation.explanation" not in event.attributes  # no redact= hook
    assert [(dict(p.attributes), p.value) for p in points] == [
        ({"aiguard.feature": "reply", "aiguard.feedback.kind": "rejected"}, 1)
    ]


@pytest.mark.parametrize("opt_in", ["", "gen_ai_latest_experimental"])
def test_feedback_later_does_not_stretch_the_calls_trace(
    mode: Mode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opt_in: str
) -> None:
    """Feedback given later is in a trace of its own, linked to the call's span: the call's
    trace lasts as long as the call (in both generations of the GenAI conventions)."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", opt_in)
    aiguard.configure(store=tmp_path / "a.db")

    @mode.guard("quick")
    def quick(text: str) -> str:
        return "ok"

    with capture_telemetry() as telemetry:
        outcome = mode.outcome(quick, "x")
        time.sleep(0.05)
        aiguard.feedback(outcome, accepted=True)
    call = next(s for s in telemetry.spans() if s.name == "quick")
    evaluation = next(s for s in telemetry.spans() if s.name == "evaluation quick")
    in_call_trace = [s for s in telemetry.spans() if s.context.trace_id == call.context.trace_id]
    assert in_call_trace == [call]
    trace_duration = max(s.end_time for s in in_call_trace) - min(
        s.start_time for s in in_call_trace
    )
    assert trace_duration == call.end_time - call.start_time < 50_000_000  # ns
    assert evaluation.parent is None
    assert evaluation.context.trace_id != call.context.trace_id
    assert [lk.context.span_id for lk in evaluation.links] == [call.context.span_id]
    assert evaluation.start_time >= call.end_time + 50_000_000
    assert evaluation.events[0].attributes["gen_ai.evaluation.score.value"] == 1.0


def test_feedback_in_a_request_span_is_its_child(store: Path) -> None:
    """Feedback given while a span is current (the request that carries it) is a child of that
    span, still linked to the call."""
    reply = reply_guard()
    with capture_telemetry() as telemetry:
        outcome = reply.outcome("x")
        tracer = trace.get_tracer("app")
        with tracer.start_as_current_span("POST /feedback") as request:
            outcome.accept()
    evaluation = next(s for s in telemetry.spans() if s.name == "evaluation reply")
    assert evaluation.parent is not None
    assert evaluation.parent.span_id == request.get_span_context().span_id
    call = next(s for s in telemetry.spans() if s.name == "reply")
    assert [lk.context.span_id for lk in evaluation.links] == [call.context.span_id]


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        ("escalate", "escalate"),
        ({"label": "bug", "team": "web"}, '{"label":"bug","team":"web"}'),
        (["a", "b"], '["a","b"]'),
        (3, "3"),
        ("é ü", "é ü"),
    ],
)
def test_a_correction_label_is_plain_text(store: Path, label: Any, shown: str) -> None:
    """A correction's score.label: a str as itself, anything else as compact JSON (never a
    Python repr)."""
    reply = reply_guard()
    with capture_telemetry() as telemetry:
        reply.outcome("x").correct(label)
    [evaluation] = [s for s in telemetry.spans() if s.name == "evaluation reply"]
    assert evaluation.events[0].attributes["gen_ai.evaluation.score.label"] == shown
    assert evaluation.attributes["gen_ai.evaluation.score.label"] == shown


def test_comments_and_labels_go_through_the_redact_hook(store: Path) -> None:
    """With a redact= hook, the comment (explanation) and the label are what it returns."""
    aiguard.configure(redact=lambda text: text.replace("ana@example.com", "<email>"))
    reply = reply_guard()
    with capture_telemetry() as telemetry:
        reply.outcome("x").reject(reason="wrong, ask ana@example.com")
        reply.outcome("x").correct("ana@example.com")
    first, second = [s.events[0] for s in telemetry.spans() if s.name == "evaluation reply"]
    assert first.attributes["gen_ai.evaluation.explanation"] == "wrong, ask <email>"
    assert second.attributes["gen_ai.evaluation.score.label"] == "<email>"


def test_a_failing_redact_hook_leaves_comments_out_and_labels_as_the_kind(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises: no explanation, the kind as the label; reported once, counted."""

    def hook(value: Any) -> Any:
        raise RuntimeError("hook bug")

    aiguard.configure(redact=hook)
    reply = reply_guard()
    with capture_telemetry() as telemetry, caplog.at_level("WARNING", logger="aiguard"):
        fb = reply.outcome("x").correct({"secret": "s3cr3t"})
        reply.outcome("x").reject(reason="s3cr3t")
    assert fb.label == {"secret": "s3cr3t"}  # the stored feedback is untouched
    events = [s.events[0] for s in telemetry.spans() if s.name == "evaluation reply"]
    assert [e.attributes["gen_ai.evaluation.score.label"] for e in events] == [
        "corrected",
        "rejected",
    ]
    assert all("gen_ai.evaluation.explanation" not in e.attributes for e in events)
    assert aiguard._runtime.errors.counts()["telemetry: redact hook"] == 2
    assert sum("redact hook" in r.getMessage() for r in caplog.records) == 1


def test_the_response_id_of_a_client_response_is_on_the_evaluation(store: Path) -> None:
    """Feedback on an Outcome whose result is the client's response carries its
    gen_ai.response.id; feedback by call id, or on a plain value, carries none."""
    from openai.types.chat import ChatCompletion

    response = ChatCompletion.model_construct(
        id="chatcmpl-123", object="chat.completion", created=0, model="m", choices=[]
    )

    @aiguard.guard("chat")
    def chat(text: str) -> Any:
        return response

    with capture_telemetry() as telemetry:
        outcome = chat.outcome("x")
        outcome.accept()
        aiguard.feedback(outcome.call_id, score=3)
        reply_guard().outcome("x").accept()
    events = [s.events[0].attributes for s in telemetry.spans() if s.name.startswith("evaluation")]
    assert [e.get("gen_ai.response.id") for e in events] == ["chatcmpl-123", None, None]


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
