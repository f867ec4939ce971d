"""fast.precompile: a first run's helper process compiles the flow table's costliest callees
with exactly the types process_batch passes them, once between processes starting together."""

from __future__ import annotations

import fcntl
from typing import Any

import pytest

from pcapexfil.fast import precompile
from pcapexfil.fast.engine import warm_up
from pcapexfil.fast.table import FastFlowTable, costly_callees
from pcapexfil.flow.table import FlowConfig


def _table() -> FastFlowTable:
    return FastFlowTable(FlowConfig(), False, lambda events, records, histories: None)


def test_the_helper_compiles_the_types_process_batch_passes() -> None:
    """Whoever compiled process_batch's callees for this cache (this process, another, or
    the helper with `costly_callees`' types), each holds one signature: the one
    costly_callees states. Types that did not follow process_batch's calls would leave two
    (the helper's and the one process_batch compiled), and the helper's work wasted."""
    warm_up()  # process_batch compiled or loaded, with its callees in the cache
    for kernel, signature in costly_callees(_table()):
        index = kernel._cache._cache_file._load_index()  # numba's cache index: (signature, ...) keys
        assert [tuple(key[0]) for key in index] == [signature], kernel.py_func.__name__


class _Kernel:
    def __init__(self) -> None:
        self.compiled: list[Any] = []

    def compile(self, signature: Any) -> None:
        self.compiled.append(signature)


def test_the_helper_compiles_its_share_unless_another_helper_holds_the_lock(monkeypatch, tmp_path) -> None:
    kernels = [(_Kernel(), ("a",)), (_Kernel(), ("b",))]
    monkeypatch.setattr(precompile, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precompile, "costly_callees", lambda table: kernels)
    with open(tmp_path / "compile-helper.lock", "ab") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        precompile.compile_share()
        assert [k.compiled for k, _ in kernels] == [[], []]
    precompile.compile_share()
    assert [k.compiled for k, _ in kernels] == [[("a",)], [("b",)]]


@pytest.mark.parametrize("cores, cached, starts", [(2, False, True), (1, False, False), (2, True, False)])
def test_a_helper_starts_on_a_first_run_with_a_second_core(monkeypatch, cores, cached, starts) -> None:
    started: list[list[str]] = []
    elsewhere: list[list[str]] = []

    class Popen:
        def __init__(self, args: list[str], **kwargs: Any) -> None:
            started.append(args)

    monkeypatch.setattr(precompile, "_started", False)
    monkeypatch.setattr(precompile.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(precompile, "kernel_cached", lambda kernel: cached)
    monkeypatch.setattr(precompile.subprocess, "Popen", Popen)
    monkeypatch.setattr(precompile, "compiled_elsewhere", lambda names, wait: elsewhere.append(list(names)))
    table = _table()
    precompile.start_helper(table)
    precompile.start_helper(table)  # once per process
    assert len(started) == (1 if starts else 0)
    if starts:
        assert started[0][1:] == ["-m", "pcapexfil.fast.precompile"]
        assert elsewhere == [[f"{k.py_func.__module__}.{k.py_func.__qualname__}" for k, _ in costly_callees(table)]]
    else:
        assert elsewhere == []
