"""The exfiltration detector (zeek-exfil-detect re-implemented): a RecordSink over ConnRecords.

filter (outgoing?) -> windows (3 h aggregation per (orig_h, resp_p, identifier)) -> scoring
chain (scores/: new protocol, baseline, pcr, zscore, euclidean) -> finalize -> logs/notices;
parameters recomputed every hour of network time (kernels.py); all state in state.py.
stages.py splits the work into a per-key stage and an ordered stage (the cluster partitions
the first by host: pcapexfil.dist.score).
"""
