"""Helpers for testing code that uses aiguard.

Example:
    >>> import aiguard
    >>> from aiguard.testing import capture_outcomes
    >>> @aiguard.guard("echo")
    ... def echo(x: int) -> int:
    ...     return x
    >>> with capture_outcomes() as outcomes:
    ...     _ = echo(1), echo(2)
    >>> [o.value for o in outcomes]
    [1, 2]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from . import _internal
from ._state import state
from .outcome import Outcome

__all__ = ["capture_outcomes", "isolated", "strict"]


@contextlib.contextmanager
def capture_outcomes() -> Iterator[list[Outcome[Any]]]:
    """Collect the Outcome of every guarded call, in any thread, while the block runs.

    Example:
        >>> from aiguard.testing import capture_outcomes
        >>> with capture_outcomes() as outcomes:
        ...     pass
        >>> outcomes
        []
    """
    captured: list[Outcome[Any]] = []
    observer = captured.append
    with state.lock:
        state.observers = (*state.observers, observer)
    try:
        yield captured
    finally:
        with state.lock:
            state.observers = tuple(o for o in state.observers if o is not observer)


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Restore aiguard's global configuration (store, features, observers) when the block ends.

    Example:
        >>> import aiguard
        >>> from aiguard.testing import isolated
        >>> with isolated():
        ...     aiguard.configure(store=":memory:")
    """
    snap = state.snapshot()
    try:
        yield
    finally:
        state.restore(snap)


@contextlib.contextmanager
def strict() -> Iterator[None]:
    """Re-raise aiguard's internal failures instead of logging them, so tests see the bug.

    Example:
        >>> from aiguard.testing import strict
        >>> with strict():
        ...     pass
    """
    before = _internal.strict
    _internal.strict = True
    try:
        yield
    finally:
        _internal.strict = before
