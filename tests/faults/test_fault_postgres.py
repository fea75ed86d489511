"""PostgreSQL behind a network partition (a TCP proxy the test starts that stops passing data but
keeps connections open): every store operation has a deadline, calls never wait on the store,
and after the partition heals every call record lands or is counted as dropped."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from services import PG_URL, Partition, drop_schema, require_postgres, unique

import aiguard
from aiguard.postgres import PostgresStore

TIMEOUT = 1.0  # the store's deadline in these tests
SLACK = 1.0  # scheduling on a 2-core machine


@pytest.fixture
def partitioned() -> Iterator[tuple[PostgresStore, Partition]]:
    require_postgres()
    schema = unique("aiguard_fault")
    host_port = PG_URL.split("@")[-1].split("/")[0]
    host, port = host_port.rsplit(":", 1)
    proxy = Partition((host, int(port)))
    url = PG_URL.replace(host_port, f"127.0.0.1:{proxy.port}")
    store = PostgresStore(url, schema=schema, timeout=TIMEOUT, min_size=1, max_size=4)
    try:
        yield store, proxy
    finally:
        proxy.heal()
        store.close()
        proxy.close()
        drop_schema(schema)


def _timed(fn: object, *args: object, **kwargs: object) -> tuple[float, object]:
    t0 = time.monotonic()
    try:
        result = fn(*args, **kwargs)  # type: ignore[operator]
    except Exception as exc:
        result = exc
    return time.monotonic() - t0, result


@pytest.mark.parametrize("fault", ["blackhole", "cut"])
def test_operations_fail_within_the_deadline_during_a_partition(
    partitioned: tuple[PostgresStore, Partition], fault: str
) -> None:
    """Packets dropped (blackhole) or connections reset and refused (cut): feedback() and the
    review queue raise StoreError within the store's timeout; a call whose chain reaches
    HumanReview moves on to the next handler within it; served calls never wait; once the
    network is back, feedback works again."""
    store, proxy = partitioned
    aiguard.configure(store=store)

    @aiguard.guard(
        "pg-part",
        confidence="score",
        threshold=0.5,
        fallback=[aiguard.HumanReview(), aiguard.Default({"score": 1.0, "v": "d"})],
    )
    def f(score: float) -> dict[str, float]:
        return {"score": score}

    served = f.outcome(0.9)
    served.accept()  # works before the partition
    getattr(proxy, fault)()
    took, result = _timed(aiguard.feedback, served.call_id, accepted=False)
    assert isinstance(result, aiguard.StoreError), result
    assert took <= TIMEOUT + SLACK, took
    took, result = _timed(aiguard.ReviewQueue().pending)
    assert isinstance(result, aiguard.StoreError), result
    assert took <= TIMEOUT + SLACK, took
    took, outcome = _timed(f.outcome, 0.1)  # low confidence: HumanReview, then Default
    assert isinstance(outcome, aiguard.Outcome), outcome
    assert outcome.source is aiguard.Source.DEFAULT
    assert isinstance(outcome.attempts[0].error, aiguard.StoreError)
    assert took <= TIMEOUT + SLACK, took
    worst = max(_timed(f, 0.9)[0] for _ in range(200))
    assert worst < 0.05, f"a served call waited {worst:.3f} s on the partitioned store"
    proxy.heal() if fault == "blackhole" else proxy.mend()
    deadline = time.monotonic() + 10
    while not isinstance(_timed(served.accept)[1], aiguard.Feedback):
        assert time.monotonic() < deadline, "feedback never worked again after the fault"
        time.sleep(0.2)


def test_records_land_or_are_counted_after_the_partition_heals(
    partitioned: tuple[PostgresStore, Partition],
) -> None:
    """150 calls during a partition: after it heals, written + dropped == recorded, and the
    store has every written record."""
    store, proxy = partitioned
    aiguard.configure(store=store)

    @aiguard.guard("pg-heal")
    def f(i: int) -> int:
        return i

    f(-1)
    aiguard.flush()
    proxy.blackhole()
    for i in range(150):
        f(i)
    time.sleep(TIMEOUT * 2)  # the writer tries, hits the deadline, backs off
    proxy.heal()
    deadline = time.monotonic() + 30
    while True:
        aiguard.flush()
        counts = aiguard.records.counts()
        if counts.queued == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counts.recorded == 151
    assert counts.written + counts.dropped == counts.recorded, counts
    assert counts.dropped == 0, counts
    assert len(store.call_records(feature="pg-heal")) == counts.written
