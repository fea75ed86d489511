"""Shadow candidates: run off the call's path on a share of calls, recorded, never served,
compared with the served answer, and shown in the report (real SQLite and PostgreSQL stores)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from services import fresh_store

import aiguard
from aiguard._runtime import ids, shadowing
from aiguard._runtime.state import runtime

PRICES = aiguard.PriceTable(
    models={
        "small": {"input": "1", "output": "2"},  # per million tokens
        "big": {"input": "2", "output": "4"},  # twice the price: the candidate
    }
)


def usage(result: dict[str, Any]) -> aiguard.Usage:
    return aiguard.Usage(input_tokens=1000, output_tokens=500, model=result["model"])


def label_for(i: int) -> str:
    return "billing" if i % 2 else "bug"


def current(i: int) -> dict[str, Any]:
    return {"label": label_for(i), "score": 0.9, "model": "small"}


def candidate(i: int) -> dict[str, Any]:
    """Agrees with the current model on 4 inputs of 5."""
    label = "other" if i % 5 == 0 else label_for(i)
    return {"label": label, "score": 0.7, "model": "big"}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with fresh_store(request.param, tmp_path / "s.db") as s:
        yield s


def _settle() -> None:
    assert aiguard.shadow.wait(20)
    aiguard.flush()


def test_report_shows_agreement_cost_and_acceptance(store: Any) -> None:
    """A candidate that agrees 80 % of the time and costs twice as much: the report shows ~80 %
    agreement (its interval holding 0.8), a cost ratio of 2, both models' latencies, and the
    served answer's acceptance when the candidate disagreed vs agreed."""
    aiguard.configure(store=store, prices=PRICES)
    aiguard.shadow.set_limits(queue=1000)  # every call's candidate waits its turn here

    @aiguard.guard(
        "triage", confidence="score", threshold=0.5, usage=usage, shadow=candidate,
        shadow_share=1.0,
    )  # fmt: skip
    def triage(i: int) -> dict[str, Any]:
        return current(i)

    outcomes = [triage.outcome(i) for i in range(500)]
    assert all(o.value == current(i) for i, o in enumerate(outcomes))  # never the candidate's
    _settle()
    for i, o in enumerate(outcomes):  # users accept 1 in 4 where the candidate disagreed
        if i % 5 == 0:
            (o.accept if i % 20 == 0 else o.reject)()
        elif i % 10 == 1:
            o.accept()
    r = aiguard.report("triage", store=store)
    [s] = r.shadows["triage"]
    assert s.candidate == "candidate"
    assert (s.calls, s.compared, s.agreed, s.errors) == (500, 500, 400, 0)
    assert s.agreement_rate == pytest.approx(0.8)
    assert s.agreement_interval is not None
    assert s.agreement_interval[0] < 0.8 < s.agreement_interval[1]
    assert s.cost_pairs == 500 and s.cost_ratio == pytest.approx(2.0)
    assert s.model_cost_per_call == Decimal("0.002")  # 1000 x 1/M + 500 x 2/M
    assert s.candidate_cost_per_call == Decimal("0.004")
    assert s.candidate_p50_latency is not None and s.model_p95_latency is not None
    assert s.candidate_p50_latency <= s.candidate_p95_latency  # type: ignore[operator]
    assert (s.disagreed_decided, s.acceptance_when_disagreed) == (100, 0.25)
    assert (s.agreed_decided, s.acceptance_when_agreed) == (50, 1.0)
    assert s.acceptance_when_disagreed_interval is not None
    # the feature's own cost is the current model's only: the candidate's is kept apart
    assert r.features[0].cost == Decimal("0.002") * 500
    text = r.to_text()
    assert "shadow candidate: 500 calls" in text and "agreement 80.0%" in text
    assert "(x2.00)" in text
    data = json.loads(r.to_json())["shadows"]["triage"][0]
    assert data["agreed"] == 400 and data["cost_ratio"] == pytest.approx(2.0)
    assert data["candidate_cost_per_call"] == "0.004"
    assert "<table class=shadow>" in r.to_html()


def test_async_guard_runs_an_async_candidate_as_a_task(tmp_path: Path) -> None:
    """An async guard with an async candidate: the candidates run as tasks on the caller's
    loop, off its path; the report reads their agreement."""
    aiguard.configure(store=tmp_path / "a.db", prices=PRICES)

    async def acandidate(i: int) -> dict[str, Any]:
        await asyncio.sleep(0.001)
        return candidate(i)

    @aiguard.guard("atriage", usage=usage, shadow=acandidate, shadow_share=1.0)
    async def atriage(i: int) -> dict[str, Any]:
        return current(i)

    async def main() -> list[dict[str, Any]]:
        got = [await atriage(i) for i in range(50)]
        assert await aiguard.shadow.wait_async(10)
        return got

    assert asyncio.run(main()) == [current(i) for i in range(50)]
    aiguard.flush()
    [s] = aiguard.report("atriage").shadows["atriage"]
    assert (s.calls, s.compared, s.agreed) == (50, 50, 40)
    assert s.cost_ratio == pytest.approx(2.0)


def test_async_guard_runs_a_sync_candidate_in_threads(tmp_path: Path) -> None:
    """An async guard with a sync candidate: the candidate runs in the shadow threads, never on
    the event loop."""
    aiguard.configure(store=tmp_path / "a.db")
    where: list[str] = []

    def sync_candidate(i: int) -> dict[str, Any]:
        where.append(threading.current_thread().name)
        return candidate(i)

    @aiguard.guard("mixed", shadow=sync_candidate, shadow_share=1.0)
    async def mixed(i: int) -> dict[str, Any]:
        return current(i)

    async def main() -> None:
        for i in range(10):
            await mixed(i)

    asyncio.run(main())
    assert aiguard.shadow.wait(10)
    assert set(where) == {"aiguard-shadow"}


def test_share_chooses_calls_by_their_id(tmp_path: Path) -> None:
    """shadow_share=0.1 shadows about a tenth of the calls, exactly those whose id's shadow hash
    is under the share's bound (so every replica chooses the same calls)."""
    aiguard.configure(store=tmp_path / "s.db")
    aiguard.shadow.set_limits(queue=2000)

    @aiguard.guard("share", shadow=candidate, shadow_share=0.1)
    def share(i: int) -> dict[str, Any]:
        return current(i)

    ids_ = [share.outcome(i).call_id for i in range(2000)]
    _settle()
    rows = runtime.store._run("SELECT call_id FROM shadow_calls")
    chosen = {r[0] for r in rows}
    bound = shadowing.cut(0.1)
    assert chosen == {c for c in ids_ if shadowing.hash_id(c) < bound}
    assert 120 < len(chosen) < 280


@given(st.integers(min_value=1, max_value=2**40))
def test_hash_of_a_number_is_the_hash_of_its_id(number: int) -> None:
    """The served path's hash (from the call counter) equals the hash of the call id."""
    assert shadowing.hash_of(number) == shadowing.hash_id(ids.call_id(number))


def test_fallback_answers_are_recorded_without_agreement(tmp_path: Path) -> None:
    """When the served answer came from a fallback, the candidate is still recorded, its
    agreement unknown (None), and it counts as a shadow call, not a comparison."""
    aiguard.configure(store=tmp_path / "f.db")

    @aiguard.guard(
        "low", confidence="score", threshold=0.95, shadow=candidate, shadow_share=1.0,
        fallback=aiguard.Default({"label": "other", "score": 1.0, "model": "rules"}),
    )  # fmt: skip
    def low(i: int) -> dict[str, Any]:
        return current(i)

    for i in range(10):
        assert low(i)["model"] == "rules"
    _settle()
    rows = runtime.store._run("SELECT agreed, confidence, error FROM shadow_calls")
    assert len(rows) == 10
    assert {r[0] for r in rows} == {None}
    assert {r[1] for r in rows} == {0.7}  # read with the guard's confidence=
    [s] = aiguard.report("low").shadows["low"]
    assert (s.calls, s.compared, s.agreement_rate) == (10, 0, None)


def test_custom_agree_and_labels() -> None:
    """agree= decides; by default two answers with labels agree when their labels do."""
    from aiguard._engine.shadow import default_agree

    assert default_agree({"label": "a", "score": 0.9}, {"label": "a", "score": 0.1})
    assert not default_agree({"label": "a"}, {"label": "b"})
    assert default_agree("yes", "yes") and not default_agree("yes", "no")
    seen: list[tuple[Any, Any]] = []

    def agree(served: Any, cand: Any) -> bool:
        seen.append((served, cand))
        return True

    @aiguard.guard("agree", shadow=lambda x: x + 1, shadow_share=1.0, agree=agree)
    def f(x: int) -> int:
        return x

    f(1)
    assert aiguard.shadow.wait(10)
    assert seen == [(1, 2)]


def test_full_pool_skips_and_counts_and_never_slows_the_call(tmp_path: Path) -> None:
    """Candidates that hang fill the pool: the next shadow calls are skipped and counted, and
    the served calls return at once with their own answers."""
    aiguard.configure(store=tmp_path / "p.db")
    aiguard.shadow.set_limits(workers=1, queue=2)
    release = threading.Event()

    def stuck(i: int) -> dict[str, Any]:
        release.wait(10)
        return candidate(i)

    @aiguard.guard("full", shadow=stuck, shadow_share=1.0, shadow_timeout=30)
    def full(i: int) -> dict[str, Any]:
        return current(i)

    before = aiguard.shadow.counts().skipped
    started = time.perf_counter()
    results = [full(i) for i in range(50)]
    took = time.perf_counter() - started
    assert results == [current(i) for i in range(50)]
    assert took < 1.0  # 50 calls, none waiting for the hung candidate
    skipped = aiguard.shadow.counts().skipped - before
    assert 46 <= skipped <= 48  # one running, two waiting (at most), the rest skipped
    release.set()
    _settle()
    c = aiguard.shadow.counts()
    assert c.ran == 50 - skipped and c.pending == 0


def test_candidate_that_raises_or_hangs_never_reaches_the_caller(tmp_path: Path) -> None:
    """A candidate that raises is recorded with its error; one that hangs is cut at its
    timeout and recorded as such; the caller sees neither."""
    aiguard.configure(store=tmp_path / "e.db")

    def boom(i: int) -> dict[str, Any]:
        if i % 2:
            raise RuntimeError("candidate down")
        time.sleep(1)  # blocked in C past its timeout
        return candidate(i)

    @aiguard.guard("boom", shadow=boom, shadow_share=1.0, shadow_timeout=0.2)
    def f(i: int) -> dict[str, Any]:
        return current(i)

    started = time.perf_counter()
    assert [f(i) for i in range(4)] == [current(i) for i in range(4)]
    assert time.perf_counter() - started < 0.5
    _settle()
    errors = sorted(r[0] for r in runtime.store._run("SELECT error FROM shadow_calls"))
    assert len(errors) == 4
    assert errors[:2] == ["RuntimeError: candidate down"] * 2
    assert all(e.startswith("TimeoutError") for e in errors[2:])
    c = aiguard.shadow.counts()
    assert (c.failed, c.timeout) == (2, 2)


def test_async_candidate_that_hangs_is_cancelled_at_its_timeout(tmp_path: Path) -> None:
    """An async candidate past its timeout (the guard's timeout=, here) is cancelled and
    recorded as a timeout; the caller's answer is unaffected."""
    aiguard.configure(store=tmp_path / "t.db")

    async def slow(i: int) -> dict[str, Any]:
        await asyncio.sleep(30)
        return candidate(i)

    @aiguard.guard("slow", shadow=slow, shadow_share=1.0, timeout=0.1)
    async def f(i: int) -> dict[str, Any]:
        return current(i)

    async def main() -> None:
        assert [await f(i) for i in range(3)] == [current(i) for i in range(3)]
        assert await aiguard.shadow.wait_async(5)

    asyncio.run(main())
    aiguard.flush()
    rows = runtime.store._run("SELECT error, agreed FROM shadow_calls")
    assert len(rows) == 3 and all(r[0].startswith("TimeoutError") and r[1] is None for r in rows)


def test_shadow_budget_charges_the_guard_budget(tmp_path: Path) -> None:
    """By default the candidate's cost stays out of the budget; shadow_budget=True charges it."""
    aiguard.configure(prices=PRICES)
    spent = {}
    for charged in (False, True):
        name = f"budget-{charged}"

        @aiguard.guard(
            name, usage=usage, budget=aiguard.Budget(limit="10", per="day"), shadow=candidate,
            shadow_share=1.0, shadow_budget=charged,
        )  # fmt: skip
        def f(i: int) -> dict[str, Any]:
            return current(i)

        for i in range(10):
            f(i)
        assert aiguard.shadow.wait(10)
        spent[charged] = aiguard.budget_figures(name).spent
    assert spent[False] == Decimal("0.002") * 10
    assert spent[True] == Decimal("0.006") * 10


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"shadow": candidate, "shadow_share": 1.5}, ["shadow_share", "1.5"]),
        ({"shadow": candidate, "shadow_share": True}, ["shadow_share", "True"]),
        ({"shadow": "fn"}, ["shadow", "'fn'"]),
        ({"shadow_share": 0.1}, ["shadow_share", "without shadow="]),
        ({"shadow": candidate, "agree": lambda a: a}, ["agree", "(served, candidate)"]),
        ({"shadow": candidate, "shadow_timeout": -1}, ["shadow_timeout", "-1"]),
        ({"shadow": candidate, "shadow_budget": True}, ["shadow_budget", "budget="]),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, Any], words: list[str]) -> None:
    """Settings that cannot work fail at decoration, naming the argument and its value."""
    with pytest.raises(aiguard.ConfigError) as info:

        @aiguard.guard("bad", **kwargs)
        def f(i: int) -> dict[str, Any]:
            return current(i)

    for word in words:
        assert word in str(info.value)


def test_an_async_candidate_needs_an_async_guard() -> None:
    """A sync guard cannot run an async candidate (it has no event loop): ConfigError."""

    async def acandidate(i: int) -> int:
        return i

    with pytest.raises(aiguard.ConfigError, match="async function but the guarded"):

        @aiguard.guard("sync", shadow=acandidate)
        def f(i: int) -> int:
            return i
