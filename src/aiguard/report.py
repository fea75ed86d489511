"""Figures from call records and feedback: the report that closes the loop.

``aiguard.report()`` reads the store (every replica's rows when the store is shared) and computes,
per feature and split by model, source, rollout arm, a segment recorded on the calls or any
feedback attribute: acceptance rate with a Wilson interval, edit ratio, correction rate,
fallback/error/timeout rates, latency percentiles, cost per call and per accepted answer, token
totals (cache reads and writes included), the audited error rate with its Wilson interval, and
the AI-vs-baseline difference in acceptance with its (Newcombe) interval. Segments much worse off
than the best one are flagged. Each figure is shown against the feature's targets. The report
renders as text, HTML or JSON.

The figures are aggregated in the database over the window asked for (``_report_data``). A
call's decision is its latest feedback of kind ``accepted``/``edited`` (accepted) or
``rejected``/``corrected`` (not); comments, ratings and audit verdicts never replace it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import _quality_math as _qm
from . import _report_cascade, _since
from . import canvas as _canvas
from ._report_data import (
    BUCKETS,
    CALL_SPLITS,
    QUANTILES,
    SUMS,
    TOKENS,
    Aggregates,
    check_splits,
    in_python,
    key_text,
)
from ._report_shadow import shadow_figures
from ._runtime.state import runtime
from .exceptions import ConfigError
from .pricing import to_decimal
from .shadow import ShadowFigures
from .store import configured as configured_store
from .targets import Target, is_condition_mapping, parse_targets

if TYPE_CHECKING:
    from .quality import QualitySummary

__all__ = ["FeatureFigures", "Report", "SegmentGap", "parse_since", "report", "wilson"]

Z = _qm.Z  # 95 %


def wilson(successes: int, n: int, z: float = Z) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95 % by default); None when n is 0.

    Example:
        >>> import aiguard
        >>> low, high = aiguard.wilson(40, 100)
        >>> round(low, 3), round(high, 3)
        (0.309, 0.498)
    """
    return _qm.wilson(successes, n, z)


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


def parse_since(text: str | float | None, *, now: float | None = None) -> float | None:
    """A POSIX time from ``"7d"``, ``"24h"``, ``"30m"``, an ISO date/time, or a number.

    Example:
        >>> import aiguard
        >>> aiguard.parse_since("2d", now=1_000_000.0)
        827200.0
    """
    return _since.parse_since(text, now=now)


@dataclasses.dataclass(frozen=True, slots=True)
class FeatureFigures:
    """The figures of one feature, or of one group within it (``group`` says which).

    Token totals add up the calls' records (a call without usage counts none):
    ``cache_read_tokens`` and ``cache_write_tokens`` are parts of ``input_tokens``,
    ``cache_write_1h_tokens`` a part of ``cache_write_tokens``.

    Cost: ``cost``, ``cost_per_call`` and ``cost_per_accepted`` are known only when every call
    of the group has a known cost (a model without a price in the price table has none); else
    they are ``None``, never a total that leaves calls out. ``priced`` counts the calls with a
    known cost and ``known_cost`` adds up their costs, so that a partly priced group still
    shows what is known, with its share.

    ``audited``: calls whose model answer has an audit verdict (a reviewer's, on an audit item),
    ``audit_errors`` those judged wrong; ``audited_error_rate`` is their share, with its Wilson
    interval. Audits never change the acceptance figures, which are the users' decisions.

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
    cost: Decimal | None = None
    cost_per_call: Decimal | None = None
    cost_per_accepted: Decimal | None = None
    by_source: dict[str, int] = dataclasses.field(default_factory=dict)
    priced: int = 0
    known_cost: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    audited: int = 0
    audit_errors: int = 0
    audited_error_rate: float | None = None
    audited_error_interval: tuple[float, float] | None = None
    # cascades (aiguard.Escalate) and the result cache (aiguard.Cache), per feature (not split)
    escalated: int = 0
    escalate_served: int = 0
    escalation_rate: float | None = None
    escalation_interval: tuple[float, float] | None = None
    cost_per_escalated_call: Decimal | None = None
    cost_per_unescalated_call: Decimal | None = None
    cache_hits: int = 0
    cache_hit_rate: float | None = None
    saved_cost: Decimal | None = None
    known_saved_cost: Decimal = Decimal(0)

    def figure(self, metric: str) -> float | None:
        value = getattr(self, metric, None)
        return None if value is None else float(value)


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """The report: per-feature figures, groups, AI-vs-baseline, targets, series for plots, per
    feature the gaps of its segments to the best one (``segment_flags``, see
    :class:`SegmentGap`), and its calibration and drift (``quality``, see
    :class:`aiguard.quality.QualitySummary`; empty for a store of your own, which cannot
    compute them), and its shadow candidates against its current model (``shadows``, a list
    per feature, one :class:`aiguard.shadow.ShadowFigures` per candidate).

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
    segment_flags: dict[str, list[SegmentGap]] = dataclasses.field(default_factory=dict)
    quality: dict[str, QualitySummary] = dataclasses.field(default_factory=dict)
    currency: str = "USD"
    canvas: dict[str, _canvas.Canvas] = dataclasses.field(default_factory=dict)
    shadows: dict[str, list[ShadowFigures]] = dataclasses.field(default_factory=dict)

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


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentGap:
    """How far one segment's figure lies from the best segment's, in one split of a feature
    (the best: the highest rate of good answers at the 95 % level, its Wilson lower bound).

    ``figure`` is ``acceptance_rate`` (higher is better), ``error_rate`` or
    ``audited_error_rate`` (lower is better). ``difference`` is how much worse the segment is
    than the best one (best minus segment for acceptance, segment minus best for an error rate),
    with Newcombe's 95 % ``interval``; ``ratio`` is the four-fifths ratio: the segment's rate over
    the best one's for acceptance, the ratio of the rates of good answers (1 - error rate) for an
    error rate. ``flagged``: the whole interval lies above the margin, so the segment is worse
    than the best by more than the margin at the 95 % level.

    Example:
        >>> import aiguard
        >>> gap = aiguard.SegmentGap("reply", "region", "apac", "acceptance_rate", 0.5, "eu",
        ...                          0.8, 0.3, (0.18, 0.41), 0.625, True)
        >>> gap.flagged, gap.ratio < 0.8
        (True, True)
    """

    feature: str
    split: str
    segment: str
    figure: str
    value: float
    best_segment: str
    best_value: float
    difference: float
    interval: tuple[float, float]
    ratio: float | None
    flagged: bool


MARGIN = 0.05
GAP_FIGURES = ("acceptance_rate", "error_rate", "audited_error_rate")


def _good(f: FeatureFigures, figure: str) -> tuple[int, int]:
    """(good answers, answers) behind a figure: accepted of decided, or not erroneous."""
    if figure == "acceptance_rate":
        return f.accepted + f.edited, f.decided
    if figure == "error_rate":
        n = f.calls
        bad = round((f.error_rate or 0.0) * n)
    else:
        n, bad = f.audited, f.audit_errors
    return n - bad, n


def segment_gaps(
    feature: str, split: str, groups: Sequence[FeatureFigures], margin: float
) -> list[SegmentGap]:
    """Every segment of a split against the best one, per figure (segments without the figure,
    and the calls with no value for the split, ``none``, are left out)."""
    gaps: list[SegmentGap] = []
    prefix = f"{split}="
    named = [
        (g.group[len(prefix) :], g)
        for g in groups
        if g.group is not None and g.group.startswith(prefix) and g.group != f"{split}=none"
    ]
    for figure in GAP_FIGURES:
        counted = [(name, *_good(g, figure)) for name, g in named]
        counted = [(name, k, n) for name, k, n in counted if n > 0]
        if len(counted) < 2:
            continue
        # the best segment: the highest rate at the 95 % level (its Wilson lower bound), so
        # that a segment of a call or two, all good by chance, is not the one compared with
        best, bk, bn = max(counted, key=lambda x: (wilson(x[1], x[2]) or (0.0, 0.0))[0])
        for name, k, n in counted:
            if name == best:
                continue
            diff = newcombe(bk, bn, k, n)
            assert diff is not None  # both have answers
            d, low, high = diff
            if figure == "acceptance_rate":
                value, best_value = k / n, bk / bn
            else:
                value, best_value = 1 - k / n, 1 - bk / bn
            gaps.append(
                SegmentGap(
                    feature, split, name, figure, value, best, best_value, d, (low, high),
                    (k / n) / (bk / bn) if bk else None, low > margin,
                )
            )  # fmt: skip
    return gaps


def _figures(
    feature: str,
    group: str | None,
    t: dict[str, Any],
    by_source: dict[str, int],
    percentiles: tuple[float | None, ...],
) -> FeatureFigures:
    n = t["calls"]
    accepted = t["accepted"] + t["edited"]
    decided = accepted + t["rejected"] + t["corrected"]
    cost, priced, audited = t["cost"], t["priced"], t["audited"]
    p50, p95, p99 = percentiles
    return FeatureFigures(
        feature=feature,
        group=group,
        calls=n,
        decided=decided,
        accepted=t["accepted"],
        edited=t["edited"],
        rejected=t["rejected"],
        corrected=t["corrected"],
        acceptance_rate=accepted / decided if decided else None,
        acceptance_interval=wilson(accepted, decided),
        edit_ratio=t["dist_sum"] / t["dist_n"] if t["dist_n"] else None,
        correction_rate=t["corrected"] / decided if decided else None,
        rejection_rate=(t["rejected"] + t["corrected"]) / decided if decided else None,
        mean_score=t["score_sum"] / t["score_n"] if t["score_n"] else None,
        fallback_rate=(n - t["served"]) / n if n else None,
        error_rate=t["errors"] / n if n else None,
        timeout_rate=t["timeouts"] / n if n else None,
        p50_latency=p50,
        p95_latency=p95,
        p99_latency=p99,
        # every cost figure is unknown while any call's cost is (see FeatureFigures)
        cost=to_decimal(cost) if n and priced == n else None,
        cost_per_call=to_decimal(cost // n) if n and priced == n else None,
        cost_per_accepted=to_decimal(cost // accepted) if accepted and priced == n else None,
        by_source=dict(sorted(by_source.items())),
        priced=priced,
        known_cost=to_decimal(cost),
        **{name: t[name] for name in TOKENS},
        audited=audited,
        audit_errors=t["audit_errors"],
        audited_error_rate=t["audit_errors"] / audited if audited else None,
        audited_error_interval=wilson(t["audit_errors"], audited),
    )


def _day(number: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=number)).strftime("%Y-%m-%d")


def _series(rows: list[tuple[Any, ...]], histogram: tuple[float, list[int]]) -> dict[str, Any]:
    """The daily series of one feature from its ``i = -1`` rows (day, arm, source, sums)."""
    days: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"calls": 0, "cost": 0, "priced": 0, "sources": defaultdict(int), "arm": {}}
    )
    at = {name: 6 + j for j, name in enumerate(SUMS)}
    for row in rows:
        d = days[row[3]]
        d["calls"] += row[at["calls"]]
        d["cost"] += row[at["cost"]]
        d["priced"] += row[at["priced"]]
        d["sources"][row[5]] += row[at["calls"]]
        accepted = row[at["accepted"]] + row[at["edited"]]
        decided = accepted + row[at["rejected"]] + row[at["corrected"]]
        if decided:
            arm = d["arm"].setdefault(row[4], [0, 0])
            arm[0] += accepted
            arm[1] += decided
    order = sorted(days)
    known = [days[d]["priced"] == days[d]["calls"] for d in order]  # the day's cost is known
    return {
        "days": [_day(d) for d in order],
        "calls": [days[d]["calls"] for d in order],
        "priced": [days[d]["priced"] for d in order],
        "cost": [
            float(to_decimal(days[d]["cost"])) if ok else None
            for d, ok in zip(order, known, strict=True)
        ],
        "cost_per_call": [
            float(to_decimal(days[d]["cost"] // days[d]["calls"])) if ok else None
            for d, ok in zip(order, known, strict=True)
        ],
        "sources": {
            s: [days[d]["sources"].get(s, 0) for d in order]
            for s in sorted({s for d in order for s in days[d]["sources"]})
        },
        "acceptance": {
            arm: [
                (days[d]["arm"][arm][0] / days[d]["arm"][arm][1]) if arm in days[d]["arm"] else None
                for d in order
            ]
            for arm in sorted({a for d in order for a in days[d]["arm"]})
        },
        "latency_histogram": {"high": histogram[0], "counts": list(histogram[1])},
    }


def _aggregates(
    store: Any, feature: str | None, since: float | None, splits: list[str]
) -> Aggregates:
    """In the database when the store can (``report_aggregates``), else in Python from every
    call record of the window and the feedback rows."""
    read = getattr(store, "report_aggregates", None)
    if read is not None:
        found = read(feature=feature, since=since, splits=splits)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return in_python(
        store.call_records(feature=feature, since=since),
        store.feedback_rows(feature=feature),
        splits,
    )


def _margin(value: float | None, feature: str) -> float:
    if value is None:
        cfg = runtime.features.get(feature)
        value = getattr(cfg, "segment_margin", None)
    return MARGIN if value is None else float(value)


def report(
    feature: str | None = None,
    *,
    since: str | float | None = None,
    by: str | Sequence[str] = ("source", "arm"),
    store: Any = None,
    targets: Mapping[str, Any] | Sequence[str | Target] | str | None = None,
    margin: float | None = None,
    currency: str | None = None,
) -> Report:
    """Compute the report from the store's call records and feedback.

    The figures are aggregated in the database (SQLite or PostgreSQL) over the calls of the
    window only, and the feedback on those calls; a store of your own without
    ``report_aggregates`` gets them computed in Python from its ``call_records`` and
    ``feedback_rows``.

    Args:
        feature: one feature, or all.
        since: only calls from then on: ``"7d"``, ``"24h"``, an ISO date, or a POSIX time.
        by: splits to compute groups for: ``model``, ``source``, ``arm``, ``reason``, a segment
            recorded on the calls, or an attribute given with feedback.
        store: a store to read (default: the configured one).
        targets: targets in place of the configured ones: by feature name
            (``{"reply": ["acceptance_rate >= 60 %"]}``; a feature left out keeps its
            configured targets), or one list (or mapping ``{"calls": ">= 100"}``) for every
            feature of the report. Checked (units included) before the store is read.
        margin: how much worse than the best segment a segment may be before it is flagged
            (default: the feature's ``segment_margin``, else 0.05).
        currency: the currency of the amounts, for display (default: the configured price
            table's, else the one a cost target names, else USD). A cost target in another
            currency is a ConfigError: nothing converts between currencies.

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

    if margin is not None and (
        isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < 1
    ):
        raise ConfigError(f"margin={margin!r} is invalid: give a fraction from 0 to 1, e.g. 0.05")
    splits = [by] if isinstance(by, str) else list(by)
    check_splits(splits)
    by_feature, every = _given_targets(targets)
    money = _currency(
        currency,
        [*(every or ()), *(t for ts in by_feature.values() for t in ts), *_configured_targets()],
    )
    flush()
    store = configured_store() if store is None else store
    start = parse_since(since)
    agg = _aggregates(store, feature, start, splits)
    cascade = _report_cascade.counts(store, feature, start)
    at = {name: 6 + j for j, name in enumerate(SUMS)}
    totals: dict[tuple[int, str, Any], dict[str, Any]] = {}
    sources: dict[tuple[int, str, Any], dict[str, int]] = {}
    daily: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in agg.sums:
        if row[0] == -1:
            daily[row[1]].append(row)
            continue
        key = (row[0], row[1], row[2])
        t = totals.setdefault(key, dict.fromkeys(SUMS, 0))
        for name, j in at.items():
            t[name] += row[j]
        sources.setdefault(key, {})[row[5]] = sources.get(key, {}).get(row[5], 0) + row[at["calls"]]
    none = (None,) * len(QUANTILES)
    features, groups, diffs, target_rows, series, flags = [], {}, {}, {}, {}, {}
    quality: dict[str, QualitySummary] = {}
    canvases: dict[str, _canvas.Canvas] = {}
    configured = runtime.features
    for name in sorted({k[1] for k in totals if k[0] == 0}):
        k0 = (0, name, None)
        figures = _figures(name, None, totals[k0], sources[k0], agg.percentiles.get(k0, none))
        figures = dataclasses.replace(figures, **_report_cascade.fields(cascade.get(name)))
        features.append(figures)
        grouped: list[FeatureFigures] = []
        gaps: list[SegmentGap] = []
        for i, split in enumerate(splits, 1):
            keys = sorted((key_text(k[2]), k) for k in totals if k[0] == i and k[1] == name)
            if len(keys) > 1 or split != "arm":
                mine = [
                    _figures(name, f"{split}={text_}", totals[k], sources[k],
                             agg.percentiles.get(k, none))
                    for text_, k in keys
                ]  # fmt: skip
                grouped += mine
                if split not in CALL_SPLITS:
                    gaps += segment_gaps(name, split, mine, _margin(margin, name))
        groups[name] = grouped
        flags[name] = gaps
        arms = {g.group: g for g in grouped if g.group and g.group.startswith("arm=")}
        ai, base = arms.get("arm=ai"), arms.get("arm=baseline")
        diffs[name] = (
            newcombe(ai.accepted + ai.edited, ai.decided, base.accepted + base.edited, base.decided)
            if ai is not None and base is not None
            else None
        )
        wanted = by_feature.get(name, every)
        if wanted is None:
            cfg = configured.get(name)
            wanted = parse_targets(cfg.targets) if cfg is not None else ()
        _same_currency(wanted, money)
        summary = _quality(name, since, store)
        if summary is not None:
            quality[name] = summary
        rows: list[tuple[Target, float | None, bool | None]] = []
        for goal in wanted:
            if goal.metric in QUALITY_METRICS:
                value = None if summary is None else summary.figures[goal.metric]
            else:
                value = figures.figure(goal.metric)
            rows.append((goal, value, goal.check(value)))
        target_rows[name] = rows
        series[name] = _series(daily[name], agg.histogram.get(name, (0.0, [0] * BUCKETS)))
        canvases[name] = _canvas.build(
            name, configured.get(name), money, _canvas.accepted_ai(agg.sums, name), figures.cost,
            store, start,
        )  # fmt: skip
    _canvas.check_currency(list(canvases.values()), configured, money)
    return Report(
        features, groups, diffs, target_rows, series, start, time.time(), flags, quality, money,
        canvases, shadows=shadow_figures(store, feature, start),
    )  # fmt: skip


def _given_targets(
    targets: Mapping[str, Any] | Sequence[str | Target] | str | None,
) -> tuple[dict[str, tuple[Target, ...]], tuple[Target, ...] | None]:
    """``report(targets=...)`` read and checked: (targets by feature, targets for every
    feature or None). A mapping is by feature unless it maps figures to conditions."""
    where = "report(targets=...)"
    if targets is None:
        return {}, None
    if isinstance(targets, Mapping) and not is_condition_mapping(targets):
        by_feature = {}
        for name, given in targets.items():
            if not isinstance(name, str):
                raise ConfigError(f"{where}: feature name {name!r} is not a string")
            by_feature[name] = parse_targets(given, where=f"{where} for {name!r}")
        return by_feature, None
    return {}, parse_targets(targets, where=where)


def _configured_targets() -> list[Target]:
    return [t for cfg in runtime.features.values() for t in parse_targets(cfg.targets)]


def _currency(currency: str | None, targets: Sequence[Target]) -> str:
    """The report's currency: the one given, else the price table's, else a cost target's."""
    if currency is not None:
        if not isinstance(currency, str) or not currency.strip() or len(currency) > 16:
            raise ConfigError(
                f"currency={currency!r} is invalid: give a currency code such as 'USD'"
            )
        return currency.strip()
    prices = runtime.prices
    if prices is not None:
        return str(prices.currency)
    named = [t.unit for t in targets if t.metric.startswith("cost") and t.unit]
    return named[0] if named else "USD"


def _same_currency(targets: Sequence[Target], currency: str) -> None:
    for t in targets:
        if t.metric.startswith("cost") and t.unit is not None and t.unit != currency:
            raise ConfigError(
                f"target {str(t)!r}: its currency {t.unit} is not the costs' currency "
                f"{currency}: write it in {currency} (costs are not converted)"
            )


QUALITY_METRICS = frozenset(_qm.FIGURES)
"""The target metrics computed by :mod:`aiguard.quality` rather than from the report's sums."""


def _quality(name: str, since: str | float | None, store: Any) -> QualitySummary | None:
    """The feature's calibration and drift; None for a store that cannot compute them."""
    from . import quality

    try:
        return quality.summary(name, since=since, store=store)
    except ConfigError:  # a store of your own: no SQL to aggregate in
        return None
