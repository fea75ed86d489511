"""Real PostgreSQL and Redis for the tests, and a TCP proxy to cut connections on purpose.

Tests that need a server skip with a clear reason when none answers, except under
AIGUARD_REQUIRE_SERVICES=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

PG_URL = os.environ.get("AIGUARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AIGUARD_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _unavailable(what: str, why: str) -> None:
    if os.environ.get("AIGUARD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required (AIGUARD_REQUIRE_SERVICES=1) but {why}")
    pytest.skip(f"{what} not available: {why}")


def require_postgres() -> str:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        _unavailable(f"PostgreSQL at {PG_URL}", f"no server answered ({exc})")
    return PG_URL


def require_redis() -> str:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        _unavailable(f"Redis at {REDIS_URL}", f"no server answered ({exc})")
    return REDIS_URL


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


class Proxy:
    """A TCP forwarder on 127.0.0.1: ``cut()`` drops every connection and refuses new ones
    until ``mend()``, like a network that fails and comes back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.listen(64)
        self.up = threading.Event()
        self.up.set()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _passes(self) -> bool:
        """Whether data is passed on now (a Partition drops it while blackholed)."""
        return True

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._passes():
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.sockets.clear()

    def mend(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


class Partition(Proxy):
    """A Proxy that can also partition: ``blackhole()`` keeps every connection open but passes
    nothing on, in either direction (a network that drops packets: writes hang, not fail)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.flowing = threading.Event()
        self.flowing.set()
        super().__init__(target)

    def _passes(self) -> bool:
        return self.flowing.is_set()

    def blackhole(self) -> None:
        self.flowing.clear()

    def heal(self) -> None:
        """Pass data on again (what was sent meanwhile is lost, as on a real network)."""
        self.flowing.set()


def proxy_for(url_host_port: tuple[str, int]) -> Iterator[Proxy]:
    proxy = Proxy(url_host_port)
    try:
        yield proxy
    finally:
        proxy.close()


@contextlib.contextmanager
def fresh_store(kind: str, path: str | os.PathLike[str] = ":memory:") -> Iterator[Any]:
    """An empty store of one kind: ``"sqlite"`` (a file at ``path``), or ``"postgres"`` (a
    schema of its own, dropped after; a failure under AIGUARD_REQUIRE_SERVICES=1 when the
    server does not answer)."""
    import aiguard

    if kind == "sqlite":
        store: Any = aiguard.SQLiteStore(path)
        try:
            yield store
        finally:
            store.close()
        return
    url = require_postgres()
    from aiguard.postgres import PostgresStore

    schema = unique("aiguard_t")
    store = PostgresStore(url, schema=schema)
    try:
        yield store
    finally:
        store.close()
        drop_schema(schema)
