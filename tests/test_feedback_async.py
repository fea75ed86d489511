"""The async API of feedback and the review queue: the same results as the sync one, and the
event loop keeps running while the store is slow (a SQLite lock held by another connection, a
PostgreSQL server behind a network partition)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
from services import Partition, drop_schema, require_postgres, unique

import aiguard
from aiguard import FeedbackKind

T = TypeVar("T")


class Ticker:
    """A task that wakes every 10 ms and notes the longest gap between two wake-ups: how long
    the event loop was blocked at most."""

    def __init__(self) -> None:
        self.ticks = 0
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            self.ticks += 1
            last = now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def while_ticking(work: Awaitable[T]) -> tuple[T | Exception, Ticker, float]:
    """``work``'s result (or the exception it raised), the ticker that ran meanwhile, and the
    seconds it took."""
    ticker = Ticker()
    ticker.start()
    await asyncio.sleep(0)  # the ticker is running before the work starts
    t0 = time.monotonic()
    result: T | Exception
    try:
        result = await work
    except Exception as exc:
        result = exc
    took = time.monotonic() - t0
    await ticker.stop()
    return result, ticker, took


def hold_lock(path: Path, seconds: float) -> threading.Event:
    """Another connection holds the SQLite file's write lock for ``seconds`` (from another
    thread); the event is set once it holds it."""
    held = threading.Event()

    def run() -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        db.execute("COMMIT")
        db.close()

    threading.Thread(target=run, daemon=True).start()
    assert held.wait(5)
    return held


@aiguard.guard("reply")
async def reply(text: str) -> str:
    return "Thanks, we are on it."


def test_every_async_feedback_method_records_what_its_sync_twin_does(tmp_path: Path) -> None:
    """aaccept, areject, aedit, acorrect, arate and afeedback write the same rows as accept,
    reject, edit, correct, rate and feedback."""
    aiguard.configure(store=tmp_path / "a.db")

    async def main() -> list[aiguard.Feedback]:
        o = await reply.outcome("x")
        return [
            await o.aaccept(by="u1", comment="fine"),
            await o.areject(reason="wrong tone", by="u2"),
            await o.aedit("Thanks! We are on it.", by="u3"),
            await o.acorrect("escalate"),
            await o.arate(4, attributes={"plan": "pro"}),
            await aiguard.afeedback(o.call_id, comment="later", by="u4"),
        ]

    got = asyncio.run(main())
    sync_o = asyncio.run(reply.outcome("x"))
    want = [
        sync_o.accept(by="u1", comment="fine"),
        sync_o.reject(reason="wrong tone", by="u2"),
        sync_o.edit("Thanks! We are on it.", by="u3"),
        sync_o.correct("escalate"),
        sync_o.rate(4, attributes={"plan": "pro"}),
        aiguard.feedback(sync_o.call_id, comment="later", by="u4"),
    ]
    fields = ("kind", "accepted", "score", "label", "edited", "edit_distance", "comment", "by")
    for a, s in zip(got, want, strict=True):
        assert [getattr(a, f) for f in fields] == [getattr(s, f) for f in fields]
        assert a.feature == "reply" and a.pending is False
    assert [fb.kind for fb in got] == [
        FeedbackKind.ACCEPTED,
        FeedbackKind.REJECTED,
        FeedbackKind.EDITED,
        FeedbackKind.CORRECTED,
        FeedbackKind.RATED,
        FeedbackKind.COMMENTED,
    ]
    store = aiguard.store.configured()
    assert len(store.feedback_rows(call_id=got[0].call_id)) == 6


def test_async_feedback_raises_what_the_sync_one_raises(tmp_path: Path) -> None:
    """Errors come back through the await: UnknownCall, ConfigError naming the argument."""
    aiguard.configure(store=tmp_path / "a.db")

    async def main() -> None:
        with pytest.raises(aiguard.UnknownCall, match="ag_nope"):
            await aiguard.afeedback("ag_nope", accepted=True)
        o = await reply.outcome("x")
        with pytest.raises(aiguard.ConfigError, match=r"score=nan"):
            await o.arate(float("nan"))
        with pytest.raises(aiguard.ConfigError, match=r"wait=-1"):
            await aiguard.afeedback(o, accepted=True, wait=-1)

    asyncio.run(main())


def test_the_loop_keeps_ticking_while_sqlite_is_locked(tmp_path: Path) -> None:
    """Another connection holds the database for 0.6 s: aaccept waits for it in a thread and
    succeeds; meanwhile the event loop never stops for more than 0.1 s."""
    path = tmp_path / "a.db"
    aiguard.configure(store=aiguard.SQLiteStore(path, timeout=5))

    async def main() -> tuple[aiguard.Feedback, Ticker, float]:
        o = await reply.outcome("x")
        aiguard.flush()
        hold_lock(path, 0.6)
        return await while_ticking(o.aaccept(by="ana"))

    fb, ticker, took = asyncio.run(main())
    assert fb.kind is FeedbackKind.ACCEPTED and took >= 0.5
    assert ticker.longest < 0.1 and ticker.ticks >= 30


def test_the_review_queue_is_async_and_the_loop_keeps_ticking(tmp_path: Path) -> None:
    """asubmit, apending, acount, aclaim, aget, aresolve and aresolved do what their sync
    twins do; with the database locked by another connection, each waits in a thread while
    the event loop ticks on."""
    path = tmp_path / "q.db"
    queue = aiguard.ReviewQueue(aiguard.SQLiteStore(path, timeout=5))

    async def main() -> None:
        item = await queue.asubmit(
            feature="triage", call_id="ag_1", reason="error", arguments={"ticket": "refund?"}
        )
        assert [i.id for i in await queue.apending("triage")] == [item.id]
        assert await queue.acount("triage") == 1
        hold_lock(path, 0.4)
        held, ticker, took = await while_ticking(queue.aclaim("ana", "triage"))
        assert held is not None and held.id == item.id and held.claimed_by == "ana"
        assert took >= 0.3 and ticker.longest < 0.1 and ticker.ticks >= 15
        assert (await queue.aget(item.id)).claimed_by == "ana"
        hold_lock(path, 0.4)
        done, ticker, took = await while_ticking(
            queue.aresolve(item.id, "refunds", reviewer="ana", note="checked")
        )
        assert (done.status, done.answer, done.note) == ("resolved", "refunds", "checked")
        assert took >= 0.3 and ticker.longest < 0.1 and ticker.ticks >= 15
        assert [i.answer for i in await queue.aresolved("triage")] == ["refunds"]
        assert await queue.acount("triage", status=None) == 1
        with pytest.raises(aiguard.ReviewError, match="already resolved"):
            await queue.aresolve(item.id, "other")
        with pytest.raises(aiguard.ReviewError, match="no review item"):
            await queue.aget("rv_missing")

    asyncio.run(main())
    [row] = queue.store.feedback_rows(call_id="ag_1")
    assert (row["kind"], row["by"]) == ("reviewed", "ana")


def test_the_loop_keeps_ticking_while_postgres_is_partitioned(tmp_path: Path) -> None:
    """PostgreSQL behind a network partition (connections open, nothing passes): afeedback
    and aclaim fail with StoreError within the store's deadline, and the event loop never
    stops for more than 0.1 s meanwhile; once the network heals they work again."""
    url = require_postgres()
    from aiguard.postgres import PostgresStore

    parts = urlsplit(url)
    partition = Partition((parts.hostname or "127.0.0.1", parts.port or 5432))
    proxied = url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{partition.port}")
    schema = unique("aiguard_async")
    store = PostgresStore(proxied, schema=schema, timeout=1.0, max_size=2)
    try:
        aiguard.configure(store=store)
        queue = aiguard.ReviewQueue(store)

        async def main() -> None:
            o = await reply.outcome("x")
            aiguard.flush()
            partition.blackhole()
            for work in (o.aaccept(), queue.aclaim("ana")):
                failed, ticker, took = await while_ticking(work)
                assert isinstance(failed, aiguard.StoreError), failed
                assert took < 5 and ticker.longest < 0.1 and ticker.ticks >= 10
            partition.heal()
            deadline = time.monotonic() + 20  # the pool reconnects in the background
            while True:
                try:
                    fb = await o.aaccept(by="ana")
                    break
                except aiguard.StoreError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            assert fb.feature == "reply"

        asyncio.run(main())
    finally:
        partition.close()
        store.close()
        drop_schema(schema)
