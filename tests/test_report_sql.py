"""The report aggregated in the database: the same figures as the Python reference on random
data (SQLite and PostgreSQL), the window, segment and attribute splits, audit figures, and the
segment flags on generated fair and biased data."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiguard
from aiguard._runtime.records import CALL_RECORD_COLUMNS
from aiguard.report import Report
from tests.services import drop_schema, fresh_store, require_postgres, unique

DAY = 86400.0
T0 = 1_780_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    """An empty store of each kind."""
    with fresh_store(request.param) as s:
        yield s


class PythonOnly:
    """A store of one's own: only ``call_records`` and ``feedback_rows`` (the Python path)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def call_records(self, **kw: Any) -> list[dict[str, Any]]:
        return self.inner.call_records(**kw)  # type: ignore[no-any-return]

    def feedback_rows(self, **kw: Any) -> list[dict[str, Any]]:
        return self.inner.feedback_rows(**kw)  # type: ignore[no-any-return]


def call(call_id: str, **values: Any) -> tuple[Any, ...]:
    row = dict.fromkeys(CALL_RECORD_COLUMNS)
    row.update(call_id=call_id, feature="f", started_at=T0, source="model", reason="served",
               latency=0.01)  # fmt: skip
    row.update(values)
    return tuple(row[c] for c in CALL_RECORD_COLUMNS)


def feedback(store: Any, call_id: str, kind: str, **values: Any) -> None:
    row = {"call_id": call_id, "feature": "f", "kind": kind, "created_at": T0 + 1}
    row.update(values)
    if "accepted" not in row and kind in ("accepted", "edited", "rejected", "corrected"):
        row["accepted"] = int(kind in ("accepted", "edited"))
    store.add_feedback(row)


# -- the SQL figures equal the Python reference ----------------------------------------------

SOURCES = ["model", "rules", "baseline", None]
REASONS = ["served", "low_confidence", "error", "timeout", "baseline"]
KINDS = ["accepted", "edited", "rejected", "corrected", "rated", "commented", "reviewed",
         "audited"]  # fmt: skip
ATTRIBUTE_VALUES = st.one_of(
    st.sampled_from(["pro", "free", "it's", "a%b", ""]), st.integers(-3, 3), st.booleans(),
    st.none(),
)  # fmt: skip

calls_st = st.lists(
    st.fixed_dictionaries(
        {
            "feature": st.sampled_from(["f", "g"]),
            "day": st.integers(0, 3),
            "at": st.integers(0, 86_399_000),  # ms in the day
            "source": st.sampled_from(SOURCES),
            "reason": st.sampled_from(REASONS),
            "confidence": st.one_of(st.none(), st.floats(0, 1)),
            "arm": st.sampled_from(["ai", "baseline", None]),
            "model": st.sampled_from(["m1", "m2", None]),
            "latency": st.floats(0, 5, allow_nan=False),
            "cost_pico": st.one_of(st.none(), st.integers(0, 10**12)),
            "input_tokens": st.one_of(st.none(), st.integers(0, 10**6)),
            "cache_write_tokens": st.one_of(st.none(), st.integers(0, 10**5)),
            "segments": st.one_of(
                st.none(),
                st.dictionaries(
                    st.sampled_from(["region", "plan"]),
                    st.sampled_from(["eu", "us", "pro"]),
                    max_size=2,
                ),
            ),
            "feedback": st.lists(
                st.fixed_dictionaries(
                    {
                        "kind": st.sampled_from(KINDS),
                        "accepted": st.sampled_from([0, 1]),
                        "score": st.one_of(st.none(), st.floats(0, 5)),
                        "edit_distance": st.one_of(st.none(), st.floats(0, 1)),
                        "attributes": st.one_of(
                            st.none(),
                            st.dictionaries(
                                st.sampled_from(["plan", "team"]), ATTRIBUTE_VALUES, max_size=2
                            ),
                        ),
                    }
                ),
                max_size=4,
            ),
        }
    ),
    min_size=1,
    max_size=30,
)


def fill(store: Any, calls: list[dict[str, Any]]) -> None:
    rows = []
    for n, c in enumerate(calls):
        rows.append(
            call(
                f"c{n}", feature=c["feature"], started_at=T0 + c["day"] * DAY + c["at"] / 1000,
                source=c["source"], reason=c["reason"], confidence=c["confidence"], arm=c["arm"],
                model=c["model"], latency=c["latency"], cost_pico=c["cost_pico"],
                input_tokens=c["input_tokens"], cache_write_tokens=c["cache_write_tokens"],
                segments=None if c["segments"] is None else json.dumps(c["segments"]),
            )
        )  # fmt: skip
    store.add_call_records(rows)
    for n, c in enumerate(calls):
        for fb in c["feedback"]:
            attrs = fb["attributes"]
            store.add_feedback(
                {"call_id": f"c{n}", "feature": c["feature"], "kind": fb["kind"],
                 "accepted": fb["accepted"], "score": fb["score"],
                 "edit_distance": fb["edit_distance"],
                 "attributes": json.dumps(attrs) if attrs else None, "created_at": T0}
            )  # fmt: skip


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def comparable(r: Report) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "features": [asdict(f) for f in r.features],
        "groups": {k: [asdict(g) for g in v] for k, v in r.groups.items()},
        "ai_vs_baseline": r.ai_vs_baseline,
        "series": r.series,
        "segment_flags": {k: [asdict(g) for g in v] for k, v in r.segment_flags.items()},
    }


SPLITS = ["source", "arm", "model", "reason", "region", "plan", "team"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    calls=calls_st,
    since_day=st.sampled_from([None, 1, 2]),
    one=st.booleans(),
    listed=st.sampled_from([2000, 1, 0]),
)
def test_sql_figures_equal_the_python_reference(
    store: Any, calls: list[dict[str, Any]], since_day: int | None, one: bool, listed: int
) -> None:
    """On random calls and feedback, the figures aggregated by the database equal those the
    Python path computes from the rows (floats to 1e-9), window and feature included; with
    the distinct segments texts parsed once and joined, or (past ``listed`` of them) each
    call's parsed."""
    from aiguard import _report_sql

    store._run("DELETE FROM feedback")
    store._run("DELETE FROM call_records")
    fill(store, calls)
    since = None if since_day is None else T0 + since_day * DAY
    feature = "f" if one else None
    with mock.patch.object(_report_sql, "SEGMENT_VALUES", listed):
        sql = aiguard.report(feature, since=since, by=SPLITS, store=store)
    ref = aiguard.report(feature, since=since, by=SPLITS, store=PythonOnly(store))
    a, b = comparable(sql), comparable(ref)
    assert same(a, b), (a, b)


# -- the window, splits and audits -------------------------------------------------------------


def test_window_counts_feedback_of_its_calls_only(store: Any) -> None:
    """A call before ``since`` and its feedback do not count; feedback given after the window
    started, on a call inside it, counts."""
    store.add_call_records([call("old", started_at=T0 - DAY), call("new", started_at=T0)])
    feedback(store, "old", "rejected", created_at=T0 + 10)
    feedback(store, "new", "accepted", created_at=T0 + 10 * DAY)
    [f] = aiguard.report("f", since=T0 - 1, store=store).features
    assert (f.calls, f.decided, f.accepted, f.rejected) == (1, 1, 1, 0)
    [f] = aiguard.report("f", store=store).features
    assert (f.calls, f.decided, f.rejected) == (2, 2, 1)


def test_comments_ratings_and_audits_never_undo_a_decision(store: Any) -> None:
    """The decision is the latest accepted/edited/rejected/corrected; a later comment, rating
    or audit verdict leaves it, and every score counts in mean_score."""
    store.add_call_records([call("a", confidence=0.9)])
    feedback(store, "a", "rejected", score=1.0)
    feedback(store, "a", "accepted")
    feedback(store, "a", "rated", score=4.0)
    feedback(store, "a", "audited", accepted=0)
    [f] = aiguard.report("f", store=store).features
    assert (f.decided, f.accepted, f.rejected) == (1, 1, 0)
    assert f.mean_score == 2.5
    assert (f.audited, f.audit_errors, f.audited_error_rate) == (1, 1, 1.0)
    assert f.audited_error_interval == aiguard.wilson(1, 1)


def test_audits_count_on_model_answers(store: Any) -> None:
    """The latest audit verdict per call counts, only where the model answered (the answer
    judged was the model's), with or without a confidence: an LLM feature without one still
    gets its audited error rate."""
    store.add_call_records([
        call("m1", confidence=0.8), call("m2", confidence=0.3),
        call("r", source="rules", confidence=0.9), call("n", confidence=None),
    ])  # fmt: skip
    feedback(store, "m1", "audited", accepted=0)
    feedback(store, "m1", "audited", accepted=1)  # the latest verdict wins
    feedback(store, "m2", "audited", accepted=0)
    feedback(store, "r", "audited", accepted=0)
    feedback(store, "n", "audited", accepted=0)
    [f] = aiguard.report("f", store=store).features
    assert (f.audited, f.audit_errors) == (3, 2)
    assert f.audited_error_rate == pytest.approx(2 / 3)
    assert f.decided == 0


def test_segment_wins_over_feedback_attribute(store: Any) -> None:
    """A segment recorded on the call names its group; a feedback attribute of the same name
    counts only for calls without that segment; calls with neither are ``none``."""
    store.add_call_records([
        call("a", segments=json.dumps({"plan": "pro"})),
        call("b", segments=json.dumps({"region": "eu"})),
        call("c"),
    ])  # fmt: skip
    feedback(store, "a", "accepted", attributes=json.dumps({"plan": "free"}))
    feedback(store, "b", "rejected", attributes=json.dumps({"plan": "free"}))
    result = aiguard.report("f", by=["plan", "region"], store=store)
    groups = {g.group: g for g in result.groups["f"]}
    assert groups["plan=pro"].calls == 1 and groups["plan=pro"].accepted == 1
    assert groups["plan=free"].calls == 1 and groups["plan=free"].rejected == 1
    assert groups["plan=none"].calls == 1
    assert (groups["region=eu"].calls, groups["region=none"].calls) == (1, 2)


def test_groups_by_feedback_attribute_still_work(store: Any) -> None:
    """Without segments, a feedback attribute splits the calls as before."""
    store.add_call_records([call(f"c{i}") for i in range(6)])
    for i in range(6):
        feedback(store, f"c{i}", "accepted" if i % 2 else "rejected",
                 attributes=json.dumps({"plan": "pro" if i < 4 else "free"}))  # fmt: skip
    groups = {g.group: g for g in aiguard.report("f", by="plan", store=store).groups["f"]}
    assert (groups["plan=pro"].calls, groups["plan=pro"].accepted) == (4, 2)
    assert (groups["plan=free"].calls, groups["plan=free"].accepted) == (2, 1)


def test_a_split_name_sql_cannot_look_up_is_a_config_error(store: Any) -> None:
    """A split name with a double quote is refused, naming it."""
    with pytest.raises(aiguard.ConfigError, match="by='a\"b'"):
        aiguard.report(by='a"b', store=store)
    with pytest.raises(aiguard.ConfigError, match="margin=2"):
        aiguard.report(margin=2, store=store)


# -- segment flags ---------------------------------------------------------------------------


def generated(store: Any, rates: dict[str, float], n: int, seed: int) -> None:
    """``n`` calls per region with feedback; each region's acceptance drawn at its rate."""
    rng = random.Random(seed)
    rows, fb = [], []
    for region, rate in rates.items():
        for i in range(n):
            cid = f"{region}-{i}"
            rows.append(call(cid, segments=json.dumps({"region": region})))
            fb.append((cid, "accepted" if rng.random() < rate else "rejected"))
    store.add_call_records(rows)
    for cid, kind in fb:
        feedback(store, cid, kind)


def test_a_fair_feature_is_not_flagged(store: Any) -> None:
    """Same acceptance in every region (80 %): no segment flagged at the 0.05 margin."""
    generated(store, {"eu": 0.8, "us": 0.8, "apac": 0.8}, 400, seed=3)
    result = aiguard.report("f", by="region", store=store)
    gaps = [g for g in result.segment_flags["f"] if g.figure == "acceptance_rate"]
    assert len(gaps) == 2 and not any(g.flagged for g in gaps)
    assert "FLAGGED" not in result.to_text()


def test_a_biased_feature_is_flagged(store: Any) -> None:
    """A region accepted at 55 % against 85 % elsewhere is flagged, with the difference, its
    interval above the margin and the four-fifths ratio; in text, HTML and JSON."""
    generated(store, {"eu": 0.85, "us": 0.85, "apac": 0.55}, 400, seed=5)
    result = aiguard.report("f", by="region", store=store, margin=0.05)
    flagged = [g for g in result.segment_flags["f"] if g.flagged]
    assert [(g.segment, g.figure) for g in flagged] == [("apac", "acceptance_rate")]
    [gap] = flagged
    assert gap.best_segment in ("eu", "us") and gap.interval[0] > 0.05
    assert gap.difference == pytest.approx(gap.best_value - gap.value)
    assert gap.ratio == pytest.approx(gap.value / gap.best_value) and gap.ratio < 0.8
    assert "region=apac" in result.to_text() and "FLAGGED" in result.to_text()
    assert "region=apac" in result.to_html()
    data = json.loads(result.to_json())
    assert any(g["flagged"] and g["segment"] == "apac" for g in data["segment_flags"]["f"])
    # a wide margin flags nothing
    wide = aiguard.report("f", by="region", store=store, margin=0.5)
    assert not any(g.flagged for g in wide.segment_flags["f"])


# -- exact percentiles and histogram from latency buckets -------------------------------------

LATENCIES = st.one_of(
    st.floats(0, 5, allow_nan=False),
    st.sampled_from([0.0, 5e-324, 1e-300, 1e-9, 0.01, 0.0100000001, 1e300, 1.7e308]),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    latencies=st.lists(LATENCIES, min_size=1, max_size=400),
    plans=st.lists(st.sampled_from(["pro", "free"]), min_size=1, max_size=400),
    ln=st.booleans(),
)
def test_percentiles_and_histogram_are_exact(
    store: Any, latencies: list[float], plans: list[str], ln: bool
) -> None:
    """On many calls (ties, zero, the smallest and largest floats, values a bucket apart), each
    group's p50/p95/p99 and the histogram equal the Python reference's exactly, with log-spaced
    buckets and with the 1 ms buckets of an SQLite without ln()."""
    from aiguard._report_data import in_python
    from aiguard._report_sql import in_sql

    store._run("DELETE FROM feedback")
    store._run("DELETE FROM call_records")
    rows = [
        call(f"c{n}", latency=x, segments=json.dumps({"plan": plans[n % len(plans)]}))
        for n, x in enumerate(latencies)
    ]
    store.add_call_records(rows)
    with store._session(60.0) as run:
        got = in_sql(run, store._dialect, None, None, ["plan"], ln=ln)
    ref = in_python(store.call_records(), [], ["plan"])
    assert got.percentiles == ref.percentiles
    assert got.histogram == ref.histogram


def test_each_wanted_rank_is_the_nearest_rank(store: Any) -> None:
    """1,024 distinct latencies k/1024 s in a random order: p50, p95 and p99 are the 512th,
    973rd and 1014th smallest; the histogram counts each call in its bucket."""
    order = list(range(1, 1025))
    random.Random(7).shuffle(order)
    store.add_call_records([call(f"c{i}", latency=k / 1024) for i, k in enumerate(order)])
    [f] = aiguard.report("f", store=store).features
    assert (f.p50_latency, f.p95_latency, f.p99_latency) == (512 / 1024, 973 / 1024, 1014 / 1024)
    expected = [0] * 20
    for k in order:
        expected[min(19, k * 20 // 1024)] += 1
    agg = store.report_aggregates(feature="f", since=None, splits=[])
    assert agg.histogram["f"] == (1.0, expected)


# -- one connection, its own deadline ----------------------------------------------------------


def test_the_report_leaves_no_table_behind(store: Any) -> None:
    """The temporary tables are dropped after a report (and after one that failed), so the next
    report on the same connection works."""
    store.add_call_records([call("a", segments=json.dumps({"plan": "pro"}))])
    for _ in range(2):
        [f] = aiguard.report("f", by="plan", store=store).features
        assert f.calls == 1
    if store._dialect == "sqlite":
        assert store._run("SELECT name FROM sqlite_temp_master") == []

    def fail() -> None:
        with store._session(60.0) as run:
            run("CREATE TEMP TABLE aiguard_report_calls (x INTEGER)", ())
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail()
    [f] = aiguard.report("f", by="plan", store=store).features
    assert f.calls == 1


def test_sqlite_report_past_its_deadline_is_a_store_error() -> None:
    """A report that runs past its deadline is interrupted: StoreError naming the deadline; the
    store works on."""
    s = aiguard.SQLiteStore(":memory:")
    s.add_call_records([call(f"c{i}") for i in range(2000)])
    with pytest.raises(aiguard.StoreError, match="deadline of 1e-06 s"):
        s.report_aggregates(feature=None, since=None, splits=["plan"], timeout=1e-6)
    assert s.report_aggregates(feature=None, since=None, splits=["plan"]) is not None
    s.close()


def test_postgres_report_statements_get_the_report_deadline() -> None:
    """The report's statements run with the report's deadline (longer than the store's own
    5 s), in one transaction; other statements keep the store's."""
    from aiguard.postgres import PostgresStore

    url = require_postgres()
    schema = unique("report_deadline")
    s = PostgresStore(url, schema=schema, timeout=2)
    try:
        with s._session(120.0) as run:
            assert run("SHOW statement_timeout", ()) == [("2min",)]
            assert run("SHOW jit", ()) == [("off",)]
        assert s._run("SHOW statement_timeout") == [("2s",)]
    finally:
        s.close()
        drop_schema(schema)
