"""Numba kernels against plain NumPy/Python oracles, and the reference's published helper
results where our corrected definitions agree."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapexfil.detect import kernels as k
from pcapexfil.detect.normalize import RunningStats

counts = st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=60)


def oracle_params(b: list[float], d: list[float]) -> list[float]:
    d = [abs(x) for x in d]
    med_b, med_d = statistics.median(b), statistics.median(d)
    mad_b = statistics.median([abs(x - med_b) for x in b])
    mad_d = statistics.median([abs(x - med_d) for x in d])
    if mad_b and mad_d:
        ref_b = statistics.median([abs(x - med_b) / mad_b for x in b])
        ref_d = statistics.median([abs(x - med_d) / mad_d for x in d])
    else:
        ref_b = ref_d = math.nan
    return [med_b, mad_b, med_d, mad_d, ref_b, ref_d]


def test_reference_helper_results() -> None:
    # testing/Baseline of zeek-exfil-detect: median, mad, add_to_mean, tanh_normalization.
    values = np.array([1, 3, 5, 7, 1, 5], dtype=np.float64)
    assert k.median(values) == 4.0
    assert k.median(np.array([1.0, 3.0, 5.0])) == 3.0
    # MAD as recompute_params takes it: the median of the absolute deviations.
    assert k.median(np.abs(values - 2.0)) == 2.0
    assert k.median(np.abs(np.array([1.0, 3.0, 5.0]) - 2.0)) == 1.0
    assert f"{k.tanh_estimator(3.1, 2.416, 0.6615):.5f}" == "0.01034"
    # add_to_mean(2.416, 4, 3.1) == 2.587: the 4th value moves the mean of 3 values.
    _, mean, _ = k.welford_update(3.0, 2.416, 0.0, 3.1)
    assert mean == pytest.approx(2.587)


def test_std_differs_from_reference_defect() -> None:
    # The reference's add_to_std gives 0.503088 here by adding to the old *std*; Welford from the
    # population std of the first three values gives the true standard deviation instead.
    stats = RunningStats(3, 2.416, 0.6615**2 * 3)
    stats.add(3.1)
    assert stats.mean == pytest.approx(2.587)
    assert stats.std == pytest.approx(math.sqrt((0.6615**2 * 3 + (3.1 - 2.416) * (3.1 - 2.587)) / 4))
    assert abs(stats.std - 0.503088) > 0.1


@settings(deadline=None)
@given(counts)
def test_median_mad_match_statistics(xs: list[int]) -> None:
    arr = np.array(xs, dtype=np.float64)
    med = statistics.median(xs)
    assert k.median(arr) == pytest.approx(med, rel=1e-12)
    assert k.median(np.abs(arr - med)) == pytest.approx(statistics.median([abs(x - med) for x in xs]), rel=1e-12, abs=1e-9)


def test_median_exact_above_32_bits_and_empty() -> None:
    # The reference reads counts as 32-bit ints and halves with integer division.
    assert k.median(np.array([2.0**33, 2.0**33 + 1])) == 2.0**33 + 0.5
    assert math.isnan(k.median(np.array([], dtype=np.float64)))


@settings(deadline=None)
@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_pcr(o: int, r: int) -> None:
    got = k.pcr(float(o), float(r))
    if o == r:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(max(0.0, (o - r) / (o + r)))


def test_zscore() -> None:
    assert k.zscore(150.0, 100.0, 10.0) == 5.0
    assert k.zscore(50.0, 100.0, 10.0) == -5.0
    assert math.isnan(k.zscore(150.0, 100.0, 0.0))
    assert math.isnan(k.zscore(150.0, math.nan, math.nan))


def test_euclidean_against_oracle() -> None:
    params = np.array([100.0, 10.0, 5.0, 2.0, 0.5, 1.0])
    xb, xd = abs(160 - 100) / 10, abs(9 - 5) / 2
    assert k.euclidean(160.0, 9.0, params) == pytest.approx(math.hypot(xb - 0.5, xd - 1.0))
    params[3] = 0.0
    assert math.isnan(k.euclidean(160.0, 9.0, params))


@settings(deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.floats(0, 1e6))
def test_tanh_estimator(value: float, mean: float, std: float) -> None:
    got = k.tanh_estimator(value, mean, std)
    expected = 0.0 if std == 0 else max(0.0, math.tanh(0.01 * (value - mean) / std))
    assert got == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= got < 1.0 or got == 1.0  # tanh may round to 1.0 for huge inputs


@settings(deadline=None)
@given(st.lists(st.floats(-1e9, 1e9), min_size=1, max_size=50))
def test_welford_matches_numpy(xs: list[float]) -> None:
    stats = RunningStats()
    for x in xs:
        stats.add(x)
    assert stats.mean == pytest.approx(float(np.mean(xs)), rel=1e-9, abs=1e-6)
    expected_std = float(np.std(xs)) if len(xs) >= 2 else 0.0
    assert stats.std == pytest.approx(expected_std, rel=1e-6, abs=1e-3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 4)), max_size=12), min_size=1, max_size=8))
def test_recompute_params_csr_matches_oracle(groups: list[list[tuple[int, int]]]) -> None:
    b = np.array([x for g in groups for x, _ in g], dtype=np.float64)
    d = np.array([y * 0.5 for g in groups for _, y in g], dtype=np.float64)
    offsets = np.zeros(len(groups) + 1, dtype=np.int64)
    np.cumsum([len(g) for g in groups], out=offsets[1:])
    got = k.recompute_params(b, d, offsets)
    for i, g in enumerate(groups):
        if not g:
            assert np.isnan(got[i]).all()
            continue
        want = oracle_params([float(x) for x, _ in g], [y * 0.5 for _, y in g])
        np.testing.assert_allclose(got[i], want, rtol=1e-12, equal_nan=True)
