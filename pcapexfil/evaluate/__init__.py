"""Scores a detector run (exfil_detection.log, notice.log, conn.log) against labels.csv.

`evaluate(load_results(dir), read_labels(csv))` returns every figure as a dict;
`write_report` turns it into report.md, report.json and PNG plots. Definitions are in
`metrics`' docstring and repeated at the end of each report.
"""

from pcapexfil.evaluate.metrics import Results, ResultsError, evaluate, load_results
from pcapexfil.evaluate.report import write_report

__all__ = ["Results", "ResultsError", "evaluate", "load_results", "write_report"]
