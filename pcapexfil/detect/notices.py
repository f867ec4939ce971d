"""Notices (notice.log rows) with suppression, and the lab's HTTP upload rule.

The reference asks for 3 h suppression but sets no notice identifier, so Zeek suppresses
nothing; we suppress per (orig_h, resp_p, identifier, note) as intended.
"""

from __future__ import annotations

from typing import Any, Protocol

from pcapexfil.record import ConnRecord

SuppressKey = tuple[Any, ...]


class RowWriter(Protocol):
    def write(self, row: dict[str, Any]) -> None: ...


class Notices:
    def __init__(self, writer: RowWriter | None) -> None:
        self.writer = writer
        self.suppressed: dict[SuppressKey, float] = {}  # key -> suppressed until (network time)
        self.raised = 0

    def raise_notice(
        self,
        note: str,
        *,
        ts: float,
        msg: str,
        sub: str | None = None,
        src: str | None = None,
        dst: str | None = None,
        p: int | None = None,
        proto: str | None = None,
        uid: str | None = None,
        conn_id: tuple[str, int, str, int] | None = None,
        suppress_key: tuple[Any, ...] | None = None,
        suppress_for: float = 3600.0,
    ) -> bool:
        """Write one notice unless the same key fired within its suppression interval."""
        if suppress_key is not None:
            full_key = (*suppress_key, note)
            until = self.suppressed.get(full_key)
            if until is not None and ts < until:
                return False
            self.suppressed[full_key] = ts + suppress_for
        self.raised += 1
        if self.writer is None:
            return True
        row: dict[str, Any] = {
            "ts": ts,
            "uid": uid,
            "proto": proto,
            "note": note,
            "msg": msg,
            "sub": sub,
            "src": src,
            "dst": dst,
            "p": p,
            "actions": ["Notice::ACTION_LOG"],
            "email_dest": [],
            "suppress_for": suppress_for,
        }
        if conn_id is not None:
            row["id.orig_h"], row["id.orig_p"], row["id.resp_h"], row["id.resp_p"] = conn_id
        self.writer.write(row)
        return True

    def expire(self, now: float) -> None:
        """Forget suppressions that have ended (keeps the persisted table small)."""
        self.suppressed = {k: v for k, v in self.suppressed.items() if v > now}


def http_upload_rule(rec: ConnRecord, ts: float, notices: Notices) -> None:
    """The Zeek lab rule: a TCP connection involving port 80 in which the client sent more
    payload bytes than the server. Not suppressed (the lab reports every one)."""
    if rec.proto != "tcp" or 80 not in (rec.orig_p, rec.resp_p):
        return
    sent, received = rec.orig_bytes or 0, rec.resp_bytes or 0
    if sent <= received:
        return
    notices.raise_notice(
        "HTTP::Client_Upload",
        ts=ts,
        msg=f"client {rec.orig_h} sent more payload than server {rec.resp_h} ({sent} > {received} bytes)",
        sub=f"{sent - received} bytes more sent than received",
        src=rec.orig_h,
        dst=rec.resp_h,
        p=rec.resp_p,
        proto="tcp",
        uid=rec.uid,
        conn_id=(rec.orig_h, rec.orig_p, rec.resp_h, rec.resp_p),
    )
