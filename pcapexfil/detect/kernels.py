"""Numba kernels for the detector's arithmetic: median, MAD, the three scores, the tanh
estimator and the parameter recomputation over every (orig_h, resp_p) baseline at once.

All arithmetic is float64 (the reference's 32-bit counts and integer halving are defects we
do not copy). An unset score is NaN here; the Python layer turns NaN into "unset".
Each kernel has a plain NumPy/Python oracle in tests/test_kernels.py.
"""

from __future__ import annotations

import math

import numpy as np

from pcapexfil.jit import njit

# Columns of the parameter matrix returned by `recompute_params`.
MED_B, MAD_B, MED_D, MAD_D, REF_B, REF_D = range(6)
N_PARAMS = 6


@njit(cache=True)
def median(values: np.ndarray) -> float:
    """Exact median; the mean of the two middle values for even lengths; NaN when empty."""
    n = values.shape[0]
    if n == 0:
        return np.nan
    s = np.sort(values)
    mid = n // 2
    if n % 2 == 1:
        return float(s[mid])
    return (float(s[mid - 1]) + float(s[mid])) / 2.0


@njit(cache=True)
def _select_median(buf: np.ndarray, n: int) -> float:
    """Median of buf[:n] by in-place quickselect (reorders buf); n > 0."""
    k = n // 2
    lo = 0
    hi = n - 1
    while lo < hi:
        pivot = buf[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while buf[j] > pivot:
                j -= 1
            if i <= j:
                tmp = buf[i]
                buf[i] = buf[j]
                buf[j] = tmp
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    upper = buf[k]
    if n % 2 == 1:
        return float(upper)
    lower = buf[0]
    for t in range(1, k):  # everything left of k is <= buf[k]: the largest is the other middle
        if buf[t] > lower:
            lower = buf[t]
    return (float(lower) + float(upper)) / 2.0


@njit(cache=True)
def pcr(orig_bytes: float, resp_bytes: float) -> float:
    """Producer-consumer ratio clipped to [0, 1]; NaN (unset) when both sides are equal."""
    if orig_bytes == resp_bytes:
        return np.nan
    value = (orig_bytes - resp_bytes) / (orig_bytes + resp_bytes)
    return value if value > 0.0 else 0.0


@njit(cache=True)
def zscore(orig_bytes: float, med: float, mad_: float) -> float:
    """Raw (signed) z-score against the baseline median/MAD; NaN when MAD is 0 or unknown."""
    if not (mad_ != 0.0) or math.isnan(med):
        return np.nan
    return (orig_bytes - med) / mad_


@njit(cache=True)
def euclidean(orig_bytes: float, duration: float, params: np.ndarray) -> float:
    """Distance of the window's robustly scaled (bytes, duration) point to the reference point."""
    mad_b = params[MAD_B]
    mad_d = params[MAD_D]
    if not (mad_b != 0.0) or not (mad_d != 0.0) or math.isnan(params[REF_B]):
        return np.nan
    xb = abs(orig_bytes - params[MED_B]) / mad_b
    xd = abs(abs(duration) - params[MED_D]) / mad_d
    db = xb - params[REF_B]
    dd = xd - params[REF_D]
    return math.sqrt(db * db + dd * dd)


@njit(cache=True)
def tanh_estimator(value: float, mean: float, std: float) -> float:
    """Modified tanh-estimator tanh(0.01 (x - mean) / std), negatives clipped to 0.

    Returns 0 when std is 0 (fewer than two distinct values): no spread, no evidence.
    """
    if not (std > 0.0):
        return 0.0
    result = math.tanh(0.01 * (value - mean) / std)
    return result if result > 0.0 else 0.0


@njit(cache=True)
def welford_update(n: float, mean: float, m2: float, value: float) -> tuple[float, float, float]:
    """One step of Welford's running mean/variance; returns (n, mean, m2)."""
    n1 = n + 1.0
    delta = value - mean
    mean1 = mean + delta / n1
    m2_1 = m2 + delta * (value - mean1)
    return n1, mean1, m2_1


@njit(cache=True)
def recompute_params(bytes_: np.ndarray, dur: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Parameters of every baseline in CSR layout (key k owns [offsets[k], offsets[k+1])).

    Row k: median/MAD of orig_ip_bytes, median/MAD of |duration|, and the euclidean reference
    point (medians of the scaled distances); the reference point is NaN when either MAD is 0.
    """
    nkeys = offsets.shape[0] - 1
    out = np.full((nkeys, N_PARAMS), np.nan)
    longest = 0
    for k in range(nkeys):
        longest = max(longest, offsets[k + 1] - offsets[k])
    buf = np.empty(longest)  # one scratch buffer for every selection: no per-key allocation
    for k in range(nkeys):
        lo = offsets[k]
        n = offsets[k + 1] - lo
        if n <= 0:
            continue
        for i in range(n):
            buf[i] = bytes_[lo + i]
        med_b = _select_median(buf, n)
        for i in range(n):
            buf[i] = abs(bytes_[lo + i] - med_b)
        mad_b = _select_median(buf, n)
        for i in range(n):
            buf[i] = abs(dur[lo + i])
        med_d = _select_median(buf, n)
        for i in range(n):
            buf[i] = abs(abs(dur[lo + i]) - med_d)
        mad_d = _select_median(buf, n)
        out[k, MED_B] = med_b
        out[k, MAD_B] = mad_b
        out[k, MED_D] = med_d
        out[k, MAD_D] = mad_d
        if mad_b != 0.0 and mad_d != 0.0:
            for i in range(n):
                buf[i] = abs(bytes_[lo + i] - med_b) / mad_b
            out[k, REF_B] = _select_median(buf, n)
            for i in range(n):
                buf[i] = abs(abs(dur[lo + i]) - med_d) / mad_d
            out[k, REF_D] = _select_median(buf, n)
    return out
