"""Redis cut, reset and blackholed through a TCP proxy the test starts: the last control state is
kept (a kill stays a kill), polls give up within their timeout, budgets go on with this
replica's own spend, and everything resumes when Redis is reachable again."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from services import REDIS_URL, Partition, require_redis, unique

import aiguard
from aiguard._runtime import errors
from aiguard.control import ControlState, FeatureControl
from aiguard.redis import RedisControl, edit_control

INTERVAL = 0.1


@pytest.fixture
def redis_proxy() -> Iterator[tuple[str, str, Partition]]:
    require_redis()
    host_port = REDIS_URL.split("//")[1].split("/")[0]
    host, port = host_port.rsplit(":", 1)
    proxy = Partition((host, int(port)))
    try:
        yield REDIS_URL.replace(host_port, f"127.0.0.1:{proxy.port}"), unique("agf"), proxy
    finally:
        proxy.heal()
        proxy.close()


def _kill(prefix: str, killed: bool) -> None:
    def change(state: ControlState) -> ControlState:
        features = dict(state.features)
        features["redis-fault"] = FeatureControl(killed=killed, reason="test")
        return ControlState(all=state.all, features=features)

    edit_control(REDIS_URL, change, prefix=prefix)


def _wait(predicate: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("fault", ["blackhole", "cut"])
def test_control_keeps_the_last_state_through_a_redis_fault(
    redis_proxy: tuple[str, str, Partition], fault: str
) -> None:
    """A kill read before the fault stays in force during it; polls fail within their timeout
    (counted); once Redis answers again, a revive written meanwhile is picked up."""
    url, prefix, proxy = redis_proxy
    _kill(prefix, True)
    aiguard.configure(control=RedisControl(url, prefix=prefix, interval=INTERVAL, timeout=0.5))

    @aiguard.guard("redis-fault", fallback=aiguard.Default("fallback"))
    def f() -> str:
        return "model"

    assert _wait(lambda: f() == "fallback", 2)
    getattr(proxy, fault)()
    _kill(prefix, False)  # written straight to Redis, past the broken proxy
    time.sleep(1.5)  # several polls fail meanwhile
    worst = 0.0
    for _ in range(100):
        t = time.monotonic()
        assert f() == "fallback"  # the last good state: still killed
        worst = max(worst, time.monotonic() - t)
    assert worst < 0.05  # calls never wait on Redis
    assert any(k.startswith("control poll: redis") for k in errors.counts())
    proxy.heal() if fault == "blackhole" else proxy.mend()
    assert _wait(lambda: f() == "model", 5), "the revive never arrived after Redis came back"
    aiguard.configure(control=None)


def test_budgets_go_on_while_redis_is_blackholed(
    redis_proxy: tuple[str, str, Partition],
) -> None:
    """Shared budgets with Redis blackholed: calls are served, one call waits for Redis at
    most call_timeout and the others not at all, spend is counted locally and pushed once Redis
    is back."""
    from aiguard.redis import RedisBudgets

    url, prefix, proxy = redis_proxy
    aiguard.configure(
        prices={"models": {"m": {"per_call": "0.01"}}},
        budgets=RedisBudgets(url, prefix=prefix, sync=0.1, timeout=0.5, call_timeout=0.02),
    )

    @aiguard.guard("budget-fault", model="m", budget=aiguard.Budget(limit="100", per="day"))
    def f() -> str:
        return "ok"

    proxy.blackhole()
    waits = []
    for _ in range(50):
        t = time.monotonic()
        assert f() == "ok"
        waits.append(time.monotonic() - t)
    assert max(waits) < 0.05  # the call deadline, not the sync's
    assert len([w for w in waits if w > 0.015]) <= 1  # after one failure, calls do not wait
    proxy.heal()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    key_prefix = f"{prefix}:budget:budget-fault:"
    assert _wait(
        lambda: (
            sum(int(client.get(k) or 0) for k in client.scan_iter(key_prefix + "*")) >= 50 * 10**10
        ),
        10,
    ), "the spend made while Redis was unreachable never reached it"
    aiguard.configure(budgets=None)
