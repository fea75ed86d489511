"""Durations given as seconds or a ``timedelta``, checked once where they are configured."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from .exceptions import ConfigError


def seconds(name: str, value: Any) -> float:
    """``value`` (seconds or a timedelta) as positive, finite seconds; ConfigError naming
    ``name`` and the value otherwise."""
    given = value
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not value > 0
        or not math.isfinite(value)
    ):
        raise ConfigError(f"{name}={given!r} is invalid: must be positive seconds or a timedelta")
    return float(value)
