"""The fast engine: capture → packet batches → numba flow table → the reference's analyzers and sinks.

`run_fast` is `pipeline.run` with the flow table replaced by `fast.table.FastFlowTable`.
The kernel hands back an ordered event stream; this module replays it so that everything
outside the table sees the reference's calls in the reference's order:

- a new connection gets its uid from its identity (flow.uid, as FlowTable does) and the
  analyzers' `on_new` (they set up their state; DNS names the connection there);
- packets an application analyzer needs become `on_packet` calls on a `ConnView` proxy:
  the first packet of every UDP flow, every packet of DNS-port UDP flows (where nothing
  else reads them, `kernel_dns_ports`, the messages the kernel parsed go to the DNS
  analyzer instead: the transactions the kernel paired, `fast.dns_pairs`, as
  `kernel_pair`, the other messages as `on_message`), and TCP
  packets that carry payload while the shared stream reassembly (identifiers.stream) may
  still deliver bytes in their direction. This leans on a contract of today's analyzers
  (hooks.AppAnalyzer): on TCP they act only on `tcp_data` bytes, and on no other
  protocol but UDP. So a SYN without payload stays in the kernel, which hands its
  sequence over with the direction's next packet (`stream_start`; a connection's first
  such packet opens the streams at it); a direction nobody wants any more (per
  `TcpStreams`) gets no calls; and bytes every reader of a direction offered to only count (`TcpStreams.offer`)
  are counted by the kernel, which hands the counts over with the connection's next
  EV_PKT, an EV_COUNTED where an offer ends, or its record. An analyzer that needs more
  must widen this filter (the differential test shows when logs drift);
- finished connections become `ConnRecord`s, analyzers' `on_remove`, then the sinks;
- ticks become `on_time`, connection weirds go to `Weirds` with the uid and id.

Rows come from `fast.reader.iter_batches` (the numba parser); its SLOW frames go through
the reference decoder and join the same batch as `packets_to_batch`-style rows, with one
aux word each for what the batch columns lack (checksum verdict, tick, tunnel carrier, the
encapsulation's identity).
A tunnel's inner packet ends a kernel call so its parent is named between calls, as
FlowTable._note_tunnel does before the inner packet's analyzers run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pcapexfil import collection
from pcapexfil.fast.anchors import Gates, build_gates
from pcapexfil.fast.batch import (
    KIND_FAST,
    KIND_SKIP,
    KIND_SLOW,
    PACKET_DTYPE,
    PACKET_FIELDS,
    PACKET_ROW,
    addr_to_halves,
    halves_to_addr,
)
from pcapexfil.fast.dispatch import APP_NONE, DNS_UDP
from pcapexfil.fast.dns import NO_QUESTION, ParsedMessages
from pcapexfil.fast.dns_pairs import DNS_KERNEL, NO_SLOT, OUT_HANDOVER, OUT_MESSAGE, OUT_PAIR, P_OUT
from pcapexfil.fast.events import WEIRD_NAMES
from pcapexfil.fast.http_lane import HEAD_BUFFER, L_ARENA_N, L_EV_N, NO_HEADS, NO_LANE, NO_SEQ
from pcapexfil.fast.http_machine import E_BROKEN, E_DELIVERED, E_NEXT_SEQ, apply_end, apply_events, resume
from pcapexfil.fast.layout import (
    CODE_LANE_LEFT,
    CODE_UDP_ROLES,
    EV_COUNTED,
    EV_DNS,
    EV_EVICT,
    EV_LANE,
    EV_NEW,
    EV_PKT,
    EV_REC,
    EV_TICK,
    EV_WEIRD,
    REC_DTYPE,
)
from pcapexfil.fast.pia_gate import G_RELEASED, M_CHUNKS, M_FLIPPED, NO_WINDOW
from pcapexfil.fast.precompile import start_helper
from pcapexfil.fast.roles import flip_mid_packet
from pcapexfil.fast.table import (
    AUX_BAD_CHECKSUM,
    AUX_CARRIER,
    AUX_DECODED,
    AUX_DTYPE,
    AUX_ENCAP_SHIFT,
    AUX_NO_TICK,
    AUX_PARTIAL,
    FastFlowTable,
)
from pcapexfil.fast.tcp import CONN_STATES
from pcapexfil.flow.ntp_roles import ROLES_FLIP, roles_said, watch_ends
from pcapexfil.flow.table import (
    EVICTED_WEIRD,
    HIST_UNKNOWN_PKT_CODE,
    IP_LEVEL_TUNNEL_PROTOS,
    FlowConfig,
    bare_mode,
    encapsulation_key,
    is_power_of_ten,
    name_carrier,
    tunnel_parent_uid,
)
from pcapexfil.flow.uid import ConnUids
from pcapexfil.hooks import AppAnalyzer, RecordSink
from pcapexfil.identifiers.dns import DnsAnalyzer, WaitingQuery
from pcapexfil.identifiers.dns_header import connection_first_message
from pcapexfil.identifiers.http import HTTP_PORTS, HttpAnalyzer
from pcapexfil.identifiers.stream import STREAM_KEY, TcpStreams, open_streams
from pcapexfil.netconf import NetSet, parse_nets
from pcapexfil.packet import PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP, TH_ACK, Packet
from pcapexfil.record import ConnRecord
from pcapexfil.services.base import PiaWait, joined_wait
from pcapexfil.weird import Weirds

if TYPE_CHECKING:
    from pcapexfil.decode import Decoder
    from pcapexfil.fast.reader import Batch
    from pcapexfil.workers import Share

BATCH_ROWS = 2048
REC_DNS = list(REC_DTYPE.fields or ()).index("dns_mode")  # the last fields: dns_mode, dns_size, dns_pq, dns_head
# PACKET_ROW positions of the fields TcpStreams.count_offered reads.
FLAGS, SEQ, PAYLOAD_LEN, PAYLOAD_CAP = (PACKET_FIELDS.index(name)
                                         for name in ("flags", "seq", "payload_len", "payload_cap"))
_PROTO_NAMES = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp", PROTO_ICMP6: "icmp"}


class StreamPosition(Protocol):
    """Whatever wants to know where in the stream the analyzers are: `row` is the packet's
    number among every row fed to the table (the same in every worker of one capture)."""

    row: int


class FastConn:
    """What analyzers see of a live connection (satisfies hooks.ConnView)."""

    __slots__ = (
        "app",
        "dns_expiry_cancelled",
        "http_in_kernel",
        "ids",
        "inactivity_timeout",
        "is_partial",
        "limit_weirds",
        "limits_reported",
        "orig_h",
        "orig_p",
        "proto",
        "resp_h",
        "resp_p",
        "service",
        "start_ts",
        "tunnel_parents",
        "uid",
        "x_at",
    )

    def __init__(self, uid: str, proto: int, start_ts: float) -> None:
        self.uid = uid
        self.proto = proto
        self.start_ts = start_ts
        self.orig_h = self.resp_h = ""
        self.orig_p = self.resp_p = 0
        self.service: list[str] = []
        self.app: dict[str, Any] = {}
        self.tunnel_parents: list[str] = []
        self.inactivity_timeout: float | None = None  # set by an analyzer, for the kernel's C row
        self.ids: tuple[int, int, int, int] | None = None  # address halves orig_h/resp_h were made from
        self.limit_weirds: list[tuple[str, str | None]] = []  # limit_reached weirds not yet replayed (FastFlow._events)
        self.limits_reported: list[str] = []  # their names so far (Connection.weird: once per name)
        self.x_at: int | None = None  # where an analyzer's 'X' goes in the kernel's history
        self.dns_expiry_cancelled = False  # set by an analyzer, for the kernel's C row
        self.http_in_kernel = False  # the kernel reads its HTTP (fast.http_lane) until it leaves it to Python
        self.is_partial = False  # as of its last EV_PKT or EV_COUNTED (the kernel's CONN_DTYPE.is_partial then)

    def set_inactivity_timeout(self, seconds: float) -> None:
        """hooks.ConnView: FastFlow._events writes it into the kernel's row after the
        analyzers have seen the packet."""
        self.inactivity_timeout = seconds

    def limit_reached(self, weird: str, addl: str | None = None) -> None:
        """hooks.ConnView: FastFlow._events reports the weird and keeps where the 'X' goes
        (the history's length after this packet, from its EV_PKT); _record writes it. A
        name already reported is not again, and its 'X' is in place."""
        if weird not in self.limits_reported:
            self.limits_reported.append(weird)
            self.limit_weirds.append((weird, addl))

    def cancel_dns_expiry(self) -> None:
        """hooks.ConnView: FastFlow._events clears the kernel row's dns_expiry after the
        analyzers have seen the packet."""
        self.dns_expiry_cancelled = True


class FastFlow:
    """The numba table fed in capture order, its outputs sent where FlowTable's go.

    `set_buffer` + `add_fast` for rows the numba parser made, `frame` for a frame the
    reference decoder handled, `flush` at the end of input. Analyzers, sinks and weirds see
    the reference's calls in the reference's order (the pipeline's once-a-second ticks
    included: the kernel makes them, from each frame's time).
    """

    def __init__(self, config: FlowConfig, analyzers: Sequence[AppAnalyzer], sinks: Sequence[RecordSink],
                 weirds: Weirds | None) -> None:
        self.config = config
        self.analyzers = list(analyzers)
        self.sinks = list(sinks)
        self.weirds = weirds
        nets = parse_nets(config.local_nets)
        self.local: NetSet | None = NetSet(nets) if nets else None
        self.uids = ConnUids(config.seed)
        self.stream_users = frozenset(a.name for a in self.analyzers)  # each reads TCP streams (make_analyzers)
        # Told the stream position (rows fed before) of each packet the analyzers handle
        # and of each connection's creation (workers: DNS names replayed in stream order).
        self.positions: StreamPosition | None = None
        self._batch_start = 0
        self.dns = next((a for a in self.analyzers if isinstance(a, DnsAnalyzer)), None)
        self.http = next((a for a in self.analyzers if isinstance(a, HttpAnalyzer)), None)
        # Where the kernel reads HTTP, the streams' readers are the others until it leaves
        # a connection to Python.
        self.lane_users = self.stream_users - {self.http.name} if self.http is not None else self.stream_users
        self.table = FastFlowTable(config, bool(self.analyzers), self._events,
                                   dns_ports=kernel_dns_ports(self.analyzers),
                                   http_ports=kernel_http_ports(self.analyzers),
                                   gates=kernel_gates(self.analyzers))
        start_helper()  # a first run: part of the compile on a second core
        self.conns: dict[int, FastConn] = {}
        self.records = 0
        self.evicted = 0
        # Rows waiting for the kernel: array parts (parsed rows, decoded rows), their aux
        # bytes, the decoder's Packet of each decoded row by row number.
        self._parts: list[np.ndarray] = []
        self._aux_parts: list[np.ndarray] = []
        self._tuples: list[tuple] = []
        self._tuple_aux: list[int] = []
        self._pkts: dict[int, Packet] = {}
        self._n = 0
        self._batch = np.zeros(0, PACKET_DTYPE)
        self._rows = self._batch.view(np.uint8).data  # its bytes, for PACKET_ROW
        self._buf = np.zeros(0, np.uint8)
        self._addr_cache: dict[str, tuple[int, int]] = {}
        self._text_cache: dict[tuple[int, int], str] = {}
        self._tunnel_uids: dict[tuple, str] = {}
        self._last_pkt: Packet | None = None
        self._last_serial = -1
        self._prev: tuple[Packet | None, int] = (None, -1)
        # The DNS messages and the DNS analyzer's rows of the kernel call being replayed, and
        # the HTTP lane's events and arena: Python values made once per call, when first read.
        self._parsed: ParsedMessages | None = None
        self._dns_out: list[tuple] | None = None
        self._lane_read: tuple[list[list[int]], bytes] | None = None

    # -- input ----------------------------------------------------------------------------
    def set_buffer(self, buf: np.ndarray) -> None:
        """The chunk buffer that the FAST rows added next point into (feeds what came before)."""
        self._feed()
        self._buf = buf

    def add_fast(self, rows: np.ndarray) -> None:
        """Rows the numba parser made (FAST and SKIP), one per captured frame."""
        self._flush_tuples()
        pos = 0
        while pos < rows.shape[0]:
            # Kernel calls of a few thousand rows: analyzers that are done with a connection
            # say so between calls, and its later packets then stay in the kernel.
            part = rows[pos : pos + BATCH_ROWS - self._n]
            pos += part.shape[0]
            self._parts.append(part)
            self._aux_parts.append(np.zeros(part.shape[0], AUX_DTYPE))
            self._n += part.shape[0]
            if self._n >= BATCH_ROWS:
                self._feed()

    def frame(self, ts: float, pkts: list[Packet]) -> None:
        """One captured frame (network time `ts`) and what the reference decoder made of it."""
        if len(pkts) == 1 and pkts[0].outer is None and pkts[0].ts == ts:
            self._add(pkts[0], 0)
            if pkts[0].tunnel_type:
                self._name_lone_carrier(pkts[0])
        else:
            self._skip_row(ts)  # the pipeline's tick at the frame's time
            carriers = {id(p.outer) for p in pkts if p.outer is not None} if len(pkts) > 1 else set()
            for pkt in pkts:
                if id(pkt) in carriers and pkt.proto in IP_LEVEL_TUNNEL_PROTOS:
                    self._add(pkt, AUX_NO_TICK | AUX_CARRIER)
                    continue
                self._add(pkt, AUX_NO_TICK)
                if pkt.outer is not None:
                    self._feed()
                    self._note_tunnel(pkt)
                if pkt.tunnel_type and pkt is pkts[-1]:
                    self._name_lone_carrier(pkt)
        if self._n >= BATCH_ROWS:
            self._feed()

    def feed_batch(self, batch: Batch, decoder: Decoder) -> None:
        """One parsed chunk in capture order: FAST rows to the kernel, SLOW frames through the
        reference `decoder` at their place. Every frame of it is processed on return."""
        rows = batch.packets
        self.set_buffer(batch.buf)
        pos = 0
        for j, raw in zip(np.flatnonzero(rows["kind"] == KIND_SLOW).tolist(), batch.slow):
            if j > pos:
                self._fast_rows(rows[pos:j], decoder)
            self.frame(raw.ts, decoder.decode(raw))
            pos = j + 1
        if pos < rows.shape[0]:
            self._fast_rows(rows[pos:], decoder)
        self._feed()

    def _fast_rows(self, rows: np.ndarray, decoder: Decoder) -> None:
        frags = decoder.reassembler
        if frags.pending:
            # The decoder expires held fragments on every frame's time, parsed ones too.
            weirds = self.weirds
            for ts in rows["ts"].tolist():
                if not frags.pending:
                    break
                # expire calls back before it returns: the lambda sees this iteration's ts.
                frags.expire(ts, lambda name, addl: weirds.report(name, ts, addl) if weirds else None)
        self.add_fast(rows)

    def flush(self, now: float) -> None:
        self._feed()
        self.table.flush(now)
        self._tunnel_uids.clear()

    def _halves(self, text: str) -> tuple[int, int]:
        hit = self._addr_cache.get(text)
        if hit is None:
            hit = addr_to_halves(text)
            if len(self._addr_cache) > 200_000:
                self._addr_cache.clear()
            self._addr_cache[text] = hit
        return hit

    def _text(self, hi: int, lo: int) -> str:
        key = (hi, lo)
        hit = self._text_cache.get(key)
        if hit is None:
            hit = halves_to_addr(hi, lo)
            if len(self._text_cache) > 200_000:
                self._text_cache.clear()
            self._text_cache[key] = hit
        return hit

    def _add(self, p: Packet, aux: int) -> None:
        aux |= AUX_DECODED
        if p.checksum_ok is False:
            aux |= AUX_BAD_CHECKSUM
        if p.analysis_partial:
            aux |= AUX_PARTIAL
        if p.outer is not None:
            aux |= encapsulation_key(p) << AUX_ENCAP_SHIFT
        shi, slo = self._halves(p.src)
        dhi, dlo = self._halves(p.dst)
        self._tuples.append((p.ts, 0, KIND_FAST, p.ip_version, p.proto, p.ttl, shi, slo, dhi, dlo, p.sport, p.dport,
                             p.ip_len, p.flags, p.seq, p.ack, p.window, p.payload_len, 0, len(p.payload)))
        self._tuple_aux.append(aux)
        self._pkts[self._n] = p
        self._n += 1

    def _skip_row(self, ts: float) -> None:
        self._tuples.append((ts, 0, KIND_SKIP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        self._tuple_aux.append(0)
        self._n += 1

    def _flush_tuples(self) -> None:
        if self._tuples:
            self._parts.append(np.array(self._tuples, dtype=PACKET_DTYPE))
            self._aux_parts.append(np.array(self._tuple_aux, dtype=AUX_DTYPE))
            self._tuples.clear()
            self._tuple_aux.clear()

    def _packet(self, row: int, fields: tuple) -> Packet:
        """The analyzers' view of batch row `row` (its PACKET_ROW `fields`): the decoder's
        Packet, or one built from a parsed row."""
        p = self._pkts.get(row)
        if p is not None:
            return p
        (ts, _, _, ipv, proto, ttl, shi, slo, dhi, dlo, sport, dport, ip_len, flags, seq, ack, window,
         plen, off, cap) = fields
        text = self._text
        return Packet(ts, text(shi, slo), text(dhi, dlo), proto, ip_len, sport, dport, ipv, ttl, flags, seq, ack,
                      window, plen, self._buf[off : off + cap].tobytes())

    def _feed(self) -> None:
        self._flush_tuples()
        if not self._n:
            return
        parts, auxes = self._parts, self._aux_parts
        if len(parts) == 1:
            batch, aux = parts[0], auxes[0]
        else:
            # Not np.concatenate: it promotes structured dtypes field by field, slowly.
            batch = np.empty(self._n, PACKET_DTYPE)
            aux = np.empty(self._n, AUX_DTYPE)
            pos = 0
            for part, a in zip(parts, auxes):
                batch[pos : pos + part.shape[0]] = part
                aux[pos : pos + part.shape[0]] = a
                pos += part.shape[0]
        self._batch = batch
        self._rows = batch.view(np.uint8).data
        row_conn = self.table.feed(batch, aux, self._buf)
        self._batch_start += batch.shape[0]
        # The last two connection-making packets (FlowTable._last_pkt / _last_conn, as it
        # was after this batch and as it was before its last packet).
        found: list[tuple[Packet | None, int]] = []
        for i in np.flatnonzero(row_conn >= 0)[-2:][::-1]:
            found.append((self._pkts.get(int(i)), int(row_conn[i])))
        if found:
            self._prev = found[1] if len(found) == 2 else (self._last_pkt, self._last_serial)
            self._last_pkt, self._last_serial = found[0]
        parts.clear()
        auxes.clear()
        self._pkts.clear()
        self._n = 0

    def _note_tunnel(self, pkt: Packet) -> None:
        """FlowTable._note_tunnel, for the inner packet the last feed ended with (if it made
        a connection: an IGMP one does not)."""
        inner = self.conns.get(self._last_serial) if self._last_pkt is pkt else None
        prev_pkt, prev_serial = self._prev
        carrier = self.conns.get(prev_serial) if pkt.outer is prev_pkt else None
        uid = tunnel_parent_uid(pkt, carrier, self._tunnel_uids, self.uids.tunnel)
        if inner is not None and uid not in inner.tunnel_parents:
            inner.tunnel_parents.append(uid)

    def _name_lone_carrier(self, pkt: Packet) -> None:
        """flow.table.name_carrier for a tunnel carrier the decoder found no inner packet in
        (the others are named by `_note_tunnel`): the frame's last packet, fed at once."""
        self._feed()
        carrier = self.conns.get(self._last_serial)
        if carrier is not None and self._last_pkt is pkt:
            name_carrier(carrier, pkt)

    # -- the kernel's event stream ----------------------------------------------------------
    def _events(self, ev: np.ndarray, rec: np.ndarray, rh: np.ndarray) -> None:
        conns = self.conns
        analyzers = self.analyzers
        positions, batch_start = self.positions, self._batch_start
        recs: list | None = None
        self._parsed = None
        self._dns_out = None
        self._lane_read = None
        # Column views, not C[c]["field"] (a structured scalar per access); the table
        # grows only between kernel calls, so they stay valid for this call.
        C, E = self.table.flows.conns, self.table.flows.endpoints
        c_serial, c_mode, c_dead, c_orig_ep = C["serial"], C["app_mode"], C["app_dead"], C["orig_ep"]
        c_timeout, c_dns_expiry = C["inactivity_timeout"], C["dns_expiry"]
        e_seq, e_left = E["sk_seq"], E["sk_left"]
        rows, row_size, unpack_row = self._rows, PACKET_ROW.size, PACKET_ROW.unpack_from
        http = self.http
        for (kind, is_orig, code, partial, serial, c, row, ts, start_ts, ohi, olo, rhi, rlo, op, rp, counted_orig,
             counted_resp, stream_start, hist_len, lane, lane_lo, lane_hi, window, dns_lo, dns_hi) in ev.tolist():
            if kind == EV_PKT or kind == EV_COUNTED:
                conn = conns[serial]
                conn.is_partial = partial != 0
                ids = (ohi, olo, rhi, rlo)
                if window != NO_WINDOW:
                    self._gate_replay(conn, window, ids, op, rp)
                st = conn.app.get(STREAM_KEY) if conn.proto == PROTO_TCP else None
                if conn.ids != ids:
                    self._flipped(conn, ids, op, rp)
                if st is not None:
                    # Bytes the kernel counted for the analyzers, up to this point of the stream.
                    if counted_orig:
                        st.orig.counted(counted_orig)
                    if counted_resp:
                        st.resp.counted(counted_resp)
                if kind == EV_PKT:
                    if dns_hi > dns_lo:
                        self._dns_rows(conn, dns_lo, dns_hi, ts)  # the kernel hands its DNS state over
                    if code == CODE_UDP_ROLES and c_serial[c] == serial and self._udp_roles(conn, c, row, is_orig):
                        is_orig = not is_orig  # its sender is the responder now
                    if code == CODE_LANE_LEFT:
                        st = self._http_left(conn, lane, lane_lo, lane_hi, ts)
                        lane_lo = lane_hi
                    if st is None and conn.proto == PROTO_TCP:
                        st = open_streams(conn, self.lane_users if conn.http_in_kernel else self.stream_users)
                    if st is not None:
                        if st.exhausted(is_orig):
                            # Sent before the kernel learned (below) that this direction
                            # gives the analyzers no more bytes: they would return at once.
                            if lane_hi > lane_lo:
                                self._http_read(conn, lane_lo, lane_hi, ts)
                            continue
                        direction = st.orig if is_orig else st.resp
                        if direction.next_seq is None and stream_start >= 0:
                            # Its SYN stayed in the kernel (no payload, nothing to read).
                            direction.next_seq = stream_start
                    fields = unpack_row(rows, row * row_size)
                    # A segment handed over before its readers' offers reached the kernel.
                    if not (st is not None and direction.offers
                            and st.count_offered(bool(is_orig), fields[FLAGS], fields[SEQ], fields[PAYLOAD_LEN],
                                                 fields[PAYLOAD_CAP])):
                        pkt = self._packet(row, fields)
                        if positions is not None:
                            positions.row = batch_start + row
                        for analyzer in analyzers:
                            analyzer.on_packet(conn, bool(is_orig), pkt)
                            if analyzer is http and lane_hi > lane_lo:
                                self._http_read(conn, lane_lo, lane_hi, ts)  # in its place among them
                        if conn.limit_weirds:
                            self._limits_reached(conn, hist_len, ts)
                        if conn.inactivity_timeout is not None and c_serial[c] == serial:
                            c_timeout[c] = conn.inactivity_timeout  # the kernel waits for it (_advance)
                            conn.inactivity_timeout = None
                        if conn.dns_expiry_cancelled and c_serial[c] == serial:
                            c_dns_expiry[c] = False  # the kernel waits for it too (_advance)
                    elif lane_hi > lane_lo:
                        self._http_read(conn, lane_lo, lane_hi, ts)
                # The TCP analyzers only act on stream bytes: an exhausted direction gives
                # them none, so its packets stay in the kernel; bytes they offered to leave
                # uncounted, the kernel counts.
                if st is not None and c_serial[c] == serial:
                    if not (st.orig_wanted or st.resp_wanted):
                        c_mode[c] = APP_NONE
                    else:
                        c_dead[c] = (1 if st.exhausted(True) else 0) | (2 if st.exhausted(False) else 0)
                        o = 2 * c + int(c_orig_ep[c])
                        e_seq[o], e_left[o] = st.count_window(True)
                        e_seq[o ^ 1], e_left[o ^ 1] = st.count_window(False)
            elif kind == EV_DNS:
                conn = conns[serial]
                ids = (ohi, olo, rhi, rlo)
                if conn.ids != ids:
                    self._flipped(conn, ids, op, rp)  # the kernel applied the first message's rule
                if positions is not None:
                    positions.row = batch_start + row
                # A parsed message neither cancels the DNS expiry nor reaches a limit
                # (`DnsAnalyzer.on_message`).
                self._dns_rows(conn, dns_lo, dns_hi, ts)
            elif kind == EV_LANE:
                conn = conns[serial]
                ids = (ohi, olo, rhi, rlo)
                if conn.ids != ids:
                    self._flipped(conn, ids, op, rp)
                self._http_read(conn, lane_lo, lane_hi, ts)
            elif kind == EV_NEW:
                orig_h, resp_h = self._text(ohi, olo), self._text(rhi, rlo)
                conn = conns[serial] = FastConn(self.uids.conn(code, orig_h, op, resp_h, rp, start_ts), code, start_ts)
                conn.ids = (ohi, olo, rhi, rlo)
                conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p = orig_h, op, resp_h, rp
                if positions is not None:
                    positions.row = batch_start + row
                for analyzer in analyzers:
                    analyzer.on_new(conn)
                if lane != NO_LANE:
                    assert http is not None
                    conn.http_in_kernel = True
                    http.read_by_kernel(conn)
            elif kind == EV_REC:
                if recs is None:
                    recs = rec.tolist()
                conn = conns.pop(serial)
                if lane >= 0:
                    self._http_ended(conn, lane)
                r = recs[row]
                dns_mode, dns_size, dns_pq, dns_head = r[REC_DNS:]
                if dns_mode == DNS_KERNEL and dns_pq != NO_SLOT:
                    # Its queries still waiting: the analyzer writes them at on_remove.
                    assert self.dns is not None
                    self.dns.kernel_handover(conn, dns_size, self._waiting(dns_pq, dns_head))
                self._record(conn, r, rh[row])
            elif kind == EV_TICK:
                self.uids.expire(ts)
                for sink in self.sinks:
                    sink.on_time(ts)
            elif kind == EV_WEIRD:
                if self.weirds is not None:
                    self.weirds.report(WEIRD_NAMES[code], ts, uid=conns[serial].uid,
                                       conn_id=(self._text(ohi, olo), op, self._text(rhi, rlo), rp))
            elif kind == EV_EVICT:
                self.evicted += 1
                w = self.weirds
                if w is not None:
                    if is_power_of_ten(self.evicted):
                        w.report(EVICTED_WEIRD, ts,
                                 f"{self.evicted} connection(s) evicted so far, table full at {self.config.max_flows}",
                                 uid=conns[serial].uid,
                                 conn_id=(self._text(ohi, olo), op, self._text(rhi, rlo), rp))
                    else:
                        w.counts[EVICTED_WEIRD] += 1

    def _udp_roles(self, conn: FastConn, c: int, row: int, is_orig: int) -> bool:
        """FlowTable's UDP role rules (`_dns_first_message`, `_ntp_message`) for a decoded
        frame, whose bytes the kernel does not have (CODE_UDP_ROLES: the kernel call ended
        after it); True if the roles flipped."""
        pkt = self._packet(row, PACKET_ROW.unpack_from(self._rows, row * PACKET_ROW.size))
        C = self.table.flows.conns
        from_orig = bool(is_orig)
        if C["dns_first"][c]:
            first = connection_first_message(conn, pkt.payload, from_orig)
            if first is None:
                return False
            C["dns_first"][c] = False
            flip = first
        else:
            said = roles_said(pkt.payload, from_orig)
            if watch_ends(said, max(int(C["orig_len"][c]), 0) + max(int(C["resp_len"][c]), 0)):
                C["ntp_roles"][c] = False
            flip = said == ROLES_FLIP
        if not flip:
            return False
        flip_mid_packet(self.table.flows, c, from_orig, pkt.ip_len)
        assert conn.ids is not None
        ohi, olo, rhi, rlo = conn.ids
        self._flipped(conn, (rhi, rlo, ohi, olo), conn.resp_p, conn.orig_p)
        return True

    # -- DNS the kernel pairs (fast.dns_pairs) -----------------------------------------------
    def _dns_rows(self, conn: FastConn, lo: int, hi: int, ts: float) -> None:
        """The DNS analyzer's rows for one event: a transaction the kernel paired, a message
        for the analyzer to pair, or the kernel's state handed over."""
        dns = self.dns
        assert dns is not None
        if self._dns_out is None:
            Q = self.table.pairs
            self._dns_out = Q.out[: Q.ints[P_OUT]].tolist()
        if self._parsed is None:
            self._parsed = ParsedMessages(self.table.dns)
        parsed = self._parsed
        for what, size, m, slot, head, q_ts, tid, flags, q_off, q_len, qtype, qclass in self._dns_out[lo:hi]:
            if what == OUT_PAIR:
                question = None
                if q_len != NO_QUESTION:
                    question = (parsed.arena[q_off : q_off + q_len].decode("utf-8", "surrogateescape"), qtype, qclass)
                dns.kernel_pair(conn, WaitingQuery(q_ts, tid, flags, question), parsed.message(m), ts)
            elif what == OUT_MESSAGE:
                dns.on_message(conn, parsed.message(m), size, ts)
            else:
                assert what == OUT_HANDOVER
                dns.kernel_handover(conn, size, self._waiting(slot, head))

    def _waiting(self, first: int, head: int) -> list[WaitingQuery]:
        """A connection's waiting queries: its `dns_pq`, then its list from `head`."""
        out = []
        if first != NO_SLOT:
            out.append(self._waiting_query(first))
        nxt = self.table.pairs.pairs["next"]
        while head != NO_SLOT:
            after = int(nxt[head])
            out.append(self._waiting_query(head))
            head = after
        return out

    def _waiting_query(self, slot: int) -> WaitingQuery:
        """The query in pool slot `slot`, which goes back to the kernel."""
        Q = self.table.pairs
        ts, tid, flags, q_len, qtype, qclass, _ = Q.pairs[slot].tolist()
        question = None
        if q_len != NO_QUESTION:
            question = (Q.names[slot, :q_len].tobytes().decode("utf-8", "surrogateescape"), qtype, qclass)
        self.table.dns_free(slot)
        return WaitingQuery(ts, tid, flags, question)

    # -- HTTP the kernel reads (fast.http_lane) ---------------------------------------------
    def _http_read(self, conn: FastConn, lo: int, hi: int, ts: float) -> None:
        """The HTTP analyzer does what the kernel read in one segment (events lo .. hi)."""
        assert self.http is not None
        if self._lane_read is None:
            lane = self.table.lane
            self._lane_read = (lane.events[: lane.ints[L_EV_N]].tolist(), lane.arena[: lane.ints[L_ARENA_N]].tobytes())
        events, arena = self._lane_read
        apply_events(self.http, conn, events[lo:hi], arena, ts)

    def _http_left(self, conn: FastConn, row: int, lo: int, hi: int, ts: float) -> TcpStreams:
        """The kernel left the connection's HTTP to Python at this segment: the analyzer
        takes over its state, the streams go on where the kernel's were, with HTTP
        reading them again; the row goes back to the kernel."""
        lane, http = self.table.lane, self.http
        assert http is not None
        self._http_read(conn, lo, hi, ts)  # the counts up to here; HE_LEFT is last
        buffer = lane.stream[row, HEAD_BUFFER]
        resume(http, conn, lane.state[row], lane.sides[row], lane.lines[row],
               lane.heads[buffer] if buffer != NO_HEADS else lane.no_heads)
        assert self._lane_read is not None
        left = self._lane_read[0][hi - 1]  # made by the `_http_read` above
        st = conn.app.get(STREAM_KEY)
        if st is None and lane.gate.rows[row, G_RELEASED]:
            # The others were done at the PIA's last chunk, which the kernel saw (fast.pia_gate).
            for analyzer in self.analyzers:
                if analyzer is not http:
                    analyzer.pia_released(conn)
            st = open_streams(conn, frozenset())
        elif st is None:
            st = open_streams(conn, self.lane_users)
        for k, direction in enumerate((st.orig, st.resp)):
            seq = left[E_NEXT_SEQ + k]
            direction.next_seq = None if seq == NO_SEQ else seq
            direction.delivered = left[E_DELIVERED + k]
            direction.broken = bool(left[E_BROKEN + k])
        st.orig_wanted.add(http.name)
        st.resp_wanted.add(http.name)
        conn.http_in_kernel = False
        self.table.lane_free(row)
        return st

    def _gate_replay(self, conn: FastConn, window: int, ids: tuple[int, int, int, int], orig_p: int,
                     resp_p: int) -> None:
        """The kernel's PIA gate ended at this packet (fast.pia_gate): the analyzers read the
        chunks it kept, in order, as they would have from their packets, under the roles
        of then; the buffer goes back."""
        gate = self.table.lane.gate
        if gate.meta[window, M_FLIPPED]:  # the roles of then: the others
            ids, orig_p, resp_p = (ids[2], ids[3], ids[0], ids[1]), resp_p, orig_p
        if conn.ids != ids:
            self._flipped(conn, ids, orig_p, resp_p)
        if conn.app.get(STREAM_KEY) is None:
            open_streams(conn, self.lane_users)
        data = gate.windows[window]
        at = 0
        for (is_orig, length, seq), ts in zip(gate.chunks[window, : gate.meta[window, M_CHUNKS]].tolist(),
                                              gate.chunk_ts[window].tolist()):
            src, dst, sport, dport = ((conn.orig_h, conn.resp_h, conn.orig_p, conn.resp_p) if is_orig
                                      else (conn.resp_h, conn.orig_h, conn.resp_p, conn.orig_p))
            pkt = Packet(ts, src, dst, PROTO_TCP, 0, sport, dport, flags=TH_ACK, seq=seq, payload_len=length,
                         payload=data[at : at + length].tobytes())
            at += length
            for analyzer in self.analyzers:
                analyzer.on_packet(conn, bool(is_orig), pkt)
        self.table.window_free(window)

    def _http_ended(self, conn: FastConn, row: int) -> None:
        """The connection's record is next: what the kernel counted since its last event
        goes to the transactions; the row goes back."""
        lane = self.table.lane
        assert self.http is not None
        apply_end(self.http, conn, lane.state[row], lane.sides[row])
        self.table.lane_free(row)

    def _flipped(self, conn: FastConn, ids: tuple[int, int, int, int], orig_p: int, resp_p: int) -> None:
        """The kernel swapped the connection's roles since its last event: so do its view
        and its stream reassembly (flow.table.Connection.flip_roles)."""
        conn.ids = ids
        conn.orig_h, conn.resp_h = self._text(ids[0], ids[1]), self._text(ids[2], ids[3])
        conn.orig_p, conn.resp_p = orig_p, resp_p
        st = conn.app.get(STREAM_KEY)
        if st is not None:
            st.flip()

    def _limits_reached(self, conn: FastConn, hist_len: int, ts: float) -> None:
        """Connection.limit_reached for the analyzers' calls on this packet: the weirds now,
        the 'X' (once) where the history ended after the packet."""
        if conn.x_at is None:
            conn.x_at = hist_len
        if self.weirds is not None:
            for name, addl in conn.limit_weirds:
                self.weirds.report(name, ts, addl, uid=conn.uid,
                                   conn_id=(conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p))
        conn.limit_weirds.clear()

    def _record(self, conn: FastConn, r: tuple, hist: np.ndarray) -> None:
        (_, ts, duration, ohi, olo, rhi, rlo, op, rp, proto, state, ob, rb, missed,
         opk, oipb, rpk, ripb, hlen, counted_orig, counted_resp) = r[:REC_DNS]
        ids = (ohi, olo, rhi, rlo)
        if conn.ids != ids:
            self._flipped(conn, ids, op, rp)
        if counted_orig or counted_resp:
            st = conn.app[STREAM_KEY]
            if counted_orig:
                st.orig.counted(counted_orig)
            if counted_resp:
                st.resp.counted(counted_resp)
        orig_h, resp_h = conn.orig_h, conn.resp_h
        has_duration = duration > 0
        local = self.local
        rec = ConnRecord(
            ts=ts, uid=conn.uid, orig_h=orig_h, orig_p=op, resp_h=resp_h, resp_p=rp,
            proto=_PROTO_NAMES.get(proto, "unknown_transport"),
            service=list(conn.service),
            duration=duration if has_duration else None,
            orig_bytes=ob if has_duration else None,
            resp_bytes=rb if has_duration else None,
            conn_state=CONN_STATES[state],
            local_orig=(orig_h in local) if local is not None else None,
            local_resp=(resp_h in local) if local is not None else None,
            missed_bytes=missed,
            history=_with_analyzer_x(hist[:hlen].tobytes().decode("ascii"), conn.x_at),
            orig_pkts=opk, orig_ip_bytes=oipb, resp_pkts=rpk, resp_ip_bytes=ripb,
            tunnel_parents=list(conn.tunnel_parents),
            ip_proto=proto,
        )
        for analyzer in self.analyzers:
            analyzer.on_remove(conn, rec)
        conn.app.clear()  # its states may refer back to it (offer callbacks): no cycle to collect
        rec.service = list(conn.service)
        self.records += 1
        for sink in self.sinks:
            sink.on_record(rec)


def _with_analyzer_x(history: str, x_at: int | None) -> str:
    """The kernel's history with an analyzer's 'X' at `x_at`. Only the first 'X' counts
    (CheckHistory(HIST_UNKNOWN_PKT, 'X')): a kernel 'X' (tunnel changes) from a later
    packet gives way, one from an earlier or the same packet stays."""
    if x_at is None:
        return history
    k = history.find(HIST_UNKNOWN_PKT_CODE)
    if 0 <= k < x_at:
        return history
    if k >= 0:
        history = history[:k] + history[k + 1 :]
    return history[:x_at] + HIST_UNKNOWN_PKT_CODE + history[x_at:]


def kernel_dns_ports(analyzers: Sequence[AppAnalyzer]) -> np.ndarray | None:
    """The DNS UDP ports whose datagrams the kernel may parse for the DNS analyzer: those
    where no other analyzer reads datagrams (`AppAnalyzer.reads_datagrams`; one that does
    not say is taken to read them all). None without a DNS analyzer."""
    if not any(isinstance(a, DnsAnalyzer) for a in analyzers):
        return None
    ports = DNS_UDP.copy()
    for port in np.flatnonzero(DNS_UDP).tolist():
        for a in analyzers:
            reads = getattr(a, "reads_datagrams", None)
            if not isinstance(a, DnsAnalyzer) and (reads is None or reads(port)):
                ports[port] = False
    return ports


def kernel_http_ports(analyzers: Sequence[AppAnalyzer]) -> np.ndarray | None:
    """The TCP ports whose connections' HTTP the kernel reads (fast.http_lane): HTTP's
    registered ports, where the analyzer attaches by the port. None without it."""
    if not any(isinstance(a, HttpAnalyzer) for a in analyzers):
        return None
    ports = np.zeros(65536, np.bool_)
    ports[sorted(HTTP_PORTS)] = True
    return ports


def kernel_gates(analyzers: Sequence[AppAnalyzer]) -> Gates | None:
    """The automata of the HTTP lane's ports where every other analyzer only keeps bytes
    while the PIA's windows hold no anchor of its gates (`AppAnalyzer.pia_gate`): the
    kernel keeps those packets (fast.pia_gate), and where all of them are done at the
    PIA's end, ends their wait itself. None where no port qualifies."""
    if not any(isinstance(a, HttpAnalyzer) for a in analyzers):
        return None
    ports: dict[int, PiaWait] = {}
    for port in sorted(HTTP_PORTS):
        waits = []
        for a in analyzers:
            if isinstance(a, HttpAnalyzer):
                continue
            ask = getattr(a, "pia_gate", None)
            wait = ask(port) if ask is not None else None
            if wait is None:
                break
            waits.append(wait)
        else:
            ports[port] = joined_wait(waits)
    return build_gates(ports) if ports else None


def warm_up(verify_checksums: bool = False) -> None:
    """Load the numba kernels (0.3-1 s; compile them, on a first run) before capture starts:
    a live ring fills while the first packets wait for them. Runs one TCP SYN through a
    throwaway table, its frame in a read-only buffer as ring blocks and files give them
    (numba compiles a kernel per argument type: a writable one would be another)."""
    import dpkt

    from pcapexfil.decode import Decoder
    from pcapexfil.fast.reader import Chunk, parse_chunk
    from pcapexfil.fast.ring import block_chunk

    syn = dpkt.tcp.TCP(sport=1, dport=2, flags=dpkt.tcp.TH_SYN)
    ip = dpkt.ip.IP(src=bytes(4), dst=bytes(4), p=dpkt.ip.IP_PROTO_TCP, data=syn)
    frame = bytes(dpkt.ethernet.Ethernet(data=ip))
    chunk = Chunk(np.frombuffer(frame, np.uint8), np.zeros(1, np.int64), np.array([len(frame)], np.uint32),
                  np.array([len(frame)], np.uint32), np.ones(1, np.int32), np.ones(1, np.float64),
                  np.ones(1, np.uint64), "warm-up")
    flow = FastFlow(FlowConfig(), [], [], None)
    flow.feed_batch(parse_chunk(chunk, verify_checksums), Decoder(Weirds()))
    flow.flush(1.0)
    block_chunk(np.zeros(0, np.uint8), 0, 0, 0, 1, "", 0)  # the ring block walk (no frames)


def run_fast(paths: Sequence[str], options: Any, sinks: list[RecordSink], share: Share | None = None) -> Any:
    """`pipeline.run` on the fast engine (same arguments, same outputs). With `share`
    (a `workers.Share`), one worker's run: rows of the connections it does not own are
    marked KIND_FOREIGN before the table sees them, uids and weirds note ownership."""
    from pcapexfil.decode import Decoder
    from pcapexfil.fast.reader import iter_batches
    from pcapexfil.pipeline import RunScaffold, RunSummary
    from pcapexfil.source import CaptureStats

    scaffold = RunScaffold(options, sinks, share)
    weirds, analyzers, sinks = scaffold.weirds, scaffold.analyzers, scaffold.sinks
    stats = CaptureStats()
    batches = iter_batches(list(paths), weirds, stats, verify_checksums=options.verify_checksums,
                           capture_filter=options.capture_filter)
    decoder = Decoder(weirds, verify_checksums=options.verify_checksums)
    config = FlowConfig(local_nets=options.local_nets, seed=options.seed, weirds=weirds,
                        max_flows=options.max_flows, **bare_mode(options.zeek_bare_mode))
    flow = FastFlow(config, analyzers, sinks, weirds)
    if share is not None:
        flow.uids = share.uids(options.seed)
        flow.positions = share.names
        for analyzer in analyzers:
            if isinstance(analyzer, DnsAnalyzer):
                analyzer.deferred = share.names
    progress = scaffold.start_progress(stats)
    count = 0
    now = 0.0
    pace = collection.relax()
    try:
        for batch in batches:
            rows = batch.packets
            if not rows.shape[0]:
                continue
            count += rows.shape[0]
            now = max(now, float(rows["ts"].max()))
            if share is not None:
                share.mark(rows)
            flow.feed_batch(batch, decoder)
            progress.update(stats.bytes)
        flow.flush(now)
        for sink in sinks:
            sink.on_time(now)
    finally:
        try:
            scaffold.close(now)
        finally:
            collection.restore(pace)
    return RunSummary(packets=count, records=flow.records, weirds=dict(weirds.counts))
