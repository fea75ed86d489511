"""Token usage read from a model's result: OpenAI, Anthropic, plain dicts, or your own reader.

Figures follow the GenAI semantic conventions: ``input_tokens`` counts every input token, cached
ones included; ``cache_read_tokens`` is the part of them read from a prompt cache and
``cache_write_tokens`` the part written to it; ``output_tokens`` counts every output token,
reasoning included (``reasoning_tokens`` is that part). Providers report differently, and the
readers convert:

- OpenAI chat completions: ``usage.prompt_tokens`` already includes
  ``usage.prompt_tokens_details.cached_tokens``; ``completion_tokens`` includes reasoning.
- OpenAI responses: ``usage.input_tokens`` includes ``input_tokens_details.cached_tokens``.
- Anthropic messages: ``usage.input_tokens`` EXCLUDES ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens``; the input here is their sum.
- Plain dicts: ``{"usage": {...}}`` or the keys at the top level, in either vocabulary
  (``prompt_tokens``/``completion_tokens`` or ``input_tokens``/``output_tokens``), with optional
  ``cached_tokens``/``cache_read_tokens``, ``reasoning_tokens``, ``model`` and ``provider``.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Usage", "read_usage"]


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one model call, and the model that answered.

    Example:
        >>> import aiguard
        >>> u = aiguard.read_usage({"model": "gpt-x", "usage": {"prompt_tokens": 120,
        ...                         "completion_tokens": 30}})
        >>> (u.input_tokens, u.output_tokens, u.model)
        (120, 30, 'gpt-x')
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    model: str | None = None
    provider: str | None = None

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens neither read from nor written to a cache."""
        return max(0, self.input_tokens - self.cache_read_tokens - self.cache_write_tokens)


_MAX_TOKENS = 10**30  # far beyond any real count; keeps every cost within a float's range


def _int(value: Any) -> int:
    """A token count from a provider's response: a whole number from 0 to 10**30; anything
    else (a negative or astronomical count, NaN, text that is not a number) counts as 0."""
    if value is None or isinstance(value, bool):
        return 0
    try:
        n = int(value)
    except (TypeError, ValueError, ArithmeticError):  # ArithmeticError: inf, Decimal NaN
        return 0
    return n if 0 <= n <= _MAX_TOKENS else 0


def _get(obj: Any, name: str) -> Any:
    if type(obj) is dict or isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def read_usage(result: Any) -> Usage | None:
    """The usage in a model result of a known shape, or ``None`` when it has none.

    Example:
        >>> import aiguard
        >>> aiguard.read_usage({"label": "bug", "score": 0.9}) is None
        True
    """
    top = False
    if type(result) is dict:  # the common plain shape, checked without ABC machinery
        usage = result.get("usage")
        if usage is None:
            if "prompt_tokens" not in result and "input_tokens" not in result:
                return None
            usage, top = result, True
    else:
        usage = getattr(result, "usage", None)
        if usage is None:
            if not isinstance(result, Mapping):
                return None
            usage = result.get("usage")
            if usage is None:
                usage, top = result, True
    model = _str(_get(result, "model"))
    provider = _str(_get(result, "provider")) if isinstance(result, Mapping) else None
    prompt = _get(usage, "prompt_tokens")
    if prompt is not None:  # OpenAI chat completions (input includes cached tokens)
        details = _get(usage, "prompt_tokens_details")
        out_details = _get(usage, "completion_tokens_details")
        return Usage(
            input_tokens=_int(prompt),
            output_tokens=_int(_get(usage, "completion_tokens")),
            cache_read_tokens=_int(_get(details, "cached_tokens") if details is not None else 0)
            or _int(_get(usage, "cached_tokens")),
            cache_write_tokens=_int(
                _get(details, "cache_write_tokens") if details is not None else 0
            ),
            reasoning_tokens=_int(
                _get(out_details, "reasoning_tokens") if out_details is not None else 0
            )
            or _int(_get(usage, "reasoning_tokens")),
            model=model,
            provider=provider or (None if top else _provider(result, "openai")),
        )
    input_tokens = _get(usage, "input_tokens")
    if input_tokens is None:
        return None
    cache_read = _get(usage, "cache_read_input_tokens")
    cache_write = _get(usage, "cache_creation_input_tokens")
    if ((cache_read is not None or cache_write is not None) and not top) or _is_anthropic(result):
        # Anthropic: input_tokens excludes cache reads and writes
        read, write = _int(cache_read), _int(cache_write)
        return Usage(
            input_tokens=_int(input_tokens) + read + write,
            output_tokens=_int(_get(usage, "output_tokens")),
            cache_read_tokens=read,
            cache_write_tokens=write,
            model=model,
            provider=provider or "anthropic",
        )
    in_details = _get(usage, "input_tokens_details")
    out_details = _get(usage, "output_tokens_details")
    return Usage(  # OpenAI responses, or a plain dict in the same vocabulary
        input_tokens=_int(input_tokens),
        output_tokens=_int(_get(usage, "output_tokens")),
        cache_read_tokens=_int(_get(in_details, "cached_tokens") if in_details is not None else 0)
        or _int(_get(usage, "cache_read_tokens"))
        or _int(_get(usage, "cached_tokens")),
        cache_write_tokens=_int(
            _get(in_details, "cache_write_tokens") if in_details is not None else 0
        )
        or _int(_get(usage, "cache_write_tokens")),
        reasoning_tokens=_int(
            _get(out_details, "reasoning_tokens") if out_details is not None else 0
        )
        or _int(_get(usage, "reasoning_tokens")),
        model=model,
        provider=provider or (None if isinstance(result, Mapping) else _provider(result, "openai")),
    )


def _is_anthropic(result: Any) -> bool:
    kind, role = _get(result, "type"), _get(result, "role")
    return (
        isinstance(kind, str)
        and kind == "message"
        and isinstance(role, str)
        and role == "assistant"
    )


def _provider(result: Any, default: str) -> str | None:
    module = type(result).__module__.split(".", 1)[0]
    if module in ("openai", "anthropic"):
        return module
    return None


UsageReader = Callable[[Any], "Usage | Mapping[str, Any] | None"]


_COUNTS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
           "reasoning_tokens")  # fmt: skip


def as_usage(value: Any) -> Usage | None:
    """A custom reader's answer as a Usage (a Usage, a mapping of its fields, or None).

    In a mapping, a count that is not a whole number ("n/a", NaN) counts as 0. Raises (an
    internal failure: the call goes on with no usage) for anything else than these three, for
    a token count that is negative or over 10**30, and for a Usage whose counts are not ints
    or whose model or provider is not text: a reader that says that is broken, and its figures
    would corrupt costs and budgets."""
    if value is None:
        return None
    if isinstance(value, Usage):
        whole: dict[str, Any] = {}
        for name in _COUNTS:
            n = getattr(value, name)
            if type(n) is int:
                _in_range(name, n)
                continue
            if isinstance(n, bool) or not isinstance(n, numbers.Integral):
                raise TypeError(
                    f"a usage reader returned {name} of type {type(n).__name__}: give an int"
                )
            whole[name] = _in_range(name, int(n))  # numpy.int64 and the like, as an int
        for name in ("model", "provider"):
            text = getattr(value, name)
            if text is not None and not isinstance(text, str):
                raise TypeError(
                    f"a usage reader returned {name} of type {type(text).__name__}: give text or "
                    "None"
                )
        return dataclasses.replace(value, **whole) if whole else value
    if isinstance(value, Mapping):
        counts = {}
        for name in _COUNTS:
            raw = value.get(name)
            if raw is None or isinstance(raw, bool):
                counts[name] = 0
                continue
            try:
                n = int(raw)
            except (TypeError, ValueError, ArithmeticError):  # not a whole number: 0
                n = 0
            counts[name] = _in_range(name, n)
        return Usage(
            **counts,
            model=_str(value.get("model")),
            provider=_str(value.get("provider")),
        )
    raise TypeError(
        f"a usage reader returned a value of type {type(value).__name__}: give a Usage, a "
        "mapping or None"
    )


def _in_range(name: str, n: int) -> int:
    if not 0 <= n <= _MAX_TOKENS:
        shown = str(n) if n.bit_length() < 256 else f"an int of {n.bit_length()} bits"
        raise ValueError(
            f"a usage reader returned {name}={shown}: token counts are whole numbers from 0 to "
            "10**30"
        )
    return n
