"""conn.log: the standard columns of Zeek's Conn::Info, in declaration order."""

from __future__ import annotations

from typing import Any

from pcapexfil.logs.zeek import TS_UID_ID_FIELDS, Field
from pcapexfil.record import ConnRecord

CONN_FIELDS: list[Field] = [
    *TS_UID_ID_FIELDS,
    ("proto", "enum"),
    ("service", "string"),
    ("duration", "interval"),
    ("orig_bytes", "count"),
    ("resp_bytes", "count"),
    ("conn_state", "string"),
    ("local_orig", "bool"),
    ("local_resp", "bool"),
    ("missed_bytes", "count"),
    ("history", "string"),
    ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"),
    ("resp_pkts", "count"),
    ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"),
    ("ip_proto", "count"),
]


CONN_NAMES: tuple[str, ...] = tuple(name for name, _ in CONN_FIELDS)


def conn_values(rec: ConnRecord) -> tuple[Any, ...]:
    """The record's conn.log values in column order (None: unset): what ConnLogSink writes,
    without a dict per connection."""
    return (
        rec.ts,
        rec.uid,
        rec.orig_h,
        rec.orig_p,
        rec.resp_h,
        rec.resp_p,
        rec.proto,
        # Zeek's service is a string holding a comma-joined set; unset when empty.
        ",".join(rec.service) if rec.service else None,
        rec.duration,
        rec.orig_bytes,
        rec.resp_bytes,
        rec.conn_state,
        rec.local_orig,
        rec.local_resp,
        rec.missed_bytes,
        rec.history or None,
        rec.orig_pkts,
        rec.orig_ip_bytes,
        rec.resp_pkts,
        rec.resp_ip_bytes,
        rec.tunnel_parents or None,
        rec.ip_proto,
    )


def conn_row(rec: ConnRecord) -> dict[str, Any]:
    """The record's conn.log row, keyed by column name."""
    return dict(zip(CONN_NAMES, conn_values(rec)))
