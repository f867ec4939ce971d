"""pcapexfil.jit: loading the kernels does not import scipy, and numba still knows whether a
BLAS is there (it is what `_HAVE_BLAS` would have been with numba's own probe); the command
line imports numba only where a command runs kernels."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

PROBE = """
import json, sys
from pcapexfil.fast.engine import warm_up
warm_up()
import numba.np.arraymath as arraymath
import numba.np.linalg as linalg
print(json.dumps({"scipy_linalg": "scipy.linalg" in sys.modules, "have_blas": arraymath._HAVE_BLAS,
                  "restored": arraymath.ensure_blas is linalg.ensure_blas
                  and linalg.ensure_blas.__module__ == "numba.np.linalg"}))
"""


def test_kernels_load_without_importing_scipy() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=300)
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["scipy_linalg"] is False
    assert seen["have_blas"] is (importlib.util.find_spec("scipy") is not None)
    assert seen["restored"] is True


def test_the_command_line_imports_numba_only_for_commands_that_run_kernels() -> None:
    """`pcapexfil --help`, `baseline`, `evaluate`: no numba, numpy or dpkt at start-up (~0.1 s)."""
    probe = "import sys, pcapexfil.cli; print(sorted(m for m in ('numba', 'numpy', 'dpkt') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split("\n")[-2] == "[]"
