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

from ._bucketing import Bucketing
from ._engine.finish import last_outcome
from ._version import __version__
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
