"""Scale-out over a Dask cluster: distributed record extraction (one task per capture file),
a sequential stitch of file boundaries, aggregation and scoring partitioned by host (one task
per partition), and one ordered pass for what is sequential. See docs/cluster.md.

Nothing here is imported by the core: Dask and pyarrow are optional (`pcapexfil[dist]`).

Modules: cluster (run_cluster, run_on: the driver), extract (extract_file: one task),
trace (Recorder: a flow table whose outputs carry stream positions), stitch (finalize: the
sequential pass), score (PartitionedDetector, score_partition: the partitioned
scoring and the ordered pass), split (split_captures), merge (merge_states: `baseline merge`), cli
(`pcapexfil split`).
"""


class ClusterError(ValueError):
    """A bad --cluster value, an unreachable cluster, missing Dask, or unusable input files."""
