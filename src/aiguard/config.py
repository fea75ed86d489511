"""Global configuration: ``configure(...)`` in code, ``load_config(path)`` from TOML or JSON.

A config file::

    store = "aiguard.db"          # the durable store (review queue)

    [features.ticket-triage]
    confidence = "score"
    threshold = 0.8
    timeout = 2.5                 # seconds

Settings given to ``guard()`` win over the configured ones for the same feature; leave a setting
out of the decorator to let configuration decide it.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from ._checks import (
    FeatureName,
    check_currency,
    check_limits,
    check_money,
    check_segments,
    check_text,
    explain,
    named,
    seconds,
)
from ._runtime import lifecycle
from ._runtime.records import Capture
from ._runtime.state import UNSET, runtime
from .budget import amount
from .control import (
    ControlFile,
    ControlSource,
    read_sources,
    start_sources,
    stop_sources,
    warn_unknown,
)
from .exceptions import ConfigError
from .pricing import PriceTable
from .store import Store, open_store
from .targets import parse_targets

__all__ = ["AiguardConfig", "FeatureConfig", "configure", "load_config"]

CANVAS_AMOUNTS = ("value_per_accepted", "baseline_cost")

logger = logging.getLogger("aiguard")

_Number = Annotated[float, Field(strict=True)]


class FeatureConfig(BaseModel):
    """One feature's settings, as a config file or ``configure(features=...)`` gives them.

    Example:
        >>> import aiguard
        >>> aiguard.FeatureConfig(confidence="score", threshold=0.8).threshold
        0.8
        >>> aiguard.FeatureConfig(owner="support-ai@acme.example", value_per_accepted="4.50 USD",
        ...                       baseline_cost=6).currency
        'USD'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    confidence: str | None = Field(default=None, min_length=1)
    threshold: _Number | None = Field(default=None, ge=0.0, le=1.0)
    timeout: _Number | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    targets: tuple[str, ...] = ()  # e.g. "acceptance_rate >= 0.40", "p95_latency <= 0.5 s"
    estimate: Decimal | None = None  # one call's worst-case cost, reserved from the budget
    # parameter names or dotted paths (a mapping names them; in code, callables too)
    segments: tuple[str | Callable[..., Any], ...] | dict[str, str | Callable[..., Any]] | None = (
        None
    )
    audit: _Number | None = Field(default=None, ge=0.0, le=1.0)  # share of served answers audited
    drift_rollback: bool = False  # a failing drift target found by aiguard.check() rolls back
    # how much worse than the best segment a segment may be before the report flags it
    segment_margin: _Number | None = Field(default=None, ge=0.0, lt=1.0)
    # the product canvas (docs/canvas.md): who owns the feature, what it is worth, what for
    owner: str | None = None
    value_per_accepted: Decimal | None = None  # money a correct accepted answer is worth
    baseline_cost: Decimal | None = None  # the cost of one task done without AI
    currency: str | None = None  # of the two amounts (default: the price table's)
    intended_use: str | None = None
    limits: str | tuple[str, ...] | None = None  # what the feature must not be used for

    @pydantic.model_validator(mode="before")
    @classmethod
    def _amounts_currency(cls, data: Any) -> Any:
        """The currency an amount names (``"4.50 USD"``) is the canvas's ``currency``; the
        amounts and ``currency`` must agree."""
        if not isinstance(data, Mapping):
            return data
        named_by: dict[str, str] = {}
        if isinstance(data.get("currency"), str):
            try:
                named_by["currency"] = check_currency("currency", data["currency"])
            except ConfigError:
                return data  # the field's own check says why
        for field in CANVAS_AMOUNTS:
            value = data.get(field)
            if value is None:
                continue
            try:
                _, code = check_money(field, value)
            except ConfigError:
                return data  # the field's own check says why
            if code is not None:
                named_by[field] = code
        if len(set(named_by.values())) > 1:
            given = ", ".join(f"{named(k, data[k])}" for k in named_by)
            raise ValueError(
                f"{given}: the canvas amounts name different currencies; give them in one "
                "currency (nothing converts between currencies)"
            )
        if named_by and data.get("currency") is None:
            return {**data, "currency": next(iter(named_by.values()))}
        return data

    @pydantic.field_validator("value_per_accepted", "baseline_cost", mode="before")
    @classmethod
    def _money(cls, value: Any, info: pydantic.ValidationInfo) -> Decimal | None:
        if value is None:
            return None
        try:
            return check_money(str(info.field_name), value)[0]
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @pydantic.field_validator("owner", "intended_use", mode="before")
    @classmethod
    def _text(cls, value: Any, info: pydantic.ValidationInfo) -> str | None:
        if value is None:
            return None
        try:
            return check_text(str(info.field_name), value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @pydantic.field_validator("limits", mode="before")
    @classmethod
    def _limits(cls, value: Any) -> str | tuple[str, ...] | None:
        if value is None:
            return None
        try:
            return check_limits(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @pydantic.field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, value: Any) -> str | None:
        if value is None:
            return None
        try:
            return check_currency("currency", value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @pydantic.field_validator("segments", mode="before")
    @classmethod
    def _segments(cls, value: Any) -> Any:
        try:
            check_segments("<configured>", value)  # the one check, as for guard(segments=)
        except ConfigError as exc:
            raise ValueError(str(exc).split(": ", 1)[1]) from None
        return tuple(value) if isinstance(value, list) else value

    @pydantic.field_validator("estimate", mode="before")
    @classmethod
    def _estimate(cls, value: Any) -> Decimal | None:
        if value is None:
            return None
        try:
            return amount("estimate", value)  # the one amount check, as for Budget(limit=)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @pydantic.field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float | None) -> float | None:
        if value is None:
            return None
        try:
            return seconds("timeout", value)  # the one duration check, as for guard(timeout=)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @pydantic.field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> tuple[str, ...]:
        try:  # a list of texts, or a mapping {"acceptance_rate": ">= 85 %"}; units checked
            return tuple(str(t) for t in parse_targets(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class AiguardConfig(BaseModel):
    """The whole configuration file.

    Example:
        >>> import aiguard
        >>> cfg = aiguard.AiguardConfig.model_validate(
        ...     {"store": ":memory:", "features": {"triage": {"threshold": 0.7, "confidence": "p"}}}
        ... )
        >>> cfg.features["triage"].threshold
        0.7
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str | None = None
    timeout_workers: int | None = Field(default=None, ge=1, le=1024, strict=True)
    prices: str | PriceTable | None = None  # a price file's path, or the table inline
    features: dict[FeatureName, FeatureConfig] = Field(default_factory=dict)


def configure(
    *,
    store: Store | str | os.PathLike[str] | None = UNSET,
    features: Mapping[str, FeatureConfig | Mapping[str, Any]] | None = UNSET,
    timeout_workers: int = UNSET,
    control: Any = UNSET,
    control_interval: float | timedelta = UNSET,
    missing_ok: bool = False,
    prices: PriceTable | str | os.PathLike[str] | Mapping[str, Any] | None = UNSET,
    record_calls: bool = UNSET,
    capture: bool = UNSET,
    redact: Callable[[Any], Any] | None = UNSET,
    capture_max_bytes: int = UNSET,
    budgets: Any = UNSET,
    exit_timeout: float | timedelta = UNSET,
    record_queue_bytes: int = UNSET,
    remembered_calls_bytes: int = UNSET,
) -> None:
    """Set process-wide options; what you leave out keeps its current value.

    Args:
        store: the durable store for the review queue: a SQLite file path, ``":memory:"`` (tests),
            or an :class:`aiguard.Store`. ``None`` removes it. Default: the ``AIGUARD_STORE``
            environment variable, if set.
        features: per-feature settings (replacing those configured before), by feature name.
        timeout_workers: how many threads may run sync model calls that have a ``timeout``.
        control: where control state (kill switches, rollout percentages, thresholds) comes
            from, polled in the background: a control file path (TOML or JSON) or ``file://``
            URL, a ``redis://``, ``rediss://`` or ``unix://`` URL (``aiguard.redis``), an
            :class:`aiguard.ControlSource` (e.g. ``aiguard.openfeature.OpenFeatureControl``),
            or a list of them; ``None`` stops polling. Each is read once now: a bad one raises,
            and so does a control file that does not exist (unless ``missing_ok``) or a URL of
            another scheme (``http://...`` is never taken for a file name).
        control_interval: how often control files and Redis are checked for changes (default
            1 s); applies to the sources given here and in later calls.
        missing_ok: accept control files that do not exist yet: they count as empty (nothing
            killed) and are read when they appear.
        prices: the price table for model calls: an :class:`aiguard.PriceTable`, a TOML/JSON
            price file, or a mapping (``{"currency": "USD", "models": {...}}``); ``None``
            removes it (costs of model calls become unknown).
        record_calls: with a store configured, write a record of every guarded call (default
            True; in batches, off the call's path).
        capture: also keep each call's inputs (by parameter name) and served output in its
            record (default False).
        redact: a function applied to inputs and outputs before they are kept, and to the free
            texts that go to OpenTelemetry (exception messages, a call's detail, feedback
            comments and labels): it is given the text and returns what may be shown (text), or
            None to leave it out. Without one, spans show exception types only, and no
            comments; ``redact=lambda value: value`` shows them as they are. ``None`` removes it.
        capture_max_bytes: the most JSON kept per captured value (default 4096); longer values
            are cut and marked ``{"$truncated": ...}``.
        budgets: where budgets' spend is shared between replicas: an
            ``aiguard.redis.RedisBudgets``, or a ``redis://``, ``rediss://`` or ``unix://`` URL
            for one (Redis must answer now: ConfigError naming the URL if not); ``None``: each
            process counts alone (the default).
        exit_timeout: the most the process waits at exit (seconds or a timedelta, default 5 s)
            for queued call records to reach the store; what is still queued then is counted
            and logged, and the process exits. ``0`` does not wait at all (a warning says so).
        record_queue_bytes: the most memory call records waiting to be written may hold
            (default 64 MiB); past it new records are dropped and counted. A queued record
            never holds the served value unless ``capture`` is on.
        remembered_calls_bytes: the most memory the calls remembered for feedback may hold
            (default 16 MiB: about 50,000 calls; ids and figures, never served values).

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:", features={"triage": {"threshold": 0.8,
        ...                                                          "confidence": "score"}})
    """
    parsed_features: dict[str, FeatureConfig] | None = None
    if features is not UNSET:
        if features is not None and not isinstance(features, Mapping):
            raise ConfigError(
                f"{named('features', features)} is invalid: give a mapping of feature names to "
                "their settings, e.g. {'triage': {'confidence': 'score', 'threshold': 0.8}}"
            )
        parsed_features = _features(features or {}, source="configure(features=...)")
    if timeout_workers is not UNSET and (
        isinstance(timeout_workers, bool)
        or not isinstance(timeout_workers, int)
        or not 1 <= timeout_workers <= 1024
    ):
        raise ConfigError(
            f"timeout_workers={timeout_workers!r} is invalid: must be a whole number in [1, 1024]"
        )
    interval = runtime.control_interval
    if control_interval is not UNSET:
        interval = seconds("control_interval", control_interval)
    if not isinstance(missing_ok, bool):
        raise ConfigError(f"{named('missing_ok', missing_ok)} is invalid: must be True or False")
    if store is not UNSET and store is not None:
        _check_store_url(store)
    if budgets is not UNSET:
        _check_budgets(budgets)
    table: Any = UNSET
    if prices is None:
        table = None
    elif isinstance(prices, PriceTable):
        table = prices
    elif isinstance(prices, str | os.PathLike):
        table = PriceTable.load(prices)
    elif isinstance(prices, Mapping):
        table = PriceTable.parse(prices, source="configure(prices=...)")
    elif prices is not UNSET:
        raise ConfigError(
            f"prices={prices!r} is invalid: give an aiguard.PriceTable, a price file path or a "
            "mapping"
        )
    if record_calls is not UNSET and not isinstance(record_calls, bool):
        raise ConfigError(f"record_calls={record_calls!r} is invalid: must be True or False")
    if capture is not UNSET and not isinstance(capture, bool):
        raise ConfigError(f"capture={capture!r} is invalid: must be True or False")
    if redact is not UNSET and redact is not None:
        if not callable(redact):
            raise ConfigError(f"redact={redact!r} is invalid: must be a function of one value")
        _one_value("redact", redact)
    if capture_max_bytes is not UNSET and (
        isinstance(capture_max_bytes, bool)
        or not isinstance(capture_max_bytes, int)
        or capture_max_bytes < 16
    ):
        raise ConfigError(
            f"capture_max_bytes={capture_max_bytes!r} is invalid: must be a whole number >= 16"
        )
    for name, value in (
        ("record_queue_bytes", record_queue_bytes),
        ("remembered_calls_bytes", remembered_calls_bytes),
    ):
        if value is not UNSET and (
            isinstance(value, bool) or not isinstance(value, int) or not 2**10 <= value <= 2**40
        ):
            raise ConfigError(
                f"{name}={value!r} is invalid: must be a whole number of bytes from 1 KiB to 1 TiB"
            )
    wait_at_exit: float = runtime.exit_timeout
    if exit_timeout is not UNSET:
        wait_at_exit = _exit_timeout(exit_timeout)
    if parsed_features is not None or table is not UNSET:
        _canvas_currency(
            runtime.features if parsed_features is None else parsed_features,
            runtime.prices if table is UNSET else table,
        )
    if parsed_features is not None:
        with runtime.lock:
            for core in list(runtime.cores):  # check every live guard before opening anything
                core.compile(parsed_features.get(core.feature))
    # what opens connections or starts threads comes last, and is undone if a later one fails
    opened = None if store is UNSET or store is None else open_store(store)
    sources: list[Any] | None = None
    made: list[Any] = []  # the sources made here from paths and URLs (closed on failure)
    try:
        first_read: dict[str, Any] = {}
        if control is not UNSET and control is not None:
            sources = []
            for spec in control if isinstance(control, list | tuple) else [control]:
                source = as_source(spec, interval)
                sources.append(source)
                if source is not spec:
                    made.append(source)
            first_read = _read_first(sources, control, missing_ok=missing_ok)
        shared: Any = UNSET
        if budgets is not UNSET:
            shared = _redis_budgets(budgets) if isinstance(budgets, str) else budgets
    except BaseException:
        if opened is not None and opened is not store:
            opened.close()
        _close(made)
        raise
    old_budgets: Any = None
    with runtime.lock:
        if control_interval is not UNSET:
            runtime.control_interval = interval
        if store is not UNSET:
            lifecycle.install_store(store, opened, owned=opened is not store)
        if exit_timeout is not UNSET:
            runtime.exit_timeout = wait_at_exit
        if parsed_features is not None:
            runtime.features = parsed_features
        if timeout_workers is not UNSET:
            runtime.timeout_workers = timeout_workers
        if table is not UNSET:
            runtime.prices = table
        if shared is not UNSET:
            old_budgets, runtime.budget_store = runtime.budget_store, shared
            runs = list(runtime.budgets.items())
        if record_queue_bytes is not UNSET:
            runtime.record_queue_bytes = record_queue_bytes
        if remembered_calls_bytes is not UNSET:
            runtime.remembered_calls_bytes = remembered_calls_bytes
        recording = (
            record_calls,
            capture,
            redact,
            capture_max_bytes,
            record_queue_bytes,
            remembered_calls_bytes,
        )
        if any(v is not UNSET for v in recording):
            if record_calls is not UNSET:
                runtime.record_calls = record_calls
            if redact is not UNSET:
                runtime.redact = redact
            old = runtime.capture
            keep = capture if capture is not UNSET else old is not None
            runtime.capture = (
                Capture(
                    runtime.redact,
                    capture_max_bytes
                    if capture_max_bytes is not UNSET
                    else (old.max_bytes if old else 4096),
                )
                if keep
                else None
            )
            lifecycle.replace_recorder()
        runtime.bump()
    if shared is not UNSET:  # network work, outside the lock
        if old_budgets is not None and old_budgets is not shared and runtime.closable(old_budgets):
            old_budgets.close()
        if shared is not None:
            for feature, (_, run) in runs:
                shared.attach(run, feature)
    if sources is not None:
        start_sources(sources, first_read)
    elif control is None:
        stop_sources()
    if parsed_features:
        warn_unknown(parsed_features, "configure(features=...)")


def _canvas_currency(features: Mapping[str, FeatureConfig], prices: PriceTable | None) -> None:
    """A feature's canvas amounts are in the price table's currency (costs and value are
    compared, never converted): ConfigError naming the feature and both currencies if not."""
    if prices is None:
        return
    for name, cfg in features.items():
        if cfg.currency is not None and cfg.currency.upper() != str(prices.currency).upper():
            amounts = ", ".join(
                named(field, getattr(cfg, field))
                for field in CANVAS_AMOUNTS
                if getattr(cfg, field) is not None
            )
            raise ConfigError(
                f"feature {name!r}: currency {cfg.currency!r}"
                + (f" (of {amounts})" if amounts else "")
                + f" is not the price table's currency {prices.currency!r}: give the amounts "
                f"in {prices.currency} (nothing converts between currencies)"
            )


def _read_first(sources: list[Any], control: Any, *, missing_ok: bool) -> dict[str, Any]:
    """Each control source read once, before configure() changes anything; a control file that
    does not exist is an error unless ``missing_ok``."""
    if not missing_ok:
        for source in sources:
            if isinstance(source, ControlFile) and not _exists(source.path):
                raise ConfigError(
                    f"control file {str(source.path)!r} does not exist: check the path, or pass "
                    "missing_ok=True to start without it (nothing killed; it is read when it "
                    "appears)"
                )
    try:
        return read_sources(sources)
    except ConfigError:
        raise
    except Exception as exc:  # a source that cannot be read now (Redis unreachable, ...)
        raise ConfigError(
            f"{named('control', _redacted(control))} cannot be read: {type(exc).__name__}: {exc}"
        ) from exc


def _close(made: list[Any]) -> None:
    """Close the sources configure() made (their connections), never the caller's own."""
    for source in made:
        close = getattr(source, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:  # pragma: no cover - a client that never connected
                logger.debug("aiguard: closing %r failed: %r", source, exc)


def _exists(path: Path) -> bool:
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True  # there, but unreadable: reading it says why
    return True


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
REDIS_SCHEMES = ("redis", "rediss", "unix")


def url_scheme(value: Any) -> str | None:
    """The scheme of ``value`` when it is a URL (``scheme://...``), lower-cased; else None.

    Example:
        >>> url_scheme("REDIS://cache:6379/0"), url_scheme("ops/control.toml")
        ('redis', None)
    """
    if not isinstance(value, str):
        return None
    found = _URL.match(value)
    return found.group(1).lower() if found else None


def as_source(spec: Any, interval: float | timedelta) -> ControlSource:
    """The control source ``spec`` names: a path or ``file://`` URL (a control file), a
    ``redis://``/``rediss://``/``unix://`` URL, or a ControlSource as it is; a URL of another
    scheme is a ConfigError naming it."""
    scheme = url_scheme(spec)
    if scheme in REDIS_SCHEMES:
        from .redis import RedisControl

        try:
            return RedisControl(spec, interval=interval)
        except ConfigError:
            raise
        except Exception as exc:  # a URL redis-py cannot use: a bad port, database, option
            raise ConfigError(
                f"{named('control', _redacted(spec))} is invalid: {type(exc).__name__}: {exc}"
            ) from None
    if scheme == "file":
        return ControlFile(_file_path("control", spec), interval=interval)
    if scheme is not None:
        raise ConfigError(
            f"{named('control', _redacted(spec))} is invalid: the URL scheme {scheme!r} is not "
            "supported: give a control file path (or a file:// URL), a redis://, rediss:// or "
            "unix:// URL, or a ControlSource (aiguard.openfeature.OpenFeatureControl reads a "
            "feature-flag service)"
        )
    if isinstance(spec, str | os.PathLike):
        if not os.fspath(spec):
            raise ConfigError(f"{named('control', spec)} is invalid: give a control file path")
        return ControlFile(spec, interval=interval)
    if isinstance(spec, ControlSource):
        return spec
    raise ConfigError(
        f"{named('control', spec)} is invalid: give a control file path or a ControlSource"
    )


def _file_path(name: str, url: str) -> str:
    """The local path of a ``file://`` URL (``file:///etc/x.toml``, ``file://localhost/...``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path:
        raise ConfigError(
            f"{named(name, url)} is invalid: a file:// URL names a local file "
            "(file:///path/to/control.toml)"
        )
    return urllib.request.url2pathname(parts.path)


def _check_store_url(store: Any) -> None:
    """A store given as a URL must be one a store reads (PostgreSQL, SQLite)."""
    scheme = url_scheme(store)
    if scheme is not None and scheme not in ("postgresql", "postgres", "sqlite"):
        raise ConfigError(
            f"{named('store', _redacted(store))} is invalid: the URL scheme {scheme!r} is not "
            "supported: give a SQLite file path (or sqlite:///path), a postgresql:// URL or an "
            "aiguard.Store"
        )


def _check_budgets(budgets: Any) -> None:
    if budgets is None or hasattr(budgets, "attach"):
        return
    scheme = url_scheme(budgets)
    if scheme in REDIS_SCHEMES:
        return
    why = (
        f"the URL scheme {scheme!r} is not supported: "
        if scheme is not None
        else "budgets are shared through Redis: "
    )
    raise ConfigError(
        f"{named('budgets', _redacted(budgets))} is invalid: {why}give a redis://, rediss:// or "
        "unix:// URL, or an aiguard.redis.RedisBudgets"
    )


def _redis_budgets(url: str) -> Any:
    """A RedisBudgets for ``url``, once Redis answered (ConfigError naming the URL if not)."""
    from .redis import RedisBudgets, _client

    shown_url = _redacted(url)
    try:
        client = _client(url, 2.0)
    except ConfigError:
        raise
    except Exception as exc:  # a URL redis-py cannot use: a bad port, database, option
        raise ConfigError(
            f"{named('budgets', shown_url)} is invalid: {type(exc).__name__}: {exc}"
        ) from None
    try:
        client.ping()
    except Exception as exc:
        raise ConfigError(
            f"{named('budgets', shown_url)} cannot be reached: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        client.close()
    return RedisBudgets(url)


def _one_value(name: str, fn: Any) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None)
    except TypeError:
        raise ConfigError(
            f"{named(name, fn)} is invalid: it is called with one value, and its signature "
            f"{signature} cannot take it"
        ) from None


def _redacted(control: Any) -> Any:
    """``control`` for an error message: a URL's password replaced by ``***``."""
    if isinstance(control, list | tuple):
        return type(control)(_redacted(c) for c in control)
    if not isinstance(control, str) or "@" not in control:
        return control
    try:
        parts = urllib.parse.urlsplit(control)
        if parts.password is None:
            return control
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return control


def _exit_timeout(value: Any) -> float:
    if (value == 0 or value == timedelta(0)) and not isinstance(value, bool):
        logger.warning(
            "aiguard: configure(exit_timeout=0): call records still queued at exit will not be "
            "written (they are counted and logged)"
        )
        return 0.0
    return seconds("exit_timeout", value)


def _features(raw: Mapping[str, Any], *, source: str) -> dict[str, FeatureConfig]:
    try:
        return AiguardConfig.model_validate({"features": dict(raw)}).features
    except pydantic.ValidationError as exc:
        raise ConfigError(explain(exc, source)) from None


def load_config(path: str | os.PathLike[str]) -> AiguardConfig:
    """Load a TOML or JSON config file, validate it, and apply it; returns what was loaded.

    A bad file raises :class:`aiguard.ConfigError` naming the file, the feature, the field and
    the value, and changes nothing.

    Example:
        >>> import aiguard, pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "aiguard.toml"
        >>> _ = path.write_text('[features.triage]\\nconfidence = "score"\\nthreshold = 0.75\\n')
        >>> aiguard.load_config(path).features["triage"].threshold
        0.75
    """
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc.strerror}") from None
    try:
        if p.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            raw = tomllib.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid {_kind(p)}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {str(p)!r} cannot be read: it is nested too deep") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(p)!r}: the top level must be a table/object")
    try:
        cfg = AiguardConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(explain(exc, f"config file {str(p)!r}")) from None
    store: Any = UNSET
    if cfg.store is not None:
        store = (
            cfg.store
            if cfg.store == ":memory:" or os.path.isabs(cfg.store)
            else str(p.parent / cfg.store)
        )
    prices: Any = UNSET
    if isinstance(cfg.prices, PriceTable):
        prices = cfg.prices
    elif isinstance(cfg.prices, str):
        prices = cfg.prices if os.path.isabs(cfg.prices) else str(p.parent / cfg.prices)
    configure(
        prices=prices,
        store=store,
        features=cfg.features if "features" in cfg.model_fields_set else UNSET,
        timeout_workers=UNSET if cfg.timeout_workers is None else cfg.timeout_workers,
    )
    return cfg


def _kind(p: Path) -> str:
    return "JSON" if p.suffix.lower() == ".json" else "TOML"
