"""Bounded per-direction TCP reassembly of a connection's application bytes.

Identifiers live in the first bytes of a stream (ClientHello, HTTP request head), which
often span segments, arrive out of order or are retransmitted. Each direction delivers its
bytes in sequence order from the initial sequence number (SYN+1, or the first sequence seen
without a SYN); early segments wait in a bounded buffer; data already delivered is ignored.
Several analyzers share one reassembler per connection (`tcp_data`), so each packet is
reassembled once, and reassembly of a direction stops as soon as no analyzer wants more of
its bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pcapexfil.packet import PROTO_TCP, TH_SYN

if TYPE_CHECKING:
    from pcapexfil.hooks import ConnView
    from pcapexfil.packet import Packet

_MOD = 1 << 32
_HALF = 1 << 31

# Out-of-order bytes a direction may hold while it waits for a hole to be filled.
MAX_PENDING = 64 * 1024
# ... and segments: filling a hole rescans the pending ones, so thousands of tiny segments
# sent out of order would cost quadratic time (a hang, not just memory).
MAX_PENDING_SEGMENTS = 256


class StreamDirection:
    """In-order bytes of one direction of a TCP connection."""

    __slots__ = ("next_seq", "pending", "pending_bytes", "delivered", "broken", "offers")

    def __init__(self) -> None:
        self.next_seq: int | None = None  # sequence number of the next byte to deliver
        self.pending: dict[int, bytes] = {}  # out-of-order segments by sequence number
        self.pending_bytes = 0
        self.delivered = 0  # bytes handed out so far
        self.broken = False  # a hole will never be filled (capture truncated, buffer full)
        # Per reader, bytes from next_seq on it would only count: (how many, whom to tell).
        self.offers: dict[str, tuple[int, Callable[[int], None] | None]] = {}

    def counted(self, n: int) -> None:
        """`n` bytes from next_seq on went by uncounted-for (the fast engine counted them)."""
        assert self.next_seq is not None
        self.next_seq = (self.next_seq + n) % _MOD
        self.delivered += n
        for name, (left, on_counted) in list(self.offers.items()):
            self.offers[name] = (left - n, on_counted)
            if on_counted is not None:
                on_counted(n)

    def add(self, seq: int, flags: int, payload: bytes, payload_len: int) -> bytes:
        """Take one segment; return the bytes it makes deliverable in order (maybe b"")."""
        if self.broken:
            return b""
        if self.next_seq is None:
            if flags & TH_SYN:
                self.next_seq = (seq + 1) % _MOD
                seq = self.next_seq
            elif payload_len:
                self.next_seq = seq
            else:
                return b""
        elif flags & TH_SYN:
            seq = (seq + 1) % _MOD  # SYN retransmission or SYN carrying data
        if not payload_len:
            return b""
        if len(payload) < payload_len:
            # Snap-length truncation: the missing bytes leave a hole that never fills.
            self.broken = True
            return self._deliver_from(seq, payload)
        return self._deliver_from(seq, payload)

    def _deliver_from(self, seq: int, payload: bytes) -> bytes:
        assert self.next_seq is not None
        offset = (seq - self.next_seq) % _MOD
        if offset >= _HALF:  # starts before next_seq: retransmission or overlap
            old = _MOD - offset
            if old >= len(payload):
                return b""
            payload = payload[old:]
            offset = 0
        if offset > 0:
            if seq not in self.pending or len(self.pending[seq]) < len(payload):
                self.pending_bytes += len(payload) - len(self.pending.get(seq, b""))
                self.pending[seq] = payload
                if self.pending_bytes > MAX_PENDING or len(self.pending) > MAX_PENDING_SEGMENTS:
                    self.broken = True
                    self.pending.clear()
            return b""
        self.next_seq = (self.next_seq + len(payload)) % _MOD
        if not self.pending:  # in order, nothing waiting behind it: most segments
            self.delivered += len(payload)
            return payload
        out = [payload]
        while self.pending:
            progressed = False
            for pseq in list(self.pending):
                poff = (pseq - self.next_seq) % _MOD
                if poff == 0 or poff >= _HALF:
                    data = self.pending.pop(pseq)
                    self.pending_bytes -= len(data)
                    skip = 0 if poff == 0 else _MOD - poff
                    if skip < len(data):
                        out.append(data[skip:])
                        self.next_seq = (self.next_seq + len(data) - skip) % _MOD
                    progressed = True
            if not progressed:
                break
        data = b"".join(out)
        self.delivered += len(data)
        return data


# The PIA's buffer limits (init-bare.zeek: dpd_buffer_size, dpd_max_packets).
DPD_BUFFER_SIZE = 1024
DPD_MAX_PACKETS = 100


class PiaBuffer:
    """The stream chunks Zeek's PIA matches dpd.sig signatures against and replays to an
    analyzer one of them attaches (src/analyzer/protocol/pia/PIA.cc, PIA_TCP::DeliverStream,
    ReplayStreamBuffer): a connection's first chunks, both directions in delivery order. The
    chunk that takes it past DPD_BUFFER_SIZE bytes or DPD_MAX_PACKETS chunks is the last one
    matched; then `matching` ends for good (init-bare.zeek: dpd_match_only_beginning = T)."""

    __slots__ = ("chunks", "size", "matching", "orig", "resp", "clean_for")

    def __init__(self) -> None:
        self.chunks: list[tuple[bool, bytes]] = []  # (from the originator?, bytes)
        self.size = 0
        self.matching = True
        self.orig = b""  # each direction's bytes in the buffer, joined
        self.resp = b""
        # services.base.AnchorGate.clean's searches of these windows, by gate: (orig length,
        # anchor held there, resp length, anchor held there).
        self.clean_for: dict[object, tuple[int, bool, int, bool]] = {}

    def add(self, is_orig: bool, data: bytes) -> None:
        self.chunks.append((is_orig, data))
        if is_orig:
            self.orig += data
        else:
            self.resp += data
        self.size += len(data)
        if self.size > DPD_BUFFER_SIZE or len(self.chunks) > DPD_MAX_PACKETS:
            self.matching = False


class TcpStreams:
    """Both directions of one connection and, per direction, the analyzers still wanting it."""

    __slots__ = ("orig", "resp", "orig_wanted", "resp_wanted", "last_pkt", "last_data", "pia")

    def __init__(self, wanted: frozenset[str]) -> None:
        self.orig = StreamDirection()
        self.resp = StreamDirection()
        self.orig_wanted = set(wanted)
        self.resp_wanted = set(wanted)
        self.last_pkt: Packet | None = None
        self.last_data = b""
        # What readers waiting on a signature need; only bytes read through `tcp_data` reach it.
        self.pia = PiaBuffer()

    def flip(self) -> None:
        """The connection's roles were swapped: each direction's reassembly goes with its
        endpoint, as Zeek's TCPSessionAdapter::FlipRoles swaps the endpoints that own the
        reassemblers."""
        self.orig, self.resp = self.resp, self.orig
        self.orig_wanted, self.resp_wanted = self.resp_wanted, self.orig_wanted
        self.last_pkt, self.last_data = None, b""
        pia = self.pia
        pia.orig, pia.resp = pia.resp, pia.orig
        pia.clean_for.clear()
        pia.chunks = [(not is_orig, data) for is_orig, data in pia.chunks]

    def release(self, name: str) -> None:
        """An analyzer has what it needs: once nobody wants bytes, reassembly stops."""
        self.orig_wanted.discard(name)
        self.resp_wanted.discard(name)

    def want(self, name: str) -> None:
        """Analyzer `name` reads the stream again after it let it go (HTTP in a SOCKS tunnel):
        each direction another reader still keeps, the others are no longer reassembled."""
        if self.orig_wanted:
            self.orig_wanted.add(name)
        if self.resp_wanted:
            self.resp_wanted.add(name)

    def exhausted(self, is_orig: bool) -> bool:
        """This direction gives analyzers no more bytes: nobody wants them, or its
        reassembly broke (snap length, overflow)."""
        if is_orig:
            return self.orig.broken or not self.orig_wanted
        return self.resp.broken or not self.resp_wanted

    def offer(self, name: str, is_orig: bool, nbytes: int, on_counted: Callable[[int], None] | None = None) -> None:
        """Analyzer `name` would only count the next `nbytes` of this direction (an HTTP body
        of known length; TLS server bytes before any ClientHello, or inside a Certificate).
        Once every reader of the direction offers, the fast engine may count in-order
        segments inside the smallest offer in its kernel and report them through
        `StreamDirection.counted` (and `on_counted(n)`) instead of delivering them. Offers end when the direction next
        delivers bytes; the reference engine delivers everything and never uses them."""
        (self.orig if is_orig else self.resp).offers[name] = (nbytes, on_counted)

    def withdraw(self, name: str, is_orig: bool) -> None:
        """Analyzer `name` needs this direction's bytes again (the TLS server side, once the
        ClientHello is in)."""
        (self.orig if is_orig else self.resp).offers.pop(name, None)

    def count_window(self, is_orig: bool) -> tuple[int, int]:
        """(sequence number, byte count) the kernel may count for this direction's readers;
        (0, 0) while it may not: a reader made no offer, or bytes wait out of order."""
        direction = self.orig if is_orig else self.resp
        wanted = self.orig_wanted if is_orig else self.resp_wanted
        offers = direction.offers
        if not offers or direction.pending or direction.broken or direction.next_seq is None or not wanted:
            return 0, 0
        n = -1
        for name in wanted:
            offer = offers.get(name)
            if offer is None:
                return 0, 0
            n = offer[0] if n < 0 else min(n, offer[0])
        return direction.next_seq, max(n, 0)

    def count_offered(self, is_orig: bool, flags: int, seq: int, length: int, caplen: int) -> bool:
        """What the fast engine's kernel does with a segment inside the readers' offers
        (`fast.dispatch.count_for_analyzers`), for one it handed over before it learned of
        them (offers take effect at its next call): True if the segment's bytes are the
        next ones and all offered (counted here, as `StreamDirection.counted`), or were
        all delivered already (a retransmission, dropped unread); False: the readers
        must get it."""
        if flags & TH_SYN or caplen < length:
            return False
        seq0, left = self.count_window(is_orig)
        if not left:
            return False
        ahead = (seq - seq0) % _MOD
        if ahead == 0:
            if length > left:
                return False
            (self.orig if is_orig else self.resp).counted(length)
            return True
        return ahead >= _HALF and (seq0 - seq) % _MOD >= length

    def release_direction(self, name: str, is_orig: bool) -> None:
        """An analyzer needs no more bytes of one direction (TLS after the ClientHello):
        a direction nobody wants is no longer reassembled, and the fast engine keeps its
        packets in the kernel."""
        (self.orig_wanted if is_orig else self.resp_wanted).discard(name)


STREAM_KEY = "tcp_stream"


def open_streams(conn: ConnView, users: frozenset[str]) -> TcpStreams:
    """The connection's shared reassembly, created by the first reader (or by the fast
    engine, which must set where a direction starts when its SYN stayed in the kernel)."""
    st = conn.app[STREAM_KEY] = TcpStreams(users)
    return st


def tcp_data(conn: ConnView, is_orig: bool, pkt: Packet, users: frozenset[str]) -> bytes:
    """The in-order bytes this packet makes available in its direction (shared per packet).

    `users` names every analyzer that reads the stream (the first caller creates the
    shared state with it); each one calls `release` when it needs no more bytes.
    """
    if pkt.proto != PROTO_TCP:
        return b""
    st: TcpStreams | None = conn.app.get(STREAM_KEY)
    if st is None:
        st = open_streams(conn, users)
    if st.last_pkt is pkt:
        return st.last_data
    if not (st.orig_wanted if is_orig else st.resp_wanted):
        return b""
    direction = st.orig if is_orig else st.resp
    direction.offers.clear()  # its readers offer again once they have seen this packet
    data = direction.add(pkt.seq, pkt.flags, pkt.payload, pkt.payload_len)
    st.last_pkt, st.last_data = pkt, data
    if data and st.pia.matching:
        st.pia.add(is_orig, data)
    return data


def streams(conn: ConnView) -> TcpStreams | None:
    return conn.app.get(STREAM_KEY)


def stream_size(conn: ConnView) -> int:
    """Bytes both directions delivered so far, counted ones included: Zeek's c$orig$size +
    c$resp$size while some analyzer reads both streams."""
    s = streams(conn)
    return 0 if s is None else s.orig.delivered + s.resp.delivered
