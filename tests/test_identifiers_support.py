"""Builders shared by the identifier tests: connections, packets, TLS hellos, DNS messages.

Hellos and DNS messages are assembled field by field from the RFC layouts, independently
of the parsers under test.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from pcapexfil.hooks import AnalyzerContext
from pcapexfil.identifiers import make_analyzers
from pcapexfil.packet import PROTO_TCP, PROTO_UDP, TH_ACK, TH_PUSH, TH_SYN, Packet
from pcapexfil.record import ConnRecord

CLIENT, SERVER = "10.0.0.5", "203.0.113.7"


@dataclass
class FakeConn:
    """Stands in for the flow table's connection (hooks.ConnView)."""

    uid: str = "Ctest"
    orig_h: str = CLIENT
    orig_p: int = 40000
    resp_h: str = SERVER
    resp_p: int = 443
    proto: int = PROTO_TCP
    start_ts: float = 1000.0
    service: list[str] = field(default_factory=list)
    app: dict[str, Any] = field(default_factory=dict)
    inactivity_timeout: float | None = None
    is_partial: bool = False

    def set_inactivity_timeout(self, seconds: float) -> None:
        self.inactivity_timeout = seconds

    def limit_reached(self, weird: str, addl: str | None = None) -> None:
        self.app.setdefault("limits", []).append(weird)

    def cancel_dns_expiry(self) -> None:
        self.app["dns_expiry_cancelled"] = True

    def record(self) -> ConnRecord:
        proto = {PROTO_TCP: "tcp", PROTO_UDP: "udp"}[self.proto]
        return ConnRecord(self.start_ts, self.uid, self.orig_h, self.orig_p, self.resp_h, self.resp_p, proto)


def tcp(conn: FakeConn, is_orig: bool, seq: int, payload: bytes = b"", flags: int = TH_ACK | TH_PUSH,
        ts: float = 1000.0) -> Packet:  # fmt: skip
    src, dst = (conn.orig_h, conn.resp_h) if is_orig else (conn.resp_h, conn.orig_h)
    sp, dp = (conn.orig_p, conn.resp_p) if is_orig else (conn.resp_p, conn.orig_p)
    return Packet(ts, src, dst, PROTO_TCP, 40 + len(payload), sp, dp, flags=flags, seq=seq,
                  payload_len=len(payload), payload=payload)  # fmt: skip


def udp(conn: FakeConn, is_orig: bool, payload: bytes, ts: float = 1000.0) -> Packet:
    src, dst = (conn.orig_h, conn.resp_h) if is_orig else (conn.resp_h, conn.orig_h)
    sp, dp = (conn.orig_p, conn.resp_p) if is_orig else (conn.resp_p, conn.orig_p)
    return Packet(ts, src, dst, PROTO_UDP, 28 + len(payload), sp, dp, payload_len=len(payload), payload=payload)


def syn(conn: FakeConn, is_orig: bool, isn: int, ts: float = 1000.0) -> Packet:
    return tcp(conn, is_orig, isn, b"", TH_SYN if is_orig else TH_SYN | TH_ACK, ts)


class Run:
    """The registry's analyzers over hand-made packets, like the flow table drives them."""

    def __init__(self, out_dir: str | None = None, weirds: Any = None, only: set[str] | None = None) -> None:
        self.analyzers = make_analyzers(AnalyzerContext(out_dir=out_dir, weirds=weirds), only)
        self.created: list[FakeConn] = []  # held, so that no id is reused

    def feed(self, conn: FakeConn, packets: list[tuple[bool, Packet]]) -> None:
        if not any(c is conn for c in self.created):  # its first packets: the flow table creates it
            self.created.append(conn)
            for a in self.analyzers:
                a.on_new(conn)
        for is_orig, pkt in packets:
            for a in self.analyzers:
                a.on_packet(conn, is_orig, pkt)

    def finish(self, conn: FakeConn) -> ConnRecord:
        rec = conn.record()
        for a in self.analyzers:
            a.on_remove(conn, rec)
        rec.service = list(conn.service)
        return rec

    def close(self) -> None:
        for a in self.analyzers:
            a.close()


# -- TLS ---------------------------------------------------------------------------------


def _vec(data: bytes, n: int) -> bytes:
    return len(data).to_bytes(n, "big") + data


def ext(etype: int, data: bytes) -> bytes:
    return struct.pack("!HH", etype, len(data)) + data


def sni_ext(name: str) -> bytes:
    return ext(0, _vec(b"\x00" + _vec(name.encode(), 2), 2))


def groups_ext(groups: list[int]) -> bytes:
    return ext(10, _vec(b"".join(struct.pack("!H", g) for g in groups), 2))


def point_formats_ext(formats: list[int]) -> bytes:
    return ext(11, _vec(bytes(formats), 1))


def handshake(mtype: int, body: bytes) -> bytes:
    return bytes([mtype]) + len(body).to_bytes(3, "big") + body


def record(ctype: int, payload: bytes, version: int = 0x0301) -> bytes:
    return struct.pack("!BHH", ctype, version, len(payload)) + payload


def client_hello_body(version: int, ciphers: list[int], extensions: list[bytes] | None,
                      session_id: bytes = b"") -> bytes:  # fmt: skip
    body = struct.pack("!H", version) + bytes(range(32)) + _vec(session_id, 1)
    body += _vec(b"".join(struct.pack("!H", c) for c in ciphers), 2) + _vec(b"\x00", 1)
    if extensions is not None:
        body += _vec(b"".join(extensions), 2)
    return body


def server_hello_body(version: int, cipher: int, extensions: list[bytes] | None, session_id: bytes = b"") -> bytes:
    body = struct.pack("!H", version) + bytes(32) + _vec(session_id, 1) + struct.pack("!HB", cipher, 0)
    if extensions is not None:
        body += _vec(b"".join(extensions), 2)
    return body


def client_hello_record(sni: str | None = "example.com", grease: bool = True) -> bytes:
    exts = [ext(0x0A0A, b"")] if grease else []
    if sni:
        exts.append(sni_ext(sni))
    exts += [ext(23, b""), ext(65281, b"\x00"), groups_ext([0x1A1A, 29, 23, 24]), point_formats_ext([0]), ext(35, b"")]
    ciphers = ([0x2A2A] if grease else []) + [0x1301, 0xC02B, 0xC02F, 0x009C]
    return record(22, handshake(1, client_hello_body(0x0303, ciphers, exts)))


# -- DNS ---------------------------------------------------------------------------------


def dns_name(name: str) -> bytes:
    return b"".join(_vec(label.encode(), 1) for label in name.split(".") if label) + b"\x00"


def dns_message(tid: int, flags: int, question: tuple[str, int] | None,
                answers: list[tuple[str, int, int, bytes]] = ()) -> bytes:  # fmt: skip
    """answers: (owner, type, ttl, rdata)."""
    out = struct.pack("!HHHHHH", tid, flags, 1 if question else 0, len(answers), 0, 0)
    if question:
        out += dns_name(question[0]) + struct.pack("!HH", question[1], 1)
    for owner, rtype, ttl, rdata in answers:
        out += dns_name(owner) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
    return out


def a_answer(owner: str, addr: str, ttl: int) -> tuple[str, int, int, bytes]:
    return (owner, 1, ttl, bytes(int(x) for x in addr.split(".")))
