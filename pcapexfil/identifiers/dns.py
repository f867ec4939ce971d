"""DNS over UDP and TCP: dns.log rows as Zeek writes them, and DNS-derived connection names.

Rows follow Zeek's base/protocols/dns scripts: a query waits for the reply with its
transaction id (queues per id, in order), a row is written when both were seen, and what
is left unmatched is written when the connection ends. Names are lowercased with the
trailing dot removed, AA/RA come from replies that carry answers, `answers`/`TTLs` list
the answer section only.

DNS-derived names: every A/AAAA answer teaches (client, address) → (queried name, answer
ts + TTL). A later connection from that client to that address, started within the TTL,
gets the name in `rec.dns_name` when it has neither SNI nor Host. The name is the one the
client *asked for* (the question), not the CNAME chain's target: the question is what the
client's software meant to reach (`files.example.com`), while a CNAME target names the
hosting provider (`d1234.cloudfront.net`) that thousands of unrelated sites share. The
lookup is made when the connection is created, so answers that arrive later (for
another connection) cannot rename it.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import struct
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from pcapexfil.flow.ports import registered_ports
from pcapexfil.identifiers.dns_header import (
    FLAGS_AT,
    FLAGS_QDCOUNT,
    HEADER_LEN,
    OPCODE_QUERY,
    OPCODE_UPDATE,
    PARSED_OPCODES,
    is_multicast,
    is_netbios,
    opcode_of,
    parsed_opcode,
)
from pcapexfil.identifiers.netbios import NETBIOS_NS_PORT, decode_netbios_name
from pcapexfil.identifiers.output import LogOut
from pcapexfil.identifiers.stream import streams, tcp_data
from pcapexfil.logs.dns import (
    DNS_FIELDS,
    opcode_name,
    qclass_name,
    qtype_name,
    rcode_name,
)
from pcapexfil.packet import PROTO_TCP, PROTO_UDP
from pcapexfil.record import dns_query
from pcapexfil.services.base import PiaWait, analyzer_violation

if TYPE_CHECKING:
    from pcapexfil.hooks import AnalyzerContext, ConnView
    from pcapexfil.packet import Packet
    from pcapexfil.record import ConnRecord

NAME = "dns"
NAME_KEY = "dns_name"  # conn.app: the DNS-derived name looked up at creation
UDP_PORTS = registered_ports(NAME, PROTO_UDP)  # dns/main.zeek registers the DNS analyzer there
TCP_PORTS = registered_ports(NAME, PROTO_TCP)
MAX_TCP_MESSAGE_BUFFER = 128 * 1024
MAX_PENDING_IDS = 50  # Zeek's DNS::max_pending_query_ids
MAX_PENDING_MSGS = 50  # Zeek's DNS::max_pending_msgs
MAX_POINTER_HOPS = 128  # a 255-byte name has at most 127 labels, each reachable by one pointer
MAX_NAME_LENGTH = 512  # label bytes with their length bytes; longer is malformed
MAX_NAMES = 1_000_000  # (client, address) pairs remembered; expired ones are purged first
QUERIES_KEY = "dns_queries"  # conn.app: the connection's finished transactions (record.DnsQuery)
# init-bare.zeek dns_max_queries: "If a DNS request includes more than this many queries,
# assume it's non-DNS traffic" (the header's qdcount; DNS_Interpreter::ParseMessage).
MAX_QUERIES = 25

TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_SOA, TYPE_PTR, TYPE_MX, TYPE_TXT = 1, 2, 5, 6, 12, 15, 16
TYPE_AAAA, TYPE_SRV, TYPE_RRSIG, TYPE_NSEC, TYPE_SPF = 28, 33, 46, 47, 99
RRSIG_SIGNER_AT = 18  # an RRSIG's signer name starts here in its data (when it is that long)
# Types Zeek parses but whose replies its dns.log script does not list.
TYPE_NAPTR, TYPE_LOC = 35, 29
LOC_MIN_REST = 15  # ParseRR_LOC: bytes of the message from the record data on, or it fails
# Record types DNS.cc parses without an event dns/main.zeek writes a text for: WKS (an
# empty text), HINFO, NB (ParseRR_NBS), OPT, SVCB and HTTPS (dns_SVCB, dns_HTTPS), TKEY,
# TSIG, CAA (Matthaios9/zeek-master 1a672a5: DNS.cc ParseAnswer, dns/main.zeek).
_SILENT_TYPES = frozenset((11, 13, 32, 41, 64, 65, 137, 249, 250, 257))


class Malformed(ValueError):
    pass


def read_name(msg: bytes, pos: int, lower: bool = True) -> tuple[str, int]:
    """A possibly compressed domain name at `pos`; returns (its text, lowercase unless not
    `lower`, and the end position).

    Compression pointers must point backwards (as Zeek requires), which also rules out loops;
    a name may follow at most MAX_POINTER_HOPS of them, so a crafted chain of pointers cannot
    make every name of a 64 KiB message walk thousands of hops.
    """
    labels: list[bytes] = []
    end: int | None = None
    limit = pos
    total = 0
    hops = 0
    size = len(msg)
    while True:
        if pos >= size:
            raise Malformed("name runs past the message")
        n = msg[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 == 0xC0:
            if pos + 1 >= size:
                raise Malformed("truncated compression pointer")
            target = ((n & 0x3F) << 8) | msg[pos + 1]
            if end is None:
                end = pos + 2
            if target >= limit:
                raise Malformed("forward compression pointer")
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise Malformed("too many compression pointers")
            pos = limit = target
            continue
        if n > 63:
            raise Malformed("label too long")
        label_end = pos + 1 + n
        if label_end > size:
            raise Malformed("label runs past the message")
        labels.append(msg[pos + 1 : label_end])
        total += n + 1
        if total > MAX_NAME_LENGTH:
            raise Malformed("name too long")
        pos = label_end
    name = b".".join(labels)
    return (name.lower() if lower else name).decode("utf-8", "surrogateescape"), (end if end is not None else pos)


_HEADER = struct.Struct(">6H")  # id, flags, and the four section counts
_QUESTION_TAIL = struct.Struct(">HH")  # qtype, qclass
_RR_FIXED = struct.Struct(">HHIH")  # type, class, TTL, rdata length
# A name that is only a pointer to offset 12, where the (first) question's name starts:
# how almost every answer's owner is written.
_POINTER_TO_QUESTION = b"\xc0\x0c"


def _u16(msg: bytes, pos: int) -> int:
    if pos + 2 > len(msg):
        raise Malformed("truncated field")
    return (msg[pos] << 8) | msg[pos + 1]


def _character_strings(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = data[i]
        out.append(data[i + 1 : i + 1 + n])
        i += 1 + n
    return out


def render_rdata(msg: bytes, rtype: int, start: int, rdlen: int, owner: str) -> str | None:
    """The answers-column text Zeek writes for one record; None when it writes nothing."""
    rdata = msg[start : start + rdlen]
    if rtype == TYPE_A and rdlen == 4:
        return socket.inet_ntoa(rdata)  # what IPv4Address prints, without building one
    if rtype == TYPE_AAAA and rdlen == 16:
        return str(ipaddress.IPv6Address(rdata))
    if rtype in (TYPE_NS, TYPE_CNAME, TYPE_PTR, TYPE_SOA):
        return read_name(msg, start)[0]
    if rtype == TYPE_MX:
        return read_name(msg, start + 2)[0]
    if rtype == TYPE_SRV:
        return read_name(msg, start + 6)[0]
    if rtype in (TYPE_TXT, TYPE_SPF):
        tag = "TXT" if rtype == TYPE_TXT else "SPF"
        return " ".join(
            f"{tag} {len(s)} {s.decode('utf-8', 'surrogateescape')}" for s in _character_strings(rdata)
        )
    if rtype == TYPE_RRSIG and rdlen >= RRSIG_SIGNER_AT:
        signer = read_name(msg, start + RRSIG_SIGNER_AT)[0]
        return f"RRSIG {_u16(rdata, 0)} {signer or '<Root>'}"
    if rtype == 48 and rdlen >= 4:
        return f"DNSKEY {rdata[3]}"
    if rtype == TYPE_NSEC:
        return f"NSEC {owner} {read_name(msg, start)[0]}"
    if rtype == TYPE_NAPTR:
        return _naptr_text(msg, start, rdlen)
    if rtype == TYPE_LOC:
        # dns_LOC: size, horizontal and vertical precision, as their raw bytes.
        return f"LOC:  {msg[start + 1]} {msg[start + 2]} {msg[start + 3]}" if len(msg) - start >= LOC_MIN_REST else None
    if rtype == 50:
        return "NSEC3"
    if rtype == 51:
        return "NSEC3PARAM"
    if rtype == 43 and rdlen >= 4:
        return f"DS {rdata[2]} {rdata[3]}"
    if rtype == 44 and rdlen >= 2:
        return f"SSHFP: {rdata[2:].hex()}"
    if rtype == 65534:
        return "BIND9 signing signal"
    if rtype in _SILENT_TYPES:
        return None
    return f"<unknown type={rtype}>"


def _naptr_text(msg: bytes, start: int, rdlen: int) -> str | None:
    """dns/main.zeek dns_NAPTR_reply: order, preference, flags, service, then the regexp
    and the replacement (as written, not lowercased; ParseRR_NAPTR), whichever are not
    empty; None where ParseRR_NAPTR fails."""
    if rdlen <= 4:
        return None
    order, preference = _u16(msg, start), _u16(msg, start + 2)
    pos, end = start + 4, start + rdlen
    strings: list[str] = []
    for _ in range(3):  # flags, service, regexp: character-strings within the record
        if pos >= end or pos + 1 + msg[pos] > end:
            return None
        strings.append(msg[pos + 1 : pos + 1 + msg[pos]].decode("utf-8", "surrogateescape"))
        pos += 1 + msg[pos]
    replacement = read_name(msg, pos, lower=False)[0]
    flags, service, regexp = strings
    tail = " ".join(text for text in (regexp, replacement) if text)
    return f"NAPTR {order} {preference} {flags} {service} {tail}"


def answer_text(msg: bytes, rtype: int, start: int, rdlen: int, owner: str) -> str | None:
    """`render_rdata`, or None where the record data does not render: the answer is kept
    without a text, the message is not malformed for it."""
    try:
        return render_rdata(msg, rtype, start, rdlen, owner)
    except (Malformed, ValueError):
        return None


def query_bits(flags: int) -> tuple[bool, bool, int]:
    """The header flags a query gives its row: RD, TC, Z."""
    return flags & 0x0100 != 0, flags & 0x0200 != 0, (flags >> 4) & 0x7


class WaitingQuery(NamedTuple):
    """A query the fast engine's kernel kept waiting for its reply (`fast.dns_pairs`)."""

    ts: float
    tid: int
    flags: int  # its header's
    question: tuple[str, int, int] | None  # (name, qtype, qclass)


class Message:
    """One parsed DNS message (header, its last question, answer section)."""

    __slots__ = ("id", "flags", "qr", "opcode", "aa", "tc", "rd", "ra", "z", "rcode", "counts", "question", "answers")

    def __init__(self, msg: bytes) -> None:
        if len(msg) < HEADER_LEN:
            raise Malformed("shorter than a DNS header")
        tid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(msg)
        self._header(tid, flags, (qdcount, ancount, nscount, arcount))
        self.question: tuple[str, int, int] | None = None
        self.answers: list[tuple[str, int, int, str | None]] = []  # owner, type, ttl, text
        size = len(msg)
        pos = 12
        first: str | None = None  # the first question's name, at offset 12
        for i in range(qdcount):
            name, pos = read_name(msg, pos)
            if pos + 4 > size:
                raise Malformed("truncated field")
            # ParseQuestions raises dns_request per question and dns/main.zeek keeps each
            # one's fields: the last question is the one its row shows.
            self.question = (name, *_QUESTION_TAIL.unpack_from(msg, pos))
            if i == 0:
                first = name
            pos += 4
        qname = first
        for _ in range(ancount):
            # The first question's name, read without error from offset 12: a bare pointer
            # there reads the same name (one more hop cannot pass MAX_POINTER_HOPS, as only
            # 12 bytes lie before it), so it is not walked again.
            if qname is not None and msg[pos : pos + 2] == _POINTER_TO_QUESTION:
                owner = qname
                pos += 2
            else:
                owner, pos = read_name(msg, pos)
            if pos + 10 > size:
                raise Malformed("truncated field")
            rtype, _, ttl, rdlen = _RR_FIXED.unpack_from(msg, pos)
            pos += 10
            if pos + rdlen > size:
                raise Malformed("record data runs past the message")
            self.answers.append((owner, rtype, ttl, answer_text(msg, rtype, pos, rdlen, owner)))
            pos += rdlen

    def _header(self, tid: int, flags: int, counts: tuple[int, int, int, int]) -> None:
        self.id = tid
        self.flags = flags
        self.qr = flags & 0x8000 != 0
        self.opcode = opcode_of(flags)
        self.aa = flags & 0x0400 != 0
        self.rd, self.tc, self.z = query_bits(flags)
        self.ra = flags & 0x0080 != 0
        self.rcode = flags & 0xF
        self.counts = counts

    @classmethod
    def from_parts(cls, tid: int, flags: int, counts: tuple[int, int, int, int],
                   question: tuple[str, int, int] | None,
                   answers: list[tuple[str, int, int, str | None]]) -> Message:
        """A message parsed elsewhere (the fast engine's kernel, `fast.dns`)."""
        self = cls.__new__(cls)
        self._header(tid, flags, counts)
        self.question = question
        self.answers = answers
        return self


class _Pair:
    """A query and its reply as they are paired: the halves seen so far (the row is
    written once both were, or when the connection ends, from what they hold: `_row`)."""

    __slots__ = ("ts", "proto", "tid", "opcode", "saw_query", "query_flags", "question", "reply", "reply_ts", "texts",
                 "ttls", "written")

    def __init__(self, ts: float, proto: str, tid: int) -> None:
        self.ts = ts  # the first message's
        self.proto = proto
        self.tid = tid
        self.opcode = OPCODE_QUERY  # the last message's (set_session)
        self.saw_query = False
        # The query's question (dns_request), and its header flags (RD, TC, Z) with it.
        self.question: tuple[str, int, int] | None = None
        self.query_flags = 0
        self.reply: Message | None = None
        self.reply_ts = 0.0
        self.texts: list[str] = []  # the reply's answers that have a text, and their TTLs
        self.ttls: list[float] = []
        self.written = False


class _DnsConn:
    __slots__ = ("pending_query", "pending_queries", "pending_replies", "tcp_buf", "seen", "size", "disabled",
                 "netbios", "multicast")

    def __init__(self, conn: ConnView) -> None:
        # DNS_Interpreter::DNS_Interpreter: either port 137 (NetBIOS name service);
        # dns/main.zeek set_session: a responder in `multicast_subnets`.
        self.netbios = is_netbios(conn)
        self.multicast = is_multicast(conn.resp_h)
        self.pending_query: _Pair | None = None
        self.pending_queries: dict[int, deque[_Pair]] = {}
        self.pending_replies: dict[int, deque[_Pair]] = {}
        self.tcp_buf = {True: bytearray(), False: bytearray()}
        self.seen = False
        self.size = 0  # payload bytes of both directions so far (c$orig$size + c$resp$size)
        self.disabled = False  # dpd.zeek disabled the analyzer after a violation


class NameTable:
    """(client, address) → (the name the client asked for, when the answer expires): what
    names later connections (the module docstring)."""

    def __init__(self) -> None:
        self.names: dict[tuple[str, str], tuple[str, float]] = {}

    def remember(self, client: str, address: str, name: str, expiry: float, now: float) -> None:
        """Full: expired answers go first, then the oldest, down to 90% (so the O(n) purge
        runs once per tenth of the table, not for every answer while it stays full)."""
        if len(self.names) >= MAX_NAMES and (client, address) not in self.names:
            self.names = {k: v for k, v in self.names.items() if v[1] >= now}
            keep = MAX_NAMES * 9 // 10
            if len(self.names) > keep:
                self.names = dict(itertools.islice(self.names.items(), len(self.names) - keep, None))
        self.names[(client, address)] = (name, expiry)

    def name_for(self, client: str, address: str, ts: float) -> str | None:
        """The name `client` last resolved to `address`, if its answer is still valid at ts."""
        hit = self.names.get((client, address))
        if hit is None or ts > hit[1]:
            return None
        return hit[0]


class NameEvents(Protocol):
    """Where a DnsAnalyzer sends its lookups and learned answers instead of using its own
    table: a `--workers` worker sees only its share of the answers, so the merging process
    replays every worker's, in stream order (pcapexfil.workers)."""

    def lookup(self, conn: ConnView) -> None:
        """`conn` was created: the name for it is looked up at this point of the stream."""

    def learn(self, conn: ConnView, address: str, name: str, expiry: float, now: float) -> None:
        """An answer on DNS connection `conn` resolved `name` to `address` for its client."""


class DnsAnalyzer:
    """AppAnalyzer for DNS; writes dns.log when the context has an output directory.

    Register it after the TLS and HTTP analyzers: its `on_remove` only names connections
    that they left without SNI and Host.
    """

    name = NAME

    def __init__(self, ctx: AnalyzerContext, stream_users: frozenset[str] = frozenset({NAME})) -> None:
        self.ctx = ctx
        self.users = stream_users
        self.table = NameTable()
        self.deferred: NameEvents | None = None  # set: lookups and answers go there (workers)
        self.log = LogOut(ctx, "dns", DNS_FIELDS)

    # -- DNS-derived names -------------------------------------------------------------

    def remember(self, client: str, address: str, name: str, expiry: float, now: float) -> None:
        self.table.remember(client, address, name, expiry, now)

    def name_for(self, client: str, address: str, ts: float) -> str | None:
        return self.table.name_for(client, address, ts)

    # -- packets -----------------------------------------------------------------------

    def reads_datagrams(self, resp_p: int) -> bool:
        return resp_p in UDP_PORTS

    def pia_gate(self, resp_p: int) -> PiaWait | None:
        """Off its TCP ports it lets a stream go unread."""
        return None if resp_p in TCP_PORTS else PiaWait()

    def pia_released(self, conn: ConnView) -> None:
        return

    def on_new(self, conn: ConnView) -> None:
        if self.deferred is not None:
            self.deferred.lookup(conn)
            conn.app[NAME_KEY] = None  # the merging process names the record
            return
        conn.app[NAME_KEY] = self.name_for(conn.orig_h, conn.resp_h, conn.start_ts) if self.table.names else None

    def on_packet(self, conn: ConnView, is_orig: bool, pkt: Packet) -> None:
        proto = pkt.proto
        if proto == PROTO_UDP:
            if conn.resp_p in UDP_PORTS and pkt.payload:
                st = self._state(conn)
                st.size += len(pkt.payload)
                self._message(conn, st, pkt.payload, pkt.ts, "udp")
        elif proto == PROTO_TCP:
            if conn.resp_p in TCP_PORTS:
                data = tcp_data(conn, is_orig, pkt, self.users)
                if data:
                    st = self._state(conn)
                    st.size += len(data)
                    self._tcp(conn, st, is_orig, data, pkt.ts)
            else:
                s = streams(conn)
                if s is not None:
                    s.release(NAME)

    def _state(self, conn: ConnView) -> _DnsConn:
        st: _DnsConn | None = conn.app.get(NAME)
        if st is None:
            st = conn.app[NAME] = _DnsConn(conn)
        return st

    def _tcp(self, conn: ConnView, st: _DnsConn, is_orig: bool, data: bytes, ts: float) -> None:
        buf = st.tcp_buf[is_orig]
        buf += data
        while len(buf) >= 2:
            n = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + n:
                break
            msg = bytes(buf[2 : 2 + n])
            del buf[: 2 + n]
            self._message(conn, st, msg, ts, "tcp")
        if len(buf) > MAX_TCP_MESSAGE_BUFFER:
            buf.clear()
            self._weird(conn, "DNS_tcp_buffer_overflow", ts)

    def _message(self, conn: ConnView, st: _DnsConn, data: bytes, ts: float, proto: str) -> None:
        if st.disabled:
            return
        if len(data) >= HEADER_LEN:
            flags, qdcount = FLAGS_QDCOUNT.unpack_from(data, FLAGS_AT)
            if not parsed_opcode(flags, st.netbios):
                # DNS_Interpreter::ParseMessage: the weird and 'X'; no dns_message, no confirmation.
                conn.limit_reached("DNS_unknown_opcode", str(opcode_of(flags)))
                return
            if qdcount > MAX_QUERIES:
                # AnalyzerViolation("DNS_Conn_count_too_large") and LimitReachedWeird, before
                # the message is parsed or the analyzer confirms.
                conn.limit_reached("DNS_Conn_count_too_large", f"{qdcount} > {MAX_QUERIES}")
                st.disabled = analyzer_violation(conn.service, NAME, st.size)
                if st.disabled:
                    conn.cancel_dns_expiry()
                return
        try:
            msg = Message(data)
        except Malformed as exc:
            self._weird(conn, "DNS_malformed_message", ts, str(exc))
            return
        self._parsed(conn, st, msg, ts, proto)

    def on_message(self, conn: ConnView, msg: Message, size: int, ts: float) -> None:
        """A UDP datagram on a DNS port that the fast engine's kernel parsed (`fast.dns`):
        what `on_packet` does with its `size` bytes, without parsing them again."""
        st = self._state(conn)
        st.size += size
        if not st.disabled:
            self._parsed(conn, st, msg, ts, "udp")

    def kernel_pair(self, conn: ConnView, query: WaitingQuery, reply: Message, ts: float) -> None:
        """A transaction the fast engine's kernel paired (`fast.dns_pairs`, which keeps a
        connection only while `_session` would find the query waiting): what `_parsed`
        does with the query, then with its reply, which came at `ts`."""
        if "dns" not in conn.service:
            conn.service.append("dns")  # the kernel's connections have had no violation
        pair = self._waiting(query)
        self._reply(conn, pair, reply, ts)
        self._write(conn, pair)

    def kernel_handover(self, conn: ConnView, size: int, waiting: list[WaitingQuery]) -> None:
        """The kernel leaves a connection's DNS to this analyzer (`fast.dns_pairs`): the
        messages it paired carried `size` payload bytes, `waiting` are its queries still
        waiting, in the order of `pending_query`, then `pending_queries` (the kernel keeps no
        pending replies, and no more than the analyzer's flush limits)."""
        st = self._state(conn)
        st.size = size
        self._seen(conn, st)
        for query in waiting:
            pair = self._waiting(query)
            if st.pending_query is None:
                st.pending_query = pair
            else:
                st.pending_queries.setdefault(query.tid, deque()).append(pair)

    @staticmethod
    def _waiting(query: WaitingQuery) -> _Pair:
        pair = _Pair(query.ts, "udp", query.tid)
        pair.saw_query = True
        pair.question, pair.query_flags = query.question, query.flags
        return pair

    def _seen(self, conn: ConnView, st: _DnsConn) -> None:
        if not st.seen:
            st.seen = True
            if "dns" not in conn.service:
                conn.service.append("dns")

    def _parsed(self, conn: ConnView, st: _DnsConn, msg: Message, ts: float, proto: str) -> None:
        if msg.opcode == OPCODE_UPDATE and not st.netbios:
            self._dynamic_update(conn, st, msg, ts, proto)
            return
        self._seen(conn, st)
        if msg.opcode not in PARSED_OPCODES:
            return  # dns_message pairs these only (NetBIOS's others are parsed all the same)
        pair = self._paired(conn, st, msg, ts, proto)
        if msg.qr:
            self._reply(conn, pair, msg, ts)
        else:
            pair.saw_query = True
            pair.question, pair.query_flags = msg.question, msg.flags
        self._ended(conn, st, pair)

    def _paired(self, conn: ConnView, st: _DnsConn, msg: Message, ts: float, proto: str) -> _Pair:
        """dns_message → set_session: a multicast responder's message is its own pair."""
        pair = _Pair(ts, proto, msg.id) if st.multicast else self._session(conn, st, msg, ts, proto)
        pair.opcode = msg.opcode
        return pair

    def _ended(self, conn: ConnView, st: _DnsConn, pair: _Pair) -> None:
        """dns_end: the row is written once both halves came (a multicast one at once)."""
        if st.multicast or pair.reply is not None and pair.saw_query:
            self._write(conn, pair)

    def _dynamic_update(self, conn: ConnView, st: _DnsConn, msg: Message, ts: float, proto: str) -> None:
        """DNS.cc ParseMessage's dynamic update (opcode 5 off NetBIOS): paired like any
        message, but its first section is the zone (no dns_request) and the others are
        prerequisites and updates (no answers; the texts a reply's records would give,
        `pre:`/`del:`/`add:`, are not modelled). One zone of type SOA confirms; another
        count is a weird and no confirmation; another type a weird, and the message ends
        without dns_end, so it completes no row."""
        pair = self._paired(conn, st, msg, ts, proto)
        zones = msg.counts[0]
        if zones != 1:
            self._weird(conn, "DNS_DU_invalid_zone_count", ts, str(zones))
        elif msg.question is None or msg.question[1] != TYPE_SOA:
            self._weird(conn, "DNS_DU_incorrect_zone_type", ts)
            return
        else:
            self._seen(conn, st)
        if msg.qr:
            self._reply(conn, pair, Message.from_parts(msg.id, msg.flags, msg.counts, None, []), ts)
        else:
            pair.saw_query = True
        self._ended(conn, st, pair)

    def _reply(self, conn: ConnView, pair: _Pair, msg: Message, ts: float) -> None:
        """The reply's half, and its A/AAAA answers into the names table: the name asked
        for is the query's, or, before the query came, the first answer's owner."""
        pair.reply, pair.reply_ts = msg, ts
        if not msg.answers:
            return
        asked = pair.question[0] if pair.question is not None else msg.answers[0][0]
        texts, ttls = pair.texts, pair.ttls
        netbios = conn.resp_p == NETBIOS_NS_PORT
        for owner, rtype, ttl, text in msg.answers:
            if text and not (netbios and rtype == TYPE_SRV):  # ParseAnswer: NBSTAT, not parsed
                texts.append(text)
                ttls.append(float(ttl))
                if rtype == TYPE_A or rtype == TYPE_AAAA:
                    if self.deferred is not None:
                        self.deferred.learn(conn, text, asked or owner, ts + ttl, ts)
                    else:
                        self.remember(conn.orig_h, text, asked or owner, ts + ttl, ts)

    @staticmethod
    def _row(conn: ConnView, pair: _Pair) -> dict[str, Any]:
        """The pair's dns.log row: its last message's opcode (set_session); the RD, TC, Z and
        question of a query with a question (dns_request); the reply's rcode, `rejected`,
        and, if it has answers, AA, RA, rtt, the answers with a text and their TTLs, and the
        first answer's owner as `query` when no question was seen (do_reply)."""
        row: dict[str, Any] = {
            "ts": pair.ts, "uid": conn.uid, "id.orig_h": conn.orig_h, "id.orig_p": conn.orig_p,
            "id.resp_h": conn.resp_h, "id.resp_p": conn.resp_p, "proto": pair.proto, "trans_id": pair.tid,
            "AA": False, "TC": False, "RD": False, "RA": False, "Z": 0, "rejected": False, "opcode": pair.opcode,
            "opcode_name": opcode_name(pair.opcode, is_netbios(conn)),
        }  # fmt: skip
        if pair.question is not None:  # dns_request
            row["RD"], row["TC"], row["Z"] = query_bits(pair.query_flags)
            name, qtype, qclass = pair.question
            type_name = qtype_name(qtype)
            if conn.resp_p == NETBIOS_NS_PORT and conn.proto == PROTO_UDP:
                # dns/main.zeek dns_request: the name decoded if it decodes; SRV's number is
                # NetBIOS's node status request.
                name = decode_netbios_name(name) or name
                if qtype == TYPE_SRV:
                    type_name = "NBSTAT"
            row["query"] = name
            row["qtype"], row["qtype_name"] = qtype, type_name
            row["qclass"], row["qclass_name"] = qclass, qclass_name(qclass)
        msg = pair.reply
        if msg is not None:
            row["rcode"], row["rcode_name"] = msg.rcode, rcode_name(msg.rcode)
            if msg.rcode != 0 and msg.counts[0] == 0 or msg.question is not None and not any(msg.counts[1:]):
                row["rejected"] = True  # the latter: Zeek's dns_rejected, a reply without any record
            if msg.answers:
                row.setdefault("query", msg.answers[0][0])
                row["AA"], row["RA"] = msg.aa, msg.ra
                rtt = pair.reply_ts - pair.ts
                if rtt != 0:
                    row["rtt"] = rtt
                if pair.texts:
                    row["answers"], row["TTLs"] = pair.texts, pair.ttls
        return row

    def _session(self, conn: ConnView, st: _DnsConn, msg: Message, ts: float, proto: str) -> _Pair:
        """Zeek's DNS::set_session: pair this message with a waiting query or reply."""
        tid = msg.id
        if not msg.qr:
            q = st.pending_replies.get(tid)
            if q:
                pair = q.popleft()
                if not q:
                    del st.pending_replies[tid]
                return pair
            pair = _Pair(ts, proto, tid)
            if st.pending_query is None:
                st.pending_query = pair
            else:
                self._enqueue(conn, st.pending_queries, tid, pair)
            return pair
        pq = st.pending_query
        if pq is not None and pq.tid == tid:
            st.pending_query = None
            if st.pending_queries:
                q = st.pending_queries.get(tid)
                key = tid if q else next((k for k, v in st.pending_queries.items() if v), None)
                if key is not None:
                    q = st.pending_queries[key]
                    st.pending_query = q.popleft()
                    if not q:
                        del st.pending_queries[key]
            return pq
        q = st.pending_queries.get(tid)
        if q:
            pair = q.popleft()
            if not q:
                del st.pending_queries[tid]
            return pair
        pair = _Pair(ts, proto, tid)
        self._enqueue(conn, st.pending_replies, tid, pair)
        return pair

    def _enqueue(self, conn: ConnView, msgs: dict[int, deque[_Pair]], tid: int, pair: _Pair) -> None:
        if tid not in msgs:
            if len(msgs) > MAX_PENDING_IDS:
                for q in msgs.values():
                    for old in q:
                        self._write(conn, old)
                msgs.clear()
            msgs[tid] = deque()
        elif len(msgs[tid]) > MAX_PENDING_MSGS:
            for old in msgs[tid]:
                self._write(conn, old)
            msgs[tid] = deque()
        msgs[tid].append(pair)

    def _write(self, conn: ConnView, pair: _Pair) -> None:
        """A finished transaction: its dns.log row, and its DnsQuery for the connection's record
        (kept even without logs: the detector's DNS tunnel rule reads them)."""
        if pair.written:
            return
        pair.written = True
        row = self._row(conn, pair)
        query = dns_query(row)
        if query is not None:
            conn.app.setdefault(QUERIES_KEY, []).append(query)
        if self.log.enabled:
            self.log.write(row)

    def _weird(self, conn: ConnView, name: str, ts: float, addl: str | None = None) -> None:
        if self.ctx.weirds is not None:
            self.ctx.weirds.report(
                name, ts, addl, uid=conn.uid, conn_id=(conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p)
            )

    def on_remove(self, conn: ConnView, rec: ConnRecord) -> None:
        st: _DnsConn | None = conn.app.get(NAME)
        if st is not None:
            # Zeek's finalize_dns: whatever never found its partner is written now.
            if st.pending_query is not None:
                self._write(conn, st.pending_query)
            for pending in (st.pending_queries, st.pending_replies):
                for q in pending.values():
                    for pair in q:
                        self._write(conn, pair)
        rec.dns_queries = conn.app.get(QUERIES_KEY) or []
        if rec.server_name is None and rec.http_host is None:
            rec.dns_name = conn.app.get(NAME_KEY)

    def close(self) -> None:
        self.log.close()
