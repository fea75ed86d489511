"""Call records: every guarded call, written to the store off the call's path.

With a store configured, every guarded call is recorded (``configure(record_calls=False)`` turns
it off): queued in memory on the call's path, written in batches by a background worker every
0.2 s, and at exit within ``configure(exit_timeout=...)`` (default 5 s). See
docs/call-records.md.
"""

from __future__ import annotations

import dataclasses

from ._runtime import lifecycle

__all__ = ["RecordCounts", "counts", "flush"]


@dataclasses.dataclass(frozen=True, slots=True)
class RecordCounts:
    """Call records of this process so far. ``recorded == written + dropped + queued`` at any
    moment; ``drop_reasons`` says why each dropped record was dropped (the queue was full, the
    store refused the row twice, the store did not answer before exit, ...).

    ``audits_written``: audit items (``guard(audit=...)``) written with their calls' records;
    ``audits_dropped``: audit items given up (the store refused one twice: its call's record is
    written without it), each also logged.

    Example:
        >>> import aiguard
        >>> aiguard.records.counts().recorded >= 0
        True
    """

    recorded: int = 0
    written: int = 0
    dropped: int = 0
    queued: int = 0
    drop_reasons: dict[str, int] = dataclasses.field(default_factory=dict)
    audits_written: int = 0
    audits_dropped: int = 0


def counts() -> RecordCounts:
    """How many call records this process made, wrote, dropped (and why) and still holds.

    Example:
        >>> import aiguard
        >>> c = aiguard.records.counts()
        >>> c.recorded == c.written + c.dropped + c.queued
        True
    """
    raw = lifecycle.record_counts()
    prefix = "dropped: "
    return RecordCounts(
        recorded=raw.get("recorded", 0),
        written=raw.get("written", 0),
        dropped=raw.get("dropped", 0),
        queued=raw.get("queued", 0),
        drop_reasons={k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)},
        audits_written=raw.get("audits written", 0),
        audits_dropped=raw.get("audits dropped", 0),
    )


def flush() -> int:
    """Write every queued call record to the store now; returns how many were written.

    Records are also written in the background every 0.2 s and at interpreter exit.

    Example:
        >>> import aiguard
        >>> aiguard.flush()
        0
    """
    return lifecycle.flush()
