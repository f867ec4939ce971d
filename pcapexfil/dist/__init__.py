"""Scale-out over a Dask cluster: distributed record extraction (one task per capture file),
a sequential stitch of file boundaries, and one ordered detection pass. See docs/cluster.md.

Nothing here is imported by the core: Dask and pyarrow are optional (`pcapexfil[dist]`).
"""


class ClusterError(ValueError):
    """A bad --cluster value, an unreachable cluster, missing Dask, or unusable input files."""
