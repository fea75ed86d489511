"""The aiguard command: edits the control file, reports status, checks rollout gates."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import aiguard
from aiguard._engine import gates as _gates
from aiguard.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_kill_revive_and_rollout_edit_the_control_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill, revive and rollout write the control file that every replica reads."""
    path = tmp_path / "control.toml"
    code, out, _ = run(
        capsys, "--control", str(path), "kill", "triage", "--reason", "bad", "--by", "ana"
    )
    assert code == 0 and "triage: killed (bad)" in out
    data = tomllib.loads(path.read_text())
    assert data["features"]["triage"] == {"killed": True, "reason": "bad", "by": "ana"}
    assert run(capsys, "--control", str(path), "rollout", "triage", "25")[0] == 0
    assert tomllib.loads(path.read_text())["features"]["triage"]["rollout"] == 25
    assert run(capsys, "--control", str(path), "revive", "triage")[0] == 0
    assert tomllib.loads(path.read_text())["features"]["triage"] == {"killed": False, "rollout": 25}
    assert run(capsys, "--control", str(path), "kill", "--all", "--reason", "outage")[0] == 0
    assert tomllib.loads(path.read_text())["all"]["killed"] is True


def test_a_running_guard_follows_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kill said with the CLI reaches a process watching the file."""
    import time

    path = tmp_path / "control.toml"
    aiguard.configure(control=path, control_interval=0.05)

    @aiguard.guard("live", fallback=aiguard.Default("fb"))
    def f() -> str:
        return "model"

    assert f() == "model"
    run(capsys, "--control", str(path), "kill", "live", "--reason", "stop")
    deadline = time.monotonic() + 5
    while f() != "fb":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert aiguard.last_outcome().reason is aiguard.Reason.KILLED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rollout", "triage", "150"], "feature 'triage': rollout '150' is invalid"),
        (["rollout", "triage", "lots"], "feature 'triage': rollout 'lots' is invalid"),
        (["kill", "triage", "--reason", " "], "feature 'triage': --reason must say why"),
        (["kill", "--reason", "x"], "give a FEATURE or --all"),
    ],
)
def test_errors_name_the_feature_and_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Bad input exits 2 with a message naming the feature and the control file."""
    path = tmp_path / "control.toml"
    code, _, err = run(capsys, "--control", str(path), *argv)
    assert code == 2
    assert message in err
    if "FEATURE" not in message:
        assert str(path) in err


def gated(feature: str, fail_every: int) -> Any:
    n = {"i": 0}

    @aiguard.guard(
        feature,
        rollout=aiguard.Rollout(
            stages=[5, 25, 100],
            stage=2,
            key="user",
            gates=aiguard.Limits(max_error_rate=0.5, min_calls=10),
        ),
        fallback=aiguard.Default("fb"),
    )
    def f(user: str) -> str:
        n["i"] += 1
        if n["i"] % fail_every == 0:
            raise RuntimeError
        return "ai"

    return f


def test_rollout_check_and_status_read_recorded_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """rollout check passes the current stage's gates over the calls a guard recorded."""
    store = tmp_path / "store.db"
    control = tmp_path / "control.toml"
    aiguard.configure(store=store)
    good = gated("good", fail_every=10)
    for i in range(20):
        good(f"u{i}")
    _gates.flush()
    code, out, _ = run(
        capsys, "--control", str(control), "--store", str(store), "rollout", "check", "good"
    )
    assert code == 0, out
    assert "good at 100%: 20 calls, errors 10.0%" in out and "PASS" in out
    run(capsys, "--control", str(control), "kill", "good", "--reason", "maintenance")
    code, out, _ = run(capsys, "--control", str(control), "--store", str(store), "status")
    assert code == 0
    lines = out.splitlines()
    header = ["FEATURE", "STATE", "ROLLOUT", "THRESHOLD", "CALLS", "ERRORS", "FALLBACKS"]
    assert lines[0].split() == header
    good_line = next(line for line in lines if line.startswith("good"))
    assert "killed: maintenance" in good_line and " 20 " in good_line


def test_rollout_check_sums_every_replica_and_fails_a_breach(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Figures from several processes at the current percentage are summed and judged."""
    from aiguard.limits import StageFigures

    store_path = tmp_path / "store.db"
    control = tmp_path / "control.toml"
    gate = aiguard.Limits(max_error_rate=0.5, min_calls=10)
    store = aiguard.SQLiteStore(store_path)
    store.save_stage_figures("p1", [StageFigures("bad", 25, 20, 14, 0, 0, 14, gate)])
    store.save_stage_figures("p2", [StageFigures("bad", 25, 20, 16, 0, 0, 16, gate)])
    store.save_stage_figures("p2", [StageFigures("bad", 5, 50, 0, 0, 0, 0, gate)])
    run(capsys, "--control", str(control), "rollout", "bad", "25")
    code, out, _ = run(
        capsys, "--control", str(control), "--store", str(store_path), "rollout", "check", "bad"
    )
    assert code == 1
    assert "bad at 25%: 40 calls, errors 75.0%" in out
    assert "FAIL: error rate 0.75 > 0.5 over 40 calls" in out


def test_rollout_check_without_figures_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No recorded calls is an error, not a pass."""
    aiguard.SQLiteStore(tmp_path / "s.db").close()
    code, _, err = run(
        capsys,
        "--control",
        str(tmp_path / "c.toml"),
        "--store",
        str(tmp_path / "s.db"),
        "rollout",
        "check",
        "nothing",
    )
    assert code == 2 and "feature 'nothing': no recorded calls" in err


def test_console_script_is_installed(tmp_path: Path) -> None:
    """The `aiguard` command is on the venv's PATH and runs."""
    exe = Path(sys.executable).with_name("aiguard")
    proc = subprocess.run(
        [str(exe), "--control", str(tmp_path / "c.toml"), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no features in control file" in proc.stdout


def test_control_file_keeps_its_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Edits keep the file readable by the replicas that read it before."""
    import os

    path = tmp_path / "control.toml"
    path.write_text("")
    os.chmod(path, 0o644)
    run(capsys, "--control", str(path), "kill", "t", "--reason", "x")
    assert path.stat().st_mode & 0o777 == 0o644
