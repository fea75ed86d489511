"""Internal failures: log once, count, degrade; never raise into the host application.

``report(where, exc)`` is called wherever aiguard's own machinery fails (an observer, the store
behind a review queue, ...). It logs the first failure of each kind at WARNING with its traceback,
counts every one, and returns. With strict mode on (``aiguard.testing.strict()``), it re-raises, so
a test suite sees the bug instead of a log line.
"""

from __future__ import annotations

import collections
import logging
import threading

logger = logging.getLogger("aiguard")

_lock = threading.Lock()
_seen: set[tuple[str, type[BaseException]]] = set()
counts: collections.Counter[str] = collections.Counter()
strict = False


def report(where: str, exc: BaseException) -> None:
    """Record an internal failure at ``where``: log the first of its kind, count every one."""
    with _lock:
        counts[where] += 1
        key = (where, type(exc))
        first = key not in _seen
        _seen.add(key)
    if strict:
        raise exc
    if first:
        logger.warning(
            "aiguard: internal failure in %s (logged once, counted, call not affected): %r",
            where,
            exc,
            exc_info=exc,
        )


def warn_once(key: str, message: str, *args: object) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen in this process."""
    with _lock:
        if key in _seen_keys:
            return
        _seen_keys.add(key)
    logger.warning(message, *args)


_seen_keys: set[str] = set()


def reset() -> None:
    """Forget what was logged and counted (tests)."""
    with _lock:
        _seen.clear()
        _seen_keys.clear()
        counts.clear()
