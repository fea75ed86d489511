"""Usage readers specialised per result class: chosen once per class, then cached by the guard.

``aiguard.read_usage`` probes any result (is it a mapping? which vocabulary? which fields?), and
on a pydantic model each probe of a name the model lacks costs microseconds. The response classes
of the OpenAI and Anthropic SDKs declare their fields, so their readers read those fields as
attributes. A specialised reader gives exactly what ``read_usage`` gives: whenever a result is not
the shape its class declares (a nested object of another class, extra fields that the generic
reader would consult, a field missing from an object built with ``model_construct``), it hands the
result to ``read_usage``. Every other class is read by ``read_usage``; so is every class of an SDK
version whose fields differ from those expected here.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

from ..usage import _MAX_TOKENS, Usage, _int, _str, _usage, read_usage

Reader = Callable[[Any], Usage | None]

__all__ = ["Reader", "reader_for"]


def reader_for(cls: type) -> Reader:
    """The reader for results of class ``cls``: specialised for the SDKs' response classes
    (``openai`` ``ChatCompletion`` and ``Response``, ``anthropic`` ``Message`` and
    ``BetaMessage``), none at all for the built-in scalars and sequences (they never carry
    usage), else ``read_usage``."""
    if cls in _NO_USAGE:
        return _nothing
    make = _SPECIALISED.get((getattr(cls, "__module__", None), getattr(cls, "__qualname__", None)))
    if make is None:
        return read_usage
    try:
        return make(cls)
    except Exception:  # an SDK version whose classes differ: the generic reader is right
        return read_usage


def _nothing(result: Any) -> None:
    """A result of a class that has no ``usage`` attribute and is not a mapping."""
    return None


# exactly these classes (not their subclasses): read_usage finds no usage on them
_NO_USAGE = frozenset({str, bytes, int, float, bool, type(None), list, tuple, set, frozenset})


# -- the classes' shapes, checked once ---------------------------------------------------------


def _fields(cls: Any, *names: str) -> None:
    """``cls`` is a pydantic model that declares every field in ``names``."""
    fields = getattr(cls, "model_fields", None)
    missing = [n for n in names if not isinstance(fields, dict) or n not in fields]
    if missing:
        raise LookupError(f"{cls!r} does not declare {missing}")


def _not_fields(cls: Any, *names: str) -> None:
    """``cls`` has neither a field nor a class attribute named in ``names``: on an instance
    without extra fields, the generic reader finds nothing there."""
    found = [n for n in names if n in cls.model_fields or hasattr(cls, n)]
    if found:
        raise LookupError(f"{cls!r} has {found}")


def _held(cls: Any, field: str) -> Any:
    """The model class that field ``field`` of ``cls`` holds (``X`` or ``X | None``)."""
    annotation = cls.model_fields[field].annotation
    args = typing.get_args(annotation)
    kinds = [a for a in args if a is not type(None)] if args else [annotation]
    if len(kinds) != 1 or not isinstance(kinds[0], type):
        raise LookupError(f"{cls!r}.{field} holds {annotation!r}")
    return kinds[0]


# -- the readers -------------------------------------------------------------------------------
# In each: a count read from a validated model is an int; anything else goes through _int, as
# in read_usage. ``x if x.__class__ is int and 0 <= x <= M else _int(x)`` is _int, inlined.


def _chat_completion(cls: type) -> Reader:
    """``openai.types.chat.ChatCompletion``: prompt tokens include the cached ones."""
    _fields(cls, "usage", "model")
    usage_cls = _held(cls, "usage")
    _fields(usage_cls, "prompt_tokens", "completion_tokens", "prompt_tokens_details",
            "completion_tokens_details")  # fmt: skip
    _not_fields(usage_cls, "cached_tokens", "reasoning_tokens")
    details_cls = _held(usage_cls, "prompt_tokens_details")
    _fields(details_cls, "cached_tokens", "cache_write_tokens")
    out_cls = _held(usage_cls, "completion_tokens_details")
    _fields(out_cls, "reasoning_tokens")
    provider = "openai"
    top = _MAX_TOKENS

    def read(result: Any) -> Usage | None:
        try:
            u: Any = result.usage
            if u is None:
                return None
            if u.__class__ is not usage_cls or u.__pydantic_extra__:
                return read_usage(result)
            prompt = u.prompt_tokens
            d: Any = u.prompt_tokens_details
            o: Any = u.completion_tokens_details
            if (
                prompt is None
                or (d is not None and d.__class__ is not details_cls)
                or (o is not None and o.__class__ is not out_cls)
            ):
                return read_usage(result)
            out = u.completion_tokens
            if d is None:
                cached = write = 0
            else:
                cached, write = d.cached_tokens, d.cache_write_tokens
            reasoning = 0 if o is None else o.reasoning_tokens
            model = result.model
        except AttributeError:  # a field missing (model_construct): as read_usage says
            return read_usage(result)
        return _usage(
            prompt if prompt.__class__ is int and 0 <= prompt <= top else _int(prompt),
            out if out.__class__ is int and 0 <= out <= top else _int(out),
            cached if cached.__class__ is int and 0 <= cached <= top else _int(cached),
            write if write.__class__ is int and 0 <= write <= top else _int(write),
            0,
            reasoning if reasoning.__class__ is int and 0 <= reasoning <= top else _int(reasoning),
            model if model.__class__ is str and model else _str(model),
            provider,
        )

    return read


def _response(cls: type) -> Reader:
    """``openai.types.responses.Response``: input tokens include the cached ones."""
    _fields(cls, "usage", "model")
    _not_fields(cls, "type", "role")
    usage_cls = _held(cls, "usage")
    _fields(usage_cls, "input_tokens", "output_tokens", "input_tokens_details",
            "output_tokens_details")  # fmt: skip
    _not_fields(usage_cls, "prompt_tokens", "cache_read_input_tokens",
                "cache_creation_input_tokens", "cache_write_1h_tokens", "cache_read_tokens",
                "cached_tokens", "cache_write_tokens", "reasoning_tokens")  # fmt: skip
    details_cls = _held(usage_cls, "input_tokens_details")
    _fields(details_cls, "cached_tokens", "cache_write_tokens")
    out_cls = _held(usage_cls, "output_tokens_details")
    _fields(out_cls, "reasoning_tokens")
    provider = "openai"
    top = _MAX_TOKENS

    def read(result: Any) -> Usage | None:
        try:
            u: Any = result.usage
            if u is None:
                return None
            d: Any = u.input_tokens_details
            o: Any = u.output_tokens_details
            if (
                u.__class__ is not usage_cls
                or u.__pydantic_extra__
                or result.__pydantic_extra__
                or (d is not None and d.__class__ is not details_cls)
                or (o is not None and o.__class__ is not out_cls)
            ):
                return read_usage(result)
            tokens = u.input_tokens
            if tokens is None:
                return None
            out = u.output_tokens
            if d is None:
                cached = write = 0
            else:
                cached, write = d.cached_tokens, d.cache_write_tokens
            reasoning = 0 if o is None else o.reasoning_tokens
            model = result.model
        except AttributeError:
            return read_usage(result)
        return _usage(
            tokens if tokens.__class__ is int and 0 <= tokens <= top else _int(tokens),
            out if out.__class__ is int and 0 <= out <= top else _int(out),
            cached if cached.__class__ is int and 0 <= cached <= top else _int(cached),
            write if write.__class__ is int and 0 <= write <= top else _int(write),
            0,
            reasoning if reasoning.__class__ is int and 0 <= reasoning <= top else _int(reasoning),
            model if model.__class__ is str and model else _str(model),
            provider,
        )

    return read


def _message(cls: type) -> Reader:
    """``anthropic.types.Message`` (and the beta one): input tokens exclude cache reads and
    writes; the writes are split by how long they are kept."""
    _fields(cls, "usage", "model", "type", "role")
    usage_cls = _held(cls, "usage")
    _fields(usage_cls, "input_tokens", "output_tokens", "cache_read_input_tokens",
            "cache_creation_input_tokens", "cache_creation")  # fmt: skip
    _not_fields(usage_cls, "prompt_tokens")
    creation_cls = _held(usage_cls, "cache_creation")
    _fields(creation_cls, "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")
    provider = "anthropic"
    top = _MAX_TOKENS

    def read(result: Any) -> Usage | None:
        try:
            u: Any = result.usage
            if u is None:
                return None
            c: Any = u.cache_creation
            if (
                u.__class__ is not usage_cls
                or u.__pydantic_extra__
                or (c is not None and c.__class__ is not creation_cls)
            ):
                return read_usage(result)
            tokens = u.input_tokens
            if tokens is None:
                return None
            read, write = u.cache_read_input_tokens, u.cache_creation_input_tokens
            if read is None and write is None:
                kind, role = result.type, result.role
                if not (
                    isinstance(kind, str)
                    and kind == "message"
                    and isinstance(role, str)
                    and role == "assistant"
                ):
                    return read_usage(result)  # not Anthropic's shape: the generic rules
            out = u.output_tokens
            if c is None:
                short = long = 0
            else:
                short, long = c.ephemeral_5m_input_tokens, c.ephemeral_1h_input_tokens
            model = result.model
        except AttributeError:
            return read_usage(result)
        read = read if read.__class__ is int and 0 <= read <= top else _int(read)
        write = write if write.__class__ is int and 0 <= write <= top else _int(write)
        if c is not None:
            long = long if long.__class__ is int and 0 <= long <= top else _int(long)
            short = short if short.__class__ is int and 0 <= short <= top else _int(short)
            if short + long > write:
                write = short + long  # never fewer writes than their parts
        return _usage(
            (tokens if tokens.__class__ is int and 0 <= tokens <= top else _int(tokens))
            + read
            + write,
            out if out.__class__ is int and 0 <= out <= top else _int(out),
            read,
            write,
            long,
            0,
            model if model.__class__ is str and model else _str(model),
            provider,
        )

    return read


_SPECIALISED: dict[tuple[Any, Any], Callable[[type], Reader]] = {
    ("openai.types.chat.chat_completion", "ChatCompletion"): _chat_completion,
    ("openai.types.responses.response", "Response"): _response,
    ("anthropic.types.message", "Message"): _message,
    ("anthropic.types.beta.beta_message", "BetaMessage"): _message,
}
