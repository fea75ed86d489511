"""The report's cascade and cache figures per feature: how many calls were escalated to a bigger
model (:class:`aiguard.Escalate`), what a call cost with and without escalation, and how many
calls the result cache (:class:`aiguard.Cache`) answered and what they saved.

One aggregate over the window's call records, grouped by feature: in SQL for aiguard's stores,
in Python (the reference, tested against the SQL) for a store of your own. Rows written before
schema version 8 have no ``escalated`` value: they count as not escalated.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from . import _quality_math as _qm
from ._report_plots import amount
from ._runtime.money import to_decimal

# per feature, in this order
COUNTS = (
    "calls",
    "escalated",  # an Escalate handler ran its bigger model
    "escalate_served",  # ... and its answer was served
    "esc_cost",  # the escalated calls' known costs, summed (pico-units)
    "esc_priced",  # escalated calls with a known cost
    "plain_cost",  # the same for the calls that were not escalated
    "plain_priced",
    "cache_hits",  # calls answered from the cache
    "saved",  # what those answers cost when the model produced them (known ones, summed)
    "saved_priced",  # cache hits with a known saved cost
)

_SQL = (
    "SELECT feature, COUNT(*), "
    "SUM(CASE WHEN escalated = 1 THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN source = 'escalate' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN escalated = 1 THEN COALESCE(cost_pico, 0) ELSE 0 END), "
    "SUM(CASE WHEN escalated = 1 AND cost_pico IS NOT NULL THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN COALESCE(escalated, 0) = 0 THEN COALESCE(cost_pico, 0) ELSE 0 END), "
    "SUM(CASE WHEN COALESCE(escalated, 0) = 0 AND cost_pico IS NOT NULL THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN source = 'cache' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN source = 'cache' THEN COALESCE(saved_pico, 0) ELSE 0 END), "
    "SUM(CASE WHEN source = 'cache' AND saved_pico IS NOT NULL THEN 1 ELSE 0 END) "
    "FROM call_records"
)


def counts(store: Any, feature: str | None, since: float | None) -> dict[str, tuple[int, ...]]:
    """``feature -> COUNTS`` over the calls started from ``since``: in the database when the
    store is one of aiguard's SQL stores, else in Python from its ``call_records``."""
    run = getattr(store, "_run", None)
    mark = getattr(store, "_mark", None)
    if run is None or mark not in ("?", "%s"):
        return in_python(store.call_records(feature=feature, since=since))
    clauses: list[str] = []
    params: list[Any] = []
    if feature is not None:
        clauses.append(f"feature = {mark}")
        params.append(feature)
    if since is not None:
        clauses.append(f"started_at >= {mark}")
        params.append(since)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = run(f"{_SQL}{where} GROUP BY feature", tuple(params))
    return {r[0]: tuple(int(v or 0) for v in r[1:]) for r in rows}


def in_python(calls: Iterable[dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    """The reference: the same figures from call records (dicts)."""
    out: dict[str, list[int]] = {}
    for c in calls:
        t = out.setdefault(c["feature"], [0] * len(COUNTS))
        escalated = c.get("escalated") == 1
        cost = c.get("cost_pico")
        t[0] += 1
        if escalated:
            t[1] += 1
            t[3] += cost or 0
            t[4] += cost is not None
        else:
            t[5] += cost or 0
            t[6] += cost is not None
        if c.get("source") == "escalate":
            t[2] += 1
        if c.get("source") == "cache":
            saved = c.get("saved_pico")
            t[7] += 1
            t[8] += saved or 0
            t[9] += saved is not None
    return {name: tuple(t) for name, t in out.items()}


def fields(t: tuple[int, ...] | None) -> dict[str, Any]:
    """The FeatureFigures fields of one feature's counts. A cost per call is known only when
    every call of its side has a known cost (as the report's other cost figures)."""
    if t is None:
        return {}
    c = dict(zip(COUNTS, t, strict=True))
    n, esc, hits = c["calls"], c["escalated"], c["cache_hits"]
    plain = n - esc
    return {
        "escalated": esc,
        "escalate_served": c["escalate_served"],
        "escalation_rate": esc / n if n else None,
        "escalation_interval": _qm.wilson(esc, n),
        "cost_per_escalated_call": _per(c["esc_cost"], esc, c["esc_priced"]),
        "cost_per_unescalated_call": _per(c["plain_cost"], plain, c["plain_priced"]),
        "cache_hits": hits,
        "cache_hit_rate": hits / n if n else None,
        "saved_cost": to_decimal(c["saved"]) if hits and c["saved_priced"] == hits else None,
        "known_saved_cost": to_decimal(c["saved"]),
    }


def _per(cost: int, calls: int, priced: int) -> Decimal | None:
    return to_decimal(cost // calls) if calls and priced == calls else None


def lines(f: Any, currency: str) -> list[str]:
    """The report's lines for one feature's figures (none when no call was escalated or
    answered from the cache)."""
    out = []
    if f.escalated:
        lo, hi = f.escalation_interval
        out.append(
            f"escalated {f.escalated:,} of {f.calls:,} calls ({100 * f.escalation_rate:.1f}%, "
            f"95% CI {100 * lo:.1f} to {100 * hi:.1f}), {f.escalate_served:,} served by the "
            f"bigger model; cost per call escalated {_money(f.cost_per_escalated_call)}, not "
            f"escalated {_money(f.cost_per_unescalated_call)} {currency}"
        )
    if f.cache_hits:
        saved = (
            f"saved {amount(f.saved_cost)} {currency}"
            if f.saved_cost is not None
            else f"saved at least {amount(f.known_saved_cost)} {currency} (some hits' cost unknown)"
        )
        out.append(
            f"cache: {f.cache_hits:,} of {f.calls:,} calls answered from the cache "
            f"({100 * f.cache_hit_rate:.1f}%), {saved}"
        )
    return out


def _money(x: Decimal | None) -> str:
    return "unknown" if x is None else amount(x)
