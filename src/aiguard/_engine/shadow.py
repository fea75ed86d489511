"""Shadow candidates: a guard's candidate model, run on a share of its calls, never served.

``compile_shadow`` checks ``guard(shadow=..., shadow_share=..., agree=..., ...)`` at decoration
and returns a :class:`Shadow`, or None. The drivers hand each finished call to
``Shadow.after_sync`` / ``Shadow.after_async``, which choose the call by a hash of its id and give
the candidate to the runtime's shadow pool (``_runtime.shadowing``); they never wait, and never
raise. In the pool the candidate runs with the call's arguments under its timeout; ``finish``
(shared by the sync and async runners) reads its confidence, usage and cost the way the guard
reads its own, compares its answer with the served one and queues its row for the record writer.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from datetime import timedelta
from time import perf_counter
from typing import Any

from .._runtime import deadlines, errors, shadowing
from .._runtime.records import Served, label_of, text_of
from .._runtime.state import runtime
from ..exceptions import ConfigError
from ..outcome import Outcome, Source
from .accounting import Accounting
from .decide import judge

DEFAULT_TIMEOUT = 30.0  # seconds: a candidate's bound when neither shadow_timeout nor timeout is
ERROR_CHARS = 200  # the most characters kept of a candidate's error
_MODEL = Source.MODEL


def default_agree(served: Any, candidate: Any) -> bool:
    """Whether two answers agree when no ``agree=`` is given: their labels when both have one
    (a mapping's ``"label"``, an object's ``label``, an Enum's value, a bool: see
    :func:`aiguard._runtime.records.label_of`), else ``served == candidate``."""
    a, b = label_of(served), label_of(candidate)
    if a is not None and b is not None:
        return bool(a == b)
    return bool(served == candidate)


class Shadow:
    """One guard's shadow candidate, compiled."""

    __slots__ = (
        "acct",
        "agree",
        "budget",
        "core",
        "cut",
        "feature",
        "fn",
        "is_async",
        "name",
        "share",
        "stuck",
        "timeout",
    )

    def __init__(
        self,
        core: Any,
        fn: Callable[..., Any],
        share: float,
        agree: Callable[[Any, Any], Any] | None,
        timeout: float | None,
        model: str | None,
        budget: bool,
    ) -> None:
        spec = core.spec
        self.core = core
        self.feature = core.feature
        self.fn = fn
        self.name = _name(fn)
        self.share = share
        self.cut = shadowing.cut(share)
        self.agree = default_agree if agree is None else agree
        self.timeout = timeout
        self.budget = budget
        self.is_async = inspect.iscoroutinefunction(fn)
        self.stuck = [False]  # a sync candidate found blocked in C: the timeout pool from then on
        self.acct = Accounting(
            core.feature,
            model=model,
            provider=spec.provider,
            operation=spec.operation,
            usage=spec.usage,
            budget=None,
            latency_slo=None,
        )

    # -- the call's side: after the answer is known ----------------------------------------------

    def chosen(self, record: Any) -> tuple[Any, bool, str] | None:
        """``(served value, whether it is the model's, call id)`` when the call that ended with
        ``record`` is shadowed; else None. Never raises."""
        try:
            cls = record.__class__
            if cls is Served:
                if shadowing.hash_of(record.number) >= self.cut:
                    return None
                return record.value, True, record.call_id
            if cls is Outcome:
                if shadowing.hash_id(record.call_id) >= self.cut:
                    return None
                return record.value, record.source is _MODEL, record.call_id
        except Exception as exc:
            errors.report("shadow sampling", exc)
        return None  # a stream: not shadowed

    def after_sync(self, record: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A sync guard's call ended with ``record``: hand its candidate to the pool if chosen."""
        picked = self.chosen(record)
        if picked is None:
            return
        try:
            pool = shadowing.pool()
            if self.is_async:  # cannot happen: compile_shadow refuses it; kept as a guard
                return
            pool.submit((self.run_sync, self.feature, args, kwargs, *picked))
        except Exception as exc:
            errors.report("shadow call", exc)

    def after_async(self, record: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """An async guard's call ended with ``record``: its candidate as a task (an async
        candidate) or in the pool's threads (a sync one), if chosen."""
        picked = self.chosen(record)
        if picked is None:
            return
        try:
            pool = shadowing.pool()
            if self.is_async:
                pool.spawn(self.feature, self.run_async, self.feature, args, kwargs, *picked)
            else:
                pool.submit((self.run_sync, self.feature, args, kwargs, *picked))
        except Exception as exc:
            errors.report("shadow call", exc)

    # -- the pool's side ---------------------------------------------------------------------

    def limit(self) -> float:
        if self.timeout is not None:
            return self.timeout
        own = self.core.settings.timeout
        return DEFAULT_TIMEOUT if own is None else own

    def run_sync(
        self,
        feature: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        served: Any,
        compare: bool,
        call_id: str,
    ) -> None:
        started = time.time()
        t0 = perf_counter()
        value = None
        failure: BaseException | None = None
        try:
            value = deadlines.call(self.fn, args, kwargs, self.limit(), self.stuck)
        except deadlines.Expired:
            failure = TimeoutError(f"the candidate did not answer within {self.limit():g} s")
        except Exception as exc:
            failure = exc
        self.finish(call_id, started, perf_counter() - t0, value, failure, served, compare)

    async def run_async(
        self,
        feature: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        served: Any,
        compare: bool,
        call_id: str,
    ) -> None:
        started = time.time()
        t0 = perf_counter()
        value = None
        failure: BaseException | None = None
        limit = self.limit()
        try:
            async with asyncio.timeout(limit):
                value = await self.fn(*args, **kwargs)
        except TimeoutError:
            failure = TimeoutError(f"the candidate did not answer within {limit:g} s")
        except Exception as exc:
            failure = exc
        self.finish(call_id, started, perf_counter() - t0, value, failure, served, compare)

    def finish(
        self,
        call_id: str,
        started: float,
        latency: float,
        value: Any,
        failure: BaseException | None,
        served: Any,
        compare: bool,
    ) -> None:
        """Account for one candidate call and queue its row. Never raises."""
        pool = shadowing.pool()
        try:
            acct = self.acct
            usage = confidence = agreed = None
            error = None
            if failure is None:
                usage = acct.usage(value)
                cost = acct.cost(usage, True, 0)
                confidence = judge((), value, self.core.settings)[1]
                if compare:
                    try:
                        agreed = bool(self.agree(served, value))
                    except Exception as exc:
                        error = f"agree: {_text(exc)}"
            else:
                cost = acct.cost(None, True, 0, failure)
                error = _text(failure)
            outcome = "ran" if failure is None else "failed"
            if isinstance(failure, TimeoutError):
                outcome = "timeout"
            pool.count(self.feature, outcome)
            if self.budget and cost:
                spend = getattr(self.core.acct.budget, "spend", None)
                if spend is not None:
                    spend(cost)
            recorder = runtime.recorder
            if recorder is None:
                return
            model = (usage.model if usage is not None and usage.model else None) or acct.model
            row = (
                call_id,
                self.feature,
                self.name,
                started,
                latency,
                model,
                None if usage is None else usage.input_tokens,
                None if usage is None else usage.output_tokens,
                cost,
                confidence,
                None if agreed is None else int(agreed),
                error,
            )  # in SHADOW_COLUMNS order
            if not recorder.put_shadow(row):
                pool.count(self.feature, "dropped")
        except Exception as exc:
            errors.report(f"shadow call of {self.feature!r}", exc)


def _name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return text_of(name) or text_of(type(fn).__name__) or "candidate"


def _text(exc: BaseException) -> str:
    message = str(exc) if str(exc) else ""
    text = f"{type(exc).__qualname__}: {message}" if message else type(exc).__qualname__
    return text[:ERROR_CHARS]


def compile_shadow(
    core: Any,
    shadow: Any,
    share: Any,
    agree: Any,
    timeout: Any,
    model: Any,
    budget: Any,
) -> Shadow | None:
    """The guard's :class:`Shadow`, or None without ``shadow=``; ConfigError (naming the feature,
    the argument and its value) for settings that cannot work."""
    feature = core.feature
    if shadow is None:
        given = [
            name
            for name, value, default in (
                ("shadow_share", share, None),
                ("agree", agree, None),
                ("shadow_timeout", timeout, None),
                ("shadow_model", model, None),
                ("shadow_budget", budget, False),
            )
            if value is not default
        ]
        if given:
            raise ConfigError(
                f"feature {feature!r}: {', '.join(given)} given without shadow=: name the "
                "candidate function with shadow=fn"
            )
        return None
    if inspect.isgeneratorfunction(core.fn) or inspect.isasyncgenfunction(core.fn):
        raise ConfigError(
            f"feature {feature!r}: shadow= is not supported on a generator function (a stream "
            "is judged as it goes; a candidate's stream cannot be compared): guard a function "
            "that returns the whole answer"
        )
    if not callable(shadow) or isinstance(shadow, type):
        raise ConfigError(f"feature {feature!r}: shadow={shadow!r} is not a function")
    if inspect.isgeneratorfunction(shadow) or inspect.isasyncgenfunction(shadow):
        raise ConfigError(
            f"feature {feature!r}: shadow={_name(shadow)} is a generator function: a shadow "
            "candidate returns its whole answer"
        )
    if inspect.iscoroutinefunction(shadow) and not core.is_async:
        raise ConfigError(
            f"feature {feature!r}: shadow={_name(shadow)} is an async function but the guarded "
            "function is sync: give a sync candidate (it runs in aiguard's shadow threads)"
        )
    if share is None:
        share = 0.1
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ConfigError(
            f"feature {feature!r}: shadow_share={share!r} is invalid: give the share of calls "
            "from 0 to 1, e.g. 0.1"
        )
    if agree is not None and not callable(agree):
        raise ConfigError(
            f"feature {feature!r}: agree={agree!r} is not a function of (served, candidate)"
        )
    if agree is not None:
        _takes_two(feature, agree)
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < 1e9
    ):
        raise ConfigError(
            f"feature {feature!r}: shadow_timeout={timeout!r} is invalid: give seconds > 0 "
            "(or a timedelta)"
        )
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ConfigError(f"feature {feature!r}: shadow_model={model!r} is not a model name")
    if not isinstance(budget, bool):
        raise ConfigError(f"feature {feature!r}: shadow_budget={budget!r} is not True or False")
    if budget and core.spec.budget is None:
        raise ConfigError(
            f"feature {feature!r}: shadow_budget=True, but the guard has no budget= to charge"
        )
    return Shadow(
        core,
        shadow,
        float(share),
        agree,
        None if timeout is None else float(timeout),
        model,
        budget,
    )


def _takes_two(feature: str, agree: Callable[..., Any]) -> None:
    try:
        inspect.signature(agree).bind(None, None)
    except TypeError as exc:
        raise ConfigError(
            f"feature {feature!r}: agree={_name(agree)} cannot take (served, candidate): {exc}"
        ) from None
    except ValueError:
        pass  # no signature to read (a builtin): the first calls tell
