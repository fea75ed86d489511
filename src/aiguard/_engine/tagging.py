"""What a guard adds to its call records: segment values and audit sampling.

``compile_tags`` runs when a guard's settings are compiled (at decoration, and again when the
configuration changes): it resolves each segment to a getter over the call's arguments, the way
rollout keys are resolved, and turns the audit share into a bound on the call id's audit hash.
Per call, only guards that configure segments or an audit pay anything: ``Tags.read`` reads the
segment values as text (the arguments are gone later), ``Tags.audited`` hashes the call id. The
JSON and the review item are made by the record writer, off the call's path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .._checks import Segments
from .._runtime import errors
from .._runtime.records import LABEL_CHARS, audit_cut, audit_hash, audit_hash_of, text_of
from ..rollout import _getter

UNKNOWN = "unknown"  # a segment value that is missing, None, or cannot be read

Getter = Callable[[tuple[Any, ...], dict[str, Any]], Any]


class Tags:
    """One guard's segments and audit share, compiled for its current settings."""

    __slots__ = ("audit", "cut", "getters", "names")

    def __init__(
        self, names: tuple[str, ...], getters: tuple[Getter, ...], audit: float | None
    ) -> None:
        self.names = names
        self.getters = getters
        self.audit = audit
        self.cut = None if not audit else audit_cut(audit)

    def read(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """The segment values of a call, as text (``"unknown"`` for a value that is missing,
        None or cannot be read); None when the guard has no segments. Never raises."""
        if not self.getters:
            return None
        values = []
        for get in self.getters:
            try:
                value = get(args, kwargs)
                if value.__class__ is str and len(value) <= LABEL_CHARS and value.isascii():
                    text = value if "\x00" not in value else text_of(value)
                else:
                    text = text_of(value)
            except Exception:
                text = None
            values.append(UNKNOWN if text is None else text)
        return self.names, tuple(values)

    def audited_number(self, number: int) -> bool:
        """``audited`` of this process's call with counter value ``number``, its id not built
        (the served path). Never raises."""
        cut = self.cut
        if cut is None:
            return False
        try:
            return audit_hash_of(number) < cut
        except Exception as exc:
            errors.report("audit sampling", exc)
            return False

    def audited(self, call_id: str) -> bool:
        """Whether this served call goes to review as an audit item (its id's hash is under
        the share's bound). Never raises."""
        cut = self.cut
        if cut is None:
            return False
        try:
            return audit_hash(call_id) < cut
        except Exception as exc:
            errors.report("audit sampling", exc)
            return False


def compile_tags(
    feature: str,
    segments: Segments | None,
    audit: float | None,
    sig: inspect.Signature | None,
) -> Tags | None:
    """The Tags of a guard, or None when it has neither segments nor an audit share. A segment
    that names no parameter of the function is a ConfigError naming the feature, the segment
    and its path."""
    if not segments and not audit:
        return None
    names: list[str] = []
    getters: list[Getter] = []
    for name, spec in segments or ():
        names.append(name)
        if isinstance(spec, str):
            what = f"segment {name!r}:" if name != spec else "segment"
            getters.append(_defaulted(_getter(spec, sig, feature, what), spec, sig))
        else:
            getters.append(_by_callable(spec))
    return Tags(tuple(names), tuple(getters), audit)


def _defaulted(get: Getter, path: str, sig: inspect.Signature | None) -> Getter:
    """``get``, reading the parameter's default when the caller left the argument out (the
    value the function saw)."""
    head = path.split(".")[0]
    p = None if sig is None else sig.parameters.get(head)
    if p is None or p.default is p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
        return get
    positional = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    index = list(sig.parameters).index(head) if sig is not None and positional else None
    default = p.default

    def read(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if head not in kwargs and (index is None or index >= len(args)):
            kwargs = {**kwargs, head: default}
        return get(args, kwargs)

    return read


def _by_callable(fn: Callable[..., Any]) -> Getter:
    def get(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return fn(*args, **kwargs)  # an exception is an unreadable value: "unknown"

    return get
