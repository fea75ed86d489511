"""The process-wide configuration, in one locked object.

Guards compile their settings against ``state.generation``; every change bumps it, and a guard
whose compiled generation is older recompiles on its next call (one integer compare per call).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .exceptions import ConfigError

if TYPE_CHECKING:
    from .config import FeatureConfig
    from .outcome import Outcome
    from .store import Store

STORE_ENV = "AIGUARD_STORE"


class _Unset:
    """Type of :data:`UNSET`: "not given here, inherit the default"; distinct from ``None``."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()


class State:
    """Global switches. Read without the lock on the hot path; changed under it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.generation = 0
        self.store_spec: Any = UNSET  # a path, a Store, None (explicitly off) or UNSET (env)
        self._store: Store | None = None
        self._owned = False  # whether aiguard opened self._store (and so closes it)
        self.features: dict[str, FeatureConfig] = {}
        self.timeout_workers = 32
        self.prices: Any = None  # aiguard.PriceTable, or None: costs of model calls unknown
        self.budgets: Any = None  # a shared budget store (aiguard.redis.RedisBudgets), or None
        self.observers: tuple[Callable[[Outcome[Any]], None], ...] = ()
        self.cores: weakref.WeakSet[Any] = weakref.WeakSet()  # live guards, for validation
        # control state (aiguard.control): kills and rollouts said in this process, automatic
        # rollbacks (feature -> (from percent, to percent)), what each source says, pollers.
        self.kills: dict[str, Any] = {}
        self.rollouts: dict[str, float] = {}
        self.rollbacks: dict[str, tuple[float, float]] = {}
        self.controls: dict[str, Any] = {}
        self.pollers: list[Any] = []
        # call records (aiguard._records): on whenever a store is configured, unless turned off
        self.record_calls = True
        self.capture: Any = None  # a _records.Capture when inputs and outputs are kept
        self.recorder: Any = None
        # objects an aiguard.testing.isolated() block must hand back working: never closed
        # while the block runs (their ids)
        self.protected: frozenset[int] = frozenset()

    def closable(self, obj: Any) -> bool:
        """False for what an enclosing isolated() block will restore."""
        return obj is not None and id(obj) not in self.protected

    def bump(self) -> None:
        with self.lock:
            self.generation += 1

    def store(self) -> Store:
        """The configured store, opened on first use; ConfigError naming the fix if none."""
        store = self._store
        if store is not None:
            return store
        with self.lock:
            if self._store is None:
                self._store, self._owned = self._open()
            return self._store

    def _open(self) -> tuple[Store, bool]:
        from .store import open_store

        spec = self.store_spec
        if spec is UNSET:
            spec = os.environ.get(STORE_ENV) or None
        if spec is None:
            raise ConfigError(
                "no store is configured for aiguard's durable data (review queue): call "
                "aiguard.configure(store='aiguard.db') or set the environment variable "
                f"{STORE_ENV}=aiguard.db"
            )
        store = open_store(spec)
        return store, store is not spec

    def set_store(self, spec: Any, store: Store | None, owned: bool) -> None:
        """Install an already opened store (or none); close the previous one if aiguard owns it."""
        with self.lock:
            old, old_owned = self._store, self._owned
            self.store_spec, self._store, self._owned = spec, store, owned
            self.replace_recorder()
            if old is not None and old_owned and old is not store and self.closable(old):
                old.close()
            self.generation += 1

    def replace_recorder(self) -> None:
        """(Re)start call recording for the current store and settings. Call with the lock."""
        from ._records import Recorder, _recorders

        old = self.recorder
        self.recorder = None
        if old is not None and self.closable(old):
            old.close()  # writes what it has queued to the store it was made for
            if old in _recorders:
                _recorders.remove(old)
        if self.record_calls and self._store is not None:
            self.recorder = Recorder(self._store, self.capture)
            _recorders.append(self.recorder)

    def ensure_recorder(self) -> None:
        """Start recording if a store comes from the environment and none was started yet."""
        if self.recorder is not None or not self.record_calls or self._store is not None:
            return
        if self.store_spec is UNSET and os.environ.get(STORE_ENV):
            with self.lock:
                try:
                    self.store()
                except Exception:
                    return
                if self.recorder is None:
                    self.replace_recorder()

    _COPIED = ("features", "kills", "rollouts", "rollbacks", "controls", "pollers")

    def snapshot(self) -> dict[str, Any]:
        """The state to restore, and protection for what it holds until then."""
        with self.lock:
            snap = {k: v for k, v in vars(self).items() if k not in ("cores", "generation")}
            for k in self._COPIED:
                snap[k] = type(snap[k])(snap[k])
            held = [self._store, self.recorder, self.budgets, *self.pollers]
            self.protected = self.protected | {id(o) for o in held if o is not None}
            return snap

    def restore(self, snap: dict[str, Any]) -> None:
        with self.lock:
            if self.recorder is not None and self.recorder is not snap["recorder"]:
                from ._records import _recorders

                self.recorder.close()  # writes what it holds, before its store closes
                if self.recorder in _recorders:
                    _recorders.remove(self.recorder)
            current = self._store
            if current is not None and self._owned and current is not snap["_store"]:
                current.close()
            for poller in self.pollers:
                if poller not in snap["pollers"]:
                    poller.stop.set()
            if self.budgets is not None and self.budgets is not snap["budgets"]:
                self.budgets.close()
            vars(self).update(snap)
            from ._records import _recorders

            if self.recorder is not None and self.recorder not in _recorders:
                _recorders.append(self.recorder)
            self.generation += 1  # never back: guards compiled inside must recompile


state = State()
