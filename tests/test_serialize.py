"""The documented rule by which arguments and results are stored as JSON."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pydantic
from hypothesis import given
from hypothesis import strategies as st

from aiguard._runtime.serialize import dumps, jsonable, loads


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Model(pydantic.BaseModel):
    name: str
    when: datetime.date


def test_known_types_follow_the_rule() -> None:
    """Each documented type is stored as the rule says."""
    value = {
        "tuple": (1, 2),
        "set": {3, 1},
        "enum": Color.RED,
        "dt": datetime.datetime(2026, 1, 2, 3, 4, 5),
        "dec": decimal.Decimal("1.10"),
        "uuid": uuid.UUID(int=1),
        "path": PurePosixPath("/a/b"),
        "dc": Point(1, 2.5),
        "model": Model(name="n", when=datetime.date(2026, 1, 1)),
        "array": np.array([1, 2]),
        "np": np.float64(0.5),
        "nan": float("nan"),
        "inf": float("-inf"),
        1: "int key",
    }
    assert jsonable(value) == {
        "tuple": [1, 2],
        "set": [1, 3],
        "enum": "red",
        "dt": "2026-01-02T03:04:05",
        "dec": "1.10",
        "uuid": "00000000-0000-0000-0000-000000000001",
        "path": "/a/b",
        "dc": {"x": 1, "y": 2.5},
        "model": {"name": "n", "when": "2026-01-01"},
        "array": [1, 2],
        "np": 0.5,
        "nan": {"$repr": "nan"},
        "inf": {"$repr": "-inf"},
        "1": "int key",
    }


def test_unknown_objects_are_kept_as_repr() -> None:
    """Anything else is kept as its repr; a failing repr still leaves a marker."""

    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError

    marker = jsonable(Bad())
    assert marker == {"$repr": f"<unrepresentable {Bad.__qualname__}>"}
    assert jsonable(len) == {"$repr": "<built-in function len>"}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(json_values)
def test_json_values_round_trip_unchanged(value: Any) -> None:
    """Values JSON can hold come back equal."""
    assert loads(dumps(value)) == json.loads(json.dumps(value))


@given(st.from_type(type).flatmap(st.from_type) | st.binary() | st.complex_numbers())
def test_dumps_never_fails(value: Any) -> None:
    """Whatever the value, dumps produces valid JSON."""
    json.loads(dumps(value))
