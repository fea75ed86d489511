"""The statistics of calibration, tuning and drift, on their own: invariants under hypothesis."""

from __future__ import annotations

import math

from hypothesis import assume, given
from hypothesis import strategies as st

from aiguard import _quality_math as qm

counts = st.dictionaries(st.integers(0, qm.GRID - 1), st.integers(1, 500), min_size=1, max_size=60)
labels = st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 500), min_size=1)


@st.composite
def bins(draw: st.DrawFn) -> list[tuple[int, int, float]]:
    """Calibration bins: (count, correct, sum of confidences) with 0 <= correct <= count and
    every confidence in [0, 1]."""
    out = []
    for _ in range(draw(st.integers(1, 12))):
        n = draw(st.integers(0, 200))
        k = draw(st.integers(0, n))
        mean = draw(st.floats(0, 1))
        out.append((n, k, mean * n))
    return out


@given(counts, counts)
def test_psi_is_never_negative(a: dict[int, int], b: dict[int, int]) -> None:
    """PSI of any two confidence histograms is >= 0."""
    value = qm.confidence_psi(a, b)
    assert value is not None and value >= 0


@given(counts, st.integers(1, 7))
def test_psi_and_ks_are_zero_for_the_same_distribution(a: dict[int, int], scale: int) -> None:
    """The same distribution (any number of calls) has PSI 0 and KS 0."""
    scaled = {k: v * scale for k, v in a.items()}
    assert qm.confidence_psi(a, scaled) == 0
    assert qm.ks(a, scaled) == 0
    assert (
        qm.label_psi({str(k): v for k, v in a.items()}, {str(k): v for k, v in scaled.items()}) == 0
    )


@given(counts, counts)
def test_ks_is_in_the_unit_interval(a: dict[int, int], b: dict[int, int]) -> None:
    """The KS statistic is in [0, 1], and 1 for two histograms that do not overlap."""
    value = qm.ks(a, b)
    assert value is not None and 0 <= value <= 1
    top = max(a)
    above = {c + top + 1: n for c, n in b.items()}
    assert qm.ks(a, above) == 1


@given(labels, labels)
def test_label_psi_is_never_negative_and_sees_unseen_labels(
    a: dict[str, int], b: dict[str, int]
) -> None:
    """Label PSI is >= 0; a label only the recent window has makes it positive."""
    value = qm.label_psi(a, b)
    assert value is not None and value >= 0
    assert (qm.label_psi(a, {**a, "new": sum(a.values())}) or 0) > 0


@given(bins())
def test_ece_is_in_the_unit_interval(rows: list[tuple[int, int, float]]) -> None:
    """ECE is in [0, 1] (None without calls)."""
    value = qm.ece(rows)
    if sum(n for n, _, _ in rows) == 0:
        assert value is None
    else:
        assert value is not None and -1e-12 <= value <= 1 + 1e-12


@given(st.lists(st.tuples(st.integers(1, 300), st.integers(0, 300)), min_size=1, max_size=10))
def test_ece_is_zero_for_perfectly_calibrated_bins(rows: list[tuple[int, int]]) -> None:
    """When each bin's mean confidence equals its accuracy, ECE is 0."""
    perfect = [(n, min(k, n), float(min(k, n))) for n, k in rows]
    assert qm.ece(perfect) == 0


@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_wilson_contains_the_proportion(k: int, n: int) -> None:
    """The Wilson interval lies in [0, 1] and contains k / n."""
    assume(k <= n)
    interval = qm.wilson(k, n)
    assert interval is not None
    low, high = interval
    assert 0 <= low <= k / n <= high <= 1


@given(
    st.lists(
        st.tuples(st.integers(0, 100), st.integers(0, 500), st.integers(0, 500)),
        min_size=1,
        max_size=30,
        unique_by=lambda t: t[0],
    ),
    st.floats(0.01, 1),
    st.floats(0.01, 1),
)
def test_the_recommendation_is_monotone_in_the_target(
    raw: list[tuple[int, int, int]], g1: float, g2: float
) -> None:
    """A higher target never gets a lower threshold (or gets none)."""
    tally = [(b, min(k, n), n) for b, k, n in raw]
    low_goal, high_goal = sorted((g1, g2))
    easy = qm.lowest_meeting(tally, low_goal)
    hard = qm.lowest_meeting(tally, high_goal)
    if hard is not None:
        assert easy is not None and easy <= hard


@given(st.floats(0, 1), st.integers(1, 1000))
def test_cell_matches_the_sql_rule(value: float, cells: int) -> None:
    """A value's cell is floor(value * cells + 1e-9), 1.0 in the top cell."""
    c = qm.cell(value, cells)
    assert 0 <= c < cells
    if value < 1:
        assert c == min(cells - 1, math.floor(value * cells + 1e-9))
    assert qm.cell(1.0, cells) == cells - 1


def test_cell_puts_round_values_in_their_own_cell() -> None:
    """0.3 is in cell 3 of 10 although 0.3 * 10 is just under 3 in floating point."""
    assert qm.cell(0.3, 10) == 3 and qm.cell(0.29, 100) == 29


def test_quantile_edges_split_a_uniform_histogram_into_deciles() -> None:
    """A uniform histogram over 1000 cells is cut every 100 cells."""
    edges = qm.quantile_edges(dict.fromkeys(range(1000), 1))
    assert edges == [100 * i for i in range(1, 10)]


def test_from_top_sums_every_bucket_above() -> None:
    """Cumulative counts from the top bucket down."""
    assert qm.from_top({10: [1, 2], 50: [3, 4], 90: [5, 6]}, 2) == {
        90: [5, 6],
        50: [8, 10],
        10: [9, 12],
    }
