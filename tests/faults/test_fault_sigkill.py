"""SIGKILL at random moments: nothing a user recorded and was told was recorded is lost.

A child process makes guarded calls, gives feedback on each at once (its call record usually
still queued) and submits review items; it prints each id once the call that wrote it returned.
The test kills it with SIGKILL at a random moment, then reads the store: every acknowledged
feedback row and review item is there, and every feedback row has its call record.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = r"""
import sys
import aiguard

aiguard.configure(store=sys.argv[1])
queue = aiguard.ReviewQueue()

@aiguard.guard("sigkill", confidence="p", threshold=0.5)
def f(i: int) -> dict:
    return {"p": 0.9, "i": i}

print("ready", flush=True)
i = 0
while True:
    i += 1
    outcome = f.outcome(i)
    fb = aiguard.feedback(outcome, accepted=i % 3 != 0, comment=f"n{i}")
    print("fb", fb.id, outcome.call_id, flush=True)
    if i % 5 == 0:
        item = queue.submit(feature="sigkill", call_id=outcome.call_id, reason="audit",
                            arguments={"i": i})
        print("rv", item.id, flush=True)
"""


@pytest.mark.parametrize("seed", range(5))
def test_nothing_acknowledged_is_lost_on_sigkill(tmp_path: Path, seed: int) -> None:
    """Killed at a random moment: 0 acknowledged feedback rows or review items lost, 0
    feedback rows without their call record."""
    path = tmp_path / "kill.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(random.Random(seed).uniform(0.2, 1.2))
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    lines = [line.split() for line in out.splitlines() if line.strip()]
    feedback = {int(p[1]): p[2] for p in lines if p[0] == "fb" and len(p) == 3}
    reviews = {p[1] for p in lines if p[0] == "rv" and len(p) == 2}
    assert len(feedback) > 10, "the child made too few calls to test anything"
    db = sqlite3.connect(path)
    stored = dict(db.execute("SELECT id, call_id FROM feedback").fetchall())
    lost = {i for i in feedback if i not in stored}
    assert not lost, f"{len(lost)} acknowledged feedback rows lost"
    assert all(stored[i] == call for i, call in feedback.items())
    orphans = db.execute(
        "SELECT count(*) FROM feedback WHERE call_id NOT IN (SELECT call_id FROM call_records)"
    ).fetchone()[0]
    assert orphans == 0, f"{orphans} feedback rows without their call record"
    items = {r[0] for r in db.execute("SELECT id FROM review_items").fetchall()}
    assert reviews <= items, f"{len(reviews - items)} acknowledged review items lost"
