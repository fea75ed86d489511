"""Per-feature figures kept in memory (in the runtime): counts, latency percentiles, tokens, cost.

Updates are a few integer additions on a per-thread shard, with no lock; latencies go into a
histogram
(bounded memory: each doubling from 1 µs to ~1 hour split in 8 equal buckets, so a percentile is
at most 12.5 % above the true value).
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any

from .state import runtime, track

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
        self.pairs: dict[tuple[Any, Any], int] = {}  # (source, reason) -> calls
        self.hist = [0] * _BUCKETS
        # input, output, cache reads, reasoning, cache writes, of which 1-hour writes
        self.tokens = [0, 0, 0, 0, 0, 0]
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

    __slots__ = ("__weakref__", "_done", "_local", "_lock", "_shards", "feature", "slo")

    def __init__(self, feature: str) -> None:
        self.feature = feature
        self._lock = threading.Lock()
        self._local = threading.local()
        self._shards: list[_Shard] = []
        self._done = _Shard()  # the counts of threads that have ended
        self.slo: float | None = None
        track(self)

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
        source: Any,
        reason: Any,
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
            t[4] += usage.cache_write_tokens
            t[5] += usage.cache_write_1h_tokens
        if cost is None:
            sh.unknown_cost += 1
        else:
            sh.cost += cost
            sh.priced += 1
        slo = self.slo
        if slo is not None and latency > slo:
            sh.slo_breaches += 1

    def total(self) -> _Shard:
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


def percentile(t: _Shard, q: float) -> float | None:
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


def for_feature(feature: str) -> FeatureStats:
    """The live figures of ``feature`` (created on first use), kept in the runtime."""
    found = runtime.stats.get(feature)
    if found is None:
        with runtime.lock:
            found = runtime.stats.setdefault(feature, FeatureStats(feature))
    return found  # type: ignore[no-any-return]


def reset() -> None:
    """Forget every feature's figures (tests, and a forked child)."""
    with runtime.lock:
        for fs in runtime.stats.values():
            fs.reset()
