"""Fast path: numba kernels over memory-mapped captures (see batch.py for the shared columns)."""
