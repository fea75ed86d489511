"""Internal failures: log once, count, degrade; never raise into the host application.

``report(where, exc)`` is called wherever aiguard's own machinery fails (an observer, the store
behind a review queue, ...). It logs the first failure of each kind at WARNING with its traceback,
counts every one (in the runtime: ``runtime.error_counts``), and returns. With strict mode on
(``aiguard.testing.strict()``), it re-raises, so a test suite sees the bug instead of a log line.
"""

from __future__ import annotations

import logging

from .state import runtime

logger = logging.getLogger("aiguard")


def report(where: str, exc: BaseException) -> None:
    """Record an internal failure at ``where``: log the first of its kind, count every one."""
    rt = runtime
    with rt.lock:
        rt.error_counts[where] += 1
        key = (where, type(exc))
        first = key not in rt.error_seen
        rt.error_seen.add(key)
    if rt.strict:
        raise exc
    if first:
        logger.warning(
            "aiguard: internal failure in %s (logged once, counted, call not affected): %r",
            where,
            exc,
            exc_info=exc,
        )


def count(where: str) -> None:
    """Count one failure at ``where`` that is reported elsewhere (e.g. as a control event)."""
    with runtime.lock:
        runtime.error_counts[where] += 1


def first_time(key: str) -> bool:
    """True the first time ``key`` is seen in this process (then False)."""
    rt = runtime
    with rt.lock:
        if key in rt.error_seen:
            return False
        rt.error_seen.add(key)
    return True


def warn_once(key: str, message: str, *args: object) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen in this process."""
    if first_time(key):
        logger.warning(message, *args)


def counts() -> dict[str, int]:
    """Internal failures so far, by where they happened."""
    with runtime.lock:
        return dict(runtime.error_counts)


def reset() -> None:
    """Forget what was logged and counted (tests)."""
    with runtime.lock:
        runtime.error_seen.clear()
        runtime.error_counts.clear()
