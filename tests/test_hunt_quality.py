"""Faults found in segments, labels, audits and the quality figures: each test shows one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import fresh_store

import aiguard
from aiguard._runtime.records import CALL_RECORD_COLUMNS, label_of
from aiguard.store import configured


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh store of each kind."""
    with fresh_store(request.param, tmp_path / "hunt.db") as s:
        yield s


def record(call_id: str, feature: str = "triage", **values: Any) -> tuple[Any, ...]:
    row: dict[str, Any] = dict.fromkeys(CALL_RECORD_COLUMNS)
    row.update(
        call_id=call_id,
        feature=feature,
        started_at=1_000.0,
        source="model",
        reason="served",
        latency=0.1,
    )
    row.update(values)
    return tuple(row[c] for c in CALL_RECORD_COLUMNS)


class Unbound:
    """A proxy whose every attribute read fails, ``__class__`` included (as an unbound
    context-local proxy does outside its context)."""

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError(f"working outside of context: {name}")


def test_reading_the_label_of_a_value_whose_attributes_all_fail_never_raises() -> None:
    assert label_of(Unbound()) is None


def test_a_guard_returning_an_unreadable_proxy_does_not_raise_into_the_host() -> None:
    aiguard.configure(store=":memory:")
    answer = Unbound()

    @aiguard.guard("proxy", stream=False)
    def plain(x: int) -> Any:
        return answer

    @aiguard.guard("proxy_seg", segments=("x",), stream=False)
    def segmented(x: int) -> Any:
        return answer

    assert plain(1) is answer
    assert segmented(1) is answer
    aiguard.flush()
    assert len(configured().call_records(feature="proxy")) == 1
    assert len(configured().call_records(feature="proxy_seg")) == 1


@pytest.mark.parametrize("name", ['pl"an', "pl\\an", "\ud800", "a\tb", "p" * 101])
def test_a_segment_name_the_store_or_the_report_cannot_take_is_refused_at_decoration(
    name: str,
) -> None:
    # a lone surrogate made every call record of the guard unwritable (lost); the others were
    # recorded under a name no report could split by (SQLite found nothing for a backslash)
    with pytest.raises(aiguard.ConfigError) as caught:

        @aiguard.guard("segname", segments={name: lambda x: "eu"})
        def f(x: int) -> int:
            return x

    assert "segname" in str(caught.value)
    assert repr(name) in str(caught.value)


def test_a_split_by_a_name_with_a_backslash_is_refused_not_silently_empty(store: Any) -> None:
    # SQLite's JSON path compares a key's escaped text: "a\\b" matched no call there, while
    # PostgreSQL split the same calls by it
    name = "a\\b"
    rows = [
        record(f"c{i}", segments=json.dumps({name: v}, ensure_ascii=False))
        for i, v in enumerate(["eu", "us", "eu"])
    ]
    store.add_call_records(rows)
    with pytest.raises(aiguard.ConfigError) as caught:
        aiguard.report("triage", by=(name,), store=store)
    assert repr(name) in str(caught.value)


@pytest.fixture
def configured_store(store: Any) -> Iterator[Any]:
    aiguard.configure(store=store)
    try:
        yield store
    finally:
        aiguard.configure(store=None)


def test_an_audit_item_with_a_lone_surrogate_in_its_values_is_kept(configured_store: Any) -> None:
    # the item's JSON kept the surrogate; the store refused it twice, and the audit was lost
    @aiguard.guard("surrogate", audit=1.0, confidence=lambda r: 0.9, threshold=0.5, stream=False)
    def f(text: str) -> dict[str, str]:
        return {"label": "billing", "echo": text}

    f("bad \ud800 text")
    aiguard.flush()
    from aiguard._runtime.state import runtime

    assert runtime.recorder is not None
    assert runtime.recorder.counts()["audits dropped"] == 0
    items = aiguard.ReviewQueue(configured_store).pending("surrogate")
    assert len(items) == 1
    assert items[0].reason == "audit"
    assert items[0].arguments == {"text": "bad \ufffd text"}
    assert items[0].model_result == {"label": "billing", "echo": "bad \ufffd text"}


def test_audit_figures_count_the_models_answers_only_as_the_report_does(store: Any) -> None:
    # an audit verdict written on a fallback's answer was counted by audit_figures (not by the
    # report's audited_error_rate): two figures of one name disagreed
    store.add_call_records(
        [
            record("m1", confidence=0.9),
            record("m2", confidence=0.3),
            record("fb", source="fallback", reason="low_confidence", confidence=0.2),
        ]
    )
    for call_id, verdict in (("m1", 1), ("m2", 0), ("fb", 0)):
        store.add_feedback(
            {
                "call_id": call_id,
                "feature": "triage",
                "kind": "audited",
                "accepted": verdict,
                "created_at": 2_000.0,
            }
        )
    figures = aiguard.audit_figures("triage", store=store)
    reported = aiguard.report("triage", by=(), store=store).features[0]
    assert (reported.audited, reported.audit_errors) == (2, 1)
    assert (figures.audited, figures.errors) == (2, 1)
    assert figures.audited_error_rate == reported.audited_error_rate == 0.5
    assert [b.audited for b in figures.bands] == [0, 1, 0, 0, 1]


def _biased_segments(store: Any) -> None:
    """eu: 90 of 100 accepted; apac: 50 of 100 accepted."""
    rows, feedback = [], []
    for region, good in (("eu", 90), ("apac", 50)):
        for i in range(100):
            call_id = f"{region}{i}"
            rows.append(record(call_id, confidence=0.9, segments=json.dumps({"region": region})))
            kind = "accepted" if i < good else "rejected"
            feedback.append({"call_id": call_id, "feature": "triage", "kind": kind})
    store.add_call_records(rows)
    for row in feedback:
        store.add_feedback({**row, "created_at": 2_000.0})


def test_the_documented_segment_margin_of_a_feature_is_a_setting_and_is_used(store: Any) -> None:
    # the docs say the margin defaults to the feature's segment_margin; configuring it was a
    # ConfigError (an unknown field), and the report never read one
    _biased_segments(store)
    aiguard.configure(store=store, features={"triage": {"segment_margin": 0.5}})
    try:
        assert aiguard.FeatureConfig(segment_margin=0.5).segment_margin == 0.5
        loose = aiguard.report("triage", by=("region",)).segment_flags["triage"]
        strict = aiguard.report("triage", by=("region",), margin=0.05).segment_flags["triage"]
    finally:
        aiguard.configure(store=None)
    accept = [g for g in strict if g.figure == "acceptance_rate"]
    assert [(g.segment, g.flagged) for g in accept] == [("apac", True)]
    assert [g.flagged for g in loose if g.figure == "acceptance_rate"] == [False]
    with pytest.raises(aiguard.ConfigError) as caught:
        aiguard.configure(features={"triage": {"segment_margin": 1.5}})
    assert "segment_margin" in str(caught.value) and "1.5" in str(caught.value)


def test_a_one_call_segment_does_not_hide_a_biased_segment(store: Any) -> None:
    # the best segment was the highest point rate: one accepted call in a segment of its own
    # made it the best, and against its wide interval no segment was ever flagged
    _biased_segments(store)
    store.add_call_records([record("rare0", confidence=0.9, segments='{"region": "rare"}')])
    store.add_feedback(
        {"call_id": "rare0", "feature": "triage", "kind": "accepted", "created_at": 2_000.0}
    )
    gaps = aiguard.report("triage", by=("region",), store=store, margin=0.05).segment_flags
    accept = {g.segment: g for g in gaps["triage"] if g.figure == "acceptance_rate"}
    assert accept["apac"].flagged
    assert accept["apac"].best_segment == "eu"
    assert not any(g.flagged for name, g in accept.items() if name != "apac")


@pytest.mark.parametrize("current", ["0.8", float("nan"), 1.5, True])
def test_tune_refuses_a_current_threshold_that_is_not_one(current: Any) -> None:
    # a text or NaN raised TypeError/ValueError from the arithmetic; 1.5 and True were taken
    aiguard.configure(store=":memory:")
    with pytest.raises(aiguard.ConfigError) as caught:
        aiguard.tune("triage", "precision >= 0.9", current=current)
    assert "current" in str(caught.value) and repr(current) in str(caught.value)


def test_a_segment_value_starting_with_the_reports_marker_does_not_break_the_report(
    configured_store: Any,
) -> None:
    # a text value starting with U+001F (the marker of a non-text JSON value) was parsed as
    # JSON: the report of every feature raised JSONDecodeError
    @aiguard.guard("marker", segments=("region",))
    def f(region: str) -> str:
        return "x"

    for region in ("\x1fnot json", "eu", "eu"):
        f(region)
    groups = aiguard.report("marker", by=("region",)).groups["marker"]
    assert sorted((g.group, g.calls) for g in groups) == [
        ("region=\x1fnot json", 1),
        ("region=eu", 2),
    ]


class Lookups:
    """An answer whose missing attributes raise KeyError (as some record proxies do)."""

    def __getattr__(self, name: str) -> Any:
        raise KeyError(name)

    def __repr__(self) -> str:
        return "Lookups()"


def test_an_audit_item_whose_value_cannot_be_made_json_is_kept_with_its_repr(
    configured_store: Any,
) -> None:
    # serialize.jsonable's getattr(value, "model_dump", None) raised KeyError: the audit item
    # was dropped (counted), the reviewer never saw the call
    @aiguard.guard("lookups", audit=1.0, confidence=lambda r: 0.9, threshold=0.5, stream=False)
    def f(text: str) -> Any:
        return Lookups()

    f("hello")
    aiguard.flush()
    items = aiguard.ReviewQueue(configured_store).pending("lookups")
    assert [(i.reason, i.arguments, i.model_result) for i in items] == [
        ("audit", {"text": "hello"}, {"$repr": "Lookups()"})
    ]


class Account:
    plan = "pro"


def test_a_segment_parameter_left_to_its_default_records_the_default(
    configured_store: Any,
) -> None:
    # an argument the caller left out was "unknown", though the function saw its default:
    # every call relying on plan="free" landed in the "unknown" segment
    @aiguard.guard("defaults", segments=("plan", "user.plan"))
    def f(text: str, plan: str = "free", user: Any = Account()) -> str:  # noqa: B008
        return text

    f("a")
    f("a", "paid")
    f("a", plan="kw", user=None)
    aiguard.flush()
    rows = configured_store.call_records(feature="defaults")
    assert [json.loads(r["segments"]) for r in rows] == [
        {"plan": "free", "user.plan": "pro"},
        {"plan": "paid", "user.plan": "pro"},
        {"plan": "kw", "user.plan": "unknown"},
    ]
