"""Call records: every guarded call, written to the store off the call's path.

With a store configured, every guarded call is recorded (``configure(record_calls=False)`` turns
it off): queued in memory on the call's path, written in batches by a background worker every
0.2 s, and at exit within ``configure(exit_timeout=...)`` (default 5 s). See
docs/call-records.md.
"""

from __future__ import annotations

from ._runtime import lifecycle

__all__ = ["flush"]


def flush() -> int:
    """Write every queued call record to the store now; returns how many were written.

    Records are also written in the background every 0.2 s and at interpreter exit.

    Example:
        >>> import aiguard
        >>> aiguard.flush()
        0
    """
    return lifecycle.flush()
