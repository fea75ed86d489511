"""Audit sampling: a hashed share of served answers goes to the review queue, never blocking or
changing the answer, never lost silently; reviewers' verdicts become ``audited`` feedback."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _modes import Mode
from hypothesis import given
from hypothesis import strategies as st
from services import fresh_store

import aiguard
from aiguard._engine.tagging import compile_tags
from aiguard._runtime.records import audit_cut, audit_hash
from aiguard.store import configured


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A configured store of each kind (call records and audit items go there)."""
    with fresh_store(request.param, tmp_path / "audit.db") as s:
        aiguard.configure(store=s)
        try:
            yield s
        finally:
            aiguard.configure(store=None)


def settle(seconds: float = 10.0) -> aiguard.records.RecordCounts:
    """Flush until nothing is queued (or time runs out)."""
    deadline = time.monotonic() + seconds
    while True:
        aiguard.flush()
        counts = aiguard.records.counts()
        if counts.queued == 0 or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)


def triage(mode: Mode, feature: str, audit: float, **extra: Any) -> Any:
    @mode.guard(
        feature,
        confidence="score",
        threshold=0.5,
        fallback=aiguard.Default({"label": "other", "score": 1.0}),
        audit=audit,
        **extra,
    )
    def f(ticket: str, score: float = 0.9) -> dict[str, Any]:
        return {"label": "billing", "score": score}

    return f


# -- sampling -------------------------------------------------------------------------------------


def test_the_share_audited_is_within_binomial_bounds(tmp_path: Path) -> None:
    """Over 20,000 served calls with audit=0.05, the number of audit items is within 5 standard
    deviations of 1,000, and exactly the calls whose id hashes under the bound."""
    aiguard.configure(store=tmp_path / "share.db")
    n, share = 20_000, 0.05

    @aiguard.guard("share", audit=share)
    def f(i: int) -> int:
        return i

    ids = [f.outcome(i).call_id for i in range(n)]
    settle(30)
    items = aiguard.ReviewQueue().pending("share", limit=n)
    sd = math.sqrt(n * share * (1 - share))
    assert abs(len(items) - n * share) <= 5 * sd, len(items)
    cut = audit_cut(share)
    assert {i.call_id for i in items} == {c for c in ids if audit_hash(c) < cut}
    assert aiguard.records.counts().audits_written == len(items)


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=50))
def test_the_choice_is_a_function_of_the_call_id(call_ids: list[str]) -> None:
    """Same ids, same choice, on any replica (a fresh compile), for every share."""
    for share in (0.0, 0.02, 0.5, 1.0):
        a = compile_tags("f", None, share, None)
        b = compile_tags("g", None, share, None)
        first = [a.audited(c) if a else False for c in call_ids]
        assert first == [b.audited(c) if b else False for c in call_ids]
        if share == 1.0:
            assert all(first)
        if share == 0.0:
            assert not any(first)


def test_audit_hash_is_uniform() -> None:
    """The hash's top bits spread evenly over 10 buckets (chi-square, 9 d.f., p < 1e-4 bound)."""
    n = 20_000
    counts = [0] * 10
    for i in range(n):
        counts[audit_hash(f"ag_0123456789abcdef_{i:x}") * 10 >> 64] += 1
    chi2 = sum((c - n / 10) ** 2 / (n / 10) for c in counts)
    assert chi2 < 33.7, counts


def test_only_served_answers_are_audited(mode: Mode, store: Any) -> None:
    """audit=1: every served answer is an audit item (arguments, served value, confidence);
    calls that fell back are not; the answer is what the model gave."""
    f = triage(mode, "only-served", 1.0)
    served = mode.outcome(f, "refund please", 0.9)
    fell = mode.outcome(f, "hello", 0.1)
    assert served.value == {"label": "billing", "score": 0.9}
    assert fell.value == {"label": "other", "score": 1.0}
    settle()
    [item] = aiguard.ReviewQueue().pending("only-served")
    assert item.reason == "audit" and item.call_id == served.call_id
    assert item.arguments == {"ticket": "refund please", "score": 0.9}
    assert item.model_result == {"label": "billing", "score": 0.9}
    assert item.confidence == 0.9
    assert {r["call_id"] for r in store.call_records(feature="only-served")} == {
        served.call_id,
        fell.call_id,
    }


def test_a_retried_call_that_is_served_is_audited(store: Any) -> None:
    """The served answer of a retry goes to audit like any served answer."""
    tries = {"n": 0}

    @aiguard.guard(
        "audit-retry", audit=1.0, retry=aiguard.Retry(attempts=2, backoff=0.001, on=(OSError,))
    )
    def f(x: int) -> int:
        tries["n"] += 1
        if tries["n"] == 1:
            raise OSError("flaky")
        return x * 2

    assert f(21) == 42
    settle()
    [item] = aiguard.ReviewQueue().pending("audit-retry")
    assert item.model_result == 42 and item.arguments == {"x": 21}


def test_audit_from_feature_configuration(store: Any) -> None:
    """``features.<name>.audit`` applies to a guard that leaves audit out; audit=None on the
    guard turns it off whatever the configuration says."""
    aiguard.configure(features={"cfg-audit": {"audit": 1.0}, "cfg-off": {"audit": 1.0}})

    @aiguard.guard("cfg-audit")
    def f(x: int) -> int:
        return x

    @aiguard.guard("cfg-off", audit=None)
    def g(x: int) -> int:
        return x

    f(1)
    g(1)
    settle()
    queue = aiguard.ReviewQueue()
    assert queue.count("cfg-audit") == 1 and queue.count("cfg-off") == 0


def test_captured_calls_are_audited_too(store: Any) -> None:
    """With capture on, the record keeps inputs and output and the audit item is written."""
    aiguard.configure(capture=True)

    @aiguard.guard("cap-audit", audit=1.0)
    def f(x: int) -> dict[str, int]:
        return {"x": x}

    f(3)
    settle()
    [item] = aiguard.ReviewQueue().pending("cap-audit")
    assert item.model_result == {"x": 3}
    [row] = store.call_records(feature="cap-audit")
    assert row["output"] == '{"x":3}'


# -- never blocks, never changes, never lost silently --------------------------------------------


def test_a_slow_store_does_not_block_or_change_the_answer(mode: Mode, tmp_path: Path) -> None:
    """The store takes 0.5 s per write: 200 audited calls still take well under that in all,
    with their answers unchanged; the items arrive later."""
    aiguard.configure(store=tmp_path / "slow.db")
    store = configured()
    real = store.add_audited_records

    def slow(rows: list[Any], items: list[Any]) -> None:
        time.sleep(0.5)
        real(rows, items)

    store.add_audited_records = slow  # type: ignore[method-assign]
    f = triage(mode, "slow", 1.0)
    t0 = time.perf_counter()
    answers = [mode.call(f, f"t{i}") for i in range(200)]
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, elapsed
    assert answers == [{"label": "billing", "score": 0.9}] * 200
    settle(20)
    assert aiguard.ReviewQueue().count("slow") == 200


def test_a_store_that_is_down_then_back_loses_no_audit_item(tmp_path: Path) -> None:
    """The store refuses every write for a while: calls are served meanwhile; once it is back,
    every record and every audit item is written, nothing dropped."""
    aiguard.configure(store=tmp_path / "down.db")
    store = configured()
    real = store.add_audited_records
    down = threading.Event()
    down.set()

    def flaky(rows: list[Any], items: list[Any]) -> None:
        if down.is_set():
            raise aiguard.StoreError("connection refused")
        real(rows, items)

    store.add_audited_records = flaky  # type: ignore[method-assign]

    @aiguard.guard("down", audit=1.0)
    def f(x: int) -> int:
        return x

    assert [f(i) for i in range(50)] == list(range(50))
    aiguard.flush()
    assert aiguard.ReviewQueue().count("down") == 0
    down.clear()
    counts = settle(20)
    assert counts.dropped == 0 and counts.audits_dropped == 0, counts
    assert aiguard.ReviewQueue().count("down") == 50
    assert len(store.call_records(feature="down")) == 50


def test_an_audit_item_the_store_refuses_is_dropped_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that refuses audit items but takes records: each item is tried again, then given
    up (counted, logged once); the calls' records are all written."""
    aiguard.configure(store=tmp_path / "refuse.db")
    store = configured()

    def refuse(rows: list[Any], items: list[Any]) -> None:
        raise aiguard.StoreError("review_items is read-only")

    store.add_audited_records = refuse  # type: ignore[method-assign]

    @aiguard.guard("refuse", audit=0.5)
    def f(x: int) -> int:
        return x

    with caplog.at_level(logging.WARNING, logger="aiguard"):
        ids = [f.outcome(i).call_id for i in range(200)]
        for _ in range(5):
            counts = settle(20)
    chosen = sum(audit_hash(c) < audit_cut(0.5) for c in ids)
    assert chosen > 0
    assert counts.audits_dropped == chosen and counts.audits_written == 0, counts
    assert counts.dropped == 0 and counts.written == 200, counts
    assert len(store.call_records(feature="refuse")) == 200
    assert "refused an audit item twice" in caplog.text


def test_a_store_of_your_own_gets_records_then_items(tmp_path: Path) -> None:
    """A Store without add_audited_records: the records, then each audit item not stored yet."""
    inner = aiguard.SQLiteStore(tmp_path / "own.db")

    class Own:
        def __getattr__(self, name: str) -> Any:
            if name == "add_audited_records":
                raise AttributeError(name)
            return getattr(inner, name)

    own: Any = Own()
    aiguard.configure(store=own)

    @aiguard.guard("own", audit=1.0)
    def f(x: int) -> int:
        return x

    f(1)
    f(2)
    settle()
    assert inner.count_reviews(feature="own", status="pending") == 2
    assert len(inner.call_records(feature="own")) == 2


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1.5, -0.1, "0.1", True, float("nan")])
def test_audit_must_be_a_share(value: Any) -> None:
    """audit= not a number in [0, 1]: ConfigError naming the feature and the value."""
    with pytest.raises(aiguard.ConfigError, match=r"feature 'bad': audit=.* \[0, 1\]"):
        aiguard.guard("bad", audit=value)


def test_audit_in_configuration_must_be_a_share() -> None:
    """features.<name>.audit is checked by configure()."""
    with pytest.raises(aiguard.ConfigError, match=r"'audit'.*1\.5"):
        aiguard.configure(features={"x": {"audit": 1.5}})


def test_audit_without_recording_warns_at_the_first_call(caplog: pytest.LogCaptureFixture) -> None:
    """No store when the guard is first called: one warning says audit items cannot be sent;
    decoration before configure() does not warn."""

    with caplog.at_level(logging.WARNING, logger="aiguard"):

        @aiguard.guard("no-store", audit=0.1)
        def f(x: int) -> int:
            return x

        assert "no-store" not in caplog.text
        assert f(1) == 1
        f(2)
    assert caplog.text.count("audit=0.1 sends no audit items") == 1


def test_decorated_before_the_store_is_configured_audits(tmp_path: Path) -> None:
    """The usual order: decorate at import, configure the store later; audits are written."""

    @aiguard.guard("late-store", audit=1.0)
    def f(x: int) -> int:
        return x

    aiguard.configure(store=tmp_path / "late.db")
    f(1)
    settle()
    assert aiguard.ReviewQueue().count("late-store") == 1


# -- verdicts -------------------------------------------------------------------------------------


def audited_rows(store: Any, call_id: str) -> list[tuple[str, int | None]]:
    return [(r["kind"], r["accepted"]) for r in store.feedback_rows(call_id=call_id)]


def test_verdicts_become_audited_feedback(mode: Mode, store: Any) -> None:
    """correct=True / False: an ``audited`` row with accepted 1 / 0 and the answer as label."""
    f = triage(mode, "verdict", 1.0)
    a = mode.outcome(f, "one")
    b = mode.outcome(f, "two")
    settle()
    queue = aiguard.ReviewQueue()
    items = {i.call_id: i for i in queue.pending("verdict")}
    queue.resolve(items[a.call_id].id, {"label": "billing"}, correct=True, reviewer="ana")
    queue.resolve(items[b.call_id].id, {"label": "bug"}, correct=False)
    assert audited_rows(store, a.call_id) == [("audited", 1)]
    assert audited_rows(store, b.call_id) == [("audited", 0)]
    [row] = store.feedback_rows(call_id=b.call_id)
    assert row["label"] == '{"label":"bug"}'


@pytest.mark.parametrize(
    ("served", "answer", "correct"),
    [
        ({"label": "billing", "score": 0.9}, {"label": "billing"}, True),  # labels equal
        ({"label": "billing", "score": 0.9}, "billing", True),  # the answer is the label
        ({"label": "billing", "score": 0.9}, {"label": "bug"}, False),
        ({"label": "billing", "score": 0.9}, "bug", False),
        ("free text", "free text", True),  # no label: the values themselves
        ("free text", "other text", False),
        (True, True, True),
        (True, False, False),
        ({"x": 1}, {"x": 1}, True),
        ({"x": 1}, {"x": 2}, False),
    ],
)
def test_correct_is_derived_when_left_out(served: Any, answer: Any, correct: bool) -> None:
    """Without correct=: the answer's label (or itself) against the served answer's."""
    queue = aiguard.ReviewQueue(":memory:")
    item = queue.submit(
        feature="d", call_id="ag_1", reason="audit", arguments={}, model_result=served
    )
    queue.resolve(item.id, answer)
    [row] = queue.store.feedback_rows(call_id="ag_1")
    assert (row["kind"], row["accepted"]) == ("audited", int(correct))


def test_correct_on_another_item_is_a_review_error() -> None:
    """correct= means nothing for an item that is not an audit: ReviewError, nothing written;
    without it the item resolves as before (kind ``reviewed``)."""
    queue = aiguard.ReviewQueue(":memory:")
    item = queue.submit(feature="d", call_id="ag_2", reason="low_confidence", arguments={})
    with pytest.raises(aiguard.ReviewError, match="not an audit item"):
        queue.resolve(item.id, "x", correct=True)
    assert queue.get(item.id).status == "pending"
    queue.resolve(item.id, "x")
    assert [(r["kind"], r["accepted"]) for r in queue.store.feedback_rows(call_id="ag_2")] == [
        ("reviewed", None)
    ]


def test_correct_must_be_a_bool() -> None:
    """correct="yes" is a ConfigError."""
    queue = aiguard.ReviewQueue(":memory:")
    item = queue.submit(feature="d", call_id="ag_3", reason="audit", arguments={})
    with pytest.raises(aiguard.ConfigError, match="correct='yes'"):
        queue.resolve(item.id, "x", correct="yes")  # type: ignore[arg-type]


def test_audited_feedback_needs_accepted() -> None:
    """feedback(kind="audited") without accepted= is a ConfigError (it is a verdict)."""
    aiguard.configure(store=":memory:")

    @aiguard.guard("fb-audit")
    def f() -> str:
        return "x"

    o = f.outcome()
    with pytest.raises(aiguard.ConfigError, match="kind='audited' needs accepted"):
        aiguard.feedback(o, kind="audited")
    fb = aiguard.feedback(o, kind="audited", accepted=False)
    assert fb.kind is aiguard.FeedbackKind.AUDITED and fb.accepted is False


def test_audited_rows_are_not_user_decisions(store: Any) -> None:
    """An audit verdict does not count as accepted/rejected in aiguard.report()'s acceptance."""

    @aiguard.guard("not-user", audit=1.0)
    def f(x: int) -> int:
        return x

    f(1)
    settle()
    queue = aiguard.ReviewQueue()
    [item] = queue.pending("not-user")
    queue.resolve(item.id, 1)
    figures = aiguard.report(feature="not-user").features[0]
    assert figures.decided == 0 and figures.accepted == 0


@given(st.integers(min_value=1, max_value=2**63))
def test_the_served_path_hash_is_the_ids_hash(number: int) -> None:
    """The served path decides from the call's counter without building its id: the same
    hash as the id's, so anyone holding the id can tell whether it was audited."""
    from aiguard._runtime import ids
    from aiguard._runtime.records import audit_hash_of

    assert audit_hash_of(number) == audit_hash(ids.call_id(number))


def test_foreign_ids_hash_too() -> None:
    """An id not shaped like aiguard's still hashes (BLAKE2b), deterministically."""
    assert audit_hash("ticket-42") == audit_hash("ticket-42") != audit_hash("ticket-43")
    assert 0 <= audit_hash("ag_zz_1") < 2**64
