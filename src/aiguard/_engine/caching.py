"""The result cache on the call path: the call's key, the lookup, the answer kept, and the
Outcome of a hit. The drivers call these; what is cached is decided here once for both."""

from __future__ import annotations

import inspect
import json
from time import perf_counter
from typing import Any

from .._runtime import errors, ids, serialize
from .._runtime.money import to_decimal
from .._runtime.records import Served
from .._runtime.state import runtime
from ..cache import MISS, Cache
from ..outcome import Outcome, Reason, Source
from . import finish

_ZERO = to_decimal(0)


class CacheRun:
    """One guard's cache: how its calls are keyed, and its entries under its feature."""

    __slots__ = ("cache", "feature", "key_fn", "shared", "signature", "skip_self")

    def __init__(self, cache: Cache, feature: str, signature: inspect.Signature | None) -> None:
        self.cache = cache
        self.feature = feature
        self.key_fn = cache.key
        self.shared = cache.redis_url is not None  # lookups and writes do network I/O
        self.signature = signature
        first = next(iter(signature.parameters), None) if signature is not None else None
        self.skip_self = first in ("self", "cls")

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The call's key, or MISS when none can be made (the call is neither looked up nor
        kept). Never raises."""
        try:
            if self.key_fn is not None:
                key = self.key_fn(*args, **kwargs)
            else:
                key = self._arguments(args, kwargs)
            hash(key)
            return key
        except TypeError:
            if self.key_fn is not None:
                errors.warn_once(
                    f"cache-key:{self.feature}",
                    "aiguard: %s: Cache(key=...) returned an unhashable key: calls are not cached",
                    self.feature,
                )
                return MISS
            try:  # unhashable arguments (a dict, a list): keyed by their JSON text
                text = json.dumps(serialize.jsonable(self._arguments(args, kwargs)), sort_keys=True)
            except Exception:
                return MISS
            return ("$json", text)
        except Exception as exc:
            errors.report(f"cache key of {self.feature!r}", exc)
            return MISS

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        sig = self.signature
        if sig is None:
            return (args, tuple(sorted(kwargs.items())))
        bound = sig.bind(*args, **kwargs)  # a misuse raises TypeError: not cached
        bound.apply_defaults()
        items = tuple(bound.arguments.items())
        return items[1:] if self.skip_self else items

    def lookup(self, key: Any) -> Any:
        """The entry for ``key``, else MISS."""
        if key is MISS:
            return MISS
        try:
            return self.cache.get(self.feature, key)
        except Exception as exc:
            errors.report(f"cache of {self.feature!r}", exc)
            return MISS

    def keep(self, key: Any, record: Any) -> None:
        """Keep the answer of a call the model served (a Served record); nothing else."""
        if key is MISS or record.__class__ is not Served:
            return
        try:
            self.cache.put(self.feature, key, (record.value, record.cost, record.confidence))
        except Exception as exc:
            errors.report(f"cache of {self.feature!r}", exc)


def hit(
    core: Any,
    s: Any,
    n: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    entry: Any,
    t0: float,
    arm: str | None,
    span: Any,
) -> Outcome[Any]:
    """Serve a cached answer: source ``cache``, reason ``served``, no cost (the model was not
    called), ``saved_cost`` what the answer cost when the model produced it."""
    value, saved, confidence = entry
    result: Outcome[Any] = Outcome(
        value=value,
        call_id=ids.call_id(n),
        feature=core.feature,
        source=Source.CACHE,
        reason=Reason.SERVED,
        confidence=confidence,
        threshold=s.threshold,
        latency=perf_counter() - t0,
        started_at=ids.wall_time(t0),
        arm=arm,
        rollout_percent=s.percent,
        cost=_ZERO,  # the model was not called
        saved_cost=None if saved is None else to_decimal(saved),
    )
    # not a model call: the breaker and the rollout gates do not count it
    finish.publish(core, result, span, count=False, model=None, call=(args, kwargs))
    return result


def clear_killed() -> None:
    """Clear the cache of every live guard whose feature is killed now (called whenever the
    control state changes). Never raises."""
    from .settings import effective

    for core in list(runtime.cores):
        run = core.cache
        if run is None:
            continue
        try:
            if effective(core.feature).kill is not None:
                run.cache.clear(core.feature)
        except Exception as exc:
            errors.report(f"cache of {core.feature!r}", exc)


runtime.on_change.append(clear_killed)
