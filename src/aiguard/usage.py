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


def _int(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 0
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


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
    return bool(_get(result, "type") == "message" and _get(result, "role") == "assistant")


def _provider(result: Any, default: str) -> str | None:
    module = type(result).__module__.split(".", 1)[0]
    if module in ("openai", "anthropic"):
        return module
    return None


UsageReader = Callable[[Any], "Usage | Mapping[str, Any] | None"]


def as_usage(value: Any) -> Usage | None:
    """A reader's answer as a Usage (a Usage, a mapping of its fields, or None)."""
    if value is None or isinstance(value, Usage):
        return value
    if isinstance(value, Mapping):
        counts = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                  "reasoning_tokens")  # fmt: skip
        return Usage(
            **{k: _int(value.get(k)) for k in counts},
            model=_str(value.get("model")),
            provider=_str(value.get("provider")),
        )
    raise TypeError(f"a usage reader returned {value!r}: give a Usage, a mapping or None")
