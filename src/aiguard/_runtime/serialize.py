"""How aiguard stores values it does not own (call arguments, results, answers) as JSON.

The rule, applied recursively (documented in docs/review-queue.md):

- ``None``, ``bool``, ``int``, ``str`` and finite ``float`` are stored as they are; NaN and
  infinities (not JSON) become ``{"$repr": "nan"}`` and the like;
- ``list``, ``tuple``, ``set``, ``frozenset`` become JSON arrays (sets sorted by ``repr``);
- ``dict`` becomes an object; keys that are not strings are stored as ``str(key)`` for numbers and
  booleans and ``repr(key)`` otherwise;
- a pydantic model becomes ``model.model_dump(mode="json")``; a dataclass instance becomes the
  object of its fields; an ``Enum`` its value; ``datetime``/``date``/``time`` ISO 8601 text;
  ``Decimal``, ``UUID`` and ``Path`` their ``str``; numpy arrays and scalars their ``tolist()``;
- anything else becomes ``{"$repr": repr(value)}``: kept as text, never dropped. If ``repr``
  itself fails, ``{"$repr": "<unrepresentable TYPE>"}``. Containers nested more than 64 deep are
  stored by ``repr`` from that depth on.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import pathlib
import uuid
from typing import Any

__all__ = ["dumps", "jsonable", "loads"]

_SCALARS = (str, int, bool, type(None))


def jsonable(value: Any, _depth: int = 0) -> Any:
    """Turn ``value`` into something ``json.dumps`` accepts, by the rule above."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$repr": repr(value)}
    if _depth > 64:
        return _repr(value)
    d = _depth + 1
    if isinstance(value, dict):
        return {_key(k): jsonable(v, d) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, d) for v in value]
    if isinstance(value, set | frozenset):
        return [jsonable(v, d) for v in sorted(value, key=repr)]
    if isinstance(value, enum.Enum):
        return jsonable(value.value, d)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID | pathlib.PurePath):
        return str(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump) and hasattr(type(value), "model_fields"):
        try:
            return jsonable(dump(mode="json"), d)
        except Exception:
            return _repr(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), d) for f in dataclasses.fields(value)}
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and type(value).__module__ == "numpy":
        try:
            return jsonable(tolist(), d)
        except Exception:
            return _repr(value)
    return _repr(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int | float | bool) or key is None:
        return str(key)
    r = _repr(key)
    return str(r["$repr"])


def _repr(value: Any) -> dict[str, str]:
    try:
        return {"$repr": repr(value)}
    except Exception:
        return {"$repr": f"<unrepresentable {type(value).__qualname__}>"}


def dumps(value: Any) -> str:
    """``value`` as JSON text, by the rule above."""
    return json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))


def loads(text: str | None) -> Any:
    """Decode what :func:`dumps` wrote (``None`` stays ``None``)."""
    return None if text is None else json.loads(text)
