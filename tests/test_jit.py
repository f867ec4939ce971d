"""pcapexfil.jit: loading cached kernels skips numba's registry refresh (no numba.np.arraymath,
no scipy.linalg) and still runs them; the command line imports numba only where a command
runs kernels, and keeps OpenBLAS to one thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
from pcapexfil.fast.engine import warm_up
warm_up()
print(json.dumps({"registries": "numba.np.arraymath" in sys.modules, "scipy_linalg": "scipy.linalg" in sys.modules}))
"""


def test_cached_kernels_load_without_numba_refreshing_its_registries() -> None:
    def probe() -> dict[str, bool]:
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=600)
        return json.loads(out.stdout.splitlines()[-1])

    probe()  # compiles the kernels into numba's cache when it is cold (a clean checkout)
    # warm_up ran one packet through the parser and flow table: the kernels loaded and ran.
    assert probe() == {"registries": False, "scipy_linalg": False}


def test_the_command_line_imports_numba_only_for_commands_that_run_kernels() -> None:
    """`pcapexfil --help`, `baseline`, `evaluate`: no numba, numpy or dpkt at start-up (~0.1 s)."""
    probe = "import sys, pcapexfil.cli; print(sorted(m for m in ('numba', 'numpy', 'dpkt') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split("\n")[-2] == "[]"


def test_the_command_line_keeps_openblas_to_one_thread_unless_told_otherwise() -> None:
    """numpy's OpenBLAS would start a spinning thread per core; no command uses BLAS."""
    probe = "import os, pcapexfil.cli; print(os.environ['OPENBLAS_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60, env=env)
    assert out.stdout.strip() == "1"
    env["OPENBLAS_NUM_THREADS"] = "4"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60, env=env)
    assert out.stdout.strip() == "4"
