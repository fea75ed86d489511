"""A fleet: several processes sharing PostgreSQL and Redis, and what happens when they fail."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import Proxy, drop_schema, require_postgres, require_redis, unique

import aiguard
from aiguard import Reason


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    url = require_postgres()
    schema = unique("aiguard_fleet")
    yield url, schema
    drop_schema(schema)


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    url = require_redis()
    prefix = unique("aiguard_test")
    yield url, prefix
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def run_processes(script: str, args: list[str], n: int, tmp_path: Path) -> list[str]:
    path = tmp_path / "worker.py"
    path.write_text(textwrap.dedent(script))
    procs = [
        subprocess.Popen(
            [sys.executable, str(path), str(i), *args], stdout=subprocess.PIPE, text=True
        )
        for i in range(n)
    ]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0
        outs.append(out)
    return outs


REVIEWERS = """
import sys, json, aiguard
from aiguard.postgres import PostgresStore
worker, url, schema = sys.argv[1], sys.argv[2], sys.argv[3]
queue = aiguard.ReviewQueue(PostgresStore(url, schema=schema))
aiguard.configure(store=queue.store)
claimed = []
while (item := queue.claim(f"reviewer-{worker}")) is not None:
    queue.resolve(item.id, {"label": "ok"}, reviewer=f"reviewer-{worker}")
    claimed.append(item.id)
ids = []
for i in range(25):
    f = aiguard.guard("fleet")(lambda x: x)
    outcome = f.outcome(i)
    ids.append(outcome.accept(by=f"user-{worker}").id)
print(json.dumps({"claimed": claimed, "feedback": ids}))
"""


def test_four_processes_share_one_postgres_queue(
    pg_schema: tuple[str, str], tmp_path: Path
) -> None:
    """4 processes, one queue: no item handed to two reviewers, no feedback lost."""
    from aiguard.postgres import PostgresStore

    url, schema = pg_schema
    queue = aiguard.ReviewQueue(PostgresStore(url, schema=schema))
    items = [
        queue.submit(feature="fleet", call_id=f"c{i}", reason="low_confidence", arguments={"i": i})
        for i in range(120)
    ]
    outs = [json.loads(o) for o in run_processes(REVIEWERS, [url, schema], 4, tmp_path)]
    claimed = [i for o in outs for i in o["claimed"]]
    assert sorted(claimed) == sorted(i.id for i in items)  # each exactly once
    assert len({i for o in outs for i in o["feedback"]}) == 100
    rows = queue.store.feedback_rows(feature="fleet")  # type: ignore[attr-defined]
    assert len([r for r in rows if r["kind"] == "accepted"]) == 100
    assert len([r for r in rows if r["kind"] == "reviewed"]) == 120
    assert len(queue.store.call_records(feature="fleet")) == 100  # type: ignore[attr-defined]


SPENDERS = """
import sys, time, json, aiguard
from aiguard.redis import RedisBudgets
worker, url, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
aiguard.configure(
    prices={"models": {"m": {"per_call": "0.01"}}},
    budgets=RedisBudgets(url, prefix=prefix, sync=0.05),
)
calls = {"n": 0}

@aiguard.guard("spend", model="m", budget=aiguard.Budget(limit="2.00", per="hour"),
               fallback=aiguard.Default("fallback"))
def f():
    calls["n"] += 1
    return "model"

deadline = time.time() + 30
blocked = 0
while time.time() < deadline and blocked < 20:
    if f.outcome().reason is aiguard.Reason.OVER_BUDGET:
        blocked += 1
    time.sleep(0.002)
aiguard._runtime.state.runtime.budget_store.close()
print(json.dumps({"model_calls": calls["n"]}))
"""


def test_four_processes_share_one_redis_budget(
    redis_prefix: tuple[str, str], tmp_path: Path
) -> None:
    """Total spend stops at the budget, overshooting by no more than one call's reservation."""
    url, prefix = redis_prefix
    outs = [json.loads(o) for o in run_processes(SPENDERS, [url, prefix], 4, tmp_path)]
    model_calls = sum(o["model_calls"] for o in outs)
    spent = model_calls * 0.01
    # leases are taken atomically from Redis: at most one call's reservation past the limit;
    # leases no call holds go back at each sync, so the whole budget is spent
    assert 2.0 <= spent <= 2.0 + 0.01
    import redis

    client = redis.Redis.from_url(url)
    [key] = list(client.scan_iter(f"{prefix}:budget:spend:*"))
    assert int(client.get(key)) == model_calls * 10**10  # pico-units, every call counted once


def test_a_kill_from_the_cli_reaches_every_replica(
    redis_prefix: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """aiguard kill FEATURE --control redis://... reaches a guard polling Redis."""
    import redis

    from aiguard.cli import main
    from aiguard.redis import RedisControl

    url, _ = redis_prefix
    client = redis.Redis.from_url(url)
    saved = client.get("aiguard:control")  # the CLI edits the default document
    feature = unique("fleet_kill")
    try:
        aiguard.configure(control=RedisControl(url, interval=0.05))

        @aiguard.guard(feature, fallback=aiguard.Default("fallback"))
        def f() -> str:
            return "model"

        assert f() == "model"
        assert main(["--control", url, "kill", feature, "--reason", "bad answers"]) == 0
        deadline = time.monotonic() + 5
        while f.outcome().reason is not Reason.KILLED:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert "bad answers" in (f.outcome().detail or "")
        assert main(["--control", url, "revive", feature]) == 0
        while f.outcome().reason is not Reason.SERVED:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert main(["--control", url, "status"]) == 0
        assert feature in capsys.readouterr().out
    finally:
        aiguard.configure(control=None)
        if saved is None:
            client.delete("aiguard:control")
        else:
            client.set("aiguard:control", saved)


def test_postgres_connection_loss(pg_schema: tuple[str, str]) -> None:
    """Connection lost: feedback raises StoreError, records wait and are written once it is back."""
    from aiguard.postgres import PostgresStore

    url, schema = pg_schema
    proxy = Proxy(("127.0.0.1", 5432))
    try:
        store = PostgresStore(
            url.replace(":5432", f":{proxy.port}"), schema=schema, timeout=1.0, max_size=2
        )
        aiguard.configure(store=store)

        @aiguard.guard("lossy")
        def f(x: int) -> int:
            return x

        before = f.outcome(0)
        aiguard.flush()
        proxy.cut()
        during = [f.outcome(i) for i in range(1, 6)]  # calls go on: served, records queued
        assert all(o.reason is Reason.SERVED for o in during)
        with pytest.raises(aiguard.StoreError):
            before.accept()
        with pytest.raises(aiguard.StoreError):
            aiguard.ReviewQueue().pending()
        assert aiguard.flush() == 0  # nothing can be written yet; nothing is dropped
        proxy.mend()
        deadline = time.monotonic() + 10
        while True:
            aiguard.flush()
            try:
                if len(store.call_records(feature="lossy")) == 6:
                    break
            except aiguard.StoreError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert before.accept().kind is aiguard.FeedbackKind.ACCEPTED
    finally:
        aiguard.configure(store=None)
        proxy.close()


def test_redis_down_keeps_state_and_budgets_go_on(
    redis_prefix: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Redis unreachable: the kill state is kept, budgets count locally, one warning, no failure."""
    from aiguard.redis import RedisBudgets, RedisControl, edit_control

    url, prefix = redis_prefix
    proxy = Proxy(("127.0.0.1", 6379))
    try:
        via = url.replace(":6379", f":{proxy.port}")
        edit_control(
            url,
            lambda c: c.model_copy(
                update={"features": {"down": aiguard.FeatureControl(killed=True, reason="r")}}
            ),
            prefix=prefix,
        )
        budgets = RedisBudgets(via, prefix=prefix, sync=0.05, timeout=0.2)
        aiguard.configure(
            control=RedisControl(via, prefix=prefix, interval=0.05, timeout=0.2),
            budgets=budgets,
            prices={"models": {"m": {"per_call": "0.25"}}},
        )

        @aiguard.guard("down", fallback=aiguard.Default("fb"))
        def killed() -> str:
            return "model"

        @aiguard.guard("down-b", model="m", budget=aiguard.Budget(limit="1", per="hour"),
                       fallback=aiguard.Default("fb"))  # fmt: skip
        def spend() -> str:
            return "model"

        assert killed.outcome().reason is Reason.KILLED
        with caplog.at_level("WARNING", logger="aiguard"):
            proxy.cut()
            time.sleep(0.3)
            assert killed.outcome().reason is Reason.KILLED  # last known state kept
            from aiguard._runtime import errors

            assert any(k.startswith("control poll: redis") for k in errors.counts())
            reasons = [spend.outcome().reason for _ in range(6)]
            time.sleep(0.3)
        assert reasons == [Reason.SERVED] * 4 + [Reason.OVER_BUDGET] * 2  # local allowance
        assert budgets.failures > 0
        warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warnings) == 1
        proxy.mend()
        deadline = time.monotonic() + 5
        import redis

        client = redis.Redis.from_url(url)
        while not list(client.scan_iter(f"{prefix}:budget:down-b:*")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        [key] = list(client.scan_iter(f"{prefix}:budget:down-b:*"))
        deadline = time.monotonic() + 5
        while int(client.get(key) or 0) != 4 * 25 * 10**10:
            assert time.monotonic() < deadline  # the spend made while down is shared later
            time.sleep(0.05)
    finally:
        aiguard.configure(control=None, budgets=None)
        proxy.close()


CONCURRENT_SPENDERS = """
import asyncio, json, sys, threading, time, aiguard
from aiguard.redis import RedisBudgets
worker, url, prefix, kind, start = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
aiguard.configure(
    prices={"models": {"m": {"per_call": "0.01"}}},
    budgets=RedisBudgets(url, prefix=prefix, sync=0.05, call_timeout=2.0),  # a slow machine
)
calls = []
budget = aiguard.Budget(limit="0.10", per="hour")

@aiguard.guard("race", model="m", budget=budget, fallback=aiguard.Default("fallback"))
def f():
    calls.append(1)
    time.sleep(0.05)
    return "model"

@aiguard.guard("race", model="m", budget=budget, fallback=aiguard.Default("fallback"))
async def af():
    calls.append(1)
    await asyncio.sleep(0.05)
    return "model"

time.sleep(max(0.0, float(start) - time.time()))  # every process starts at once
reasons = []
if kind == "sync":
    threads = [threading.Thread(target=lambda: reasons.append(f.outcome().reason))
               for _ in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
else:
    async def main():
        return await asyncio.gather(*(af.outcome() for _ in range(25)))
    reasons = [o.reason for o in asyncio.run(main())]
aiguard._runtime.state.runtime.budget_store.close()
print(json.dumps({"model_calls": len(calls), "served": reasons.count("served")}))
"""


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_concurrent_calls_in_four_processes_never_overspend_a_redis_budget(
    redis_prefix: tuple[str, str], tmp_path: Path, kind: str
) -> None:
    """4 processes x 25 concurrent calls (threads, or asyncio tasks) at 0.01 each against one
    Redis budget of 0.10: reservations are taken atomically, so the fleet spends at most the
    limit plus one call's reservation, and Redis holds every call's cost once."""
    url, prefix = redis_prefix
    start = str(time.time() + 3)
    args = [url, prefix, kind, start]
    outs = [json.loads(o) for o in run_processes(CONCURRENT_SPENDERS, args, 4, tmp_path)]
    model_calls = sum(o["model_calls"] for o in outs)
    assert model_calls == sum(o["served"] for o in outs)
    assert 10 <= model_calls <= 11  # the whole budget, past it by one reservation at most
    import redis

    client = redis.Redis.from_url(url)
    [key] = list(client.scan_iter(f"{prefix}:budget:race:*"))
    assert int(client.get(key)) == model_calls * 10**10  # pico-units, every call counted once
    [lease] = list(client.scan_iter(f"{prefix}:lease:race:*"))
    assert int(client.get(lease)) == 0  # every lease spent or given back
