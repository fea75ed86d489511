"""Many threads and tasks calling one guarded function get correct, independent Outcomes."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import aiguard
from aiguard import Reason, Source


def model(i: int) -> dict[str, Any]:
    if i % 7 == 0:
        raise RuntimeError(f"fail {i}")
    return {"i": i, "score": (i % 10) / 10}


def rules(i: int) -> dict[str, Any]:
    return {"i": i, "rules": True}


def expected(i: int) -> tuple[Reason, Source]:
    if i % 7 == 0:
        return Reason.ERROR, Source.RULES
    if (i % 10) / 10 < 0.5:
        return Reason.LOW_CONFIDENCE, Source.RULES
    return Reason.SERVED, Source.MODEL


def test_eight_threads_get_their_own_outcomes() -> None:
    """8 threads x 500 calls: each outcome matches its own input; ids are unique."""
    guarded = aiguard.guard("c", confidence="score", threshold=0.5, fallback=rules)(model)
    failures: list[str] = []
    ids: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        barrier.wait()
        mine = []
        for k in range(500):
            i = t * 1000 + k
            value = guarded(i)
            outcome = aiguard.last_outcome()
            assert outcome is not None
            if value["i"] != i or outcome.value is not value:
                failures.append(f"{i}: value {value} outcome {outcome.value}")
            if (outcome.reason, outcome.source) != expected(i):
                failures.append(f"{i}: {outcome.reason}/{outcome.source}")
            mine.append(outcome.call_id)
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []
    assert len(ids) == len(set(ids)) == 4000


async def test_five_hundred_tasks_get_their_own_outcomes() -> None:
    """500 concurrent asyncio tasks interleaving at awaits keep their outcomes apart."""

    @aiguard.guard("c", confidence="score", threshold=0.5, fallback=rules)
    async def guarded(i: int) -> dict[str, Any]:
        await asyncio.sleep(random.random() / 1000)
        return model(i)

    async def one(i: int) -> tuple[int, Any, aiguard.Outcome[Any] | None]:
        value = await guarded(i)
        await asyncio.sleep(0)
        return i, value, aiguard.last_outcome()

    results = await asyncio.gather(*(one(i) for i in range(500)))
    for i, value, outcome in results:
        assert outcome is not None and outcome.value is value
        assert value["i"] == i
        assert (outcome.reason, outcome.source) == expected(i)
    assert len({o.call_id for _, _, o in results if o}) == 500


def test_threads_under_timeout_pool() -> None:
    """Sync calls with a timeout run in the worker pool and still return their own values."""
    guarded = aiguard.guard("c", timeout=5)(lambda i: i * 2)
    out: dict[int, int] = {}

    def worker(t: int) -> None:
        for k in range(100):
            out[t * 100 + k] = guarded(t * 100 + k)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert out == {i: i * 2 for i in range(800)}


def test_reconfiguration_under_load_never_mixes_settings() -> None:
    """While configuration flips between two settings, every call sees one or the other whole."""
    a = {"confidence": "a", "threshold": 0.3}
    b = {"confidence": "b", "threshold": 0.7}
    aiguard.configure(features={"flip": a})

    @aiguard.guard("flip", fallback=aiguard.Default("fb"))
    def model() -> dict[str, float]:
        return {"a": 0.5, "b": 0.9}

    stop = threading.Event()
    bad: list[tuple[float | None, float | None]] = []
    seen: list[int] = []

    def caller() -> None:
        while not stop.is_set():
            seen.append(1)
            outcome = model.outcome()
            pair = (outcome.confidence, outcome.threshold)
            if pair not in {(0.5, 0.3), (0.9, 0.7)}:
                bad.append(pair)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for th in threads:
        th.start()
    for k in range(300):
        aiguard.configure(features={"flip": b if k % 2 else a})
    stop.set()
    for th in threads:
        th.join()
    assert bad == [] and len(seen) > 0
