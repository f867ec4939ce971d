"""Read Zeek ASCII (TSV) logs, including btest baselines, into rows of strings.

Baselines come in two shapes: a real log (`#fields` header, `-` unset, `(empty)`) or a
script's own tab-separated print-out whose first non-comment line names the columns.
Values stay strings; `parse_value` converts one when a comparison needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STANDARD_CONN_FIELDS = (
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
    "duration", "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp",
    "missed_bytes", "history", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes",
    "tunnel_parents",
)  # fmt: skip

# Without these a conn.log row cannot be matched to a connection.
KEY_FIELDS = ("id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto")


@dataclass
class ZeekLog:
    fields: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)
    has_header: bool = True  # False: a print-out, not a log written by Zeek's ASCII writer

    def has(self, names: tuple[str, ...] | list[str]) -> bool:
        return all(n in self.fields for n in names)


def read_zeek_log(path: str) -> ZeekLog:
    fields: list[str] | None = None
    has_header = False
    rows: list[dict[str, str]] = []
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line or line.startswith("###"):
                continue
            if line.startswith("#"):
                if line.startswith("#fields\t"):
                    fields = line.split("\t")[1:]
                    has_header = True
                continue
            parts = line.split("\t")
            if fields is None:
                fields = parts  # a print-out's column-name line
                continue
            rows.append(dict(zip(fields, parts)))
    return ZeekLog(fields or [], rows, has_header)


def parse_value(text: str | None) -> str | None:
    """`-` (unset) becomes None; everything else is returned as is."""
    if text is None or text == "-":
        return None
    return text
