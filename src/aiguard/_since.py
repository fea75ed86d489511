"""Points and spans of time as users write them: ``"7d"``, ``"24h"``, an ISO date, a number.

The quality figures read their windows with these, without importing the report (which uses
the quality figures).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from .exceptions import ConfigError

_SPAN = re.compile(r"^(\d+)\s*([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str | float | None, *, now: float | None = None) -> float | None:
    """A POSIX time from ``"7d"`` (that long ago), an ISO date/time, or a number (as is).

    ``aiguard.parse_since`` is this function.
    """
    if text is None or isinstance(text, int | float):
        return None if text is None else float(text)
    now = time.time() if now is None else now
    m = _SPAN.match(text.strip())
    if m:
        return now - int(m[1]) * _SECONDS[m[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"since={text!r} is invalid: give a duration like '7d' or '24h', or an ISO date"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def span(name: str, value: str | float | timedelta) -> float:
    """A length of time in seconds from ``"7d"``, ``"24h"``, a number of seconds or a
    timedelta; ConfigError naming ``name`` and the value otherwise."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _SPAN.match(value.strip())):
        seconds = float(int(m[1]) * _SECONDS[m[2]])
    else:
        raise ConfigError(
            f"{name}={value!r} is invalid: give a duration like '7d' or '24h', seconds, or a "
            "timedelta"
        )
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{name}={value!r} is invalid: must be a positive, finite duration")
    return seconds
