"""The aiguard command: edits the control file, reports status, checks rollout gates."""

from __future__ import annotations

import json
import subprocess
import sys
import time
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
    aiguard.configure(control=path, control_interval=0.05, missing_ok=True)

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


@pytest.mark.parametrize(
    "argv",
    [
        ["--control", "{c}", "kill", "x", "--reason", "r"],
        ["kill", "x", "--reason", "r", "--control", "{c}"],
        ["kill", "--control", "{c}", "x", "--reason", "r"],
    ],
)
def test_options_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """--control (like every common option) is taken before or after the command."""
    path = tmp_path / "c.json"
    code, _, err = run(capsys, *[a.replace("{c}", str(path)) for a in argv])
    assert code == 0, err
    assert json.loads(path.read_text())["features"]["x"]["killed"] is True


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`aiguard --version` prints the package version and exits 0, from a shell too."""
    assert run(capsys, "--version") == (0, f"aiguard {aiguard.__version__}\n", "")
    exe = Path(sys.executable).with_name("aiguard")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == f"aiguard {aiguard.__version__}"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing command or argument is exit 2 with the usage, not a traceback."""
    code, _, err = run(capsys)
    assert code == 2 and "give a command" in err
    code, _, err = run(capsys, "kill", "x")
    assert code == 2 and "--reason" in err and "usage:" in err


@pytest.mark.parametrize("name", [" spaced ", "", "*", "  "])
def test_invalid_feature_names_exit_2_naming_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """A FEATURE that is not a feature name is refused before anything is written."""
    path = tmp_path / "c.toml"
    for argv in (
        ["kill", name, "--reason", "r"],
        ["revive", name],
        ["rollout", name, "5"],
        ["threshold", name, "0.5"],
        ["history", name],
    ):
        code, _, err = run(capsys, "--control", str(path), *argv)
        assert code == 2, argv
        assert repr(name) in err, (argv, err)
    assert not path.exists()


def test_a_feature_may_be_named_like_a_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check`, `status`, `history`... are usable as FEATURE; `rollout check 25` sets the
    rollout of the feature named check, `rollout check check` judges its gates."""
    path = tmp_path / "c.toml"
    c = ["--control", str(path)]
    assert run(capsys, *c, "kill", "check", "--reason", "r")[0] == 0
    assert run(capsys, *c, "rollout", "check", "25")[0] == 0
    assert run(capsys, *c, "rollout", "status", "none")[0] == 0
    assert run(capsys, *c, "threshold", "history", "0.5")[0] == 0
    state = aiguard.ControlFile(path).poll()
    assert state is not None
    assert state.features["check"].killed and state.features["check"].rollout == 25
    assert state.features["history"].threshold == 0.5
    assert state.features["status"].rollout is None
    code, out, _ = run(capsys, *c, "history", "check")
    assert code == 0 and len(out.splitlines()) == 3
    store = tmp_path / "s.db"
    aiguard.SQLiteStore(store).close()
    code, _, err = run(capsys, *c, "--store", str(store), "rollout", "check", "check")
    assert code == 2 and "feature 'check': no recorded calls at 25%" in err


def test_threshold_and_rollout_none_hand_back_to_the_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`threshold F V` overrides the code's threshold in a running guard; `threshold F none`
    and `rollout F none` hand them back to the code."""
    path = tmp_path / "control.toml"
    path.write_text("# edited with the aiguard command\n")
    aiguard.configure(control=path, control_interval=0.05)

    @aiguard.guard("scored", confidence="score", threshold=0.5, fallback=aiguard.Default("fb"))
    def scored(score: float) -> dict[str, float]:
        return {"score": score}

    def wait_for(expected: object) -> None:
        deadline = time.monotonic() + 5
        while scored(0.7) != expected:
            assert time.monotonic() < deadline
            time.sleep(0.02)

    wait_for({"score": 0.7})
    assert run(capsys, "threshold", "scored", "0.9", "--control", str(path))[0] == 0
    wait_for("fb")
    assert run(capsys, "threshold", "scored", "none", "--control", str(path))[0] == 0
    wait_for({"score": 0.7})

    @aiguard.guard(
        "staged",
        rollout=aiguard.Rollout(stages=[5, 100], stage=1, key="user"),
        fallback=aiguard.Default("fb"),
    )
    def staged(user: str) -> str:
        return "ai"

    def served(expected: int) -> None:
        deadline = time.monotonic() + 5
        while sum(staged(f"u{i}") == "ai" for i in range(50)) != expected:
            assert time.monotonic() < deadline
            time.sleep(0.02)

    served(50)  # the code says 100%
    assert run(capsys, "rollout", "staged", "0", "--control", str(path))[0] == 0
    served(0)
    assert aiguard.last_outcome().reason is aiguard.Reason.NOT_IN_ROLLOUT  # type: ignore[union-attr]
    code, out, _ = run(capsys, "rollout", "staged", "none", "--control", str(path))
    assert code == 0 and "none" in out
    served(50)
    assert "rollout" not in tomllib.loads(path.read_text())["features"]["staged"]


@pytest.mark.parametrize(("value", "rule"), [("1.5", "[0, 1]"), ("-0.1", "[0, 1]"), ("x", "")])
def test_threshold_values_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, rule: str
) -> None:
    """A threshold outside [0, 1] or not a number: exit 2 naming the feature and the value."""
    path = tmp_path / "c.toml"
    code, _, err = run(capsys, "--control", str(path), "threshold", "t", value)
    assert code == 2 and f"feature 't': threshold {value!r} is invalid" in err and rule in err
    assert not path.exists()


READ_ONLY = [
    ["status"],
    ["report"],
    ["report", "--check", "--config", "{cfg}"],
    ["export", "--feature", "f"],
    ["check", "--config", "{cfg}"],
    ["tune", "f"],
    ["rollout", "check", "f"],
]


@pytest.mark.parametrize("argv", READ_ONLY, ids=lambda a: " ".join(a[:2]))
def test_read_only_commands_never_create_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """A mistyped store path is exit 2 naming the path, and no file appears; an existing file
    that is not an aiguard store is refused and left as it was."""
    cfg = tmp_path / "aiguard.toml"
    cfg.write_text('[features.f]\ntargets = ["error_rate <= 5%"]\n')
    argv = [a.replace("{cfg}", str(cfg)) for a in argv]
    typo = tmp_path / "aiguard.dbb"
    code, _, err = run(capsys, "--control", str(tmp_path / "c.toml"), "--store", str(typo), *argv)
    assert code == 2 and str(typo) in err and "does not exist" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aiguard.toml"]
    other = tmp_path / "notes.txt"
    other.write_bytes(b"")
    code, _, err = run(capsys, *argv, "--store", str(other))
    assert code == 2 and str(other) in err and "not an aiguard store" in err
    assert other.read_bytes() == b""


def test_read_only_commands_never_create_tables_in_postgres(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A PostgreSQL database without aiguard's tables is refused; none are created."""
    import psycopg
    from services import require_postgres, unique

    url = require_postgres()
    name = unique("aiguard_empty")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        empty = url.rsplit("/", 1)[0] + f"/{name}"
        code, _, err = run(capsys, "status", "--store", empty)
        assert code == 2 and "holds no aiguard store" in err and name in err
        with psycopg.connect(empty) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'aiguard_meta'"
            ).fetchone()
        assert tables == (0,)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_status_shows_every_known_feature_with_its_rates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status lists the features of the control file, the call records and the config file,
    with calls, error and fallback rates from the call records (not only gated rollouts)."""
    store = tmp_path / "s.db"
    control = tmp_path / "c.toml"
    cfg = tmp_path / "aiguard.toml"
    cfg.write_text("[features.configured]\nthreshold = 0.6\n")
    aiguard.configure(store=store)

    @aiguard.guard("flaky", fallback=aiguard.Default("fb"))
    def flaky(i: int) -> str:
        if i % 4 == 0:
            raise RuntimeError("down")
        return "ok"

    @aiguard.guard("scored", confidence="score", threshold=0.5, fallback=aiguard.Default("fb"))
    def scored(score: float) -> dict[str, float]:
        return {"score": score}

    for i in range(20):
        flaky(i)
    for i in range(10):
        scored(i / 10)
    aiguard.flush()
    run(capsys, "kill", "paused", "--reason", "maintenance", "--control", str(control))
    code, out, err = run(
        capsys, "status", "--control", str(control), "--store", str(store), "--config", str(cfg)
    )
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line and line[0] != "("}
    assert set(rows) == {"configured", "flaky", "paused", "scored"}
    assert rows["flaky"].split()[-3:] == ["20", "25.0%", "25.0%"]  # calls, errors, fallbacks
    assert rows["scored"].split()[-3:] == ["10", "0.0%", "50.0%"]  # 5 under the threshold
    assert "killed: maintenance" in rows["paused"] and rows["paused"].split()[-3:] == ["-"] * 3
    assert "0.6 (config)" in rows["configured"]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_status_counts_in_both_sql_stores(tmp_path: Path, kind: str) -> None:
    """The status figures are computed alike by SQLite and PostgreSQL, within the window."""
    from services import fresh_store

    from aiguard import _cli_read

    with fresh_store(kind, tmp_path / "s.db") as store:
        aiguard.configure(store=store)

        @aiguard.guard("counted", fallback=aiguard.Default("fb"))
        def counted(i: int) -> str:
            if i % 5 == 0:
                raise RuntimeError("down")
            return "ok"

        for i in range(15):
            counted(i)
        aiguard.flush()
        counts = _cli_read.call_counts(store, time.time() - 3600)
        assert counts["counted"] == _cli_read.Counts(calls=15, fallbacks=3, errors=3)
        assert _cli_read.call_counts(store, time.time() + 1) == {}
        aiguard.configure(store=None)
