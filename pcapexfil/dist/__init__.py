"""Scale-out over a Dask cluster: distributed record extraction (one task per capture file),
a sequential stitch of file boundaries, and one ordered detection pass. See docs/cluster.md.

Nothing here is imported by the core: Dask and pyarrow are optional (`pcapexfil[dist]`).

Modules: cluster (run_cluster, run_on: the driver), extract (extract_file: one task),
trace (Recorder: a flow table whose outputs carry stream positions), stitch (finalize: the
sequential pass), split (split_captures), merge (merge_states: `baseline merge`), cli
(`pcapexfil split`).
"""


class ClusterError(ValueError):
    """A bad --cluster value, an unreachable cluster, missing Dask, or unusable input files."""
