"""TCP endpoint state, sequence accounting and content-gap detection, as Zeek does it.

A port of the semantics of Zeek's TCPSessionAdapter / TCP_Endpoint / TCP_Reassembler
(src/packet_analysis/protocol/tcp, src/analyzer/protocol/tcp): the endpoint state
machine behind `conn_state`, the history letters, `orig_bytes`/`resp_bytes` from
sequence numbers (with 32-bit wraparound) and `missed_bytes` from acknowledged data
that was never seen. Only the bookkeeping that changes a conn.log field is kept:
no payload is buffered, the reassembler tracks sequence ranges only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcapexfil.flow.ports import is_likely_server_port
from pcapexfil.packet import PROTO_TCP, TH_ACK, TH_FIN, TH_RST, TH_SYN

if TYPE_CHECKING:
    from pcapexfil.flow.table import Connection

# Endpoint states (Zeek's TCP_ENDPOINT_*).
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)
_HANDSHAKE = (INACTIVE, SYN_SENT, SYN_ACK_SENT)

# History masks (Zeek's HIST_*); the responder's are shifted left by 16.
HIST_SYN = 0x1
HIST_FIN = 0x2
HIST_RST = 0x4
HIST_FIN_RST = 0x8
HIST_DATA = 0x10
HIST_ACK = 0x20
HIST_MULTI_FLAG = 0x40

TOO_LARGE_SEQ_DELTA = 1048576
MAX_INITIAL_WINDOW = 16384  # tcp_max_initial_window
MAX_ABOVE_HOLE_WITHOUT_ACKS = 16384  # tcp_max_above_hole_without_any_acks
EXCESSIVE_DATA_WITHOUT_ACKS = 10 * 1024 * 1024  # tcp_excessive_data_without_further_acks

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF


def seq_delta(a: int, b: int) -> int:
    """Signed 32-bit difference a - b."""
    d = (a - b) & M32
    return d - 0x100000000 if d & 0x80000000 else d


class Reassembler:
    """Sequence-range view of Zeek's TCP_Reassembler: enough to find content gaps."""

    __slots__ = ("endp", "blocks", "last_reassem_seq", "trim_seq", "skip_deliveries", "data_upper", "did_eof")

    def __init__(self, endp: Endpoint) -> None:
        self.endp = endp
        self.blocks: list[list[int]] = []  # sorted, disjoint [seq, upper) ranges not yet delivered
        self.last_reassem_seq = 1
        self.trim_seq = 1
        self.skip_deliveries = False
        self.data_upper = 0  # end of the highest data seen: Zeek keeps blocks until acked
        self.did_eof = False

    def has_blocks(self) -> bool:
        """Data held (undelivered, or delivered but not yet acknowledged)."""
        return self.data_upper > self.trim_seq

    def data_pending(self) -> bool:
        """Zeek's TCP_Reassembler::DataPending: is the stream not yet delivered to its end?"""
        if self.skip_deliveries:
            return False
        endp = self.endp
        delivered = endp.start_seq + self.last_reassem_seq
        last = (endp.seq_wraps << 32) | endp.last_seq
        if last < delivered:
            return False
        if delivered != last - 1 and delivered != last:
            return True
        return endp.state != RESET and endp.peer.reassembler.has_blocks()

    def check_eof(self) -> None:
        endp = self.endp
        if (
            not self.did_eof
            and (endp.fin_cnt > 0 or endp.state in (CLOSED, RESET))
            and not self.data_pending()
        ):
            self.did_eof = True
            endp.adapter.endpoint_eof(endp)

    def data_sent(self, seq: int, length: int) -> None:
        endp = self.endp
        if self.skip_deliveries:
            return
        ack = endp.rel(endp.ack_seq, endp.ack_wraps)
        upper = seq + length
        if seq < ack:
            if upper <= ack:
                return
            seq = ack
        self._new_block(seq, upper)
        if endp.no_data_acked() and self._undelivered() > MAX_ABOVE_HOLE_WITHOUT_ACKS:
            endp.conn.weird("above_hole_data_without_any_acks")
            self._clear()
        elif sum(u - s for s, u in self.blocks) > EXCESSIVE_DATA_WITHOUT_ACKS:
            endp.conn.weird("excessive_data_without_further_acks")
            self._clear()

    def _clear(self) -> None:
        self.blocks.clear()
        self.data_upper = 0
        self.skip_deliveries = True

    def _undelivered(self) -> int:
        return self.blocks[-1][1] - self.last_reassem_seq if self.blocks else 0

    def _new_block(self, seq: int, upper: int) -> None:
        if upper <= seq or upper <= self.trim_seq:
            return
        seq = max(seq, self.trim_seq)
        if upper > self.data_upper:
            self.data_upper = upper
        # Insert and merge with overlapping/adjacent ranges.
        blocks = self.blocks
        i = 0
        while i < len(blocks) and blocks[i][1] < seq:
            i += 1
        j = i
        while j < len(blocks) and blocks[j][0] <= upper:
            seq = min(seq, blocks[j][0])
            upper = max(upper, blocks[j][1])
            j += 1
        blocks[i:j] = [[seq, upper]]
        self._block_inserted()

    def _block_inserted(self) -> None:
        """Deliver what became contiguous with what was delivered before."""
        blocks = self.blocks
        lrs = self.last_reassem_seq
        while blocks and blocks[0][0] <= lrs:
            lrs = max(lrs, blocks[0][1])
            del blocks[0]
        self.last_reassem_seq = lrs
        endp = self.endp
        if endp.no_data_acked() and endp.size() > MAX_INITIAL_WINDOW:
            self._trim(lrs)

    def ack_received(self, seq: int) -> None:
        endp = self.endp
        if endp.fin_cnt > 0 and seq >= endp.fin_seq:
            seq = endp.fin_seq - 1
        if seq <= self.trim_seq:
            return
        self._trim(seq)
        self.check_eof()

    def _trim(self, seq: int) -> None:
        if seq > self.last_reassem_seq:
            self._undelivered_to(seq)
        blocks = self.blocks
        while blocks and blocks[0][1] <= seq:
            del blocks[0]
        if blocks and blocks[0][0] <= self.last_reassem_seq:
            self._block_inserted()
        self.trim_seq = seq

    def _undelivered_to(self, up_to: int) -> None:
        endp = self.endp
        if up_to <= 2 and endp.adapter.is_partial:
            # A partial connection's faked initial sequence: not a real gap.
            return
        if not self.skip_deliveries:
            blocks = self.blocks
            while blocks and blocks[0][0] < up_to:
                seq, upper = blocks[0]
                if seq >= self.last_reassem_seq:
                    self._gap(self.last_reassem_seq, seq - self.last_reassem_seq)
                del blocks[0]
                self.last_reassem_seq = max(self.last_reassem_seq, upper)
            if up_to > self.last_reassem_seq:
                self._gap(self.last_reassem_seq, up_to - self.last_reassem_seq)
        if up_to > self.last_reassem_seq:
            self.last_reassem_seq = up_to

    def _gap(self, seq: int, length: int) -> None:
        endp = self.endp
        if _is_clean(endp) and _is_clean(endp.peer):
            endp.conn.scaled_history("G" if endp.is_orig else "g", endp.counters, "gap")
            endp.conn.missed_bytes += length


def _is_clean(e: Endpoint) -> bool:
    return e.state == ESTABLISHED or (e.state == CLOSED and e.prev_state == ESTABLISHED)


class Endpoint:
    """One side of a TCP connection (Zeek's TCP_Endpoint)."""

    __slots__ = (
        "adapter", "conn", "is_orig", "peer", "state", "prev_state",
        "start_seq", "last_seq", "ack_seq", "seq_wraps", "ack_wraps",
        "fin_cnt", "fin_seq", "did_close",
        "hist_last_syn", "hist_last_fin", "hist_last_rst",
        "counters", "reassembler",
    )  # fmt: skip

    def __init__(self, adapter: TCPAdapter, is_orig: bool) -> None:
        self.adapter = adapter
        self.conn = adapter.conn
        self.is_orig = is_orig
        self.peer: Endpoint = self
        self.state = self.prev_state = INACTIVE
        self.start_seq = self.last_seq = self.ack_seq = 0
        self.seq_wraps = self.ack_wraps = 0
        self.fin_cnt = 0
        self.fin_seq = 0
        self.did_close = False
        self.hist_last_syn = self.hist_last_fin = self.hist_last_rst = 0
        # Scaled-history counters: name -> [count, threshold].
        self.counters: dict[str, list[int]] = {}
        self.reassembler = Reassembler(self)

    # Sequence helpers.
    def rel(self, seq: int, wraps: int) -> int:
        return (((wraps << 32) | seq) - self.start_seq) & M64

    def init_seqs(self, start: int, last: int) -> None:
        self.start_seq = start
        self.ack_seq = start
        self.last_seq = last

    def update_last_seq(self, seq: int) -> None:
        if seq < self.last_seq:
            self.seq_wraps += 1
        self.last_seq = seq

    def update_ack_seq(self, seq: int) -> None:
        if seq < self.ack_seq:
            self.ack_wraps += 1
        self.ack_seq = seq

    def no_data_acked(self) -> bool:
        ack = (self.ack_wraps << 32) | self.ack_seq
        return ack == self.start_seq or ack == self.start_seq + 1

    def is_active(self) -> bool:
        return self.state != INACTIVE and not self.did_close

    def size(self) -> int:
        """Payload bytes by sequence space (Zeek's TCP_Endpoint::Size)."""
        if (
            self.prev_state == SYN_SENT
            and self.state == RESET
            and self.peer.state == INACTIVE
            and not self.no_data_acked()
        ):
            return 0
        last = (self.seq_wraps << 32) | self.last_seq
        ack = (self.ack_wraps << 32) | self.ack_seq
        size = ((last if last > ack else ack) - self.start_seq) & M64
        if size:
            size -= 1
        if self.fin_cnt > 0 and size:
            size -= 1
        return size

    def set_state(self, new: int) -> None:
        if new == self.state:
            return
        if new not in _HANDSHAKE and self.state in _HANDSHAKE and self.peer.state in _HANDSHAKE:
            self.conn.inactivity_timeout = self.conn.table.config.tcp_inactivity_timeout
        self.prev_state = self.state
        self.state = new

    def check_history(self, mask: int, code: str) -> bool:
        if not self.is_orig:
            mask <<= 16
            code = code.lower()
        return self.conn.check_history(mask, code)

    def add_history(self, code: str) -> None:
        self.conn.history.append(code if self.is_orig else code.lower())

    def scaled(self, code: str, name: str) -> None:
        self.conn.scaled_history(code if self.is_orig else code.lower(), self.counters, name)


class TCPAdapter:
    """Per-connection TCP analysis (Zeek's TCPSessionAdapter), minus application layers."""

    __slots__ = ("conn", "orig", "resp", "is_partial", "first_packet_seen", "is_active", "synack_first",
                 "close_deferred")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.orig = Endpoint(self, True)
        self.resp = Endpoint(self, False)
        self.orig.peer = self.resp
        self.resp.peer = self.orig
        self.is_partial = False
        self.first_packet_seen = 0  # bit 1: orig, bit 2: resp
        self.is_active = True
        self.synack_first = False  # the first packet was a SYN-ACK; may flip on the next
        self.close_deferred = False  # a FIN/RST arrived while data was still pending

    # -- roles ---------------------------------------------------------------
    def flip_roles(self) -> None:
        self.orig, self.resp = self.resp, self.orig
        self.orig.is_orig = True
        self.resp.is_orig = False
        fps = self.first_packet_seen
        self.first_packet_seen = (2 if fps & 1 else 0) | (1 if fps & 2 else 0)
        self.is_partial = False

    def synack_sender_is_responder(self) -> None:
        """After a late flip: the SYN-ACK's sender is the responder whose SYN-ACK answered
        a SYN we missed, so the connection is not partial (Zeek PRs 2191, 2552)."""
        resp = self.resp
        if resp.state == SYN_ACK_SENT:
            resp.prev_state, resp.state = INACTIVE, ESTABLISHED
        self.is_partial = False
        self.first_packet_seen |= 2

    def _established(self) -> None:
        """Zeek raises connection_established (TCPSessionAdapter::UpdateInactiveState, the
        responder's SYN); scripts/base/protocols/conn/inactivity.zeek then gives the service
        port's port_inactivity_timeouts entry: the responder port, or on a half-established
        connection (originator still inactive) the originator's port if only it is a likely
        server port."""
        conn = self.conn
        cfg = conn.table.config
        port = conn.resp_p
        if (self.orig.state == INACTIVE and not is_likely_server_port(port, PROTO_TCP, cfg.likely_server_ports)
                and is_likely_server_port(conn.orig_p, PROTO_TCP, cfg.likely_server_ports)):
            port = conn.orig_p
        if port in cfg.port_inactivity_ports:
            conn.inactivity_timeout = cfg.port_inactivity_timeout

    def is_closed(self) -> bool:
        return self.orig.did_close or self.resp.did_close

    def is_reuse(self, flags: int, seq: int) -> bool:
        """A SYN on an existing 5-tuple: does it start a new connection?"""
        if not flags & TH_SYN:
            return False
        conn_orig = self.orig
        if flags & TH_ACK:
            if self.orig.state != INACTIVE:
                return False
            conn_orig = self.resp
        if not self.is_closed():
            if seq == conn_orig.start_seq:
                return False
            if (
                not flags & TH_ACK
                and conn_orig.state == SYN_ACK_SENT
                and self.resp.state == INACTIVE
                and seq == self.resp.start_seq
            ):
                return False
        return True

    def checksum_error(self, is_orig: bool) -> None:
        (self.orig if is_orig else self.resp).scaled("C", "chk")

    # -- per packet ----------------------------------------------------------
    def process(self, is_orig: bool, ts: float, flags: int, seq: int, ack: int, window: int,
                length: int, caplen: int) -> None:
        conn = self.conn
        endpoint = self.orig if is_orig else self.resp
        peer = endpoint.peer
        syn, fin, rst, ackf = flags & TH_SYN, flags & TH_FIN, flags & TH_RST, flags & TH_ACK

        # SetPartialStatus
        if endpoint.is_orig:
            if not self.first_packet_seen & 1:
                self.is_partial = (not syn) or bool(ackf)
        elif not self.first_packet_seen & 2 and not self.is_partial:
            self.is_partial = not syn

        seg_len = length + (1 if syn else 0) + (1 if fin else 0)
        if rst:
            seg_len -= length
        seq_end = (seq + seg_len) & M32
        self._init_endpoint(endpoint, syn, seq, seq_end)

        rel_seq, seq_underflow = self._relative(endpoint, seq, endpoint.last_seq, endpoint.seq_wraps)
        if seq_underflow and not rst:
            conn.weird("TCP_seq_underflow_or_misorder")

        self._update_history(endpoint, flags, rel_seq, length)
        self._zero_window(endpoint, window, flags)

        if not self.orig.did_close or not self.resp.did_close:
            conn.last_ts = ts

        if fin:
            endpoint.fin_cnt += 1
            endpoint.fin_seq = (rel_seq + seg_len) & M64

        rel_ack = 0
        if ackf:
            if peer.state == INACTIVE:
                rel_ack = 1
                start = (ack - 1) & M32
                peer.start_seq = peer.ack_seq = peer.last_seq = start
            else:
                rel_ack, ack_underflow = self._relative(peer, ack, peer.ack_seq, peer.ack_wraps)
                if ack_underflow:
                    rel_ack = 0
                    conn.weird("TCP_ack_underflow_or_misorder")
                elif not rst:
                    delta_ack = seq_delta(ack, peer.ack_seq)
                    if not (ack == 0 and delta_ack > TOO_LARGE_SEQ_DELTA) and delta_ack > 0:
                        peer.update_ack_seq(ack)

        self._update_last_seq(endpoint, seq_end, flags, length)

        do_close = self._state_machine(ts, endpoint, peer, seq, ack, length, is_orig, flags)

        if ackf:
            peer.reassembler.ack_received(rel_ack)

        # CheckPIA_FirstPacket
        self.first_packet_seen |= 1 if is_orig else 2

        rel_data_seq = rel_seq + 1 if syn else rel_seq
        if length > 0 and not rst and not seq_underflow and caplen >= length:
            endpoint.reassembler.data_sent(rel_data_seq, length)
        elif length > 0 and not rst and not seq_underflow:
            conn.weird("truncated_tcp_payload")
        endpoint.reassembler.check_eof()

        if do_close:
            self._connection_closed(endpoint, peer)

    # -- helpers (named after Zeek's) ---------------------------------------
    @staticmethod
    def _init_endpoint(e: Endpoint, syn: int, seq: int, seq_end: int) -> None:
        st = e.state
        if st == INACTIVE:
            if syn:
                e.start_seq = e.ack_seq = seq
                e.last_seq = seq_end
            else:
                # Partial connection: number as though a SYN had been seen.
                e.start_seq = e.ack_seq = (seq - 1) & M32
                e.last_seq = seq
        elif st in (SYN_SENT, SYN_ACK_SENT):
            if syn and seq != e.start_seq:
                e.conn.weird("SYN_seq_jump")
                e.init_seqs(seq, seq_end)
        elif st in (ESTABLISHED, PARTIAL):
            if syn:
                if e.size() > 0:
                    e.conn.weird("SYN_inside_connection")
                e.init_seqs(seq, seq_end)
        elif st == RESET:
            if syn and e.prev_state == INACTIVE:
                e.init_seqs(seq, seq_end)

    @staticmethod
    def _relative(e: Endpoint, cur: int, last: int, wraps: int) -> tuple[int, bool]:
        delta = seq_delta(cur, last)
        if delta < 0:
            if wraps and cur > last:
                wraps -= 1
        elif delta > 0:
            if cur < last:
                wraps += 1
        if wraps == 0:
            d = seq_delta(cur, e.start_seq)
            return d & M64, d < 0
        return (((wraps << 32) | cur) - e.start_seq) & M64, False

    @staticmethod
    def _update_history(e: Endpoint, flags: int, rel_seq: int, length: int) -> None:
        syn, fin, rst = flags & TH_SYN, flags & TH_FIN, flags & TH_RST
        bits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
        if bits > 1:
            if fin and rst:
                e.check_history(HIST_FIN_RST, "I")
            else:
                e.check_history(HIST_MULTI_FLAG, "Q")
        elif bits == 1:
            if syn:
                code = "H" if flags & TH_ACK else "S"
                if e.check_history(HIST_SYN, code) and rel_seq != e.hist_last_syn:
                    e.add_history(code)
                e.hist_last_syn = rel_seq
            if fin:
                end = (rel_seq + length) & M64
                if e.check_history(HIST_FIN, "F") and end != e.hist_last_fin:
                    e.add_history("F")
                e.hist_last_fin = end
            if rst:
                if e.check_history(HIST_RST, "R") and rel_seq != e.hist_last_rst:
                    e.add_history("R")
                e.hist_last_rst = rel_seq
        elif length:
            e.check_history(HIST_DATA, "D")
        elif flags & TH_ACK:
            e.check_history(HIST_ACK, "A")

    @staticmethod
    def _zero_window(e: Endpoint, window: int, flags: int) -> None:
        """Zeek's update_window, reduced to what reaches conn.log: the W/w letter (a zero
        window is zero whatever the scale, so scaling need not be tracked)."""
        if window == 0 and not flags & TH_RST and e.peer.state != CLOSED and e.state != RESET:
            e.scaled("W", "win0")

    @staticmethod
    def _update_last_seq(e: Endpoint, seq_end: int, flags: int, length: int) -> None:
        delta = seq_delta(seq_end, e.last_seq)
        if flags & (TH_SYN | TH_RST) and (delta > TOO_LARGE_SEQ_DELTA or delta < -TOO_LARGE_SEQ_DELTA):
            pass
        elif flags & TH_FIN and e.last_seq == ((e.start_seq + 1) & M32):
            e.update_last_seq(seq_end)
        elif e.state == RESET:
            pass
        elif delta > 0:
            e.update_last_seq(seq_end)
        elif length > 0:
            e.scaled("T", "rxmt")

    def _state_machine(self, ts: float, endpoint: Endpoint, peer: Endpoint, seq: int, ack: int,
                       length: int, is_orig: bool, flags: int) -> bool:
        """Zeek's UpdateStateMachine; returns whether this packet closes its side."""
        syn, fin, rst, ackf = flags & TH_SYN, flags & TH_FIN, flags & TH_RST, flags & TH_ACK
        do_close = False
        st = endpoint.state
        conn = self.conn
        if st == INACTIVE:
            if syn:
                if is_orig:
                    endpoint.set_state(SYN_ACK_SENT if ackf else SYN_SENT)
                    conn.schedule(ts + conn.table.config.tcp_attempt_delay, "attempt")
                else:
                    if not ackf and peer.state == SYN_ACK_SENT and seq == endpoint.start_seq:
                        # SYN/SYN-ACK seen in reverse order: flip and establish.
                        self.is_partial = False
                        conn.flip_roles()
                        peer.set_state(ESTABLISHED)
                        self.first_packet_seen |= 1 if endpoint.is_orig else 2
                    if peer.state == SYN_SENT:
                        peer.set_state(ESTABLISHED)
                    endpoint.set_state(ESTABLISHED)
                    if peer.state != PARTIAL:
                        self._established()
            if fin:
                endpoint.set_state(CLOSED)
                do_close = True
            if rst:
                endpoint.set_state(RESET)
                do_close = True
            if endpoint.state == INACTIVE:
                if not is_orig and length == 0 and self.orig.state == SYN_SENT:
                    pass
                elif ackf and peer.state == ESTABLISHED:
                    endpoint.set_state(ESTABLISHED)
                    self.is_partial = False
                    self.first_packet_seen |= 1 if endpoint.is_orig else 2
                else:
                    endpoint.set_state(PARTIAL)
        elif st in (SYN_SENT, SYN_ACK_SENT):
            if fin:
                endpoint.set_state(CLOSED)
                do_close = True
            if rst:
                endpoint.set_state(RESET)
                self.is_active = False
                do_close = True
        elif st in (ESTABLISHED, PARTIAL):
            if syn and st == PARTIAL and peer.state == INACTIVE and not ackf:
                endpoint.set_state(SYN_SENT)
            if fin and not rst:
                endpoint.set_state(CLOSED)
                if peer.state == RESET and peer.prev_state == CLOSED:
                    peer.set_state(CLOSED)
                do_close = True
            if rst:
                endpoint.set_state(RESET)
                do_close = True
                if peer.state != RESET or peer.prev_state != ESTABLISHED:
                    self.is_active = False
        elif st == CLOSED:
            if rst and peer.state != CLOSED:
                endpoint.set_state(RESET)
                if not endpoint.did_close:
                    do_close = True
        return do_close

    def endpoint_eof(self, endpoint: Endpoint) -> None:
        """All of a closing side's data is in: carry out a close that waited for it."""
        if self.close_deferred:
            self._connection_closed(endpoint, endpoint.peer)
            self.close_deferred = False

    def _connection_closed(self, endpoint: Endpoint, peer: Endpoint) -> None:
        if endpoint.reassembler.data_pending():
            # Zeek closes a side only once its data is delivered (or given up as a gap).
            self.close_deferred = True
            return
        self.close_deferred = False
        if endpoint.did_close:
            return
        endpoint.did_close = True
        conn = self.conn
        cfg = conn.table.config
        if endpoint.state == RESET or peer.did_close or peer.state == INACTIVE:
            self.is_active = False
            conn.cancel_analyzer_timers()
            conn.schedule(conn.last_ts + cfg.tcp_close_delay, "delete")
        elif endpoint.prev_state != INACTIVE:
            conn.schedule(conn.last_ts + cfg.tcp_session_timer, "expire")

    # -- timers --------------------------------------------------------------
    def attempt_timer(self) -> bool:
        """True when an unanswered attempt should be removed."""
        return (
            self.is_active
            and self.orig.state in (SYN_SENT, SYN_ACK_SENT)
            and self.resp.state == INACTIVE
        )

    def expire_timer(self, now: float) -> bool | None:
        """True: remove. False: keep and re-arm. None: inactive, nothing to do."""
        if not self.is_active:
            return None
        o, r = self.orig, self.resp
        cfg = self.conn.table.config
        if self.conn.last_ts + cfg.tcp_connection_linger < now:
            if o.did_close or r.did_close:
                if (
                    (o.did_close and r.did_close)
                    or o.state == RESET or r.state == RESET
                    or o.state == INACTIVE or r.state == INACTIVE
                ):
                    self.is_active = False
                    return True
            if r.state == INACTIVE and o.state == INACTIVE:
                return True
        return False

    # -- results -------------------------------------------------------------
    def conn_state(self, history: str) -> str:
        os_, rs = self.orig.state, self.resp.state
        o_inactive = os_ in (INACTIVE, PARTIAL)
        r_inactive = rs in (INACTIVE, PARTIAL)
        if rs == RESET:
            if os_ in (SYN_SENT, SYN_ACK_SENT) or (
                os_ == RESET and self.orig.size() == 0 and self.resp.size() == 0
            ):
                return "REJ"
            return "RSTRH" if o_inactive else "RSTR"
        if os_ == RESET:
            if r_inactive:
                return "RSTOS0" if _is_rstos0(history) else "OTH"
            return "RSTO"
        if rs == CLOSED and os_ == CLOSED:
            return "SF"
        if os_ == CLOSED:
            return "SH" if r_inactive else "S2"
        if rs == CLOSED:
            return "SHR" if o_inactive else "S3"
        if os_ == SYN_SENT and rs == INACTIVE:
            return "S0"
        if os_ == ESTABLISHED and rs == ESTABLISHED:
            return "S1"
        return "OTH"


def _is_rstos0(history: str) -> bool:
    """Zeek's /^?S[^HAFGIQ]*R.*/ against the whole history."""
    h = history[1:] if history.startswith("^") else history
    if not h.startswith("S"):
        return False
    for ch in h[1:]:
        if ch == "R":
            return True
        if ch in "HAFGIQ":
            return False
    return False
