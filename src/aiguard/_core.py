"""The decision logic of a guarded call, written once and free of I/O.

``Core`` holds a guard's compiled settings and decides: ``judge`` says whether a model result may
be served; ``flow`` walks the fallback chain as a generator that yields the next handler to run
and is sent back what it did, so the sync and async drivers in ``guard.py`` only execute.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable, Generator, Mapping
from datetime import timedelta
from time import perf_counter
from typing import Any

from . import _ids, _internal, _telemetry, control
from ._accounting import Accounting
from ._gates import GateRun
from ._records import Extras, span_ids
from ._state import UNSET, state
from ._window import MODEL_REASONS
from .breaker import Breaker, BreakerRun
from .budget import Budget
from .exceptions import ConfigError, ModelTimeout, NotServed, ReviewPending, StoreError
from .fallbacks import Fallback, FallbackContext, Rules, _Queued
from .outcome import Attempt, Outcome, Reason, Source, _served
from .pricing import to_decimal, to_pico
from .rollout import Plan, Rollout, cached_positioner

_last: contextvars.ContextVar[Outcome[Any] | tuple[Any, ...] | None] = contextvars.ContextVar(
    "aiguard_last_outcome", default=None
)
_MISSING: Any = object()
SERVED = Reason.SERVED
MODEL = Source.MODEL  # enum attribute lookups cost ~0.1 µs: the hot path uses these names

Extract = Callable[[Any], Any]
Validator = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """The arguments given to ``guard()``; UNSET means "inherit from configuration"."""

    feature: str
    confidence: Any = UNSET
    threshold: Any = UNSET
    timeout: Any = UNSET
    validate: tuple[Validator, ...] = ()
    catch: tuple[type[Exception], ...] = (Exception,)
    fallback: tuple[Fallback, ...] = ()
    rollout: Rollout | None = None
    breaker: Breaker | None = None
    model: str | None = None
    provider: str | None = None
    operation: str = "chat"
    usage: Any = None
    budget: Budget | None = None
    latency_slo: float | None = None


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
    # None when no kill, breaker or rollout applies; else (args, kwargs) -> (blocked reason or
    # None, rollout arm, detail)
    pre: (
        Callable[[tuple[Any, ...], dict[str, Any]], tuple[Reason | None, str | None, str | None]]
        | None
    )
    percent: float | None


def check_feature(feature: Any) -> str:
    if not isinstance(feature, str) or not feature.strip() or feature != feature.strip():
        raise ConfigError(
            f"feature={feature!r} is invalid: must be a non-empty name without surrounding spaces"
        )
    return feature


def check_threshold(feature: str, value: Any) -> float | None:
    if value is None or value is UNSET:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            f"feature {feature!r}: threshold={value!r} is invalid: must be a number in [0, 1]"
        )
    f = float(value)
    if not 0.0 <= f <= 1.0:
        raise ConfigError(
            f"feature {feature!r}: threshold={value!r} is invalid: must be a number in [0, 1]"
        )
    return f


def check_timeout(feature: str, value: Any, *, name: str = "timeout") -> float | None:
    if value is None or value is UNSET:
        return value
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        seconds = math.nan
    else:
        seconds = float(value)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(
            f"feature {feature!r}: {name}={value!r} is invalid: must be a positive number of "
            "seconds or a timedelta"
        )
    return seconds


def check_confidence(feature: str, value: Any) -> Any:
    if value is None or value is UNSET or callable(value):
        return value
    if isinstance(value, str) and value:
        return value
    raise ConfigError(
        f"feature {feature!r}: confidence={value!r} is invalid: give an attribute or key name, "
        "or a callable that takes the result and returns a float in [0, 1]"
    )


def check_catch(feature: str, value: Any) -> tuple[type[Exception], ...]:
    types = value if isinstance(value, tuple) else (value,)
    if not types or not all(isinstance(t, type) and issubclass(t, Exception) for t in types):
        raise ConfigError(
            f"feature {feature!r}: catch={value!r} is invalid: give an Exception subclass or a "
            "tuple of them (KeyboardInterrupt, SystemExit and CancelledError always propagate)"
        )
    return types


def check_validate(feature: str, value: Any) -> tuple[Validator, ...]:
    items = value if isinstance(value, list | tuple) else (value,)
    out: list[Validator] = []
    for i, v in enumerate(items):
        if isinstance(v, type) and hasattr(v, "model_validate"):
            out.append(_pydantic_validator(v))
        elif callable(v):
            out.append(v)
        else:
            raise ConfigError(
                f"feature {feature!r}: validate[{i}]={v!r} is invalid: give a callable that "
                "checks the result, or a pydantic model type"
            )
    return tuple(out)


def _pydantic_validator(model: Any) -> Validator:
    def validate(result: Any) -> None:
        model.model_validate(result, from_attributes=not isinstance(result, Mapping))

    validate.__qualname__ = model.__qualname__
    return validate


def check_fallback(feature: str, value: Any) -> tuple[Fallback, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else (value,)
    out: list[Fallback] = []
    for i, h in enumerate(items):
        if isinstance(h, Fallback):
            out.append(h)
        elif isinstance(h, type) and issubclass(h, Fallback):
            raise ConfigError(
                f"feature {feature!r}: fallback[{i}]={h.__name__} is a class: pass an instance, "
                f"e.g. {h.__name__}(...)"
            )
        elif callable(h):
            out.append(Rules(h))
        else:
            raise ConfigError(
                f"feature {feature!r}: fallback[{i}]={h!r} is invalid: give a handler such as "
                "aiguard.Rules(fn), aiguard.Default(value), aiguard.HumanReview(), or a callable"
            )
    return tuple(out)


def _by_name(name: str) -> Extract:
    def extract(result: Any) -> Any:
        if type(result) is dict:
            return result.get(name, _MISSING)
        value = getattr(result, name, _MISSING)
        if value is _MISSING and isinstance(result, Mapping):
            value = result.get(name, _MISSING)
        return value

    return extract


class Core:
    """One guard's compiled settings and its decisions."""

    __slots__ = (
        "__weakref__",
        "acct",
        "breaker",
        "catch",
        "chain",
        "feature",
        "fn",
        "gate",
        "is_async",
        "monitor",
        "position",
        "settings",
        "signature",
        "spec",
        "validators",
    )

    def __init__(self, fn: Callable[..., Any], spec: Spec, *, is_async: bool) -> None:
        self.fn = fn
        self.spec = spec
        self.feature = spec.feature
        self.is_async = is_async
        self.catch = spec.catch
        self.chain = spec.fallback
        self.validators = spec.validate
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            self.signature = None
        for handler in self.chain:
            handler.bind(fn, is_async=is_async, feature=spec.feature)
        self.breaker = None if spec.breaker is None else BreakerRun(spec.breaker, spec.feature)
        rollout = spec.rollout
        self.gate = None
        self.position = None
        if rollout is not None:
            salt = rollout.salt if rollout.salt is not None else spec.feature
            self.position = cached_positioner(rollout.bucketing, spec.feature, salt)
            Plan(rollout, spec.feature, self.signature, self.position, 0)  # checks key, segments
            self.gate = GateRun(rollout, spec.feature) if rollout.gates is not None else None
        self.monitor = _monitor(self.breaker, self.gate)
        self.acct = Accounting(
            spec.feature,
            model=spec.model,
            provider=spec.provider,
            operation=spec.operation,
            usage=spec.usage,
            budget=spec.budget,
            latency_slo=spec.latency_slo,
        )
        self.settings = self.refresh()
        state.cores.add(self)

    def refresh(self) -> Settings:
        """Merge control state, the guard's own arguments and configuration for its feature."""
        state.ensure_recorder()
        with state.lock:
            generation = state.generation
            confidence, threshold, timeout = self.compile(state.features.get(self.feature))
            ctl = control.effective(self.feature)
        if ctl.threshold is not None:
            if confidence is None:
                _internal.warn_once(
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
        settings = Settings(
            generation=generation,
            extract=_by_name(confidence) if named else confidence,
            confidence_name=confidence if named else None,
            threshold=threshold,
            timeout=timeout,
            pre=_pre(ctl.kill, self.breaker, plan, self.acct),
            percent=percent,
        )
        self.settings = settings
        return settings

    def compile(self, cfg: Any) -> tuple[Any, float | None, float | None]:
        """``(confidence, threshold, timeout)`` for this guard under feature config ``cfg``.

        Raises ConfigError when they do not fit together; ``configure()`` calls this for every
        live guard before it applies anything, so a bad configuration changes nothing.
        """
        spec = self.spec

        def pick(name: str) -> Any:
            own = getattr(spec, name)
            if own is not UNSET:
                return own
            return getattr(cfg, name) if cfg is not None else None

        confidence, threshold = pick("confidence"), pick("threshold")
        if threshold is not None and confidence is None:
            raise ConfigError(
                f"feature {self.feature!r}: threshold={threshold!r} needs confidence=: say which "
                "attribute, key or callable gives the result's confidence"
            )
        return confidence, threshold, pick("timeout")

    # -- the served path -------------------------------------------------------------------------

    def judge(self, result: Any, s: Settings) -> tuple[Reason, float | None, str | None]:
        """May ``result`` be served? ``(reason, confidence, detail)``; reason ``served`` if so."""
        for check in self.validators:
            try:
                ok = check(result)
            except Exception as exc:
                return Reason.INVALID_OUTPUT, None, f"{_name(check)} rejected the result: {exc!r}"
            if ok is False:
                return Reason.INVALID_OUTPUT, None, f"{_name(check)} returned False"
        extract = s.extract
        if extract is None:
            return SERVED, None, None
        try:
            raw = extract(result)
        except Exception as exc:
            return Reason.INVALID_CONFIDENCE, None, f"reading the confidence failed: {exc!r}"
        if raw.__class__ is float:
            c: float = raw
        elif isinstance(raw, numbers.Real) and not isinstance(raw, bool):
            c = float(raw)
        elif raw is _MISSING or raw is None:
            where = f" {s.confidence_name!r}" if s.confidence_name else ""
            return Reason.INVALID_CONFIDENCE, None, f"confidence{where} is missing"
        else:
            return (
                Reason.INVALID_CONFIDENCE,
                None,
                f"confidence {raw!r} is a {type(raw).__name__}, not a number",
            )
        if not 0.0 <= c <= 1.0:  # also false for NaN
            return Reason.INVALID_CONFIDENCE, None, f"confidence {c!r} is outside [0, 1]"
        threshold = s.threshold
        if threshold is not None and c < threshold:
            return Reason.LOW_CONFIDENCE, c, f"confidence {c:g} < threshold {threshold:g}"
        return SERVED, c, None

    def served(self, raw: tuple[Any, ...]) -> Outcome[Any]:
        """The Outcome for a raw served record ``(core, n, result, confidence, settings, t0, t1,
        t2, arm, usage, cost)``, which is all the served path keeps until somebody asks."""
        _, n, result, confidence, s, t0, t1, t2, arm, usage, cost = raw
        return _served(
            self.feature,
            s.threshold,
            n,
            result,
            confidence,
            t0,
            t1,
            t2,
            arm,
            s.percent,
            usage,
            cost,
        )

    def settle(
        self,
        s: Settings,
        n: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result: Any,
        t0: float,
        t1: float,
        arm: str | None,
        span: Any,
    ) -> tuple[Any, ...] | FallbackContext:
        """Judge the model's result: a served call is accounted for and its raw record returned
        (the Outcome is built lazily); otherwise the context for the fallback chain."""
        reason, confidence, detail = self.judge(result, s)
        if reason is not SERVED:
            return self.context(
                s,
                n,
                args,
                kwargs,
                reason,
                result=result,
                confidence=confidence,
                detail=detail,
                arm=arm,
                span=span,
            )
        acct = self.acct
        reader = acct.reader
        usage = None
        if reader is not None:
            try:
                usage = reader(result)
            except Exception as exc:
                _internal.report(f"usage reader of {self.feature!r}", exc)
        cost = None if state.prices is None else acct.cost(usage, True, 0)
        t2 = perf_counter()
        raw = (self, n, result, confidence, s, t0, t1, t2, arm, usage, cost)
        _last.set(raw)
        if self.monitor is not None:
            self.monitor(SERVED)
        acct.report(MODEL, SERVED, t2 - t0, usage, cost, t1 - t0)
        if span is not None:  # from the figures: no Outcome is built for the span
            _telemetry.describe(
                span,
                *acct.attributes(
                    _ids.call_id(n), MODEL, SERVED, confidence, s.threshold, s.percent, arm,
                    usage, cost, (), None, None,
                ),
            )  # fmt: skip
        recorder = state.recorder
        if recorder is not None:
            if span is None and recorder.capture is None:
                recorder.put(raw)
            else:
                inputs = (self.signature, args, kwargs) if recorder.capture is not None else None
                recorder.put(Extras(raw, inputs, span_ids(span), None))
        if state.observers:
            notify(self.served(raw))
        return raw

    # -- the fallback path -----------------------------------------------------------------------

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
    ) -> FallbackContext:
        return FallbackContext(
            feature=self.feature,
            call_id=_ids.call_id(n),
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
        if exc is None:
            detail = f"the model gave no result within {s.timeout:g} s"
            return self.context(
                s, n, args, kwargs, Reason.TIMEOUT, detail=detail, arm=arm, span=span
            )
        reason = Reason.TIMEOUT if isinstance(exc, TimeoutError) else Reason.ERROR
        return self.context(
            s, n, args, kwargs, reason, exception=exc, detail=repr(exc), arm=arm, span=span
        )

    def flow(
        self, ctx: FallbackContext, t0: float, t1: float | None
    ) -> Generator[Fallback, tuple[bool, Any], Outcome[Any]]:
        """Walk the fallback chain: yields each handler, is sent ``(ok, value_or_exception)``."""
        attempts: list[Attempt] = []
        spent = 0  # what the handlers that ran cost
        for handler in self.chain:
            ok, value = yield handler
            spent += handler.cost_pico
            if not ok:
                if isinstance(value, ConfigError):
                    raise value  # a configuration bug is surfaced, not passed on
                if isinstance(value, StoreError):
                    _internal.report(f"fallback {handler.name} of {self.feature!r}", value)
                attempts.append(Attempt(handler.name, handler.source, value))
                continue
            attempts.append(Attempt(handler.name, handler.source))
            if isinstance(value, _Queued):
                outcome = self.outcome(
                    ctx, t0, t1, handler.source, value.placeholder, attempts, spent, value.item.id
                )
                self.publish(outcome, ctx.span, ctx=ctx, spent=spent)
                if not value.has_placeholder:
                    raise ReviewPending(value.item.id, outcome)
                return outcome
            outcome = self.outcome(ctx, t0, t1, handler.source, value, attempts, spent)
            self.publish(outcome, ctx.span, ctx=ctx, spent=spent)
            return outcome
        outcome = self.outcome(ctx, t0, t1, None, None, attempts, spent)
        self.publish(outcome, ctx.span, ctx=ctx, spent=spent)
        if ctx.exception is not None:
            raise ctx.exception
        if ctx.reason is Reason.TIMEOUT:
            raise ModelTimeout(
                outcome, f"feature {self.feature!r}: {ctx.detail} and no fallback answered"
            )
        raise NotServed(outcome)

    def outcome(
        self,
        ctx: FallbackContext,
        t0: float,
        t1: float | None,
        source: Source | None,
        value: Any,
        attempts: list[Attempt],
        spent: int = 0,
        review_id: str | None = None,
    ) -> Outcome[Any]:
        if source is not None and ctx.reason in _BASELINE_REASONS:
            source = Source.BASELINE
        acct = self.acct
        usage = acct.usage(ctx.model_result)
        cost = acct.cost(usage, ctx.reason in MODEL_REASONS, spent)
        return Outcome(
            value=value,
            call_id=ctx.call_id,
            feature=self.feature,
            source=source,
            reason=ctx.reason,
            confidence=ctx.confidence,
            threshold=ctx.threshold,
            latency=perf_counter() - t0,
            model_latency=None if t1 is None else t1 - t0,
            exception=ctx.exception,
            attempts=tuple(attempts),
            review_id=review_id,
            model_result=ctx.model_result,
            detail=ctx.detail,
            started_at=_ids.wall_time(t0),
            arm=ctx.arm,
            rollout_percent=ctx.rollout_percent,
            usage=usage,
            cost=None if cost is None else to_decimal(cost),
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
        if exc.__class__ is TypeError and self.misuse(args, kwargs):
            self.unhandled(s, n, args, kwargs, exc, t0, misuse=True, span=span, arm=arm)
            raise exc
        return self.failed(s, n, args, kwargs, exc, arm, span)

    def misuse(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """True when the call's arguments do not fit the function: the caller's bug, not the
        model's, so the TypeError propagates instead of going to the fallback chain."""
        if self.signature is None:
            return False
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError:
            return True
        return False

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
        outcome = self.outcome(ctx, t0, perf_counter(), None, None, [])
        self.publish(outcome, span, count=not misuse, ctx=ctx)

    def publish(
        self,
        outcome: Outcome[Any],
        span: Any = None,
        *,
        count: bool = True,
        ctx: FallbackContext | None = None,
        spent: int = 0,
    ) -> None:
        """Make ``outcome`` the last one, and account for it everywhere it counts. ``spent``:
        what the fallback handlers cost, counted in the budget even when the model's cost (and
        so the call's) is unknown."""
        _last.set(outcome)
        if count and self.monitor is not None:
            self.monitor(outcome.reason)
        acct = self.acct
        cost = outcome.cost
        exc = outcome.exception
        acct.report(
            outcome.source,
            outcome.reason,
            outcome.latency,
            outcome.usage,
            None if cost is None else to_pico(cost),
            outcome.model_latency,
            type(exc).__qualname__
            if exc is not None
            else ("timeout" if outcome.reason is Reason.TIMEOUT else None),
            spent,
        )
        if span is not None:
            _telemetry.describe(span, *acct.span_attributes(outcome))
        recorder = state.recorder
        if recorder is not None:
            inputs = None
            if recorder.capture is not None and ctx is not None:
                inputs = (self.signature, ctx.args, ctx.kwargs)
            recorder.put(Extras(outcome, inputs, span_ids(span), acct.model))
        if state.observers:
            notify(outcome)


_BASELINE_REASONS = frozenset({Reason.NOT_IN_ROLLOUT, Reason.MISSING_ROLLOUT_KEY})


def _pre(
    kill: control.Kill | None, breaker: BreakerRun | None, plan: Plan | None, acct: Accounting
) -> (
    Callable[[tuple[Any, ...], dict[str, Any]], tuple[Reason | None, str | None, str | None]] | None
):
    """The checks that run before the model call, compiled for the current control state."""
    if kill is not None:
        blocked = (Reason.KILLED, None, kill.describe())
        return lambda args, kwargs: blocked
    budget = acct.budget
    if breaker is None and budget is None:
        return None if plan is None else plan.check  # the rollout check is the whole check
    check = None if plan is None else plan.check
    ai = (None, "ai", None)

    def pre(
        args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Reason | None, str | None, str | None]:
        arm = None
        if check is not None:  # the rollout first: the breaker only sees calls in the AI arm
            verdict = check(args, kwargs)
            if verdict[0] is not None:
                return verdict
            arm = "ai"
        if budget is not None:  # before the breaker: no half-open probe is spent on it
            why = budget.exhausted()
            if why is not None:
                return Reason.OVER_BUDGET, arm, why
        if breaker is not None:
            why = breaker.admit()
            if why is not None:
                return Reason.AUTO_KILLED, arm, why
        return ai if arm else (None, None, None)

    return pre


def _monitor(breaker: BreakerRun | None, gate: GateRun | None) -> Callable[[Reason], None] | None:
    if breaker is None and gate is None:
        return None
    if gate is None:
        assert breaker is not None
        return breaker.record
    if breaker is None:
        return gate.record
    b, g = breaker.record, gate.record

    def both(reason: Reason) -> None:
        b(reason)
        g(reason)

    return both


def notify(outcome: Outcome[Any]) -> None:
    for observer in state.observers:
        try:
            observer(outcome)
        except Exception as exc:
            _internal.report("outcome observer", exc)


def last_outcome() -> Outcome[Any] | None:
    """The Outcome of the latest guarded call in this thread or asyncio task, if any.

    Example:
        >>> import aiguard
        >>> @aiguard.guard("greet")
        ... def greet(name: str) -> str:
        ...     return "hi " + name
        >>> greet("ada")
        'hi ada'
        >>> aiguard.last_outcome().call_id.startswith("ag_")
        True
    """
    last = _last.get()
    if last is None or last.__class__ is Outcome:
        return last
    core: Core = last[0]  # type: ignore[index]
    outcome = core.served(last)  # type: ignore[arg-type]
    _last.set(outcome)
    return outcome


def _name(check: Callable[..., Any]) -> str:
    return "validator " + getattr(check, "__qualname__", type(check).__name__)
