"""ssl.log: Zeek's SSL::Info columns (as in the corpus baselines) plus ja3/ja3s at the end,
where the zeek ja3 package puts them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pcapexfil.hooks import ConnView
from pcapexfil.logs.zeek import TS_UID_ID_FIELDS, Field

SSL_FIELDS: list[Field] = [
    *TS_UID_ID_FIELDS,
    ("version", "string"),
    ("cipher", "string"),
    ("curve", "string"),
    ("server_name", "string"),
    ("resumed", "bool"),
    ("last_alert", "string"),
    ("next_protocol", "string"),
    ("established", "bool"),
    ("ssl_history", "string"),
    ("cert_chain_fps", "vector[string]"),
    ("client_cert_chain_fps", "vector[string]"),
    ("sni_matches_cert", "bool"),
    ("ja3", "string"),
    ("ja3s", "string"),
]


def conn_id(conn: ConnView) -> dict[str, Any]:
    return {
        "uid": conn.uid,
        "id.orig_h": conn.orig_h,
        "id.orig_p": conn.orig_p,
        "id.resp_h": conn.resp_h,
        "id.resp_p": conn.resp_p,
    }


def ssl_row(conn: ConnView, info: Mapping[str, Any]) -> dict[str, Any]:
    """One ssl.log row: the connection's id plus the fields the TLS analyzer learned."""
    row = conn_id(conn)
    row.update(info)
    return row
