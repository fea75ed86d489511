"""The statistics behind calibration, threshold tuning and drift: pure functions over counts.

No I/O and nothing of aiguard's state: the databases hand over counts per bin (aggregated in
SQL), and these functions turn them into figures. Every function takes plain numbers, so the
hypothesis tests drive them directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Z = 1.959963984540054  # 95 %

#: The proportion given to an empty bin (or a label one window never saw) in a PSI, so that its
#: logarithm is finite: 0.0001, a tenth of the share of one call in ten thousand.
EPSILON = 1e-4

GRID = 1000  # drift histograms: confidence in steps of 0.001 (cell i holds [i/1000, (i+1)/1000))


FIGURES = ("ece", "confidence_psi", "confidence_ks", "label_psi")
"""The quality figures a target can name that the report's sums do not give."""


def wilson(successes: int, n: int, z: float = Z) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95 % by default); None when n is 0.

    ``aiguard.wilson`` is this function.
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


def cell(value: float, cells: int) -> int:
    """The index of the equal-width cell of [0, 1] that holds ``value`` (1.0 in the top cell).

    The same rule as the SQL: ``floor(value * cells + 1e-9)``, so 0.3 is in cell 3 of 10 even
    though 0.3 * 10 is 2.9999999999999996.
    """
    return max(0, min(cells - 1, math.floor(value * cells + 1e-9)))


# -- calibration -----------------------------------------------------------------------------------


def ece(bins: Iterable[tuple[int, int, float]]) -> float | None:
    """Expected calibration error from ``(count, correct, sum of confidences)`` per bin:
    the sum over bins of ``count / N * |accuracy - mean confidence|``; None with no calls."""
    rows = [(n, k, s) for n, k, s in bins if n > 0]
    total = sum(n for n, _, _ in rows)
    if total == 0:
        return None
    return sum(abs(k - s) for n, k, s in rows) / total  # n/N * |k/n - s/n| = |k - s| / N


# -- threshold tuning ------------------------------------------------------------------------------


def from_top(counts: Mapping[int, Sequence[int]], width: int) -> dict[int, list[int]]:
    """Cumulative sums from the top bucket down: for each bucket ``b`` that has counts, the
    element-wise sum of the counts of every bucket ``>= b`` (``width`` counts per bucket)."""
    out: dict[int, list[int]] = {}
    running = [0] * width
    for b in sorted(counts, reverse=True):
        running = [r + c for r, c in zip(running, counts[b], strict=True)]
        out[b] = list(running)
    return out


def lowest_meeting(candidates: Sequence[tuple[int, int, int]], goal: float) -> int | None:
    """The lowest bucket among ``(bucket, successes, n)`` whose Wilson lower bound is at least
    ``goal``; None when none is."""
    meeting = [b for b, k, n in candidates if (w := wilson(k, n)) is not None and w[0] >= goal]
    return min(meeting) if meeting else None


# -- drift -----------------------------------------------------------------------------------------


def quantile_edges(hist: Mapping[int, int], parts: int = 10) -> list[int]:
    """Cut points (cell indices) splitting a histogram into ``parts`` bins of about equal count:
    the cell where each of the 1/parts, 2/parts, ... quantiles falls; duplicates merged (many
    equal values give fewer bins). A bin is ``[edge_i, edge_(i+1))`` in cells; the first starts
    at cell 0."""
    total = sum(hist.values())
    if total == 0:
        return []
    edges: list[int] = []
    wanted = [total * q / parts for q in range(1, parts)]
    seen = 0
    i = 0
    for c in sorted(hist):
        seen += hist[c]
        while i < len(wanted) and seen >= wanted[i]:
            edge = c + 1  # the quantile is in cell c: the next bin starts after it
            if not edges or edges[-1] != edge:
                edges.append(edge)
            i += 1
    return [e for e in edges if e > 0]


def _binned(hist: Mapping[int, int], edges: Sequence[int]) -> list[int]:
    counts = [0] * (len(edges) + 1)
    for c, n in hist.items():
        lo, hi = 0, len(edges)
        while lo < hi:  # the number of edges <= c: the bin index
            mid = (lo + hi) // 2
            if edges[mid] <= c:
                lo = mid + 1
            else:
                hi = mid
        counts[lo] += n
    return counts


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population stability index of two count vectors over the same bins:
    ``sum((a - e) * ln(a / e))`` over the bins' proportions, an empty bin's proportion replaced
    by ``epsilon``. Each term is >= 0, so the index is; 0 for identical proportions."""
    te, ta = sum(expected), sum(actual)
    if te <= 0 or ta <= 0:
        return 0.0
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe = e / te if e > 0 else epsilon
        pa = a / ta if a > 0 else epsilon
        total += (pa - pe) * math.log(pa / pe)
    return total


def confidence_psi(reference: Mapping[int, int], recent: Mapping[int, int]) -> float | None:
    """PSI of two confidence histograms (grid cells -> counts), over the reference's deciles;
    None when either is empty."""
    if not sum(reference.values()) or not sum(recent.values()):
        return None
    edges = quantile_edges(reference)
    return psi(_binned(reference, edges), _binned(recent, edges))


def ks(reference: Mapping[int, int], recent: Mapping[int, int]) -> float | None:
    """Kolmogorov-Smirnov statistic of two histograms on the same grid: the largest difference
    of their cumulative distributions, at the cells' upper edges; None when either is empty."""
    nr, nq = sum(reference.values()), sum(recent.values())
    if not nr or not nq:
        return None
    best = 0.0
    fr = fq = 0
    for c in sorted(set(reference) | set(recent)):
        fr += reference.get(c, 0)
        fq += recent.get(c, 0)
        best = max(best, abs(fr / nr - fq / nq))
    return min(best, 1.0)


def label_psi(reference: Mapping[str, int], recent: Mapping[str, int]) -> float | None:
    """PSI over labels: each label seen in either window is a bin (a label one window never saw
    gets ``EPSILON`` there); None when either window has no labels."""
    if not sum(reference.values()) or not sum(recent.values()):
        return None
    labels = sorted(set(reference) | set(recent))
    return psi([reference.get(k, 0) for k in labels], [recent.get(k, 0) for k in labels])
