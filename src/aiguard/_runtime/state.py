"""The one runtime: every piece of aiguard's process state, in one object.

``runtime`` holds the configuration, the control layers, the store and its recorder, every
background worker, the per-feature figures, the budgets' spend, the gates, the event history and
the internal error counters. Nothing else in aiguard keeps process state in a module global (the
call-id counter aside, which :mod:`._runtime.ids` re-seeds at fork).

Guards compile their settings against ``runtime.generation``; every change bumps it, and a guard
whose compiled generation is older recompiles on its next call (one integer compare per call).

Starting, stopping, fork and exit handling live in :mod:`._runtime.lifecycle`; this module only
holds the state and the fork-safe lock registry, so every other runtime module can import it.
"""

from __future__ import annotations

import collections
import threading
import weakref
from typing import Any

STORE_ENV = "AIGUARD_STORE"
EXIT_TIMEOUT = 5.0  # seconds the exit flush may take, by default


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

# -- fork safety -----------------------------------------------------------------------------------

_LOCK_TYPES = (
    type(threading.Lock()),
    type(threading.RLock()),
    threading.Event,
    threading.Condition,
)
_tracked: weakref.WeakSet[Any] = weakref.WeakSet()


def track(owner: Any) -> Any:
    """Register ``owner`` for fork safety: in a forked child, every lock, event or condition in
    its attributes is re-created (a lock a thread of the parent held would never be released),
    and its ``_after_fork()`` method, if it has one, is called. Returns ``owner``."""
    _tracked.add(owner)
    return owner


def _attributes(obj: Any) -> list[Any]:
    values = list(getattr(obj, "__dict__", {}).values())
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name != "__weakref__" and name != "__dict__":
                values.append(getattr(obj, name, None))
    return values


def before_fork() -> None:
    """In the parent, just before ``fork()``: owners whose state must be quiet at the fork (a
    store mid-transaction) get there (``_before_fork()``, which must not wait unboundedly)."""
    for owner in list(_tracked):
        hook = getattr(owner, "_before_fork", None)
        if hook is not None:
            hook()


def after_fork_in_parent() -> None:
    """In the parent, just after ``fork()``: what ``before_fork`` held is released."""
    for owner in list(_tracked):
        hook = getattr(owner, "_after_fork_in_parent", None)
        if hook is not None:
            hook()


def reinit_tracked() -> None:
    """In a forked child: fresh locks for every tracked owner, then their own fork hooks."""
    owners = list(_tracked)
    for owner in owners:
        for value in _attributes(owner):
            if isinstance(value, _LOCK_TYPES):
                value._at_fork_reinit()  # type: ignore[union-attr]
    for owner in owners:
        hook = getattr(owner, "_after_fork", None)
        if hook is not None:
            hook()


class Runtime:
    """All of aiguard's process state. Read without the lock on the hot path; changed under it.

    ``testing.isolated()`` saves every attribute and restores it (containers are copied on the
    way in, so what a block changes stays in the block); recorders, workers and stores started
    inside the block are stopped and closed when it ends (see ``lifecycle``).
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.generation = 0
        # configuration
        self.store_spec: Any = UNSET  # a path, a Store, None (explicitly off) or UNSET (env)
        self.store: Any = None  # the open store, or None
        self.store_owned = False  # whether aiguard opened it (and so closes it)
        self.store_error: Any = None  # why the last open failed, for the call path
        self.features: dict[str, Any] = {}  # feature -> FeatureConfig
        self.timeout_workers = 32
        self.exit_timeout = EXIT_TIMEOUT
        self.prices: Any = None  # aiguard.PriceTable, or None: costs of model calls unknown
        self.budget_store: Any = None  # a shared budget store (RedisBudgets), or None
        self.observers: tuple[Any, ...] = ()  # Outcome observers (testing.capture_outcomes)
        self.cores: weakref.WeakSet[Any] = weakref.WeakSet()  # live guards
        # control state: kills and rollouts said in this process, automatic rollbacks
        # (feature -> (from percent, to percent)), what each control source says
        self.kills: dict[str, Any] = {}
        self.rollouts: dict[str, float] = {}
        self.rollbacks: dict[str, tuple[float, float]] = {}
        self.controls: dict[str, Any] = {}
        self.control_interval = 1.0  # seconds between polls of sources made from paths, URLs
        # call records: on whenever a store is configured, unless turned off
        self.record_calls = True
        self.capture: Any = None  # a records.Capture when inputs and outputs are kept
        # configure(redact=...): applied to captured values, and to the free texts (exception
        # messages, feedback comments) before they go to telemetry; None: telemetry shows none
        self.redact: Any = None
        self.record_queue_bytes = 64 * 2**20  # byte budgets of the record queue and of the
        self.remembered_calls_bytes = 16 * 2**20  # calls remembered for feedback
        self.recorder: Any = None  # the recorder new calls go to
        self.recorders: list[Any] = []  # it, and replaced ones still writing what they hold
        self.retired_counts: collections.Counter[str] = collections.Counter()  # of those gone
        # per-feature state
        self.stats: dict[str, Any] = {}  # feature -> FeatureStats
        self.budgets: dict[str, tuple[Any, Any]] = {}  # feature -> (Budget, BudgetRun)
        self.gates: weakref.WeakSet[Any] = weakref.WeakSet()  # live GateRuns
        # background work: name -> Worker (records writer, control pollers, gate flusher,
        # budget sync); and the pool that runs sync calls under a timeout
        self.workers: dict[str, Any] = {}
        self.pool: Any = None
        # shadow candidates' pool and tasks (a shadowing.ShadowPool), created on first use
        self.shadow_pool: Any = None
        # OpenTelemetry: (provider, tracer) and (provider, instruments), per provider
        self.tracer: tuple[Any, Any] | None = None
        self.meters: tuple[Any, Any] | None = None
        # history and internal failures
        self.events: collections.deque[Any] = collections.deque(maxlen=1000)
        self.error_counts: collections.Counter[str] = collections.Counter()
        self.error_seen: set[Any] = set()
        # what an enclosing testing.isolated() block will restore: never closed inside it
        self.protected: frozenset[int] = frozenset()
        self.strict = False  # re-raise internal failures (aiguard.testing.strict())
        self.on_change: list[Any] = []  # called after each bump() (the result cache's kill)
        track(self)

    def closable(self, obj: Any) -> bool:
        """False for what an enclosing isolated() block will restore."""
        return obj is not None and id(obj) not in self.protected

    def bump(self) -> None:
        """The configuration or the control state changed: every guard recompiles on its next
        call, and the ``on_change`` hooks run now (a hook never raises)."""
        with self.lock:
            self.generation += 1
        for hook in self.on_change:
            hook()  # each catches its own failures


runtime = Runtime()
