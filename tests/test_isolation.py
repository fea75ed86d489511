"""aiguard.testing.isolated() saves and restores all process state, with no hand-kept list."""

from __future__ import annotations

from pathlib import Path

import aiguard
from aiguard._runtime.state import runtime
from aiguard.testing import isolated


def test_budgets_declared_in_one_block_do_not_leak_into_the_next() -> None:
    """Two blocks each declare a different Budget for the same feature: no ConfigError, each
    block's guard has its own."""
    for limit in ("1", "2"):
        with isolated():

            @aiguard.guard("iso-budget", budget=aiguard.Budget(limit=limit, per="day"))
            def f() -> int:
                return 1

            assert f() == 1
            assert str(runtime.budgets["iso-budget"][0].limit) == limit
    assert "iso-budget" not in runtime.budgets


def test_every_attribute_of_the_runtime_comes_back(tmp_path: Path) -> None:
    """Configuration, control state, events, error counts, stats and workers changed inside a
    block are all as before after it; what the block started is stopped."""
    before = {name: repr(value) for name, value in vars(runtime).items() if name != "generation"}
    workers_before = set(runtime.workers)
    with isolated():
        aiguard.configure(
            store=tmp_path / "iso.db",
            features={"iso": {"confidence": "p", "threshold": 0.5}},
            prices={"models": {"m": {"per_call": "0.01"}}},
            exit_timeout=1.0,
            control=tmp_path / "control.toml",
            control_interval=0.05,
            missing_ok=True,
        )
        aiguard.kill("iso", reason="inside")
        aiguard.set_rollout("iso", 5)

        @aiguard.guard("iso", model="m", fallback=aiguard.Default({"p": 1.0}))
        def f() -> dict[str, float]:
            return {"p": 0.9}

        f()
        assert aiguard.recent_events("iso") and runtime.workers.keys() != workers_before
        started = [w for name, w in runtime.workers.items() if name not in workers_before]
    after = {name: repr(value) for name, value in vars(runtime).items() if name != "generation"}
    changed = {k for k in before if before[k] != after[k]}
    assert changed <= {"cores"}, changed  # a live guard made inside may still be referenced
    assert all(w.stopped for w in started)
    assert not aiguard.recent_events("iso")
