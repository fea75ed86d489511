"""The result cache: a repeated call served from the answer the model already gave (and was
paid for).

``guard(..., cache=aiguard.Cache(ttl=..., maxsize=..., key=...))``: before the model is called
(after the kill switch, the rollout and the budget let it be), the call's key is looked up; a
hit is served with source ``cache``, costs nothing, and its record keeps what the cached answer
cost (``saved_pico``, :attr:`aiguard.Outcome.saved_cost`). Only answers the model served are
cached: never a fallback's, a low-confidence or invalid one, an error.

The local cache is a ``cachetools.TTLCache`` per feature (an ``LRUCache`` when ``ttl`` is None)
behind a lock; ``redis=`` adds a cache shared by a fleet, which every process reads on a local
miss and writes with each answer. Each Redis operation has a deadline (``timeout``); one that
fails is a miss (logged once, counted) and Redis is left alone for ``retry_after`` seconds, so a
call never waits for a Redis that is down more than once in that time.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ._checks import named, seconds
from ._runtime import errors, serialize
from .exceptions import ConfigError

__all__ = ["Cache"]

MISS: Any = object()
"""What a lookup returns when the key has no entry."""

Entry = tuple[Any, int | None, float | None]  # value, its cost in pico-units, its confidence

# One Lua script per operation: the feature's version and the entry in one round trip.
_GET = """
local v = redis.call('GET', KEYS[1]) or '0'
return redis.call('GET', KEYS[2] .. v .. ':' .. ARGV[1])
"""
_SET = """
local v = redis.call('GET', KEYS[1]) or '0'
redis.call('SET', KEYS[2] .. v .. ':' .. ARGV[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


class Cache:
    """Serve a repeated call from the answer the model gave to an earlier call with the same
    key.

    Args:
        ttl: how long an answer is kept, in seconds or a timedelta (``None``: until evicted).
        maxsize: how many answers the local cache keeps per feature (the least recently used
            goes first).
        key: a callable taking the call's arguments (as the guarded function does) and
            returning the key (hashable; JSON-able too with ``redis=``). Default: the call's
            arguments by parameter name, defaults applied (a method's ``self``/``cls`` left
            out: give ``key=`` when the instance matters). A key that cannot be made (the
            callable raised, an unhashable argument) means the call is neither looked up nor
            stored.
        redis: a Redis URL for a cache shared by a fleet (``pip install 'aiguard[redis]'``):
            entries at ``{prefix}:cache:{feature}:{version}:{hash of the key}``, expiring
            after ``ttl``.
        prefix: the Redis key prefix.
        timeout: the deadline of each Redis operation, in seconds (default 0.05).
        retry_after: seconds Redis is left alone after it failed (default 5).
        dumps, loads: how an answer is stored in Redis as text and read back. Default: JSON,
            for answers that JSON gives back unchanged (dicts, lists, strings, numbers); an
            answer that would come back different (a dataclass, a pydantic model) is kept
            locally only (logged once): give ``dumps``/``loads`` for it (e.g.
            ``Model.model_dump_json`` and ``Model.model_validate_json``).

    Concurrent calls with the same key that miss all call the model (no single flight): a
    caller never waits for another caller's model call, its deadline and failures stay its own.
    A kill of the feature clears its entries: the local ones at once, the Redis ones by moving
    the feature's version on (the old entries expire with their TTL).

    Example:
        >>> import aiguard
        >>> calls = []
        >>> @aiguard.guard("faq", cache=aiguard.Cache(ttl=60, maxsize=100))
        ... def answer(question: str) -> str:
        ...     calls.append(question)
        ...     return question.upper()
        >>> answer("hours?"), answer("hours?"), len(calls)
        ('HOURS?', 'HOURS?', 1)
        >>> answer.outcome("hours?").source
        <Source.CACHE: 'cache'>
    """

    def __init__(
        self,
        *,
        ttl: float | timedelta | None = 300.0,
        maxsize: int = 1024,
        key: Callable[..., Any] | None = None,
        redis: str | None = None,
        prefix: str = "aiguard",
        timeout: float | timedelta = 0.05,
        retry_after: float | timedelta = 5.0,
        dumps: Callable[[Any], str | bytes] | None = None,
        loads: Callable[[str | bytes], Any] | None = None,
    ) -> None:
        self.ttl = None if ttl is None else _positive("ttl", ttl)
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ConfigError(
                f"Cache({named('maxsize', maxsize)}) is invalid: give a whole number of 1 or more"
            )
        self.maxsize = maxsize
        for name, fn in (("key", key), ("dumps", dumps), ("loads", loads)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"Cache({named(name, fn)}) is invalid: give a callable")
        if (dumps is None) != (loads is None):
            raise ConfigError("Cache(dumps=..., loads=...): give both, or neither")
        if redis is not None and (not isinstance(redis, str) or not redis.strip()):
            raise ConfigError(f"Cache({named('redis', redis)}) is invalid: give a Redis URL")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError(f"Cache({named('prefix', prefix)}) is invalid: give a key prefix")
        self.key = key
        self.redis_url = redis
        self.prefix = prefix
        self.timeout = _positive("timeout", timeout)
        self.retry_after = seconds("Cache(retry_after)", retry_after)
        self.dumps = dumps
        self.loads = loads
        self._lock = threading.Lock()
        self._local: dict[str, Any] = {}  # feature -> its cachetools cache
        self._redis: Any = None  # the client, made at the first use
        self._down_until = 0.0  # time.monotonic() before which Redis is not tried
        self.hits = 0
        self.misses = 0

    # -- local ------------------------------------------------------------------------------

    def _cache_of(self, feature: str) -> Any:
        found = self._local.get(feature)
        if found is None:
            import cachetools  # only when a cache is used

            found = (
                cachetools.LRUCache(self.maxsize)
                if self.ttl is None
                else cachetools.TTLCache(self.maxsize, self.ttl, timer=time.monotonic)
            )
            self._local[feature] = found
        return found

    def get(self, feature: str, key: Any) -> Any:
        """The entry ``(value, cost in pico-units, confidence)`` for ``key``, else MISS: the
        local cache first, then Redis (an entry found there is kept locally too). Never
        raises."""
        with self._lock:
            entry = self._cache_of(feature).get(key, MISS)
        if entry is MISS and self.redis_url is not None:
            entry = self._redis_get(feature, key)
            if entry is not MISS:
                with self._lock:
                    self._cache_of(feature)[key] = entry
        with self._lock:  # the counts are figures, not a hot-path race
            if entry is MISS:
                self.misses += 1
            else:
                self.hits += 1
        return entry

    def put(self, feature: str, key: Any, entry: Entry) -> None:
        """Keep an answer the model served (locally, and in Redis if configured). Never
        raises."""
        with self._lock:
            self._cache_of(feature)[key] = entry
        if self.redis_url is not None:
            self._redis_set(feature, key, entry)

    def clear(self, feature: str) -> None:
        """Forget every answer of ``feature``: at once here, and in Redis by moving the
        feature's version on. Never raises.

        Example:
            >>> import aiguard
            >>> cache = aiguard.Cache()
            >>> cache.put("faq", ("hours?",), ("9-5", None, None))
            >>> cache.clear("faq")
            >>> cache.get("faq", ("hours?",)) is aiguard.cache.MISS
            True
        """
        with self._lock:
            local = self._local.get(feature)
            if local is not None:
                local.clear()
        if self.redis_url is not None:
            self._redis_call(lambda r: r.incr(self._version_key(feature)), "clear")

    # -- Redis -------------------------------------------------------------------------------

    def _version_key(self, feature: str) -> str:
        return f"{self.prefix}:cache:{feature}:version"

    def _entry_base(self, feature: str) -> str:
        return f"{self.prefix}:cache:{feature}:"

    def _client(self) -> Any:
        if self._redis is None:
            from .redis import _client

            self._redis = _client(self.redis_url or "", self.timeout)
        return self._redis

    def _redis_call(self, op: Callable[[Any], Any], what: str) -> Any:
        """One Redis operation within its deadline; MISS when Redis failed or is resting."""
        if time.monotonic() < self._down_until:
            return MISS
        try:
            return op(self._client())
        except Exception as exc:
            self._down_until = time.monotonic() + self.retry_after
            errors.count("redis cache")
            errors.warn_once(
                f"redis-cache:{self.redis_url}",
                "aiguard: the Redis cache %s failed (%s: %s): calls are served as cache misses, "
                "and Redis is tried again in %g s (logged once, counted)",
                self.redis_url,
                type(exc).__name__,
                exc,
                self.retry_after,
            )
            return MISS

    def _redis_get(self, feature: str, key: Any) -> Any:
        digest = _digest(key)
        if digest is None:
            return MISS
        keys = [self._version_key(feature), self._entry_base(feature)]
        raw = self._redis_call(lambda r: r.eval(_GET, 2, *keys, digest), "get")
        if raw is MISS or raw is None:
            return MISS
        try:
            stored = json.loads(raw)
            value = stored["v"] if self.loads is None else self.loads(stored["v"])
            return (value, stored["c"], stored["p"])
        except Exception as exc:
            errors.report("redis cache entry", exc)
            return MISS

    def _redis_set(self, feature: str, key: Any, entry: Entry) -> None:
        digest = _digest(key)
        if digest is None:
            return
        value, cost, confidence = entry
        try:
            if self.dumps is None:
                text = json.dumps(serialize.jsonable(value), ensure_ascii=False)
                if json.loads(text) != value or _shape(json.loads(text)) != _shape(value):
                    errors.warn_once(
                        f"redis-cache-shape:{feature}",
                        "aiguard: %s: a %s answer does not come back from JSON as it was: it is "
                        "cached locally only (give Cache(dumps=..., loads=...) to share it)",
                        feature,
                        type(value).__name__,
                    )
                    return
                stored: Any = json.loads(text)
            else:
                dumped = self.dumps(value)
                stored = dumped.decode() if isinstance(dumped, bytes) else dumped
            payload = json.dumps({"v": stored, "c": cost, "p": confidence}, ensure_ascii=False)
        except Exception as exc:
            errors.report("redis cache entry", exc)
            return
        ttl_ms = int((self.ttl if self.ttl is not None else 30 * 86400) * 1000)
        keys = [self._version_key(feature), self._entry_base(feature)]
        self._redis_call(lambda r: r.eval(_SET, 2, *keys, digest, payload, max(1, ttl_ms)), "set")

    def close(self) -> None:
        """Release the Redis connections, if any."""
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def __repr__(self) -> str:
        shared = "" if self.redis_url is None else f", redis={self.redis_url!r}"
        return f"Cache(ttl={self.ttl!r}, maxsize={self.maxsize}{shared})"


def _positive(name: str, value: Any) -> float:
    """A duration above 0 (seconds or a timedelta); ConfigError naming it and the value."""
    return seconds(f"Cache({name})", value)


def _digest(key: Any) -> str | None:
    """The Redis name of a key: a hash of its JSON text; None when it has none."""
    try:
        text = json.dumps(serialize.jsonable(key), sort_keys=True, ensure_ascii=False)
    except Exception:
        return None
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def _shape(value: Any) -> Any:
    """The types of a JSON value, all the way down (1 and 1.0, True and 1 compare equal)."""
    if isinstance(value, dict):
        return ("d", tuple((k, _shape(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("l", tuple(_shape(v) for v in value))
    return type(value)
