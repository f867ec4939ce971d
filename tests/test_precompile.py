"""fast.precompile: a first run's helper process compiles the flow table's costliest callees
with exactly the types process_batch passes them, once between processes starting together."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest

from pcapexfil.fast import precompile
from pcapexfil.fast.batch import PACKET_DTYPE
from pcapexfil.fast.engine import warm_up
from pcapexfil.fast.table import AUX_DTYPE, FastFlowTable, costly_callees, process_batch
from pcapexfil.flow.table import FlowConfig


def _table() -> FastFlowTable:
    return FastFlowTable(FlowConfig(), False, lambda events, records, histories: None)


class _TypesSeen(Exception):
    """Ends a compile of process_batch once its types are inferred."""


def _callee_types(argument_types: tuple[Any, ...]) -> dict[Any, set[tuple[Any, ...]]]:
    """The argument types process_batch's type inference gives each kernel it calls: numba's
    untyped passes and type inference, not the lowering (a second or two with its callees
    in the cache)."""
    from numba.core.compiler import CompilerBase, DefaultPassBuilder
    from numba.core.compiler_machinery import FunctionPass, register_pass
    from numba.core.typed_passes import NopythonTypeInference

    seen: dict[Any, set[tuple[Any, ...]]] = {}

    @register_pass(mutates_CFG=False, analysis_only=True)
    class RecordCallTypes(FunctionPass):
        _name = "record_call_types"

        def __init__(self) -> None:
            FunctionPass.__init__(self)

        def run_pass(self, state: Any) -> bool:
            for expr, signature in state.calltypes.items():
                callee = state.typemap[expr.func.name] if getattr(expr, "op", None) == "call" else None
                if isinstance(callee, numba.types.Dispatcher):
                    seen.setdefault(callee.dispatcher.py_func, set()).add(tuple(signature.args))
            raise _TypesSeen

    class TypesOnly(CompilerBase):
        def define_pipelines(self) -> list[Any]:
            pipeline = DefaultPassBuilder.define_untyped_pipeline(self.state)
            pipeline.add_pass(NopythonTypeInference, "type inference")
            pipeline.add_pass(RecordCallTypes, "record the callees' types")
            pipeline.finalize()
            return [pipeline]

    with pytest.raises(_TypesSeen):
        numba.njit(pipeline_class=TypesOnly)(process_batch.py_func).compile(argument_types)
    return seen


def test_the_helper_compiles_the_types_process_batch_passes() -> None:
    """`costly_callees` states by hand the types process_batch passes the kernels the helper
    compiles; numba's type inference of process_batch must give each exactly those, or the
    helper's work would be a second, unused compile."""
    warm_up()  # the kernels process_batch calls are in the cache: its inference loads them
    table = _table()
    batch = np.zeros(1, PACKET_DTYPE)
    buf = np.zeros(0, np.uint8)
    buf.flags.writeable = False
    arguments = (table.flows, table.timers, table.out, table.scalars, table.settings, table.dns, table.pairs,
                 table.lane, batch, buf, np.zeros(1, AUX_DTYPE), table.row_conn, 0)
    seen = _callee_types(tuple(numba.typeof(a) for a in arguments))
    for kernel, signature in costly_callees(table):
        assert seen[kernel.py_func] == {signature}, kernel.py_func.__name__


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
        def __init__(self, args: list[str], cwd: str, **kwargs: Any) -> None:
            started.append(args)
            assert (Path(cwd) / "pcapexfil" / "fast" / "precompile.py").samefile(precompile.__file__)

    monkeypatch.setattr(precompile, "_started", False)
    monkeypatch.setattr(precompile.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(precompile, "kernel_cached", lambda kernel: cached)
    monkeypatch.setattr(precompile.subprocess, "Popen", Popen)
    monkeypatch.setattr(precompile, "compiled_elsewhere", lambda names, wait: elsewhere.append(list(names)))
    precompile.start_helper()
    precompile.start_helper()  # once per process
    assert len(started) == (1 if starts else 0)
    if starts:
        assert started[0][1:] == ["-m", "pcapexfil.fast.precompile"]
        assert elsewhere == [[f"{k.py_func.__module__}.{k.py_func.__qualname__}" for k, _ in costly_callees(_table())]]
    else:
        assert elsewhere == []
