"""conn.log's `service`, as Zeek's analyzers confirm protocols: light recognisers.

The registry is `RECOGNISERS` (one module per protocol). `ServiceAnalyzer` is the flow-table
analyzer that runs them: for each connection it picks the recognisers Zeek would attach
(registered for the responder's port, or any port for those with a dpd.sig signature), gives
them the first bytes of each direction (TCP: the reassembled stream, UDP: the first
datagram) and appends the name of each that confirms; it lets the stream go as soon as every
candidate has decided or `MAX_BYTES` per direction were seen. TLS, HTTP and DNS name
themselves in their identifier analyzers (pcapexfil.identifiers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcapexfil.hooks import AnalyzerContext, ConnView
from pcapexfil.identifiers.stream import streams, tcp_data
from pcapexfil.packet import PROTO_TCP, PROTO_UDP
from pcapexfil.services import dhcp, ftp, ntp, quic, smtp, ssh
from pcapexfil.services.base import Recogniser, Verdict

if TYPE_CHECKING:
    from pcapexfil.packet import Packet
    from pcapexfil.record import ConnRecord

NAME = "service"
RECOGNISERS: tuple[Recogniser, ...] = (
    ssh.RECOGNISER, ftp.RECOGNISER, smtp.RECOGNISER, ntp.RECOGNISER, dhcp.RECOGNISER, quic.RECOGNISER,
)
# Bytes per direction a recogniser may ask for before it must have decided.
MAX_BYTES = 8192


def candidates(proto: int, resp_p: int) -> list[Recogniser]:
    """The recognisers Zeek would try on a connection: by the responder's port
    (analyzer::Manager::BuildInitialAnalyzerTree) or by signature (any port)."""
    return [r for r in RECOGNISERS if r.transport == proto and (r.any_port or (resp_p, proto) in r.ports())]


class _State:
    __slots__ = ("pending", "orig", "resp")

    def __init__(self, pending: list[Recogniser]) -> None:
        self.pending = pending
        self.orig = b""
        self.resp = b""


class ServiceAnalyzer:
    """Runs the recognisers (satisfies hooks.AppAnalyzer)."""

    name = NAME

    def __init__(self, ctx: AnalyzerContext, users: frozenset[str]) -> None:
        self.users = users

    def on_packet(self, conn: ConnView, is_orig: bool, pkt: Packet) -> None:
        st: _State | None = conn.app.get(NAME)
        if st is None:
            if conn.proto not in (PROTO_TCP, PROTO_UDP):
                return
            st = conn.app[NAME] = _State(candidates(conn.proto, conn.resp_p))
            if conn.proto == PROTO_UDP:
                # Only the first datagram: the fast engine hands later UDP packets to the
                # analyzers only on DNS ports (hooks.AppAnalyzer.on_packet).
                if is_orig:
                    st.orig = pkt.payload
                else:
                    st.resp = pkt.payload
                self._decide(conn, st)
                st.pending = []
                return
        elif not st.pending:
            return  # decided (and the stream let go)
        if conn.proto == PROTO_TCP:
            data = tcp_data(conn, is_orig, pkt, self.users)  # the first call creates the shared streams
            if not st.pending:
                s = streams(conn)
                if s is not None:
                    s.release(NAME)
                return
            if not data:
                return
            if is_orig and len(st.orig) < MAX_BYTES:
                st.orig += data[: MAX_BYTES - len(st.orig)]
            elif not is_orig and len(st.resp) < MAX_BYTES:
                st.resp += data[: MAX_BYTES - len(st.resp)]
            self._decide(conn, st)
            if len(st.orig) >= MAX_BYTES and len(st.resp) >= MAX_BYTES:
                st.pending = []
            if not st.pending:
                s = streams(conn)
                if s is not None:
                    s.release(NAME)

    def _decide(self, conn: ConnView, st: _State) -> None:
        left = []
        for rec in st.pending:
            verdict = rec.check(st.orig, st.resp)
            if verdict is Verdict.CONFIRM:
                if rec.name not in conn.service:
                    conn.service.append(rec.name)
            elif verdict is Verdict.MORE:
                left.append(rec)
        st.pending = left

    def on_remove(self, conn: ConnView, rec: ConnRecord) -> None:
        return

    def close(self) -> None:
        return
