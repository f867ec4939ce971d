"""conn.log's `service`, as Zeek's analyzers confirm protocols: light recognisers.

The registry is `RECOGNISERS` (one module per protocol). `ServiceAnalyzer` is the flow-table
analyzer that runs them: for each connection it picks the recognisers Zeek would attach
(registered for the responder's port, or any port for those with a dpd.sig signature: there
the signature must match first), gives them the first bytes of each direction (TCP: the
reassembled stream, UDP: the first datagram, and on `REPLY_UDP_PORTS` the first datagram of
each direction) and appends the name of each that confirms; it lets the stream go as soon
as every candidate has decided or `MAX_BYTES` per direction were seen. A recogniser that
models its analyzer's violations (`Recogniser.violation`) is read on after it confirmed,
while dpd.zeek still acts on a violation: one there takes its name out of `service` again
(`base.analyzer_violation`). After an HTTP CONNECT answered 200 (the HTTP analyzer opens
it: identifiers.http_tunnel) and after a recogniser's handshake that hands the stream over (`Recogniser.tunnel`: SOCKS),
the tunnel's bytes are a new PIA's, whose signatures attach recognisers as on any other
stream start. TLS, HTTP and DNS name themselves in their identifier analyzers
(pcapexfil.identifiers); HTTP and DNS apply their violations there through the same helper.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np

from pcapexfil.flow.table import ANALYZER_INACTIVITY_TIMEOUTS
from pcapexfil.hooks import AnalyzerContext, ConnView
from pcapexfil.identifiers.http_tunnel import take_tunnel
from pcapexfil.identifiers.stream import PiaBuffer, stream_size, streams, tcp_data
from pcapexfil.packet import PROTO_TCP, PROTO_UDP
from pcapexfil.services import (
    dce_rpc, dhcp, ftp, imap, irc, krb, ldap, modbus, mysql, ntp, pop3, postgresql, quic, radius, rdp, sip, smb, smtp,
    snmp, socks, ssh, syslog, xmpp,
)
from pcapexfil.services.expected import ExpectedConnections
from pcapexfil.services.base import (
    IGNORE_VIOLATIONS_AFTER,
    AnchorGate,
    PiaWait,
    Recogniser,
    StreamSession,
    Verdict,
    analyzer_violation,
    anchor_gate,
    largest_need,
    confirmable_by,
    pairs_verdict,
)

if TYPE_CHECKING:
    from pcapexfil.packet import Packet
    from pcapexfil.record import ConnRecord

NAME = "service"
RECOGNISERS: tuple[Recogniser, ...] = (
    ssh.RECOGNISER, ftp.RECOGNISER, smtp.RECOGNISER, ntp.RECOGNISER, dhcp.RECOGNISER, quic.RECOGNISER,
    krb.RECOGNISER, krb.RECOGNISER_TCP, smb.RECOGNISER, dce_rpc.RECOGNISER, ldap.RECOGNISER_TCP,
    ldap.RECOGNISER_UDP, rdp.RECOGNISER, snmp.RECOGNISER, syslog.RECOGNISER, sip.RECOGNISER, mysql.RECOGNISER,
    postgresql.RECOGNISER, irc.RECOGNISER, socks.RECOGNISER, pop3.RECOGNISER, imap.RECOGNISER, xmpp.RECOGNISER,
    radius.RECOGNISER, modbus.RECOGNISER,
)
# Bytes per direction a recogniser may ask for before it must have decided.
MAX_BYTES = 8192


_PORTS: dict[Recogniser, frozenset[tuple[int, int]]] = {r: r.ports() for r in RECOGNISERS}
# TCP ports of the analyzers whose sessions announce other connections (`Recogniser.session`:
# FTP's data channels, IRC's DCC transfers), as a lookup table by port: `workers.Share.mark` has every worker read
# them, so that the worker owning an announced connection knows it.
SESSION_PORTS = np.zeros(65536, np.bool_)
SESSION_PORTS[[port for r in RECOGNISERS if r.session is not None
               for port, proto in _PORTS[r] if proto == PROTO_TCP]] = True
# UDP responder ports where a recogniser needs the responder's datagram: the fast engine
# hands every datagram of these flows to the analyzers, as it does on DNS ports
# (fast.dispatch.APP_UDP).
REPLY_UDP_PORTS: frozenset[int] = frozenset(
    port for r in RECOGNISERS if r.both_datagrams for port, proto in _PORTS[r] if proto == PROTO_UDP
)


@functools.lru_cache(maxsize=4096)
def candidates(proto: int, resp_p: int) -> tuple[tuple[Recogniser, bool], ...]:
    """The recognisers Zeek would try on a connection, each with whether its signature must
    match first: by the responder's port (analyzer::Manager::BuildInitialAnalyzerTree) or
    by signature (dpd.sig, any port). Cached: asked for every connection."""
    out = []
    for r in RECOGNISERS:
        if r.transport != proto:
            continue
        if r.any_port or (resp_p, proto) in _PORTS[r]:
            out.append((r, False))
        elif r.signature is not None:
            out.append((r, True))
    return tuple(out)


# A recogniser still deciding: whether it waits on its signature, and the direction (is
# the originator's?) whose chunks alone cannot make that signature confirm, so that it is
# not asked on them (None: asked on every chunk; `ServiceAnalyzer._decide`).
Pending = tuple[Recogniser, bool, bool | None]


@functools.lru_cache(maxsize=4096)
def waiting_gate(resp_p: int) -> AnchorGate | None:
    """The gate of a TCP connection's candidates while none has confirmed: where every one
    waits on its signature (or is tried on any port) and declares its anchors."""
    attachable = candidates(PROTO_TCP, resp_p)
    if not attachable or not all(via_signature or rec.any_port for rec, via_signature in attachable):
        return None
    return anchor_gate(rec.anchors for rec, _ in attachable)


@functools.lru_cache(maxsize=4096)
def _first_pending(proto: int, resp_p: int, scheduled: bool = False) -> tuple[Pending, ...]:
    """A connection's recognisers before any byte: `candidates`, none skipping a direction;
    where a scheduled analyzer applies, not those attached by the port (services.expected).
    Shared by the connections to one port (a state's `pending` is replaced, never changed
    in place): built once, not per connection."""
    return tuple((rec, via_signature, None) for rec, via_signature in candidates(proto, resp_p)
                 if not scheduled or via_signature or rec.any_port)


# src/analyzer/protocol/http/HTTP.cc, HTTP_Analyzer::DeliverStream: after a 200 answering a
# CONNECT, a new PIA_TCP reads the tunnel's bytes (identifiers.http_tunnel). Built by no
# port, it attaches analyzers by their dpd.sig signatures alone (PIA_TCP::ActivateAnalyzer),
# on any port and each direction's tunnel bytes as a new stream start: every TCP recogniser
# with a signature waits on it, one whose check is its signature (`any_port`) is tried at once.
_TUNNEL_PENDING: tuple[Pending, ...] = tuple(
    (r, not r.any_port, None) for r in RECOGNISERS
    if r.transport == PROTO_TCP and (r.any_port or r.signature is not None)
)
_TUNNEL_GATE = anchor_gate(rec.anchors for rec, _, _ in _TUNNEL_PENDING)


class _State:
    __slots__ = ("pending", "watching", "limited", "orig", "resp", "orig_size", "resp_size", "udp_seen", "signatures",
                 "gate", "connect", "tunnel", "pia", "opener", "sessions", "ended")

    def __init__(self, pending: Sequence[Pending], gate: AnchorGate | None) -> None:
        self.pending: Sequence[Pending] = pending
        # TCP: while the PIA's windows hold no anchor of the candidates, none is asked.
        self.gate = gate
        # Kept only once an analyzer asked for them (`signature_verdicts`).
        self.signatures: dict[str, bool] | None = None
        self.watching: list[Recogniser] = []  # confirmed, violations still read (TCP)
        self.limited: list[Recogniser] = []  # reached a limit (their 'X' is written)
        self.orig_size = self.resp_size = 0  # TCP: stream bytes delivered (Zeek's c$orig$size ...)
        self.orig = b""
        self.resp = b""
        self.udp_seen = 0  # UDP: the directions whose first datagram was read (bit 1 orig, 2 resp)
        # TCP: whether the HTTP analyzer opened a CONNECT tunnel (`take_tunnel`), and the
        # recognisers a tunnel's PIA runs (CONNECT's or an `opener`'s), on the tunnel's
        # bytes (`ServiceAnalyzer._tunnel`).
        self.connect = False
        self.tunnel: _State | None = None
        self.pia: PiaBuffer | None = None  # a tunnel's own PIA (the stream's is `TcpStreams.pia`)
        # TCP: a confirmed recogniser whose `tunnel` is still undecided (SOCKS).
        self.opener: Recogniser | None = None
        # TCP: the attached analyzers' whole-stream readings (`Recogniser.session`) with the
        # bytes of each direction they were given, and those over since (none on most
        # connections: nothing is allocated for them).
        self.sessions: dict[Recogniser, tuple[StreamSession, list[int]]] | None = None
        self.ended: tuple[Recogniser, ...] = ()


def _keep(st: _State, is_orig: bool, data: bytes) -> None:
    """Count a chunk and keep the first bytes of its direction; watching for violations
    reads as far as dpd.zeek acts on them."""
    cap = IGNORE_VIOLATIONS_AFTER if st.watching else MAX_BYTES
    if is_orig:
        st.orig_size += len(data)
        if len(st.orig) < cap:
            st.orig += data[: cap - len(st.orig)]
    else:
        st.resp_size += len(data)
        if len(st.resp) < cap:
            st.resp += data[: cap - len(st.resp)]


def _drop_partial_skippers(st: _State) -> None:
    """The connection is partial at this chunk (hooks.ConnView.is_partial): the analyzers
    that read nothing of it (`Recogniser.skips_partial`) neither confirm nor report a
    violation from here on. A tunnel's PIA reads nothing either: HTTP.cc and SOCKS.cc feed
    it from their DeliverStream, which returns first. The flag is settled by each
    direction's first packet and only a flip of roles (at a SYN or SYN-ACK) clears it, so
    they are dropped, not paused."""
    st.pending = [p for p in st.pending if not p[0].skips_partial]
    st.watching = [rec for rec in st.watching if not rec.skips_partial]
    if st.opener is not None and st.opener.skips_partial:
        st.opener = None
    if st.tunnel is not None:
        st.tunnel.pending, st.tunnel.watching = [], []


def _feed_sessions(st: _State, is_orig: bool, data: bytes) -> None:
    """A chunk `_keep` counted, to each session the bytes of it not given yet (a session
    attached on this chunk had it in the PIA's replay)."""
    assert st.sessions is not None
    size = st.orig_size if is_orig else st.resp_size
    for rec, (session, fed) in list(st.sessions.items()):
        new = size - fed[is_orig]
        if new > 0:
            fed[is_orig] = size
            if not session.feed(is_orig, data[-new:]):
                _disabled(st, rec)


def _disabled(st: _State, rec: Recogniser) -> None:
    """The analyzer reads no more of the stream (dpd.zeek disabled it, or it handed the
    stream over): its session is over."""
    if st.sessions is not None:
        st.sessions.pop(rec, None)
    st.ended += (rec,)


def _open_tunnel_pia(st: _State) -> None:
    """The tunnel's new PIA (PIA_TCP) and the recognisers it may attach, on `st`'s stream."""
    st.tunnel = _State(_TUNNEL_PENDING, _TUNNEL_GATE)
    st.tunnel.pia = PiaBuffer()


def _reading(st: _State) -> bool:
    """Whether more stream bytes can still change what the analyzer writes."""
    tunnel = st.tunnel
    return bool(st.pending or st.watching or st.opener is not None or st.sessions
                or (tunnel is not None and (tunnel.pending or tunnel.watching)))


def _wants(st: _State, is_orig: bool) -> bool:
    """Whether more bytes of one direction can: a recogniser reads up to MAX_BYTES of each
    (violations further), the tunnel watches both directions while undecided."""
    if st.watching or st.opener is not None or st.sessions:
        return True
    if st.pending and len(st.orig if is_orig else st.resp) < MAX_BYTES:
        return True
    tunnel = st.tunnel
    return tunnel is not None and _wants(tunnel, is_orig)


def _ask_signature(rec: Recogniser, unconfirming: bool | None, orig_window: bytes, resp_window: bytes,
                   chunk_is_orig: bool | None, unmatchable: bool) -> tuple[Verdict, bool | None]:
    """A pending recogniser's signature on the PIA's windows after a chunk of the originator
    or not (None: a datagram), and the direction whose chunks it is not asked on from now
    on (`ServiceAnalyzer._decide`): MORE without asking on a chunk of `unconfirming`, REJECT
    without asking where the windows hold no anchor of the candidates (`unmatchable`)."""
    if unmatchable:
        return Verdict.REJECT, unconfirming
    if unconfirming is not None and unconfirming == chunk_is_orig:
        return Verdict.MORE, unconfirming
    if rec.signature_pairs is not None and chunk_is_orig is not None:
        pairs = rec.signature_pairs(orig_window, resp_window)
        by_orig, by_resp = confirmable_by(pairs)
        # Of two directions neither of which alone can confirm it, the other one's chunks
        # are skipped (a chunk of this one asks it again).
        unconfirming = (not chunk_is_orig if not (by_orig or by_resp)
                        else True if not by_orig else False if not by_resp else None)
        return pairs_verdict(pairs), unconfirming
    assert rec.signature is not None
    return rec.signature(orig_window, resp_window), unconfirming


class ServiceAnalyzer:
    """Runs the recognisers (satisfies hooks.AppAnalyzer)."""

    name = NAME

    def __init__(self, ctx: AnalyzerContext, users: frozenset[str]) -> None:
        self.users = users
        self.expected = ExpectedConnections()
        self.now = 0.0  # the network time of the chunk being read

    def reads_datagrams(self, resp_p: int) -> bool:
        return bool(candidates(PROTO_UDP, resp_p))

    def pia_gate(self, resp_p: int) -> PiaWait | None:
        """While `waiting_gate` is clean and the PIA matches, `on_packet` only keeps bytes
        (a CONNECT tunnel is the HTTP analyzer's, which takes no part in it); where it stops
        matching, `_decide` rejects every signature, and the checks tried without one
        reject an originator's window of their `rejects_unanchored_after`."""
        gate = waiting_gate(resp_p)
        if gate is None:
            return None
        done = largest_need(rec.rejects_unanchored_after for rec, via_signature in candidates(PROTO_TCP, resp_p)
                            if not via_signature)
        return PiaWait((gate,), done_after_orig=done)

    def pia_released(self, conn: ConnView) -> None:
        st: _State | None = conn.app.get(NAME)
        if st is not None:
            st.pending = []

    def on_new(self, conn: ConnView) -> None:
        """Zeek attaches analyzers when it creates the connection: the ones an earlier
        connection scheduled for it, else those of the responder port then
        (IPBasedAnalyzer::BuildSessionAnalyzerTree)."""
        if conn.proto != PROTO_TCP and conn.proto != PROTO_UDP:
            return
        scheduled = self.expected.applied(conn, conn.start_ts)
        pending = _first_pending(conn.proto, conn.resp_p, scheduled)
        st = conn.app[NAME] = _State(pending, waiting_gate(conn.resp_p) if conn.proto == PROTO_TCP else None)
        if conn.proto == PROTO_TCP:
            for rec, via_signature, _ in pending:
                if not via_signature:
                    self._attach_session(conn, st, rec, None)

    def _attach_session(self, conn: ConnView, st: _State, rec: Recogniser, replay: PiaBuffer | None) -> None:
        """The analyzer `rec` is attached to the connection's own stream (not a tunnel's): its
        session reads from here on, after the PIA's buffer replayed (PIA_TCP::ActivateAnalyzer)
        where a signature attached it. Once only: one over is not attached again."""
        if rec.session is None or rec in st.ended or (st.sessions is not None and rec in st.sessions):
            return
        session = rec.session(conn, functools.partial(self._announce, conn))
        fed = [0, 0]  # bytes given of the responder's and the originator's direction
        if st.sessions is None:
            st.sessions = {}
        st.sessions[rec] = (session, fed)
        for is_orig, chunk in replay.chunks if replay is not None else ():
            fed[is_orig] += len(chunk)
            if not session.feed(is_orig, chunk):
                _disabled(st, rec)
                return

    def _announce(self, conn: ConnView, analyzer: str, orig_h: str, resp_h: str, resp_p: int) -> None:
        """A session announced a connection, at the time of the chunk being read."""
        self.expected.announce(analyzer, orig_h, resp_h, resp_p, self.now)

    def on_packet(self, conn: ConnView, is_orig: bool, pkt: Packet) -> None:
        st: _State | None = conn.app.get(NAME)
        if st is None:
            return
        if conn.proto == PROTO_UDP:
            self._datagram(conn, st, is_orig, pkt.payload)
            return
        if conn.proto != PROTO_TCP:
            return
        rest = take_tunnel(conn, NAME)
        if rest is not None:
            self._open_connect(conn, st)
        if not _reading(st):  # decided: let the stream go (if never a candidate)
            s = streams(conn)
            if s is not None:
                s.release(NAME)
            return
        data = tcp_data(conn, is_orig, pkt, self.users)
        if not data:
            return
        if conn.is_partial:
            _drop_partial_skippers(st)
        _keep(st, is_orig, data)
        self.now = pkt.ts
        if st.sessions:
            _feed_sessions(st, is_orig, data)
        s = streams(conn)
        if s is None:
            return
        size = st.orig_size + st.resp_size
        if st.pending or st.watching:
            self._read(conn, st, s.pia, is_orig, size)
        if st.tunnel is not None:
            tunnel_data = data if rest is None else rest  # the chunk that opened it: the 200's rest
            if tunnel_data:
                self._tunnel(conn, st.tunnel, is_orig, tunnel_data, stream_size(conn))
        elif st.opener is not None:
            self._watch_opener(st)
        if not _reading(st):
            s.release(NAME)
        elif not _wants(st, is_orig):
            # This direction's bytes are all read (a one-sided transfer need not reach Python).
            s.release_direction(NAME, is_orig)

    def _read(self, conn: ConnView, st: _State, pia: PiaBuffer, is_orig: bool, size: int) -> None:
        """A chunk of one direction, kept in `st`, on what `pia` matched so far: the
        recognisers are asked, unless the windows hold none of their anchors yet."""
        unmatchable = False
        if st.gate is not None:
            unmatchable = st.gate.clean(pia)
            if unmatchable and pia.matching:
                return  # no candidate can confirm on these windows: none is asked yet
            st.gate = None  # asked from this chunk on
        self._decide(conn, st, pia.orig, pia.resp, pia.matching, is_orig, size, unmatchable)
        if len(st.orig) >= MAX_BYTES and len(st.resp) >= MAX_BYTES:
            st.pending = []

    @staticmethod
    def _open_connect(conn: ConnView, st: _State) -> None:
        """The HTTP analyzer opened a CONNECT tunnel on this chunk (HTTP.cc's rule, both
        engines: identifiers.http_tunnel): a new PIA and its recognisers read the server's
        bytes after the 200's head and every chunk after this one, even where this
        analyzer had let the stream go. Not in a tunnel already (SOCKS's): tunnels in a
        tunnel are not modelled."""
        if st.tunnel is not None:
            return
        st.connect = True
        st.opener = None
        _open_tunnel_pia(st)
        s = streams(conn)
        if s is not None:
            s.want(NAME)

    @staticmethod
    def _watch_opener(st: _State) -> None:
        """A confirmed recogniser's hand-over (`Recogniser.tunnel`, SOCKS.cc
        SOCKS_Analyzer::DeliverStream): once both endpoints are done, a new PIA and its
        recognisers read every chunk after this one, as after a CONNECT."""
        assert st.opener is not None and st.opener.tunnel is not None
        opened = st.opener.tunnel(st.orig, st.resp)
        if opened is None and len(st.orig) < MAX_BYTES and len(st.resp) < MAX_BYTES:
            return
        st.opener = None
        if opened:
            _open_tunnel_pia(st)

    def _tunnel(self, conn: ConnView, tunnel: _State, is_orig: bool, data: bytes, size: int) -> None:
        """A chunk of the tunnel (CONNECT's, SOCKS's): its PIA matches it as the PIA_TCP that
        HTTP.cc or SOCKS.cc adds does (PIA_TCP::DeliverStream, its own DPD_BUFFER_SIZE and
        DPD_MAX_PACKETS), the tunnel's recognisers read it; a violation counts the
        connection's `size`, as dpd.zeek does."""
        if not (tunnel.pending or tunnel.watching):
            return
        _keep(tunnel, is_orig, data)
        pia = tunnel.pia
        assert pia is not None
        if pia.matching:
            pia.add(is_orig, data)
        self._read(conn, tunnel, pia, is_orig, size)

    def _datagram(self, conn: ConnView, st: _State, is_orig: bool, payload: bytes) -> None:
        """UDP: the first datagram; then, for recognisers that need the responder's and on
        their registered ports (the fast engine hands later datagrams to the analyzers only
        on DNS ports and REPLY_UDP_PORTS), the first datagram of the other direction."""
        if not st.pending:
            return
        bit = 1 if is_orig else 2
        if st.udp_seen & bit:
            return
        st.udp_seen |= bit
        if is_orig:
            st.orig = payload
        else:
            st.resp = payload
        # PIA::PIA_DeliverPacket matches each datagram from its first byte.
        self._decide(conn, st, st.orig, st.resp, True, None, st.orig_size + st.resp_size)
        if st.udp_seen == 3:
            st.pending = []
        else:
            st.pending = [(r, sig, None) for r, sig, _ in st.pending if r.both_datagrams and not sig]

    def _decide(self, conn: ConnView, st: _State, orig_window: bytes, resp_window: bytes, matching: bool,
                chunk_is_orig: bool | None, size: int, unmatchable: bool = False) -> None:
        """Run the pending recognisers (their signatures on what the PIA matched of each
        direction, `matching` while it still matches) and read the confirmed ones' violations.

        A signature made of pairs that each need their reverse is not asked on a chunk of
        the direction that alone could not make it confirm when it was last asked
        (`confirmable_by`): only that direction grew since, so it cannot have confirmed, and
        a signature is a function of the two windows, so asking later loses nothing. Its
        failure may be noticed later than on this chunk, which changes no log. Where the
        windows hold no anchor of the signatures (`unmatchable`, `_State.gate`), none is
        asked: none can confirm on them."""
        # dpd.zeek's analyzer_violation_info handler acts only up to `size` bytes of the
        # connection (c$orig$size + c$resp$size).
        acting = size <= IGNORE_VIOLATIONS_AFTER
        if st.watching:
            kept = []
            for rec in st.watching:
                if not acting:
                    continue  # later violations are ignored: nothing left to watch
                assert rec.violation is not None
                self._limit(conn, st, rec)
                if not (rec.violation(st.orig, st.resp) and analyzer_violation(conn.service, rec.name, size)):
                    kept.append(rec)
                else:
                    _disabled(st, rec)
            st.watching = kept
        left: list[Pending] = []
        for rec, via_signature, unconfirming in st.pending:
            if via_signature:
                matched, unconfirming = _ask_signature(rec, unconfirming, orig_window, resp_window, chunk_is_orig,
                                                       unmatchable)
                if matched is Verdict.MORE and matching:
                    left.append((rec, True, unconfirming))
                    continue
                if st.signatures is not None:
                    st.signatures[rec.name] = matched is Verdict.CONFIRM
                if matched is not Verdict.CONFIRM:  # rejected, or the PIA stopped matching (SKIPPING)
                    continue
            if rec.session is not None and st.pia is None and conn.proto == PROTO_TCP:
                # Attached by its signature (here or in `settle_signatures`) on the
                # connection's own stream: its session starts on the PIA's buffer.
                s = streams(conn)
                self._attach_session(conn, st, rec, s.pia if s is not None else None)
            if acting and rec.violation is not None and rec.violation(st.orig, st.resp):
                _disabled(st, rec)
                continue  # disabled (disable_analyzer) before it could confirm
            verdict = rec.check(st.orig, st.resp)
            if verdict is Verdict.CONFIRM:
                if rec.name not in conn.service:
                    conn.service.append(rec.name)
                    timeout = ANALYZER_INACTIVITY_TIMEOUTS.get(rec.name)
                    if timeout is not None:  # conn/inactivity.zeek, analyzer_confirmation_info
                        conn.set_inactivity_timeout(timeout)
                if acting and rec.violation is not None and conn.proto == PROTO_TCP:
                    st.watching.append(rec)
                    self._limit(conn, st, rec)
                if rec.tunnel is not None and st.pia is None and st.tunnel is None:
                    st.opener = rec  # the connection's own stream: tunnels in a tunnel are not modelled
            elif verdict is Verdict.MORE:
                left.append((rec, False, None))
        st.pending = left

    @staticmethod
    def _limit(conn: ConnView, st: _State, rec: Recogniser) -> None:
        """A confirmed recogniser's limit, once (Analyzer::LimitReachedWeird)."""
        if rec.limit is None or rec in st.limited:
            return
        weird = rec.limit(st.orig, st.resp)
        if weird is not None:
            st.limited.append(rec)
            conn.limit_reached(weird)

    def on_remove(self, conn: ConnView, rec: ConnRecord) -> None:
        self.expected.finalize(conn)

    def close(self) -> None:
        return


def handed_over(conn: ConnView) -> bool:
    """Whether a recogniser's hand-over (SOCKS: `Recogniser.tunnel`) opened a tunnel whose
    new PIA reads every chunk after the one that opened it. For an analyzer that runs before
    this one on each chunk (the HTTP analyzer), True from the tunnel's first chunk on. Not
    a CONNECT tunnel: the HTTP analyzer opens that one itself (HTTP.cc's exact rule)."""
    st: _State | None = conn.app.get(NAME)
    return st is not None and st.tunnel is not None and not st.connect


def signature_verdicts(conn: ConnView) -> dict[str, bool] | None:
    """How the dpd.sig signatures of the connection's recognisers that wait on one (off
    their registered ports) ended, by recogniser name: True from the chunk whose PIA window
    matched it, False from the chunk where it could no longer (rejected, or undecided when
    the PIA stopped matching); a name not there is undecided. None where the services
    analyzer does not run. It runs after TLS and HTTP on each packet
    (`identifiers.make_analyzers`): while one of them reads a chunk, the verdicts are those
    of the chunks before it, unless it called `settle_signatures`. Kept from the first call
    on (no other analyzer pays for them)."""
    st: _State | None = conn.app.get(NAME)
    if st is None:
        return None
    if st.signatures is None:
        st.signatures = {}
    return st.signatures


def settle_signatures(conn: ConnView, names: Collection[str], chunk_is_orig: bool) -> None:
    """Ask these recognisers' undecided signatures on the PIA's window now, as the services
    analyzer would when it reads this chunk (of the originator's stream or not; it then
    finds them decided: none is asked twice on one window). For an analyzer before it that
    must know on this chunk whether one can still match: TLS's STARTTLS watch, on the chunk
    the PIA stops matching on."""
    st: _State | None = conn.app.get(NAME)
    s = streams(conn)
    if st is None or s is None:
        return
    pia = s.pia
    unmatchable = st.gate is not None and st.gate.clean(pia)
    pending: list[Pending] = []
    for rec, via_signature, unconfirming in st.pending:
        if via_signature and rec.name in names:  # what `ServiceAnalyzer._decide` does first
            verdict, unconfirming = _ask_signature(rec, unconfirming, pia.orig, pia.resp, chunk_is_orig, unmatchable)
            if verdict is Verdict.MORE and pia.matching:
                pending.append((rec, True, unconfirming))
                continue
            if st.signatures is not None:
                st.signatures[rec.name] = verdict is Verdict.CONFIRM
            if verdict is not Verdict.CONFIRM:
                continue
            via_signature, unconfirming = False, None  # its check is consulted from now on
        pending.append((rec, via_signature, unconfirming))
    st.pending = pending
