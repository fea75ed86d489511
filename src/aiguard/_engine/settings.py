"""A guard's settings: what ``guard()`` was given (:class:`Spec`) and what is in force now
(:class:`Settings`), compiled from the guard's arguments, the configuration and the control layers
once per configuration generation. Pure: reads the runtime's state, changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from .._runtime.state import UNSET, runtime
from ..breaker import Breaker
from ..budget import Budget
from ..fallbacks import Fallback
from ..outcome import Reason
from ..rollout import Rollout

ALL = "*"  # the feature name of a global kill
_MISSING: Any = object()

Extract = Callable[[Any], Any]
Validator = Callable[[Any], Any]
Pre = Callable[[tuple[Any, ...], dict[str, Any]], tuple[Reason | None, str | None, str | None]]


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """The arguments given to ``guard()``; UNSET means "inherit from configuration"."""

    feature: str
    confidence: Any = UNSET
    threshold: Any = UNSET
    timeout: Any = UNSET
    validate: tuple[Validator, ...] = ()
    catch: tuple[type[Exception], ...] = (Exception,)
    timeout_errors: tuple[type[Exception], ...] = ()
    fallback: tuple[Fallback, ...] = ()
    rollout: Rollout | None = None
    breaker: Breaker | None = None
    model: str | None = None
    provider: str | None = None
    operation: str = "chat"
    usage: Any = None
    budget: Budget | None = None
    latency_slo: float | None = None
    stream: str | bool | None = None
    first_chunk_timeout: float | None = None
    retry: Any = None
    estimate: Decimal | None = None  # one call's worst-case cost, for the budget
    segments: Any = UNSET  # ((name, path or callable), ...), or None
    audit: Any = UNSET  # the share of served answers audited, or None
    cache: Any = None  # an aiguard.Cache, or None
    # a shadow candidate: (function, share, agree, timeout, model, charged to the budget)
    shadow: Any = None
    shadow_share: Any = None
    agree: Any = None
    shadow_timeout: Any = None
    shadow_model: Any = None
    shadow_budget: Any = False


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """A guard's effective settings, compiled once per configuration generation.

    A call reads ``core.settings`` once and uses that object throughout, so a concurrent
    reconfiguration can never show it half of the old settings and half of the new.
    """

    generation: int
    extract: Extract | None
    confidence_name: str | None
    threshold: float | None
    timeout: float | None
    # what bounds the function's own call: ``timeout``, or a stream's first_chunk_timeout
    call_timeout: float | None
    # None when no kill, breaker or rollout applies; else (args, kwargs) -> (blocked reason or
    # None, rollout arm, detail)
    pre: Pre | None
    percent: float | None
    # segment values and audit sampling (an aiguard._engine.tagging.Tags), None when neither
    tags: Any = None


@dataclasses.dataclass(frozen=True, slots=True)
class Kill:
    """Why a feature is killed, by whom, and where that was said."""

    reason: str
    by: str | None
    source: str

    def describe(self) -> str:
        by = f" by {self.by}" if self.by else ""
        return f"killed{by} ({self.source}): {self.reason}"


@dataclasses.dataclass(frozen=True, slots=True)
class Effective:
    """A feature's merged control runtime."""

    kill: Kill | None = None
    percent: float | None = None
    threshold: float | None = None


def effective(feature: str) -> Effective:
    """Merge every control layer for ``feature``. Call with ``runtime.lock`` held."""
    kill: Kill | None = runtime.kills.get(feature) or runtime.kills.get(ALL)
    percent = runtime.rollouts.get(feature)
    threshold = None
    for name, snap in runtime.controls.items():
        fc = snap.features.get(feature)
        if kill is None:
            for c in (fc, snap.all):
                if c is not None and c.killed:
                    kill = Kill(c.reason or "killed in control state", c.by, name)
                    break
        if fc is not None:
            if percent is None and fc.rollout is not None:
                percent = fc.rollout
            if threshold is None and fc.threshold is not None:
                threshold = fc.threshold
    rollback = runtime.rollbacks.get(feature)
    if rollback is not None:
        from_percent, to_percent = rollback
        if percent is None or percent == from_percent:
            percent = to_percent
    return Effective(kill, percent, threshold)


def pick(spec: Spec, cfg: Any) -> tuple[Any, Any, Any]:
    """``(confidence, threshold, timeout)``: the guard's own argument, else the feature's
    configuration ``cfg``."""
    return tuple(_pick(spec, cfg, ("confidence", "threshold", "timeout")))


def pick_tags(spec: Spec, cfg: Any) -> tuple[Any, Any]:
    """``(segments, audit)``: the guard's own argument, else the feature's configuration."""
    return tuple(_pick(spec, cfg, ("segments", "audit")))


def _pick(spec: Spec, cfg: Any, names: tuple[str, ...]) -> list[Any]:

    def one(name: str) -> Any:
        own = getattr(spec, name)
        if own is not UNSET:
            return own
        return getattr(cfg, name) if cfg is not None else None

    return [one(name) for name in names]


def by_name(name: str) -> Extract:
    def extract(result: Any) -> Any:
        if type(result) is dict:
            return result.get(name, _MISSING)
        value = getattr(result, name, _MISSING)
        if value is _MISSING and isinstance(result, Mapping):
            value = result.get(name, _MISSING)
        return value

    return extract
