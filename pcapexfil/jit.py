"""numba's `njit`, imported through here so that loading cached kernels costs what it must.

Before loading a kernel from its cache numba refreshes its whole target context: it imports
and installs every typing and lowering registry (numba.np.arraymath among them, which imports
scipy.linalg to probe for a BLAS), about 0.35 s of `pcapexfil conn`'s start-up that only
compiling reads. Loading object code needs the runtime (NRT) initialised, nothing more, so
that is all the cache load here does; a cache miss still compiles through numba's compiler,
which refreshes the context itself, and says so once on a terminal (`COMPILING_NOTICE`).
The cache lives in one directory per version of the package's sources (`kernel_cache_dir`).
Kernels made by `njit` here are compiled once per argument types, not once per constant a
caller passes (`_KernelDispatcher`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba.core.registry import CPUDispatcher
from numba.core.types import unliteral


class _KernelDispatcher(CPUDispatcher):
    """A kernel called from another kernel is compiled for its arguments' plain types.

    numba types an integer constant passed to a jitted function as a literal
    (`Literal[int](4)`) and compiles the callee once per value: the history's `lower`
    eleven times, the HTTP machine's `_feed_side` once per direction; about a quarter of
    the first run's compile. The callees are inlined by LLVM where that pays, constants folded there;
    no kernel here asks for a literal (`numba.literally`).
    """

    def get_call_template(self, args: Any, kws: Any) -> Any:
        return super().get_call_template(tuple(unliteral(a) for a in args),
                                         {name: unliteral(value) for name, value in kws.items()})

    def compile(self, sig: Any) -> Any:
        """numba's compile, after any helper process compiling this kernel has finished:
        then it is a cache load (`compiled_elsewhere`)."""
        wait = _elsewhere.pop(kernel_name(self), None)
        if wait is not None:
            wait()
        return super().compile(sig)


def njit(*args: Any, **options: Any) -> Any:
    """numba.njit, each kernel compiled once per argument types (`_KernelDispatcher`).
    Typed loosely: numba's own annotations do not list the private options kernels use (_nrt)."""
    made = numba.njit(*args, **options)
    if isinstance(made, CPUDispatcher):  # @njit without options
        made.__class__ = _KernelDispatcher
        return made

    def decorate(func: Callable[..., Any]) -> Any:
        kernel = made(func)
        kernel.__class__ = _KernelDispatcher
        return kernel

    return decorate


def _argument_kind(value: Any) -> Any:
    """What numba's type of an argument passed to a kernel depends on, cheaply: an array's
    dtype, dimensions, layout, writability and alignment; another value's class."""
    if isinstance(value, np.ndarray):
        flags = value.flags
        return (value.dtype, value.ndim, flags.c_contiguous, flags.f_contiguous, flags.writeable, flags.aligned)
    return type(value)


class StableCall:
    """Calls a kernel whose first `n_state` arguments are the same objects call after call
    (records of arrays, replaced only when a table grows) straight through the compiled
    entry point numba's dispatcher chose for such arguments the first time.

    numba's dispatcher works out the type of every argument at every call: 12 us for the
    flow table's eight state records, 1.3 us through the entry point. The table's kernel
    returns to Python at every packet the analyzers read, 17k times on the benchmark's
    synthetic capture. The dispatcher chooses again (compiling where it must) whenever a
    state record is another object or another argument is of a kind not seen with them
    (`_argument_kind`), so an entry point never gets arguments of a type it was not
    compiled for."""

    def __init__(self, kernel: Any, n_state: int) -> None:
        self.kernel = kernel
        self.n_state = n_state
        self._state: tuple[Any, ...] = ()
        # For the records in `_state`: the other arguments' kinds -> the entry point (None:
        # numba converted an argument to reach an overload, so it dispatches every time).
        self._entries: dict[tuple[Any, ...], Callable[..., Any] | None] = {}

    def __call__(self, *args: Any) -> Any:
        n = self.n_state
        kinds = tuple(map(_argument_kind, args[n:]))
        if len(self._state) == n and all(a is b for a, b in zip(args[:n], self._state)):
            if kinds in self._entries:
                entry = self._entries[kinds]
                return entry(*args) if entry is not None else self.kernel(*args)
        else:
            self._state, self._entries = args[:n], {}
        result = self.kernel(*args)
        compiled = self.kernel.overloads.get(tuple(self.kernel.typeof_pyval(a) for a in args))
        self._entries[kinds] = compiled.entry_point if compiled is not None else None
        return result


COMPILING_NOTICE = "pcapexfil: compiling kernels, first run only (about a minute)"

# Kernels another process is compiling into the cache: name -> wait until it is done.
_elsewhere: dict[str, Callable[[], None]] = {}


def kernel_name(kernel: Any) -> str:
    """A kernel's module-qualified name, as `compiled_elsewhere` takes it."""
    return f"{kernel.py_func.__module__}.{kernel.py_func.__qualname__}"


def kernel_cached(kernel: Any) -> bool:
    """Whether `kernel` has an entry in the cache (for some argument types): its index file
    exists. False where numba's cache layout is not the one known here."""
    cache_file = getattr(getattr(kernel, "_cache", None), "_cache_file", None)
    index = getattr(cache_file, "_index_path", None)
    return isinstance(index, str) and os.path.exists(index)


def compiled_elsewhere(names: Iterable[str], wait: Callable[[], None]) -> None:
    """Another process is compiling the kernels `names` into the cache: the first compile
    of each here calls `wait` first (it returns once they are there, or once the other
    process has given up) and then loads the kernel instead of compiling it again."""
    for name in names:
        _elsewhere[name] = wait


def kernel_cache_dir() -> str:
    """Where numba caches this package's kernels: one directory per version of their sources.

    numba notices an edit only in the file that defines a cached function, not in the
    kernels and constants it compiles in from other modules; naming the directory by a hash
    of the package's sources (and numba's version) leaves no stale machine code behind.
    Under $NUMBA_CACHE_DIR if set, else the user's cache directory.
    """
    package = Path(__file__).parent
    digest = hashlib.sha256(numba.__version__.encode())
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "pcapexfil")
    return os.path.join(base, "kernels-" + digest.hexdigest()[:16])


# Kernel caches of other source versions kept beside the current one (each about 10 MB).
KEPT_CACHES = 8

_announced = False


def prune_kernel_caches(current: str, keep: int = KEPT_CACHES) -> None:
    """Remove the caches of all but the `keep` most recently written other versions: every
    upgrade (or edit) starts a directory, and nothing else would ever remove the old ones."""
    base = os.path.dirname(current)
    try:
        names = os.listdir(base)
    except OSError:
        return
    others = []
    for name in names:
        path = os.path.join(base, name)
        if name.startswith("kernels-") and path != current:
            try:
                others.append((os.stat(path).st_mtime, path))
            except OSError:
                continue
    for _, path in sorted(others, reverse=True)[keep:]:
        shutil.rmtree(path, ignore_errors=True)


def _announce_compiling() -> None:
    """Say once, on a terminal, why the first run takes half a minute (a cache miss
    compiles); the first miss of a process also prunes old caches."""
    global _announced
    if not _announced:
        if sys.stderr.isatty():
            print(COMPILING_NOTICE, file=sys.stderr, flush=True)
        prune_kernel_caches(CACHE_DIR)
    _announced = True


def _load_cached_without_refresh() -> None:
    from numba.core import caching
    from numba.core.runtime import rtsys

    cache = caching.Cache
    if not all(hasattr(cache, name) for name in ("load_overload", "_load_overload",
                                                  "_guard_against_spurious_io_errors")):
        return  # a numba whose layout differs: keep its own behaviour

    def load_overload(self: Any, sig: Any, target_context: Any) -> Any:
        rtsys.initialize(target_context)
        loaded = None
        with self._guard_against_spurious_io_errors():
            loaded = self._load_overload(sig, target_context)
        if loaded is None:  # not cached (or the guard swallowed an I/O error): numba compiles
            _announce_compiling()
        return loaded

    cache.load_overload = load_overload  # type: ignore[method-assign]


CACHE_DIR = kernel_cache_dir()
setattr(numba.config, "CACHE_DIR", CACHE_DIR)  # read when each kernel is decorated
_load_cached_without_refresh()

__all__ = ["njit"]
