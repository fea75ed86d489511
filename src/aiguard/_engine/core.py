"""One guard, compiled: its fixed parts at decoration, its settings once per generation.

``Core`` is built once per decorated function (all validation happens there); the drivers read
``core.settings`` once per call, and ``refresh()`` recompiles it when the configuration
generation moved on.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from time import perf_counter
from typing import Any

from .._checks import check_audit, check_segments, needs_confidence
from .._returns import Declared, check_declared, declared
from .._runtime import errors, ids, lifecycle
from .._runtime.state import runtime
from ..breaker import BreakerRun
from ..fallbacks import Escalate, FallbackContext
from ..outcome import Reason
from ..rollout import Plan, cached_positioner
from . import decide, finish
from .accounting import Accounting
from .caching import CacheRun
from .escalation import Escalation
from .gates import GateRun
from .pre import compile_pre, monitor
from .reserve import budget_check
from .settings import Settings, Spec, by_name, effective, pick, pick_tags
from .shadow import Shadow, compile_shadow
from .tagging import Tags, compile_tags
from .watch import FirstCalls, watching


class Core:
    """One guard's compiled settings, and the context of each call that is not served."""

    __slots__ = (
        "__weakref__",
        "acct",
        "blocked",
        "breaker",
        "cache",
        "catch",
        "chain",
        "escalations",
        "feature",
        "fn",
        "gate",
        "is_async",
        "monitor",
        "position",
        "results",
        "retry",
        "settings",
        "shadow",
        "signature",
        "spec",
        "tags",
        "validators",
        "watch",
    )

    def __init__(self, fn: Callable[..., Any], spec: Spec, *, is_async: bool) -> None:
        self.fn = fn
        self.spec = spec
        self.feature = spec.feature
        self.is_async = is_async
        self.catch = spec.catch
        self.chain = spec.fallback
        self.validators = spec.validate
        self.blocked = [False]  # a sync call under timeout= was found blocked in C
        self.retry = spec.retry
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            self.signature = None
        try:  # what the return annotation says a result holds (confidence names are checked)
            self.results: tuple[Declared, ...] | None = declared(fn)
        except Exception:  # an annotation that cannot be read: the first calls tell instead
            self.results = None
        for handler in self.chain:
            handler.bind(fn, is_async=is_async, feature=spec.feature)
        # each Escalate handler, compiled for this guard (by the handler's id: the chain holds it)
        self.cache = (
            None if spec.cache is None else CacheRun(spec.cache, spec.feature, self.signature)
        )
        self.escalations = {
            id(h): Escalation(h, spec) for h in self.chain if isinstance(h, Escalate)
        }
        self.breaker = None if spec.breaker is None else BreakerRun(spec.breaker, spec.feature)
        rollout = spec.rollout
        self.gate = None
        self.position = None
        if rollout is not None:
            salt = rollout.salt if rollout.salt is not None else spec.feature
            self.position = cached_positioner(rollout.bucketing, spec.feature, salt)
            Plan(rollout, spec.feature, self.signature, self.position, 0)  # checks key, segments
            self.gate = GateRun(rollout, spec.feature) if rollout.gates is not None else None
        self.monitor = monitor(self.breaker, self.gate)
        self.tags: tuple[Any, Tags | None] | None = None  # (what it was compiled from, Tags)
        self.acct = Accounting(
            spec.feature,
            model=spec.model,
            provider=spec.provider,
            operation=spec.operation,
            usage=spec.usage,
            budget=spec.budget,
            latency_slo=spec.latency_slo,
        )
        self.shadow: Shadow | None = compile_shadow(
            self,
            spec.shadow,
            spec.shadow_share,
            spec.agree,
            spec.shadow_timeout,
            spec.shadow_model,
            spec.shadow_budget,
        )
        self.settings = self.refresh(initial=True)
        # the first results, watched for a setting that rejects them all (off the served path)
        self.watch: FirstCalls | None = watching(self)
        runtime.cores.add(self)

    def refresh(self, *, initial: bool = False) -> Settings:
        """Merge control state, the guard's own arguments and configuration for its feature.

        Runs at decoration (``initial``) and on the first call after any change (and after a
        fork, which is a change): it also makes sure the runtime's background workers run in
        this process."""
        lifecycle.ensure_recorder()
        lifecycle.ensure_workers()
        with runtime.lock:
            generation = runtime.generation
            cfg = runtime.features.get(self.feature)
            confidence, threshold, timeout = self.compile(cfg)
            tags = self.compile_tags(cfg)
            ctl = effective(self.feature)
            budget = budget_check(self, cfg)
        if ctl.threshold is not None:
            if confidence is None:
                errors.warn_once(
                    f"control-threshold:{self.feature}",
                    "aiguard: %s: the control threshold %s is ignored: the guard has no "
                    "confidence= to compare it with",
                    self.feature,
                    ctl.threshold,
                )
            else:
                threshold = ctl.threshold
        plan = None
        percent = None
        rollout = self.spec.rollout
        if rollout is not None:
            assert self.position is not None
            percent = ctl.percent if ctl.percent is not None else rollout.initial_percent
            plan = Plan(rollout, self.feature, self.signature, self.position, percent)
            if self.gate is not None:
                self.gate.at(percent)
        named = isinstance(confidence, str)
        first = self.spec.first_chunk_timeout
        settings = Settings(
            generation=generation,
            extract=by_name(confidence) if named else confidence,
            confidence_name=confidence if named else None,
            threshold=threshold,
            timeout=timeout,
            call_timeout=timeout
            if first is None or (timeout is not None and timeout <= first)
            else first,
            pre=compile_pre(ctl.kill, self.breaker, plan, budget),
            percent=percent,
            tags=tags,
        )
        self.settings = settings
        if tags is not None and tags.cut is not None and runtime.recorder is None:
            if initial:  # the store is often configured after decoration: check at the first call
                settings = dataclasses.replace(settings, generation=-1)
                self.settings = settings
                return settings
            errors.warn_once(
                f"audit-unrecorded:{self.feature}",
                "aiguard: %s: audit=%s sends no audit items: they are written with the call "
                "records, and no call is recorded (configure a store, with record_calls on)",
                self.feature,
                tags.audit,
            )
        return settings

    def compile(self, cfg: Any) -> tuple[Any, float | None, float | None]:
        """``(confidence, threshold, timeout)`` for this guard under feature config ``cfg``.

        Raises ConfigError when they do not fit together; ``configure()`` calls this for every
        live guard before it applies anything, so a bad configuration changes nothing.
        """
        confidence, threshold, timeout = pick(self.spec, cfg)
        needs_confidence(self.feature, threshold, confidence)
        check_declared(self.feature, confidence, self.results)
        self.compile_tags(cfg)
        return confidence, threshold, timeout

    def compile_tags(self, cfg: Any) -> Tags | None:
        """The guard's segments and audit share under feature config ``cfg``, compiled (the
        last compiled is reused while its source is the same); ConfigError for a segment that
        names no parameter of the function."""
        segments, audit = pick_tags(self.spec, cfg)
        source = (segments, audit)
        known = self.tags
        if known is not None and known[0] == source:
            return known[1]
        feature = self.feature
        tags = compile_tags(
            feature,
            check_segments(feature, segments),
            check_audit(feature, audit),
            self.signature,
        )
        self.tags = (source, tags)
        return tags

    # -- the context of a call that is not served ------------------------------------------------

    def context(
        self,
        s: Settings,
        n: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reason: Reason,
        *,
        result: Any = None,
        confidence: float | None = None,
        exception: BaseException | None = None,
        detail: str | None = None,
        arm: str | None = None,
        span: Any = None,
        model_attempts: tuple[Any, ...] = (),
    ) -> FallbackContext:
        return FallbackContext(
            feature=self.feature,
            call_id=ids.call_id(n),
            reason=reason,
            args=args,
            kwargs=kwargs,
            model_result=result,
            confidence=confidence,
            threshold=s.threshold,
            exception=exception,
            detail=detail,
            arm=arm,
            rollout_percent=s.percent,
            span=span,
            signature=self.signature,
            model_attempts=model_attempts,
        )

    def failed(
        self,
        s: Settings,
        n: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: BaseException | None,
        arm: str | None = None,
        span: Any = None,
    ) -> FallbackContext:
        """The context for a model call that raised ``exc`` (None: aiguard's timeout fired)."""
        reason, detail = decide.failure(exc, s.timeout, self.spec.timeout_errors)
        first = self.spec.first_chunk_timeout
        if exc is None and first is not None and (s.timeout is None or first < s.timeout):
            detail = f"the model sent no first chunk within {first:g} s"
        return self.context(
            s, n, args, kwargs, reason, exception=exc, detail=detail, arm=arm, span=span
        )

    def caught(
        self,
        s: Settings,
        n: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
        t0: float,
        arm: str | None,
        span: Any,
    ) -> FallbackContext:
        """The context for an exception in ``catch``; re-raises a caller's misuse."""
        if exc.__class__ is TypeError and decide.misuse(self.signature, args, kwargs):
            self.unhandled(s, n, args, kwargs, exc, t0, misuse=True, span=span, arm=arm)
            raise exc
        return self.failed(s, n, args, kwargs, exc, arm, span)

    def unhandled(
        self,
        s: Settings,
        n: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: BaseException,
        t0: float,
        *,
        misuse: bool = False,
        span: Any = None,
        arm: str | None = None,
    ) -> None:
        """Record the Outcome of a call whose exception is not in ``catch`` (it propagates).

        A misuse (arguments that do not fit the function) is the caller's bug: it is not counted
        against the model's quality (breaker, gates)."""
        ctx = self.failed(s, n, args, kwargs, exc, arm, span)
        outcome = finish.outcome(self, ctx, t0, perf_counter(), None, None, ())
        finish.publish(self, outcome, span, count=not misuse, ctx=ctx)
