"""8 threads and 500 asyncio tasks call while another thread flips kill/revive, the rollout and
the configuration as fast as it can: no call sees a torn state, and every count adds up."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import aiguard
from aiguard import Reason, Source

A = {"confidence": "p", "threshold": 0.3}
B = {"confidence": "p", "threshold": 0.7}


def test_flips_under_threads_and_tasks(tmp_path: Path) -> None:
    """Every Outcome is whole (its threshold one of the two configured, a killed or
    out-of-rollout call never ran the model, a served one did), and stats, call records and the
    number of calls made agree."""
    aiguard.configure(store=tmp_path / "flips.db", features={"flips": A})
    ran: list[int] = []

    def body(unit: str) -> dict[str, float]:
        ran.append(1)
        return {"p": 0.5}

    rollout = aiguard.Rollout(percent=50, key="unit")
    sync_f = aiguard.guard("flips", rollout=rollout, fallback=aiguard.Default({"p": 1.0}))(body)

    async def abody(unit: str) -> dict[str, float]:
        return body(unit)

    async_f = aiguard.guard("flips", rollout=rollout, fallback=aiguard.Default({"p": 1.0}))(abody)
    outcomes: list[Any] = []
    stop = threading.Event()

    def flipper() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            if k % 4 == 0:
                aiguard.kill("flips", reason="flip")
            elif k % 4 == 1:
                aiguard.revive("flips")
            elif k % 4 == 2:
                aiguard.set_rollout("flips", 100 if k % 8 == 2 else 0)
            else:
                aiguard.configure(features={"flips": B if k % 8 == 3 else A})

    def caller(n: int) -> None:
        for i in range(300):
            outcomes.append(sync_f.outcome(f"t{n}-{i}"))

    async def tasks() -> None:
        async def one(i: int) -> None:
            for j in range(4):
                outcomes.append(await async_f.outcome(f"a{i}-{j}"))
                await asyncio.sleep(0)

        await asyncio.gather(*(one(i) for i in range(500)))

    flip = threading.Thread(target=flipper)
    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    flip.start()
    for th in threads:
        th.start()
    asyncio.run(tasks())
    for th in threads:
        th.join()
    stop.set()
    flip.join()

    total = 8 * 300 + 500 * 4
    assert len(outcomes) == total
    torn = []
    for o in outcomes:
        if o.threshold not in (0.3, 0.7):
            torn.append(("threshold", o))
        if o.reason in (Reason.KILLED, Reason.NOT_IN_ROLLOUT) and o.model_latency is not None:
            torn.append(("model ran", o))
        if o.reason is Reason.SERVED and (o.source is not Source.MODEL or o.confidence != 0.5):
            torn.append(("served", o))
        if o.reason is Reason.LOW_CONFIDENCE and o.threshold != 0.7:
            torn.append(("low confidence under 0.3", o))
    assert torn == []
    model_calls = sum(1 for o in outcomes if o.reason in (Reason.SERVED, Reason.LOW_CONFIDENCE))
    assert model_calls == len(ran)
    assert aiguard.stats("flips").calls == total
    assert len({o.call_id for o in outcomes}) == total
    aiguard.flush()
    counts = aiguard.records.counts()
    assert counts.recorded == total and counts.written == total and counts.dropped == 0
