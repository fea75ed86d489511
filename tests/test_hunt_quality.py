"""Faults found in segments, labels, audits and the quality figures: each test shows one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import drop_schema, require_postgres, unique

import aiguard
from aiguard._runtime.records import CALL_RECORD_COLUMNS, label_of
from aiguard._runtime.state import runtime
from aiguard.store import configured


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh store of each kind."""
    if request.param == "sqlite":
        s: Any = aiguard.SQLiteStore(tmp_path / "hunt.db")
        yield s
        s.close()
        return
    url = require_postgres()
    from aiguard.postgres import PostgresStore

    schema = unique("aiguard_hunt")
    s = PostgresStore(url, schema=schema)
    try:
        yield s
    finally:
        s.close()
        drop_schema(schema)


def record(call_id: str, feature: str = "triage", **values: Any) -> tuple[Any, ...]:
    row: dict[str, Any] = dict.fromkeys(CALL_RECORD_COLUMNS)
    row.update(
        call_id=call_id,
        feature=feature,
        started_at=1_000.0,
        source="model",
        reason="served",
        latency=0.1,
    )
    row.update(values)
    return tuple(row[c] for c in CALL_RECORD_COLUMNS)


class Unbound:
    """A proxy whose every attribute read fails, ``__class__`` included (as an unbound
    context-local proxy does outside its context)."""

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError(f"working outside of context: {name}")


def test_reading_the_label_of_a_value_whose_attributes_all_fail_never_raises() -> None:
    assert label_of(Unbound()) is None


def test_a_guard_returning_an_unreadable_proxy_does_not_raise_into_the_host() -> None:
    aiguard.configure(store=":memory:")
    answer = Unbound()

    @aiguard.guard("proxy", stream=False)
    def plain(x: int) -> Any:
        return answer

    @aiguard.guard("proxy_seg", segments=("x",), stream=False)
    def segmented(x: int) -> Any:
        return answer

    assert plain(1) is answer
    assert segmented(1) is answer
    aiguard.flush()
    assert len(configured().call_records(feature="proxy")) == 1
    assert len(configured().call_records(feature="proxy_seg")) == 1
