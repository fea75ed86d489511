"""Budget reservations: each call reserves its worst case before the model runs and settles to
its real cost after, so concurrent calls cannot overspend; estimate=, unknown costs, failures,
window roll-over, fork; and the invariants of reserve/settle under any interleaving."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import time
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pytest
from _modes import Mode
from hypothesis import given, settings
from hypothesis import strategies as st

import aiguard
from aiguard import Reason
from aiguard._runtime import budgets as budget_module
from aiguard._runtime.budgets import BudgetRun, Hold

PER_CALL = {"models": {"m": {"per_call": "0.01"}}}
TOKENS = {"models": {"t": {"input": "1", "output": "2"}, "o": {"output": "2"}}}  # per 10^6
PICO = 10**12


def concurrently(mode: Mode, f: Any, n: int, *args: Any, **kwargs: Any) -> list[Any]:
    """``n`` calls of ``f.outcome`` at once: threads (sync) or asyncio tasks (async)."""
    if mode.is_async:

        async def all_at_once() -> list[Any]:
            return list(await asyncio.gather(*(f.outcome(*args, **kwargs) for _ in range(n))))

        return mode.run(all_at_once())  # type: ignore[no-any-return]
    barrier = threading.Barrier(n)
    out: list[Any] = []

    def one() -> None:
        barrier.wait()
        out.append(f.outcome(*args, **kwargs))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_fifty_concurrent_calls_never_overspend(mode: Mode) -> None:
    """50 calls at once at 0.01 each against a 0.10 budget: 10 reach the model, the spend is
    exactly 0.10 (never past the limit by more than one reservation), the rest over_budget."""
    aiguard.configure(prices=PER_CALL)
    calls: list[int] = []

    def body() -> str:
        calls.append(1)
        time.sleep(0.02)  # every call is under way at once
        return "model"

    if mode.is_async:

        async def slow() -> str:
            calls.append(1)
            await asyncio.sleep(0.02)
            return "model"

        f = aiguard.guard("fifty", model="m", budget=aiguard.Budget(limit="0.10", per="day"),
                          fallback=aiguard.Default("fb"))(slow)  # fmt: skip
    else:
        f = mode.guard("fifty", model="m", budget=aiguard.Budget(limit="0.10", per="day"),
                       fallback=aiguard.Default("fb"))(body)  # fmt: skip
    outcomes = concurrently(mode, f, 50)
    served = [o for o in outcomes if o.reason is Reason.SERVED]
    refused = [o for o in outcomes if o.reason is Reason.OVER_BUDGET]
    assert len(served) + len(refused) == 50
    figures = aiguard.budget_figures("fifty")
    assert figures is not None
    assert figures.spent == Decimal("0.01") * len(calls)
    assert figures.spent <= Decimal("0.10") + Decimal("0.01")
    assert len(calls) == len(served) == 10
    assert figures.reserved == 0 and figures.in_flight == 0


def test_the_refusal_names_limit_spend_reservations_and_window(mode: Mode) -> None:
    """An over_budget call's detail says the limit, the spend, what calls under way reserve
    and the window."""
    aiguard.configure(prices=PER_CALL)
    release = threading.Event()
    f = mode.guard("detail", model="m", budget=aiguard.Budget(limit="0.02", per="hour"),
                   fallback=aiguard.Default("fb"))(mode.blocker(release, "model"))  # fmt: skip
    g = mode.guard("detail", model="m", budget=aiguard.Budget(limit="0.02", per="hour"),
                   fallback=aiguard.Default("fb"))(lambda: "model")  # fmt: skip
    assert mode.outcome(g).reason is Reason.SERVED  # spent 0.01
    if mode.is_async:

        async def both() -> tuple[Any, Any]:
            first = asyncio.ensure_future(f.outcome())
            await asyncio.sleep(0.05)
            second = await g.outcome()
            release.set()
            return await first, second

        _, second = mode.run(both())
    else:
        t = threading.Thread(target=f)
        t.start()
        time.sleep(0.05)
        second = g.outcome()
        release.set()
        t.join()
    assert second.reason is Reason.OVER_BUDGET
    detail = second.detail or ""
    assert detail.startswith("spent 0.01 of the 0.02 budget for this window")
    assert "reserved 0.01 by 1 call(s) under way" in detail
    assert "window of 3600 s, next in" in detail


def test_max_tokens_and_the_prompt_bound_the_reservation_and_the_rest_is_freed(
    mode: Mode,
) -> None:
    """With max_tokens and messages in the call, the reservation is output price x max_tokens
    + input price x the prompt's UTF-8 bytes; after the call, the unused part is free at once."""
    aiguard.configure(prices=TOKENS)
    seen: list[Any] = []
    messages = [{"role": "user", "content": "héllo"}]

    def chat(messages: list[dict[str, str]], max_tokens: int = 16) -> dict[str, Any]:
        seen.append(aiguard.budget_figures("tok"))
        return {"model": "t", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}

    f = mode.guard("tok", model="t", budget=aiguard.Budget(limit="1", per="day"))(chat)
    mode.call(f, messages, max_tokens=1000)
    size = len(json.dumps(messages, ensure_ascii=False).encode())
    assert seen[0].reserved == Decimal(1000 * 2 + size * 1) / 10**6
    after = aiguard.budget_figures("tok")
    assert after is not None
    assert after.reserved == 0
    assert after.spent == Decimal(3 * 1 + 2 * 2) / 10**6
    mode.call(f, messages)  # the default max_tokens, 16, by the signature
    assert seen[1].reserved == Decimal(16 * 2 + size) / 10**6


def test_estimate_is_the_reservation_and_an_unknown_cost_is_charged_it(mode: Mode) -> None:
    """No price for the model: estimate= is reserved, and each call whose cost stays unknown
    is charged it and counted."""
    aiguard.configure(prices=TOKENS)  # no price for "nameless"
    f = mode.guard("est", model="nameless", estimate="0.25",
                   budget=aiguard.Budget(limit="1", per="day"),
                   fallback=aiguard.Default("fb"))(lambda: "model")  # fmt: skip
    reasons = [mode.outcome(f).reason for _ in range(5)]
    assert reasons == [Reason.SERVED] * 4 + [Reason.OVER_BUDGET]
    figures = aiguard.budget_figures("est")
    assert figures is not None
    assert figures.spent == Decimal("1.00") and figures.charged_calls == 4
    assert figures.charged == Decimal("1")


def test_estimate_from_the_feature_configuration(mode: Mode) -> None:
    """estimate in the feature's configuration is used when the guard gives none."""
    aiguard.configure(prices=TOKENS, features={"est-cfg": {"estimate": "0.5"}})
    seen: list[Any] = []

    def body() -> str:
        seen.append(aiguard.budget_figures("est-cfg"))
        return "model"

    f = mode.guard("est-cfg", model="t", budget=aiguard.Budget(limit="9", per="day"))(body)
    mode.call(f)
    assert seen[0].reserved == Decimal("0.5")


@pytest.mark.parametrize("bad", [0.05, "abc", "-1", True, "1e-13"])
def test_estimate_is_checked_at_decoration(bad: Any) -> None:
    """estimate= is an amount like Budget(limit): a float, text that is no number, a negative
    or too fine an amount is a ConfigError naming the field and the value."""
    with pytest.raises(aiguard.ConfigError, match="estimate") as info:
        aiguard.guard("bad-est", estimate=bad)
    assert repr(bad) in str(info.value) or str(bad) in str(info.value)
    with pytest.raises(aiguard.ConfigError, match="estimate"):
        aiguard.configure(features={"bad-est": {"estimate": bad}})


def test_with_no_worst_case_known_one_call_at_a_time_until_a_cost_is_seen(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """Token prices, no max_tokens, no estimate: the first call is admitted alone (a second
    one at the same time is refused and told why, and a warning suggests estimate=); once a
    cost is seen it is the reservation."""
    aiguard.configure(prices=TOKENS)
    release = threading.Event()
    result = {"model": "t", "usage": {"prompt_tokens": 10, "completion_tokens": 10}}
    slow = mode.guard("blind", model="t", budget=aiguard.Budget(limit="1", per="day"),
                      fallback=aiguard.Default("fb"))(mode.blocker(release, result))  # fmt: skip
    fast = mode.guard("blind", model="t", budget=aiguard.Budget(limit="1", per="day"),
                      fallback=aiguard.Default("fb"))(lambda: result)  # fmt: skip
    with caplog.at_level("WARNING", logger="aiguard"):
        if mode.is_async:

            async def both() -> Any:
                first = asyncio.ensure_future(slow.outcome())
                await asyncio.sleep(0.05)
                second = await fast.outcome()
                release.set()
                await first
                return second

            second = mode.run(both())
        else:
            t = threading.Thread(target=slow)
            t.start()
            time.sleep(0.05)
            second = fast.outcome()
            release.set()
            t.join()
    assert second.reason is Reason.OVER_BUDGET
    assert "one call at a time until a cost is seen" in (second.detail or "")
    assert any("estimate=" in r.getMessage() for r in caplog.records)
    cost = Decimal(10 * 1 + 10 * 2) / 10**6
    figures = aiguard.budget_figures("blind")
    assert figures is not None and figures.largest_cost == cost
    seen: list[Any] = []

    def observe() -> Any:
        seen.append(aiguard.budget_figures("blind"))
        return result

    watched = mode.guard("blind", model="t", budget=aiguard.Budget(limit="1", per="day"))(observe)
    mode.call(watched)
    assert seen[0].reserved == cost


def test_a_budget_without_prices_does_not_throttle_concurrent_calls(mode: Mode) -> None:
    """No price table: nothing can price the calls, so they are not admitted one at a time
    (which would only send most of a busy service's calls to the fallback)."""
    fn = mode.guard("noprices", budget=aiguard.Budget(limit="1", per="day"),
                    fallback=aiguard.Default("fb"))(mode.sleeper(0.05, "model"))  # fmt: skip
    if mode.is_async:

        async def many() -> list[Any]:
            return list(await asyncio.gather(*(fn.outcome() for _ in range(10))))

        outcomes = mode.run(many())
    else:
        outcomes = []
        threads = [threading.Thread(target=lambda: outcomes.append(fn.outcome()))
                   for _ in range(10)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [o.reason for o in outcomes] == [Reason.SERVED] * 10


def test_unpriceable_calls_stop_the_one_at_a_time_gate(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    """A price table that cannot price the model: after a few calls admitted alone end with
    their cost unknown, the gate stops (and says so) rather than throttle for ever."""
    aiguard.configure(prices=TOKENS)
    fn = mode.guard("unpriced", model="not-in-table", budget=aiguard.Budget(limit="1"),
                    fallback=aiguard.Default("fb"))(lambda: "answer")  # fmt: skip
    with caplog.at_level("WARNING", logger="aiguard"):
        for _ in range(budget_module.UNKNOWABLE):
            assert mode.outcome(fn).reason is Reason.SERVED
    assert any("stops admitting one at a time" in r.getMessage() for r in caplog.records)
    run = budget_module.runtime.budgets["unpriced"][1]
    hold = run.reserve(None)
    second = run.reserve(None)  # a second call at the same time: admitted now
    assert isinstance(hold, Hold) and isinstance(second, Hold)
    run.settle(hold, 0)
    run.settle(second, 0)


def _status(code: int) -> Exception:
    request = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    return openai.APIStatusError(f"HTTP {code}", response=httpx2.Response(code, request=request),
                                 body=None)  # fmt: skip


def test_failed_calls_release_their_reservation(mode: Mode) -> None:
    """An HTTP error status settles to 0; a timeout or a failure of unknown cost is charged its
    reservation; an exception not in catch too; nothing stays reserved."""
    aiguard.configure(prices=TOKENS)
    budget = aiguard.Budget(limit="1", per="day")

    def refused(max_tokens: int) -> str:
        raise _status(429)

    def broken(max_tokens: int) -> str:
        raise ConnectionError("reset")

    a = mode.guard("fail", model="o", budget=budget, fallback=aiguard.Default("fb"))(refused)
    assert mode.outcome(a, max_tokens=1000).reason is Reason.ERROR
    figures = aiguard.budget_figures("fail")
    assert figures is not None and figures.spent == 0 and figures.reserved == 0
    b = mode.guard("fail", model="o", budget=budget, fallback=aiguard.Default("fb"))(broken)
    assert mode.outcome(b, max_tokens=1000).reason is Reason.ERROR
    figures = aiguard.budget_figures("fail")
    assert figures is not None
    assert figures.spent == Decimal("0.002") and figures.charged_calls == 1
    c = mode.guard("fail", model="o", budget=budget, catch=KeyError)(broken)
    with pytest.raises(ConnectionError):
        mode.call(c, max_tokens=500)
    figures = aiguard.budget_figures("fail")
    assert figures is not None
    assert figures.spent == Decimal("0.003") and figures.reserved == 0
    assert figures.in_flight == 0


def test_a_timed_out_call_is_charged_its_reservation(mode: Mode) -> None:
    """A call aiguard's timeout abandons may have been billed: it is charged its reservation,
    and no reservation is left behind."""
    aiguard.configure(prices=TOKENS)
    release = threading.Event()

    def slow(max_tokens: int) -> str:
        release.wait(5)
        return "late"

    body: Any = slow
    if mode.is_async:

        async def aslow(max_tokens: int) -> str:
            await asyncio.sleep(5)
            return "late"

        body = aslow
    f = aiguard.guard("slow", model="o", timeout=0.05, fallback=aiguard.Default("fb"),
                      budget=aiguard.Budget(limit="1", per="day"))(body)  # fmt: skip
    outcome = mode.outcome(f, max_tokens=1000)
    release.set()
    assert outcome.reason is Reason.TIMEOUT
    figures = aiguard.budget_figures("slow")
    assert figures is not None
    assert figures.spent == Decimal("0.002") and figures.reserved == 0


def test_a_breaker_refusal_gives_the_reservation_back(mode: Mode) -> None:
    """A call the breaker stops after the budget admitted it never runs: nothing is charged."""
    aiguard.configure(prices=PER_CALL)
    f = mode.guard("brk", model="m", budget=aiguard.Budget(limit="1", per="day"),
                   breaker=aiguard.Breaker(max_error_rate=0.5, min_calls=2, cooldown=60),
                   fallback=aiguard.Default("fb"))(lambda: 1 / 0)  # fmt: skip
    reasons = [mode.outcome(f).reason for _ in range(4)]
    assert reasons[-1] is Reason.AUTO_KILLED
    figures = aiguard.budget_figures("brk")
    assert figures is not None and figures.reserved == 0
    assert figures.spent == Decimal("0.01") * reasons.count(Reason.ERROR)


def test_a_cancelled_call_is_charged_when_its_task_is_gone() -> None:
    """An async call cancelled from outside never reaches the settle step: its hold is charged
    its reservation when the task's context is freed, so nothing stays reserved."""
    aiguard.configure(prices=PER_CALL)

    @aiguard.guard("cancel", model="m", budget=aiguard.Budget(limit="1", per="day"))
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    async def main() -> None:
        task = asyncio.ensure_future(slow())
        await asyncio.sleep(0.02)
        figures = aiguard.budget_figures("cancel")
        assert figures is not None and figures.reserved == Decimal("0.01")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    gc.collect()
    figures = aiguard.budget_figures("cancel")
    assert figures is not None
    assert figures.reserved == 0 and figures.spent == Decimal("0.01")


def test_nested_guards_settle_their_own_reservations(mode: Mode) -> None:
    """A guarded call inside another (same feature, refused or admitted) settles its own hold;
    the outer call's reservation reaches the outer settle step."""
    aiguard.configure(prices=PER_CALL)
    budget = aiguard.Budget(limit="0.02", per="day")
    inner = aiguard.guard("nest", model="m", budget=budget, fallback=aiguard.Default("fb"))(
        lambda: "inner"
    )

    def outer_body() -> str:
        first = inner.outcome()  # admitted: 0.02 reserved in all
        second = inner.outcome()  # refused: the outer and the first hold everything
        return f"{first.reason}/{second.reason}"

    outer = mode.guard("nest", model="m", budget=budget)(outer_body)
    assert mode.call(outer) == "served/over_budget"
    figures = aiguard.budget_figures("nest")
    assert figures is not None
    assert figures.spent == Decimal("0.02") and figures.reserved == 0


def test_a_window_roll_over_mid_call_keeps_the_figures_whole(
    mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call reserved in one window and settled in the next is charged to the next; its
    reservation is released once, never below zero, and the old spend does not linger."""
    now = [3600.0 * 1000 + 3590]
    monkeypatch.setattr(budget_module.time, "time", lambda: now[0])
    aiguard.configure(prices=PER_CALL)

    def body() -> str:
        now[0] += 20  # the hour ends while the model runs
        return "model"

    f = mode.guard("roll", model="m", budget=aiguard.Budget(limit="0.05", per="hour"))(body)
    g = mode.guard("roll", model="m", budget=aiguard.Budget(limit="0.05", per="hour"))(
        lambda: "model"
    )
    for _ in range(3):
        mode.call(g)
    figures = aiguard.budget_figures("roll")
    assert figures is not None and figures.spent == Decimal("0.03")
    mode.call(f)
    figures = aiguard.budget_figures("roll")
    assert figures is not None
    assert figures.spent == Decimal("0.01") and figures.reserved == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_does_not_inherit_the_parents_reservations() -> None:
    """fork() while a call is under way: the child starts with nothing reserved, the hold it
    inherits in its context is not its to settle, and its own calls count normally."""
    aiguard.configure(prices=PER_CALL)
    budget = aiguard.Budget(limit="0.10", per="day")
    g = aiguard.guard("forked", model="m", budget=budget)(lambda: "model")

    def body() -> str:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child, inside the parent's guarded call
            try:
                before = aiguard.budget_figures("forked")
                g()
                hold = budget_module.held.get()
                assert hold is not None
                hold.run.settle(hold, None)  # inherited: ignored
                after = aiguard.budget_figures("forked")
                assert before is not None and after is not None
                figures = [str(before.reserved), before.in_flight, str(after.reserved)]
                os.write(write, json.dumps([*figures, str(after.spent)]).encode())
            finally:
                os._exit(0)
        os.close(write)
        data = os.read(read, 1000)
        os.waitpid(pid, 0)
        os.close(read)
        return data.decode()

    f = aiguard.guard("forked", model="m", budget=budget)(body)
    assert json.loads(f()) == ["0", 0, "0", "0.01"]
    figures = aiguard.budget_figures("forked")
    assert figures is not None
    assert figures.reserved == 0 and figures.spent == Decimal("0.01")  # the parent's own call


# -- invariants ---------------------------------------------------------------------------------

op = st.one_of(
    st.tuples(st.just("reserve"), st.one_of(st.none(), st.integers(0, 50))),
    st.tuples(st.just("settle"), st.integers(0, 30), st.one_of(st.none(), st.integers(0, 60))),
    st.tuples(st.just("spend"), st.integers(0, 20)),
    st.tuples(st.just("tick"), st.integers(0, 400)),
)


@settings(max_examples=300)
@given(limit=st.integers(1, 200), ops=st.lists(op, max_size=80))
def test_any_interleaving_keeps_spent_and_reserved_consistent(limit: int, ops: list[Any]) -> None:
    """Reserve, settle (in any order, with any real or unknown cost), unreserved spend and time
    passing: reserved is the sum of the open holds, nothing goes negative, a call is admitted
    only while spent + reserved is below the limit, and spent is what the window was charged."""
    now = [1_000_000.0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(budget_module.time, "time", lambda: now[0])
        _interleave(limit, ops, now)


def _interleave(limit: int, ops: list[Any], monkeypatch_time: list[float]) -> None:
    run = BudgetRun(Decimal(limit).scaleb(-12), 1000.0)
    run.feature = "prop"
    open_holds: list[Hold] = []
    charged = 0
    window = run.window
    for step in ops:
        kind = step[0]
        if kind == "tick":
            monkeypatch_time[0] += step[1]
            continue
        run._roll(monkeypatch_time[0])
        if run.window != window:
            window, charged = run.window, 0
        if kind == "reserve":
            before = run.spent + run.reserved
            hold = run.reserve(step[1])
            if isinstance(hold, Hold):
                assert before < limit
                open_holds.append(hold)
            else:
                assert before >= limit or (step[1] is None and run.blind)
        elif kind == "settle" and open_holds:
            hold = open_holds.pop(step[1] % len(open_holds))
            run.settle(hold, step[2])
            charged += hold.pico if step[2] is None else step[2]
        elif kind == "spend":
            run.spend(step[1])
            charged += step[1]
        assert run.reserved == sum(h.pico for h in open_holds) >= 0
        assert run.in_flight == len(open_holds)
        assert run.spent == charged >= 0
        assert run.blind == any(h.blind for h in open_holds)
    for hold in open_holds:
        hold.open = False  # not charged when the test frees them


class FakeLedger:
    """The Lua script of ``RedisBudgets.take`` and its sync, in memory: one fleet of runs."""

    def __init__(self) -> None:
        self.spent = 0
        self.leased = 0
        self.up = True

    def take(self, run: BudgetRun, window: int, need: int, pico: int) -> int | None:
        if not self.up:
            return None
        want = max(need, min(run.limit // 16, max(8 * pico, 2 * max(run.pace, run.recent))))
        grant = 0
        if self.spent + self.leased < run.limit:
            grant = want if self.spent + self.leased + want <= run.limit else need
            self.leased += grant
        run.granted(window, grant, self.spent, self.leased)
        return grant

    def sync(self, run: BudgetRun) -> None:
        window, used, lease, stale = run.take_sync()
        if not self.up:
            run.give_back(window, used, lease, stale)
            return
        assert not stale
        self.spent += used
        self.leased -= lease
        assert self.leased >= 0
        run.synced(window, self.spent, self.leased)


fleet_op = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 3), st.integers(1, 40)),
    st.tuples(st.just("settle"), st.integers(0, 60), st.integers(0, 100)),
    st.tuples(st.just("sync"), st.integers(0, 3)),
    st.tuples(st.just("flip"), st.just(0)),
)


@settings(max_examples=300)
@given(limit=st.integers(1, 300), ops=st.lists(fleet_op, max_size=100))
def test_leases_keep_a_fleet_within_one_reservation(limit: int, ops: list[Any]) -> None:
    """Four processes reserving from leases of one ledger, in any interleaving, with real costs
    up to the reservation: while the ledger answers, the fleet's spend never passes the limit by
    more than one reservation; whatever happens, leases never go negative, and once every call
    settles and the ledger answers, it holds the whole spend and no lease."""
    ledger = FakeLedger()
    runs = []
    for _ in range(4):
        run = BudgetRun(Decimal(limit).scaleb(-12), 10**9)
        run.feature, run.ledger = "fleet", ledger
        runs.append(run)
    holds: list[Hold] = []
    spent = 0
    biggest = 0
    ever_down = False
    for step in ops:
        kind = step[0]
        if kind == "reserve":
            hold = runs[step[1]].reserve(step[2])
            biggest = max(biggest, step[2])
            if isinstance(hold, Hold):
                holds.append(hold)
        elif kind == "settle" and holds:
            hold = holds.pop(step[1] % len(holds))
            cost = hold.pico * step[2] // 100  # at most its reservation
            hold.run.settle(hold, cost)
            spent += cost
        elif kind == "sync":
            ledger.sync(runs[step[1]])
        elif kind == "flip":
            ledger.up = not ledger.up
            ever_down = True
        if not ever_down:
            assert spent + sum(h.pico for h in holds) <= limit + biggest
        assert ledger.leased >= 0
        assert all(r.reserved >= 0 and r.used >= 0 and r.held >= 0 for r in runs)
    for hold in holds:
        hold.run.settle(hold, hold.pico)
        spent += hold.pico
    ledger.up = True
    for run in runs:
        ledger.sync(run)
    assert ledger.spent == spent
    assert ledger.leased == 0
