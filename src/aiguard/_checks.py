"""Every configuration-time check, written once.

Each check takes the value as given and returns it normalised, or raises
:class:`aiguard.ConfigError` naming the field and the value: durations (seconds or a
``timedelta``), numbers in [0, 1], names, the "a threshold needs a confidence" rule, and the
wording of pydantic's validation errors. Nothing here runs per call.
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from decimal import Context, Decimal
from typing import Annotated, Any

import pydantic

from ._runtime.state import UNSET
from .exceptions import ConfigError

Validator = Callable[[Any], Any]


def shown(value: Any, limit: int = 500) -> str:
    """``repr(value)`` for an error message, whatever the value: never raises (a repr that
    fails, or an int too long for text, is described instead), and cut after ``limit``
    characters."""
    try:
        text = repr(value)
    except Exception:
        if isinstance(value, int):
            return f"<int of {value.bit_length()} bits>"
        return f"<{type(value).__qualname__} object whose repr() failed>"
    if len(text) > limit:
        return f"{text[:limit]}... ({len(text)} characters)"
    return text


def named(name: str, value: Any) -> str:
    """``name=value`` for an error message; ``Policy(field)`` becomes ``Policy(field=value)``."""
    if name.endswith(")") and "(" in name:
        return f"{name[:-1]}={shown(value)})"
    return f"{name}={shown(value)}"


def seconds(name: str, value: Any) -> float:
    """The one duration check: ``value`` (seconds or a timedelta) as positive, finite seconds
    that a thread can wait for; ConfigError naming ``name`` and the value otherwise."""
    given = value
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        value = math.nan
    try:
        f = float(value)
    except Exception:  # too large for a float, or a number type whose __float__ fails
        f = math.inf
    if not (f > 0 and math.isfinite(f)):
        raise ConfigError(
            f"{named(name, given)} is invalid: must be positive seconds or a timedelta"
        )
    if f > threading.TIMEOUT_MAX:
        raise ConfigError(
            f"{named(name, given)} is invalid: longer than any wait can be "
            f"({threading.TIMEOUT_MAX:.0f} s)"
        )
    return f


def unit_interval(name: str, value: Any) -> float:
    """The one [0, 1] check: ``value`` as a float in [0, 1]; ConfigError naming ``name`` and
    the value otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{named(name, value)} is invalid: must be a number in [0, 1]")
    try:
        f = float(value)
    except Exception:  # too large for a float, or a number type whose __float__ fails
        f = math.nan
    if not 0.0 <= f <= 1.0:
        raise ConfigError(f"{named(name, value)} is invalid: must be a number in [0, 1]")
    return f


def needs_confidence(feature: str, threshold: Any, confidence: Any) -> None:
    """A threshold is compared with the result's confidence: without confidence= it is a
    setting that silently does nothing, so it is an error."""
    if threshold is not None and threshold is not UNSET and confidence is None:
        raise ConfigError(
            f"feature {feature!r}: threshold={threshold!r} needs confidence=: say which "
            "attribute, key or callable gives the result's confidence"
        )


def check_feature(feature: Any) -> str:
    """The one feature-name check (guards, configuration, control state, the CLI): a non-empty
    text without surrounding spaces; ConfigError naming the value otherwise.

    Example:
        >>> check_feature("ticket-triage")
        'ticket-triage'
    """
    if not isinstance(feature, str) or not feature.strip() or feature != feature.strip():
        raise ConfigError(
            f"{named('feature', feature)} is invalid: must be a non-empty name without "
            "surrounding spaces"
        )
    return feature


def _feature_key(name: str) -> str:
    if not name.strip() or name != name.strip():
        raise ValueError(
            f"feature name {shown(name)} is invalid: must be a non-empty name without "
            "surrounding spaces"
        )
    return name


# a feature name as a key of a configuration or control mapping (pydantic reports it by key)
FeatureName = Annotated[str, pydantic.AfterValidator(_feature_key)]


def takes_result(feature: str, name: str, fn: Any) -> None:
    """``fn`` is called with the model's result as its one positional argument: a callable
    that cannot take it (``lambda: 0.9``, ``def check(a, b)``, keyword-only) would fail on every
    call, so it is a ConfigError at decoration. A callable whose signature cannot be read (some
    built-ins) is accepted as it is."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None)
    except TypeError:
        raise ConfigError(
            f"feature {feature!r}: {named(name, fn)} is invalid: it is called with the result "
            f"as its one positional argument, and its signature {signature} cannot take it"
        ) from None


def check_threshold(feature: str, value: Any) -> float | None:
    if value is None or value is UNSET:
        return value
    try:
        return unit_interval("threshold", value)
    except ConfigError as exc:
        raise ConfigError(f"feature {feature!r}: {exc}") from None


def check_timeout(feature: str, value: Any, *, name: str = "timeout") -> float | None:
    if value is None or value is UNSET:
        return value
    try:
        return seconds(name, value)
    except ConfigError as exc:
        raise ConfigError(f"feature {feature!r}: {exc}") from None


def check_confidence(feature: str, value: Any) -> Any:
    if value is None or value is UNSET:
        return value
    if callable(value):
        takes_result(feature, "confidence", value)
        return value
    if isinstance(value, str) and value:
        return value
    raise ConfigError(
        f"feature {feature!r}: {named('confidence', value)} is invalid: give an attribute or key "
        "name, or a callable that takes the result and returns a float in [0, 1]"
    )


def check_catch(feature: str, value: Any, *, name: str = "catch") -> tuple[type[Exception], ...]:
    types = value if isinstance(value, tuple) else (value,)
    if not types or not all(isinstance(t, type) and issubclass(t, Exception) for t in types):
        raise ConfigError(
            f"feature {feature!r}: {named(name, value)} is invalid: give an Exception subclass "
            "or a tuple of them (KeyboardInterrupt, SystemExit and CancelledError always "
            "propagate)"
        )
    return types


def check_validate(feature: str, value: Any) -> tuple[Validator, ...]:
    items = value if isinstance(value, list | tuple) else (value,)
    out: list[Validator] = []
    for i, v in enumerate(items):
        if isinstance(v, type) and hasattr(v, "model_validate"):
            out.append(_pydantic_validator(v))
        elif callable(v):
            takes_result(feature, "validate" if v is value else f"validate[{i}]", v)
            out.append(v)
        else:
            raise ConfigError(
                f"feature {feature!r}: {named(f'validate[{i}]', v)} is invalid: give a callable "
                "that checks the result, or a pydantic model type"
            )
    return tuple(out)


def _pydantic_validator(model: Any) -> Validator:
    def validate(result: Any) -> None:
        if isinstance(result, model):
            # pydantic hands an instance back unchecked, and the model clients build theirs
            # without validation: check what it holds
            result = result.model_dump(warnings=False)
        model.model_validate(result, from_attributes=not isinstance(result, Mapping))

    validate.__qualname__ = model.__qualname__
    return validate


def check_name(feature: str, name: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    raise ConfigError(
        f"feature {feature!r}: {named(name, value)} is invalid: must be a non-empty name"
    )


def check_usage(feature: str, value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if callable(value):
        takes_result(feature, "usage", value)
        return value
    raise ConfigError(
        f"feature {feature!r}: {named('usage', value)} is invalid: give a callable that reads a "
        "Usage from the result, None (built-in readers) or False"
    )


def check_policy(feature: str, name: str, value: Any, kind: type) -> Any:
    if value is None or isinstance(value, kind):
        return value
    raise ConfigError(
        f"feature {feature!r}: {named(name, value)} is invalid: give an "
        f"aiguard.{kind.__name__}(...)"
    )


def explain(exc: Any, source: str, *, group: str = "features", label: str = "feature") -> str:
    lines = []
    for err in exc.errors():
        loc = [str(x) if isinstance(x, str | int) else shown(x) for x in err["loc"]]
        where = []
        if len(loc) >= 2 and loc[0] == group:
            where.append(f"{label} {loc[1]!r}")
            loc = loc[2:]
        if loc == ["[key]"]:  # the name itself is invalid: the message names it
            message = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{', '.join(where) or 'top level'}: {message}")
            continue
        if loc:
            where.append(f"field {'.'.join(loc)!r}")
        value = err.get("input", "")
        value_text = f"value {shown(value)}" if err["type"] != "missing" else "missing"
        lines.append(f"{', '.join(where) or 'top level'}: {value_text}: {err['msg']}")
    return f"{source}: " + "; ".join(lines)


STREAM_MODES = (None, False, "pass", "buffer")


def check_stream(feature: str, value: Any) -> str | bool | None:
    """``stream=``: None (streams are found by themselves), ``"pass"``, ``"buffer"`` or False."""
    if value is True:
        return "pass"
    if any(value is mode or (isinstance(mode, str) and value == mode) for mode in STREAM_MODES):
        return value  # type: ignore[no-any-return]
    raise ConfigError(
        f"feature {feature!r}: stream={shown(value)} is invalid: give 'pass' (release chunks as "
        "they come, judge at the end), 'buffer' (judge the whole answer before releasing it), "
        "False (never treat a result as a stream) or None (the default: generator functions "
        "and returned iterators are streams, passed through)"
    )


Segments = tuple[tuple[str, "str | Callable[..., Any]"], ...]


def check_audit(feature: str, value: Any) -> float | None:
    """``audit=``: the share of served answers sent to review, a number in [0, 1] (None: off)."""
    if value is None or value is UNSET:
        return value
    try:
        return unit_interval("audit", value)
    except ConfigError as exc:
        raise ConfigError(f"feature {feature!r}: {exc}") from None


def split_name_ok(name: Any) -> bool:
    """Whether ``name`` can name a segment or a report split: 1 to 100 characters, no double
    quote, backslash, control character or lone surrogate (SQL finds it in a JSON object, and
    the store takes it as UTF-8)."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 100
        and '"' not in name
        and "\\" not in name
        and not any(ord(ch) < 32 or "\ud800" <= ch <= "\udfff" for ch in name)
    )


def check_segments(feature: str, value: Any) -> Segments | None:
    """``segments=``: ``((name, spec), ...)`` from a tuple/list of parameter names, dotted paths
    or named callables, or a mapping ``{name: spec}``; None when none. The specs are resolved
    against the function's parameters when the guard is compiled."""
    if value is None or value is UNSET:
        return value
    what = f"feature {feature!r}: {named('segments', value)} is invalid"
    pairs: list[tuple[str, Any]] = []
    if isinstance(value, Mapping):
        for name, spec in value.items():
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"{what}: segment name {shown(name)} must be a non-empty text")
            pairs.append((name, spec))
    elif isinstance(value, list | tuple):
        for spec in value:
            if isinstance(spec, str):
                pairs.append((spec, spec))
            elif callable(spec):
                name = getattr(spec, "__name__", None)
                if not isinstance(name, str) or not name.isidentifier():
                    raise ConfigError(
                        f"{what}: the callable {shown(spec)} has no name to record its value "
                        "under: give a mapping, e.g. segments={'plan': lambda user, **_: ...}"
                    )
                pairs.append((name, spec))
            else:
                raise ConfigError(
                    f"{what}: segment {shown(spec)} must be a parameter name, a dotted path "
                    "('user.plan') or a callable over the call's arguments"
                )
    else:
        raise ConfigError(
            f"{what}: give a tuple of parameter names, dotted paths ('user.plan') or callables, "
            "or a mapping of names to them"
        )
    seen: set[str] = set()
    for name, spec in pairs:
        if isinstance(spec, str):
            if not spec or any(not part for part in spec.split(".")):
                raise ConfigError(
                    f"{what}: segment {name!r}: {shown(spec)} is not a parameter name or dotted "
                    "path"
                )
        elif not callable(spec):
            raise ConfigError(
                f"{what}: segment {name!r}: {shown(spec)} must be a parameter name, a dotted "
                "path or a callable over the call's arguments"
            )
        if not split_name_ok(name):
            raise ConfigError(
                f"{what}: segment name {name!r} cannot be recorded and split by: 1 to 100 "
                "characters, no double quote, backslash or control character"
            )
        if name in seen:
            raise ConfigError(f"{what}: the segment name {name!r} is given twice")
        seen.add(name)
    return tuple(pairs)


# -- the product canvas ---------------------------------------------------------------------------

_MONEY = re.compile(r"^\s*(?:([A-Za-z]{3})\s+)?([^\sA-Za-z]+)(?:\s+([A-Za-z]{3}))?\s*$")
CANVAS_TEXT_CHARS = 2000  # the most characters of an owner, intended use or limit


def check_money(name: str, value: Any) -> tuple[Decimal, str | None]:
    """A canvas amount (``value_per_accepted``, ``baseline_cost``): a Decimal, an int, a float
    (read as the decimal it prints as) or a text, optionally with a currency code before or
    after it (``"4.50 USD"``); from 0 to 10^18, at most 12 decimals. Returns (amount, currency
    or None); ConfigError naming ``name`` and the value otherwise."""
    what = f"{named(name, value)} is invalid"
    currency: str | None = None
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise ConfigError(f"{what}: give an amount of money, e.g. '4.50' or '4.50 USD'")
    text = str(value)
    if isinstance(value, str):
        found = _MONEY.match(value)
        if found is None or (found.group(1) and found.group(3)):
            raise ConfigError(f"{what}: give an amount of money, e.g. '4.50' or '4.50 USD'")
        text = found.group(2)
        code = found.group(1) or found.group(3)
        currency = None if code is None else code.upper()
    try:
        amount = Decimal(text)
    except ArithmeticError:
        raise ConfigError(f"{what}: give an amount of money, e.g. '4.50' or '4.50 USD'") from None
    if not amount.is_finite() or amount < 0 or amount > 10**18:
        raise ConfigError(f"{what}: must be an amount from 0 to 10^18 (not negative)")
    exponent = amount.as_tuple().exponent
    if (
        isinstance(exponent, int)
        and exponent < -12
        and amount != amount.quantize(Decimal("1e-12"), context=Context(prec=60))
    ):
        raise ConfigError(f"{what}: finer than 10^-12 of the currency")
    return amount, currency


def check_text(name: str, value: Any) -> str:
    """A canvas text (``owner``, ``intended_use``, a limit): non-empty once stripped, at most
    ``CANVAS_TEXT_CHARS`` characters; returned stripped."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{named(name, value)} is invalid: must be a non-empty text")
    if len(value) > CANVAS_TEXT_CHARS:
        raise ConfigError(
            f"{named(name, value)} is invalid: longer than {CANVAS_TEXT_CHARS} characters"
        )
    return value.strip()


def check_limits(value: Any) -> str | tuple[str, ...]:
    """``limits``: one text, or a list of texts (each non-empty)."""
    if isinstance(value, str):
        return check_text("limits", value)
    if isinstance(value, list | tuple) and value:
        return tuple(check_text(f"limits[{i}]", v) for i, v in enumerate(value))
    raise ConfigError(
        f"{named('limits', value)} is invalid: give a text, or a non-empty list of texts"
    )


def check_currency(name: str, value: Any) -> str:
    """A currency code: three letters, returned in capitals."""
    if not isinstance(value, str) or not re.fullmatch(r"\s*[A-Za-z]{3}\s*", value):
        raise ConfigError(f"{named(name, value)} is invalid: give a currency code such as 'USD'")
    return value.strip().upper()
