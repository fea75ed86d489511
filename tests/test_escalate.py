"""aiguard.Escalate: a cascade to a bigger model, its checks, its cost and the report's figures."""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from _modes import Mode
from hypothesis import given
from hypothesis import strategies as st
from services import fresh_store

import aiguard

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PRICES = {
    "currency": "USD",
    "models": {"small": {"per_call": "0.001"}, "big": {"per_call": "0.02"}},
}


def _big(text: str) -> dict[str, Any]:
    """A stub bigger model: sure of itself, unless the text says otherwise."""
    if text == "fail":
        raise ConnectionError("big model down")
    return {"label": "billing", "score": 0.5 if text == "unsure" else 0.95}


def _small(text: str) -> dict[str, Any]:
    return {"label": "bug", "score": 0.9 if text == "easy" else 0.3}


def test_low_confidence_is_escalated_and_served(mode: Mode) -> None:
    """The first model's low-confidence answer goes to the bigger model, whose confident answer
    is served with source escalate and the first model's reason."""
    guarded = mode.guard(
        "triage",
        confidence="score",
        threshold=0.8,
        fallback=[aiguard.Escalate(mode.body(_big), confidence="score", threshold=0.8)],
    )(_small)
    easy = mode.outcome(guarded, "easy")
    assert (easy.source, easy.escalated, easy.attempts) == (aiguard.Source.MODEL, False, ())
    hard = mode.outcome(guarded, "hard")
    assert hard.value == {"label": "billing", "score": 0.95}
    assert hard.source is aiguard.Source.ESCALATE
    assert hard.reason is aiguard.Reason.LOW_CONFIDENCE
    assert hard.confidence == 0.3  # the first model's, which the reason is about
    assert hard.model_result == {"label": "bug", "score": 0.3}
    assert hard.escalated
    [attempt] = hard.attempts
    assert attempt.handler == "escalate:_big" and not attempt.failed
    assert attempt.latency is not None and attempt.latency >= 0


def test_a_rejected_or_failed_escalation_goes_on_to_the_next_handler(mode: Mode) -> None:
    """A bigger model below its own threshold, or one that raises, passes the call on."""
    guarded = mode.guard(
        "triage",
        confidence="score",
        threshold=0.8,
        fallback=[
            aiguard.Escalate(mode.body(_big), confidence="score", threshold=0.8),
            aiguard.Default({"label": "other"}),
        ],
    )(_small)
    unsure = mode.outcome(guarded, "unsure")
    assert (unsure.source, unsure.value) == (aiguard.Source.DEFAULT, {"label": "other"})
    error = unsure.attempts[0].error
    assert isinstance(error, aiguard.EscalationRejected)
    assert error.reason is aiguard.Reason.LOW_CONFIDENCE and error.confidence == 0.5
    assert unsure.escalated
    failed = mode.outcome(guarded, "fail")
    assert failed.source is aiguard.Source.DEFAULT
    assert isinstance(failed.attempts[0].error, ConnectionError)


def test_the_guards_validators_check_the_bigger_model_unless_given(mode: Mode) -> None:
    """By default the guard's validate= checks the escalated answer; Escalate(validate=())
    turns that off."""

    def has_label(result: dict[str, Any]) -> bool:
        return bool(result.get("label"))

    def unlabelled(text: str) -> dict[str, Any]:
        return {"label": "", "score": 0.99}

    def first(text: str) -> dict[str, Any]:
        raise RuntimeError("small model down")

    inherited = mode.guard(
        "v1",
        validate=has_label,
        fallback=[aiguard.Escalate(mode.body(unlabelled)), aiguard.Default("fallback")],
    )(first)
    o = mode.outcome(inherited, "x")
    assert o.value == "fallback" and o.reason is aiguard.Reason.ERROR
    assert o.attempts[0].error.reason is aiguard.Reason.INVALID_OUTPUT  # type: ignore[union-attr]
    own = mode.guard(
        "v2",
        validate=has_label,
        fallback=[aiguard.Escalate(mode.body(unlabelled), validate=()), aiguard.Default("f")],
    )(first)
    assert mode.outcome(own, "x").source is aiguard.Source.ESCALATE


def test_the_escalated_call_has_a_deadline(mode: Mode) -> None:
    """Escalate(timeout=...) bounds the bigger model's call: past it, the next handler."""
    slow = mode.sleeper(2.0, {"label": "late"})
    guarded = mode.guard(
        "slow",
        fallback=[aiguard.Escalate(slow, timeout=0.1), aiguard.Default("fast")],
    )(lambda text: (_ for _ in ()).throw(RuntimeError("down")))
    started = time.perf_counter()
    o = mode.outcome(guarded, "x")
    assert time.perf_counter() - started < 1.5
    assert o.value == "fast"
    assert isinstance(o.attempts[0].error, TimeoutError)


@pytest.mark.parametrize("blocked", ["kill", "budget", "rollout"])
def test_blocked_calls_are_not_escalated(blocked: str) -> None:
    """A killed feature, a call over budget and a unit outside the rollout never reach the
    bigger model (escalation is a model call)."""
    calls: list[str] = []

    def big(text: str) -> str:
        calls.append(text)
        return "big"

    kwargs: dict[str, Any] = {}
    if blocked == "budget":
        aiguard.configure(prices=PRICES)
        kwargs = {"model": "small", "budget": aiguard.Budget(limit="0", per="day")}
    if blocked == "rollout":
        kwargs = {"rollout": aiguard.Rollout(key="text", percent=0)}

    @aiguard.guard("blocked", fallback=[aiguard.Escalate(big), aiguard.Default("d")], **kwargs)
    def small(text: str) -> str:
        return "small"

    if blocked == "kill":
        aiguard.kill("blocked", reason="test")
    o = small.outcome("x")
    assert o.value == "d" and calls == [] and not o.escalated


def test_bad_arguments_are_config_errors() -> None:
    """Escalate's arguments are checked where it is built, and against the guard at
    decoration."""
    with pytest.raises(aiguard.ConfigError, match=r"Escalate\(...\): threshold=1.5"):
        aiguard.Escalate(_big, confidence="score", threshold=1.5)
    with pytest.raises(aiguard.ConfigError, match="threshold"):
        aiguard.Escalate(_big, threshold=0.5)  # a threshold needs a confidence
    with pytest.raises(aiguard.ConfigError, match=r"timeout=-1"):
        aiguard.Escalate(_big, timeout=-1)
    with pytest.raises(aiguard.ConfigError, match="fn=3"):
        aiguard.Escalate(3)  # type: ignore[arg-type]

    def two(a: str, b: str) -> str:
        return a

    with pytest.raises(aiguard.ConfigError, match="must accept the parameters"):

        @aiguard.guard("sig", fallback=aiguard.Escalate(two))
        def one(text: str) -> str:
            return text

    async def big_async(text: str) -> str:
        return text

    with pytest.raises(aiguard.ConfigError, match="is async"):

        @aiguard.guard("sync", fallback=aiguard.Escalate(big_async))
        def sync(text: str) -> str:
            return text


def test_cost_is_counted_in_the_call_and_the_budget(tmp_path: Path) -> None:
    """The bigger model's cost adds to the call's cost, its budget and its record."""
    store = aiguard.SQLiteStore(tmp_path / "c.db")
    aiguard.configure(store=store, prices=PRICES)
    budget = aiguard.Budget(limit="1", per="day")

    @aiguard.guard(
        "costly",
        confidence="score",
        threshold=0.8,
        model="small",
        budget=budget,
        fallback=aiguard.Escalate(_big, confidence="score", threshold=0.8, model="big"),
    )
    def small(text: str) -> dict[str, Any]:
        return _small(text)

    assert small.outcome("easy").cost == Decimal("0.001")
    hard = small.outcome("hard")
    assert hard.cost == Decimal("0.021")
    assert hard.attempts[0].cost == Decimal("0.02")
    assert aiguard.budget_figures("costly").spent  # type: ignore[union-attr] == Decimal("0.022")
    aiguard.flush()
    rows = {r["call_id"]: r for r in store.call_records(feature="costly")}
    assert rows[hard.call_id]["source"] == "escalate"
    assert rows[hard.call_id]["reason"] == "low_confidence"
    assert rows[hard.call_id]["escalated"] == 1
    assert rows[hard.call_id]["cost_pico"] == 21 * 10**9


def _classifier() -> tuple[Any, list[tuple[str, str]], Any]:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import ticket_model
    finally:
        sys.path.remove(str(EXAMPLES))
    texts, labels = ticket_model.load_tickets(EXAMPLES / "data" / "tickets.csv")
    train = [i for i in range(len(texts)) if i % 5 != 4]
    incoming = [(texts[i], labels[i]) for i in range(len(texts)) if i % 5 == 4]
    small = ticket_model.TicketClassifier().fit(
        [texts[i] for i in train], [labels[i] for i in train]
    )
    # the "bigger model": trained longer, with a larger step, on every ticket but the incoming
    big = ticket_model.TicketClassifier(epochs=1500, learning_rate=20.0).fit(
        [texts[i] for i in train], [labels[i] for i in train]
    )
    return small, incoming, big


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_cascade_on_the_quickstart_model(kind: str, tmp_path: Path) -> None:
    """The quickstart's classifier escalates its low-confidence tickets to a bigger classifier:
    the report's escalation rate, served share and costs per call are the ones measured on the
    calls, and escalation_rate is a target."""
    small, incoming, big = _classifier()
    threshold = 0.8
    with fresh_store(kind, tmp_path / "q.db") as store:
        aiguard.configure(
            store=store,
            prices=PRICES,
            features={"ticket-triage": {"targets": ["escalation_rate <= 50 %"]}},
        )

        @aiguard.guard(
            "ticket-triage",
            confidence="score",
            threshold=threshold,
            model="small",
            fallback=[
                aiguard.Escalate(big.predict, confidence="score", threshold=threshold, model="big"),
                aiguard.Default(None),
            ],
        )
        def triage(text: str) -> Any:
            return small.predict(text)

        outcomes = [triage.outcome(text) for text, _ in incoming]
        expected_escalated = sum(small.predict(t).score < threshold for t, _ in incoming)
        expected_served = sum(
            small.predict(t).score < threshold <= big.predict(t).score for t, _ in incoming
        )
        assert 0 < expected_escalated < len(incoming)  # the test exercises both paths
        assert expected_served > 0
        assert sum(o.escalated for o in outcomes) == expected_escalated
        assert sum(o.source is aiguard.Source.ESCALATE for o in outcomes) == expected_served

        report = aiguard.report("ticket-triage")
        f = report.features[0]
        n = len(incoming)
        assert (f.calls, f.escalated, f.escalate_served) == (n, expected_escalated, expected_served)
        assert f.escalation_rate == pytest.approx(expected_escalated / n)
        assert f.escalation_interval == pytest.approx(aiguard.wilson(expected_escalated, n))
        assert f.cost_per_escalated_call == Decimal("0.021")
        assert f.cost_per_unescalated_call == Decimal("0.001")
        [(target, value, met)] = report.targets["ticket-triage"]
        assert target.metric == "escalation_rate" and value == f.escalation_rate
        assert met is (f.escalation_rate <= 0.5)
        assert "escalated" in report.to_text() and "escalated" in report.to_html()
        assert '"escalation_rate"' in report.to_json()
        aiguard.configure(store=None)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.sampled_from(["model", "escalate", "default", "cache"]),
            st.sampled_from([None, 0, 1]),
            st.one_of(st.none(), st.integers(0, 10**12)),
            st.one_of(st.none(), st.integers(0, 10**12)),
        ),
        max_size=40,
    )
)
def test_sql_figures_match_the_python_reference(rows: list[tuple[Any, ...]]) -> None:
    """The cascade and cache figures computed by SQLite equal the Python reference's."""
    from aiguard import _report_cascade
    from aiguard._runtime.records import CALL_RECORD_COLUMNS

    store = aiguard.SQLiteStore(":memory:")
    try:
        records = []
        for i, (feature, source, escalated, cost, saved) in enumerate(rows):
            record = dict.fromkeys(CALL_RECORD_COLUMNS)
            record.update(
                call_id=f"c{i}", feature=feature, started_at=float(i), source=source,
                reason="served", latency=0.1, escalated=escalated, cost_pico=cost,
                saved_pico=saved,
            )  # fmt: skip
            records.append(tuple(record[c] for c in CALL_RECORD_COLUMNS))
        store.add_call_records(records)
        assert _report_cascade.counts(store, None, None) == _report_cascade.in_python(
            store.call_records()
        )
        assert _report_cascade.counts(store, "a", 5.0) == _report_cascade.in_python(
            store.call_records(feature="a", since=5.0)
        )
    finally:
        store.close()
