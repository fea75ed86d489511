"""PostgreSQL: aiguard's tables in a schema of their own (``aiguard`` by default, another one named
by ``schema=`` or the URL's ``?schema=``), and the tables an earlier version left in ``public``
kept in use, with a warning that says how to move them. Each test that needs a database of its
own (to see the default schema) creates one and drops it after."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from services import PG_URL, drop_schema, require_postgres, unique

import aiguard
from aiguard.postgres import TABLE_NAMES, PostgresStore, schema_of


def _tables(url: str, schema: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {r[0] for r in rows}


@pytest.fixture
def database() -> Iterator[str]:
    """The URL of an empty database of this test's own, dropped after."""
    import psycopg

    require_postgres()
    name = f"aiguard_db_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        aiguard.configure(store=None)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _use(store_spec: Any) -> None:
    """Record one call and its feedback through the configured store."""
    aiguard.configure(store=store_spec)

    @aiguard.guard("reply")
    def reply(text: str) -> str:
        return text

    reply.outcome("hello").accept()
    aiguard.flush()


def test_tables_go_to_the_aiguard_schema_by_default(database: str) -> None:
    """configure(store="postgresql://...") puts every table in schema aiguard, none in public."""
    _use(database)
    assert _tables(database, "aiguard") == set(TABLE_NAMES)
    assert _tables(database, "public") == set()
    import psycopg

    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM aiguard.call_records").fetchone() == (1,)
        assert conn.execute("SELECT kind FROM aiguard.feedback").fetchall() == [("accepted",)]


def test_the_store_url_names_the_schema() -> None:
    """configure(store="postgresql://...?schema=NAME") puts the tables in NAME; the URL's other
    parameters still reach the server."""
    url = require_postgres()
    schema = unique("aiguard_s")
    try:
        _use(f"{url}?connect_timeout=3&schema={schema}")
        assert _tables(url, schema) == set(TABLE_NAMES)
        import psycopg

        with psycopg.connect(url) as conn:
            found = conn.execute(f"SELECT count(*) FROM {schema}.feedback").fetchone()
        assert found == (1,)
        store = aiguard.open_store(f"{url}?schema={schema}")
        try:
            assert store.schema == schema  # type: ignore[attr-defined]
            assert [r["kind"] for r in store.feedback_rows(feature="reply")] == ["accepted"]
        finally:
            store.close()
    finally:
        aiguard.configure(store=None)
        drop_schema(schema)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://h/db?schema=bad-name", r"schema='bad-name'.*plain identifier"),
        ("postgresql://h/db?schema=", r"schema=''.*plain identifier"),
        ("postgresql://h/db?schema=a&schema=b", r"schema is given 2 times"),
        ("postgresql://h/db?schema=x;drop", r"schema='x;drop'"),
    ],
)
def test_a_bad_schema_in_the_url_is_a_config_error(url: str, message: str) -> None:
    """The schema parameter is checked before any connection, naming it and its value."""
    with pytest.raises(aiguard.ConfigError, match=message):
        aiguard.configure(store=url)


def test_a_schema_named_twice_must_agree() -> None:
    """PostgresStore(url?schema=a, schema=b) is refused; the same schema twice is fine."""
    with pytest.raises(aiguard.ConfigError, match=r"schema='b'.*schema='a'"):
        PostgresStore("postgresql://h/db?schema=a", schema="b")
    with pytest.raises(aiguard.ConfigError, match=r"schema='1x'"):
        PostgresStore("postgresql://h/db", schema="1x")


def test_schema_of_keeps_the_rest_of_the_url() -> None:
    """Only aiguard's parameter is taken out of the URL; the password stays out of errors."""
    assert schema_of("postgresql://u:pw@h:5/db?sslmode=require&schema=ops") == (
        "postgresql://u:pw@h:5/db?sslmode=require",
        "ops",
    )
    assert schema_of("postgresql://h/db") == ("postgresql://h/db", None)
    with pytest.raises(aiguard.ConfigError) as info:
        schema_of("postgresql://u:secret@h/db?schema=a-b")
    assert "secret" not in str(info.value)


def _write_earlier_version(url: str) -> None:
    """Tables and rows where versions before the aiguard schema wrote them: public."""
    old = PostgresStore(url, schema="public")
    try:
        _use(old)
        aiguard.configure(store=None)
    finally:
        old.close()


def test_tables_left_in_public_keep_being_used_with_a_warning(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A database from an earlier version: the store keeps reading and writing public (nothing
    recorded is lost from view), warning with the statements that move the tables; once they
    are moved, the store uses schema aiguard, with every row, and warns no more."""
    _write_earlier_version(database)
    assert {"feedback", "call_records", "aiguard_meta"} <= _tables(database, "public")
    with caplog.at_level(logging.WARNING, logger="aiguard"):
        store = PostgresStore(database)
    try:
        assert store.schema == "public" and "schema='public'" in repr(store)
        assert [r["kind"] for r in store.feedback_rows(feature="reply")] == ["accepted"]
    finally:
        store.close()
    [warning] = [r.getMessage() for r in caplog.records if "earlier version" in r.getMessage()]
    assert "call_records" in warning and "feedback" in warning and "?schema=public" in warning
    assert _tables(database, "aiguard") == set()  # nothing created beside the old tables
    # the statements the warning gives, run as an operator would
    moves = re.search(r"BEGIN; .*? COMMIT;", warning)
    assert moves is not None
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(moves.group(0))
    caplog.clear()
    from aiguard._runtime import errors

    errors.reset()
    with caplog.at_level(logging.WARNING, logger="aiguard"):
        moved = PostgresStore(database)
    try:
        assert moved.schema == "aiguard"
        assert [r["kind"] for r in moved.feedback_rows(feature="reply")] == ["accepted"]
        assert len(moved.call_records(feature="reply")) == 1
        _use(moved)  # the id sequence moved with its table: new rows follow the old ones
        ids = [r["id"] for r in moved.feedback_rows(feature="reply")]
        assert len(ids) == 2 and ids[1] > ids[0]
    finally:
        aiguard.configure(store=None)
        moved.close()
    assert not [r for r in caplog.records if "earlier version" in r.getMessage()]
    assert _tables(database, "public") == set()


def test_tables_in_both_schemas_use_aiguard_and_warn(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With aiguard's tables in schema aiguard and old ones left in public, the store uses
    schema aiguard and warns that the old ones are not read; naming public uses public."""
    _write_earlier_version(database)
    PostgresStore(database, schema="aiguard").close()
    with caplog.at_level(logging.WARNING, logger="aiguard"):
        store = PostgresStore(database)
    try:
        assert store.schema == "aiguard" and store.feedback_rows(feature="reply") == []
    finally:
        store.close()
    assert any("not read" in r.getMessage() for r in caplog.records)
    named = PostgresStore(f"{database}?schema=public")
    try:
        assert named.schema == "public" and len(named.feedback_rows(feature="reply")) == 1
    finally:
        named.close()
