"""aiguard: guard the functions that call your models.

Example:
    >>> import aiguard
    >>> @aiguard.guard("ticket-triage", confidence="score", threshold=0.8,
    ...                fallback=aiguard.Default({"label": "other", "score": 1.0}))
    ... def triage(ticket: str) -> dict[str, object]:
    ...     return {"label": "bug", "score": 0.6}
    >>> triage("it crashed")
    {'label': 'other', 'score': 1.0}
    >>> aiguard.last_outcome().reason
    <Reason.LOW_CONFIDENCE: 'low_confidence'>
"""

from __future__ import annotations

import importlib as _importlib
import sys as _sys
import types as _types
from typing import TYPE_CHECKING
from typing import Any as _Any

from ._version import __version__

if TYPE_CHECKING:
    from ._bucketing import Bucketing
    from ._engine.finish import last_outcome
    from .breaker import Breaker, BreakerState
    from .budget import Budget, BudgetFigures, budget_figures
    from .cache import Cache
    from .canvas import AdoptionWeek, Canvas
    from .card import SystemCard, card
    from .check import CheckResult, TargetResult, check
    from .config import AiguardConfig, FeatureConfig, configure, load_config
    from .control import (
        ControlFile,
        ControlSource,
        ControlState,
        FeatureControl,
        kill,
        kill_all,
        revive,
        revive_all,
        set_rollout,
    )
    from .events import ControlEvent, EventKind, recent_events
    from .exceptions import (
        AiguardError,
        ConfigError,
        EscalationRejected,
        ModelTimeout,
        NotServed,
        ReviewError,
        ReviewPending,
        StoreError,
        StreamInterrupted,
        UnknownCall,
    )
    from .fallbacks import Default, Escalate, Fallback, FallbackContext, HumanReview, Rules
    from .feedback import Feedback, FeedbackKind, afeedback, edit_distance, feedback
    from .guard import AsyncGuarded, Guarded, guard
    from .limits import Limits
    from .outcome import Attempt, Outcome, Reason, Source
    from .pricing import ModelPrice, PriceTable
    from .quality import (
        AuditBand,
        AuditFigures,
        Calibration,
        Drift,
        ReliabilityBin,
        audit_figures,
        calibration,
        drift,
        save_baseline,
    )
    from .records import flush
    from .report import FeatureFigures, Report, SegmentGap, parse_since, report, wilson
    from .retry import Retry
    from .review import ReviewQueue
    from .rollout import Rollout
    from .shadow import ShadowFigures
    from .stats import Stats, stats
    from .store import ReviewItem, SQLiteStore, Store, open_store
    from .targets import Target
    from .tuning import ThresholdRow, Tuning, tune
    from .usage import Usage, read_usage

_FROM: dict[str, tuple[str, ...]] = {
    "._bucketing": ("Bucketing",),
    "._engine.finish": ("last_outcome",),
    ".breaker": ("Breaker", "BreakerState"),
    ".budget": ("Budget", "BudgetFigures", "budget_figures"),
    ".cache": ("Cache",),
    ".canvas": ("AdoptionWeek", "Canvas"),
    ".card": ("SystemCard", "card"),
    ".check": ("CheckResult", "TargetResult", "check"),
    ".config": ("AiguardConfig", "FeatureConfig", "configure", "load_config"),
    ".control": (
        "ControlFile",
        "ControlSource",
        "ControlState",
        "FeatureControl",
        "kill",
        "kill_all",
        "revive",
        "revive_all",
        "set_rollout",
    ),
    ".events": ("ControlEvent", "EventKind", "recent_events"),
    ".exceptions": (
        "AiguardError",
        "ConfigError",
        "EscalationRejected",
        "ModelTimeout",
        "NotServed",
        "ReviewError",
        "ReviewPending",
        "StoreError",
        "StreamInterrupted",
        "UnknownCall",
    ),
    ".fallbacks": ("Default", "Escalate", "Fallback", "FallbackContext", "HumanReview", "Rules"),
    ".feedback": ("Feedback", "FeedbackKind", "afeedback", "edit_distance", "feedback"),
    ".guard": ("AsyncGuarded", "Guarded", "guard"),
    ".limits": ("Limits",),
    ".outcome": ("Attempt", "Outcome", "Reason", "Source"),
    ".pricing": ("ModelPrice", "PriceTable"),
    ".quality": (
        "AuditBand",
        "AuditFigures",
        "Calibration",
        "Drift",
        "ReliabilityBin",
        "audit_figures",
        "calibration",
        "drift",
        "save_baseline",
    ),
    ".records": ("flush",),
    ".report": ("FeatureFigures", "Report", "SegmentGap", "parse_since", "report", "wilson"),
    ".retry": ("Retry",),
    ".review": ("ReviewQueue",),
    ".rollout": ("Rollout",),
    ".shadow": ("ShadowFigures",),
    ".stats": ("Stats", "stats"),
    ".store": ("ReviewItem", "SQLiteStore", "Store", "open_store"),
    ".targets": ("Target",),
    ".tuning": ("ThresholdRow", "Tuning", "tune"),
    ".usage": ("Usage", "read_usage"),
}
"""The public names, by the module that defines them: each module is imported the first time
one of its names is used, so ``import aiguard`` loads none of pydantic, the stores, the report
or the command line (see the performance page)."""

_WHERE = {name: module for module, names in _FROM.items() for name in names}
_SUBMODULES = frozenset(
    (
        "breaker",
        "budget",
        "cache",
        "canvas",
        "card",
        "check",
        "cli",
        "config",
        "control",
        "events",
        "exceptions",
        "export",
        "fallbacks",
        "feedback",
        "guard",
        "limits",
        "openfeature",
        "outcome",
        "postgres",
        "pricing",
        "quality",
        "records",
        "redis",
        "report",
        "retry",
        "review",
        "rollout",
        "shadow",
        "stats",
        "store",
        "targets",
        "testing",
        "tuning",
        "usage",
    )
)
"""The public submodules, also reachable as attributes (``aiguard.records.counts()``)."""


def __getattr__(name: str) -> _Any:
    module = _WHERE.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(module, __name__), name)
    elif name in _SUBMODULES:
        value = _importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBMODULES})


class _Package(_types.ModuleType):
    """The package's module: when a submodule whose name is also a public name of it (``guard``,
    ``report``, ``check``, ``feedback``...) is imported, Python sets the package's attribute to
    the submodule; the public name keeps its meaning instead."""

    def __setattr__(self, name: str, value: _Any) -> None:
        if isinstance(value, _types.ModuleType) and _WHERE.get(name) == f".{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
del TYPE_CHECKING, annotations  # names of this module's own code, not aiguard's

__all__ = [
    "AdoptionWeek",
    "AiguardConfig",
    "AiguardError",
    "AsyncGuarded",
    "Attempt",
    "AuditBand",
    "AuditFigures",
    "Breaker",
    "BreakerState",
    "Bucketing",
    "Budget",
    "BudgetFigures",
    "Cache",
    "Calibration",
    "Canvas",
    "CheckResult",
    "ConfigError",
    "ControlEvent",
    "ControlFile",
    "ControlSource",
    "ControlState",
    "Default",
    "Drift",
    "Escalate",
    "EscalationRejected",
    "EventKind",
    "Fallback",
    "FallbackContext",
    "FeatureConfig",
    "FeatureControl",
    "FeatureFigures",
    "Feedback",
    "FeedbackKind",
    "Guarded",
    "HumanReview",
    "Limits",
    "ModelPrice",
    "ModelTimeout",
    "NotServed",
    "Outcome",
    "PriceTable",
    "Reason",
    "ReliabilityBin",
    "Report",
    "Retry",
    "ReviewError",
    "ReviewItem",
    "ReviewPending",
    "ReviewQueue",
    "Rollout",
    "Rules",
    "SQLiteStore",
    "SegmentGap",
    "ShadowFigures",
    "Source",
    "Stats",
    "Store",
    "StoreError",
    "StreamInterrupted",
    "SystemCard",
    "Target",
    "TargetResult",
    "ThresholdRow",
    "Tuning",
    "UnknownCall",
    "Usage",
    "__version__",
    "afeedback",
    "audit_figures",
    "budget_figures",
    "calibration",
    "card",
    "check",
    "configure",
    "drift",
    "edit_distance",
    "feedback",
    "flush",
    "guard",
    "kill",
    "kill_all",
    "last_outcome",
    "load_config",
    "open_store",
    "parse_since",
    "read_usage",
    "recent_events",
    "report",
    "revive",
    "revive_all",
    "save_baseline",
    "set_rollout",
    "stats",
    "tune",
    "wilson",
]
