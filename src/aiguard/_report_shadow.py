"""The report's shadow section: each feature's candidates against its current model, in SQL.

Separate from the main report statements (``_report_sql``): one grouped statement over the
window's ``shadow_calls`` joined to their call records (counts, agreement, paired costs, the
served answer's acceptance split by agreement, from the ``fb_decision`` the feedback triggers
keep), then the latency percentiles by nearest rank (``ORDER BY ... LIMIT 1 OFFSET rank - 1``,
on the ``(feature, started_at)`` index), for the candidate and for the current model on the same
calls. Identical on SQLite and PostgreSQL but for the parameter mark.
"""

from __future__ import annotations

import math
from typing import Any

from . import _quality_math as _qm
from ._report_data import DECISIONS
from ._sql import REPORT_TIMEOUT
from .pricing import to_decimal
from .shadow import ShadowFigures

QUANTILES = (0.5, 0.95)
_DECIDED = "(" + ", ".join(f"'{k}'" for k in DECISIONS) + ")"
_ACCEPTED = "('accepted', 'edited')"


def _window(mark: str, feature: str | None, since: float | None) -> tuple[str, list[Any]]:
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if feature is not None:
        where.append(f"s.feature = {mark}")
        params.append(feature)
    if since is not None:
        where.append(f"s.started_at >= {mark}")
        params.append(since)
    return " AND ".join(where), params


def _sums_statement(where: str) -> str:
    paired = "s.cost_pico IS NOT NULL AND c.cost_pico IS NOT NULL AND c.source = 'model'"

    def n(condition: str) -> str:
        return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"

    return (
        "SELECT s.feature, s.candidate, COUNT(*), "
        f"{n('s.error IS NOT NULL')}, {n('s.agreed IS NOT NULL')}, {n('s.agreed = 1')}, "
        f"{n(paired)}, SUM(CASE WHEN {paired} THEN s.cost_pico END), "
        f"SUM(CASE WHEN {paired} THEN c.cost_pico END), "
        f"{n(f's.agreed = 0 AND c.fb_decision IN {_DECIDED}')}, "
        f"{n(f's.agreed = 0 AND c.fb_decision IN {_ACCEPTED}')}, "
        f"{n(f's.agreed = 1 AND c.fb_decision IN {_DECIDED}')}, "
        f"{n(f's.agreed = 1 AND c.fb_decision IN {_ACCEPTED}')}, "
        f"{n('s.error IS NULL')}, {n('c.model_latency IS NOT NULL')} "
        "FROM shadow_calls s LEFT JOIN call_records c ON c.call_id = s.call_id "
        f"WHERE {where} GROUP BY s.feature, s.candidate ORDER BY s.feature, s.candidate"
    )


def _rank(q: float, n: int) -> int:
    return max(1, math.ceil(q * n))


def shadow_figures(
    store: Any, feature: str | None, since: float | None, timeout: float | None = None
) -> dict[str, list[ShadowFigures]]:
    """Each feature's shadow candidates over the window (from ``since``), by feature; empty for a
    store that keeps no shadow calls (one of your own)."""
    session = getattr(store, "_session", None)
    mark = getattr(store, "_mark", None)
    if session is None or mark is None or not hasattr(store, "add_shadow_calls"):
        return {}
    where, params = _window(mark, feature, since)
    out: dict[str, list[ShadowFigures]] = {}
    with session(REPORT_TIMEOUT if timeout is None else timeout) as run:
        rows = run(_sums_statement(where), tuple(params))
        for row in rows:
            name, candidate = row[0], row[1]
            (calls, errors, compared, agreed, pairs, cand_cost, model_cost, dis_n, dis_ok,
             agr_n, agr_ok, answered, timed) = (int(v or 0) for v in row[2:])  # fmt: skip
            mine = f"{where} AND s.feature = {mark} AND s.candidate = {mark}"
            args = (*params, name, candidate)
            cand = _percentiles(
                run,
                "SELECT s.latency FROM shadow_calls s "
                f"WHERE {mine} AND s.error IS NULL ORDER BY s.latency",
                args,
                answered,
            )
            model = _percentiles(
                run,
                "SELECT c.model_latency FROM shadow_calls s JOIN call_records c "
                f"ON c.call_id = s.call_id WHERE {mine} AND c.model_latency IS NOT NULL "
                "ORDER BY c.model_latency",
                args,
                timed,
            )
            out.setdefault(name, []).append(
                ShadowFigures(
                    feature=name,
                    candidate=candidate,
                    calls=calls,
                    errors=errors,
                    compared=compared,
                    agreed=agreed,
                    agreement_rate=agreed / compared if compared else None,
                    agreement_interval=_qm.wilson(agreed, compared),
                    candidate_p50_latency=cand[0],
                    candidate_p95_latency=cand[1],
                    model_p50_latency=model[0],
                    model_p95_latency=model[1],
                    cost_pairs=pairs,
                    candidate_cost_per_call=to_decimal(cand_cost // pairs) if pairs else None,
                    model_cost_per_call=to_decimal(model_cost // pairs) if pairs else None,
                    cost_ratio=cand_cost / model_cost if pairs and model_cost else None,
                    disagreed_decided=dis_n,
                    acceptance_when_disagreed=dis_ok / dis_n if dis_n else None,
                    acceptance_when_disagreed_interval=_qm.wilson(dis_ok, dis_n),
                    agreed_decided=agr_n,
                    acceptance_when_agreed=agr_ok / agr_n if agr_n else None,
                    acceptance_when_agreed_interval=_qm.wilson(agr_ok, agr_n),
                )
            )
    return out


def _percentiles(
    run: Any, statement: str, params: tuple[Any, ...], n: int
) -> tuple[float | None, ...]:
    """p50 and p95 (nearest rank) of the ordered values ``statement`` selects, ``n`` of them."""
    if not n:
        return (None,) * len(QUANTILES)
    found: list[float | None] = []
    for q in QUANTILES:
        rows = run(f"{statement} LIMIT 1 OFFSET {_rank(q, n) - 1}", params)
        found.append(float(rows[0][0]) if rows else None)
    return tuple(found)
