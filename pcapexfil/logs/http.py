"""http.log: Zeek's HTTP::Info columns, in the order of the corpus baselines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pcapexfil.hooks import ConnView
from pcapexfil.logs.ssl import conn_id
from pcapexfil.logs.zeek import TS_UID_ID_FIELDS, Field

HTTP_FIELDS: list[Field] = [
    *TS_UID_ID_FIELDS,
    ("trans_depth", "count"),
    ("method", "string"),
    ("host", "string"),
    ("uri", "string"),
    ("referrer", "string"),
    ("version", "string"),
    ("user_agent", "string"),
    ("origin", "string"),
    ("request_body_len", "count"),
    ("response_body_len", "count"),
    ("status_code", "count"),
    ("status_msg", "string"),
    ("info_code", "count"),
    ("info_msg", "string"),
    ("tags", "set[enum]"),
    ("username", "string"),
    ("password", "string"),
    ("proxied", "set[string]"),
    ("orig_fuids", "vector[string]"),
    ("orig_filenames", "vector[string]"),
    ("orig_mime_types", "vector[string]"),
    ("resp_fuids", "vector[string]"),
    ("resp_filenames", "vector[string]"),
    ("resp_mime_types", "vector[string]"),
]


def http_row(conn: ConnView, info: Mapping[str, Any]) -> dict[str, Any]:
    """One http.log row: the connection's id plus one transaction's fields."""
    row = conn_id(conn)
    row.update(info)
    return row
