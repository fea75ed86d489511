"""Edits made with the aiguard command: comments kept, invalid files mended or refused with the
line, and every change recorded in the control source's history (file or Redis)."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from services import Partition, require_redis, unique

import aiguard
from aiguard import _control_edit, _history
from aiguard.cli import main

COMMENTED = """\
# Control file of the support fleet. Owner: ops (#ops-oncall).

[all]            # the big red switch
killed = false

# Triage: killed by hand during incidents only.
[features.triage]
rollout = 25     # canary: 25% of users
threshold = 0.7  # tuned 2024-05

[features."reply-draft"]
# drafts for agents; never kill without telling support
killed = false
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def comments(text: str) -> list[str]:
    return [line[line.index("#") :] for line in text.splitlines() if "#" in line]


def test_edits_keep_comments_and_the_other_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill, rollout, threshold and revive change only their lines: every comment, blank line
    and other table stays as written, and the file says what was set."""
    path = tmp_path / "control.toml"
    path.write_text(COMMENTED)
    c = ["--control", str(path)]
    assert run(capsys, *c, "kill", "triage", "--reason", "refunds wrong", "--by", "ana")[0] == 0
    assert run(capsys, *c, "rollout", "triage", "50")[0] == 0
    assert run(capsys, *c, "threshold", "triage", "0.85")[0] == 0
    assert run(capsys, *c, "rollout", "new-one", "5")[0] == 0
    text = path.read_text()
    assert comments(text) == comments(COMMENTED)
    assert "rollout = 50.0     # canary: 25% of users" in text  # the value's comment is kept
    assert text.startswith(COMMENTED.split("[features.triage]")[0])  # untouched before it
    tail = '[features."reply-draft"]\n# drafts for agents; never kill without telling support\n'
    assert tail in text
    data = tomllib.loads(text)
    assert data["features"]["triage"] == {
        "rollout": 50.0, "threshold": 0.85, "killed": True, "reason": "refunds wrong", "by": "ana"
    }  # fmt: skip
    assert data["features"]["new-one"] == {"killed": False, "rollout": 5.0}
    assert run(capsys, *c, "revive", "triage")[0] == 0
    assert run(capsys, *c, "threshold", "triage", "none")[0] == 0
    text = path.read_text()
    assert comments(text) == comments(COMMENTED)[:4] + comments(COMMENTED)[5:]  # its value went
    assert tomllib.loads(text)["features"]["triage"] == {"rollout": 50.0, "killed": False}


names = st.text(min_size=1, max_size=20).filter(lambda s: s == s.strip() and s != "*")


@hsettings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(feature=names, reason=st.text(min_size=1, max_size=40), percent=st.integers(0, 100))
def test_any_name_and_reason_round_trip_and_comments_stay(
    feature: str, reason: str, percent: int
) -> None:
    """Whatever the feature name and the reason (quotes, backslashes, control characters,
    emoji), the edited text parses to exactly the state meant, and keeps every comment."""
    path = Path("control.toml")
    text, _, _, note = _control_edit.edited_text(
        path, COMMENTED, feature, {"killed": True, "reason": reason, "by": "x"}
    )
    text, _, _, note2 = _control_edit.edited_text(path, text, feature, {"rollout": percent})
    state = _control_edit.parse(path, text)
    assert state.features[feature].killed is True
    assert state.features[feature].reason == reason
    assert state.features[feature].rollout == percent
    assert state.features.get("reply-draft") == aiguard.FeatureControl()
    assert note is None and note2 is None  # edited in place: nothing written afresh
    assert all(c in text for c in comments(COMMENTED))


def test_an_invalid_own_entry_is_replaced_the_rest_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kill on a file whose only fault is in the feature's own table replaces that table,
    keeps everything else as written, says so, and a replica then reads the kill."""
    path = tmp_path / "control.toml"
    broken = COMMENTED.replace("rollout = 25     #", "rollout = 'half  #")  # a syntax error
    path.write_text(broken)
    with pytest.raises(aiguard.ConfigError):
        aiguard.ControlFile(path).poll()
    code, out, err = run(capsys, "--control", str(path), "kill", "triage", "--reason", "outage")
    assert code == 0, err
    assert "triage: killed (outage)" in out
    assert "the file was invalid" in err and "line 8" in err and "only 'triage'" in err
    text = path.read_text()
    before, _, after = broken.partition("[features.triage]\n")
    assert text.startswith(before + "[features.triage]\n")
    assert text.endswith(after.split('[features."reply-draft"]')[1])
    state = aiguard.ControlFile(path).poll()
    assert state is not None and state.features["triage"].killed
    assert state.features["triage"].threshold == 0.7  # what could still be read is kept
    assert state.features["triage"].rollout is None  # what could not, is dropped


@pytest.mark.parametrize(
    ("text", "feature", "line"),
    [
        (COMMENTED.removesuffix("killed = false\n") + "killed = nope\n", "other", 13),
        (COMMENTED.replace("threshold = 0.7", "threshold = 7"), "reply-draft", 9),
        ("[features.other]\nrollout = 'half'\n", "triage", 2),
    ],
)
def test_an_invalid_file_elsewhere_is_refused_with_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, feature: str, line: int
) -> None:
    """When replacing the feature's own entry would not make the file valid, the kill is
    refused: exit 2, the error with its line, the file untouched, no history entry."""
    path = tmp_path / "control.toml"
    path.write_text(text)
    code, _, err = run(capsys, "--control", str(path), "kill", feature, "--reason", "x")
    assert code == 2
    assert str(path) in err and f"line {line}" in err and "nothing was written" in err
    assert path.read_text() == text
    assert _history.read_file(path) == []


def test_json_files_are_edited_and_refused_with_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSON control file (no comments in JSON) keeps its other entries as written; a JSON
    syntax error is refused with its line."""
    path = tmp_path / "control.json"
    path.write_text('{"features": {"b": {"rollout": 5, "killed": false}}}')
    assert run(capsys, "kill", "a", "--reason", "r", "--control", str(path), "--by", "x")[0] == 0
    data = json.loads(path.read_text())
    assert data["features"]["b"] == {"rollout": 5, "killed": False}
    assert data["features"]["a"] == {"killed": True, "reason": "r", "by": "x"}
    bad = '{"features": {\n  "b": {"rollout": 5,}\n}}'
    path.write_text(bad)
    code, _, err = run(capsys, "--control", str(path), "kill", "a", "--reason", "r")
    assert code == 2 and "line 2" in err and path.read_text() == bad


def test_history_says_who_when_why_for_every_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill, revive, rollout and threshold each append who (--by, default the OS user), when
    and why; `aiguard history [FEATURE]` lists them, global kills included for a feature."""
    path = tmp_path / "control.toml"
    c = ["--control", str(path)]
    t0 = time.time()
    run(capsys, *c, "kill", "triage", "--reason", "wrong refunds", "--by", "ana")
    run(capsys, *c, "rollout", "draft", "25", "--why", "canary")
    run(capsys, *c, "kill", "--all", "--reason", "provider outage", "--by", "oncall")
    run(capsys, *c, "threshold", "triage", "0.9", "--reason", "tighter", "--by", "bo")
    run(capsys, *c, "revive", "triage", "--by", "ana", "--reason", "fixed")
    run(capsys, *c, "rollout", "draft", "none", "--reason", "back to code")
    entries = _history.read_file(path)
    assert [(e.feature, e.action, e.by, e.why) for e in entries] == [
        ("triage", "kill", "ana", "wrong refunds"),
        ("draft", "rollout", getpass.getuser(), "canary"),
        ("*", "kill", "oncall", "provider outage"),
        ("triage", "threshold", "bo", "tighter"),
        ("triage", "revive", "ana", "fixed"),
        ("draft", "rollout", getpass.getuser(), "back to code"),
    ]
    for e in entries:
        at = time.mktime(time.strptime(e.at, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        assert t0 - 2 <= at <= time.time() + 2
    assert entries[3].changes == {"threshold": (None, 0.9)}
    assert entries[5].changes == {"rollout": (25.0, None)}

    code, out, _ = run(capsys, "history", "triage", *c)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["AT", "FEATURE", "CHANGE", "BY", "VIA", "WHY"]
    assert len(lines) == 5  # triage's three changes and the global kill
    assert "every feature" in lines[2] and "provider outage" in lines[2]
    assert "threshold code -> 0.9" in lines[3] and "bo" in lines[3]
    code, out, _ = run(capsys, "history", *c, "--json", "--limit", "2")
    assert [json.loads(line)["feature"] for line in out.splitlines()] == ["triage", "draft"]
    code, out, _ = run(capsys, "history", "nobody", *c)
    assert code == 0 and len(out.splitlines()) == 2 and "every feature" in out  # global only


def test_python_api_edits_are_recorded(tmp_path: Path) -> None:
    """Edits of the control source through the Python API (tune(apply=True), drift
    rollbacks) are recorded with why and via."""
    path = tmp_path / "control.toml"
    _control_edit.write("triage", path, why="tune: precision >= 0.9", via="tune", threshold=0.8)
    (entry,) = _history.read_file(path)
    assert (entry.feature, entry.action, entry.via) == ("triage", "threshold", "tune")
    assert entry.why == "tune: precision >= 0.9" and entry.by == getpass.getuser()


def test_concurrent_edits_from_many_processes_all_land(tmp_path: Path) -> None:
    """Eight operators killing eight features at once: every kill is in the file and in the
    history (edits are serialised by a lock; none overwrites another)."""
    path = tmp_path / "control.toml"
    exe = Path(sys.executable).with_name("aiguard")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [str(exe), "kill", f"f{i}", "--reason", f"r{i}", "--control", str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    state = aiguard.ControlFile(path).poll()
    assert state is not None
    assert {n for n, fc in state.features.items() if fc.killed} == {f"f{i}" for i in range(8)}
    assert sorted(e.feature for e in _history.read_file(path)) == [f"f{i}" for i in range(8)]


def test_a_held_lock_ends_in_an_error_not_a_hang(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another edit holding the file: the command waits a bounded time, then exits 2."""
    monkeypatch.setattr(_history, "LOCK_WAIT", 0.3)
    path = tmp_path / "control.toml"
    with _history.locked(path):
        t = time.monotonic()
        code, _, err = run(capsys, "--control", str(path), "kill", "x", "--reason", "r")
        assert time.monotonic() - t < 3
    assert code == 2 and "another edit" in err and not path.exists()


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    url = require_redis()
    prefix = unique("aiguard_cli")
    yield url, prefix
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_redis_prefix_and_history(
    redis_prefix: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--prefix names the Redis keys (before or after the command); the history lives in a
    capped list beside the control document, written in the same transaction."""
    import redis

    url, prefix = redis_prefix
    client = redis.Redis.from_url(url)
    default_before = client.get("aiguard:control")
    c = ["--control", url, "--prefix", prefix]
    assert run(capsys, *c, "kill", "triage", "--reason", "bad", "--by", "ana")[0] == 0
    assert run(capsys, "rollout", "triage", "10", *c)[0] == 0
    doc = json.loads(client.get(f"{prefix}:control") or b"{}")
    assert doc["features"]["triage"] == {
        "killed": True,
        "reason": "bad",
        "by": "ana",
        "rollout": 10,
    }
    assert client.get("aiguard:control") == default_before  # the default document untouched
    assert client.llen(f"{prefix}:control:history") == 2
    code, out, _ = run(capsys, "history", *c)
    assert code == 0 and "killed" in out and "rollout code -> 10%" in out and "ana" in out
    code, out, _ = run(capsys, "status", *c)
    assert code == 0 and "killed: bad" in out and "10%" in out
    from aiguard.redis import RedisControl

    source = RedisControl(url, prefix=prefix)
    try:
        state = source.poll()
    finally:
        source.close()
    assert state is not None and state.features["triage"].rollout == 10


def test_an_unanswering_redis_ends_in_an_error_not_a_hang(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Redis that accepts the connection but never answers: exit 2 within the deadline."""
    require_redis()
    proxy = Partition(("127.0.0.1", 6379))
    proxy.blackhole()
    try:
        t = time.monotonic()
        code, _, err = run(
            capsys,
            "kill", "x", "--reason", "r", "--prefix", unique("aiguard_cli"),
            "--control", f"redis://127.0.0.1:{proxy.port}/0",
        )  # fmt: skip
        assert time.monotonic() - t < 15
    finally:
        proxy.close()
    assert code == 2 and f"127.0.0.1:{proxy.port}" in err
