"""Deterministic bucketing: where a key falls in [0, 1), by the algorithm of a flag system.

``position(key)`` is a pure function of (algorithm, feature, salt, key), so every replica puts a
key in the same place with no coordination, and a unit is inside a rollout of ``percent`` iff
``position < percent / 100``. The position never depends on the percentage: raising it never moves
a unit out; lowering it moves out only units above the new line.

- ``launchdarkly`` (default): SHA-1 of ``"{feature}.{salt}.{key}"``, the first 15 hex digits as an
  integer divided by 0xFFFFFFFFFFFFFFF; salt defaults to the feature name. Granularity ~1e-18.
- ``unleash``: Unleash's gradual rollout: MurmurHash3 x86_32 (seed 0) of ``"{group_id}:{key}"``,
  ``hash % 100 + 1`` = n, inside iff n <= percent; here position = (n - 1) / 100. Whole percents.
- ``growthbook``: GrowthBook hash version 2: FNV-1a 32 of ``str(fnv(seed + key))`` mod 10000 over
  10000, inside iff n < coverage; seed defaults to the feature name. FNV runs over UTF-16 code
  units for non-ASCII text, as GrowthBook's SDKs do. Granularity 0.01%.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable

__all__ = ["Bucketing", "fnv1a32", "murmur3_32", "positioner"]

_LONG_SCALE = float(0xFFFFFFFFFFFFFFF)


class Bucketing(enum.StrEnum):
    """Which flag system's bucketing a rollout follows, so the same users are in both.

    Example:
        >>> import aiguard
        >>> aiguard.Bucketing("growthbook") is aiguard.Bucketing.GROWTHBOOK
        True
    """

    LAUNCHDARKLY = "launchdarkly"
    UNLEASH = "unleash"
    GROWTHBOOK = "growthbook"


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32 of ``data``, unsigned."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & 0xFFFFFFFF
    n = len(data)
    end = n & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * c1) & 0xFFFFFFFF
        k = ((k << 15) | (k >> 17)) & 0xFFFFFFFF
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
        h = ((h << 13) | (h >> 19)) & 0xFFFFFFFF
        h = (h * 5 + 0xE6546B64) & 0xFFFFFFFF
    k = 0
    tail = n & 3
    if tail == 3:
        k ^= data[end + 2] << 16
    if tail >= 2:
        k ^= data[end + 1] << 8
    if tail >= 1:
        k ^= data[end]
        k = (k * c1) & 0xFFFFFFFF
        k = ((k << 15) | (k >> 17)) & 0xFFFFFFFF
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def fnv1a32(text: str) -> int:
    """FNV-1a 32 over the text's bytes (ASCII) or UTF-16 code units (otherwise)."""
    h = 0x811C9DC5
    if text.isascii():
        for b in text.encode():
            h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    else:
        data = text.encode("utf-16-le", "surrogatepass")
        for i in range(0, len(data), 2):
            h = ((h ^ (data[i] | (data[i + 1] << 8))) * 0x01000193) & 0xFFFFFFFF
    return h


def positioner(algorithm: Bucketing, feature: str, salt: str) -> Callable[[str], float]:
    """A function from a key to its position in [0, 1) for this feature and salt."""
    if algorithm is Bucketing.LAUNCHDARKLY:
        prefix = f"{feature}.{salt}.".encode()

        def launchdarkly(key: str) -> float:
            digest = hashlib.sha1(prefix + key.encode()).hexdigest()
            return int(digest[:15], 16) / _LONG_SCALE

        return launchdarkly
    if algorithm is Bucketing.UNLEASH:
        group = f"{salt}:"

        def unleash(key: str) -> float:
            return (murmur3_32((group + key).encode()) % 100) / 100

        return unleash

    def growthbook(key: str) -> float:
        return (fnv1a32(str(fnv1a32(salt + key))) % 10000) / 10000

    return growthbook
