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


def conn_row(rec: ConnRecord) -> dict[str, Any]:
    return {
        "ts": rec.ts,
        "uid": rec.uid,
        "id.orig_h": rec.orig_h,
        "id.orig_p": rec.orig_p,
        "id.resp_h": rec.resp_h,
        "id.resp_p": rec.resp_p,
        "proto": rec.proto,
        # Zeek's service is a string holding a comma-joined set; unset when empty.
        "service": ",".join(rec.service) if rec.service else None,
        "duration": rec.duration,
        "orig_bytes": rec.orig_bytes,
        "resp_bytes": rec.resp_bytes,
        "conn_state": rec.conn_state,
        "local_orig": rec.local_orig,
        "local_resp": rec.local_resp,
        "missed_bytes": rec.missed_bytes,
        "history": rec.history or None,
        "orig_pkts": rec.orig_pkts,
        "orig_ip_bytes": rec.orig_ip_bytes,
        "resp_pkts": rec.resp_pkts,
        "resp_ip_bytes": rec.resp_ip_bytes,
        "tunnel_parents": rec.tunnel_parents or None,
        "ip_proto": rec.ip_proto,
    }
