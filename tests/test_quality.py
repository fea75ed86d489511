"""Calibration, audits, drift and tuning on generated data with known properties, on SQLite and
PostgreSQL alike: the figures must find a known miscalibration and a known shift, and must not
flag a calibrated, stable feature."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from services import fresh_store

import aiguard
from aiguard import _since
from aiguard._runtime.records import CALL_RECORD_COLUMNS
from aiguard._sql import FEEDBACK_COLUMNS

DAY = 86400.0
NOW = time.time()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh store of each kind."""
    with fresh_store(request.param, tmp_path / "quality.db") as s:
        yield s


def record(call_id: str, feature: str = "triage", **values: Any) -> tuple[Any, ...]:
    """A call record row: served by the model unless said otherwise."""
    row: dict[str, Any] = dict.fromkeys(CALL_RECORD_COLUMNS)
    row.update(
        call_id=call_id,
        feature=feature,
        started_at=NOW - DAY,
        source="model",
        reason="served",
        model="m1",
        latency=0.1,
    )
    row.update(values)
    return tuple(row[c] for c in CALL_RECORD_COLUMNS)


def add_feedback(store: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Feedback rows written with one statement per batch (the stores' add_feedback writes one
    durable transaction per row, too slow for thousands)."""
    columns = [c for c in FEEDBACK_COLUMNS if c != "id"]
    params = [
        tuple({"created_at": NOW, "feature": "triage", **r}.get(c) for c in columns) for r in rows
    ]
    mark = store._mark
    sql = f"INSERT INTO feedback ({','.join(columns)}) VALUES ({','.join([mark] * len(columns))})"
    if mark == "?":
        with store._transaction() as db:
            db.executemany(sql, params)
    else:
        with store._conn() as conn, conn.cursor() as cur:
            cur.executemany(sql, params)


def judged(
    store: Any,
    n: int,
    accuracy: Any,
    *,
    seed: int = 1,
    low: float = 0.3,
    audited: bool = False,
    feature: str = "triage",
    model: str = "m1",
) -> None:
    """``n`` model answers with confidence uniform in [low, 1], each right with probability
    ``accuracy(confidence)``, judged by a user decision (or an audit)."""
    rng = random.Random(seed)
    calls, fb = [], []
    for i in range(n):
        c = round(rng.uniform(low, 1.0), 3)
        cid = f"{feature}-{model}-{seed}-{i}"
        calls.append(record(cid, feature, confidence=c, model=model))
        right = rng.random() < accuracy(c)
        if audited:
            fb.append(
                {"call_id": cid, "kind": "audited", "accepted": int(right), "feature": feature}
            )
        else:
            kind = (
                rng.choice(["accepted", "edited"])
                if right
                else rng.choice(["rejected", "corrected"])
            )
            fb.append({"call_id": cid, "kind": kind, "feature": feature})
    store.add_call_records(calls)
    add_feedback(store, fb)


# -- calibration -----------------------------------------------------------------------------------


def test_a_miscalibrated_model_has_a_large_ece_and_its_bins_show_it(store: Any) -> None:
    """True accuracy = confidence ** 3: ECE is large and every busy bin is over-confident."""
    judged(store, 3000, lambda c: c**3)
    cal = aiguard.calibration("triage", store=store)
    assert cal.n == 3000
    assert cal.ece is not None and cal.ece > 0.15
    busy = [b for b in cal.bins if b.count >= 100]
    assert len(busy) >= 6
    for b in busy:
        assert b.accuracy is not None and b.mean_confidence is not None and b.interval
        assert b.interval[1] < b.mean_confidence  # the whole interval is below the confidence
        assert abs(b.accuracy - b.mean_confidence**3) < 0.1
    assert "ECE" in cal.table() and cal.table().count("\n") == 11


def test_a_calibrated_model_has_a_small_ece(store: Any) -> None:
    """True accuracy = confidence: ECE is small and the bins' intervals hold their confidence."""
    judged(store, 3000, lambda c: c)
    cal = aiguard.calibration("triage", store=store)
    assert cal.ece is not None and cal.ece < 0.04
    held = [b for b in cal.bins if b.count >= 100 and b.interval]
    assert held and sum(b.interval[0] <= b.mean_confidence <= b.interval[1] for b in held) >= len(
        held
    ) - 1  # fmt: skip


def test_calibration_by_model_and_for_one_model(store: Any) -> None:
    """Each model is calibrated on its own calls; model= reads only that model's."""
    judged(store, 1500, lambda c: c, model="good")
    judged(store, 1500, lambda c: c**3, model="bad", seed=2)
    cal = aiguard.calibration("triage", store=store)
    assert set(cal.by_model) == {"good", "bad"} and cal.n == 3000
    good, bad = cal.by_model["good"], cal.by_model["bad"]
    assert good.n == bad.n == 1500 and good.ece is not None and bad.ece is not None
    assert good.ece < 0.06 < 0.15 < bad.ece
    only = aiguard.calibration("triage", model="bad", store=store)
    assert only.n == 1500 and only.ece == pytest.approx(bad.ece)


def test_evidence_rules(store: Any) -> None:
    """The latest decision counts, a comment never undoes it, an audit wins over it, and only
    model answers with a confidence count."""
    store.add_call_records(
        [
            record("a", confidence=0.95),  # accepted, then rejected: wrong
            record("b", confidence=0.95),  # rejected, then a comment: wrong
            record("c", confidence=0.95),  # rejected by the user, audited right: right
            record("d", confidence=0.95, source="default", reason="low_confidence"),
            record("e", confidence=None),  # no confidence
            record("f", confidence=0.95, started_at=NOW - 40 * DAY),  # before since=
        ]
    )
    add_feedback(
        store,
        [
            {"call_id": "a", "kind": "accepted"},
            {"call_id": "a", "kind": "rejected"},
            {"call_id": "b", "kind": "rejected"},
            {"call_id": "b", "kind": "commented", "comment": "meh"},
            {"call_id": "c", "kind": "rejected"},
            {"call_id": "c", "kind": "audited", "accepted": 1},
            {"call_id": "d", "kind": "accepted"},
            {"call_id": "e", "kind": "accepted"},
            {"call_id": "f", "kind": "accepted"},
        ],
    )
    cal = aiguard.calibration("triage", since="30d", store=store)
    top = cal.bins[9]
    assert (cal.n, top.count, top.accuracy) == (3, 3, pytest.approx(1 / 3))
    assert aiguard.calibration("triage", store=store).n == 4


def test_reliability_diagram_is_inline_svg_with_a_bar_per_busy_bin(store: Any) -> None:
    """The diagram is one SVG, no script, a bar and a whisker per bin with calls, the diagonal."""
    judged(store, 500, lambda c: c**2)
    cal = aiguard.calibration("triage", store=store)
    svg = cal.svg()
    busy = sum(1 for b in cal.bins if b.count)
    assert svg.startswith("<figure>") and "<script" not in svg
    assert svg.count('class="bar"') == busy == svg.count('class="interval"')
    assert 'class="diagonal"' in svg and "ECE" in svg


def test_calibration_rejects_bad_input() -> None:
    """A bad bins= or feature is a ConfigError naming it; a store that is not SQL too."""
    aiguard.configure(store=":memory:")
    with pytest.raises(aiguard.ConfigError, match="bins=0"):
        aiguard.calibration("triage", bins=0)
    with pytest.raises(aiguard.ConfigError, match="feature"):
        aiguard.calibration(" triage")
    with pytest.raises(aiguard.ConfigError, match="SQLiteStore"):
        aiguard.calibration("triage", store=object())


# -- audits ----------------------------------------------------------------------------------------


def test_audited_error_rate_overall_and_by_band(store: Any) -> None:
    """Audits of answers wrong with probability 1 - confidence: the error rate falls band by
    band, and the overall rate's interval holds the true one."""
    judged(store, 2000, lambda c: c, audited=True, low=0.0)
    figures = aiguard.audit_figures("triage", store=store)
    assert figures.audited == 2000 and figures.interval is not None
    assert figures.interval[0] <= 0.5 <= figures.interval[1]
    rates = [b.error_rate for b in figures.bands]
    assert all(r is not None for r in rates)
    assert rates == sorted(rates, reverse=True)  # type: ignore[type-var]
    assert abs(figures.bands[0].error_rate - 0.9) < 0.05  # type: ignore[operator]
    assert "ERROR RATE" in figures.table()


def test_audits_are_not_decisions(store: Any) -> None:
    """A user decision is not an audit: no audited calls, no audited error rate."""
    judged(store, 50, lambda c: 0.0)
    assert aiguard.audit_figures("triage", store=store).audited_error_rate is None


# -- drift -----------------------------------------------------------------------------------------


def spread(
    store: Any,
    n: int,
    start: float,
    days: float,
    draw: Any,
    *,
    seed: int,
    percent: float | None = 50.0,
    labels: Sequence[str] = ("bug", "billing", "other"),
    weights: Sequence[float] = (1, 1, 1),
    feature: str = "triage",
) -> None:
    rng = random.Random(seed)
    store.add_call_records(
        [
            record(
                f"{feature}-s{seed}-{i}",
                feature,
                started_at=start + rng.uniform(0, days * DAY),
                confidence=min(1.0, max(0.0, draw(rng))),
                rollout_percent=percent,
                label=rng.choices(labels, weights)[0],
            )
            for i in range(n)
        ]
    )


def test_a_shifted_confidence_is_drift(store: Any) -> None:
    """The recent week's confidence is lower than the stage's first week: PSI > 0.2, KS large;
    the labels shifted too. Calls at an earlier stage are no part of the reference."""
    spread(store, 800, NOW - 90 * DAY, 7, lambda r: r.betavariate(2, 5), seed=1, percent=10)
    spread(store, 1000, NOW - 40 * DAY, 7, lambda r: r.betavariate(5, 2), seed=2)
    spread(store, 1000, NOW - 7 * DAY, 7, lambda r: r.betavariate(2.5, 3), seed=3,
           weights=(1, 1, 4))  # fmt: skip
    d = aiguard.drift("triage", store=store)
    assert d.enough and d.reference_calls == 1000 and d.recent_calls == 1000
    assert d.reference == "the first week at 50%"
    assert d.confidence_psi is not None and d.confidence_psi > 0.2
    assert d.confidence_ks is not None and d.confidence_ks > 0.3
    assert d.label_psi is not None and d.label_psi > 0.2
    figures = aiguard.quality.figures("triage", store=store)
    assert figures["confidence_psi"] == pytest.approx(d.confidence_psi)


def test_a_stable_feature_is_not_drift(store: Any) -> None:
    """The same distributions in both windows: PSI < 0.1, and a target holds."""
    spread(store, 1000, NOW - 40 * DAY, 7, lambda r: r.betavariate(5, 2), seed=2)
    spread(store, 1000, NOW - 7 * DAY, 7, lambda r: r.betavariate(5, 2), seed=3)
    d = aiguard.drift("triage", store=store)
    assert d.enough
    assert d.confidence_psi is not None and d.confidence_psi < 0.1
    assert d.confidence_ks is not None and d.confidence_ks < 0.1
    assert d.label_psi is not None and d.label_psi < 0.1
    assert aiguard.Target.parse("confidence_psi <= 0.2").check(d.confidence_psi)


def test_drift_against_a_saved_baseline(store: Any) -> None:
    """A baseline saved from one span is the reference; figures() uses it once saved."""
    spread(store, 600, NOW - 40 * DAY, 7, lambda r: r.betavariate(2, 5), seed=1)
    spread(store, 600, NOW - 20 * DAY, 7, lambda r: r.betavariate(5, 2), seed=2)
    spread(store, 600, NOW - 7 * DAY, 7, lambda r: r.betavariate(5, 2), seed=3)
    with pytest.raises(aiguard.ConfigError, match="no baseline named 'default'"):
        aiguard.drift("triage", reference="baseline", store=store)
    stage = aiguard.drift("triage", store=store)
    assert stage.confidence_psi is not None and stage.confidence_psi > 0.2
    held = aiguard.save_baseline("triage", since=NOW - 21 * DAY, until=NOW - 12 * DAY, store=store)
    assert held == 600
    base = aiguard.drift("triage", reference="baseline", store=store)
    assert base.reference_calls == 600 and base.confidence_psi is not None
    assert base.confidence_psi < 0.1
    assert aiguard.quality.figures("triage", store=store)["confidence_psi"] == pytest.approx(
        base.confidence_psi
    )
    assert aiguard.save_baseline("triage", since=NOW - 41 * DAY, until=NOW - 30 * DAY, store=store)
    again = aiguard.drift("triage", reference="baseline", store=store)  # replaced, not added
    assert again.confidence_psi is not None and again.confidence_psi > 0.2


def test_too_few_calls_are_not_judged(store: Any) -> None:
    """With fewer than 100 calls in a window, drift is shown but figures() gives None."""
    spread(store, 50, NOW - 40 * DAY, 7, lambda r: r.betavariate(5, 2), seed=1)
    spread(store, 50, NOW - 7 * DAY, 7, lambda r: r.betavariate(1, 5), seed=2)
    d = aiguard.drift("triage", store=store)
    assert not d.enough and d.confidence_psi is not None
    figures = aiguard.quality.figures("triage", store=store)
    assert figures["confidence_psi"] is None and figures["label_psi"] is None


def test_drift_rejects_bad_input() -> None:
    """A bad window or reference is a ConfigError naming it."""
    aiguard.configure(store=":memory:")
    with pytest.raises(aiguard.ConfigError, match="window='soon'"):
        aiguard.drift("triage", window="soon")
    with pytest.raises(aiguard.ConfigError, match="window=-5"):
        aiguard.drift("triage", window=-5)
    with pytest.raises(aiguard.ConfigError, match="reference='last'"):
        aiguard.drift("triage", reference="last")  # type: ignore[arg-type]


# -- tuning ----------------------------------------------------------------------------------------


def test_tune_finds_the_threshold_of_a_known_precision_curve(store: Any) -> None:
    """Accuracy = confidence on [0.5, 1]: precision at t is (1 + t) / 2, so 0.9 needs t = 0.8;
    the lower bound needs a little more."""
    judged(store, 6000, lambda c: c, low=0.5)
    t = aiguard.tune("triage", "precision >= 0.9", store=store)
    assert t.threshold is not None and 0.8 <= t.threshold <= 0.88, t.message
    assert t.figures is not None and t.figures.precision_interval is not None
    assert t.figures.precision_interval[0] >= 0.9
    assert t.figures.coverage == pytest.approx((1 - t.threshold) / 0.5, abs=0.03)
    assert any(r.threshold < t.threshold for r in t.rows)
    assert any(r.threshold > t.threshold for r in t.rows)
    assert len(t.rows) <= 11
    harder = aiguard.tune("triage", "precision >= 0.95", store=store)
    assert harder.threshold is not None and harder.threshold > t.threshold
    assert "recommended" in t.table()


def test_tune_says_plainly_when_evidence_is_short(store: Any) -> None:
    """20 judged calls are not enough; an unreachable target is not met either."""
    judged(store, 20, lambda c: 1.0)
    t = aiguard.tune("triage", "precision >= 0.9", store=store)
    assert t.threshold is None and "20 calls judged" in t.message and "30" in t.message
    judged(store, 400, lambda c: 0.8, seed=2)
    t = aiguard.tune("triage", "precision >= 0.99", store=store)
    assert t.threshold is None and "lower 95% bound" in t.message


def test_tune_for_coverage_and_acceptance(store: Any) -> None:
    """Coverage: the highest threshold serving the share asked; acceptance from decisions only
    (an audit does not count)."""
    judged(store, 2000, lambda c: c, low=0.0)
    cov = aiguard.tune("triage", "coverage >= 60%", store=store)
    assert cov.threshold is not None and 0.35 <= cov.threshold <= 0.45
    assert cov.figures is not None and cov.figures.coverage is not None
    assert cov.figures.coverage >= 0.6
    acc = aiguard.tune("triage", "acceptance >= 0.8", store=store)
    assert acc.threshold is not None and acc.figures is not None
    assert acc.figures.acceptance_interval is not None
    assert acc.figures.acceptance_interval[0] >= 0.8


def test_tune_stops_at_the_lowest_confidence_with_evidence(store: Any) -> None:
    """Calls below the threshold in force went to fallbacks: the recommendation is not lower
    than the evidence, and the message says so."""
    judged(store, 500, lambda c: 1.0, low=0.7)
    store.add_call_records(
        [
            record(
                f"low{i}",
                confidence=0.3 + i / 1000,
                source="default",
                reason="low_confidence",
                threshold=0.7,
            )
            for i in range(300)
        ]
    )
    t = aiguard.tune("triage", "precision >= 0.9", store=store)
    assert t.threshold == 0.7 and "no evidence below 0.70" in t.message
    assert t.current_threshold == 0.7  # from the latest call record
    assert t.figures is not None and t.figures.coverage is not None
    assert t.figures.coverage == pytest.approx(500 / 800)


def test_tune_rejects_bad_targets() -> None:
    """A target tune cannot read is a ConfigError naming it."""
    aiguard.configure(store=":memory:")
    for bad in ("precision <= 0.9", "recall >= 0.9", "precision >= 1.5", "precision >= 0"):
        with pytest.raises(aiguard.ConfigError, match="target="):
            aiguard.tune("triage", bad)


def test_tune_apply_writes_the_threshold_and_a_guard_uses_it(tmp_path: Path) -> None:
    """apply=True writes to the configured control file; this process's guard uses it at once."""
    control = tmp_path / "control.toml"
    store = aiguard.SQLiteStore(tmp_path / "s.db")
    aiguard.configure(store=store, control=str(control), missing_ok=True)
    judged(store, 3000, lambda c: c, low=0.5)

    @aiguard.guard("triage", confidence="score", threshold=0.5, fallback=aiguard.Default("no"))
    def triage(score: float) -> dict[str, float]:
        return {"score": score}

    assert triage(0.79) == {"score": 0.79}
    t = aiguard.tune("triage", "precision >= 0.9", apply=True)
    assert t.applied == [f"control file {control}"] and t.threshold is not None
    assert f"threshold = {t.threshold}" in control.read_text()
    assert triage(0.79) == "no"
    assert aiguard.tune("triage", "precision >= 0.9").current_threshold == t.threshold
    none = aiguard.tune("triage", "precision >= 0.999", apply=True)
    assert none.applied is None and "not applied" in none.message


def test_tune_apply_without_a_control_source_is_refused(tmp_path: Path) -> None:
    """Nowhere to write: a ConfigError that says how to give one."""
    store = aiguard.SQLiteStore(tmp_path / "s.db")
    aiguard.configure(store=store)
    judged(store, 3000, lambda c: c, low=0.5)
    with pytest.raises(aiguard.ConfigError, match="no control source"):
        aiguard.tune("triage", "precision >= 0.9", apply=True)


def test_since_is_read_as_users_write_it() -> None:
    """The quality figures' windows: a span back from now, an ISO date (UTC unless it says),
    a number as it is, nothing as nothing, anything else a ConfigError naming since."""
    assert _since.parse_since("7d", now=1e9) == 1e9 - 7 * 86400
    assert _since.parse_since("30m", now=1e9) == 1e9 - 1800
    assert _since.parse_since("2026-01-02") == 1767312000.0
    assert _since.parse_since("2026-01-02T03:04:05+02:00") == 1767312000.0 + 3 * 3600 + 245 - 7200
    assert _since.parse_since(12.5) == 12.5
    assert _since.parse_since(None) is None
    with pytest.raises(aiguard.ConfigError, match="since='last week'"):
        _since.parse_since("last week")
