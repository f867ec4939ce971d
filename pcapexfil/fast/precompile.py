"""A first run's compile on two cores: a helper process compiles some kernels into the
cache while this process compiles the rest.

numba compiles a kernel in the process that first calls it, on one core, and compiles the
kernels it calls as part of it. Its cache is one index per kernel, read from disk at every
compile, so a kernel another process has put there is loaded, not compiled again. On a
first run (the flow table's costliest callees not in the cache) with a second core free,
the engine starts `python -m pcapexfil.fast.precompile`, which compiles
`fast.table.costly_callees` (the HTTP lane's segment reader and the DNS datagram step,
about a third of the compile); this process's first compile of each waits for the helper
(`jit.compiled_elsewhere`), by then mostly done, and loads it. The helper holds a lock in
the cache directory while it works, so processes starting together (workers, test
processes) start one helper between them and wait for it. If the helper fails, the
kernels are compiled here, as without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import IO

import numba

from pcapexfil.fast.table import COSTLY_CALLEES, FastFlowTable, costly_callees
from pcapexfil.flow.table import FlowConfig
from pcapexfil.jit import CACHE_DIR, compiled_elsewhere, kernel_cached, kernel_name

_LOCK_NAME = "compile-helper.lock"
_started = False


def _lock_file() -> IO[bytes]:
    os.makedirs(CACHE_DIR, exist_ok=True)
    return open(os.path.join(CACHE_DIR, _LOCK_NAME), "ab")


def _wait_for_helpers() -> None:
    """Until no helper (this process's or another's) holds the lock (none can without one)."""
    import fcntl

    try:
        lock = _lock_file()
    except OSError:
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        fcntl.flock(lock, fcntl.LOCK_UN)


def start_helper() -> None:
    """Once per process: on a first run with a second core, start the helper. POSIX only
    (the lock is fcntl's); not with numba's JIT disabled (nothing compiles). A warm cache
    costs two file checks (the helper works out the argument types itself)."""
    global _started
    if _started or os.name != "posix" or getattr(numba.config, "DISABLE_JIT", False):
        return
    _started = True
    if len(os.sched_getaffinity(0)) < 2 or all(kernel_cached(kernel) for kernel in COSTLY_CALLEES):
        return
    # Run from the directory holding this package, so that `-m` imports this package (not
    # another version in the working directory, whose kernels would be other ones).
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    helper = subprocess.Popen([sys.executable, "-m", __name__], cwd=package_root, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait() -> None:
        helper.wait()
        _wait_for_helpers()  # another process's, if that one held the lock first

    compiled_elsewhere([kernel_name(kernel) for kernel in COSTLY_CALLEES], wait)


def compile_share() -> None:
    """The helper's work: compile `costly_callees` into the cache, unless another helper
    already holds the lock (it is compiling them)."""
    import fcntl

    with _lock_file() as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        table = FastFlowTable(FlowConfig(), False, lambda events, records, histories: None)
        for kernel, signature in costly_callees(table):
            kernel.compile(signature)


if __name__ == "__main__":
    compile_share()
