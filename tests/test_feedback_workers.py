"""Feedback across worker processes: given in one process on a call another made, right after
the answer, before the call's record is written. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from services import PG_URL, drop_schema, fresh_store, require_postgres, unique

import aiguard
from aiguard._runtime import ids
from aiguard._runtime.records import CALL_RECORD_COLUMNS
from aiguard.feedback import DEFAULT_WAIT

KINDS = ["sqlite", "postgres"]


@pytest.fixture(params=KINDS)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Where the workers' store is: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield {"kind": "sqlite", "path": str(tmp_path / "aiguard.db")}
        return
    require_postgres()
    schema = unique("aiguard_fbw")
    yield {"kind": "postgres", "url": PG_URL, "schema": schema}
    drop_schema(schema)


def open_spec(spec: dict[str, str]) -> Any:
    if spec["kind"] == "sqlite":
        return aiguard.SQLiteStore(spec["path"])
    from aiguard.postgres import PostgresStore

    return PostgresStore(spec["url"], schema=spec["schema"])


PRELUDE = """
import json, sys, time, aiguard
spec = json.loads(sys.argv[1])
if spec["kind"] == "sqlite":
    store = aiguard.SQLiteStore(spec["path"])
else:
    from aiguard.postgres import PostgresStore
    store = PostgresStore(spec["url"], schema=spec["schema"])
aiguard.configure(store=store)
"""

SERVER = (
    PRELUDE
    + """
@aiguard.guard("fleet-reply")
def reply(i: int) -> str:
    return f"answer {i}"

for i in range(int(sys.argv[2])):
    print(reply.outcome(i).call_id, flush=True)  # the answer goes out with its call id
    time.sleep(0.002)
"""
)

FEEDBACK = (
    PRELUDE
    + """
results = []
for line in sys.stdin:
    call_id = line.strip()
    t0 = time.monotonic()
    try:
        fb = aiguard.feedback(call_id, accepted=True, by="user")
        results.append(["pending" if fb.pending else "found", time.monotonic() - t0])
    except aiguard.UnknownCall as exc:
        results.append(["unknown: " + str(exc), time.monotonic() - t0])
print(json.dumps(results))
"""
)


def script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_feedback_from_another_worker_right_after_the_answer(
    spec: dict[str, str], tmp_path: Path
) -> None:
    """Two worker processes: one serves 200 calls, the other gives feedback on each as soon
    as its id arrives (before its record is written): every piece is accepted, none waits
    longer than DEFAULT_WAIT, and every row ends attached to its call and counted."""
    n = 200
    arg = json.dumps(spec)
    open_spec(spec).close()  # created once: two processes creating one schema at once collide
    server = subprocess.Popen(
        [sys.executable, script(tmp_path, "server.py", SERVER), arg, str(n)],
        stdout=subprocess.PIPE,
    )
    giver = subprocess.Popen(
        [sys.executable, script(tmp_path, "feedback.py", FEEDBACK), arg],
        stdin=server.stdout,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    server.stdout.close()  # the giver holds it now
    out, _ = giver.communicate(timeout=120)
    assert server.wait(timeout=60) == 0 and giver.returncode == 0
    results = json.loads(out)
    assert len(results) == n
    assert [r for r in results if r[0].startswith("unknown")] == []
    assert max(seconds for _, seconds in results) < DEFAULT_WAIT
    # the race is real: the first ids arrive well before the server's writer runs (0.2 s)
    assert any(seconds > 0.02 for _, seconds in results)
    store = open_spec(spec)
    try:
        rows = store.feedback_rows()
        assert len(rows) == n and {r["feature"] for r in rows} == {"fleet-reply"}
        assert len(store.feedback_rows(feature="fleet-reply")) == n
        aiguard.configure(store=store)
        figures = aiguard.report("fleet-reply").features[0]
        assert (figures.calls, figures.decided, figures.accepted) == (n, n, n)
    finally:
        store.close()


def record_row(call_id: str, feature: str = "reply") -> tuple[Any, ...]:
    row = dict.fromkeys(CALL_RECORD_COLUMNS)
    row.update(
        call_id=call_id,
        feature=feature,
        started_at=time.time(),
        source="model",
        reason="served",
        latency=0.01,
        model_latency=0.01,
        confidence=0.9,
    )
    return tuple(row[c] for c in CALL_RECORD_COLUMNS)


OTHER = "ag_" + "5e" * 8  # another process's id, as its writer registers it


@pytest.mark.parametrize("kind", KINDS)
def test_feedback_before_its_record_counts_once_the_record_lands(kind: str, tmp_path: Path) -> None:
    """The store says the other process issued the id: the feedback is written at once,
    pending (no feature), counted nowhere; the record's write attaches it, and from then on
    the report and the feature's feedback count it."""
    with fresh_store(kind, tmp_path / "a.db") as store:
        aiguard.configure(store=store)
        store.add_call_records([], issued=(OTHER, 3))
        t0 = time.monotonic()
        fb = aiguard.feedback(f"{OTHER}_2", label="refunds", by="ana")
        assert time.monotonic() - t0 < 0.5  # no wait: the id is known to be issued
        assert (fb.pending, fb.feature, fb.kind.value) == (True, None, "corrected")
        [row] = store.feedback_rows(call_id=f"{OTHER}_2")
        assert row["feature"] is None
        assert store.feedback_rows(feature="reply") == []
        assert aiguard.report("reply").features == []
        store.add_call_records([record_row(f"{OTHER}_1"), record_row(f"{OTHER}_2")])
        [row] = store.feedback_rows(call_id=f"{OTHER}_2")
        assert (row["feature"], row["kind"], row["by"]) == ("reply", "corrected", "ana")
        figures = aiguard.report("reply").features[0]
        assert (figures.calls, figures.decided, figures.corrected) == (2, 1, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_a_record_written_with_its_batch_finds_the_feedback_given_meanwhile(
    kind: str, tmp_path: Path
) -> None:
    """Pending feedback and record batches written at the same time from two threads (as two
    processes would): every feedback row ends attached, whichever commits first."""
    with fresh_store(kind, tmp_path / "a.db") as store:
        n = 120
        ids_ = [f"{OTHER}_{i:x}" for i in range(1, n + 1)]
        store.add_call_records([], issued=(OTHER, n))

        def records() -> None:
            for start in range(0, n, 7):
                store.add_call_records([record_row(c) for c in ids_[start : start + 7]])

        def feedback() -> None:
            for call_id in ids_:
                store.add_feedback(
                    {
                        "call_id": call_id,
                        "feature": None,
                        "kind": "accepted",
                        "accepted": 1,
                        "created_at": time.time(),
                    }
                )

        threads = [threading.Thread(target=records), threading.Thread(target=feedback)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        rows = store.feedback_rows()
        assert len(rows) == n
        assert [r["call_id"] for r in rows if r["feature"] != "reply"] == []


CRASH = (
    PRELUDE
    + """
import os, signal
fb = aiguard.feedback(sys.argv[2], accepted=False, comment="wrong", wait=0)
print(json.dumps([fb.pending, fb.id]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # dies right after the acknowledgement
"""
)


def test_pending_feedback_survives_a_crash(spec: dict[str, str], tmp_path: Path) -> None:
    """Feedback acknowledged as pending is on disk: the process that gave it is killed at
    once, and when the call's record lands later the row is attached and counted."""
    store = open_spec(spec)
    try:
        store.add_call_records([], issued=(OTHER, 9))
        call_id = f"{OTHER}_9"
        proc = subprocess.run(
            [sys.executable, script(tmp_path, "crash.py", CRASH), json.dumps(spec), call_id],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == -9, proc.stderr
        pending, row_id = json.loads(proc.stdout)
        assert pending is True
        [row] = store.feedback_rows(call_id=call_id)
        assert (row["id"], row["feature"], row["comment"]) == (row_id, None, "wrong")
        store.add_call_records([record_row(call_id)])
        aiguard.configure(store=store)
        figures = aiguard.report("reply").features[0]
        assert (figures.decided, figures.rejected) == (1, 1)
    finally:
        store.close()


@pytest.mark.parametrize("kind", KINDS)
def test_never_issued_ids_are_unknown_calls(kind: str, tmp_path: Path) -> None:
    """A malformed id, or an id of this process beyond what it issued, is UnknownCall at once;
    an id of a process no writer of this store reported, or beyond what its writer reported,
    after ``wait=``; nothing is written for any of them."""
    with fresh_store(kind, tmp_path / "a.db") as store:
        aiguard.configure(store=store)
        store.add_call_records([], issued=(OTHER, 4))
        mine = ids.call_id(ids.issued() + 1000)
        for bad in ("ag_nope", f"{OTHER}_05", f"{OTHER.upper()}_5", mine):
            t0 = time.monotonic()
            with pytest.raises(aiguard.UnknownCall, match="no guarded call has id"):
                aiguard.feedback(bad, accepted=True)
            assert time.monotonic() - t0 < 0.5, bad
        cases = [
            ("ag_" + "0f" * 8 + "_1", "no process writing to"),
            (f"{OTHER}_5", f"up to {OTHER}_4"),
        ]
        for bad, why in cases:
            t0 = time.monotonic()
            with pytest.raises(aiguard.UnknownCall, match=why):
                aiguard.feedback(bad, accepted=True, wait=0.3)
            assert 0.3 <= time.monotonic() - t0 < 1.5, bad
        assert store.feedback_rows() == []


def test_an_id_issued_while_feedback_waits_is_accepted(tmp_path: Path) -> None:
    """The issuing process's writer reports the id while feedback() looks again: accepted
    then, without waiting out ``wait=``."""
    with fresh_store("sqlite", tmp_path / "a.db") as store:
        aiguard.configure(store=store)
        threading.Timer(
            0.3, store.add_call_records, args=([],), kwargs={"issued": (OTHER, 7)}
        ).start()
        t0 = time.monotonic()
        fb = aiguard.feedback(f"{OTHER}_7", score=4, wait=5)
        assert fb.pending and 0.25 < time.monotonic() - t0 < 1.5


def test_wait_is_checked_before_anything_is_looked_up(tmp_path: Path) -> None:
    """A wait that is not seconds (0 or more, finite) or a timedelta is a ConfigError naming
    ``wait`` and the value."""
    aiguard.configure(store=tmp_path / "a.db")
    for bad in (-1, float("nan"), float("inf"), "1", True, None):
        with pytest.raises(aiguard.ConfigError, match=r"wait=") as info:
            aiguard.feedback("ag_nope", accepted=True, wait=bad)  # type: ignore[arg-type]
        assert repr(bad) in str(info.value)


@settings(max_examples=60)
@given(call_id=st.text(min_size=1, max_size=60))
def test_hostile_ids_are_unknown_and_write_nothing(call_id: str) -> None:
    """Any text that is no call of the store: UnknownCall (wait=0: at once), no row."""
    aiguard.configure(store=":memory:")
    store = aiguard.store.configured()
    with pytest.raises(aiguard.UnknownCall):
        aiguard.feedback(call_id, accepted=True, wait=0)
    assert store.feedback_rows() == []


def test_the_writer_reports_what_its_process_issued(tmp_path: Path) -> None:
    """Each batch the record writer writes saves its process's highest counter, read after
    the batch's calls: at least the last call written."""
    aiguard.configure(store=tmp_path / "a.db")

    @aiguard.guard("reply")
    def reply() -> str:
        return "ok"

    last = reply.outcome().call_id
    aiguard.flush()
    process, number = ids.parse(last)  # type: ignore[misc]
    store = aiguard.store.configured()
    issued = store.issued(process)  # type: ignore[attr-defined]
    assert issued is not None and number <= issued <= ids.issued()
