"""The flow table: packets in, Zeek conn.log records out, as connections end.

Connection identity, originator choice, timers and per-protocol counters follow Zeek's
session manager and IP-based analyzers (src/session/Manager.cc,
src/packet_analysis/protocol/{ip,tcp,udp,icmp}); see docs/corpus-differences.md for
where pcapexfil still differs. Memory is bounded by the number of live connections:
a record is emitted (and forgotten) when Zeek would raise connection_state_remove.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pcapexfil.flow.ntp_roles import ROLES_FLIP, roles_said, watch_ends
from pcapexfil.flow.ports import (
    LIKELY_SERVER_PORTS,
    Port,
    is_likely_server_port,
    registered_analyzers,
    registered_ports,
)
from pcapexfil.flow.tcp import TCPAdapter
from pcapexfil.flow.uid import ConnUids
from pcapexfil.hooks import AppAnalyzer, ConnView
from pcapexfil.identifiers.dns_header import HEADER_LEN, connection_first_message
from pcapexfil.identifiers.stream import STREAM_KEY
from pcapexfil.netconf import PRIVATE_NETS, NetSet, parse_nets
from pcapexfil.packet import (
    PROTO_ICMP,
    PROTO_ICMP6,
    PROTO_IGMP,
    PROTO_TCP,
    PROTO_UDP,
    TH_ACK,
    TH_RST,
    TH_SYN,
    Packet,
)
from pcapexfil.record import ConnRecord
from pcapexfil.weird import Weirds

# ICMP types whose reply belongs to the same connection (Zeek's ICMP4_counterpart /
# ICMP6_counterpart); every other type is one-way and keyed by (type, code).
ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
ICMP6_PAIRS = {128: 129, 129: 128, 130: 131, 131: 130, 133: 134, 134: 133, 135: 136, 136: 135,
               139: 140, 140: 139, 144: 145, 145: 144, 146: 147, 147: 146}  # fmt: skip

# Outer packets of these IP protocols carry a tunnel but are no connection of their own
# (IP-in-IP, IPv6-in-IP, GRE, EtherIP): Zeek names them by a tunnel uid instead.
IP_LEVEL_TUNNEL_PROTOS = frozenset({4, 41, 47, 97})

# Tunnel::max_changes_per_connection (init-bare.zeek, default 5): Connection::CheckEncapsulation
# raises tunnel_changed this many times per connection; a later change is the weird below
# and an 'X' in the history (HIST_UNKNOWN_PKT).
TUNNEL_MAX_CHANGES_PER_CONNECTION = 5
TUNNEL_CHANGES_WEIRD = "tunnel_max_changes_per_connection_exceeded"
# src/session/Session.h, session::detail::HIST_UNKNOWN_PKT: the history bit of 'X', which Zeek
# writes (once, upper-case whatever the direction) when analysis is partial: a limit reached
# (Analyzer::LimitReachedWeird), a tunnel nested too deep, too many tunnel changes.
HIST_UNKNOWN_PKT = 0x400
HIST_UNKNOWN_PKT_CODE = "X"
# The key's width: the fast engine carries it above 8 flag bits of a 64-bit word.
_ENCAP_KEY_MASK = (1 << 56) - 1


def encapsulation_key(pkt: Packet) -> int:
    """An identity of the packet's encapsulation stack, 0 for none: what Zeek's
    EncapsulationStack comparison (TunnelEncapsulation.h, operator==) tells apart. Per
    level: the tunnel type and, for a tunnel over IP, the address pair in either order;
    for one over UDP, the carrier connection's endpoints (Zeek compares its uid: a carrier
    that expired and came back on the same 5-tuple counts as the same here). GRE over UDP,
    whose carrier the decoder leaves without a tunnel name (decode.tunnels.udp_tunnel), is
    a tunnel over IP for Zeek too: the GRE analyzer hands it to IPTunnel, which names it
    by the outer address pair."""
    if pkt.outer is None:
        return 0
    levels: list[tuple] = []
    o: Packet | None = pkt.outer
    while o is not None:
        if o.proto in IP_LEVEL_TUNNEL_PROTOS or o.tunnel_type is None:
            levels.append((o.tunnel_type, *sorted((o.src, o.dst))))
        else:
            levels.append((o.tunnel_type, o.proto, *sorted(((o.src, o.sport), (o.dst, o.dport)))))
        o = o.outer
    return (hash(tuple(levels)) & _ENCAP_KEY_MASK) or 1

Emit = Callable[[ConnRecord], None]

# Flow table cap. A live connection costs about 4.6 KB in the full pipeline (Connection, TCP
# endpoints, timers, analyzer state; measured with 100k half-open flows by benchmarks/flood.py),
# so 250k connections is ~1.2 GB: well above what a link this single-process engine can keep
# up with holds open within the 5-minute TCP timeout, yet a bound that a scan or SYN flood
# with random ports cannot push past.
DEFAULT_MAX_FLOWS = 250_000
# Weird counted for every connection evicted because the table was full; logged to
# weird.log at the 1st, 10th, 100th ... eviction so a flood cannot flood the log too.
EVICTED_WEIRD = "flow_table_full_evicted"
# scripts/base/init-bare.zeek: `const dns_session_timeout = 10 sec &redef;`
DNS_SESSION_TIMEOUT = 10.0
# DNS_Analyzer::ExpireTimer (src/analyzer/protocol/dns/DNS.cc) removes the session when it
# has been idle for dns_session_timeout less this slack ("allow 1 second for the common case
# of a single request followed by a single reply").
DNS_EXPIRE_SLACK = 1.0
# scripts/base/protocols/conn/inactivity.zeek: port_inactivity_timeouts and
# analyzer_inactivity_timeouts give interactive services 1 hrs.
INTERACTIVE_INACTIVITY_TIMEOUT = 3600.0
PORT_INACTIVITY_PORTS = frozenset({21, 22, 23, 513})  # ftp, ssh, telnet, rlogin (all /tcp)
NTP_PORTS = registered_ports("ntp", PROTO_UDP)
# analyzer_inactivity_timeouts: on analyzer_confirmation_info for these analyzers (any port)
# the script calls set_inactivity_timeout (ConnView.set_inactivity_timeout).
ANALYZER_INACTIVITY_TIMEOUTS: dict[str, float] = {
    "ssh": INTERACTIVE_INACTIVITY_TIMEOUT,
    "ftp": INTERACTIVE_INACTIVITY_TIMEOUT,
}


def bare_mode(bare: bool) -> dict[str, Any]:
    """FlowConfig settings of a bare Zeek run (`zeek -b`, loading base/protocols/conn and
    no protocol script): likely_server_ports stays as init-bare.zeek declares it (empty) and
    no DNS or NTP analyzer is registered for their ports (no DNS expiry timer, no NTP role
    rule). Zeek's tests use it."""
    return {"likely_server_ports": frozenset(), "dns_session_timeout": 0.0, "ntp_ports": frozenset()} if bare else {}


@dataclass(slots=True)
class FlowConfig:
    """Zeek's defaults from scripts/base/init-bare.zeek."""

    tcp_inactivity_timeout: float = 300.0
    udp_inactivity_timeout: float = 60.0
    icmp_inactivity_timeout: float = 60.0
    unknown_inactivity_timeout: float = 60.0
    tcp_attempt_delay: float = 5.0
    tcp_close_delay: float = 5.0
    tcp_syn_timeout: float = 5.0
    tcp_session_timer: float = 6.0
    tcp_connection_linger: float = 5.0
    local_nets: Sequence[str] = PRIVATE_NETS
    seed: int | None = None
    weirds: Weirds | None = field(default=None, repr=False)
    # Not Zeek: at this many live connections the least recently active one is ended
    # (its record emitted, as at an inactivity timeout) to make room. None: no cap.
    max_flows: int | None = DEFAULT_MAX_FLOWS
    # Zeek's likely_server_ports (flow.ports): the base scripts' set by default; a Zeek run
    # in bare mode (`zeek -b`) has an empty one.
    likely_server_ports: frozenset[Port] = LIKELY_SERVER_PORTS
    # init-bare.zeek's dns_session_timeout: the DNS analyzer's expiry of idle UDP sessions
    # (DNS_Analyzer::ExpireTimer); 0: no DNS analyzer on the DNS ports (bare mode).
    dns_session_timeout: float = DNS_SESSION_TIMEOUT
    # scripts/base/protocols/conn/inactivity.zeek, port_inactivity_timeouts: TCP ports whose
    # connections get this inactivity timeout once established (every entry of Zeek's
    # default table has the same value, 1 hr).
    port_inactivity_ports: frozenset[int] = PORT_INACTIVITY_PORTS
    # UDP responder ports the NTP analyzer is attached on (ntp/main.zeek's registration;
    # none in bare mode): its role rule (flow.ntp_roles).
    ntp_ports: frozenset[int] = NTP_PORTS
    port_inactivity_timeout: float = INTERACTIVE_INACTIVITY_TIMEOUT


class Connection:
    """A live connection; what analyzers see (satisfies hooks.ConnView)."""

    __slots__ = (
        "table", "key", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto",
        "start_ts", "last_ts", "service", "app", "history", "hist_seen",
        "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "missed_bytes",
        "tunnel_parents", "tcp", "orig_len", "resp_len", "counters",
        "inactivity_timeout", "timer_gen", "removed", "weirds_seen", "encap", "tunnel_changes",
        "dns_expiry", "dns_first", "ntp_roles",
    )  # fmt: skip

    def __init__(self, table: FlowTable, key: tuple, uid: str, pkt: Packet, sport: int, dport: int,
                 timeout: float) -> None:
        self.table = table
        self.key = key
        self.uid = uid
        self.orig_h, self.orig_p, self.resp_h, self.resp_p = pkt.src, sport, pkt.dst, dport
        self.proto = pkt.proto
        self.start_ts = self.last_ts = pkt.ts
        self.service: list[str] = []
        self.app: dict[str, Any] = {}
        self.history: list[str] = []
        self.hist_seen = 0
        self.orig_pkts = self.orig_ip_bytes = self.resp_pkts = self.resp_ip_bytes = 0
        self.missed_bytes = 0
        self.tunnel_parents: list[str] = []
        self.tcp: TCPAdapter | None = None
        self.orig_len = self.resp_len = -1  # UDP/ICMP payload sums; -1: nothing seen
        self.counters: dict[str, list[int]] = {}  # connection-level scaled history (UDP 'C')
        self.inactivity_timeout = timeout
        self.timer_gen = 0  # bumped to cancel the TCP analyzer's timers
        self.removed = False
        self.weirds_seen: set[str] | None = None
        self.encap = encapsulation_key(pkt)  # Zeek's Connection::encapsulation, as a key
        self.tunnel_changes = 0
        self.dns_expiry = True  # DNS_Analyzer::ExpireTimer still pending (cancel_dns_expiry)
        self.dns_first = False  # a DNS analyzer is attached and has not had its first message
        self.ntp_roles = False  # an NTP analyzer is attached and may still flip the roles

    @property
    def is_partial(self) -> bool:
        """hooks.ConnView.is_partial: the TCP adapter's (TCPSessionAdapter::SetPartialStatus)."""
        return self.tcp is not None and self.tcp.is_partial

    def set_inactivity_timeout(self, seconds: float) -> None:
        """hooks.ConnView (Zeek's set_inactivity_timeout). The pending inactivity timer fires
        at the old due time and re-arms at last_ts + the new timeout (_fire), which is where
        Zeek's Session::SetInactivityTimeout puts its new timer when the timeout grows."""
        self.inactivity_timeout = seconds

    # -- history (Zeek's Connection::CheckHistory / ScaledHistoryEntry) --------
    def check_history(self, mask: int, code: str) -> bool:
        """Record `code` the first time `mask` is seen; True if it was seen before."""
        if self.hist_seen & mask:
            return True
        self.hist_seen |= mask
        self.history.append(code)
        return False

    def limit_reached(self, weird: str, addl: str | None = None) -> None:
        """hooks.ConnView: Analyzer::LimitReachedWeird (src/analyzer/Analyzer.cc), from an
        analyzer while it reads this connection's current packet."""
        self.weird(weird, addl)
        self.check_history(HIST_UNKNOWN_PKT, HIST_UNKNOWN_PKT_CODE)

    def cancel_dns_expiry(self) -> None:
        """hooks.ConnView: the pending dns_expire timer is dropped when it fires (_fire)."""
        self.dns_expiry = False

    def check_encapsulation(self, key: int) -> None:
        """Connection::CheckEncapsulation (src/Conn.cc), for a packet of this connection
        whose encapsulation differs: tunnel_changed up to the limit, then the weird and 'X'."""
        if self.tunnel_changes >= TUNNEL_MAX_CHANGES_PER_CONNECTION:
            self.weird(TUNNEL_CHANGES_WEIRD)
            self.check_history(HIST_UNKNOWN_PKT, HIST_UNKNOWN_PKT_CODE)
        else:
            self.tunnel_changes += 1
        self.encap = key

    def scaled_history(self, code: str, counters: dict[str, list[int]], name: str) -> None:
        """Record `code` at the 1st, 10th, 100th ... occurrence."""
        entry = counters.get(name)
        if entry is None:
            entry = counters[name] = [0, 1]
        entry[0] += 1
        if entry[0] == entry[1]:
            self.history.append(code)
            entry[1] *= 10

    def flip_addresses(self) -> None:
        """Connection::FlipRoles' own part: addresses and ports swap and '^' is noted."""
        self.history.append("^")
        self.orig_h, self.resp_h = self.resp_h, self.orig_h
        self.orig_p, self.resp_p = self.resp_p, self.orig_p

    def flip_mid_packet(self, is_orig: bool, ip_len: int) -> None:
        """Connection::FlipRoles from a UDP analyzer (DNS, NTP) at a packet this table has
        counted (as the originator's if `is_orig`): the addresses flip (`flip_addresses`);
        ConnSize's FlipRoles swaps what it counted before this packet, which it counts
        after the analyzer (IPBasedAnalyzer::BuildSessionAnalyzerTree orders the adapter's
        children so) in the direction it came in; the UDP adapter's payload lengths stay
        (it has no FlipRoles)."""
        moved = 1 if is_orig else -1  # the packet goes back to the side it was counted on
        self.orig_pkts, self.resp_pkts = self.resp_pkts + moved, self.orig_pkts - moved
        self.orig_ip_bytes, self.resp_ip_bytes = (self.resp_ip_bytes + moved * ip_len,
                                                  self.orig_ip_bytes - moved * ip_len)
        self.flip_addresses()

    def flip_roles(self, recase_history: bool = False) -> None:
        """Swap originator and responder and note it with '^'. With `recase_history` (a
        late flip), the letters so far change case as if roles had been right from the
        start, and '^' leads."""
        if recase_history:
            self.history = ["^", *(c.swapcase() for c in self.history)]
            self.hist_seen = ((self.hist_seen & 0xFFFF) << 16) | (self.hist_seen >> 16)
            self.orig_h, self.resp_h = self.resp_h, self.orig_h
            self.orig_p, self.resp_p = self.resp_p, self.orig_p
        else:
            self.flip_addresses()
        self.orig_pkts, self.resp_pkts = self.resp_pkts, self.orig_pkts
        self.orig_ip_bytes, self.resp_ip_bytes = self.resp_ip_bytes, self.orig_ip_bytes
        self.orig_len, self.resp_len = self.resp_len, self.orig_len
        if self.tcp is not None:
            self.tcp.flip_roles()
            streams = self.app.get(STREAM_KEY)
            if streams is not None:
                streams.flip()

    # -- timers --------------------------------------------------------------
    def schedule(self, when: float, kind: str) -> None:
        self.table._schedule(when, self, kind)

    def cancel_analyzer_timers(self) -> None:
        self.timer_gen += 1

    def weird(self, name: str, addl: str | None = None) -> None:
        """A connection weird, reported once per connection and name: Zeek's weird.zeek
        ignores repeats for the same connection id (weird_ignore), so a snap-length
        truncated capture gives one truncated_tcp_payload per connection, not per packet."""
        w = self.table.weirds
        if w is not None:
            seen = self.weirds_seen
            if seen is None:
                seen = self.weirds_seen = set()
            elif name in seen:
                return
            seen.add(name)
            w.report(name, self.table.now, addl, uid=self.uid,
                     conn_id=(self.orig_h, self.orig_p, self.resp_h, self.resp_p))

    # -- result --------------------------------------------------------------
    def record(self, local: NetSet | None) -> ConnRecord:
        proto = self.proto
        history = "".join(self.history)
        if proto == PROTO_TCP:
            assert self.tcp is not None
            name = "tcp"
            state = self.tcp.conn_state(history)
            orig_size, resp_size = self.tcp.orig.size(), self.tcp.resp.size()
        elif proto == PROTO_UDP:
            name = "udp"
            o, r = self.orig_len >= 0, self.resp_len >= 0
            state = ("SF" if r else "S0") if o else ("SHR" if r else "OTH")
            orig_size, resp_size = max(self.orig_len, 0), max(self.resp_len, 0)
        elif proto in (PROTO_ICMP, PROTO_ICMP6):
            name = "icmp"
            state = "OTH"
            orig_size, resp_size = max(self.orig_len, 0), max(self.resp_len, 0)
        else:
            name = "unknown_transport"
            state = "OTH"
            orig_size = resp_size = 0
        duration = self.last_ts - self.start_ts
        has_duration = duration > 0
        return ConnRecord(
            ts=self.start_ts,
            uid=self.uid,
            orig_h=self.orig_h,
            orig_p=self.orig_p,
            resp_h=self.resp_h,
            resp_p=self.resp_p,
            proto=name,
            service=list(self.service),
            duration=duration if has_duration else None,
            orig_bytes=orig_size if has_duration else None,
            resp_bytes=resp_size if has_duration else None,
            conn_state=state,
            local_orig=(self.orig_h in local) if local is not None else None,
            local_resp=(self.resp_h in local) if local is not None else None,
            missed_bytes=self.missed_bytes,
            history=history,
            orig_pkts=self.orig_pkts,
            orig_ip_bytes=self.orig_ip_bytes,
            resp_pkts=self.resp_pkts,
            resp_ip_bytes=self.resp_ip_bytes,
            tunnel_parents=list(self.tunnel_parents),
            ip_proto=proto,
        )


# Tunnel::delay_teredo_confirmation (init-bare.zeek, T): TeredoAnalyzer confirms once both
# directions of the carrier carried a valid Teredo packet (Confirm(valid_orig, valid_resp)).
# GTPv1's delay_gtp_confirmation is F: the first valid packet confirms, as for the others.
_TEREDO_SEEN = "teredo_valid"


def name_carrier(carrier: ConnView, outer: Packet) -> None:
    """The tunnel analyzer's confirmation on the UDP connection `carrier` for its packet
    `outer`, which the decoder decapsulated (`tunnel_type` set): the tunnel's name joins the
    service (dpd.zeek), whatever the inner packet turns out to be (ARP, a Teredo bubble)."""
    kind = outer.tunnel_type
    if not kind or kind in carrier.service:
        return
    if kind == "teredo":
        senders: set[tuple[str, int]] = carrier.app.setdefault(_TEREDO_SEEN, set())
        senders.add((outer.src, outer.sport))
        if len(senders) < 2:  # not yet both endpoints of the carrier
            return
    carrier.service.append(kind)


def tunnel_parent_uid(
    pkt: Packet, carrier: ConnView | None, tunnel_uids: dict[tuple, str], new_uid: Callable[[tuple], str]
) -> str:
    """The uid an inner connection names as its tunnel parent: the UDP/TCP connection that
    carried the outer packet (it lists the tunnel type, the outer packet's `tunnel_type`, as
    a service: the tunnel analyzer's confirmation), or, for a tunnel straight over IP
    (IP-in-IP, GRE) or without a carrier, one uid per outer address pair and type."""
    outer = pkt.outer
    assert outer is not None
    if carrier is not None and outer.proto not in IP_LEVEL_TUNNEL_PROTOS:
        name_carrier(carrier, outer)
        return carrier.uid
    a, b = sorted((outer.src, outer.dst))
    key = (a, b, pkt.tunnel_type)
    if key not in tunnel_uids:
        tunnel_uids[key] = new_uid(key)
    return tunnel_uids[key]


class FlowTable:
    """Zeek's connection table. `process` packets in time order, `advance` network time,
    `flush` at end of input; every record goes to `emit` as its connection ends."""

    def __init__(self, config: FlowConfig, emit: Emit, analyzers: Iterable[AppAnalyzer] = ()) -> None:
        self.config = config
        self.emit = emit
        self.analyzers = list(analyzers)
        self.weirds = config.weirds
        nets = parse_nets(config.local_nets)
        self.local: NetSet | None = NetSet(nets) if nets else None
        self.uids = ConnUids(config.seed)  # replaceable (dist.trace numbers uids by stream position)
        # Least recently active first (moved to the end on every packet): eviction order.
        self.conns: OrderedDict[tuple, Connection] = OrderedDict()
        self.evicted = 0
        self.now = 0.0
        self._timers: list[tuple[float, int, Connection, str, int]] = []
        self._timer_seq = itertools.count()
        self._tunnel_uids: dict[tuple, str] = {}
        self._last_pkt: Packet | None = None
        self._last_conn: Connection | None = None
        self.records = 0

    # -- public API ----------------------------------------------------------
    def process_all(self, pkts: Sequence[Packet]) -> None:
        """One decoded frame: the outer packet(s) of a tunnel first, then the inner one."""
        if len(pkts) == 1:
            self.process(pkts[0])
            return
        carriers = {id(p.outer) for p in pkts if p.outer is not None}
        for pkt in pkts:
            if id(pkt) in carriers and pkt.proto in IP_LEVEL_TUNNEL_PROTOS:
                self.advance(pkt.ts)
                continue
            self.process(pkt)

    def process(self, pkt: Packet) -> Connection | None:
        if pkt.ts > self.now:
            self.advance(pkt.ts)
        proto = pkt.proto
        if proto == PROTO_IGMP:
            # IP's packet analyzer hands IGMP to the IGMP analyzer (packet-protocols/igmp,
            # zeek PR 5095): a packet analyzer, no session, no conn.log row.
            return None
        sport, dport = pkt.sport, pkt.dport
        key: tuple
        if proto == PROTO_TCP or proto == PROTO_UDP:
            a, b = (pkt.src, sport), (pkt.dst, dport)
            key = (proto, *a, *b) if a <= b else (proto, *b, *a)
        elif proto == PROTO_ICMP or proto == PROTO_ICMP6:
            pairs = ICMP4_PAIRS if proto == PROTO_ICMP else ICMP6_PAIRS
            counterpart = pairs.get(sport)
            if counterpart is None:  # one-way message: resp_p is the code
                dport = pkt.dport
                key = (proto, pkt.src, sport, pkt.dst, dport, "one-way")
            else:
                dport = counterpart
                a, b = (pkt.src, sport), (pkt.dst, dport)
                key = (proto, *a, *b) if a <= b else (proto, *b, *a)
        else:
            sport = dport = 0
            a, b = (pkt.src, 0), (pkt.dst, 0)
            key = (proto, *a, *b) if a <= b else (proto, *b, *a)

        conn = self.conns.get(key)
        if conn is not None and conn.tcp is not None and conn.tcp.is_reuse(pkt.flags, pkt.seq):
            self._remove(conn)
            conn = None
        if conn is None:
            conn = self._new_conn(key, pkt, sport, dport)
        else:
            self.conns.move_to_end(key)
            # IPBasedAnalyzer::AnalyzePacket: an existing connection checks the packet's
            # encapsulation before the packet is analyzed.
            if pkt.outer is not None or conn.encap:
                encap = encapsulation_key(pkt)
                if encap != conn.encap:
                    conn.check_encapsulation(encap)
        if (
            conn.tcp is not None
            and conn.tcp.synack_first
            and conn.orig_pkts + conn.resp_pkts >= 1
            and pkt.flags & (TH_SYN | TH_ACK) != TH_SYN | TH_ACK  # SYN-ACK repeats keep waiting
        ):
            conn.tcp.synack_first = False
            if not pkt.flags & (TH_SYN | TH_RST) and (pkt.flags & TH_ACK or pkt.payload_len > 0):
                conn.flip_roles(recase_history=True)
                conn.tcp.synack_sender_is_responder()
        is_orig = pkt.src == conn.orig_h and sport == conn.orig_p

        if pkt.outer is not None:
            self._note_tunnel(conn, pkt)

        ok = pkt.checksum_ok is not False
        if proto == PROTO_TCP:
            tcp = conn.tcp
            assert tcp is not None
            if not ok:
                self._weird("bad_TCP_checksum", conn)
                tcp.checksum_error(is_orig)
            else:
                tcp.process(is_orig, pkt.ts, pkt.flags, pkt.seq, pkt.ack, pkt.window,
                            pkt.payload_len, len(pkt.payload))
        elif proto == PROTO_UDP:
            if not ok:
                self._weird("bad_UDP_checksum", conn)
                conn.scaled_history("C" if is_orig else "c", conn.counters, "chk_orig" if is_orig else "chk_resp")
            else:
                conn.last_ts = pkt.ts
                length = pkt.extra.get("udp_payload_len", pkt.payload_len)
                if is_orig:
                    conn.check_history(0x1, "D")
                    conn.orig_len = length if conn.orig_len < 0 else conn.orig_len + length
                else:
                    conn.check_history(0x2, "d")
                    conn.resp_len = length if conn.resp_len < 0 else conn.resp_len + length
                if pkt.analysis_partial:  # the tunnel analyzer after UDP's letters (decode.tunnels)
                    conn.check_history(HIST_UNKNOWN_PKT, HIST_UNKNOWN_PKT_CODE)
                if pkt.tunnel_type:
                    name_carrier(conn, pkt)
        elif proto == PROTO_ICMP or proto == PROTO_ICMP6:
            if not ok:
                self._weird("bad_ICMP_checksum", conn)
            else:
                conn.last_ts = pkt.ts
                length = pkt.payload_len
                if is_orig:
                    conn.orig_len = length if conn.orig_len < 0 else conn.orig_len + length
                else:
                    conn.resp_len = length if conn.resp_len < 0 else conn.resp_len + length
        else:
            conn.last_ts = pkt.ts

        if ok:
            # Zeek's ConnSize analyzer: every accepted packet, IP total length.
            if is_orig:
                conn.orig_pkts += 1
                conn.orig_ip_bytes += pkt.ip_len
            else:
                conn.resp_pkts += 1
                conn.resp_ip_bytes += pkt.ip_len
            if conn.dns_first:
                self._dns_first_message(conn, pkt, is_orig)
            elif conn.ntp_roles:
                self._ntp_message(conn, pkt, is_orig)
            if self.analyzers:
                # Direction as the connection sees it now (after any flip).
                now_orig = pkt.src == conn.orig_h and sport == conn.orig_p
                for analyzer in self.analyzers:
                    analyzer.on_packet(conn, now_orig, pkt)
        self._last_pkt, self._last_conn = pkt, conn
        return conn

    @staticmethod
    def _dns_first_message(conn: Connection, pkt: Packet, is_orig: bool) -> None:
        """DNS_Interpreter::ParseMessage's first message (DNS.cc): one from the originator
        that is a response makes its sender the responder, unless the responder is
        multicast. It runs in the DNS analyzer, the first of the adapter's children
        (IPBasedAnalyzer::BuildSessionAnalyzerTree), after UDP's letters and lengths."""
        if len(pkt.payload) < HEADER_LEN:
            return
        said = connection_first_message(conn, pkt.payload, is_orig)
        if said is None:
            return
        conn.dns_first = False
        if said:
            conn.flip_mid_packet(is_orig, pkt.ip_len)

    @staticmethod
    def _ntp_message(conn: Connection, pkt: Packet, is_orig: bool) -> None:
        """proc_ntp_message's flip (ntp-analyzer.pac, `flow.ntp_roles`): once, and not after
        a violation disabled the analyzer."""
        said = roles_said(pkt.payload, is_orig)
        if watch_ends(said, max(conn.orig_len, 0) + max(conn.resp_len, 0)):
            conn.ntp_roles = False
        if said == ROLES_FLIP:
            conn.flip_mid_packet(is_orig, pkt.ip_len)

    def advance(self, now: float) -> None:
        """Network time moved to `now`: fire the timers that are due."""
        if now > self.now:
            self.now = now
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, conn, kind, gen = heapq.heappop(timers)
            if conn.removed:
                continue
            self._fire(when, conn, kind, gen)

    def flush(self, now: float | None = None) -> None:
        """End of input: every live connection ends (Zeek's connection_state_remove at exit)."""
        if now is not None and now > self.now:
            self.now = now
        for conn in sorted(self.conns.values(), key=lambda c: c.start_ts):
            self._remove(conn)
        self._timers.clear()
        self._tunnel_uids.clear()

    def __len__(self) -> int:
        return len(self.conns)

    # -- internals -----------------------------------------------------------
    def _new_conn(self, key: tuple, pkt: Packet, sport: int, dport: int) -> Connection:
        proto = pkt.proto
        cfg = self.config
        if proto == PROTO_TCP:
            timeout = cfg.udp_inactivity_timeout  # Zeek's TCP analyzer starts with it, too
        elif proto == PROTO_UDP:
            timeout = cfg.udp_inactivity_timeout
        elif proto in (PROTO_ICMP, PROTO_ICMP6):
            timeout = cfg.icmp_inactivity_timeout
        else:
            timeout = cfg.unknown_inactivity_timeout
        cap = cfg.max_flows
        if cap is not None and len(self.conns) >= cap:
            self._evict(len(self.conns) - cap + 1)
        conn = Connection(self, key, self.uids.conn(proto, pkt.src, sport, pkt.dst, dport, pkt.ts), pkt, sport, dport,
                          timeout)
        flip = False
        if proto == PROTO_TCP:
            conn.tcp = TCPAdapter(conn)
            flags = pkt.flags
            likely = cfg.likely_server_ports
            if flags & TH_SYN and flags & TH_ACK:
                # Zeek's TCPAnalyzer::WantConnection: a SYN-ACK from a likely server port to
                # a port that is not one flips at once (both likely: no flip, for stealth
                # scans). Otherwise it is flipped only if an ACK or data follows (a stealth
                # scan's SYN-ACKs get RSTs or nothing), see TCPAdapter.synack_first.
                flip = is_likely_server_port(sport, proto, likely) and not is_likely_server_port(dport, proto, likely)
                conn.tcp.synack_first = not flip
            elif not flags & TH_SYN:
                if is_likely_server_port(sport, proto, likely):
                    if is_likely_server_port(dport, proto, likely):
                        flip = not flags & TH_SYN and sport < dport
                    else:
                        flip = True
        elif proto == PROTO_UDP:
            # UDPAnalyzer::WantConnection: the source port is a likely server port, the
            # destination port is not.
            likely = cfg.likely_server_ports
            flip = is_likely_server_port(sport, proto, likely) and not is_likely_server_port(dport, proto, likely)
        if flip and pkt.dst != "255.255.255.255":
            conn.flip_roles()
        self.conns[key] = conn
        for analyzer in self.analyzers:
            analyzer.on_new(conn)
        self._schedule(pkt.ts + timeout, conn, "inactivity")
        if proto == PROTO_UDP and cfg.dns_session_timeout > 0 and "dns" in registered_analyzers(conn.resp_p, proto):
            # The DNS analyzer, attached by the responder port, arms its expiry timer when
            # it is created (DNS_Analyzer::DNS_Analyzer, UDP sessions only).
            self._schedule(pkt.ts + cfg.dns_session_timeout, conn, "dns_expire")
            conn.dns_first = True
        # proc_ntp_message may flip the roles of a connection the NTP analyzer is attached to.
        conn.ntp_roles = proto == PROTO_UDP and conn.resp_p in cfg.ntp_ports
        if proto == PROTO_TCP:
            self._schedule(pkt.ts + cfg.tcp_syn_timeout, conn, "expire")
        return conn

    def _note_tunnel(self, conn: Connection, pkt: Packet) -> None:
        carrier = self._last_conn if pkt.outer is self._last_pkt else None
        uid = tunnel_parent_uid(pkt, carrier, self._tunnel_uids, self.uids.tunnel)
        if uid not in conn.tunnel_parents:
            conn.tunnel_parents.append(uid)

    def _schedule(self, when: float, conn: Connection, kind: str) -> None:
        heapq.heappush(self._timers, (when, next(self._timer_seq), conn, kind, conn.timer_gen))

    def _fire(self, when: float, conn: Connection, kind: str, gen: int) -> None:
        if kind == "inactivity":
            due = conn.last_ts + conn.inactivity_timeout
            if due <= when:
                self._remove(conn)
            else:
                self._schedule(due, conn, "inactivity")
            return
        if kind == "dns_expire":
            # DNS_Analyzer::ExpireTimer: idle long enough ends the session (a later query on
            # the same 5-tuple starts a new connection), otherwise the timer re-arms.
            if not conn.dns_expiry:
                return  # the analyzer was disabled: its timers are cancelled
            timeout = self.config.dns_session_timeout
            if when - conn.last_ts >= timeout - DNS_EXPIRE_SLACK:
                self._remove(conn)
            else:
                self._schedule(when + timeout, conn, "dns_expire")
            return
        if gen != conn.timer_gen:
            return  # the TCP analyzer cancelled its timers
        tcp = conn.tcp
        assert tcp is not None
        if kind == "delete":
            self._remove(conn)
        elif kind == "attempt":
            if tcp.attempt_timer():
                tcp.is_active = False
                self._remove(conn)
        elif kind == "expire":
            verdict = tcp.expire_timer(when)
            if verdict:
                self._remove(conn)
            elif verdict is False:
                self._schedule(when + self.config.tcp_session_timer, conn, "expire")

    def _remove(self, conn: Connection) -> None:
        if conn.removed:
            return
        conn.removed = True
        if self.conns.get(conn.key) is conn:
            del self.conns[conn.key]
        rec = conn.record(self.local)
        for analyzer in self.analyzers:
            analyzer.on_remove(conn, rec)
        rec.service = list(conn.service)
        self.records += 1
        self.emit(rec)

    def _evict(self, n: int) -> None:
        """End the `n` least recently active connections (table full). Their records are
        emitted as at an inactivity timeout, so nothing learned is lost; a later packet of
        the same flow starts a new connection, as after a timeout."""
        w = self.weirds
        for _ in range(n):
            conn = next(iter(self.conns.values()))
            self.evicted += 1
            if w is not None:
                if is_power_of_ten(self.evicted):
                    w.report(EVICTED_WEIRD, self.now,
                             f"{self.evicted} connection(s) evicted so far, table full at {self.config.max_flows}",
                             uid=conn.uid, conn_id=(conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p))
                else:
                    w.counts[EVICTED_WEIRD] += 1  # counted, not logged (see EVICTED_WEIRD)
            self._remove(conn)
        # Timers of evicted connections would keep them alive until due (up to the inactivity
        # timeout): under a flood that is every connection ever seen. Drop them in bulk.
        timers = self._timers
        if len(timers) > 3 * len(self.conns) + 4096:  # ~2 live timers per connection
            timers[:] = [t for t in timers if not t[2].removed]
            heapq.heapify(timers)

    def _weird(self, name: str, conn: Connection) -> None:
        conn.weird(name)


def is_power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1
