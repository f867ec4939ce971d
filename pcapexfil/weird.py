"""Counted, logged anomalies: damaged input is skipped and reported, never fatal.

Zeek writes such things to weird.log; pcapexfil does the same, and keeps a count per name
so a run can say at the end what it skipped and why.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from pcapexfil.logs.zeek import TS_UID_ID_FIELDS, Field, ZeekLogWriter

log = logging.getLogger("pcapexfil.weird")

WEIRD_FIELDS: list[Field] = [
    *TS_UID_ID_FIELDS,
    ("name", "string"),
    ("addl", "string"),
    ("notice", "bool"),
    ("peer", "string"),
    ("source", "string"),
]


class Weirds:
    """Collects anomalies: counts every one, writes each to weird.log when a writer is set."""

    def __init__(self, writer: ZeekLogWriter | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.writer = writer

    def report(
        self,
        name: str,
        ts: float | None = None,
        addl: str | None = None,
        *,
        uid: str | None = None,
        conn_id: tuple[str, int, str, int] | None = None,
        source: str | None = None,
    ) -> None:
        self.counts[name] += 1
        if self.counts[name] == 1:
            log.info("weird %s%s", name, f" ({addl})" if addl else "")
        if self.writer is None:
            return
        row: dict[str, Any] = {
            "ts": ts if ts is not None else 0.0,
            "uid": uid,
            "name": name,
            "addl": addl or None,
            "notice": False,
            "peer": "pcapexfil",
            "source": source,
        }
        if conn_id is not None:
            row["id.orig_h"], row["id.orig_p"], row["id.resp_h"], row["id.resp_p"] = conn_id
        self.writer.write(row)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        return ", ".join(f"{name}={count}" for name, count in sorted(self.counts.items()))
