"""A retraining / evaluation dataset: inputs, served output, the user's label, metadata."""

from __future__ import annotations

import json
from typing import IO, Any

from ._runtime.lifecycle import flush
from .report import parse_since

__all__ = ["export"]

_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
           "cache_write_1h_tokens")  # fmt: skip


def export(
    store: Any, feature: str, out: IO[str], *, since: str | float | None = None
) -> tuple[int, int]:
    """Write one JSON line per recorded call of ``feature`` that has captured inputs.

    Each line: ``call_id``, ``time``, ``input`` (arguments by name), ``output`` (what was
    served), ``label`` (the latest correction, edited version or review answer, else the served
    output when it was accepted, else null), ``feedback`` (the latest kind), ``accepted``,
    ``score``, and ``source``, ``reason``, ``model``, ``confidence``, ``arm``, ``usage`` (the
    call's tokens: ``input_tokens``, ``output_tokens``, ``cache_read_tokens``,
    ``cache_write_tokens``, ``cache_write_1h_tokens``; null when none was read). Returns
    (written, left out for lack of captured inputs). Inputs are captured with
    ``aiguard.configure(capture=True)``.

    Example:
        >>> import io, aiguard
        >>> from aiguard.export import export
        >>> aiguard.configure(store=":memory:", capture=True)
        >>> @aiguard.guard("triage")
        ... def triage(text: str) -> str:
        ...     return "billing"
        >>> triage.outcome("refund please").correct("refunds")  # doctest: +ELLIPSIS
        Feedback(...)
        >>> buf = io.StringIO()
        >>> export(aiguard.store.configured(), "triage", buf)
        (1, 0)
        >>> line = json.loads(buf.getvalue())
        >>> line["input"], line["output"], line["label"]
        ({'text': 'refund please'}, 'billing', 'refunds')
    """
    flush()
    latest: dict[str, dict[str, Any]] = {}
    for row in store.feedback_rows(feature=feature):
        if row["kind"] in ("commented", "rated") and row["call_id"] in latest:
            continue
        latest[row["call_id"]] = row
    written = skipped = 0
    for call in store.call_records(feature=feature, since=parse_since(since)):
        if call["inputs"] is None:
            skipped += 1
            continue
        output = json.loads(call["output"]) if call["output"] is not None else None
        fb = latest.get(call["call_id"])
        label: Any = None
        if fb is not None:
            if fb["label"] is not None:
                label = json.loads(fb["label"])
            elif fb["edited"] is not None:
                label = json.loads(fb["edited"])
            elif fb["accepted"]:
                label = output
        line = {
            "call_id": call["call_id"],
            "time": call["started_at"],
            "input": json.loads(call["inputs"]),
            "output": output,
            "label": label,
            "feedback": None if fb is None else fb["kind"],
            "accepted": None if fb is None or fb["accepted"] is None else bool(fb["accepted"]),
            "score": None if fb is None else fb["score"],
            "source": call["source"],
            "reason": call["reason"],
            "model": call["model"],
            "confidence": call["confidence"],
            "arm": call["arm"],
            "usage": None
            if call["input_tokens"] is None
            else {name: call[name] for name in _TOKENS},
        }
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        written += 1
    return written, skipped
