"""The budget check before a call: its worst-case cost, reserved from the feature's budget.

Compiled once per configuration generation (``budget_check``); per call it reads at most a few
arguments. The worst case of one call is, in order:

1. from the price table, for the guard's ``model=``: the per-call price, plus the output price
   times ``max_tokens`` (or ``max_output_tokens``, ``max_completion_tokens``: the largest given),
   plus the highest input price (uncached, cached, cache write) times the UTF-8 byte length of
   the ``messages``, ``prompt``, ``input`` and ``system`` arguments (a token covers at least one
   byte; a value that is not text counts as its JSON). A part whose price is 0 needs no argument;
   a part that is priced but whose argument the call does not give makes the table silent;
2. else the feature's ``estimate=`` (one call's worst-case cost);
3. else the largest cost of one call seen so far (the budget run keeps it);
4. else unknown: the budget admits one such call at a time until a cost is seen.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from .._runtime.budgets import BudgetRun, held
from .._runtime.state import runtime
from ..pricing import to_pico
from .accounting import _lookup

MAX_TOKENS = ("max_tokens", "max_output_tokens", "max_completion_tokens")
PROMPT = ("messages", "prompt", "input", "system")
_ABSENT: Any = object()

Check = Callable[[tuple[Any, ...], dict[str, Any]], str | None]
Worst = Callable[[tuple[Any, ...], dict[str, Any]], int | None]
Where = tuple[str, int | None, Any]  # (name, position or None, default)


def budget_check(core: Any, cfg: Any) -> Check | None:
    """The pre-call budget check of ``core`` under feature configuration ``cfg``: None
    without a budget; else ``(args, kwargs) -> None`` (admitted: the call's hold is now in
    ``held``) or the detail of its refusal."""
    run: BudgetRun | None = core.acct.budget
    if run is None:
        return None
    estimate = core.spec.estimate
    if estimate is None and cfg is not None:
        estimate = getattr(cfg, "estimate", None)
    worst = compile_worst(
        core.signature,
        _rates(core.acct.model),
        None if estimate is None else to_pico(estimate, field="estimate"),
    )
    reserve = run.reserve
    get, put = held.get, held.set

    if worst is None or worst.__class__ is int:
        fixed = worst

        def check_fixed(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
            hold = reserve(fixed)
            if hold.__class__ is str:
                return hold
            hold.parent = get()  # type: ignore[union-attr]
            put(hold)  # type: ignore[arg-type]
            return None

        return check_fixed
    of = worst

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        try:
            pico = of(args, kwargs)  # type: ignore[operator]
        except Exception:  # an argument we cannot measure: the other sources decide
            pico = None
        hold = reserve(pico)
        if hold.__class__ is str:
            return hold
        hold.parent = get()  # type: ignore[union-attr]
        put(hold)  # type: ignore[arg-type]
        return None

    return check


def release() -> None:
    """Give back the hold the budget check just took (a later pre-call check refused the
    call: the model is not called)."""
    hold = held.get()
    if hold is not None:
        held.set(hold.parent)
        hold.run.settle(hold, 0)


def _rates(model: str | None) -> tuple[int, ...] | None:
    """The model's integer rates: input, cached input, cache write, output, per call, and
    1-hour cache write."""
    prices = runtime.prices
    if prices is None or model is None:
        return None
    rates: tuple[int, ...] | None = _lookup(prices, model, model)
    return rates


def compile_worst(
    signature: inspect.Signature | None,
    rates: tuple[int, ...] | None,
    estimate: int | None,
) -> int | Worst | None:
    """One call's worst case: a constant, a function of the call's arguments (which returns
    None when they do not bound it), or None (unknown: the budget run decides)."""
    if rates is not None:
        # an input token's dearest price, short of a 1-hour cache write (asked per request, and
        # priced 2x input by default even for models that have none)
        rin = max(rates[0], rates[1], rates[2])
        rout, rcall = rates[3], rates[4]
        if not rin and not rout:
            return rcall  # a per-call price: known without looking at the call
        outs = _where(signature, MAX_TOKENS) if rout else []
        ins = _where(signature, PROMPT) if rin else []
        if (not rout or outs) and (not rin or ins):
            return _by_arguments(outs, ins, rin, rout, rcall, estimate)
    return estimate


def _by_arguments(
    outs: list[Where], ins: list[Where], rin: int, rout: int, rcall: int, estimate: int | None
) -> Worst:
    def worst(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
        pico = rcall
        if outs:
            most = 0
            for where in outs:
                value = _value(where, args, kwargs)
                if value.__class__ is int and value > most:
                    most = value
            if not most:
                return estimate  # no max_tokens given: the output is not bounded
            pico += most * rout
        if ins:
            size = 0
            seen = False
            for where in ins:
                value = _value(where, args, kwargs)
                if value is not _ABSENT:
                    size += _bytes(value)
                    seen = True
            if not seen:
                return estimate  # no prompt argument given: the input is not bounded
            pico += size * rin
        return pico

    return worst


def _where(signature: inspect.Signature | None, names: tuple[str, ...]) -> list[Where]:
    """Where each of ``names`` is found in a call of a function of ``signature``."""
    if signature is None:
        return [(name, None, _ABSENT) for name in names]
    params = signature.parameters
    found: list[Where] = []
    positional = [
        p.name
        for p in params.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name in names:
        p = params.get(name)
        if p is None:
            if takes_any:
                found.append((name, None, _ABSENT))
            continue
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        index = positional.index(name) if name in positional else None
        default = _ABSENT if p.default is inspect.Parameter.empty else p.default
        found.append((name, index, default))
    return found


def _value(where: Where, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    name, index, default = where
    if name in kwargs:
        return kwargs[name]
    if index is not None and index < len(args):
        return args[index]
    return default


def _bytes(value: Any) -> int:
    """An upper bound on the tokens of one prompt argument: its UTF-8 bytes (its JSON when it
    is not text)."""
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes | bytearray):
        return len(value)
    return len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass"))
