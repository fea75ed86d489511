"""Per-call accounting for one guard: usage, cost, stats, budget, and the telemetry of the call.

Called once at the end of every guarded call, whatever its path. Any failure here is an internal
failure: logged once, counted, and never raised into the call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .._runtime import errors, semconv, telemetry
from .._runtime import stats as _stats
from .._runtime.budgets import held
from .._runtime.money import pico_of
from .._runtime.state import runtime
from ..budget import Budget
from ..budget import for_feature as budget_for_feature
from ..outcome import MODEL_REASONS, Attempt, Outcome, Reason, Source
from ..pricing import PriceTable, pico_cost
from ..usage import Usage, as_usage
from . import facts
from .decide import is_status_error
from .readers import Reader, reader_for

UsageReader = Callable[[Any], Any]
metrics_api = telemetry.metrics_api


class Accounting:
    """What one guard knows about its model, and where each call's figures go."""

    __slots__ = (
        "_by_feature",
        "_priced",
        "_sets",
        "budget",
        "call_span_name",
        "call_start_attributes",
        "feature",
        "model",
        "operation",
        "provider",
        "reader",
        "record",
        "slo",
        "span_name",
        "start_attributes",
        "stats",
    )

    def __init__(
        self,
        feature: str,
        *,
        model: str | None,
        provider: str | None,
        operation: str,
        usage: UsageReader | bool | None,
        budget: Budget | None,
        latency_slo: float | None,
    ) -> None:
        self.feature = feature
        self.model = model
        self.provider = provider
        self.operation = operation
        # GenAI conventions: "{operation} {request model}", or the feature when no model is
        # known; static per guard, so the span is named once, when it starts
        self.span_name = f"{operation} {model}" if model else feature
        # a call that never reaches the model, or the rest of one whose model call failed or
        # was rejected, is an INTERNAL span of its own name: no span says a model was called
        # when none was
        self.call_span_name = f"aiguard {feature}"
        start: dict[str, Any] = {"gen_ai.operation.name": operation}
        if provider is not None:
            start["gen_ai.provider.name"] = provider
        if model is not None:
            start["gen_ai.request.model"] = model
        start["aiguard.feature"] = feature
        self.start_attributes = start  # the model call's span, at its start (for samplers)
        self.call_start_attributes = {"aiguard.feature": feature}
        if usage is False:
            self.reader: UsageReader | None = None
        elif usage is None or usage is True:
            self.reader = _by_class()
        else:
            custom = usage

            def reader(result: Any) -> Usage | None:
                return as_usage(custom(result))

            self.reader = reader
        self.budget = None if budget is None else budget_for_feature(feature, budget)
        self.slo = latency_slo
        self.stats = _stats.for_feature(feature)
        if latency_slo is not None:
            self.stats.slo = latency_slo
        self.record = self.stats.record  # bound once: one attribute lookup less per call
        # the price table the cached rates come from, and the rates by model name: one value,
        # replaced whole, so a call never pairs one table with another's rates
        self._priced: tuple[PriceTable | None, dict[str | None, Any]] = (None, {})
        self._sets: dict[Any, Any] = {}  # metric attribute sets, made once (see ``_metrics``)
        self._by_feature = {"aiguard.feature": feature}

    # -- usage and cost -----------------------------------------------------------------------

    def usage(self, result: Any) -> Usage | None:
        reader = self.reader
        if reader is None or result is None:
            return None
        try:
            usage: Usage | None = reader(result)
            return usage
        except Exception as exc:
            errors.report(f"usage reader of {self.feature!r}", exc)
            return None

    def cost(
        self,
        usage: Usage | None,
        model_called: bool,
        fallback_cost: int,
        failure: BaseException | None = None,
        why: str | None = None,
        model: str | None = None,
    ) -> int | None:
        """The call's cost in pico-units: the model's by the price table, plus the fallback
        handlers' own. None when the model was called and its price is unknown. A model call
        that failed (``failure``) without usage: an HTTP error status from the provider cost
        nothing; a timeout, a disconnect or any other failure costs unknown, and the warning
        says so; ``why`` says why no usage was read, when the caller knows (a stream without
        usage); ``model``: the model the result named, when no usage was read. Never raises."""
        try:
            table, cached = self._priced
            if usage is not None and model_called and table is not None:
                # the common case first: a model already priced by this table (the rates are
                # cached per model; an unknown price and a new table take the long way)
                rates = cached.get(usage.model or self.model)
                if rates is not None and runtime.prices is table:
                    return pico_cost(rates, usage) + fallback_cost
            if failure is not None and usage is None and model_called:
                if is_status_error(failure):
                    return fallback_cost  # refused by the provider: nothing billed
                if runtime.prices is None:
                    return None  # no price table: unknown anyway, nothing to warn about
                errors.warn_once(
                    f"failed-cost:{self.feature}:{type(failure).__qualname__}",
                    "aiguard: %s: the model call failed (%s) before any token usage was read: "
                    "what it cost is unknown",
                    self.feature,
                    type(failure).__qualname__,
                )
                return None
            return self._cost(usage, model_called, fallback_cost, why, model)
        except Exception as exc:
            errors.report(f"cost of {self.feature!r}", exc)
            return None

    def _cost(
        self,
        usage: Usage | None,
        model_called: bool,
        fallback_cost: int,
        why: str | None = None,
        named: str | None = None,
    ) -> int | None:
        if not model_called:
            return fallback_cost
        prices = runtime.prices
        if prices is None:
            return None  # no price table: the model's cost is unknown
        priced = self._priced
        if prices is not priced[0]:
            priced = self._priced = (prices, {})
        cached = priced[1]
        model = usage.model if usage is not None and usage.model else (named or self.model)
        rates = cached.get(model, _UNKNOWN)
        if rates is _UNKNOWN:
            if model is None:
                errors.warn_once(
                    f"no-model:{self.feature}",
                    "aiguard: %s: no model name (the result names none and the guard has no "
                    "model=): its calls' cost is unknown",
                    self.feature,
                )
                rates = None
            else:
                rates = _lookup(prices, model, self.model)
            cached[model] = rates
        if rates is None:
            return None
        if usage is None and rates.per_token:
            if why is not None:
                errors.warn_once(
                    f"no-usage:{self.feature}:{why}",
                    "aiguard: %s: model %r is priced per token and %s: cost unknown",
                    self.feature,
                    model,
                    why,
                )
                return None
            errors.warn_once(
                f"no-usage:{self.feature}",
                "aiguard: %s: model %r is priced per token but no token usage was read from "
                "its results: cost unknown (return the client's response, or pass usage=)",
                self.feature,
                model,
            )
            return None
        return pico_cost(rates, usage) + fallback_cost

    # -- per call ---------------------------------------------------------------------------

    def report(
        self,
        source: Source | None,
        reason: Reason,
        latency: float,
        usage: Usage | None,
        cost: int | None,
        model_latency: float | None = None,
        error_type: str | None = None,
        fallback_cost: int = 0,
        *,
        arm: str | None = None,
        tries: tuple[Attempt, ...] = (),
        first_chunk: float | None = None,
    ) -> None:
        """Stats, budget and metrics for one finished call. ``model_latency``: the duration of
        the call's last model try (None when the model was not called, or when that try is one
        of ``tries``); ``tries``: the model's failed tries before it (``retry=``), each its own
        model call; ``first_chunk``: a stream's time to first chunk."""
        try:
            self.record(source, reason, latency, usage, cost)
            budget = self.budget
            if budget is not None:
                hold = held.get()
                if hold is not None and hold.run is budget and reason in MODEL_REASONS:
                    held.set(hold.parent)  # the reservation the pre-call check took
                    budget.settle(hold, cost, fallback_cost)
                    if cost is None:
                        errors.warn_once(
                            f"budget-unknown:{self.feature}",
                            "aiguard: %s: a call's cost is unknown: the budget charges it its "
                            "reservation (configure prices, and return token usage or a "
                            "per-call price)",
                            self.feature,
                        )
                elif cost:
                    budget.spend(cost)
                elif cost is None:
                    budget.spend(fallback_cost)  # what is known of the call's cost
            if metrics_api._METER_PROVIDER is not None:
                m = telemetry.meters()
                if m is not None:
                    self._metrics(
                        m, source, reason, latency, usage, cost, model_latency, error_type, arm,
                        tries, first_chunk,
                    )  # fmt: skip
        except Exception as exc:
            errors.report(f"accounting of {self.feature!r}", exc)

    def _metrics(
        self,
        m: telemetry.Meters,
        source: Source | None,
        reason: Reason,
        latency: float,
        usage: Usage | None,
        cost: int | None,
        model_latency: float | None,
        error_type: str | None,
        arm: str | None,
        tries: tuple[Attempt, ...],
        first_chunk: float | None,
    ) -> None:
        # attribute sets are made once per guard and kept (by source, reason, arm; by provider,
        # response model, error type): the per-call work is a few dict lookups
        sets = self._sets
        key = (self.feature, source, reason, arm)
        ours = sets.get(key)
        if ours is None:
            ours = self._ours(key)
        m.call_duration.record(latency, ours[1])
        m.calls.add(key, ours[0], 1)
        if source is not None and source is not Source.MODEL:
            m.fallbacks.add(key[:3], ours[1], 1)
        if cost is None:
            m.cost_unknown.add(self.feature, self._by_feature, 1)
        elif cost:
            currency = runtime.prices.currency if runtime.prices is not None else "USD"
            m.cost.add(
                (self.feature, currency),
                {"aiguard.feature": self.feature, "aiguard.cost.currency": currency},
                cost / 1e12,
            )
        if model_latency is None and not tries and usage is None:
            return  # the model was not called (or nothing of it is known)
        for attempt in tries:  # each failed try was a model call of its own
            error = attempt.error
            kind = (
                "timeout"  # aiguard's own timeout: an exception made, never raised
                if error.__class__ is TimeoutError and error.__traceback__ is None
                else None
                if error is None
                else type(error).__qualname__
            )
            m.duration.record(attempt.latency, self._model_set(self.provider, None, kind)[0])
            if m.usage is not None:  # the latest conventions: a try without usage counts 0
                _no_usage(m.usage, self._model_set(self.provider, None, None))
        provider = usage.provider if usage is not None and usage.provider else self.provider
        response = usage.model if usage is not None else None
        model = self._model_set(provider, response, error_type)
        if model_latency is not None:
            m.duration.record(model_latency, model[0])
        if first_chunk is not None and m.first_chunk is not None:
            m.first_chunk.record(first_chunk, model[0] if error_type is None else
                                 self._model_set(provider, response, None)[0])  # fmt: skip
        counters = m.usage
        if usage is None:
            if counters is not None and model_latency is not None:
                _no_usage(counters, model)
            return
        tokens = model[1]
        if counters is None:  # the older conventions: a histogram by token type
            m.tokens.record(usage.input_tokens, tokens["input"])
            m.tokens.record(usage.output_tokens, tokens["output"])
        else:
            m.input_tokens.record(usage.input_tokens, tokens[None])
            m.output_tokens.record(usage.output_tokens, tokens[None])
            unknown = tokens["unknown"]
            where = model[2]
            counters[0].add(where, unknown, usage.input_tokens)
            counters[1].add(where, unknown, usage.output_tokens)
            if usage.cache_read_tokens:
                counters[2].add(where, unknown, usage.cache_read_tokens)
            if usage.cache_write_tokens:
                counters[3].add(where, unknown, usage.cache_write_tokens)
            if usage.reasoning_tokens:
                counters[4].add(where, unknown, usage.reasoning_tokens)
        # cache tokens with aiguard's split (read; write for 5 minutes or 1 hour), in both
        # generations: the older conventions' token types are input and output only
        if usage.cache_read_tokens:
            m.cache_tokens.add((*model[2], "r"), tokens["read"], usage.cache_read_tokens)
        write_1h = usage.cache_write_1h_tokens
        if usage.cache_write_tokens > write_1h:
            m.cache_tokens.add((*model[2], "5m"), tokens["5m"], usage.cache_write_tokens - write_1h)
        if write_1h:
            m.cache_tokens.add((*model[2], "1h"), tokens["1h"], write_1h)

    def _ours(self, key: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The calls counter's attributes (with the rollout arm) and the call duration's."""
        _, source, reason, arm = key
        src = source.value if source is not None else "none"
        base = {"aiguard.feature": self.feature, "aiguard.source": src, "aiguard.reason": reason}
        calls = base if arm is None else {**base, "aiguard.rollout.arm": arm}
        made = (calls, base)
        if len(self._sets) < _SETS_KEPT:
            self._sets[key] = made
        return made

    def _model_set(
        self, provider: str | None, response: str | None, error: str | None
    ) -> tuple[dict[str, Any], dict[Any, dict[str, Any]], tuple[Any, ...]]:
        """The model call's attribute sets: the duration's (with the feature and the error
        type), the token metrics' (by token type, and for the cache), and their key."""
        key = (provider, response, error)
        found = self._sets.get(key)
        if found is not None:
            return found  # type: ignore[no-any-return]
        gen_ai = {
            "gen_ai.operation.name": self.operation,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": self.model,
            "gen_ai.response.model": response,
        }
        gen_ai = {k: v for k, v in gen_ai.items() if v is not None}
        duration = {**gen_ai, "aiguard.feature": self.feature}
        if error is not None:
            duration["error.type"] = error
        tokens: dict[Any, dict[str, Any]] = {
            None: gen_ai,
            "input": {**gen_ai, "gen_ai.token.type": "input"},
            "output": {**gen_ai, "gen_ai.token.type": "output"},
            "unknown": {**gen_ai, "gen_ai.token.modality": "unknown"},
            "read": {**gen_ai, **_CACHE_READ},
            "5m": {**gen_ai, **_WRITE_5M},
            "1h": {**gen_ai, **_WRITE_1H},
        }
        made = (duration, tokens, tuple(gen_ai.items()))  # the token tallies' key: the set itself
        if len(self._sets) < _SETS_KEPT:
            self._sets[key] = made
        return made

    def span_attributes(
        self, outcome: Outcome[Any], *, model: bool = True
    ) -> tuple[dict[str, Any], str | None]:
        """The span's attributes and error (if the call served nothing); ``model``: the span is
        the model call's (CLIENT), else the guarded call's own (INTERNAL: no ``gen_ai.*``)."""
        cost = outcome.cost
        return self.attributes(
            outcome.call_id,
            outcome.source,
            outcome.reason,
            outcome.confidence,
            outcome.threshold,
            outcome.rollout_percent,
            outcome.arm,
            outcome.usage,
            None if cost is None else pico_of(cost),
            tuple(a.handler for a in outcome.attempts),
            outcome.detail,
            outcome.exception,
            model=model,
            result=outcome.model_result if model else None,
            ttfc=outcome.time_to_first_chunk,
        )

    def model_attributes(
        self, result: Any, exception: BaseException | None, timed_out: bool
    ) -> dict[str, Any]:
        """The model call's span, when the call goes on to the fallback chain: what the model
        answered (model, usage, response id, finish reasons) or how it failed."""
        attrs: dict[str, Any] = {}
        usage = self.usage(result) if result is not None else None
        if usage is not None:
            _usage_attributes(attrs, usage, self.provider)
        if result is not None:
            facts.response(attrs, result)
        if exception is not None:
            attrs["error.type"] = type(exception).__qualname__
            facts.server(attrs, exception)
        elif timed_out:
            attrs["error.type"] = "timeout"
        return attrs

    def attributes(
        self,
        call_id: str,
        source: Source | None,
        reason: Reason,
        confidence: float | None,
        threshold: float | None,
        percent: float | None,
        arm: str | None,
        usage: Usage | None,
        cost: int | None,
        handlers: tuple[str, ...],
        detail: str | None,
        exception: BaseException | None,
        *,
        model: bool = True,
        result: Any = None,
        ttfc: float | None = None,
    ) -> tuple[dict[str, Any], str | None]:
        """The span's attributes (None values left out) and error, from the call's figures:
        the served path calls this without building an Outcome. ``model``: the span is the
        model call's (CLIENT: the ``gen_ai.*`` figures too), else the guarded call's own."""
        # Reason and Source are str enums: OpenTelemetry takes them as the strings they are.
        # The span already has what was known at its start (``start_attributes``: the operation,
        # the guard's provider and model, the feature): each attribute set costs the SDK
        # about a microsecond, so none is set twice.
        attrs: dict[str, Any] = {"aiguard.call_id": call_id, "aiguard.reason": reason}
        if reason in _KILLED:
            attrs["aiguard.killed"] = True  # absent otherwise: one attribute less per call
        if model:
            if usage is not None:
                _usage_attributes(attrs, usage, self.provider)
            if result is not None:
                facts.response(attrs, result)
            if ttfc is not None:
                attrs["aiguard.time_to_first_chunk"] = ttfc
                if semconv.current[0]:
                    attrs["gen_ai.response.time_to_first_chunk"] = ttfc
        if source is not None:
            attrs["aiguard.source"] = source
        if confidence is not None:
            attrs["aiguard.confidence"] = confidence
        if threshold is not None:
            attrs["aiguard.threshold"] = threshold
        if percent is not None:
            attrs["aiguard.rollout.percent"] = percent
            attrs["aiguard.rollout.arm"] = arm
        if cost is not None:
            currency = runtime.prices.currency if runtime.prices is not None else "USD"
            attrs["aiguard.cost"] = cost / 1e12
            attrs["aiguard.cost.currency"] = currency
            if model and semconv.current[0]:  # the proposed cost attributes: model spans only
                attrs["gen_ai.usage.cost.amount"] = cost / 1e12
                attrs["gen_ai.usage.cost.currency"] = currency
                attrs["gen_ai.usage.cost.source"] = "local"
        if handlers:
            attrs["aiguard.fallback.handlers"] = handlers
        # the detail can hold an exception's message or model output: shown as telemetry may
        # show it (the redact= hook; without one, aiguard's own texts and exception types)
        shown = None
        if reason is not Reason.SERVED and detail:
            shown = telemetry.detail_text(reason, detail, exception)
            if shown:
                attrs["aiguard.detail"] = shown
        if exception is not None:
            attrs["error.type"] = type(exception).__qualname__
        elif reason is Reason.TIMEOUT:
            attrs["error.type"] = "timeout"
        error = None
        if source is None:
            error = f"{reason.value}: {shown or 'not served'}"
        return attrs, error


def _usage_attributes(attrs: dict[str, Any], usage: Usage, provider: str | None) -> None:
    """A model call's usage on its span, under the names of the conventions in force."""
    if usage.model is not None:
        attrs["gen_ai.response.model"] = usage.model
    if usage.provider and provider is None:
        attrs["gen_ai.provider.name"] = usage.provider
    attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
    attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
    # cache figures when there are any ("when applicable", as the conventions say)
    if usage.cache_read_tokens:
        attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_tokens
    if usage.cache_write_tokens:
        if semconv.current[0]:
            attrs["gen_ai.usage.cache_write.input_tokens"] = usage.cache_write_tokens
        else:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
    if usage.cache_write_1h_tokens:
        attrs["aiguard.usage.cache_creation_1h.input_tokens"] = usage.cache_write_1h_tokens
    if usage.reasoning_tokens:
        attrs["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens


_UNKNOWN: Any = object()
_KILLED = frozenset({Reason.KILLED, Reason.AUTO_KILLED})
_CACHE_READ = {"aiguard.cache.operation": "read"}
_WRITE_5M = {"aiguard.cache.operation": "write", "aiguard.cache.ttl": "5m"}
_WRITE_1H = {"aiguard.cache.operation": "write", "aiguard.cache.ttl": "1h"}
_SETS_KEPT = 256  # attribute sets one guard keeps (more: made per call; none is unbounded)
_READERS_KEPT = 64  # result classes one guard remembers a reader for (more: looked up per call)


def _no_usage(counters: tuple[Any, ...], model: Any) -> None:
    """The latest conventions: a model call without usage adds 0 input and output tokens of
    ``unknown`` modality (so the series exists, and each call is counted)."""
    unknown = model[1]["unknown"]
    counters[0].add(model[2], unknown, 0)
    counters[1].add(model[2], unknown, 0)


def _by_class() -> Reader:
    """The default usage reader of one guard: the reader for each result's class (see
    ``readers``), chosen on the first result of that class and kept."""
    readers: dict[type, Reader] = {}

    def read(result: Any) -> Usage | None:
        cls = result.__class__
        found = readers.get(cls)
        if found is None:
            found = reader_for(cls)
            if len(readers) < _READERS_KEPT:
                readers[cls] = found
        return found(result)

    return read


# what a provider appends to a model name for a dated snapshot: -2025-04-14, -20250929, @20240620
_SNAPSHOT = re.compile(r"^[-@](\d{4}-\d{2}-\d{2}|\d{8})$")


def _lookup(prices: PriceTable, model: str | None, requested: str | None) -> Any:
    """The rates for ``model``: exact name, else the guard's ``model=``, else a table name that
    ``model`` is a dated snapshot of (``gpt-4.1-2025-04-14`` -> ``gpt-4.1``)."""
    rates = prices._rates  # type: ignore[attr-defined]
    for name in (model, requested):
        if name is not None and name in rates:
            return rates[name]
    if model is not None:
        for name in rates:
            if model.startswith(name) and _SNAPSHOT.match(model[len(name) :]):
                return rates[name]
    return prices.rates(model)  # logs the once-per-model warning, returns None
