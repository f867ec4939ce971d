"""`pcapexfil live`: the analyze pipeline on a live interface, for weeks, like Zeek on a sensor.

`collector.run_live` is the entry point; `worker` holds the per-socket capture loop,
`logs` the rotated log set. See docs/live-capture.md.
"""

from pcapexfil.live.collector import LiveSettings, LiveSummary, run_live
from pcapexfil.live.worker import AnalysisOptions, CaptureOptions, Counters

__all__ = ["AnalysisOptions", "CaptureOptions", "Counters", "LiveSettings", "LiveSummary", "run_live"]
