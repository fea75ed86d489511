"""Redis for a fleet: kill switches and rollouts every replica reads, and shared budgets.

Install the extra (``pip install 'aiguard[redis]'``).

- :class:`RedisControl` is a control source: the control state is one JSON document at
  ``{prefix}:control``, polled every ``interval`` seconds (default 1 s) off the call path. The
  ``aiguard`` CLI edits it (``aiguard kill FEATURE --control redis://host:6379/0``) with an
  optimistic transaction, so edits from two operators do not overwrite each other.
- :class:`RedisBudgets` shares every :class:`aiguard.Budget`'s spend between replicas
  (``aiguard.configure(budgets=RedisBudgets("redis://..."))``). Spend is counted locally and
  added to Redis atomically (``INCRBY`` on integer pico-units, one key per feature and window,
  expiring after two windows) by a background thread every ``sync`` seconds (default 0.5 s), which
  also reads back the fleet's total. The check on the call path reads two integers, no network.
  Staleness: a replica sees the others' spend at most ``sync`` seconds late, so a fleet of N
  replicas can overshoot a budget by at most what N replicas spend in ``sync`` seconds.
- Redis unreachable: the last control state is kept; budgets go on with the last known fleet total
  plus this replica's own spend (its local allowance) and catch up when Redis answers again; a
  warning is logged once and the failures are counted. No call fails because Redis is down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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
    return redis_py.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=10
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
    url: str, change: Callable[[ControlState], ControlState], *, prefix: str = "aiguard"
) -> ControlState:
    """Read, change and write the control document atomically (retried on a concurrent edit).

    Example:
        >>> from aiguard.redis import edit_control
        >>> callable(edit_control)
        True
    """
    import redis as redis_py

    client = _client(url, 5.0)
    key = f"{prefix}:control"
    with client, client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                current = _parse(pipe.get(key), f"redis control {url!r} ({key})")
                new = change(current)
                pipe.multi()
                pipe.set(key, new.model_dump_json(exclude_defaults=True))
                pipe.execute()
                return new
            except redis_py.WatchError:
                continue


class RedisBudgets:
    """Shared spend for every budget of this process (see the module docstring).

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
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.sync = seconds("sync", sync)
        self._redis = _client(url, timeout)
        self._runs: list[Any] = []
        self._lock = threading.Lock()
        self.failures = 0
        track(self)
        self._worker = f"aiguard-budgets[{id(self):x}]"
        lifecycle.add_worker(self._worker, self.flush, self.sync, final=self.flush)

    def attach(self, run: Any, feature: str) -> None:
        """Share ``run`` (a feature's BudgetRun) through Redis."""
        with self._lock:
            run.shared_key = f"{self.prefix}:budget:{feature}"
            self._runs.append(run)
        self.flush_one(run)

    def flush(self) -> None:
        """Push this replica's spend and read back the fleet's totals, now."""
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            self.flush_one(run)

    def flush_one(self, run: Any) -> None:
        window, pending = run.take_pending()
        key = f"{run.shared_key}:{window}"
        try:
            pipe = self._redis.pipeline()
            pipe.incrby(key, pending)
            pipe.expire(key, max(1, int(2 * run.seconds)))
            total, _ = pipe.execute()
        except Exception as exc:
            run.give_back(window, pending)  # counted locally until Redis answers
            self.failures += 1
            errors.warn_once(
                f"redis-budgets:{self.url}",
                "aiguard: Redis at %s is unreachable (%s): budgets go on with this replica's "
                "own spend and the last known fleet total",
                self.url,
                exc,
            )
            return
        run.set_fleet(window, int(total))

    def close(self) -> None:
        """Stop syncing (after one last push of this replica's spend) and disconnect."""
        lifecycle.remove_worker(self._worker)
        self.flush()
        self._redis.close()
