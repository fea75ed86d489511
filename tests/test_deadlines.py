"""Sync timeouts run the call in the caller's thread and interrupt it at the deadline.

The cases a service meets: a function running Python code (a client's read loop), a blocking
socket read that never answers, a call blocked inside C where Python cannot interrupt it, nested
guards with their own timeouts, many threads racing their deadlines, and a fork.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import aiguard
from aiguard import Reason


def _spin(seconds: float) -> None:
    """Python code running for ``seconds`` (interruptible between two instructions)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_the_call_runs_in_the_callers_thread() -> None:
    """No hand-off: the function sees the caller's thread and its thread-local state."""
    local = threading.local()
    local.user = "ada"

    @aiguard.guard("dl-thread", timeout=1.0)
    def where() -> tuple[int, str]:
        return threading.get_ident(), local.user

    assert where() == (threading.get_ident(), "ada")


def test_python_code_is_interrupted_at_the_deadline_and_cleans_up() -> None:
    cleaned = threading.Event()

    @aiguard.guard("dl-python", timeout=0.05, fallback=aiguard.Default("fallback"))
    def slow() -> str:
        try:
            _spin(5.0)
            return "model"
        finally:
            cleaned.set()

    started = time.perf_counter()
    outcome = slow.outcome()
    elapsed = time.perf_counter() - started
    assert (outcome.value, outcome.reason) == ("fallback", Reason.TIMEOUT)
    assert 0.05 <= elapsed < 0.5
    assert cleaned.is_set()
    _spin(0.05)  # nothing is left pending for this thread afterwards


def test_a_clients_except_exception_does_not_swallow_the_interruption() -> None:
    """Clients turn exceptions into their own errors (and retry them): the interruption is not
    an Exception, so it goes through."""
    swallowed: list[BaseException] = []

    @aiguard.guard("dl-swallow", timeout=0.05, fallback=aiguard.Default("fallback"))
    def client() -> str:
        for _ in range(3):  # a client's retry loop
            try:
                _spin(5.0)
            except Exception as exc:
                swallowed.append(exc)
        return "model"

    assert client.outcome().reason is Reason.TIMEOUT
    assert swallowed == []


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP server that accepts connections and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()
    stop.set()
    thread.join(2)
    server.close()
    for conn in accepted:
        conn.close()


def test_a_blocking_socket_read_is_interrupted(silent_server: tuple[str, int]) -> None:
    """A read blocked in C on a socket without a timeout: the watchdog shuts the socket, the read
    returns, and the call ends at its deadline."""

    @aiguard.guard("dl-socket", timeout=0.1, fallback=aiguard.Default("fallback"))
    def read() -> bytes:
        with socket.create_connection(silent_server) as conn:
            return conn.recv(100)

    for _ in range(3):
        started = time.perf_counter()
        outcome = read.outcome()
        elapsed = time.perf_counter() - started
        assert (outcome.value, outcome.reason) == ("fallback", Reason.TIMEOUT)
        assert elapsed < 0.5


def test_a_call_blocked_in_c_moves_its_guard_to_the_pool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``time.sleep`` cannot be interrupted: that call ends late (still reason timeout, its
    result dropped), a warning names where it blocked, and the guard's later calls are bounded
    by the worker pool."""

    @aiguard.guard("dl-sleep", timeout=0.1, fallback=aiguard.Default("fallback"))
    def sleepy() -> str:
        time.sleep(0.8)
        return "model"

    with caplog.at_level(logging.WARNING, logger="aiguard"):
        first = sleepy.outcome()
    assert (first.value, first.reason) == ("fallback", Reason.TIMEOUT)
    assert first.latency >= 0.7  # it could not be interrupted
    warned = [r.getMessage() for r in caplog.records if "blocked inside C" in r.getMessage()]
    assert len(warned) == 1 and "test_deadlines.py" in warned[0] and "sleepy" in warned[0]

    started = time.perf_counter()
    second = sleepy.outcome()
    assert (second.value, second.reason) == ("fallback", Reason.TIMEOUT)
    assert time.perf_counter() - started < 0.5  # the pool's caller stops waiting


def test_nested_guards_each_get_their_own_deadline() -> None:
    """The outer deadline interrupting an inner guarded call is the outer call's timeout: the
    inner guard does not take it for its own and serve its fallback."""
    inner_outcomes: list[aiguard.Outcome[Any]] = []

    @aiguard.guard("dl-inner", timeout=5.0, fallback=aiguard.Default("inner fallback"))
    def inner() -> str:
        _spin(2.0)
        return "inner"

    @aiguard.guard("dl-outer", timeout=0.1, fallback=aiguard.Default("outer fallback"))
    def outer() -> str:
        try:
            return inner()
        finally:
            inner_outcomes.append(aiguard.last_outcome())  # type: ignore[arg-type]

    outcome = outer.outcome()
    assert (outcome.value, outcome.reason) == ("outer fallback", Reason.TIMEOUT)
    assert outcome.latency < 1.0
    assert all(o is None or o.value != "inner fallback" for o in inner_outcomes)


def test_inner_timeout_inside_an_outer_one() -> None:
    @aiguard.guard("dl-inner2", timeout=0.05, fallback=aiguard.Default("inner fallback"))
    def inner() -> str:
        _spin(2.0)
        return "inner"

    @aiguard.guard("dl-outer2", timeout=2.0)
    def outer() -> str:
        return inner() + " then outer"

    outcome = outer.outcome()
    assert (outcome.value, outcome.reason) == ("inner fallback then outer", Reason.SERVED)


def test_threads_racing_their_deadlines_never_get_anothers_verdict() -> None:
    """Eight threads, calls that end just before or just after their deadline: each outcome says
    what its own call did, and no interruption ever escapes into the caller's code."""
    errors: list[BaseException] = []
    wrong: list[tuple[float, Reason]] = []

    @aiguard.guard("dl-race", timeout=0.02, fallback=aiguard.Default("late"))
    def model(seconds: float) -> str:
        _spin(seconds)
        return "model"

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(60):
                seconds = rng.choice([0.0, 0.001, 0.06, 0.1])
                outcome = model.outcome(seconds)
                # a fast call may still miss a 20 ms deadline on a loaded machine: it is then a
                # timeout, never anything else
                if seconds <= 0.001 and outcome.reason not in (Reason.SERVED, Reason.TIMEOUT):
                    wrong.append((seconds, outcome.reason))
                if seconds >= 0.06 and outcome.reason is not Reason.TIMEOUT:
                    wrong.append((seconds, outcome.reason))
                _spin(0.0005)  # the caller's own code, after the call: never interrupted
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and wrong == []
    stats = aiguard.stats("dl-race")
    assert stats.calls == 480


def test_many_fast_calls_leave_nothing_pending() -> None:
    """Calls that end around their deadline, thousands of times: a late interruption never lands
    in the caller's code after the call returned."""

    @aiguard.guard("dl-edge", timeout=0.0005, fallback=aiguard.Default("late"))
    def edge() -> str:
        _spin(0.0004)
        return "model"

    reasons = set()
    for _ in range(1500):
        reasons.add(edge.outcome().reason)
        _spin(0.0002)
    assert reasons <= {Reason.SERVED, Reason.TIMEOUT}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_after_fork_the_child_enforces_timeouts() -> None:
    @aiguard.guard("dl-fork", timeout=0.05, fallback=aiguard.Default("fallback"))
    def slow() -> str:
        _spin(2.0)
        return "model"

    assert slow.outcome().reason is Reason.TIMEOUT  # the parent's watchdog runs
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own watchdog
        try:
            started = time.perf_counter()
            reason = slow.outcome().reason
            ok = reason is Reason.TIMEOUT and time.perf_counter() - started < 1.0
            os.write(write, b"ok" if ok else str(reason).encode())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 100) == b"ok" and status == 0
    os.close(read)
