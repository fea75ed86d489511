"""Threshold tuning: the confidence threshold that meets a target, from production evidence.

Counts per 0.01 bucket of confidence come from the database; the figures at each candidate
threshold ``t`` (the calls with confidence >= t) are sums from the top bucket down. Evidence of
correctness is the calibration's (see :mod:`aiguard.quality`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

from . import _control_edit
from . import _quality_math as qm
from . import _quality_sql as qsql
from ._checks import check_feature, unit_interval
from ._runtime import lifecycle
from ._runtime.state import runtime
from ._since import parse_since
from .exceptions import ConfigError
from .store import configured as configured_store

__all__ = ["ThresholdRow", "Tuning", "tune"]

#: The fewest judged calls (decisions, for acceptance; calls with a confidence, for coverage)
#: a recommendation is made from. With 30 calls all right, the Wilson lower bound is 0.89: fewer
#: calls cannot show any precision target of 0.9 or more, whatever the answers were.
MIN_EVIDENCE = 30
NEIGHBOURS = 5  # grid steps either side in the table

_TARGET = re.compile(
    r"^\s*(?P<metric>precision|acceptance|coverage)\s*>=\s*(?P<value>[0-9.]+)\s*(?P<pct>%)?\s*$"
)


@dataclasses.dataclass(frozen=True, slots=True)
class ThresholdRow:
    """The figures at one threshold: the calls with a confidence at or above it.

    ``coverage``: their share of the calls with a confidence (the share that would be served);
    ``judged``/``precision``: model answers with evidence, and the share right; ``decided``/
    ``acceptance``: model answers with a user decision, and the share accepted or edited; each
    rate with its Wilson 95 % interval.

    Example:
        >>> import aiguard
        >>> row = aiguard.ThresholdRow(0.8, 120, 0.6, 50, 0.96, aiguard.wilson(48, 50))
        >>> row.precision
        0.96
    """

    threshold: float
    calls: int
    coverage: float | None
    judged: int
    precision: float | None
    precision_interval: tuple[float, float] | None
    decided: int = 0
    acceptance: float | None = None
    acceptance_interval: tuple[float, float] | None = None

    def value(self, metric: str) -> tuple[float | None, tuple[float, float] | None]:
        """The figure a target names, and its interval (none for coverage)."""
        if metric == "precision":
            return self.precision, self.precision_interval
        if metric == "acceptance":
            return self.acceptance, self.acceptance_interval
        return self.coverage, None


@dataclasses.dataclass(frozen=True, slots=True)
class Tuning:
    """A threshold recommendation, or why there is none.

    ``threshold`` is None when the evidence is not enough (``message`` says how many judged
    calls there were and which lower bound was reached). ``rows``: neighbouring thresholds with
    evidence; ``current``: the figures at the threshold in force (``current_threshold``), when
    known. ``applied``: where the threshold was written (``apply=True``), else None.

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:")
        >>> t = aiguard.tune("reply", "precision >= 0.95")
        >>> t.threshold is None, t.evidence
        (True, 0)
    """

    feature: str
    target: str
    metric: str
    goal: float
    threshold: float | None
    figures: ThresholdRow | None
    evidence: int
    current_threshold: float | None
    current: ThresholdRow | None
    rows: list[ThresholdRow]
    message: str
    applied: list[str] | None = None

    def table(self) -> str:
        """The recommendation, the current threshold and the neighbouring thresholds as text."""
        head = [["THRESHOLD", "COVERAGE", "JUDGED", "PRECISION", "95% CI", "DECIDED", "ACCEPT",
                 "95% CI", ""]]  # fmt: skip
        rows = list(self.rows)
        if self.current is not None and all(r.threshold != self.current.threshold for r in rows):
            rows = sorted([*rows, self.current], key=lambda r: r.threshold)
        for r in rows:
            mark = []
            if self.threshold is not None and r.threshold == self.threshold:
                mark.append("recommended")
            if self.current is not None and r.threshold == self.current.threshold:
                mark.append("current")
            head.append(
                [
                    f"{r.threshold:.2f}",
                    _pct(r.coverage),
                    str(r.judged),
                    _pct(r.precision),
                    _ci(r.precision_interval),
                    str(r.decided),
                    _pct(r.acceptance),
                    _ci(r.acceptance_interval),
                    ", ".join(mark),
                ]
            )
        lines = [f"{self.feature}: {self.target}: {self.message}"]
        if len(head) > 1:
            widths = [max(len(r[i]) for r in head) for i in range(len(head[0]))]
            lines += [
                "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in head
            ]
        return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(interval: tuple[float, float] | None) -> str:
    return "-" if interval is None else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def parse_target(text: Any) -> tuple[str, float]:
    """``("precision", 0.95)`` from ``"precision >= 0.95"`` (or ``95%``); ConfigError otherwise."""
    m = _TARGET.match(text) if isinstance(text, str) else None
    if m is None:
        raise ConfigError(
            f"target={text!r} is invalid: write 'precision >= 0.95', 'acceptance >= 0.8' or "
            "'coverage >= 0.6' (a share, or a percentage with %)"
        )
    try:
        value = float(m["value"]) / (100 if m["pct"] else 1)
    except ValueError:
        raise ConfigError(f"target={text!r}: {m['value']!r} is not a number") from None
    if not 0 < value <= 1:
        raise ConfigError(f"target={text!r}: the value must be in (0, 1] (or (0, 100] %)")
    return m["metric"], value


def _row(b: int, c: list[int], total: int) -> ThresholdRow:
    calls, judged, correct, decided, accepted = c
    return ThresholdRow(
        threshold=b / 100,
        calls=calls,
        coverage=calls / total if total else None,
        judged=judged,
        precision=correct / judged if judged else None,
        precision_interval=qm.wilson(correct, judged),
        decided=decided,
        acceptance=accepted / decided if decided else None,
        acceptance_interval=qm.wilson(accepted, decided),
    )


def current_threshold(feature: str, d: qsql.Db | None = None) -> float | None:
    """The threshold in force for ``feature``, as this process knows it: a live guard's
    (configuration and control sources merged), else a control source's, else the feature's
    configuration, else the one recorded on its latest call (``d``); None if unknown."""
    with runtime.lock:
        live = [c.settings.threshold for c in list(runtime.cores) if c.feature == feature]
        said = [
            s.features[feature].threshold
            for s in runtime.controls.values()
            if feature in s.features
        ]
        cfg = runtime.features.get(feature)
    for value in (*live, *said, getattr(cfg, "threshold", None)):
        if value is not None:
            return float(value)
    latest = qsql.latest_call(d, feature) if d is not None else None
    return None if latest is None or latest[2] is None else float(latest[2])


def tune(
    feature: str,
    target: str = "precision >= 0.95",
    *,
    since: str | float | None = None,
    model: str | None = None,
    store: Any = None,
    apply: bool = False,
    control: str | os.PathLike[str] | None = None,
    current: float | None = None,
) -> Tuning:
    """Recommend a confidence threshold for ``feature`` that meets ``target``.

    Targets: ``precision >= x`` (right / judged among the model's answers at or above the
    threshold), ``acceptance >= x`` (accepted or edited / user decisions, model answers only),
    ``coverage >= x`` (the share of calls with a confidence at or above the threshold). For
    precision and acceptance the recommendation is the **lowest** threshold (on a 0.01 grid,
    among those with evidence) whose Wilson 95 % lower bound meets the target: the most calls
    served while the target holds with 95 % confidence. For coverage it is the **highest**
    threshold whose coverage meets the target. With fewer than 30 judged calls, or when no
    threshold's lower bound meets the target, there is no recommendation (``threshold`` is None
    and ``message`` says why).

    Calls below the threshold in force went to fallbacks, so there is little evidence below it:
    the recommendation never goes below the lowest confidence with evidence, and the message
    says when it stops there.

    Args:
        feature: the feature.
        target: what the threshold must achieve.
        since: only calls from then on (``"30d"``, an ISO date, a POSIX time).
        model: only this model's calls.
        store: the store to read (default: the configured one).
        apply: write the recommended threshold to the control source (``control``, else every
            control file or Redis control configured in this process), so every replica uses
            it without a deploy. Nothing is written without a recommendation.
        control: a control file path or ``redis://`` URL to write to with ``apply``.
        current: the threshold in force, if known better than this process knows it.

    Example:
        >>> import aiguard
        >>> from aiguard._runtime.records import CALL_RECORD_COLUMNS
        >>> store = aiguard.SQLiteStore(":memory:")
        >>> rows = []
        >>> for i in range(200):
        ...     row = dict.fromkeys(CALL_RECORD_COLUMNS)
        ...     row.update(call_id=f"c{i}", feature="triage", started_at=1.0, source="model",
        ...                reason="served", confidence=0.5 + (i % 50) / 100, latency=0.1)
        ...     rows.append(tuple(row.values()))
        >>> store.add_call_records(rows)
        >>> for i in range(200):  # right when the confidence is 0.8 or more
        ...     kind = "accepted" if i % 50 >= 30 else "rejected"
        ...     _ = store.add_feedback({"call_id": f"c{i}", "feature": "triage", "kind": kind,
        ...                             "created_at": 2.0})
        >>> t = aiguard.tune("triage", "precision >= 0.9", store=store)
        >>> t.threshold, t.figures.coverage
        (0.8, 0.4)
    """
    check_feature(feature)
    metric, goal = parse_target(target)
    if current is not None:
        current = unit_interval("current", current)
    lifecycle.flush()
    d = qsql.db(configured_store() if store is None else store)
    buckets = qsql.tuning_buckets(d, qsql.Window(feature, parse_since(since), model=model))
    total = sum(c[0] for c in buckets.values())
    cumulative = qm.from_top(buckets, 5)
    rows = {b: _row(b, c, total) for b, c in cumulative.items()}
    # the evidence for this metric in each bucket: (bucket, successes, n) over calls >= bucket
    if metric == "coverage":
        own = {b: buckets[b][0] for b in buckets}
        evidence = total
    else:
        index = 1 if metric == "precision" else 3
        own = {b: buckets[b][index] for b in buckets}
        evidence = sum(own.values())
    candidates = sorted(b for b, n in own.items() if n > 0)
    threshold_in_force = current if current is not None else current_threshold(feature, d)
    now_row = None
    if threshold_in_force is not None:
        k = math.ceil(threshold_in_force * 100 - 1e-9)
        above = [b for b in cumulative if b >= k]
        c = cumulative[min(above)] if above else [0, 0, 0, 0, 0]
        now_row = dataclasses.replace(_row(k, c, total), threshold=threshold_in_force)
    kind = {"precision": "judged", "acceptance": "decided", "coverage": "with a confidence"}[metric]
    chosen: int | None = None
    if evidence < MIN_EVIDENCE:
        message = (
            f"not enough evidence: {evidence} calls {kind}, at least {MIN_EVIDENCE} are needed"
        )
    elif metric == "coverage":
        meeting = [b for b in candidates if (rows[b].coverage or 0) >= goal]
        chosen = max(meeting) if meeting else None
        message = "" if chosen is not None else f"no threshold serves {100 * goal:g}% of calls"
    else:
        tally = [(b, *_successes(metric, cumulative[b])) for b in candidates]
        chosen = qm.lowest_meeting(tally, goal)
        if chosen is None:
            best = max(tally, key=lambda t: qm.wilson(t[1], t[2]) or (0.0, 0.0))
            low = (qm.wilson(best[1], best[2]) or (0.0, 0.0))[0]
            message = (
                f"not enough evidence: no threshold's lower 95% bound reaches {goal:g} "
                f"({evidence} calls {kind}; the best lower bound is {low:.3f}, at threshold "
                f"{best[0] / 100:.2f} over {best[2]} calls)"
            )
    figures = rows[chosen] if chosen is not None else None
    if figures is not None:
        value, interval = figures.value(metric)
        shown = f"{metric} {_pct(value)}" + (f" (95% CI {_ci(interval)})" if interval else "")
        message = (
            f"threshold {figures.threshold:.2f}: {shown}, coverage {_pct(figures.coverage)} "
            f"({evidence} calls {kind})"
        )
        if metric != "coverage" and chosen == candidates[0] and chosen > 0:
            message += (
                f"; no evidence below {chosen / 100:.2f} (calls under the threshold in force "
                "went to fallbacks), so a lower threshold might meet the target too: audit "
                "sampling or a lower threshold for a while would show it"
            )
    centre = chosen if chosen is not None else (candidates[-1] if candidates else None)
    table: list[ThresholdRow] = []
    if centre is not None:
        i = candidates.index(centre) if centre in candidates else 0
        table = [rows[b] for b in candidates[max(0, i - NEIGHBOURS) : i + NEIGHBOURS + 1]]
    applied = None
    if apply:
        if figures is None:
            message += "; not applied: there is no recommendation"
        else:
            applied = _control_edit.write(
                feature,
                control,
                why=f"tune: {target.strip()}",
                via="tune",
                threshold=figures.threshold,
            )
    return Tuning(
        feature=feature,
        target=target.strip(),
        metric=metric,
        goal=goal,
        threshold=None if figures is None else figures.threshold,
        figures=figures,
        evidence=evidence,
        current_threshold=threshold_in_force,
        current=now_row,
        rows=table,
        message=message,
        applied=applied,
    )


def _successes(metric: str, c: list[int]) -> tuple[int, int]:
    return (c[2], c[1]) if metric == "precision" else (c[4], c[3])
