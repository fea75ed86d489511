"""Token usage read from a model's result: OpenAI, Anthropic, plain dicts, or your own reader.

Figures follow the GenAI semantic conventions: ``input_tokens`` counts every input token, cached
ones included; ``cache_read_tokens`` is the part of them read from a prompt cache and
``cache_write_tokens`` the part written to it, of which ``cache_write_1h_tokens`` were written
for one hour (Anthropic's 1-hour cache, billed at its own price); ``output_tokens`` counts every
output token, reasoning included (``reasoning_tokens`` is that part). Providers report
differently, and the readers convert:

- OpenAI chat completions: ``usage.prompt_tokens`` already includes
  ``usage.prompt_tokens_details.cached_tokens``; ``completion_tokens`` includes reasoning.
- OpenAI responses: ``usage.input_tokens`` includes ``input_tokens_details.cached_tokens``.
- Anthropic messages: ``usage.input_tokens`` EXCLUDES ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens``; the input here is their sum. ``cache_creation`` splits the
  writes into ``ephemeral_5m_input_tokens`` and ``ephemeral_1h_input_tokens``; without it every
  write counts as a 5-minute one.
- Plain dicts: ``{"usage": {...}}`` or the keys at the top level, in either vocabulary
  (``prompt_tokens``/``completion_tokens`` or ``input_tokens``/``output_tokens``), with optional
  ``cached_tokens``/``cache_read_tokens``, ``cache_write_tokens``, ``cache_write_1h_tokens``,
  ``reasoning_tokens``, ``model`` and ``provider``.

A part never exceeds its total: when a response says more 1-hour (or 5-minute plus 1-hour)
writes than writes in all, the writes are the larger figure, so no write goes unpriced.
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

    ``cache_write_1h_tokens`` is the part of ``cache_write_tokens`` written to a 1-hour cache
    (keyword only); it can never exceed them (``ValueError``).

    Example:
        >>> import aiguard
        >>> u = aiguard.read_usage({"model": "gpt-x", "usage": {"prompt_tokens": 120,
        ...                         "completion_tokens": 30}})
        >>> (u.input_tokens, u.output_tokens, u.model)
        (120, 30, 'gpt-x')
        >>> w = aiguard.Usage(input_tokens=900, cache_write_tokens=500, cache_write_1h_tokens=200)
        >>> (w.cache_write_5m_tokens, w.cache_write_1h_tokens, w.uncached_input_tokens)
        (300, 200, 400)
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = dataclasses.field(default=0, kw_only=True)
    reasoning_tokens: int = 0
    model: str | None = None
    provider: str | None = None

    def __post_init__(self) -> None:
        part, total = self.cache_write_1h_tokens, self.cache_write_tokens
        # counts of other types are as_usage's to refuse, with a clearer message
        if part and type(part) is int and type(total) is int and part > total:
            raise ValueError(
                f"Usage(cache_write_1h_tokens={part}) is more than cache_write_tokens={total}: "
                "the 1-hour writes are a part of the cache writes"
            )

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens neither read from nor written to a cache."""
        return max(0, self.input_tokens - self.cache_read_tokens - self.cache_write_tokens)

    @property
    def cache_write_5m_tokens(self) -> int:
        """Cache writes that are not 1-hour ones: Anthropic's 5-minute writes, and every other
        provider's writes (priced at ``cache_write``)."""
        return max(0, self.cache_write_tokens - self.cache_write_1h_tokens)


class _Building:
    """A Usage under construction: the same slots, not frozen. ``_usage`` fills one with plain
    attribute stores, then makes it a Usage (``__class__`` assignment between classes of the
    same slot layout): a third cheaper than setting eight frozen slots one by one."""

    __slots__ = Usage.__slots__


def _usage(
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
    cache_write_1h: int,
    reasoning: int,
    model: str | None,
    provider: str | None,
) -> Usage:
    """A Usage from counts the readers have already checked (whole numbers from 0, the 1-hour
    writes at most the writes), without the frozen dataclass's ``__init__`` (the served path
    builds one per call)."""
    u: Any = _Building()
    u.input_tokens = input_tokens
    u.output_tokens = output_tokens
    u.cache_read_tokens = cache_read
    u.cache_write_tokens = cache_write
    u.cache_write_1h_tokens = cache_write_1h
    u.reasoning_tokens = reasoning
    u.model = model
    u.provider = provider
    u.__class__ = Usage
    return u  # type: ignore[no-any-return]


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
        return _usage(
            _int(prompt),
            _int(_get(usage, "completion_tokens")),
            _int(_get(details, "cached_tokens") if details is not None else 0)
            or _int(_get(usage, "cached_tokens")),
            _int(_get(details, "cache_write_tokens") if details is not None else 0),
            0,
            _int(_get(out_details, "reasoning_tokens") if out_details is not None else 0)
            or _int(_get(usage, "reasoning_tokens")),
            model,
            provider or (None if top else _provider(result, "openai")),
        )
    input_tokens = _get(usage, "input_tokens")
    if input_tokens is None:
        return None
    cache_read = _get(usage, "cache_read_input_tokens")
    cache_write = _get(usage, "cache_creation_input_tokens")
    if ((cache_read is not None or cache_write is not None) and not top) or _is_anthropic(result):
        # Anthropic: input_tokens excludes cache reads and writes
        read, write, write_1h = _int(cache_read), _int(cache_write), 0
        creation = _get(usage, "cache_creation")
        if creation is not None:  # the writes by how long they are kept
            write_1h = _int(_get(creation, "ephemeral_1h_input_tokens"))
            write = max(write, _int(_get(creation, "ephemeral_5m_input_tokens")) + write_1h)
        return _usage(
            _int(input_tokens) + read + write,
            _int(_get(usage, "output_tokens")),
            read,
            write,
            write_1h,
            0,
            model,
            provider or "anthropic",
        )
    in_details = _get(usage, "input_tokens_details")
    out_details = _get(usage, "output_tokens_details")
    write_1h = _int(_get(usage, "cache_write_1h_tokens"))
    return _usage(  # OpenAI responses, or a plain dict in the same vocabulary
        _int(input_tokens),
        _int(_get(usage, "output_tokens")),
        _int(_get(in_details, "cached_tokens") if in_details is not None else 0)
        or _int(_get(usage, "cache_read_tokens"))
        or _int(_get(usage, "cached_tokens")),
        max(
            write_1h,
            _int(_get(in_details, "cache_write_tokens") if in_details is not None else 0)
            or _int(_get(usage, "cache_write_tokens")),
        ),
        write_1h,
        _int(_get(out_details, "reasoning_tokens") if out_details is not None else 0)
        or _int(_get(usage, "reasoning_tokens")),
        model,
        provider or (None if isinstance(result, Mapping) else _provider(result, "openai")),
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
           "cache_write_1h_tokens", "reasoning_tokens")  # fmt: skip


def as_usage(value: Any) -> Usage | None:
    """A custom reader's answer as a Usage (a Usage, a mapping of its fields, or None).

    In a mapping, a count that is not a whole number ("n/a", NaN) counts as 0, and
    ``cache_write_tokens`` is at least ``cache_write_1h_tokens`` (a mapping that gives only the
    1-hour writes has written that many). Raises (an internal failure: the call goes on with no
    usage) for anything else than these three, for a token count that is negative or over
    10**30, and for a Usage whose counts are not ints, whose 1-hour writes exceed its writes, or
    whose model or provider is not text: a reader that says that is broken, and its figures
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
        total = whole.get("cache_write_tokens", value.cache_write_tokens)
        part = whole.get("cache_write_1h_tokens", value.cache_write_1h_tokens)
        if part > total:
            raise ValueError(
                f"a usage reader returned cache_write_1h_tokens={part} over cache_write_tokens="
                f"{total}: the 1-hour writes are a part of the cache writes"
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
        counts["cache_write_tokens"] = max(
            counts["cache_write_tokens"], counts["cache_write_1h_tokens"]
        )
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
