"""notice.log: Zeek's standard 26 columns (Zeek 4.x through 8.x)."""

from __future__ import annotations

from pcapexfil.logs.zeek import TS_UID_ID_FIELDS, Field

NOTICE_FIELDS: list[Field] = [
    *TS_UID_ID_FIELDS,
    ("fuid", "string"),
    ("file_mime_type", "string"),
    ("file_desc", "string"),
    ("proto", "enum"),
    ("note", "enum"),
    ("msg", "string"),
    ("sub", "string"),
    ("src", "addr"),
    ("dst", "addr"),
    ("p", "port"),
    ("n", "count"),
    ("peer_descr", "string"),
    ("actions", "set[enum]"),
    ("email_dest", "set[string]"),
    ("suppress_for", "interval"),
    ("remote_location.country_code", "string"),
    ("remote_location.region", "string"),
    ("remote_location.city", "string"),
    ("remote_location.latitude", "double"),
    ("remote_location.longitude", "double"),
]
