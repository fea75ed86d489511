"""Fallback chains: Rules, Default, HumanReview, custom handlers, attempts."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from _modes import Mode

import aiguard
from aiguard import Reason, Source


def low(ticket: str) -> dict[str, Any]:
    return {"label": "model", "score": 0.1}


def test_rules_get_the_model_functions_arguments(mode: Mode) -> None:
    """Rules(fn) is called with exactly the arguments of the guarded call."""
    seen: list[tuple[Any, ...]] = []

    def rules(ticket: str, *, lang: str = "en") -> str:
        seen.append((ticket, lang))
        return "rules"

    @mode.guard("t", confidence="score", threshold=0.5, fallback=aiguard.Rules(rules))
    def triage(ticket: str, *, lang: str = "en") -> Any:
        return {"score": 0.1}

    assert mode.call(triage, "a", lang="fr") == "rules"
    assert seen == [("a", "fr")]
    assert mode.last_outcome().source is Source.RULES  # type: ignore[union-attr]


def test_plain_callable_is_accepted_as_rules(mode: Mode) -> None:
    """A bare function in fallback= behaves as Rules(fn)."""

    @mode.guard("t", confidence="score", threshold=0.5, fallback=lambda ticket: "r")
    def triage(ticket: str) -> Any:
        return {"score": 0.1}

    outcome = mode.outcome(triage, "x")
    assert outcome.value == "r" and outcome.source is Source.RULES


def test_chain_passes_on_and_records_attempts(mode: Mode) -> None:
    """A handler that raises passes the call on; attempts record each failure in order."""
    no_kw = LookupError("no keyword matched")

    def keywords(ticket: str) -> str:
        raise no_kw

    @mode.guard(
        "t",
        confidence="score",
        threshold=0.5,
        fallback=[aiguard.Rules(keywords), aiguard.Default("default")],
    )
    def triage(ticket: str) -> Any:
        return low(ticket)

    outcome = mode.outcome(triage, "x")
    assert outcome.value == "default" and outcome.source is Source.DEFAULT
    assert outcome.reason is Reason.LOW_CONFIDENCE
    assert len(outcome.attempts) == 2
    failed, answered = outcome.attempts
    assert failed.handler.startswith("rules:") and failed.handler.endswith("keywords")
    assert failed.error is no_kw and failed.failed and failed.source is Source.RULES
    assert answered.handler == "default" and not answered.failed


def test_all_handlers_failing_raises_model_exception_or_not_served(mode: Mode) -> None:
    """When every handler fails: the model's exception if it raised, else NotServed."""

    def bad_rules(ticket: str) -> str:
        raise LookupError("nothing")

    model_error = ConnectionError("down")

    @mode.guard("t", fallback=bad_rules)
    def broken(ticket: str) -> str:
        raise model_error

    with pytest.raises(ConnectionError) as info:
        mode.call(broken, "x")
    assert info.value is model_error
    last = mode.last_outcome()
    assert last is not None and [a.handler.split(".")[-1] for a in last.attempts] == ["bad_rules"]

    @mode.guard("u", confidence="score", threshold=0.5, fallback=bad_rules)
    def unsure(ticket: str) -> Any:
        return low(ticket)

    with pytest.raises(aiguard.NotServed) as ns:
        mode.call(unsure, "x")
    assert len(ns.value.outcome.attempts) == 1


def test_rules_signature_mismatch_is_a_config_error() -> None:
    """A Rules function that cannot take the model's parameters fails at decoration."""

    def rules(a: str, b: str) -> str:
        return a + b

    with pytest.raises(aiguard.ConfigError, match="must accept the parameters of"):

        @aiguard.guard("t", fallback=aiguard.Rules(rules))
        def triage(ticket: str) -> str:
            return ticket


def test_rules_must_accept_the_parameters_by_name_too() -> None:
    """Callers may pass arguments by name, so a Rules function must use the same names."""

    def rules(text: str) -> str:
        return text

    with pytest.raises(aiguard.ConfigError, match="missing a required argument: 'text'"):

        @aiguard.guard("t", fallback=rules)
        def triage(ticket: str) -> str:
            return ticket


def test_async_rules_under_sync_guard_is_a_config_error() -> None:
    """An async Rules function cannot serve a sync guard."""

    async def rules(ticket: str) -> str:
        return ticket

    with pytest.raises(aiguard.ConfigError, match="is async"):

        @aiguard.guard("t", fallback=rules)
        def triage(ticket: str) -> str:
            return ticket


async def test_async_guard_awaits_async_and_sync_rules() -> None:
    """Under an async guard, Rules may be sync or async."""

    async def async_rules(ticket: str) -> str:
        await asyncio.sleep(0)
        raise LookupError

    def sync_rules(ticket: str) -> str:
        return "sync"

    @aiguard.guard("t", confidence="score", threshold=0.5, fallback=[async_rules, sync_rules])
    async def triage(ticket: str) -> Any:
        return low(ticket)

    outcome = await triage.outcome("x")
    assert outcome.value == "sync"
    assert [a.failed for a in outcome.attempts] == [True, False]


def test_custom_fallback_sees_the_context(mode: Mode) -> None:
    """A Fallback subclass receives the call's context: reason, arguments, result, confidence."""
    seen: list[aiguard.FallbackContext] = []

    class Record(aiguard.Fallback):
        source = Source.DEFAULT

        def handle(self, ctx: aiguard.FallbackContext) -> str:
            seen.append(ctx)
            return "custom"

    @mode.guard("t", confidence="score", threshold=0.5, fallback=Record())
    def triage(ticket: str, lang: str = "en") -> Any:
        return low(ticket)

    outcome = mode.outcome(triage, "x")
    ctx = seen[0]
    assert outcome.value == "custom" and outcome.call_id == ctx.call_id
    assert ctx.reason is Reason.LOW_CONFIDENCE and ctx.confidence == 0.1
    assert ctx.arguments == {"ticket": "x", "lang": "en"}
    assert ctx.model_result == {"label": "model", "score": 0.1}


def test_human_review_without_store_names_the_fix(mode: Mode) -> None:
    """HumanReview with no store configured is a clear error naming the fix."""

    @mode.guard(
        "t",
        confidence="score",
        threshold=0.5,
        fallback=[aiguard.HumanReview(), aiguard.Default("d")],
    )
    def triage(ticket: str) -> Any:
        return low(ticket)

    with pytest.raises(aiguard.ConfigError) as info:
        mode.call(triage, "x")
    assert "aiguard.configure(store=" in str(info.value)
    assert "AIGUARD_STORE" in str(info.value)


def test_human_review_raises_pending_and_queues_the_call(mode: Mode, tmp_path: Any) -> None:
    """By default HumanReview queues the call durably and raises ReviewPending."""
    aiguard.configure(store=tmp_path / "a.db")

    @mode.guard("triage", confidence="score", threshold=0.5, fallback=aiguard.HumanReview())
    def triage(ticket: str) -> Any:
        return low(ticket)

    with pytest.raises(aiguard.ReviewPending) as info:
        mode.call(triage, "refund please")
    pending = info.value
    assert pending.outcome.source is Source.HUMAN
    assert pending.outcome.reason is Reason.LOW_CONFIDENCE
    assert pending.outcome.review_id == pending.review_id
    item = aiguard.ReviewQueue().get(pending.review_id)
    assert item.feature == "triage" and item.call_id == pending.outcome.call_id
    assert item.arguments == {"ticket": "refund please"}
    assert item.model_result == {"label": "model", "score": 0.1}
    assert item.confidence == 0.1 and item.reason == "low_confidence"
    assert item.status == "pending"
    # durable: another connection to the same file sees it
    rows = sqlite3.connect(tmp_path / "a.db").execute("SELECT id FROM review_items").fetchall()
    assert rows == [(pending.review_id,)]


def test_human_review_with_respond_serves_a_placeholder(mode: Mode) -> None:
    """respond= builds the served value from the queued item."""
    queue = aiguard.ReviewQueue(":memory:")

    @mode.guard(
        "t",
        fallback=aiguard.HumanReview(queue=queue, respond=lambda item: f"pending:{item.id}"),
    )
    def triage(ticket: str) -> str:
        raise RuntimeError("down")

    outcome = mode.outcome(triage, "x")
    assert outcome.value == f"pending:{outcome.review_id}"
    assert outcome.source is Source.HUMAN and outcome.reason is Reason.ERROR
    assert queue.get(outcome.review_id).reason == "error"  # type: ignore[arg-type]


def test_failing_store_passes_on_and_is_logged_once(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that fails is a handler failure: the next handler answers, logged once."""

    class DeadStore(aiguard.SQLiteStore):
        def add_review(self, item: aiguard.ReviewItem) -> None:
            raise aiguard.StoreError("disk full")

    queue = aiguard.ReviewQueue(DeadStore(":memory:"))

    @mode.guard(
        "t",
        confidence="score",
        threshold=0.5,
        fallback=[aiguard.HumanReview(queue=queue), aiguard.Default("d")],
    )
    def triage(ticket: str) -> Any:
        return low(ticket)

    with caplog.at_level("WARNING", logger="aiguard"):
        assert [mode.call(triage, "a"), mode.call(triage, "b")] == ["d", "d"]
    assert sum("disk full" in r.getMessage() for r in caplog.records) == 1
    outcome = mode.outcome(triage, "c")
    assert isinstance(outcome.attempts[0].error, aiguard.StoreError)


def test_review_items_of_methods_leave_self_out(mode: Mode) -> None:
    """A guarded method's review item holds its arguments, not the instance."""
    queue = aiguard.ReviewQueue(":memory:")

    class Service:
        @mode.guard("t", fallback=aiguard.HumanReview(queue=queue, respond=lambda i: "p"))
        def triage(self, ticket: str) -> str:
            raise RuntimeError

    assert mode.call(Service().triage, "x") == "p"
    assert queue.pending("t")[0].arguments == {"ticket": "x"}


def test_unserialisable_arguments_are_stored_by_repr(mode: Mode) -> None:
    """Arguments JSON cannot encode are kept as {"$repr": ...}, never dropped."""
    queue = aiguard.ReviewQueue(":memory:")

    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque 7>"

    @mode.guard("t", fallback=aiguard.HumanReview(queue=queue, respond=lambda i: None))
    def triage(ticket: Any, extra: Any) -> Any:
        raise RuntimeError

    mode.call(triage, Opaque(), {"when": {1, 2}, (1, 2): b"x"})
    item = queue.pending("t")[0]
    assert item.arguments == {
        "ticket": {"$repr": "<Opaque 7>"},
        "extra": {"when": [1, 2], "(1, 2)": {"$repr": "b'x'"}},
    }


def test_a_failing_respond_still_reports_the_queued_item(mode: Mode) -> None:
    """If respond= raises after the item is queued, the caller gets ReviewPending, not an orphan."""
    queue = aiguard.ReviewQueue(":memory:")

    def respond(item: aiguard.ReviewItem) -> str:
        raise ValueError("template missing")

    @mode.guard(
        "t", fallback=[aiguard.HumanReview(queue=queue, respond=respond), aiguard.Default("d")]
    )
    def triage(ticket: str) -> str:
        raise RuntimeError

    with pytest.raises(aiguard.ReviewPending) as info:
        mode.call(triage, "x")
    assert queue.get(info.value.review_id).status == "pending"
    assert queue.count("t") == 1
