"""A sliding window of call results, bounded by count and by age, with O(1) updates."""

from __future__ import annotations

import collections
import threading
from time import monotonic

from .state import track


class Window:
    """The last ``size`` model calls no older than ``seconds``: counts per kind."""

    __slots__ = ("__weakref__", "_items", "counts", "lock", "seconds", "size")

    def __init__(self, size: int, seconds: float | None) -> None:
        self.size = size
        self.seconds = seconds
        self.lock = threading.Lock()
        self._items: collections.deque[tuple[float, tuple[int, int, int, int]]] = (
            collections.deque()
        )
        self.counts = [0, 0, 0, 0, 0]  # calls, errors, timeouts, low confidence, fallbacks
        track(self)

    def add_locked(self, flags: tuple[int, int, int, int], now: float | None = None) -> list[int]:
        """Add one call (the caller holds ``lock``); returns the live counts."""
        if now is None:
            now = monotonic() if self.seconds is not None else 0.0
        items, c = self._items, self.counts
        items.append((now, flags))
        c[0] += 1
        c[1] += flags[0]
        c[2] += flags[1]
        c[3] += flags[2]
        c[4] += flags[3]
        if len(items) > self.size:
            self._drop()
        if self.seconds is not None:
            self._expire(now)
        return self.counts

    def _drop(self) -> None:
        _, f = self._items.popleft()
        c = self.counts
        c[0] -= 1
        c[1] -= f[0]
        c[2] -= f[1]
        c[3] -= f[2]
        c[4] -= f[3]

    def _expire(self, now: float) -> None:
        if self.seconds is None:
            return
        limit = now - self.seconds
        items = self._items
        while items and items[0][0] < limit:
            self._drop()

    def clear(self) -> None:
        with self.lock:
            self._items.clear()
            self.counts = [0, 0, 0, 0, 0]
