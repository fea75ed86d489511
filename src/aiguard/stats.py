"""Per-feature figures of this process: :func:`stats` and its :class:`Stats` snapshot."""

from __future__ import annotations

import dataclasses
from collections import Counter
from decimal import Decimal

from ._runtime.money import to_decimal
from ._runtime.state import runtime
from ._runtime.stats import FeatureStats, for_feature, percentile
from .outcome import Reason

__all__ = ["Stats", "stats"]


@dataclasses.dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of one feature's figures since the process started (or ``reset``).

    Latencies are in seconds, for the whole guarded call. ``slo_met`` says whether the p95
    latency is within ``latency_slo`` (the guard's ``latency_slo=``); ``slo_breaches`` counts the
    calls over it. Token totals add up the calls' :class:`aiguard.Usage`: ``cache_read_tokens``
    and ``cache_write_tokens`` are parts of ``input_tokens``, ``cache_write_1h_tokens`` a part of
    ``cache_write_tokens``.

    Example:
        >>> import aiguard
        >>> @aiguard.guard("stats-demo")
        ... def f() -> int:
        ...     return 1
        >>> _ = [f() for _ in range(3)]
        >>> s = aiguard.stats("stats-demo")
        >>> s.calls, s.by_source["model"], s.fallback_rate
        (3, 3, 0.0)
    """

    feature: str
    calls: int = 0
    by_source: dict[str, int] = dataclasses.field(default_factory=dict)
    by_reason: dict[str, int] = dataclasses.field(default_factory=dict)
    fallback_rate: float = 0.0
    latency_p50: float | None = None
    latency_p95: float | None = None
    latency_p99: float | None = None
    latency_slo: float | None = None
    slo_breaches: int = 0
    slo_met: bool | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = Decimal(0)
    cost_per_call: Decimal | None = None
    unknown_cost_calls: int = 0
    currency: str = "USD"


def _snapshot(fs: FeatureStats, currency: str) -> Stats:
    t = fs.total()
    by_source: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    for (src, reason), n in t.pairs.items():
        by_source[src.value if src is not None else "none"] += n
        by_reason[reason.value] += n
    served = by_reason.get(Reason.SERVED.value, 0)
    p95 = percentile(t, 0.95)
    return Stats(
        feature=fs.feature,
        calls=t.calls,
        by_source=dict(by_source),
        by_reason=dict(by_reason),
        fallback_rate=(t.calls - served) / t.calls if t.calls else 0.0,
        latency_p50=percentile(t, 0.50),
        latency_p95=p95,
        latency_p99=percentile(t, 0.99),
        latency_slo=fs.slo,
        slo_breaches=t.slo_breaches,
        slo_met=None if fs.slo is None or p95 is None else p95 <= fs.slo,
        input_tokens=t.tokens[0],
        output_tokens=t.tokens[1],
        cache_read_tokens=t.tokens[2],
        cache_write_tokens=t.tokens[4],
        cache_write_1h_tokens=t.tokens[5],
        reasoning_tokens=t.tokens[3],
        cost=to_decimal(t.cost),
        cost_per_call=to_decimal(t.cost // t.priced) if t.priced else None,
        unknown_cost_calls=t.unknown_cost,
        currency=currency,
    )


def stats(feature: str) -> Stats:
    """A snapshot of a feature's figures in this process: calls by source and reason, fallback
    rate, latency p50/p95/p99 (seconds, whole guarded call), SLO breaches, tokens and cost.

    Example:
        >>> import aiguard
        >>> aiguard.stats("never-called").calls
        0
    """
    prices = runtime.prices
    return _snapshot(for_feature(feature), prices.currency if prices is not None else "USD")
