"""Call ids and timestamps, cheap enough for the per-call path.

A call id is ``ag_`` + 16 hex digits drawn at random once per process (again after ``fork``) + a
per-process counter in hex. The hot path only takes the next counter value (an int); the string is
built when someone asks for it, and is the same every time. The random part makes ids unique across
processes and replicas; the counter makes them unique within one.

Timestamps: the hot path reads only ``time.perf_counter()``; a wall-clock POSIX time is derived
from it against one reference pair taken at import.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time

_prefix = ""
prefix_number = 0  # the random part of this process's call ids, as an int
_counter = itertools.count(1)
next_number = _counter.__next__
_wall0 = time.time()
_perf0 = time.perf_counter()


def reseed() -> None:
    """A new random prefix and counter: at import, and in a forked child (by the runtime)."""
    global _prefix, prefix_number, _counter, next_number
    random_part = secrets.token_hex(8)
    _prefix = "ag_" + random_part + "_"
    prefix_number = int(random_part, 16)
    _counter = itertools.count(1)
    next_number = _counter.__next__


reseed()


def call_id(n: int) -> str:
    """The call id for counter value ``n`` of this process."""
    return f"{_prefix}{n:x}"


def wall_time(perf: float) -> float:
    """The POSIX time at which ``time.perf_counter()`` read ``perf``."""
    return _wall0 + (perf - _perf0)


def process_id() -> str:
    """This process's random id (the call-id prefix without its punctuation)."""
    return _prefix.strip("_")


def issued() -> int:
    """The highest counter value this process has handed out so far (0 before its first call).
    Reads the counter without taking a value (``itertools.count`` shows its next value in its
    repr): for the record writer, not the hot path."""
    return int(repr(_counter)[6:-1]) - 1


_SHAPE = re.compile(r"(ag_[0-9a-f]{16})_([1-9a-f][0-9a-f]{0,15})")


def parse(call_id: str) -> tuple[str, int] | None:
    """(the issuing process's id, the counter value) of a call id as :func:`call_id` builds
    them; None for any other text."""
    match = _SHAPE.fullmatch(call_id)
    if match is None:
        return None
    return match.group(1), int(match.group(2), 16)
