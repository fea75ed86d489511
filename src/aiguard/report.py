"""Figures from call records and feedback: the report that closes the loop.

``aiguard.report()`` reads the store (every replica's rows when the store is shared) and computes,
per feature and split by model, source, rollout arm or any feedback attribute: acceptance rate
with a Wilson interval, edit ratio, correction rate, fallback/error/timeout rates, latency
percentiles, cost per call and per accepted answer, token totals (cache reads and writes
included), and the AI-vs-baseline difference in acceptance with its (Newcombe) interval. Each
figure is shown against the feature's targets. The report renders as text, HTML or JSON.

Feedback given twice for a call counts once, the latest. Acceptance counts ``accepted`` and
``edited`` as accepted, ``rejected`` and ``corrected`` as not, over calls with such a decision.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ._runtime.state import runtime
from .exceptions import ConfigError
from .pricing import to_decimal
from .store import configured as configured_store
from .targets import Target

__all__ = ["FeatureFigures", "Report", "parse_since", "report", "wilson"]

Z = 1.959963984540054  # 95 %


def wilson(successes: int, n: int, z: float = Z) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95 % by default); None when n is 0.

    Example:
        >>> import aiguard
        >>> low, high = aiguard.wilson(40, 100)
        >>> round(low, 3), round(high, 3)
        (0.309, 0.498)
    """
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float] | None:
    """Difference p1 - p2 with Newcombe's hybrid Wilson interval (method 10)."""
    a, b = wilson(k1, n1), wilson(k2, n2)
    if a is None or b is None:
        return None
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    low = d - math.sqrt((p1 - a[0]) ** 2 + (b[1] - p2) ** 2)
    high = d + math.sqrt((a[1] - p1) ** 2 + (p2 - b[0]) ** 2)
    return d, low, high


_SINCE = re.compile(r"^(\d+)\s*([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str | float | None, *, now: float | None = None) -> float | None:
    """A POSIX time from ``"7d"``, ``"24h"``, ``"30m"``, an ISO date/time, or a number.

    Example:
        >>> import aiguard
        >>> aiguard.parse_since("2d", now=1_000_000.0)
        827200.0
    """
    if text is None or isinstance(text, int | float):
        return None if text is None else float(text)
    now = time.time() if now is None else now
    m = _SINCE.match(text.strip())
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


@dataclasses.dataclass(frozen=True, slots=True)
class FeatureFigures:
    """The figures of one feature, or of one group within it (``group`` says which).

    Token totals add up the calls' records (a call without usage counts none):
    ``cache_read_tokens`` and ``cache_write_tokens`` are parts of ``input_tokens``,
    ``cache_write_1h_tokens`` a part of ``cache_write_tokens``.

    Example:
        >>> import aiguard
        >>> f = aiguard.FeatureFigures("reply", calls=10, decided=4, accepted=3)
        >>> f.figure("calls"), f.figure("acceptance_rate")
        (10.0, None)
    """

    feature: str
    group: str | None = None
    calls: int = 0
    decided: int = 0
    accepted: int = 0
    edited: int = 0
    rejected: int = 0
    corrected: int = 0
    acceptance_rate: float | None = None
    acceptance_interval: tuple[float, float] | None = None
    edit_ratio: float | None = None
    correction_rate: float | None = None
    rejection_rate: float | None = None
    mean_score: float | None = None
    fallback_rate: float | None = None
    error_rate: float | None = None
    timeout_rate: float | None = None
    p50_latency: float | None = None
    p95_latency: float | None = None
    p99_latency: float | None = None
    cost: Decimal = Decimal(0)
    cost_per_call: Decimal | None = None
    cost_per_accepted: Decimal | None = None
    by_source: dict[str, int] = dataclasses.field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    def figure(self, metric: str) -> float | None:
        value = getattr(self, metric, None)
        return None if value is None else float(value)


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """The report: per-feature figures, groups, AI-vs-baseline, targets, and series for plots.

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:")
        >>> aiguard.report().features
        []
    """

    features: list[FeatureFigures]
    groups: dict[str, list[FeatureFigures]]
    ai_vs_baseline: dict[str, tuple[float, float, float] | None]
    targets: dict[str, list[tuple[Target, float | None, bool | None]]]
    series: dict[str, dict[str, Any]]
    since: float | None = None
    generated_at: float = 0.0

    def to_text(self) -> str:
        """The report as a terminal table."""
        from ._report_render import text

        return text(self)

    def to_html(self) -> str:
        """The report as one self-contained HTML page with plots (inline SVG, no scripts)."""
        from ._report_render import html

        return html(self)

    def to_json(self) -> str:
        """The report as JSON: every figure of every feature and group, the targets with the
        figure and verdict of each, AI vs baseline, the daily series. Amounts of money are
        strings (exact decimals); a figure with no value is null.

        Example:
            >>> import aiguard, json
            >>> aiguard.configure(store=":memory:")
            >>> json.loads(aiguard.report().to_json())["features"]
            []
        """
        from ._report_render import as_json

        return as_json(self)


def _latest_feedback(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    scores: dict[str, list[float]] = defaultdict(list)
    for row in rows:  # oldest first: the last one wins
        if row["score"] is not None:
            scores[row["call_id"]].append(row["score"])
        if row["kind"] in ("commented", "rated") and row["call_id"] in latest:
            continue  # a comment or rating does not undo a decision
        latest[row["call_id"]] = row
    for call_id, values in scores.items():
        if call_id in latest:
            latest[call_id] = {**latest[call_id], "_scores": values}
    return latest


def _percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def _figures(
    feature: str, group: str | None, calls: list[dict[str, Any]], fb: dict[str, dict[str, Any]]
) -> FeatureFigures:
    n = len(calls)
    kinds: dict[str, int] = defaultdict(int)
    distances: list[float] = []
    scores: list[float] = []
    for c in calls:
        f = fb.get(c["call_id"])
        if f is None:
            continue
        kinds[f["kind"]] += 1
        if f["kind"] == "edited" and f["edit_distance"] is not None:
            distances.append(f["edit_distance"])
        scores.extend(f.get("_scores", ()))
    accepted = kinds["accepted"] + kinds["edited"]
    decided = accepted + kinds["rejected"] + kinds["corrected"]
    latencies = sorted(c["latency"] for c in calls)
    by_source: dict[str, int] = defaultdict(int)
    reasons: dict[str, int] = defaultdict(int)
    for c in calls:
        by_source[c["source"] or "none"] += 1
        reasons[c["reason"]] += 1
    priced = [c["cost_pico"] for c in calls if c["cost_pico"] is not None]
    cost = sum(priced)
    tokens = {name: sum(c[name] or 0 for c in calls) for name in _TOKENS}
    return FeatureFigures(
        feature=feature,
        group=group,
        calls=n,
        decided=decided,
        accepted=kinds["accepted"],
        edited=kinds["edited"],
        rejected=kinds["rejected"],
        corrected=kinds["corrected"],
        acceptance_rate=accepted / decided if decided else None,
        acceptance_interval=wilson(accepted, decided),
        edit_ratio=sum(distances) / len(distances) if distances else None,
        correction_rate=kinds["corrected"] / decided if decided else None,
        rejection_rate=(kinds["rejected"] + kinds["corrected"]) / decided if decided else None,
        mean_score=sum(scores) / len(scores) if scores else None,
        fallback_rate=(n - reasons["served"]) / n if n else None,
        error_rate=reasons["error"] / n if n else None,
        timeout_rate=reasons["timeout"] / n if n else None,
        p50_latency=_percentile(latencies, 0.50),
        p95_latency=_percentile(latencies, 0.95),
        p99_latency=_percentile(latencies, 0.99),
        cost=to_decimal(cost),
        cost_per_call=to_decimal(cost // len(priced)) if priced else None,
        cost_per_accepted=to_decimal(cost // accepted) if accepted and priced else None,
        by_source=dict(by_source),
        **tokens,
    )


_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
           "cache_write_1h_tokens")  # fmt: skip


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def _series(calls: list[dict[str, Any]], fb: dict[str, dict[str, Any]]) -> dict[str, Any]:
    days: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "calls": 0,
            "cost": 0,
            "priced": 0,
            "sources": defaultdict(int),
            "arm": defaultdict(lambda: [0, 0]),
        }
    )
    for c in calls:
        d = days[_day(c["started_at"])]
        d["calls"] += 1
        d["sources"][c["source"] or "none"] += 1
        if c["cost_pico"] is not None:
            d["cost"] += c["cost_pico"]
            d["priced"] += 1
        f = fb.get(c["call_id"])
        if f is not None and f["kind"] in ("accepted", "edited", "rejected", "corrected"):
            arm = c["arm"] or "all"
            d["arm"][arm][1] += 1
            d["arm"][arm][0] += f["kind"] in ("accepted", "edited")
    order = sorted(days)
    return {
        "days": order,
        "calls": [days[d]["calls"] for d in order],
        "cost": [float(to_decimal(days[d]["cost"])) for d in order],
        "cost_per_call": [
            float(to_decimal(days[d]["cost"] // days[d]["priced"])) if days[d]["priced"] else None
            for d in order
        ],
        "sources": {
            s: [days[d]["sources"].get(s, 0) for d in order]
            for s in sorted({s for d in order for s in days[d]["sources"]})
        },
        "acceptance": {
            arm: [
                (days[d]["arm"][arm][0] / days[d]["arm"][arm][1])
                if days[d]["arm"][arm][1]
                else None
                for d in order
            ]
            for arm in sorted({a for d in order for a in days[d]["arm"]})
        },
        "latencies": sorted(c["latency"] for c in calls),
    }


def _group_key(split: str, call: dict[str, Any], fb: dict[str, Any] | None) -> str:
    if split in ("model", "source", "arm", "reason"):
        return str(call[split] or "none")
    attrs = json.loads(fb["attributes"]) if fb is not None and fb.get("attributes") else {}
    return str(attrs.get(split, "none"))


def report(
    feature: str | None = None,
    *,
    since: str | float | None = None,
    by: str | Sequence[str] = ("source", "arm"),
    store: Any = None,
    targets: Mapping[str, Sequence[str | Target]] | None = None,
) -> Report:
    """Compute the report from the store's call records and feedback.

    Args:
        feature: one feature, or all.
        since: only calls from then on: ``"7d"``, ``"24h"``, an ISO date, or a POSIX time.
        by: splits to compute groups for: ``model``, ``source``, ``arm``, ``reason`` or any
            attribute given with feedback.
        store: a store to read (default: the configured one).
        targets: per-feature targets (default: those configured for each feature).

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:", features={"reply": {"targets": ["calls >= 1"]}})
        >>> @aiguard.guard("reply")
        ... def reply(text: str) -> str:
        ...     return "ok"
        >>> reply.outcome("hi").accept()  # doctest: +ELLIPSIS
        Feedback(...)
        >>> figures = aiguard.report("reply").features[0]
        >>> figures.calls, figures.acceptance_rate
        (1, 1.0)
    """
    from ._runtime.lifecycle import flush

    flush()
    store = configured_store() if store is None else store
    start = parse_since(since)
    calls = store.call_records(feature=feature, since=start)
    fb = _latest_feedback(store.feedback_rows(feature=feature))
    per_feature: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in calls:
        per_feature[c["feature"]].append(c)
    splits = [by] if isinstance(by, str) else list(by)
    features, groups, diffs, target_rows, series = [], {}, {}, {}, {}
    configured = runtime.features
    for name in sorted(per_feature):
        rows = per_feature[name]
        figures = _figures(name, None, rows, fb)
        features.append(figures)
        grouped: list[FeatureFigures] = []
        for split in splits:
            buckets: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for c in rows:
                buckets[_group_key(split, c, fb.get(c["call_id"]))].append(c)
            if len(buckets) > 1 or split != "arm":
                grouped += [
                    _figures(name, f"{split}={k}", v, fb) for k, v in sorted(buckets.items())
                ]
        groups[name] = grouped
        arms = {g.group: g for g in grouped if g.group and g.group.startswith("arm=")}
        ai, base = arms.get("arm=ai"), arms.get("arm=baseline")
        diffs[name] = (
            newcombe(ai.accepted + ai.edited, ai.decided, base.accepted + base.edited, base.decided)
            if ai is not None and base is not None
            else None
        )
        wanted = (targets or {}).get(name)
        if wanted is None:
            cfg = configured.get(name)
            wanted = list(cfg.targets) if cfg is not None else []
        target_rows[name] = [
            (t, figures.figure(t.metric), t.check(figures.figure(t.metric)))
            for t in (Target.parse(x) if not isinstance(x, Target) else x for x in wanted)
        ]
        series[name] = _series(rows, fb)
    return Report(features, groups, diffs, target_rows, series, start, time.time())
