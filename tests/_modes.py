"""The `mode` fixture: run a behaviour through the sync and the async driver alike.

A test takes ``mode`` and writes its model function once, as a plain function; ``mode.guard``
guards it as is (sync) or as an ``async def`` with the same signature (async), and ``mode.call``,
``mode.outcome`` and ``mode.last_outcome`` drive the guarded function the way a caller of that
kind would. Every test that takes ``mode`` runs twice, with ids ``sync`` and ``async``.

Example::

    def test_served(mode: Mode) -> None:
        @mode.guard("echo")
        def echo(text: str) -> str:
            return text

        assert mode.call(echo, "hi") == "hi"
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Literal, TypeVar

import pytest

import aiguard

__all__ = ["Mode", "mode"]

Body = Callable[..., Any]
T = TypeVar("T")


class Mode:
    """One driver, sync or async, behind one interface.

    In async mode every coroutine runs on one event loop per test (an :class:`asyncio.Runner`),
    in one context shared by all the runs, as the awaits of one task would: what a call sets in a
    context variable (``aiguard.last_outcome()``) is seen by the next run, not by the test body.
    """

    def __init__(self, name: Literal["sync", "async"], runner: asyncio.Runner | None) -> None:
        self.name = name
        self.is_async = name == "async"
        self._runner = runner

    def __repr__(self) -> str:
        return f"Mode({self.name!r})"

    def body(self, fn: Body) -> Body:
        """``fn`` as this mode's model function.

        Sync: ``fn`` itself. Async: an ``async def`` with ``fn``'s name and signature that yields
        to the loop once, then calls ``fn``. An ``async def`` (see :meth:`sleeper`) is kept as is.
        """
        if not self.is_async or inspect.iscoroutinefunction(fn):
            return fn

        @functools.wraps(fn)
        async def body(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            return fn(*args, **kwargs)

        return body

    def guard(self, feature: str, **guard_kwargs: Any) -> Callable[[Body], Any]:
        """``aiguard.guard(feature, **guard_kwargs)``, applied to :meth:`body` of the function.

        The arguments are checked when ``guard`` is called, as with ``aiguard.guard``.
        """
        decorator = aiguard.guard(feature, **guard_kwargs)

        def apply(fn: Body) -> Any:
            return decorator(self.body(fn))

        return apply

    def run(self, awaitable: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine to completion on this test's loop (async mode only)."""
        if self._runner is None:
            raise TypeError("Mode.run() is for async mode")
        return self._runner.run(awaitable)

    def call(self, guarded: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``guarded`` (and await it in async mode): the served value, or its exception."""
        if self.is_async:
            return self.run(guarded(*args, **kwargs))
        return guarded(*args, **kwargs)

    def outcome(self, guarded: Any, /, *args: Any, **kwargs: Any) -> aiguard.Outcome[Any]:
        """``guarded.outcome(...)`` (awaited in async mode): the call's whole Outcome."""
        if self.is_async:
            result: aiguard.Outcome[Any] = self.run(guarded.outcome(*args, **kwargs))
            return result
        outcome: aiguard.Outcome[Any] = guarded.outcome(*args, **kwargs)
        return outcome

    def last_outcome(self) -> aiguard.Outcome[Any] | None:
        """``aiguard.last_outcome()`` where the calls ran: this thread, or the loop's context."""
        if not self.is_async:
            return aiguard.last_outcome()

        async def read() -> aiguard.Outcome[Any] | None:
            return aiguard.last_outcome()

        last: aiguard.Outcome[Any] | None = self.run(read())
        return last

    def set_var(self, var: contextvars.ContextVar[T], value: T) -> None:
        """``var.set(value)`` where the calls run: this thread, or the loop's context."""
        if not self.is_async:
            var.set(value)
            return

        async def write() -> None:
            var.set(value)

        self.run(write())

    def blocker(
        self,
        release: threading.Event,
        result: Any = None,
        *,
        cancelled: threading.Event | None = None,
        seconds: float = 5.0,
    ) -> Body:
        """A model function that takes any arguments and waits for ``release`` (at most
        ``seconds``), then returns ``result``.

        Sync: polls ``release`` with short ``release.wait`` calls (Python code between them, as
        an HTTP client's read loop: a timeout interrupts it; ``cancelled`` is set when it is).
        Async: polls ``release`` with ``asyncio.sleep``, so the loop stays
        free and a timeout cancels it; ``cancelled``, if given, is set when it is cancelled.
        """
        if self.is_async:

            async def blocked_async(*args: Any, **kwargs: Any) -> Any:
                deadline = time.monotonic() + seconds
                try:
                    while not release.is_set() and time.monotonic() < deadline:
                        await asyncio.sleep(0.005)
                except asyncio.CancelledError:
                    if cancelled is not None:
                        cancelled.set()
                    raise
                return result

            return blocked_async

        def blocked(*args: Any, **kwargs: Any) -> Any:
            deadline = time.monotonic() + seconds
            try:
                while not release.is_set() and time.monotonic() < deadline:
                    release.wait(0.005)
            except BaseException:
                if cancelled is not None:
                    cancelled.set()
                raise
            return result

        return blocked

    def sleeper(self, seconds: float, result: Any = None) -> Body:
        """A model function that takes any arguments, sleeps ``seconds``, then returns ``result``.

        Sync: short ``time.sleep`` calls in a loop (a timeout interrupts it between two).
        Async: ``asyncio.sleep``, so the loop stays free and a timeout cancels it.
        """
        if self.is_async:

            async def slow_async(*args: Any, **kwargs: Any) -> Any:
                await asyncio.sleep(seconds)
                return result

            return slow_async

        def slow(*args: Any, **kwargs: Any) -> Any:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(min(0.005, seconds))
            return result

        return slow


@pytest.fixture(params=["sync", "async"], ids=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> Iterator[Mode]:
    """The behaviour under test, once through the sync driver and once through the async one."""
    if request.param == "sync":
        yield Mode("sync", None)
        return
    with asyncio.Runner() as runner:
        yield Mode("async", runner)
