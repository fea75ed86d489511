"""Redis for a fleet: kill switches and rollouts every replica reads, and shared budgets.

Install the extra (``pip install 'aiguard[redis]'``).

- :class:`RedisControl` is a control source: the control state is one JSON document at
  ``{prefix}:control``, polled every ``interval`` seconds (default 1 s) off the call path. The
  ``aiguard`` CLI edits it (``aiguard kill FEATURE --control redis://host:6379/0``) with an
  optimistic transaction, so edits from two operators do not overwrite each other.
- :class:`RedisBudgets` shares every :class:`aiguard.Budget` between replicas
  (``aiguard.configure(budgets=RedisBudgets("redis://..."))``). Per feature and window, Redis
  holds the fleet's spend (``{prefix}:budget:{feature}:{window}``) and the budget leased to
  replicas (``{prefix}:lease:{feature}:{window}``), integer pico-units expiring after two
  windows. A call reserves its worst-case cost from the lease its replica holds, with no network;
  when that lease is short, one Lua script takes more atomically (within ``call_timeout``): it
  grants a lease only while spend + leases is below the limit, so the fleet never spends past
  the limit by more than one call's reservation. A background thread every ``sync`` seconds
  (default 0.5 s) adds the replica's settled spend to Redis, gives back the lease no call
  holds, and reads back the fleet's figures.
- Redis unreachable: the last control state is kept; budgets go on with the last known fleet
  figures plus this replica's own spend (its local allowance) and catch up when Redis answers
  again; a warning is logged once and the failures are counted. No call fails because Redis is
  down, and a call waits for it at most ``call_timeout``, once: later calls do not try it until
  the background sync reaches Redis again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from ._checks import explain, seconds
from ._runtime import errors, lifecycle
from ._runtime.state import track
from .control import ControlState
from .exceptions import ConfigError

__all__ = ["RedisBudgets", "RedisControl", "edit_control"]


def _client(url: str, timeout: float) -> Any:
    try:
        import redis as redis_py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("Redis support needs redis-py: pip install 'aiguard[redis]'") from exc
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # no retries: ``timeout`` is the deadline of each operation, whatever fails
    return redis_py.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10,
        retry=Retry(NoBackoff(), 0),
    )


class RedisControl:
    """A control source kept in Redis: one JSON document, polled off the call path.

    Example:
        >>> from aiguard.redis import RedisControl
        >>> RedisControl("redis://127.0.0.1:6379/0").name
        "redis control 'redis://127.0.0.1:6379/0' (aiguard:control)"
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "aiguard",
        interval: float | timedelta = 1.0,
        timeout: float = 1.0,
    ) -> None:
        self.url = url
        self.key = f"{prefix}:control"
        self.interval = seconds("interval", interval)
        self.name = f"redis control {url!r} ({self.key})"
        self._redis = _client(url, timeout)
        self._last: bytes | None = b"\0"  # nothing read yet

    def close(self) -> None:
        """Release the Redis connections (aiguard calls this when the source is replaced)."""
        self._redis.close()

    def poll(self) -> ControlState | None:
        raw = self._redis.get(self.key)  # raises when Redis is unreachable: state kept
        if raw == self._last:
            return None
        state = _parse(raw, self.name)
        self._last = raw
        return state


def _parse(raw: bytes | None, where: str) -> ControlState:
    if raw is None:
        return ControlState()
    try:
        return ControlState.model_validate_json(raw)
    except Exception as exc:
        import pydantic

        if isinstance(exc, pydantic.ValidationError):
            raise ConfigError(explain(exc, where)) from None
        raise ConfigError(f"{where}: not a valid control document: {exc}") from None


def edit_control(
    url: str,
    change: Callable[[ControlState], ControlState],
    *,
    prefix: str = "aiguard",
    history: Callable[[ControlState, ControlState], Sequence[str]] | None = None,
    timeout: float = 5.0,
) -> ControlState:
    """Read, change and write the control document atomically (retried on a concurrent edit,
    for at most ``timeout`` seconds). ``history(old, new)`` gives the entries pushed to the
    list ``{prefix}:control:history`` in the same transaction (the latest 10,000 kept).

    Example:
        >>> from aiguard.redis import edit_control
        >>> callable(edit_control)
        True
    """
    import time

    import redis as redis_py

    client = _client(url, timeout)
    key = f"{prefix}:control"
    log = f"{prefix}:control:history"
    deadline = time.monotonic() + timeout
    with client, client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                current = _parse(pipe.get(key), f"redis control {url!r} ({key})")
                new = change(current)
                entries = list(history(current, new)) if history is not None else []
                pipe.multi()
                pipe.set(key, new.model_dump_json(exclude_defaults=True))
                if entries:
                    pipe.rpush(log, *entries)
                    pipe.ltrim(log, -HISTORY_LIMIT, -1)
                pipe.execute()
                return new
            except redis_py.WatchError:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"redis control {url!r} ({key}): changed by others throughout "
                        f"{timeout:g} s; try again"
                    ) from None
                continue


HISTORY_LIMIT = 10_000  # entries kept in {prefix}:control:history


_TAKE = """
local spent = redis.call('GET', KEYS[1]) or '0'
local leased = tonumber(redis.call('GET', KEYS[2]) or '0')
local committed = tonumber(spent) + leased
local limit = tonumber(ARGV[1])
local grant = '0'
if committed < limit then
  if committed + tonumber(ARGV[2]) <= limit then grant = ARGV[2] else grant = ARGV[3] end
  leased = redis.call('INCRBY', KEYS[2], grant)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return {grant, spent, leased}
"""
# Take a lease for one window, atomically: KEYS = (spend, leases); ARGV = (limit, wanted, needed,
# ttl). While spend + leases is below the limit, grant the wanted lease if it fits, else the
# needed one (one call's reservation at most: the only way past the limit, by less than it).
# Amounts reach INCRBY as the strings Python sent, never through Lua's floating point.


class RedisBudgets:
    """Shared budgets for every :class:`aiguard.Budget` of this process (see the module
    docstring): reservations come from leases of budget taken atomically from Redis.

    ``timeout`` bounds each Redis operation of the background sync, ``call_timeout`` the one a
    call makes when it needs a new lease (after one fails, calls use this process's own view
    until the sync reaches Redis again).

    Example:
        >>> from aiguard.redis import RedisBudgets
        >>> RedisBudgets("redis://127.0.0.1:6379/0", sync=0.25).sync
        0.25
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "aiguard",
        sync: float | timedelta = 0.5,
        timeout: float = 1.0,
        call_timeout: float = 0.1,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.sync = seconds("sync", sync)
        self.timeout = seconds("timeout", timeout)
        self.call_timeout = seconds("call_timeout", call_timeout)
        self._redis = _client(url, self.timeout)
        self._fast = _client(url, self.call_timeout)  # the call path's: a shorter deadline
        self._take = self._fast.register_script(_TAKE)
        self._runs: list[Any] = []
        self._lock = threading.Lock()
        self.failures = 0
        track(self)
        self._worker = f"aiguard-budgets[{id(self):x}]"
        lifecycle.add_worker(self._worker, self.flush, self.sync, final=self.flush)

    def _keys(self, run: Any, window: int) -> tuple[str, str]:
        return f"{run.shared_key}:{window}", f"{self.prefix}:lease:{run.feature}:{window}"

    def attach(self, run: Any, feature: str) -> None:
        """Share ``run`` (a feature's BudgetRun) through Redis."""
        with self._lock:
            run.shared_key = f"{self.prefix}:budget:{feature}"
            run.ledger = self
            self._runs.append(run)
        self.flush_one(run)

    def take(self, run: Any, window: int, need: int, pico: int) -> int | None:
        """A lease of at least ``need`` for ``run``'s ``window``, taken atomically from Redis
        (on the call path, within ``call_timeout``): what was granted (0: the budget is
        spent), or None when Redis did not answer."""
        # what the replica reserves in two sync intervals (8 calls at least), at most 1/16 of
        # the limit; the script grants just ``need`` when that does not fit
        pace = 2 * max(run.pace, run.recent)
        want = max(need, min(run.limit // 16, max(8 * pico, pace)))
        spend_key, lease_key = self._keys(run, window)
        try:
            grant, spent, leased = self._take(
                keys=[spend_key, lease_key],
                args=[run.limit, want, need, max(1, int(2 * run.seconds))],
                client=self._fast,
            )
        except Exception as exc:
            self._unreachable(exc)
            return None
        run.granted(window, int(grant), int(spent), int(leased))
        return int(grant)

    def flush(self) -> None:
        """Push this replica's spend, give back the leases no call holds, and read back the
        fleet's figures, now."""
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            self.flush_one(run)

    def flush_one(self, run: Any) -> None:
        window, used, lease, stale = run.take_sync()
        ttl = max(1, int(2 * run.seconds))
        try:
            pipe = self._redis.pipeline()  # MULTI/EXEC: one atomic step
            for old, old_used, old_lease in stale:  # what past windows still owe
                old_spend, old_leases = self._keys(run, old)
                pipe.incrby(old_spend, old_used)
                pipe.expire(old_spend, ttl)
                pipe.decrby(old_leases, old_lease)
                pipe.expire(old_leases, ttl)
            spend_key, lease_key = self._keys(run, window)
            pipe.incrby(spend_key, used)
            pipe.expire(spend_key, ttl)
            pipe.decrby(lease_key, lease)
            pipe.expire(lease_key, ttl)
            *_, spent, _, leased, _ = pipe.execute()
        except Exception as exc:
            run.give_back(window, used, lease, stale)  # counted locally until Redis answers
            self._unreachable(exc)
            return
        run.synced(window, int(spent), int(leased))

    def _unreachable(self, exc: BaseException) -> None:
        self.failures += 1
        errors.warn_once(
            f"redis-budgets:{self.url}",
            "aiguard: Redis at %s is unreachable (%s): budgets go on with this replica's "
            "own spend and the last known fleet figures",
            self.url,
            exc,
        )

    def close(self) -> None:
        """Stop syncing (after one last push of this replica's spend, its unused leases given
        back) and disconnect; the budgets go on counting in this process alone."""
        lifecycle.remove_worker(self._worker)
        self.flush()
        with self._lock:
            runs, self._runs = self._runs, []
        for run in runs:
            run.detach()
        self._redis.close()
        self._fast.close()
