"""Per-feature figures kept in memory: counts, latency percentiles, tokens, cost.

Updates are a few integer additions on a per-thread shard, with no lock; latencies go into a
histogram
(bounded memory: each doubling from 1 µs to ~1 hour split in 8 equal buckets, so a percentile is
at most 12.5 % above the true value).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import weakref
from collections import Counter
from decimal import Decimal
from typing import Any

from ._state import state
from .outcome import Reason, Source
from .pricing import to_decimal

__all__ = ["Stats", "stats"]

_MIN = 1e-6
_BUCKETS = 8 * 32  # 1 µs * 2^32 ~ 71 minutes
_INV_MIN = 1 / _MIN
_frexp = math.frexp


def _bucket(seconds: float, _frexp: Any = math.frexp) -> int:
    """The histogram bucket of a latency: 8 buckets per doubling from 1 µs."""
    if seconds <= _MIN:
        return 0
    m, e = _frexp(seconds * _INV_MIN)  # seconds/1µs = m * 2**e, 0.5 <= m < 1
    i = (e - 1) * 8 + int((m - 0.5) * 16) + 1
    return i if i < _BUCKETS else _BUCKETS - 1


def _upper(i: int) -> float:
    """The upper bound of bucket ``i`` (the value a percentile in it reports)."""
    if i == 0:
        return _MIN
    octave, step = divmod(i - 1, 8)
    return _MIN * 2.0**octave * (1 + (step + 1) / 8)


@dataclasses.dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of one feature's figures since the process started (or ``reset``).

    Latencies are in seconds, for the whole guarded call. ``slo_met`` says whether the p95
    latency is within ``latency_slo`` (the guard's ``latency_slo=``); ``slo_breaches`` counts the
    calls over it.

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
    reasoning_tokens: int = 0
    cost: Decimal = Decimal(0)
    cost_per_call: Decimal | None = None
    unknown_cost_calls: int = 0
    currency: str = "USD"


class _Shard:
    """One thread's counts for one feature: updated by that thread alone, with no lock."""

    __slots__ = (
        "calls",
        "cost",
        "hist",
        "pairs",
        "priced",
        "slo_breaches",
        "thread",
        "tokens",
        "unknown_cost",
    )

    def __init__(self) -> None:
        self.thread = weakref.ref(threading.current_thread())
        self.clear()

    def clear(self) -> None:
        self.calls = 0
        self.pairs: dict[tuple[Source | None, Reason], int] = {}
        self.hist = [0] * _BUCKETS
        self.tokens = [0, 0, 0, 0]
        self.cost = 0
        self.priced = 0
        self.unknown_cost = 0
        self.slo_breaches = 0

    def fold(self, other: _Shard) -> None:
        self.calls += other.calls
        for k, v in list(other.pairs.items()):
            self.pairs[k] = self.pairs.get(k, 0) + v
        self.hist = [a + b for a, b in zip(self.hist, other.hist, strict=True)]
        self.tokens = [a + b for a, b in zip(self.tokens, other.tokens, strict=True)]
        self.cost += other.cost
        self.priced += other.priced
        self.unknown_cost += other.unknown_cost
        self.slo_breaches += other.slo_breaches


class FeatureStats:
    """The live figures behind :func:`stats` for one feature.

    Each thread counts into its own shard, so a call takes no lock; a snapshot adds the shards up
    (and folds the shards of threads that have ended into one, so memory stays bounded).
    """

    __slots__ = ("_done", "_local", "_lock", "_shards", "feature", "slo")

    def __init__(self, feature: str) -> None:
        self.feature = feature
        self._lock = threading.Lock()
        self._local = threading.local()
        self._shards: list[_Shard] = []
        self._done = _Shard()  # the counts of threads that have ended
        self.slo: float | None = None

    def _new_shard(self) -> _Shard:
        shard = _Shard()
        self._local.shard = shard
        with self._lock:
            self._shards.append(shard)
        return shard

    def reset(self) -> None:
        with self._lock:
            for shard in self._shards:
                shard.clear()
            self._done.clear()

    def record(
        self,
        source: Source | None,
        reason: Reason,
        latency: float,
        usage: Any,
        cost: int | None,
    ) -> None:
        try:
            sh = self._local.shard
        except AttributeError:
            sh = self._new_shard()
        sh.calls += 1
        key = (source, reason)
        pairs = sh.pairs
        pairs[key] = pairs.get(key, 0) + 1
        if latency <= _MIN:
            b = 0
        else:  # _bucket(), inlined: 8 buckets per doubling from 1 µs
            m, e = _frexp(latency * _INV_MIN)
            b = (e - 1) * 8 + int((m - 0.5) * 16) + 1
            if b >= _BUCKETS:
                b = _BUCKETS - 1
        sh.hist[b] += 1
        if usage is not None:
            t = sh.tokens
            t[0] += usage.input_tokens
            t[1] += usage.output_tokens
            t[2] += usage.cache_read_tokens
            t[3] += usage.reasoning_tokens
        if cost is None:
            sh.unknown_cost += 1
        else:
            sh.cost += cost
            sh.priced += 1
        slo = self.slo
        if slo is not None and latency > slo:
            sh.slo_breaches += 1

    def _total(self) -> _Shard:
        with self._lock:
            live = []
            for shard in self._shards:
                if shard.thread() is None:  # its thread has ended: fold it in for good
                    self._done.fold(shard)
                else:
                    live.append(shard)
            self._shards = live
            total = _Shard()
            total.fold(self._done)
            for shard in live:
                total.fold(shard)
            return total

    def snapshot(self, currency: str) -> Stats:
        t = self._total()
        by_source: Counter[str] = Counter()
        by_reason: Counter[str] = Counter()
        for (src, reason), n in t.pairs.items():
            by_source[src.value if src is not None else "none"] += n
            by_reason[reason.value] += n
        served = by_reason.get(Reason.SERVED.value, 0)
        p95 = _percentile(t, 0.95)
        return Stats(
            feature=self.feature,
            calls=t.calls,
            by_source=dict(by_source),
            by_reason=dict(by_reason),
            fallback_rate=(t.calls - served) / t.calls if t.calls else 0.0,
            latency_p50=_percentile(t, 0.50),
            latency_p95=p95,
            latency_p99=_percentile(t, 0.99),
            latency_slo=self.slo,
            slo_breaches=t.slo_breaches,
            slo_met=None if self.slo is None or p95 is None else p95 <= self.slo,
            input_tokens=t.tokens[0],
            output_tokens=t.tokens[1],
            cache_read_tokens=t.tokens[2],
            reasoning_tokens=t.tokens[3],
            cost=to_decimal(t.cost),
            cost_per_call=to_decimal(t.cost // t.priced) if t.priced else None,
            unknown_cost_calls=t.unknown_cost,
            currency=currency,
        )


def _percentile(t: _Shard, q: float) -> float | None:
    calls = sum(t.hist)
    if not calls:
        return None
    rank = max(1, math.ceil(q * calls))
    seen = 0
    for i, n in enumerate(t.hist):
        seen += n
        if seen >= rank:
            return _upper(i)
    return _upper(_BUCKETS - 1)


_lock = threading.Lock()
_features: dict[str, FeatureStats] = {}


def for_feature(feature: str) -> FeatureStats:
    found = _features.get(feature)
    if found is None:
        with _lock:
            found = _features.setdefault(feature, FeatureStats(feature))
    return found


def stats(feature: str) -> Stats:
    """A snapshot of a feature's figures in this process: calls by source and reason, fallback
    rate, latency p50/p95/p99 (seconds, whole guarded call), SLO breaches, tokens and cost.

    Example:
        >>> import aiguard
        >>> aiguard.stats("never-called").calls
        0
    """
    prices = state.prices
    return for_feature(feature).snapshot(prices.currency if prices is not None else "USD")


def reset() -> None:
    """Forget every feature's figures (tests)."""
    with _lock:
        for fs in _features.values():
            fs.reset()
