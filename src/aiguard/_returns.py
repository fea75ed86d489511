"""What a guarded function's return annotation says its results hold, read once at decoration.

``confidence="score"`` reads ``result.score`` (or ``result["score"]``). When the function's
return annotation is a class whose instances can only hold the names it declares (a dataclass,
a pydantic model, a ``TypedDict``, a ``NamedTuple``, an attrs or msgspec class, any class whose
own code sets no other attribute, or a built-in scalar such as ``str``), a confidence name that
none of them has is known to be missing from every result: a typo, reported at decoration.
Whatever cannot be known for sure (no annotation, one that cannot be resolved, ``dict``, ``Any``,
a class with ``__getattr__`` or ``setattr`` in its code, a pydantic model with ``extra="allow"``)
is left to the check on the first calls. Nothing here runs per call.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ._checks import shown
from .exceptions import ConfigError

__all__ = ["Declared", "check_declared", "declared"]


@dataclasses.dataclass(frozen=True, slots=True)
class Declared:
    """One class a result may be: its name, the names a result of it can be read by, and the
    fields it declares (for the error message)."""

    label: str
    names: frozenset[str]
    fields: tuple[str, ...]


# results of exactly these classes hold no attribute beyond the class's own, and are no mapping
_SCALARS = (str, bytes, int, float, bool, complex, list, tuple, set, frozenset, type(None))


def declared(fn: Callable[..., Any]) -> tuple[Declared, ...] | None:
    """The classes ``fn``'s results may be, by its return annotation, each with the names a
    result of it has; None when that cannot be known for sure."""
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        return None  # a stream: the judged answer is what its chunks make
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # a name only imported under TYPE_CHECKING, a bad annotation, ...
        return None
    if "return" not in hints:
        return None
    kinds = _members(hints["return"])
    if kinds is None:
        return None
    out = []
    for kind in kinds:
        found = _of_class(kind)
        if found is None:
            return None
        out.append(found)
    return tuple(out)


def _members(annotation: Any) -> list[type] | None:
    """The classes of ``annotation`` (``X``, ``X | Y``, ``Optional[X]``, ``X[int]``)."""
    if annotation is None or annotation is type(None):
        return [type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        out: list[type] = []
        for arg in typing.get_args(annotation):
            members = _members(arg)
            if members is None:
                return None
            out += members
        return out
    if origin is not None:
        annotation = origin
    return [annotation] if isinstance(annotation, type) else None


def _of_class(cls: type) -> Declared | None:
    if cls in _SCALARS:
        return Declared("None" if cls is type(None) else cls.__name__, frozenset(dir(cls)), ())
    if hasattr(cls, "__next__") or hasattr(cls, "__anext__"):
        return None  # a stream (an iterator): judged on the answer its chunks make
    if typing.is_typeddict(cls):  # a dict: read by key only
        keys = tuple(getattr(cls, "__required_keys__", ())) + tuple(
            getattr(cls, "__optional_keys__", ())
        )
        return Declared(cls.__qualname__, frozenset(keys), tuple(sorted(keys)))
    fields = _fields(cls)
    if fields is None or _open(cls, plain=_is_plain(cls)):
        return None
    names = set(fields) | set(dir(cls)) | _set_in_code(cls)
    return Declared(cls.__qualname__, frozenset(names), tuple(fields))


def _fields(cls: type) -> tuple[str, ...] | None:
    """The fields ``cls`` declares, or None when it is a kind whose fields are not known."""
    model_fields = getattr(cls, "model_fields", None)
    config = getattr(cls, "model_config", None)
    if isinstance(model_fields, dict) and isinstance(config, dict):  # pydantic
        if config.get("extra") == "allow":
            return None  # extra fields are attributes too
        computed = getattr(cls, "model_computed_fields", None) or {}
        private = getattr(cls, "__private_attributes__", None) or {}
        return (*model_fields, *computed, *private)
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    named = getattr(cls, "_fields", None)
    if issubclass(cls, tuple) and isinstance(named, tuple):
        return named  # a NamedTuple
    attrs = getattr(cls, "__attrs_attrs__", None)
    if attrs is not None:
        return tuple(a.name for a in attrs)
    struct = getattr(cls, "__struct_fields__", None)  # msgspec
    if isinstance(struct, tuple):
        return struct
    if any(k is not object and k.__module__ == "builtins" for k in cls.__mro__) or issubclass(
        cls, Mapping
    ):
        return None  # a subclass of a built-in type, a mapping: may hold anything
    annotations: list[str] = []
    for klass in reversed(cls.__mro__[:-1]):
        annotations += [n for n in vars(klass).get("__annotations__", {}) if n not in annotations]
        annotations += [n for n in _slots(klass) if n not in annotations]
    # a plain class that declares nothing: its results may be given attributes from outside
    return tuple(annotations) if annotations else None


def _slots(klass: type) -> tuple[str, ...]:
    slots = vars(klass).get("__slots__", ())
    slots = (slots,) if isinstance(slots, str) else tuple(slots)
    return tuple(s for s in slots if s not in ("__dict__", "__weakref__"))


def _own_classes(cls: type) -> Iterator[type]:
    """The classes of ``cls``'s MRO written by its authors (not object, pydantic's, attrs')."""
    for klass in cls.__mro__:
        module = getattr(klass, "__module__", "") or ""
        if klass is object or module.partition(".")[0] in ("pydantic", "msgspec", "builtins"):
            continue
        yield klass


def _is_plain(cls: type) -> bool:
    """A class none of the field-declaring libraries made (its fields are its annotations)."""
    return not (
        hasattr(cls, "model_fields")
        or dataclasses.is_dataclass(cls)
        or issubclass(cls, tuple)
        or hasattr(cls, "__attrs_attrs__")
        or hasattr(cls, "__struct_fields__")
    )


def _open(cls: type, *, plain: bool) -> bool:
    """Whether results of ``cls`` may answer names it does not declare: its own
    ``__getattr__``/``__getattribute__``, or, in a plain class, code that sets attributes by
    name (``setattr``, ``__dict__``; the code dataclasses and attrs generate uses
    ``object.__setattr__`` for their own fields only)."""
    for klass in _own_classes(cls):
        own = vars(klass)
        if "__getattr__" in own or "__getattribute__" in own:
            return True
        if plain and {"setattr", "__dict__", "__setattr__"} & _code_names(klass):
            return True
    return False


def _set_in_code(cls: type) -> set[str]:
    """Every attribute name the classes' own code uses (``self.x = ...`` in ``__init__``, in
    ``__post_init__``, ...): a result may hold any of them."""
    names: set[str] = set()
    for klass in _own_classes(cls):
        names |= _code_names(klass)
    return names


def _code_names(klass: type) -> set[str]:
    names: set[str] = set()
    for value in vars(klass).values():
        func = value.__func__ if isinstance(value, classmethod | staticmethod) else value
        if isinstance(func, property):
            funcs = [f for f in (func.fget, func.fset, func.fdel) if f is not None]
        else:
            funcs = [func]
        for f in funcs:
            code = getattr(f, "__code__", None)
            if isinstance(code, types.CodeType):
                names |= _names(code)
    return names


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # nested functions, comprehensions
            names |= _names(const)
    return names


def check_declared(feature: str, confidence: Any, kinds: tuple[Declared, ...] | None) -> None:
    """ConfigError when ``confidence`` is a name no result of the function can have."""
    if not isinstance(confidence, str) or kinds is None:
        return
    if any(confidence in kind.names for kind in kinds):
        return
    shown_kinds = " | ".join(kind.label for kind in kinds)
    fields = sorted({f for kind in kinds for f in kind.fields})
    close = difflib.get_close_matches(confidence, fields, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = f" (fields: {', '.join(fields)})" if fields else ""
    raise ConfigError(
        f"feature {feature!r}: confidence={shown(confidence)} is invalid: the function returns "
        f"{shown_kinds}{listed}, which has no {confidence!r}{hint}, so every result would fall "
        "back with invalid_confidence: name a field of the result, or give a callable"
    )
