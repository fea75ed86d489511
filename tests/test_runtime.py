"""The runtime under production conditions: fork, a pre-fork server, configure() under load, exit.

What the runtime promises (and these tests hold it to):

- after ``os.fork()`` the child works: its calls never hang, a kill reaches it within two
  control poll intervals, its call records are written while it runs (within two writer
  intervals), under its own call ids only, and the parent goes on as before;
- the same in gunicorn workers forked from a ``--preload``-ed app;
- ``configure()`` returns fast under load and loses no call record when recording moves from one
  configuration or store to another: each call is recorded exactly once;
- interpreter exit waits at most ``exit_timeout`` (default 5 s) for call records a store cannot
  take, then says how many could not be written.

Every scenario that could hang runs in a subprocess with a deadline (forks, gunicorn, the load,
exits), so a hang is reported as a failure with the stage or the stacks where it stuck, and never
blocks the test run.

Timing bounds: a poller or writer that is due can wait for a core on a busy 2-core CI machine
(other processes, the GIL's 5 ms switch interval, our own busy threads); ``SLACK`` (0.5 s) covers
that with room to spare, yet is far below what a runtime that is not fork-safe shows (never).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib
import importlib.util
import io
import json
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import PG_URL, Partition, drop_schema, require_postgres, require_redis, unique


def _record_interval() -> float:
    """The call-record writer's interval (0.2 s), wherever the runtime keeps it."""
    try:
        return float(importlib.import_module("aiguard._runtime.records").INTERVAL)
    except ImportError:  # the layout before the runtime moved into aiguard._runtime
        return float(importlib.import_module("aiguard._records").INTERVAL)


RECORD_INTERVAL = _record_interval()

APPS = Path(__file__).parent / "apps"
SLACK = 0.5  # scheduling on a busy 2-core machine (see the module docstring)
FILE_INTERVAL = 0.05  # control file poll interval in the fork scenario
REDIS_INTERVAL = 0.1  # Redis control poll interval in the Redis fork scenario
APP_INTERVAL = 0.1  # control poll interval of tests/apps/gunicorn_app.py
RECORDS_BOUND = 2 * RECORD_INTERVAL + SLACK  # call records are in the store by then
EXIT_SLACK = 2.0  # interpreter start-up is not counted; teardown and scheduling are
FORKS = 20


def kill_bound(interval: float) -> float:
    """How long a kill may take to reach a process polling every ``interval`` s."""
    return 2 * interval + SLACK


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AIGUARD_STORE", None)
    env.pop("AIGUARD_CONTROL", None)
    return env


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_scenario(script: str, args: list[str], report: Path, timeout: float) -> dict[str, Any]:
    """Run tests/apps/<script> with a deadline; its JSON report (fail with its output if none)."""
    cmd = [sys.executable, str(APPS / script), "--report", str(report), *args]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=subprocess_env()
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        pytest.fail(f"{script} hung: no report after {timeout} s\nstderr:\n{tail(err)}")
    if done.returncode != 0 or not report.exists():
        pytest.fail(
            f"{script} failed (exit status {done.returncode}, a watchdog exit means the "
            f"parent hung: stacks below)\nstderr:\n{tail(done.stderr, 80)}"
        )
    result: dict[str, Any] = json.loads(report.read_text())
    result["stderr"] = tail(done.stderr, 80)  # stacks of what hung, aiguard's warnings
    return result


# -- 1. fork() with a busy parent ------------------------------------------------------------------


@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """20 forks, 4 at a time, of a parent with a store, records being written, a control file."""
    tmp = tmp_path_factory.mktemp("fork")
    args = ["--store", str(tmp / "store.db"), "--control", str(tmp / "control.toml")]
    args += ["--interval", str(FILE_INTERVAL), "--children", str(FORKS), "--wave", "4"]
    return run_scenario("fork_scenario.py", args, tmp / "report.json", timeout=120)


def child_name(c: dict[str, Any]) -> str:
    return f"child {c['index']} (pid {c['pid']})"


def test_forked_children_never_hang(forked: dict[str, Any]) -> None:
    """20 forks of a busy parent: every child finishes its work and exits; the parent goes on."""
    problems = []
    for c in forked["children"]:
        if c["hung"]:
            problems.append(f"{child_name(c)} hung: it had {c['stage_text']}; killed after 20 s")
        elif c["exit_code"] != 0:
            problems.append(f"{child_name(c)} exited with status {c['exit_code']}")
        problems += [f"{child_name(c)} failed: {e.strip()}" for e in c["errors"]]
    if forked["forks"] < FORKS:
        problems.append(f"only {forked['forks']} of {FORKS} forks: {forked['stopped_early']}")
    if forked["parent_threads_hung"]:
        problems.append(f"{forked['parent_threads_hung']} parent threads hung in guarded calls")
    problems += [f"a parent thread failed: {e}" for e in forked["parent_thread_errors"]]
    if forked["parent_flush_hung"]:
        problems.append("aiguard.flush() in the parent hung after the forks")
    stacks = [c for c in forked["children"] if c["stacks"]]
    if stacks:
        problems.append(f"stacks of {child_name(stacks[0])}:\n{tail(stacks[0]['stacks'], 60)}")
    assert not problems, "\n".join(problems)


def kill_problems(c: dict[str, Any], bound: float) -> list[str]:
    """What went wrong with the kill check of one child (nothing: an empty list)."""
    if c["probe_before"] not in (None, "served"):
        return [f"{child_name(c)}: its feature was {c['probe_before']!r} before the kill"]
    latency = c["kill_latency"]
    if latency is None and c["stage"] in ("forked", "called", "error"):
        return [f"{child_name(c)} stopped before it could see the kill: it had {c['stage_text']}"]
    if latency is None:
        return [f"{child_name(c)} never saw the kill (still {c['last_reason']!r} after 1.5 s)"]
    if latency > bound:
        return [f"{child_name(c)} saw the kill after {latency:.3f} s > {bound} s"]
    return []


def test_a_kill_reaches_every_forked_child(forked: dict[str, Any]) -> None:
    """A kill written to the control file reaches each forked child within 2 poll intervals."""
    bound = kill_bound(FILE_INTERVAL)
    parent = forked["parent_kill_latency"]
    assert parent is not None and parent <= bound, (
        f"the parent itself saw the kill after {parent} s (bound {bound} s): harness or machine"
    )
    problems = [p for c in forked["children"] for p in kill_problems(c, bound)]
    assert not problems, (
        f"kill propagation to forked children (poll interval {FILE_INTERVAL} s, "
        f"bound {bound} s):\n" + "\n".join(problems)
    )


def test_forked_children_write_their_records_while_running(forked: dict[str, Any]) -> None:
    """Each child's call records are in the store within 2 writer intervals, while it runs."""
    problems = []
    for c in forked["children"]:
        latency = c["records_latency"]
        if c["records"] == "not started":
            problems.append(f"{child_name(c)} stopped before its calls: it had {c['stage_text']}")
        elif c["records"] == "missing":
            problems.append(
                f"{child_name(c)}: {c['records_landed']} of its {c['records_expected']} call "
                "records in the store 2 s after its last call, while it was still running"
            )
        elif latency is not None and latency > RECORDS_BOUND:
            problems.append(f"{child_name(c)}: its records took {latency:.3f} s to land")
    assert not problems, (
        f"call records of forked children (writer interval {RECORD_INTERVAL} s, bound "
        f"{RECORDS_BOUND} s):\n" + "\n".join(problems)
    )


def test_forked_records_keep_their_process_ids(forked: dict[str, Any]) -> None:
    """Call ids are distinct across processes; no child re-writes the parent's queued records."""
    problems = list(forked["prefix_problems"])
    dup = forked["duplicate_ids"]
    if dup["count"]:
        problems.append(f"{dup['count']} call ids made by two calls, e.g. {dup['examples']}")
    for who, f in sorted(forked["foreign"].items()):
        problems.append(
            f"{who}: {f['count']} records in the store under its id prefix that it never made "
            f"(the parent's queued records re-written under the child's ids?), e.g. "
            f"{f['examples']}"
        )
    unknown = forked["unknown_prefix"]
    if unknown["count"]:
        problems.append(f"{unknown['count']} records under no process's prefix: {unknown}")
    missing = forked["parent_missing"]
    if missing["count"]:
        problems.append(
            f"{missing['count']} of the parent's {forked['parent_calls']} calls have no record "
            f"after flush(), e.g. {missing['examples']}"
        )
    if forked["integrity"] != "ok":
        problems.append(f"the SQLite store is damaged: {forked['integrity']}")
    assert not problems, "\n".join(problems)


# -- 3. the same through Redis ---------------------------------------------------------------------


def test_a_redis_kill_reaches_forked_children(tmp_path: Path) -> None:
    """A kill written to Redis reaches 4 forked children within 2 poll intervals."""
    url = require_redis()
    prefix = unique("aiguard_fork")
    args = ["--store", str(tmp_path / "store.db"), "--control", url, "--redis-prefix", prefix]
    args += ["--interval", str(REDIS_INTERVAL), "--children", "4", "--wave", "4"]
    try:
        report = run_scenario("fork_scenario.py", args, tmp_path / "report.json", timeout=60)
    finally:
        import redis

        client = redis.Redis.from_url(url)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
    bound = kill_bound(REDIS_INTERVAL)
    parent = report["parent_kill_latency"]
    assert parent is not None and parent <= bound, (
        f"the parent itself saw the Redis kill after {parent} s (bound {bound} s)"
    )
    problems = []
    for c in report["children"]:
        problems += kill_problems(c, bound)
        if c["hung"]:
            problems.append(f"{child_name(c)} hung: it had {c['stage_text']}")
        elif c["exit_code"] != 0:
            problems.append(f"{child_name(c)} exited with status {c['exit_code']}: {c['errors']}")
    assert len(report["children"]) == 4
    assert not problems, (
        f"Redis kill propagation to forked children (poll interval {REDIS_INTERVAL} s, "
        f"bound {bound} s):\n" + "\n".join(problems)
    )


# -- 2. gunicorn --preload with 2 sync workers -----------------------------------------------------


@dataclasses.dataclass
class Answer:
    """One HTTP request to the app: when it was sent and answered, and what it said."""

    phase: str
    start: float
    end: float
    pid: int | None = None
    reason: str | None = None
    call_id: str | None = None
    error: str | None = None


@dataclasses.dataclass
class GunicornRun:
    answers: list[Answer] = dataclasses.field(default_factory=list)
    kill_at: float | None = None
    records_latency: dict[int, float | None] = dataclasses.field(default_factory=dict)
    records_missing: dict[int, int] = dataclasses.field(default_factory=dict)
    log: str = ""

    def workers(self) -> set[int]:
        return {a.pid for a in self.answers if a.pid is not None}


REQUEST_TIMEOUT = 5.0


def ask(base: str, phase: str, hold: float) -> Answer:
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"{base}/?hold={hold}", timeout=REQUEST_TIMEOUT) as r:
            body = json.loads(r.read())
    except Exception as exc:
        return Answer(phase, start, time.monotonic(), error=f"{type(exc).__name__}: {exc}")
    return Answer(phase, start, time.monotonic(), body["pid"], body["reason"], body["call_id"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_gunicorn(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful), then SIGKILL to its whole process group after a deadline."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the master and its workers
    proc.wait(10)


def landed(db_path: Path, ids: list[str]) -> set[str]:
    if not db_path.exists():
        return set()
    try:
        with contextlib.closing(sqlite3.connect(db_path, timeout=5)) as db:
            marks = ",".join("?" * len(ids))
            rows = db.execute(f"SELECT call_id FROM call_records WHERE call_id IN ({marks})", ids)
            return {r[0] for r in rows}
    except sqlite3.OperationalError:  # no table yet, or locked for a moment
        return set()


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> GunicornRun:
    """Serve tests/apps/gunicorn_app.py, check records, kill the feature; gunicorn always ends."""
    if importlib.util.find_spec("gunicorn") is None:
        pytest.fail("gunicorn is not installed: pip install gunicorn (the dev extra has it)")
    tmp = tmp_path_factory.mktemp("gunicorn")
    store, control, log = tmp / "store.db", tmp / "control.toml", tmp / "gunicorn.log"
    feature = "gunicorn-app"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = subprocess_env()
    env.update(
        AIGUARD_TEST_STORE=str(store),
        AIGUARD_TEST_CONTROL=str(control),
        AIGUARD_TEST_FEATURE=feature,
    )
    cmd = [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2"]
    cmd += ["--worker-class", "sync", "--bind", f"127.0.0.1:{port}", "--chdir", str(APPS)]
    cmd += ["--graceful-timeout", "3", "--timeout", "30", "gunicorn_app:app"]
    run = GunicornRun()
    pool = concurrent.futures.ThreadPoolExecutor(2)

    def pair(phase: str, hold: float) -> None:
        # two requests at once, each holding its worker: a sync worker takes one at a time, so
        # the two go to the two workers
        futures = [pool.submit(ask, base, phase, hold) for _ in range(2)]
        run.answers += [f.result(timeout=REQUEST_TIMEOUT + 5) for f in futures]

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while True:  # up and answering
            answer = ask(base, "ready", 0)
            if answer.error is None:
                run.answers.append(answer)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not start serving:\n{tail(log.read_text())}")
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        rounds = 0
        while (len(run.workers()) < 2 or rounds < 3) and time.monotonic() < deadline:
            pair("serve", 0.2)
            rounds += 1
        # records of every worker land while gunicorn runs
        by_pid: dict[int, list[Answer]] = defaultdict(list)
        for a in run.answers:
            if a.pid is not None and a.call_id is not None:
                by_pid[a.pid].append(a)
        last = {pid: max(a.end for a in answers) for pid, answers in by_pid.items()}
        pending = dict(by_pid)
        deadline = max(last.values(), default=time.monotonic()) + 2.0
        while pending:
            found = landed(store, [a.call_id for ans in pending.values() for a in ans])  # type: ignore[misc]
            now = time.monotonic()
            for pid, answers in list(pending.items()):
                missing = sum(a.call_id not in found for a in answers)
                run.records_missing[pid] = missing
                if missing == 0:
                    run.records_latency[pid] = now - last[pid]
                    del pending[pid]
            if now > deadline:
                for pid in pending:
                    run.records_latency[pid] = None
                break
            time.sleep(0.02)
        # a kill in the control file reaches every worker
        from aiguard.cli import main

        with contextlib.redirect_stdout(io.StringIO()):
            code = main(["--control", str(control), "kill", feature, "--reason", "runtime test"])
        assert code == 0
        run.kill_at = time.monotonic()
        until = run.kill_at + kill_bound(APP_INTERVAL) + 1.0
        while time.monotonic() < until:
            pair("kill", 0.05)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        stop_gunicorn(proc)
        run.log = tail(log.read_text(errors="replace"))
    return run


def test_gunicorn_workers_answer_every_request(gunicorn: GunicornRun) -> None:
    """gunicorn --preload, 2 sync workers: both serve, every request answers within 5 s."""
    errors = [f"{a.phase} request: {a.error}" for a in gunicorn.answers if a.error]
    assert not errors, "requests that got no answer:\n" + "\n".join(errors[:10])
    assert len(gunicorn.workers()) >= 2, f"answers from {gunicorn.workers()} only:\n{gunicorn.log}"


def test_a_kill_reaches_every_gunicorn_worker(gunicorn: GunicornRun) -> None:
    """A kill in the control file reaches every worker within 2 poll intervals."""
    assert gunicorn.kill_at is not None
    bound = kill_bound(APP_INTERVAL)
    late = [
        f"worker {a.pid}: {a.reason!r} for a request sent {a.start - gunicorn.kill_at:.3f} s "
        "after the kill"
        for a in gunicorn.answers
        if a.phase == "kill" and a.start > gunicorn.kill_at + bound and a.reason != "killed"
    ]
    killed = {a.pid for a in gunicorn.answers if a.phase == "kill" and a.reason == "killed"}
    never = gunicorn.workers() - killed
    assert not late and not never, (
        f"kill propagation to gunicorn workers (poll interval {APP_INTERVAL} s, bound {bound} s):"
        f" workers that never answered 'killed': {sorted(never)}\n" + "\n".join(late[:10])
    )


def test_gunicorn_workers_write_their_records_while_running(gunicorn: GunicornRun) -> None:
    """Every worker's call records are in the store within 2 writer intervals, while it runs."""
    problems = [
        f"worker {pid}: {gunicorn.records_missing.get(pid)} call records still missing 2 s "
        "after its last answer"
        if latency is None
        else f"worker {pid}: its records took {latency:.3f} s to land"
        for pid, latency in sorted(gunicorn.records_latency.items())
        if latency is None or latency > RECORDS_BOUND
    ]
    assert gunicorn.records_latency, "no worker answered with a call id"
    assert not problems, f"bound {RECORDS_BOUND} s:\n" + "\n".join(problems)


def test_gunicorn_call_ids_are_unique_across_workers(gunicorn: GunicornRun) -> None:
    """Each worker has its own call-id prefix; no call id is given twice."""
    ids = [a.call_id for a in gunicorn.answers if a.call_id]
    assert len(ids) == len(set(ids)), "a call id was given to two calls"
    prefixes: dict[int, set[str]] = defaultdict(set)
    for a in gunicorn.answers:
        if a.call_id:
            prefixes[a.pid].add(a.call_id.rsplit("_", 1)[0])  # type: ignore[index]
    assert all(len(p) == 1 for p in prefixes.values()), prefixes
    every = [p for ps in prefixes.values() for p in ps]
    assert len(every) == len(set(every)), f"two workers share an id prefix: {prefixes}"


# -- 4. configure() under load ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """8 threads calling a guarded function while configure() changes recording and stores."""
    tmp = tmp_path_factory.mktemp("load")
    stores = [str(tmp / f"store{i}.db") for i in range(5)]
    return run_scenario("load_scenario.py", ["--stores", *stores], tmp / "report.json", timeout=60)


def test_configure_is_fast_under_load(load: dict[str, Any]) -> None:
    """8 busy threads: configure() returns within 1 s, kill()/revive() within 0.1 s."""
    assert load["hung"] is None, f"{load['hung']} never returned; stacks:\n{load['stderr']}"
    assert "op_error" not in load, load.get("op_error")
    slow = [
        f"{label} took {took:.3f} s"
        for label, took in load["timings"]
        if took > (0.1 if label.startswith(("kill", "revive")) else 1.0)
    ]
    assert not slow, "\n".join(slow)
    assert load["threads_hung"] == 0, f"{load['threads_hung']} calling threads hung"
    assert not load["thread_errors"], load["thread_errors"]


def test_configure_under_load_records_each_call_exactly_once(load: dict[str, Any]) -> None:
    """Capture, redaction and store changes under load: every call has exactly one record."""
    assert load["hung"] is None, f"{load['hung']} never returned"
    assert "op_error" not in load, load.get("op_error")
    assert load["calls"] > 1000, f"only {load['calls']} calls: the load did not run"
    assert load["distinct_ids"] == load["calls"], "a call id was given to two calls"
    neither, several = load["neither"], load["several"]
    assert neither["count"] == 0 and several["count"] == 0, (
        f"of {load['calls']} calls, {neither['count']} have no record in any store "
        f"(e.g. {neither['examples']}) and {several['count']} a record in two stores "
        f"(e.g. {several['examples']}); aiguard's warnings about records: {load['warnings']}"
    )


# -- 5. bounded exit -------------------------------------------------------------------------------

LOST = re.compile(r"could not write (\d+) call record")

HANGING_STORE = textwrap.dedent("""
    import json, sys, threading, time
    import aiguard

    class HangingStore:
        # the Store protocol; a call-record write never returns (a server that hangs)
        def add_review(self, item): pass
        def get_review(self, review_id): return None
        def list_reviews(self, *, feature, status, limit): return []
        def count_reviews(self, *, feature, status): return 0
        def claim_review(self, *, reviewer, feature, lease): return None
        def resolve_review(self, review_id, *, answer, reviewer, note, feedback=None):
            raise aiguard.ReviewError("no reviews here")
        def close(self): pass
        def add_call_records(self, rows): threading.Event().wait()
        def get_call(self, call_id): return None
        def call_records(self, *, feature=None, since=None): return []
        def add_feedback(self, row): return 0
        def feedback_rows(self, *, feature=None, since=None, call_id=None): return []

    aiguard.configure(store=HangingStore(), **json.loads(sys.argv[1]))
    f = aiguard.guard("exit")(lambda i: i)
    for i in range(20):
        f(i)
    time.sleep(0.5)  # the writer has taken these 20 and is stuck writing them
    for i in range(30):
        f(i)  # these wait in the queue
    print("exiting", time.monotonic(), flush=True)
""")

PG_BEHIND_A_PARTITION = textwrap.dedent("""
    import sys, time
    import aiguard
    from aiguard.postgres import PostgresStore

    store = PostgresStore(sys.argv[1], schema=sys.argv[2], timeout=1.0)
    aiguard.configure(store=store, exit_timeout=1.0)
    f = aiguard.guard("exit")(lambda i: i)
    f(0)
    aiguard.flush()  # the connection works: this one is written
    print("ready", flush=True)
    sys.stdin.readline()  # the test partitions the network now
    for i in range(20):
        f(i)
    time.sleep(0.5)  # the writer has taken these 20 and is stuck writing them
    for i in range(30):
        f(i)  # these wait in the queue
    print("exiting", time.monotonic(), flush=True)
""")


@dataclasses.dataclass
class Exited:
    returncode: int
    stdout: str
    stderr: str
    exit_took: float | None  # from the script's last line to the process's end


def finish(proc: subprocess.Popen[str], timeout: float) -> Exited:
    """Wait for ``proc`` with a deadline (kill it after: a hang becomes a failure)."""
    try:
        out, err = proc.communicate(timeout=timeout)
        hung = False
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        hung = True
    if hung:
        pytest.fail(
            f"the process did not exit within {timeout} s: it hangs at exit\n"
            f"stdout: {out.strip()}\nstderr:\n{tail(err)}"
        )
    ended = time.monotonic()
    found = re.search(r"exiting (\S+)", out)
    took = ended - float(found.group(1)) if found else None
    return Exited(proc.returncode, out, err, took)


def check_bounded_exit(done: Exited, exit_timeout: float, lost: int) -> None:
    assert done.exit_took is not None, (
        f"the script did not get to its end (status {done.returncode}):\n{tail(done.stderr)}"
    )
    assert done.exit_took <= exit_timeout + EXIT_SLACK, (
        f"exit took {done.exit_took:.2f} s with exit_timeout={exit_timeout}"
    )
    assert done.returncode == 0, f"exit status {done.returncode}:\n{tail(done.stderr)}"
    counts = [int(n) for n in LOST.findall(done.stderr)]
    assert counts, f"no 'could not write N call records' warning on stderr:\n{tail(done.stderr)}"
    assert sum(counts) == lost, (
        f"the warning says {counts}, but {lost} call records were never written: 20 taken by a "
        "write the store never answered, and 30 still queued"
    )


def test_exit_is_bounded_when_the_store_hangs() -> None:
    """A store that never answers: exit waits exit_timeout (1 s), then says what was lost."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING_STORE, json.dumps({"exit_timeout": 1.0})],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    done = finish(proc, timeout=12)
    check_bounded_exit(done, 1.0, lost=50)


def test_default_exit_timeout_is_5_seconds() -> None:
    """Without exit_timeout, a hanging store delays exit by about 5 s, not forever."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING_STORE, "{}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    done = finish(proc, timeout=15)
    check_bounded_exit(done, 5.0, lost=50)
    assert done.exit_took >= 4.0, (  # type: ignore[operator]
        f"exit gave up after {done.exit_took:.2f} s: the default exit_timeout is 5 s"
    )


@pytest.fixture
def pg_partition() -> Iterator[tuple[str, str, Partition]]:
    require_postgres()
    schema = unique("aiguard_exit")
    host_port = PG_URL.split("@")[-1].split("/")[0]
    host, port = host_port.rsplit(":", 1)
    proxy = Partition((host, int(port)))
    try:
        yield PG_URL.replace(host_port, f"127.0.0.1:{proxy.port}"), schema, proxy
    finally:
        proxy.close()
        drop_schema(schema)


def read_until(proc: subprocess.Popen[str], marker: str, deadline: float) -> str:
    """What ``proc`` printed up to ``marker`` (less if it ended or the deadline passed)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    while marker.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        seen += chunk
    return seen.decode()


def test_exit_is_bounded_when_postgres_is_partitioned(
    pg_partition: tuple[str, str, Partition],
) -> None:
    """PostgreSQL behind a network partition: exit waits exit_timeout, says what was lost."""
    url, schema, proxy = pg_partition
    proc = subprocess.Popen(
        [sys.executable, "-c", PG_BEHIND_A_PARTITION, url, schema],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        if "ready" not in read_until(proc, "ready", time.monotonic() + 20):
            done = finish(proc, timeout=10)
            pytest.fail(f"the script failed before the partition:\n{tail(done.stderr)}")
        proxy.blackhole()
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        done = finish(proc, timeout=12)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    check_bounded_exit(done, 1.0, lost=50)
