"""``aiguard tune``, ``aiguard check``, ``aiguard report --check`` and ``aiguard.check()``: exit
codes, what is printed, what --apply writes, drift breaches as control events and rollbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_quality import DAY, NOW, judged, spread

import aiguard
from aiguard import _history
from aiguard.cli import main


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "aiguard.db"


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "aiguard.toml"
    path.write_text(text)
    return str(path)


def test_tune_prints_the_recommendation(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0 and the table; nothing is written without --apply."""
    judged(aiguard.SQLiteStore(store_path), 3000, lambda c: c, low=0.5)
    control = tmp_path / "control.toml"
    args = ["--store", str(store_path), "--control", str(control), "tune", "triage"]
    assert main([*args, "--target", "precision >= 0.9", "--since", "30d"]) == 0
    out = capsys.readouterr().out
    assert "triage: precision >= 0.9: threshold 0.8" in out and "recommended" in out
    assert not control.exists()


def test_tune_apply_writes_the_control_file_and_a_guard_picks_it_up(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--apply writes the threshold; a guard reading that control file serves by it."""
    judged(aiguard.SQLiteStore(store_path), 3000, lambda c: c, low=0.5)
    control = tmp_path / "control.toml"
    code = main(
        ["--store", str(store_path), "--control", str(control), "tune", "triage",
         "--target", "precision >= 0.9", "--apply"]
    )  # fmt: skip
    assert code == 0
    written = aiguard.ControlFile(control).poll()
    assert written is not None
    threshold = written.features["triage"].threshold
    assert threshold is not None and 0.8 <= threshold <= 0.88
    assert f"triage: threshold {threshold:.2f}" in capsys.readouterr().out
    (entry,) = _history.read_file(control)  # recorded: who, why (the target), via the CLI
    assert entry.changes == {"threshold": (None, threshold)}
    assert entry.why == "tune: precision >= 0.9" and entry.by

    aiguard.configure(control=str(control), control_interval=0.05)

    @aiguard.guard("triage", confidence="score", threshold=0.5, fallback=aiguard.Default("no"))
    def triage(score: float) -> dict[str, float]:
        return {"score": score}

    assert triage(threshold - 0.01) == "no"
    assert triage(threshold) == {"score": threshold}


def test_tune_apply_without_a_recommendation_exits_1(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not enough evidence: said plainly, exit 1, the control file untouched."""
    judged(aiguard.SQLiteStore(store_path), 20, lambda c: 1.0)
    control = tmp_path / "control.toml"
    code = main(["--store", str(store_path), "--control", str(control), "tune", "triage",
                 "--apply"])  # fmt: skip
    assert code == 1
    captured = capsys.readouterr()
    assert "not enough evidence: 20 calls judged" in captured.out
    assert "not applied" in captured.err and not control.exists()


def test_tune_reports_the_current_threshold_from_the_control_file(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The threshold the control file says is the current one."""
    judged(aiguard.SQLiteStore(store_path), 3000, lambda c: c, low=0.5)
    control = tmp_path / "control.toml"
    control.write_text("[features.triage]\nthreshold = 0.6\n")
    assert main(["--store", str(store_path), "--control", str(control), "tune", "triage"]) == 0
    assert "current" in capsys.readouterr().out


def test_bad_target_is_a_usage_error(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 2 and the reason."""
    aiguard.SQLiteStore(store_path).close()
    assert main(["--store", str(store_path), "tune", "triage", "--target", "recall >= 1"]) == 2
    assert "target='recall >= 1' is invalid" in capsys.readouterr().err


def test_check_exit_codes(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """0 when every target holds or has no data, 1 when one fails; the failing one is printed,
    passing ones only with --verbose."""
    judged(aiguard.SQLiteStore(store_path), 3000, lambda c: c**3)
    good = config(tmp_path, '[features.triage]\ntargets = ["calls >= 100", "label_psi <= 0.2"]\n')
    args = ["--store", str(store_path), "check"]
    assert main([*args, "--config", good]) == 0
    out = capsys.readouterr().out
    assert "no data  triage: label_psi <= 0.2" in out and "PASS" not in out
    assert main([*args, "--config", good, "--verbose"]) == 0
    assert "PASS  triage: calls >= 100" in capsys.readouterr().out
    bad = config(tmp_path, '[features.triage]\ntargets = ["calls >= 100", "ece <= 0.05"]\n')
    assert main([*args, "--config", bad]) == 1
    out = capsys.readouterr().out
    assert "FAIL  triage: ece <= 0.05" in out and "1 failing, 1 passing" in out
    assert main([*args, "triage", "--config", bad]) == 1
    assert main([*args, "other", "--config", bad]) == 2


def test_report_check(store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """report --check prints the report, then the check, and exits 1 on a failing target."""
    judged(aiguard.SQLiteStore(store_path), 500, lambda c: c**3)
    bad = config(tmp_path, '[features.triage]\ntargets = ["ece <= 0.05"]\n')
    assert main(["--store", str(store_path), "report", "--config", bad]) == 0
    capsys.readouterr()
    assert main(["--store", str(store_path), "report", "--config", bad, "--check"]) == 1
    out = capsys.readouterr().out
    assert out.index("FEATURE / GROUP") < out.index("FAIL  triage: ece <= 0.05")


def test_audited_error_rate_target(store_path: Path, tmp_path: Path) -> None:
    """audited_error_rate <= 2% fails when auditors find a quarter of the answers wrong."""
    judged(aiguard.SQLiteStore(store_path), 400, lambda c: 0.75, audited=True)
    bad = config(tmp_path, '[features.triage]\ntargets = ["audited_error_rate <= 2%"]\n')
    assert main(["--store", str(store_path), "check", "--config", bad]) == 1


def drifted(store: Any, feature: str = "triage") -> None:
    """Calls at 10 %, then at 50 % whose confidence fell in the last week."""
    high, low = (lambda r: r.betavariate(5, 2)), (lambda r: r.betavariate(2, 5))
    spread(store, 300, NOW - 60 * DAY, 7, high, seed=1, percent=10, feature=feature)
    spread(store, 1000, NOW - 30 * DAY, 7, high, seed=2, percent=50, feature=feature)
    spread(store, 1000, NOW - 7 * DAY, 7, low, seed=3, percent=50, feature=feature)


def test_a_drift_breach_is_a_control_event(tmp_path: Path) -> None:
    """check() finds the breach, emits a drift event; without drift_rollback nothing rolls."""
    store = aiguard.SQLiteStore(tmp_path / "s.db")
    drifted(store)
    aiguard.configure(store=store, features={"triage": {"targets": ["confidence_psi <= 0.2"]}})
    result = aiguard.check()
    assert not result.ok and [e.kind for e in result.events] == [aiguard.EventKind.DRIFT]
    [event] = aiguard.recent_events("triage")
    assert event.kind == "drift" and "confidence_psi" in event.reason


def test_a_drift_breach_rolls_back_one_stage_through_the_control_file(tmp_path: Path) -> None:
    """drift_rollback = true: the control file's rollout goes from 50 to the stage below (the
    guard's Rollout says 25), and a ROLLBACK event says why."""
    store = aiguard.SQLiteStore(tmp_path / "s.db")
    drifted(store, "staged")
    control = tmp_path / "control.toml"
    control.write_text("[features.staged]\nrollout = 50\n")
    aiguard.configure(
        store=store,
        control=str(control),
        features={"staged": {"targets": ["confidence_psi <= 0.2"], "drift_rollback": True}},
    )

    @aiguard.guard(
        "staged",
        rollout=aiguard.Rollout(key="user", stages=(10, 25, 50, 100), stage=3),
        fallback=aiguard.Default("baseline"),
    )
    def triage(user: str) -> str:
        return "ai"

    triage("u1")
    result = aiguard.check()
    assert [e.kind for e in result.events] == ["drift", "rollback"]
    said = aiguard.ControlFile(control).poll()
    assert said is not None and said.features["staged"].rollout == 25
    assert "from 50% to 25%" in result.events[1].reason


def test_a_drift_rollback_from_the_cli_uses_the_recorded_stages(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no guard in the process, the stage below is the highest percentage below the
    current one that calls were recorded at (10 here)."""
    drifted(aiguard.SQLiteStore(store_path))
    control = tmp_path / "control.toml"
    cfg = config(
        tmp_path,
        '[features.triage]\ntargets = ["confidence_psi <= 0.2"]\ndrift_rollback = true\n',
    )
    code = main(["--store", str(store_path), "--control", str(control), "check", "--config", cfg])
    assert code == 1
    said = aiguard.ControlFile(control).poll()
    assert said is not None and said.features["triage"].rollout == 10
    assert "rollback: triage: drift" in capsys.readouterr().out


def test_a_drift_rollback_without_a_control_source_stays_in_this_process(tmp_path: Path) -> None:
    """No control source: the rollback is this process's, like a rollout gate's."""
    store = aiguard.SQLiteStore(tmp_path / "s.db")
    drifted(store, "local")
    aiguard.configure(
        store=store,
        features={"local": {"targets": ["confidence_psi <= 0.2"], "drift_rollback": True}},
    )

    @aiguard.guard(
        "local",
        rollout=aiguard.Rollout(key="user", stages=(10, 50), stage=1),
        fallback=aiguard.Default("baseline"),
    )
    def triage(user: str) -> str:
        return "ai"

    assert triage.outcome("u").rollout_percent == 50
    result = aiguard.check()
    assert "from 50% to 10% (this process)" in result.events[1].reason
    assert triage.outcome("u").rollout_percent == 10


def test_a_stable_feature_passes_its_drift_targets(tmp_path: Path) -> None:
    """The same distribution in both windows: no event, the check passes."""
    store = aiguard.SQLiteStore(tmp_path / "s.db")
    spread(store, 1000, NOW - 30 * DAY, 7, lambda r: r.betavariate(5, 2), seed=2)
    spread(store, 1000, NOW - 7 * DAY, 7, lambda r: r.betavariate(5, 2), seed=3)
    aiguard.configure(
        store=store,
        features={
            "triage": {
                "targets": ["confidence_psi <= 0.2", "confidence_ks <= 0.1", "label_psi <= 0.2"],
                "drift_rollback": True,
            }
        },
    )
    result = aiguard.check()
    assert result.ok and not result.events
    assert [r.status for r in result.results] == ["PASS", "PASS", "PASS"]


def test_a_drift_event_counts_in_the_control_events_metric(tmp_path: Path) -> None:
    """The drift event is counted in aiguard.control.events, with its kind."""
    from aiguard.testing import capture_telemetry

    store = aiguard.SQLiteStore(tmp_path / "s.db")
    drifted(store)
    aiguard.configure(store=store, features={"triage": {"targets": ["confidence_ks <= 0.1"]}})
    with capture_telemetry() as telemetry:
        aiguard.check()
        points = telemetry.metric_points("aiguard.control.events")
    assert [(dict(p.attributes), p.value) for p in points] == [
        ({"aiguard.feature": "triage", "aiguard.event": "drift"}, 1)
    ]


def test_tune_apply_writes_to_a_configured_redis_control(tmp_path: Path) -> None:
    """With a Redis control source configured, apply=True writes the threshold there (under its
    own prefix) and this process uses it at once."""
    from services import require_redis, unique

    from aiguard.redis import RedisControl

    url = require_redis()
    prefix = unique("aiguard_tune")
    source = RedisControl(url, prefix=prefix)
    store = aiguard.SQLiteStore(tmp_path / "s.db")
    judged(store, 3000, lambda c: c, low=0.5)
    aiguard.configure(store=store, control=source)
    try:
        t = aiguard.tune("triage", "precision >= 0.9", apply=True)
        assert t.applied == [f"Redis control {url}"]
        said = RedisControl(url, prefix=prefix).poll()
        assert said is not None and said.features["triage"].threshold == t.threshold
        assert aiguard.tune("triage", "precision >= 0.9").current_threshold == t.threshold
    finally:
        import redis

        redis.Redis.from_url(url).delete(f"{prefix}:control")
