"""How good the served answers are: calibration, audited error rate, and drift.

Every figure is aggregated in the database (SQLite or PostgreSQL): the store returns counts per
confidence bin, per 0.001 cell or per label for one feature and window, and the statistics are
computed from those counts (``aiguard._quality_math``). Nothing here loads call records into
Python one by one, so the cost grows with the number of bins, not of calls.

Evidence of correctness of a model's answer: calls served by the model (``source = 'model'``)
with a confidence; the latest decision on the call (``accepted``/``edited``: right,
``rejected``/``corrected``: wrong; comments and ratings never undo a decision) or the latest
audit verdict (feedback kind ``audited``), which wins when a call has both.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any, Literal

from . import _quality_math as qm
from . import _quality_sql as qsql
from ._checks import check_feature
from ._runtime import lifecycle
from ._since import parse_since, span
from .exceptions import ConfigError
from .store import configured as configured_store

__all__ = [
    "AuditBand",
    "AuditFigures",
    "Calibration",
    "Drift",
    "QualitySummary",
    "ReliabilityBin",
    "audit_figures",
    "calibration",
    "drift",
    "figures",
    "save_baseline",
    "summary",
]

#: Fewer calls than this in either drift window: the drift figures are shown but not judged.
MIN_DRIFT_CALLS = 100
STAGE_WEEK = 7 * 86400.0


def _store(store: Any) -> qsql.Db:
    lifecycle.flush()  # what this process recorded is in the store before it is read
    return qsql.db(configured_store() if store is None else store)


def _bins(name: str, bins: Any) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= 1000:
        raise ConfigError(f"{name}={bins!r} is invalid: must be a whole number from 1 to 1000")
    return bins


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(interval: tuple[float, float] | None) -> str:
    return "-" if interval is None else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    )


# -- calibration -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One confidence bin ``[low, high)`` (the top bin includes 1.0): how many judged answers fell
    in it, their mean confidence, the share that was right, and its Wilson 95 % interval.

    Example:
        >>> import aiguard
        >>> b = aiguard.ReliabilityBin(0.8, 0.9, 40, 0.85, 0.7, aiguard.wilson(28, 40))
        >>> b.gap
        -0.15
    """

    low: float
    high: float
    count: int
    mean_confidence: float | None
    accuracy: float | None
    interval: tuple[float, float] | None

    @property
    def gap(self) -> float | None:
        """Accuracy minus mean confidence (negative: over-confident), rounded to 1e-9."""
        if self.accuracy is None or self.mean_confidence is None:
            return None
        return round(self.accuracy - self.mean_confidence, 9)


@dataclasses.dataclass(frozen=True, slots=True)
class Calibration:
    """How well a feature's confidence predicts that the answer is right.

    ``bins``: equal-width confidence bins over [0, 1] (empty ones included, with a count of 0);
    ``n``: the judged answers; ``ece``: the expected calibration error (the sum over bins of
    ``count / n * |accuracy - mean confidence|``; 0 is perfectly calibrated, None without
    evidence); ``by_model``: the same per model (for the result of :func:`calibration` only).

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:")
        >>> cal = aiguard.calibration("reply", bins=5)
        >>> cal.n, cal.ece, len(cal.bins)
        (0, None, 5)
    """

    feature: str
    model: str | None
    bins: list[ReliabilityBin]
    n: int
    ece: float | None
    by_model: dict[str, Calibration] = dataclasses.field(default_factory=dict)

    def table(self) -> str:
        """The reliability table as plain text: one row per bin, and the ECE."""
        rows = [["CONFIDENCE", "CALLS", "MEAN CONF", "ACCURACY", "95% CI", "GAP"]]
        for b in self.bins:
            rows.append(
                [
                    f"{b.low:.2f}-{b.high:.2f}",
                    str(b.count),
                    "-" if b.mean_confidence is None else f"{b.mean_confidence:.3f}",
                    _pct(b.accuracy),
                    _ci(b.interval),
                    "-" if b.gap is None else f"{100 * b.gap:+.1f}",
                ]
            )
        who = f" ({self.model})" if self.model else ""
        ece = "-" if self.ece is None else f"{self.ece:.4f}"
        return f"{self.feature}{who}: {self.n} judged answers, ECE {ece}\n{_table(rows)}"

    def svg(self) -> str:
        """The reliability diagram as inline SVG (no scripts)."""
        from ._reliability_svg import svg

        text: str = svg(self)
        return text


def _calibration(
    feature: str, model: str | None, counts: dict[int, tuple[int, int, float]], bins: int
) -> Calibration:
    out = []
    for i in range(bins):
        n, k, s = counts.get(i, (0, 0, 0.0))
        out.append(
            ReliabilityBin(
                low=i / bins,
                high=(i + 1) / bins,
                count=n,
                mean_confidence=s / n if n else None,
                accuracy=k / n if n else None,
                interval=qm.wilson(k, n),
            )
        )
    n = sum(c[0] for c in counts.values())
    return Calibration(feature, model, out, n, qm.ece(counts.values()))


def calibration(
    feature: str,
    *,
    model: str | None = None,
    since: str | float | None = None,
    bins: int = 10,
    store: Any = None,
) -> Calibration:
    """The calibration of ``feature``'s confidence, from the judged answers of its model.

    Args:
        feature: the feature.
        model: one model's calls only (default: all models together; ``by_model`` has each).
        since: only calls from then on: ``"30d"``, an ISO date, a POSIX time.
        bins: equal-width confidence bins over [0, 1] (default 10).
        store: the store to read (default: the configured one).

    Example:
        >>> import aiguard
        >>> from aiguard._runtime.records import CALL_RECORD_COLUMNS
        >>> store = aiguard.SQLiteStore(":memory:")
        >>> def call(i, confidence):
        ...     row = dict.fromkeys(CALL_RECORD_COLUMNS)
        ...     row.update(call_id=f"c{i}", feature="triage", started_at=1.0, source="model",
        ...                reason="served", confidence=confidence, model="m", latency=0.1)
        ...     return tuple(row.values())
        >>> store.add_call_records([call(1, 0.9), call(2, 0.9)])
        >>> for i, kind in ((1, "accepted"), (2, "rejected")):
        ...     _ = store.add_feedback({"call_id": f"c{i}", "feature": "triage", "kind": kind,
        ...                             "created_at": 2.0})
        >>> cal = aiguard.calibration("triage", store=store)
        >>> cal.n, round(cal.ece, 2), cal.bins[9].accuracy
        (2, 0.4, 0.5)
    """
    check_feature(feature)
    bins = _bins("bins", bins)
    d = _store(store)
    rows = qsql.calibration_bins(d, qsql.Window(feature, parse_since(since), model=model), bins)
    per_model: dict[str, dict[int, tuple[int, int, float]]] = defaultdict(dict)
    together: dict[int, tuple[int, int, float]] = {}
    for m, b, n, k, s in rows:
        per_model[m or "none"][b] = (n, k, s)
        t = together.get(b, (0, 0, 0.0))
        together[b] = (t[0] + n, t[1] + k, t[2] + s)
    result = _calibration(feature, model, together, bins)
    by_model = {m: _calibration(feature, m, c, bins) for m, c in sorted(per_model.items())}
    return dataclasses.replace(result, by_model=by_model)


# -- audits ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class AuditBand:
    """Audited calls whose confidence is in ``[low, high)`` (the top band includes 1.0): how
    many, how many were wrong, the error rate and its Wilson 95 % interval.

    Example:
        >>> import aiguard
        >>> aiguard.AuditBand(0.8, 1.0, 50, 1, 0.02, aiguard.wilson(1, 50)).error_rate
        0.02
    """

    low: float
    high: float
    audited: int
    errors: int
    error_rate: float | None
    interval: tuple[float, float] | None


@dataclasses.dataclass(frozen=True, slots=True)
class AuditFigures:
    """The error rate of served answers as auditors judged them: overall (every audited call,
    with or without a confidence) and by confidence band.

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:")
        >>> aiguard.audit_figures("reply").audited_error_rate is None
        True
    """

    feature: str
    audited: int
    errors: int
    audited_error_rate: float | None
    interval: tuple[float, float] | None
    bands: list[AuditBand]
    without_confidence: int = 0  # audited calls that had no confidence (in no band)

    def table(self) -> str:
        """The bands as plain text, and the overall figure."""
        rows = [["CONFIDENCE", "AUDITED", "WRONG", "ERROR RATE", "95% CI"]]
        for b in self.bands:
            rows.append(
                [
                    f"{b.low:.2f}-{b.high:.2f}",
                    str(b.audited),
                    str(b.errors),
                    _pct(b.error_rate),
                    _ci(b.interval),
                ]
            )
        head = (
            f"{self.feature}: {self.audited} audited, {self.errors} wrong, error rate "
            f"{_pct(self.audited_error_rate)} {_ci(self.interval)}"
        )
        return f"{head}\n{_table(rows)}"


def audit_figures(
    feature: str,
    *,
    since: str | float | None = None,
    model: str | None = None,
    bins: int = 5,
    store: Any = None,
) -> AuditFigures:
    """The audited error rate of ``feature``: wrong / audited among the calls with an audit
    verdict (the latest ``audited`` feedback of each call), with its Wilson interval, overall
    and per confidence band (``bins`` equal bands over [0, 1], default 5: audits are a small
    sample, so the bands are coarser than calibration's).

    Example:
        >>> import aiguard
        >>> from aiguard._runtime.records import CALL_RECORD_COLUMNS
        >>> store = aiguard.SQLiteStore(":memory:")
        >>> row = dict.fromkeys(CALL_RECORD_COLUMNS)
        >>> row.update(call_id="c1", feature="triage", started_at=1.0, source="model",
        ...            reason="served", confidence=0.95, latency=0.1)
        >>> store.add_call_records([tuple(row.values())])
        >>> _ = store.add_feedback({"call_id": "c1", "feature": "triage", "kind": "audited",
        ...                         "accepted": 0, "created_at": 2.0})
        >>> figures = aiguard.audit_figures("triage", store=store)
        >>> figures.audited, figures.audited_error_rate, figures.bands[4].errors
        (1, 1.0, 1)
    """
    check_feature(feature)
    bins = _bins("bins", bins)
    d = _store(store)
    rows = qsql.audit_bands(d, qsql.Window(feature, parse_since(since), model=model), bins)
    counts = {b: (n, k) for b, n, k in rows}
    bands = []
    for i in range(bins):
        n, k = counts.get(i, (0, 0))
        bands.append(
            AuditBand(i / bins, (i + 1) / bins, n, k, k / n if n else None, qm.wilson(k, n))
        )
    audited = sum(n for n, _ in counts.values())
    errors = sum(k for _, k in counts.values())
    return AuditFigures(
        feature,
        audited,
        errors,
        errors / audited if audited else None,
        qm.wilson(errors, audited),
        bands,
        counts.get(-1, (0, 0))[0],
    )


# -- drift -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Drift:
    """The recent distribution of a feature's confidence and served labels against a reference.

    ``confidence_psi``: population stability index over the reference's deciles (an empty bin
    counts as a share of 0.0001); ``confidence_ks``: the largest difference of the two
    cumulative distributions (on a 0.001 grid); ``label_psi``: PSI over the labels (a label one
    window never saw counts as 0.0001 there). ``enough`` is False when either window has fewer
    than 100 calls with a confidence: the figures are shown, and :func:`figures` gives None.
    As a rule of thumb, a PSI under 0.1 is stable and over 0.2 is a shift.

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:")
        >>> d = aiguard.drift("reply")
        >>> d.enough, d.confidence_psi
        (False, None)
    """

    feature: str
    reference: str
    reference_span: tuple[float, float] | None
    recent_span: tuple[float, float]
    reference_calls: int
    recent_calls: int
    reference_labels: int
    recent_labels: int
    confidence_psi: float | None
    confidence_ks: float | None
    label_psi: float | None
    enough: bool

    def describe(self) -> str:
        """One line: the figures and the windows' sizes."""

        def num(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"

        note = "" if self.enough else f" (not enough calls: fewer than {MIN_DRIFT_CALLS})"
        return (
            f"{self.feature}: drift against {self.reference}: confidence PSI "
            f"{num(self.confidence_psi)}, KS {num(self.confidence_ks)}, label PSI "
            f"{num(self.label_psi)}; {self.recent_calls} recent calls vs {self.reference_calls}"
            f"{note}"
        )


def _histograms(d: qsql.Db, w: qsql.Window) -> tuple[dict[int, int], dict[str, int]]:
    [found] = qsql.distributions(d, [w], qm.GRID)
    return found


def save_baseline(
    feature: str,
    *,
    since: str | float | None = None,
    until: str | float | None = None,
    name: str = "default",
    store: Any = None,
) -> int:
    """Save the distribution of ``feature``'s confidence and labels between ``since`` and
    ``until`` (default: every call) as the drift baseline ``name``; returns how many calls it
    holds. ``drift(feature, reference="baseline")`` compares with it.

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:")
        >>> aiguard.save_baseline("reply")
        0
    """
    check_feature(feature)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"save_baseline(name={name!r}) is invalid: give a non-empty string")
    d = _store(store)
    w = qsql.Window(feature, parse_since(since), parse_since(until))
    hist, labels = _histograms(d, w)
    data = {"grid": qm.GRID, "confidence": hist, "labels": labels, "since": w.since,
            "until": w.until}  # fmt: skip
    qsql.save_baseline(d, feature, name, time.time(), json.dumps(data))
    return sum(hist.values())


def drift(
    feature: str,
    *,
    window: str | float | timedelta = "7d",
    reference: Literal["stage", "baseline"] = "stage",
    baseline: str = "default",
    now: float | None = None,
    store: Any = None,
) -> Drift:
    """Compare ``feature``'s calls of the last ``window`` with a reference.

    ``reference="stage"``: the first week (7 days from its first call) of the current rollout
    stage, the percentage of the latest call record (with no rollout, the first week of all
    records). ``reference="baseline"``: the baseline saved as ``baseline`` by
    :func:`save_baseline`.

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:")
        >>> aiguard.drift("reply", window="24h").recent_calls
        0
    """
    check_feature(feature)
    length = span("window", window)
    if reference not in ("stage", "baseline"):
        raise ConfigError(f"reference={reference!r} is invalid: choose 'stage' or 'baseline'")
    d = _store(store)
    end = time.time() if now is None else now
    recent = qsql.Window(feature, end - length, end + 1e-6)
    ref_span: tuple[float, float] | None = None
    if reference == "baseline":
        saved = qsql.load_baseline(d, feature, baseline)
        if saved is None:
            raise ConfigError(
                f"drift({feature!r}, reference='baseline'): no baseline named {baseline!r}: "
                f"save one with aiguard.save_baseline({feature!r})"
            )
        data = json.loads(saved[1])
        ref_hist = {int(k): int(v) for k, v in data["confidence"].items()}
        ref_labels = {str(k): int(v) for k, v in data["labels"].items()}
        label = f"baseline {baseline!r}"
        rec_hist, rec_labels = _histograms(d, recent)
    else:
        latest = qsql.latest_call(d, feature)
        percent = None if latest is None else latest[1]
        start = qsql.first_call(d, feature, percent)
        windows = [recent]
        if start is not None:
            ref_span = (start, start + STAGE_WEEK)
            windows.append(qsql.Window(feature, start, start + STAGE_WEEK, percent=percent))
        found = qsql.distributions(d, windows, qm.GRID)  # both windows in one read
        rec_hist, rec_labels = found[0]
        ref_hist, ref_labels = found[1] if len(found) > 1 else ({}, {})
        label = "the first week of all records" if percent is None else (
            f"the first week at {percent:g}%"
        )  # fmt: skip
    n_ref, n_rec = sum(ref_hist.values()), sum(rec_hist.values())
    return Drift(
        feature=feature,
        reference=label,
        reference_span=ref_span,
        recent_span=(end - length, end),
        reference_calls=n_ref,
        recent_calls=n_rec,
        reference_labels=sum(ref_labels.values()),
        recent_labels=sum(rec_labels.values()),
        confidence_psi=qm.confidence_psi(ref_hist, rec_hist),
        confidence_ks=qm.ks(ref_hist, rec_hist),
        label_psi=qm.label_psi(ref_labels, rec_labels),
        enough=n_ref >= MIN_DRIFT_CALLS and n_rec >= MIN_DRIFT_CALLS,
    )


# -- figures for targets ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class QualitySummary:
    """A feature's calibration and drift over a window, and the figures targets can name from
    them (``ece``, ``confidence_psi``, ``confidence_ks``, ``label_psi``; see :func:`figures`).
    What :func:`aiguard.report` shows per feature.

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:")
        >>> s = aiguard.quality.summary("reply")
        >>> s.calibration.n, s.drift.enough, s.figures["ece"]
        (0, False, None)
    """

    calibration: Calibration
    drift: Drift
    figures: dict[str, float | None]


def summary(feature: str, *, since: str | float | None = None, store: Any = None) -> QualitySummary:
    """The calibration of the calls since ``since`` and the drift of those calls (default: the
    last 7 days) against the saved baseline ``"default"`` when there is one, else the current
    stage's first week; with the figures targets can name (see :func:`figures`).

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:")
        >>> aiguard.quality.summary("reply").drift.reference
        'the first week of all records'
    """
    check_feature(feature)
    d = _store(store)
    start = parse_since(since)
    now = time.time()
    window = 7 * 86400.0 if start is None else max(now - start, 1e-6)  # exactly since start
    has_baseline = qsql.load_baseline(d, feature, "default") is not None
    found = drift(
        feature,
        window=window,
        reference="baseline" if has_baseline else "stage",
        now=now,
        store=store,
    )
    cal = calibration(feature, since=since, store=store)
    labelled = min(found.reference_labels, found.recent_labels) >= MIN_DRIFT_CALLS
    return QualitySummary(
        cal,
        found,
        dict(
            zip(
                qm.FIGURES,
                (
                    cal.ece,
                    found.confidence_psi if found.enough else None,
                    found.confidence_ks if found.enough else None,
                    found.label_psi if labelled else None,
                ),
                strict=True,
            )
        ),
    )


def figures(
    feature: str, *, since: str | float | None = None, store: Any = None
) -> dict[str, float | None]:
    """The quality figures targets can name: ``ece`` (calibration over the calls since
    ``since``), ``confidence_psi``, ``confidence_ks`` and ``label_psi`` (drift of the calls
    since ``since``, default the last 7 days, against the saved baseline ``"default"`` when
    there is one, else the current stage's first week). A figure without enough evidence is
    None (drift: fewer than 100 calls in either window; label PSI: fewer than 100 labels).

    Example:
        >>> import aiguard
        >>> aiguard.configure(store=":memory:")
        >>> aiguard.quality.figures("reply")
        {'ece': None, 'confidence_psi': None, 'confidence_ks': None, 'label_psi': None}
    """
    return summary(feature, since=since, store=store).figures
