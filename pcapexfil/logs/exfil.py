"""exfil_detection.log: the reference's logging_element, columns in its load order."""

from __future__ import annotations

from pcapexfil.logs.zeek import Field


def exfil_fields(score_columns: list[str]) -> list[Field]:
    """main.zeek's columns, one double per registered sub-score, then finalize.zeek's."""
    return (
        [("ts", "time"), ("orig_h", "addr"), ("resp_p", "port")]
        + [(name, "double") for name in score_columns]
        + [
            ("identifier", "string"),
            ("orig_ip_bytes", "count"),
            ("resp_ip_bytes", "count"),
            ("duration", "interval"),
            ("uid", "vector[string]"),
            ("exfiltration_score", "double"),
        ]
    )
