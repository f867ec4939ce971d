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


KERNEL = """
from pcapexfil.jit import njit


@njit(cache=True)
def plus_one(x):
    return x + 1


print(plus_one(41))
"""


def _run_kernel_script(tmp_path, cache: str, tty: bool) -> str:
    """Run a module with one cached kernel under a fresh cache; what it wrote to stderr."""
    import pty

    script = tmp_path / "kernel_script.py"
    script.write_text(KERNEL)
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    if not tty:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, env=env,
                             timeout=300)
        assert out.stdout.strip() == "42"
        return out.stderr
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=secondary, env=env)
    os.close(secondary)
    stdout, _ = proc.communicate(timeout=300)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert proc.returncode == 0 and stdout.strip() == b"42"
    return b"".join(chunks).decode()


def test_a_first_run_says_it_compiles_on_a_terminal_and_only_then(tmp_path) -> None:
    from pcapexfil.jit import COMPILING_NOTICE

    cache = str(tmp_path / "cache")
    assert _run_kernel_script(tmp_path, cache, tty=True).count(COMPILING_NOTICE) == 1
    assert COMPILING_NOTICE not in _run_kernel_script(tmp_path, cache, tty=True)  # cached now
    assert _run_kernel_script(tmp_path, str(tmp_path / "cold"), tty=False) == ""  # a pipe keeps stderr clean


def test_the_kernel_cache_is_keyed_on_every_kernel_source(tmp_path) -> None:
    """An edit to a module whose constants a kernel compiles in moves the cache (numba
    alone notices only the file of the function it loads)."""
    import shutil

    import pcapexfil

    copy = tmp_path / "pkg"
    shutil.copytree(os.path.dirname(pcapexfil.__file__), copy / "pcapexfil",
                    ignore=shutil.ignore_patterns("__pycache__"))
    probe = "import pcapexfil.jit as j; print(j.kernel_cache_dir())"

    def cache_dir() -> str:
        env = {**os.environ, "PYTHONPATH": str(copy), "NUMBA_CACHE_DIR": str(tmp_path / "c")}
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env,
                             cwd=tmp_path, timeout=120)
        return out.stdout.strip()

    first = cache_dir()
    assert first.startswith(str(tmp_path / "c")) and cache_dir() == first
    batch = copy / "pcapexfil" / "fast" / "batch.py"  # KIND_SKIP, which process_batch compiles in
    batch.write_text(batch.read_text() + "\n")
    assert cache_dir() != first


def test_old_kernel_caches_are_pruned_to_the_most_recent(tmp_path) -> None:
    from pcapexfil.jit import prune_kernel_caches

    current = tmp_path / "kernels-current"
    current.mkdir()
    os.utime(current, (1, 1))  # the oldest of all, yet kept: it is this version's
    for i in range(12):
        d = tmp_path / f"kernels-{i:016x}"
        d.mkdir()
        (d / "index.nbi").write_bytes(b"x")
        os.utime(d, (1000 + i, 1000 + i))
    (tmp_path / "unrelated").mkdir()
    prune_kernel_caches(str(current), keep=8)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["kernels-current", "unrelated", *(f"kernels-{i:016x}" for i in range(4, 12))])


LIVE_PROBE = """
import json, sys
import dpkt
import numpy as np
from numba.core.registry import CPUDispatcher
import pcapexfil.fast as fast
from pcapexfil.decode import Decoder
from pcapexfil.fast.engine import FastFlow, warm_up
from pcapexfil.fast.reader import Chunk, parse_chunk
from pcapexfil.flow.table import FlowConfig
from pcapexfil.hooks import AnalyzerContext
from pcapexfil.identifiers import make_analyzers
from pcapexfil.weird import Weirds
import pkgutil, importlib

analyzers = make_analyzers(AnalyzerContext(out_dir=None))
warm_up()
kernels = [obj for info in pkgutil.iter_modules(fast.__path__)
           for obj in vars(importlib.import_module("pcapexfil.fast." + info.name)).values()
           if isinstance(obj, CPUDispatcher)]
before = {k.py_func.__qualname__: len(k.signatures) for k in kernels}
query = dpkt.dns.DNS(id=7, qd=[dpkt.dns.DNS.Q(name="example.test")])
udp = dpkt.udp.UDP(sport=40000, dport=53, data=bytes(query))
udp.ulen = len(udp)
frames = [bytes(dpkt.ethernet.Ethernet(data=dpkt.ip.IP(src=bytes([10, 0, 0, 1]), dst=bytes([10, 0, 0, 2]), p=p,
                                                        data=seg)))
          for p, seg in ((17, udp), (6, dpkt.tcp.TCP(sport=40001, dport=80, flags=dpkt.tcp.TH_SYN)))]
# A ring block as fast.ring.block_chunk makes it: a copy, made read-only.
buf = np.frombuffer(b"".join(frames), np.uint8)
n = len(frames)
chunk = Chunk(buf, np.array([0, len(frames[0])], np.int64), np.array([len(f) for f in frames], np.uint32),
              np.array([len(f) for f in frames], np.uint32), np.ones(n, np.int32), np.array([1.0, 1.5]),
              np.arange(1, n + 1, dtype=np.uint64), "eth0")
flow = FastFlow(FlowConfig(), analyzers, [], None)
flow.feed_batch(parse_chunk(chunk, False), Decoder(Weirds()))
flow.flush(2.0)
after = {k.py_func.__qualname__: len(k.signatures) for k in kernels}
print(json.dumps(sorted(name for name in after if after[name] != before[name])))
"""


def test_warm_up_compiles_what_a_live_ring_block_runs() -> None:
    """A live worker's first ring block (a read-only copy, a DNS datagram the kernel
    parses) finds every kernel loaded by `warm_up`: none is compiled once capture runs,
    where a first run after installing compiled for 30 s while the ring overflowed."""
    run = [sys.executable, "-c", LIVE_PROBE]
    subprocess.run(run, capture_output=True, text=True, check=True, timeout=600)  # fills a cold cache
    out = subprocess.run(run, capture_output=True, text=True, check=True, timeout=600)
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_a_kernel_called_with_different_constants_is_compiled_once() -> None:
    """numba would type each constant as a literal and compile the callee once per value
    (a third of the first run's compile was such copies); pcapexfil's njit compiles it for
    the plain type."""
    from pcapexfil.jit import njit

    @njit
    def scaled(x, factor):
        return x * factor

    @njit(_nrt=False)
    def both(x):
        return scaled(x, 3) + scaled(x, 5) + scaled(x, factor=7)

    assert both(2) == 30
    assert [str(t) for t in scaled.signatures[0]] == ["int64", "int64"]
    assert len(scaled.signatures) == 1


def test_a_kernel_compiled_elsewhere_waits_for_that_process_once() -> None:
    """`compiled_elsewhere`: the first compile of a kernel another process compiles calls
    its wait first (then loads what that process cached); later compiles do not wait."""
    from pcapexfil.jit import compiled_elsewhere, kernel_name, njit

    @njit
    def doubled(x):
        return 2 * x

    waits = []
    compiled_elsewhere([kernel_name(doubled)], lambda: waits.append(len(doubled.signatures)))
    assert doubled(4) == 8
    assert waits == [0]  # before anything was compiled
    assert doubled(1.5) == 3.0  # a second compile (float64)
    assert waits == [0]


def test_a_stable_call_dispatches_again_for_new_state_or_argument_kinds() -> None:
    """`StableCall` skips numba's dispatch only while the state records are the same objects
    and the other arguments of a kind it has seen with them; otherwise numba chooses (and
    compiles) as a plain call does. An entry point given an array of another dtype would
    read its memory as the wrong type: each case's result says which code ran."""
    from collections import namedtuple

    import numpy as np

    from pcapexfil.jit import StableCall, njit

    State = namedtuple("State", ["totals"])

    @njit
    def add_all(state, values, k):
        for v in values:
            state.totals[k] += v
        return state.totals[k]

    call = StableCall(add_all, 1)
    state = State(np.zeros(2, np.float64))
    ints = np.array([1, 2, 3], np.int64)
    assert call(state, ints, 0) == 6.0  # dispatched, entry point noted
    assert call(state, ints, 0) == 12.0  # through the entry point
    assert len(add_all.signatures) == 1
    floats = np.array([0.5, 0.25])
    assert call(state, floats, 1) == 0.75  # another dtype: dispatched, a second compile
    assert len(add_all.signatures) == 2
    read_only = ints.copy()
    read_only.flags.writeable = False
    assert call(state, read_only, 1) == 6.75  # another array kind (read-only): a third
    assert len(add_all.signatures) == 3
    grown = State(np.zeros(4, np.float64))
    assert call(grown, ints, 3) == 6.0  # a new state record: its own array is added to
    assert state.totals.tolist() == [12.0, 6.75]
    assert call(state, ints, 0) == 18.0  # the old record again: dispatched once more, still right
