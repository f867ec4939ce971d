"""Parameter recomputation over every (orig_h, resp_p) baseline: numba kernel vs NumPy.

50,000 keys x 14 days x 8 windows per day (112 elements per key, 5.6 M elements) in the
CSR layout the detector uses. Peers, timed in the same run on the same arrays:
- numpy-loop: plain NumPy over the same CSR layout, one slice per key (what ragged
  baselines need without a compiled kernel);
- numpy-2d: fully vectorised NumPy, possible here only because every key has the same
  number of elements (real baselines are ragged).
All three results are checked equal before the times are printed.

    python benchmarks/bench_params.py [--keys 50000] [--days 14] [--per-day 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pcapexfil.detect.kernels import N_PARAMS, recompute_params


def numpy_loop(b: np.ndarray, d: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    out = np.full((len(offsets) - 1, N_PARAMS), np.nan)
    for k in range(len(offsets) - 1):
        bb = b[offsets[k]:offsets[k + 1]]
        dd = np.abs(d[offsets[k]:offsets[k + 1]])
        if bb.size == 0:
            continue
        med_b = np.median(bb)
        mad_b = np.median(np.abs(bb - med_b))
        med_d = np.median(dd)
        mad_d = np.median(np.abs(dd - med_d))
        out[k, :4] = med_b, mad_b, med_d, mad_d
        if mad_b != 0 and mad_d != 0:
            out[k, 4] = np.median(np.abs(bb - med_b) / mad_b)
            out[k, 5] = np.median(np.abs(dd - med_d) / mad_d)
    return out


def numpy_2d(b: np.ndarray, d: np.ndarray, per_key: int) -> np.ndarray:
    bb = b.reshape(-1, per_key)
    dd = np.abs(d).reshape(-1, per_key)
    med_b = np.median(bb, axis=1)
    mad_b = np.median(np.abs(bb - med_b[:, None]), axis=1)
    med_d = np.median(dd, axis=1)
    mad_d = np.median(np.abs(dd - med_d[:, None]), axis=1)
    ok = (mad_b != 0) & (mad_d != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref_b = np.where(ok, np.median(np.abs(bb - med_b[:, None]) / mad_b[:, None], axis=1), np.nan)
        ref_d = np.where(ok, np.median(np.abs(dd - med_d[:, None]) / mad_d[:, None], axis=1), np.nan)
    return np.column_stack([med_b, mad_b, med_d, mad_d, ref_b, ref_d])


def best_of(repeat: int, fn, *args):  # type: ignore[no-untyped-def]
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=50_000)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--per-day", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    per_key = args.days * args.per_day
    rng = np.random.default_rng(1)
    n = args.keys * per_key
    b = np.round(rng.lognormal(10, 1.5, n))  # orig_ip_bytes per window
    d = rng.exponential(30.0, n)  # duration per window
    offsets = np.arange(0, n + 1, per_key, dtype=np.int64)

    start = time.perf_counter()
    recompute_params(b[:per_key], d[:per_key], offsets[:2])  # compile or load the cache
    warm = time.perf_counter() - start
    t_numba, r_numba = best_of(args.repeat, recompute_params, b, d, offsets)
    t_2d, r_2d = best_of(args.repeat, numpy_2d, b, d, per_key)
    t_loop, r_loop = best_of(1, numpy_loop, b, d, offsets)
    np.testing.assert_allclose(r_numba, r_loop, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(r_numba, r_2d, rtol=1e-12, equal_nan=True)

    print(f"parameter recomputation: {args.keys} keys x {args.days} days x {args.per_day} windows/day "
          f"= {n:,} elements (numba first call incl. compile/cache load: {warm:.2f} s)")
    print(f"{'implementation':<34}{'time (s)':>10}{'vs numba':>10}")
    for name, t in (("numba kernel (CSR, @njit)", t_numba), ("numpy, per-key loop over CSR", t_loop),
                    ("numpy, vectorised 2-D (equal sizes)", t_2d)):
        print(f"{name:<34}{t:>10.3f}{t / t_numba:>9.1f}x")


if __name__ == "__main__":
    main()
