"""The report's aggregates: what they are, and their computation in Python for a store without SQL
(the reference the SQL of ``_report_sql`` is tested against).

Both produce the same :class:`Aggregates` from the calls of a window and the feedback on those
calls (whenever it was given):

- ``sums``: rows ``(i, feature, key, day, arm, source, *SUMS)``: ``i`` 0 is the whole feature,
  ``i`` 1.. the split ``splits[i - 1]`` (``key`` its value), ``i`` -1 the daily series (``day``:
  days since 1970-01-01 UTC, ``arm``: the rollout arm or ``all``); every row is also split by
  source, so ``by_source`` and the totals are sums of rows;
- ``percentiles``: ``(i, feature, key) -> (p50, p95, p99)`` of the whole call's latency, by the
  nearest rank;
- ``histogram``: ``feature -> (highest latency, counts of 20 equal buckets from 0 to it)``.

Per call, from its feedback rows: the decision is the latest (highest id) row of kind
accepted/edited/rejected/corrected; the audit verdict the latest ``audited`` row's ``accepted``,
counted on calls the model answered (the answer judged was the model's; with or without a
confidence, so that a feature without one still gets its audited error rate);
scores are every score given; a feedback attribute is read from the call's latest row that is
not a comment, a rating or an audit (else its first row). A split names a call column (``model``,
``source``, ``arm``, ``reason``), or a segment recorded on the call, else a feedback attribute of
that name. Values are text: a JSON value that is not a string reads as Python's ``str()`` of it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from ._checks import split_name_ok
from .exceptions import ConfigError

Dialect = Literal["sqlite", "postgres"]

DECISIONS = ("accepted", "edited", "rejected", "corrected")
NOT_UNDOING = ("commented", "rated", "audited")  # never replace a call's latest feedback
CALL_SPLITS = ("model", "source", "arm", "reason")
QUANTILES = (0.50, 0.95, 0.99)
BUCKETS = 20
TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
          "cache_write_1h_tokens")  # fmt: skip
SUMS = (
    "calls", "accepted", "edited", "rejected", "corrected", "dist_sum", "dist_n", "score_sum",
    "score_n", "served", "errors", "timeouts", "cost", "priced", *TOKENS, "audited",
    "audit_errors",
)  # fmt: skip
FLOAT_SUMS = frozenset({"dist_sum", "score_sum"})
MARK = "\x1f"  # before the JSON text of a value that is not a string
DAY = 86400


@dataclasses.dataclass(frozen=True, slots=True)
class Aggregates:
    """What a report is built from (see the module's docstring)."""

    sums: list[tuple[Any, ...]]
    percentiles: dict[tuple[int, str, str | None], tuple[float | None, ...]]
    histogram: dict[str, tuple[float, list[int]]]


def check_splits(splits: Sequence[str]) -> None:
    """A split must be a name that can be looked up in a JSON object by SQL."""
    for s in splits:
        if not split_name_ok(s):
            raise ConfigError(
                f"by={s!r} is invalid: give model, source, arm, reason, or a segment or feedback "
                "attribute name (1 to 100 characters, no double quote, backslash or control "
                "character)"
            )


def key_text(raw: Any) -> str:
    """A group's name from the key the aggregation returns."""
    if raw is None:
        return "none"
    if isinstance(raw, str) and raw.startswith(MARK):
        try:
            return str(json.loads(raw[1:]))
        except ValueError:  # a text value that happens to start with the marker
            return raw
    return str(raw)


def rank(q: float, n: int) -> int:
    """The nearest rank (from 1) of the quantile ``q`` of ``n`` sorted values."""
    return max(1, math.ceil(q * n))


def day_of(t: float) -> int:
    return math.floor(t / DAY)


def histogram_bucket(latency: float, highest: float) -> int:
    """The bucket (0 to ``BUCKETS - 1``) of a latency in the histogram from 0 to ``highest``."""
    return min(BUCKETS - 1, int(latency / highest * BUCKETS)) if highest else 0


# -- in Python ------------------------------------------------------------------------------------


def in_python(
    calls: Iterable[dict[str, Any]], feedback: Iterable[dict[str, Any]], splits: Sequence[str]
) -> Aggregates:
    """The aggregates computed in Python from call records and feedback rows (dicts)."""
    calls = list(calls)
    wanted = {c["call_id"] for c in calls}
    per_call: dict[str, dict[str, Any]] = {}
    for row in sorted((r for r in feedback if r["call_id"] in wanted), key=lambda r: r["id"]):
        p = per_call.setdefault(row["call_id"], {"score_sum": 0.0, "score_n": 0, "row": row})
        if row["score"] is not None:
            p["score_sum"] += row["score"]
            p["score_n"] += 1
        if row["kind"] in DECISIONS:
            p["decision"] = row
        elif row["kind"] == "audited":
            p["audit"] = row
        if row["kind"] not in NOT_UNDOING:
            p["row"] = row
    sums: dict[tuple[Any, ...], list[Any]] = {}
    latencies: dict[tuple[int, str, str | None], list[float]] = defaultdict(list)
    by_feature: dict[str, list[float]] = defaultdict(list)
    for c in calls:
        p = per_call.get(c["call_id"], {})
        keys = []
        for s in splits:
            if s in CALL_SPLITS:
                keys.append(str(c[s] or "none"))
                continue
            seg = _segment(c.get("segments"), s)
            if seg is None and "row" in p:
                seg = _attribute(p["row"]["attributes"], s)
            keys.append("none" if seg is None else seg)
        decision: dict[str, Any] = p.get("decision") or {}
        kind = decision.get("kind")
        audit = p.get("audit")
        verdict = audit["accepted"] if audit is not None and c["source"] == "model" else None
        values = {
            "calls": 1,
            "accepted": kind == "accepted",
            "edited": kind == "edited",
            "rejected": kind == "rejected",
            "corrected": kind == "corrected",
            "dist_sum": (decision.get("edit_distance") or 0.0) if kind == "edited" else 0.0,
            "dist_n": kind == "edited" and decision.get("edit_distance") is not None,
            "score_sum": p.get("score_sum", 0.0),
            "score_n": p.get("score_n", 0),
            "served": c["reason"] == "served",
            "errors": c["reason"] == "error",
            "timeouts": c["reason"] == "timeout",
            "cost": c["cost_pico"] or 0,
            "priced": c["cost_pico"] is not None,
            **{t: c[t] or 0 for t in TOKENS},
            "audited": verdict is not None,
            "audit_errors": verdict == 0,
        }
        source = str(c["source"] or "none")
        rows: list[tuple[Any, ...]] = [(0, c["feature"], None, None, None, source)]
        rows += [(i, c["feature"], k, None, None, source) for i, k in enumerate(keys, 1)]
        arm = str(c["arm"] or "all")
        rows.append((-1, c["feature"], None, day_of(c["started_at"]), arm, source))
        for key in rows:
            acc = sums.setdefault(key, [0] * len(SUMS))
            for j, name in enumerate(SUMS):
                acc[j] += values[name]
        latencies[(0, c["feature"], None)].append(c["latency"])
        for i, k in enumerate(keys, 1):
            latencies[(i, c["feature"], k)].append(c["latency"])
        by_feature[c["feature"]].append(c["latency"])
    percentiles: dict[tuple[int, str, str | None], tuple[float | None, ...]] = {}
    for group, values_ in latencies.items():
        values_.sort()
        percentiles[group] = tuple(values_[rank(q, len(values_)) - 1] for q in QUANTILES)
    histogram = {}
    for feature, values_ in by_feature.items():
        hi = max(values_)
        counts = [0] * BUCKETS
        for x in values_:
            counts[histogram_bucket(x, hi)] += 1
        histogram[feature] = (hi, counts)
    return Aggregates(
        [(*k, *(float(v) if n in FLOAT_SUMS else int(v) for n, v in zip(SUMS, acc, strict=True)))
         for k, acc in sums.items()],
        percentiles,
        histogram,
    )  # fmt: skip


def _segment(text: str | None, name: str) -> str | None:
    data = _object(text)
    value = data.get(name)
    if value is None:
        return None
    return value if isinstance(value, str) else MARK + json.dumps(value)


def _attribute(text: str | None, name: str) -> str | None:
    data = _object(text)
    if name not in data:
        return None
    value = data[name]
    return value if isinstance(value, str) else MARK + json.dumps(value)


def _object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
