"""A busy process forks children that must keep working: run by tests/test_runtime.py.

    python fork_scenario.py --report R --store S --control PATH [--children 20 --wave 4]
    python fork_scenario.py --report R --store S --control redis://... --redis-prefix P

The parent configures aiguard (a SQLite store, a control source polled fast) and keeps three
threads calling a guarded function while it forks children, a few at a time. Each child:

1. makes guarded calls right after the fork (with the pre-fork guards) and reports their ids;
2. waits for the parent to kill the child's own feature in the control source (the parent does
   the writing, so writes never race) and measures how long the kill takes to reach it;
3. stays alive until the parent has seen the child's call records land in the store (the parent
   reads the SQLite file itself), then calls ``aiguard.flush()`` (as a worker does before it
   exits: it must write this child's calls, never the parent's) and exits with ``os._exit``.

Children talk to the parent through pipes (one JSON object per line). Every wait has a deadline:
a child that has not exited 20 s after its fork is killed and reported as hung, with the last
stage it reported. After the last wave the parent stops its threads, flushes, and checks what the
store holds against the ids every process reported. The scenario writes one JSON report (the
test asserts on it); it stops after the first wave in which a child hung.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import faulthandler
import io
import json
import os
import select
import signal
import sqlite3
import sys
import threading
import time
import traceback
import warnings
from typing import Any

import aiguard

WAVE_DEADLINE = 20.0  # seconds from a wave's forks until its children must have exited
KILL_WAIT = 1.5  # how long a child waits for a kill before it reports "never"
RECORDS_WAIT = 2.0  # how long the parent waits for a child's records before "never"
MESSAGE_WAIT = 10.0  # how long a child waits for the parent's next message
CALLS = 25  # guarded calls each child makes right after the fork
PARENT_THREADS = 3

# What a child was doing when it last reported, for "hung" messages.
STAGES = {
    "forked": "forked, before its first guarded call",
    "called": "made its guarded calls, waiting for the kill",
    "kill-checked": "checked the kill, waiting for its records to land",
    "flushing": "called aiguard.flush() before exiting",
    "done": "finished, exiting",
    "error": "failed with an exception",
}


class Channel:
    """One end of a pair of pipes carrying JSON lines."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd
        self.buf = b""
        self.eof = False

    def send(self, **message: Any) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self.wfd, data) :]

    def recv(self, deadline: float) -> dict[str, Any] | None:
        """The next message, or None at EOF or when the deadline passes."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                return None
            readable, _, _ = select.select([self.rfd], [], [], left)
            if readable:
                self._read()
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def pending(self) -> list[dict[str, Any]]:
        """Every complete message that can be read now, without waiting."""
        readable, _, _ = select.select([self.rfd], [], [], 0)
        if readable:
            self._read()
        out = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            out.append(json.loads(line))
        return out

    def _read(self) -> None:
        chunk = os.read(self.rfd, 65536)
        if chunk:
            self.buf += chunk
        else:
            self.eof = True

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Child:
    """The parent's view of one forked child."""

    def __init__(self, index: int, pid: int, chan: Channel) -> None:
        self.index, self.pid, self.chan = index, pid, chan
        self.feature = feature_of(index)
        self.stage = "forked"
        self.exit_code: int | None = None
        self.hung = False
        self.errors: list[str] = []
        self.work_ids: list[str] = []
        self.all_ids: list[str] = []
        self.probe_before: str | None = None
        self.t_last: float | None = None
        self.kill_at: float | None = None
        self.kill_latency: float | None = None
        self.last_reason: str | None = None
        self.records = "not started"  # waiting | landed | missing
        self.records_latency: float | None = None
        self.records_landed = 0
        self.stack_path = ""
        self.stacks: str | None = None

    def report(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": self.pid,
            "stage": self.stage,
            "stage_text": STAGES.get(self.stage, self.stage),
            "hung": self.hung,
            "exit_code": self.exit_code,
            "errors": self.errors,
            "probe_before": self.probe_before,
            "kill_latency": self.kill_latency,
            "last_reason": self.last_reason,
            "records": self.records,
            "records_latency": self.records_latency,
            "records_landed": self.records_landed,
            "records_expected": len(self.work_ids),
            "prefixes": sorted({prefix_of(i) for i in self.all_ids}),
            "stacks": self.stacks,
        }


def feature_of(index: int) -> str:
    """Child ``index``'s own feature (the parent's, for -1), which only the parent kills."""
    return "fork-probe-parent" if index < 0 else f"fork-probe-{index}"


def prefix_of(call_id: str) -> str:
    """``ag_<16 hex>`` of ``ag_<16 hex>_<counter hex>``: the process that made the call."""
    return call_id.rsplit("_", 1)[0]


# -- the child -----------------------------------------------------------------------------------


def child_main(chan: Channel, index: int, work: Any, probe: Any) -> int:
    chan.send(stage="forked")
    ids: list[str] = []
    first = probe.outcome()
    before = first.reason.value
    ids.append(first.call_id)
    work_ids = [work.outcome(k).call_id for k in range(CALLS)]
    chan.send(stage="called", work_ids=work_ids, t_last=time.monotonic(), probe_before=before)
    message = chan.recv(time.monotonic() + MESSAGE_WAIT)
    if message is None or "kill_at" not in message:
        chan.send(stage="called", error=f"no kill message from the parent (got {message!r})")
        return 3
    kill_at = message["kill_at"]
    latency = None
    while True:
        outcome = probe.outcome()
        ids.append(outcome.call_id)
        reason = outcome.reason.value
        now = time.monotonic()
        if reason == "killed":
            latency = now - kill_at
            break
        if now > kill_at + KILL_WAIT:
            break
        time.sleep(0.005)
    chan.send(stage="kill-checked", kill_latency=latency, last_reason=reason, probe_ids=ids)
    message = chan.recv(time.monotonic() + MESSAGE_WAIT)
    if message is None or not message.get("done"):
        chan.send(stage="kill-checked", error=f"no 'done' from the parent (got {message!r})")
        return 4
    chan.send(stage="flushing")
    aiguard.flush()  # what a worker does before it exits: must write only this child's calls
    chan.send(stage="done")
    return 0


def spawn(index: int, work: Any, probe: Any, stacks: str) -> Child:
    stack_path = os.path.join(stacks, f"child-{index}-stacks.txt")
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: never return into the parent's code
        code = 70
        chan = Channel(to_child_r, to_parent_w)
        try:
            os.close(to_parent_r)
            os.close(to_child_w)
            # SIGUSR1 writes every thread's stack here: what a hung child was stuck in
            faulthandler.register(signal.SIGUSR1, file=open(stack_path, "w"), all_threads=True)  # noqa: SIM115
            code = child_main(chan, index, work, probe)
        except BaseException:
            with contextlib.suppress(BaseException):
                chan.send(stage="error", error=traceback.format_exc())
        finally:
            os._exit(code)
    os.close(to_parent_w)
    os.close(to_child_r)
    child = Child(index, pid, Channel(to_parent_r, to_child_w))
    child.stack_path = stack_path
    return child


# -- the parent ----------------------------------------------------------------------------------


def stacks_of(child: Child) -> str | None:
    """Every thread's stack in a hung child (its C-level handler dumps them on SIGUSR1)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(child.pid, signal.SIGUSR1)
    time.sleep(0.3)
    try:
        with open(child.stack_path) as f:
            return f.read() or None
    except OSError:
        return None


class Parent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.redis = args.control.startswith("redis://")
        if self.redis:
            from aiguard.redis import RedisControl

            control: Any = RedisControl(
                args.control, prefix=args.redis_prefix, interval=args.interval
            )
        else:
            control = args.control
        aiguard.configure(
            store=args.store, control=control, control_interval=args.interval, missing_ok=True
        )
        fallback = aiguard.Default("fallback")
        self.work = aiguard.guard("fork-work", fallback=fallback)(lambda k: k)
        self.probes = {
            i: aiguard.guard(feature_of(i), fallback=fallback)(lambda: "model")
            for i in range(-1, args.children)
        }
        self.stop = threading.Event()
        self.thread_ids: list[list[str]] = [[] for _ in range(PARENT_THREADS)]
        self.thread_errors: list[str] = []
        self.parent_ids: list[str] = []

    def kill(self, feature: str) -> float:
        """Kill ``feature`` in the control source; the time the write was done."""
        if self.redis:
            from aiguard.redis import edit_control

            def change(c: aiguard.ControlState) -> aiguard.ControlState:
                fc = aiguard.FeatureControl(killed=True, reason="fork test", by="test")
                return c.model_copy(update={"features": {**c.features, feature: fc}})

            edit_control(self.args.control, change, prefix=self.args.redis_prefix)
        else:
            from aiguard.cli import main

            with contextlib.redirect_stdout(io.StringIO()):
                code = main(["--control", self.args.control, "kill", feature, "--reason", "t"])
            if code != 0:
                raise RuntimeError(f"aiguard kill {feature} exited with {code}")
        return time.monotonic()

    def busy(self, out: list[str]) -> None:
        k = 0
        try:
            while not self.stop.is_set():
                out.append(self.work.outcome(k).call_id)
                k += 1
                time.sleep(0.001)  # a steady stream the writer keeps up with: nothing dropped
        except BaseException:
            self.thread_errors.append(traceback.format_exc())

    def parent_kill_latency(self) -> float | None:
        """The parent itself sees a kill: the harness and the bound work without a fork."""
        probe = self.probes[-1]
        self.parent_ids.append(probe.outcome().call_id)
        at = self.kill(feature_of(-1))
        while time.monotonic() < at + KILL_WAIT:
            outcome = probe.outcome()
            self.parent_ids.append(outcome.call_id)
            if outcome.reason.value == "killed":
                return time.monotonic() - at
            time.sleep(0.005)
        return None

    def db(self) -> sqlite3.Connection:
        """A connection of the harness's own, opened for one look and closed before the next
        fork: no SQLite connection of ours is ever carried across a fork."""
        return sqlite3.connect(self.args.store, timeout=10)

    def landed(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        with contextlib.closing(self.db()) as db:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                try:
                    rows = db.execute(
                        f"SELECT call_id FROM call_records WHERE call_id IN ({marks})", chunk
                    ).fetchall()
                except sqlite3.OperationalError:  # locked for a moment: ask again next round
                    return found
                found.update(r[0] for r in rows)
        return found

    def handle(self, child: Child, message: dict[str, Any]) -> None:
        child.stage = message.get("stage", child.stage)
        if "error" in message:
            child.errors.append(message["error"])
        if "work_ids" in message:
            child.work_ids = message["work_ids"]
            child.all_ids += message["work_ids"]
            child.t_last = message["t_last"]
            child.probe_before = message["probe_before"]
            child.kill_at = self.kill(child.feature)
            child.records = "waiting"
            with contextlib.suppress(OSError):
                child.chan.send(kill_at=child.kill_at)
        if "kill_latency" in message:
            child.kill_latency = message["kill_latency"]
            child.last_reason = message["last_reason"]
            child.all_ids += message["probe_ids"]

    def check_records(self, children: list[Child]) -> None:
        waiting = [c for c in children if c.records == "waiting"]
        if not waiting:
            return
        found = self.landed([i for c in waiting for i in c.work_ids])
        now = time.monotonic()
        for c in waiting:
            assert c.t_last is not None
            landed = [i for i in c.work_ids if i in found]
            c.records_landed = len(landed)
            if len(landed) == len(c.work_ids):
                c.records, c.records_latency = "landed", now - c.t_last
            elif now > c.t_last + RECORDS_WAIT:
                c.records = "missing"
            else:
                continue
            with contextlib.suppress(OSError):
                c.chan.send(done=True)

    def wave(self, indices: list[int]) -> list[Child]:
        stacks = os.path.dirname(os.path.abspath(self.args.report))
        children = [spawn(i, self.work, self.probes[i], stacks) for i in indices]
        deadline = time.monotonic() + WAVE_DEADLINE
        while any(c.exit_code is None for c in children) and time.monotonic() < deadline:
            open_fds = [c.chan.rfd for c in children if not c.chan.eof]
            if open_fds:
                select.select(open_fds, [], [], 0.01)
            else:
                time.sleep(0.01)
            for c in children:
                if not c.chan.eof:
                    for message in c.chan.pending():
                        self.handle(c, message)
            self.check_records(children)
            for c in children:
                if c.exit_code is None:
                    pid, status = os.waitpid(c.pid, os.WNOHANG)
                    if pid:
                        c.exit_code = os.waitstatus_to_exitcode(status)
        for c in children:
            for message in c.chan.pending() if not c.chan.eof else []:
                self.handle(c, message)
            if c.exit_code is None:
                c.hung = True
                c.stacks = stacks_of(c)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.pid, signal.SIGKILL)
                _, status = os.waitpid(c.pid, 0)
                c.exit_code = os.waitstatus_to_exitcode(status)
            c.chan.close()
        return children

    def run(self) -> dict[str, Any]:
        report: dict[str, Any] = {"parent_kill_latency": self.parent_kill_latency()}
        threads = [
            threading.Thread(target=self.busy, args=(out,), daemon=True) for out in self.thread_ids
        ]
        for t in threads:
            t.start()
        time.sleep(0.3)  # the writer and the poller are busy before the first fork
        children: list[Child] = []
        indices = list(range(self.args.children))
        waves = [indices[i : i + self.args.wave] for i in range(0, len(indices), self.args.wave)]
        for n, wave in enumerate(waves, 1):
            done = self.wave(wave)
            children += done
            if any(c.hung for c in done):  # a hung wave costs 20 s: one is proof enough
                report["stopped_early"] = f"stopped after wave {n} of {len(waves)}: a child hung"
                break
        self.stop.set()
        for t in threads:
            t.join(10)
        report["parent_threads_hung"] = sum(t.is_alive() for t in threads)
        report["parent_thread_errors"] = self.thread_errors
        flusher = threading.Thread(target=aiguard.flush, daemon=True)
        flusher.start()
        flusher.join(15)
        report["parent_flush_hung"] = flusher.is_alive()
        report["forks"] = len(children)
        report["children"] = [c.report() for c in children]
        report.update(self.analyse(children))
        return report

    def analyse(self, children: list[Child]) -> dict[str, Any]:
        parent_ids = [i for out in self.thread_ids for i in out] + self.parent_ids
        owners: dict[str, str] = {}  # prefix -> process
        made: dict[str, set[str]] = {}  # prefix -> ids that process reported
        prefix_problems = []
        processes = [("parent", parent_ids)] + [(f"child {c.index}", c.all_ids) for c in children]
        for name, ids in processes:
            prefixes = {prefix_of(i) for i in ids}
            if len(prefixes) > 1:
                prefix_problems.append(f"{name} used {len(prefixes)} id prefixes: {prefixes}")
            for p in prefixes:
                if p in owners:
                    prefix_problems.append(f"{name} and {owners[p]} share the id prefix {p}")
                owners.setdefault(p, name)
                made.setdefault(p, set()).update(i for i in ids if prefix_of(i) == p)
        counts = collections.Counter(i for _, ids in processes for i in ids)
        duplicates = sorted(i for i, n in counts.items() if n > 1)
        with contextlib.closing(self.db()) as db:
            stored = [r[0] for r in db.execute("SELECT call_id FROM call_records")]
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        stored_set = set(stored)
        foreign: dict[str, list[str]] = {}
        unknown = []
        for call_id in stored:
            p = prefix_of(call_id)
            if p not in owners:
                unknown.append(call_id)
            elif call_id not in made[p]:
                foreign.setdefault(owners[p], []).append(call_id)
        parent_missing = [i for i in parent_ids if i not in stored_set]
        return {
            "parent_calls": len(parent_ids),
            "store_rows": len(stored),
            "prefix_problems": prefix_problems,
            "duplicate_ids": {"count": len(duplicates), "examples": duplicates[:5]},
            "foreign": {k: {"count": len(v), "examples": v[:5]} for k, v in foreign.items()},
            "unknown_prefix": {"count": len(unknown), "examples": unknown[:5]},
            "parent_missing": {"count": len(parent_missing), "examples": parent_missing[:5]},
            "integrity": integrity,
        }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--report", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--control", required=True, help="a control file, or a redis:// URL")
    p.add_argument("--redis-prefix", default="aiguard")
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--children", type=int, default=20)
    p.add_argument("--wave", type=int, default=4)
    p.add_argument("--watchdog", type=float, default=50.0)
    args = p.parse_args()
    # If the parent itself hangs (in fork(), a flush...), show where and exit: never stuck.
    faulthandler.dump_traceback_later(args.watchdog, exit=True)
    report = Parent(args).run()
    with open(args.report, "w") as f:
        json.dump(report, f)
    sys.stdout.flush()
    os._exit(0)  # the report is written; a stuck exit is the exit test's business, not ours


if __name__ == "__main__":
    main()
