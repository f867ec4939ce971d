"""numba's `njit`, imported through here so that loading cached kernels costs what it must.

Before loading a kernel from its cache numba refreshes its whole target context: it imports
and installs every typing and lowering registry (numba.np.arraymath among them, which imports
scipy.linalg to probe for a BLAS), about 0.35 s of `pcapexfil conn`'s start-up that only
compiling reads. Loading object code needs the runtime (NRT) initialised, nothing more, so
that is all the cache load here does; a cache miss still compiles through numba's compiler,
which refreshes the context itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba

# Typed loosely: numba's own annotations do not list the private options kernels use (_nrt).
njit: Callable[..., Any] = numba.njit


def _load_cached_without_refresh() -> None:
    from numba.core import caching
    from numba.core.runtime import rtsys

    cache = caching.Cache
    if not all(hasattr(cache, name) for name in ("load_overload", "_load_overload",
                                                  "_guard_against_spurious_io_errors")):
        return  # a numba whose layout differs: keep its own behaviour

    def load_overload(self: Any, sig: Any, target_context: Any) -> Any:
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)
        return None  # the guard swallowed an I/O error: the caller compiles instead

    cache.load_overload = load_overload  # type: ignore[method-assign]


_load_cached_without_refresh()

__all__ = ["njit"]
