"""numba's `njit`, imported through here so that loading the kernels costs what it must.

At its first compile or cache load numba imports `numba.np.arraymath`, which imports
`scipy.linalg` (about 0.2 s, a quarter of `pcapexfil conn`'s start-up) only to learn whether
a BLAS exists for `np.dot` and friends. No pcapexfil kernel uses BLAS, so that module is
imported here with the probe answered from the package index instead of by an import.
numba then sees the same availability (`_HAVE_BLAS`), and linear algebra, if ever compiled,
still goes through numba's own check.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numba

# Typed loosely: numba's own annotations do not list the private options kernels use (_nrt).
njit: Callable[..., Any] = numba.njit


def _installed_scipy() -> None:
    if importlib.util.find_spec("scipy") is None:
        raise ImportError("scipy 0.16+ is required for linear algebra")


def _import_arraymath_without_scipy() -> None:
    import sys

    if "numba.np.arraymath" in sys.modules:
        return
    try:
        import numba.np.linalg as linalg
    except ImportError:  # a numba whose layout differs: keep its own behaviour
        return
    probe = getattr(linalg, "ensure_blas", None)
    if probe is None:
        return
    linalg.ensure_blas = _installed_scipy
    try:
        import numba.np.arraymath as arraymath
    finally:
        linalg.ensure_blas = probe
    arraymath.ensure_blas = probe


_import_arraymath_without_scipy()

__all__ = ["njit"]
