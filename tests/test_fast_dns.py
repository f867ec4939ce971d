"""The kernel's DNS message parser (`fast.dns`) against its oracle, `identifiers.dns.Message`,
and the fast engine's use of it (EV_DNS) against the reference engine; both parsers against
dpkt.dns, written apart from either, on the well-formed messages dpkt builds and reads."""

from __future__ import annotations

import ipaddress
import socket
import struct

import dpkt
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fast_engine import assert_same

from helpers_pcap import ether, ipv4, tcp, udp, write_pcap
from pcapexfil.fast.dispatch import DNS_UDP
from pcapexfil.fast.dns import U_MSGS, ParsedMessages, new_dns_parse, parse_message
from pcapexfil.fast.engine import kernel_dns_ports
from pcapexfil.hooks import AnalyzerContext
from pcapexfil.identifiers import make_analyzers
from pcapexfil.identifiers.dns import (
    MAX_QUERIES,
    OPCODE_QUERY,
    TYPE_LOC,
    TYPE_NAPTR,
    TYPE_NSEC,
    TYPE_RRSIG,
    Malformed,
    Message,
)

FIELDS = ("id", "qr", "opcode", "aa", "tc", "rd", "ra", "z", "rcode", "counts", "question", "answers")


def kernel_parse(data: bytes, room: int = 64) -> Message | None:
    """What the kernel makes of one datagram (placed mid-buffer, as in a chunk), or None
    when it leaves it to Python."""
    D = new_dns_parse(np.zeros(65536, np.bool_), room)
    buf = np.frombuffer(b"\xaa" * 7 + data + b"\xbb" * 5, np.uint8)
    if not parse_message(D, buf, 7, len(data)):
        assert not D.used.any()  # nothing of a message left to Python is kept
        return None
    assert D.used[U_MSGS] == 1 and D.msgs[0]["size"] == len(data)
    return ParsedMessages(D).message(0)


def oracle(data: bytes) -> Message | None:
    try:
        return Message(data)
    except Malformed:
        return None


def assert_agrees(data: bytes) -> None:
    want, got = oracle(data), kernel_parse(data)
    if got is not None:
        assert want is not None, "the kernel parsed a message Message rejects"
        assert {f: getattr(got, f) for f in FIELDS} == {f: getattr(want, f) for f in FIELDS}
        return
    if want is None:
        return
    # Left to Python although Message parses it: only where the module docstring says.
    qdcount = struct.unpack_from(">H", data, 4)[0]
    left = (qdcount > MAX_QUERIES or want.opcode != OPCODE_QUERY
            or any(rtype in (TYPE_NSEC, TYPE_RRSIG, TYPE_NAPTR, TYPE_LOC) for _, rtype, _, _ in want.answers))
    assert left, f"a message Message parses was left to Python: {data!r}"


# -- messages: names (compressed or not, mixed case), records of every kind --------------

_labels = st.lists(st.binary(min_size=1, max_size=12).filter(lambda b: b"." not in b), min_size=0, max_size=4)
_rtypes = st.sampled_from([1, 2, 5, 6, 12, 15, 16, 28, 33, 43, 44, 46, 47, 48, 50, 51, 99, 250, 65534, 4242])


def _name(labels: list[bytes], pointer: int | None) -> bytes:
    out = b"".join(bytes([len(label)]) + label for label in labels)
    return out + (struct.pack(">H", 0xC000 | pointer) if pointer is not None else b"\x00")


@st.composite
def dns_messages(draw) -> bytes:
    flags = draw(st.integers(0, 0xFFFF))
    questions = draw(st.lists(_labels, min_size=0, max_size=2))
    body = b""
    for labels in questions:
        body += _name(labels, None) + struct.pack(">HH", draw(st.integers(0, 300)), draw(st.integers(0, 300)))
    answers = draw(st.lists(st.tuples(_rtypes, _labels, st.sampled_from([None, 12, 0, 40]),
                                      st.binary(max_size=24), st.integers(0, 2**32 - 1)), max_size=4))
    for rtype, labels, pointer, rdata, ttl in answers:
        if rtype == 1 and draw(st.booleans()):
            rdata = rdata[:4].ljust(4, b"\x01")
        elif rtype == 28 and draw(st.booleans()):
            rdata = rdata[:16].ljust(16, b"\x02")
        elif rtype in (2, 5, 12, 15, 33) and draw(st.booleans()):
            rdata = b"\x00" * {15: 2, 33: 6}.get(rtype, 0) + _name(draw(_labels), draw(st.sampled_from([None, 12])))
        owner = b"\xc0\x0c" if pointer == 12 and questions else _name(labels, pointer)
        body += owner + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata
    header = struct.pack(">6H", draw(st.integers(0, 0xFFFF)), flags, len(questions), len(answers), 0, 0)
    data = header + body
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    if cut is not None:  # truncated
        data = data[:cut]
    flip = draw(st.one_of(st.none(), st.tuples(st.integers(0, max(len(data) - 1, 0)), st.integers(0, 255))))
    if flip is not None and data:  # one byte changed: counts, lengths, pointers
        data = data[: flip[0]] + bytes([flip[1]]) + data[flip[0] + 1 :]
    return data


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dns_messages())
def test_kernel_parse_agrees_with_message(data: bytes) -> None:
    assert_agrees(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_kernel_parse_agrees_on_random_bytes(data: bytes) -> None:
    assert_agrees(data)


def test_typical_reply_is_parsed_in_the_kernel() -> None:
    """A reply as resolvers send it: question, CNAME then A and AAAA answers pointing back."""
    reply = dpkt.dns.DNS(id=7, qr=1, rd=1, ra=1, qd=[dpkt.dns.DNS.Q(name="WWW.Example.com")])
    reply.an = [
        dpkt.dns.DNS.RR(name="WWW.Example.com", type=5, cls=1, ttl=60, cname="Edge.Example.net"),
        dpkt.dns.DNS.RR(name="Edge.Example.net", type=1, cls=1, ttl=30, ip=bytes([192, 0, 2, 1])),
        dpkt.dns.DNS.RR(name="Edge.Example.net", type=28, cls=1, ttl=30, ip6=bytes(15) + b"\x01"),
    ]
    data = bytes(reply)
    got = kernel_parse(data)
    assert got is not None
    assert got.question == ("www.example.com", 1, 1)
    assert [a[3] for a in got.answers] == ["edge.example.net", "192.0.2.1", "::1"]
    assert_agrees(data)


def test_a_message_that_does_not_fit_is_left_to_python() -> None:
    reply = dpkt.dns.DNS(id=7, qr=1, qd=[dpkt.dns.DNS.Q(name="a.example")])
    reply.an = [dpkt.dns.DNS.RR(name="a.example", type=16, cls=1, ttl=5, text=[b"x" * 200]) for _ in range(40)]
    data = bytes(reply)
    assert kernel_parse(data, room=1) is None  # 8 answers and 512 arena bytes per message of room
    got = kernel_parse(data, room=32)
    assert got is not None and got.answers == Message(data).answers


# -- which ports the kernel parses ------------------------------------------------------------


def test_kernel_parses_where_only_the_dns_analyzer_reads_datagrams() -> None:
    analyzers = make_analyzers(AnalyzerContext(None))
    ports = kernel_dns_ports(analyzers)
    assert ports is not None
    assert ports[53] and ports[5353]
    assert not ports[161] and not ports[80]  # not DNS ports
    assert not (ports & ~DNS_UDP).any()


def test_kernel_parses_nothing_for_an_analyzer_that_does_not_say_what_it_reads() -> None:
    class Unknown:
        name = "unknown"

    analyzers = [*make_analyzers(AnalyzerContext(None)), Unknown()]
    ports = kernel_dns_ports(analyzers)  # type: ignore[arg-type]
    assert ports is not None and not ports.any()
    assert kernel_dns_ports(make_analyzers(AnalyzerContext(None), only={"tls", "http"})) is None


# -- the engine: parsed messages and those left to Python, against the reference ---------------


def test_engine_with_kernel_and_python_dns_messages_matches_the_reference(tmp_path) -> None:
    client, server = "10.1.0.1", "10.1.0.53"
    q = dpkt.dns.DNS(id=1, rd=1, qd=[dpkt.dns.DNS.Q(name="Files.Example.com")])
    r = dpkt.dns.DNS(id=1, qr=1, rd=1, ra=1, qd=q.qd,
                     an=[dpkt.dns.DNS.RR(name="files.example.com", type=1, cls=1, ttl=300, ip=bytes([192, 0, 2, 9]))])
    rrsig = dpkt.dns.DNS(id=2, qr=1, qd=q.qd, an=[dpkt.dns.DNS.RR(name="files.example.com", type=46, cls=1, ttl=5,
                                                                  rdata=bytes(18) + b"\x03sig\x00")])
    too_many = struct.pack(">6H", 3, 0, MAX_QUERIES + 1, 0, 0, 0)
    malformed = bytes(q)[:15]
    payloads = [bytes(q), bytes(r), bytes(q).replace(b"\x00\x01", b"\x00\x02", 1), bytes(rrsig), malformed,
                too_many, bytes(q), bytes(r)]
    frames = []
    for i, data in enumerate(payloads):
        src, dst, sport, dport = (server, client, 53, 40000) if i % 2 else (client, server, 40000, 53)
        frames.append((1000.0 + i, ether(ipv4(udp(sport, dport, data), src, dst))))
    # Then a TCP connection to the answered address: named by the DNS answer.
    frames.append((1010.0, ether(ipv4(tcp(40001, 443, dpkt.tcp.TH_SYN, 1), client, "192.0.2.9"))))
    path = write_pcap(tmp_path / "dns.pcap", frames)
    assert assert_same([str(path)], tmp_path) == 2


# -- an independent oracle: dpkt's DNS parser, on the well-formed messages it handles ------

_ascii_labels = st.lists(st.text("abcXYZ019-_", min_size=1, max_size=10), min_size=1, max_size=4).map(".".join)
_DPKT_TEXT = {  # record type → what Zeek writes for it, from dpkt's parse of the record
    1: lambda rr: socket.inet_ntoa(rr.ip),
    28: lambda rr: str(ipaddress.IPv6Address(rr.ip6)),
    2: lambda rr: rr.nsname.lower(),
    5: lambda rr: rr.cname.lower(),
    12: lambda rr: rr.ptrname.lower(),
    15: lambda rr: rr.mxname.lower(),
    33: lambda rr: rr.srvname.lower(),
    16: lambda rr: " ".join(f"TXT {len(s)} {s}" for s in rr.text),
}


@st.composite
def dpkt_replies(draw) -> bytes:
    """A message built by dpkt: a question and answers of the kinds dpkt parses, names
    in mixed case, dpkt's own name compression."""
    name = draw(_ascii_labels)
    question = dpkt.dns.DNS.Q(name=name, type=draw(st.sampled_from([1, 28, 5, 16])))
    msg = dpkt.dns.DNS(id=draw(st.integers(0, 0xFFFF)), qr=draw(st.integers(0, 1)), opcode=draw(st.integers(0, 5)),
                       rcode=draw(st.integers(0, 5)), qd=[question])
    msg.aa, msg.tc, msg.rd, msg.ra = (draw(st.booleans()) for _ in range(4))
    answers = []
    for rtype in draw(st.lists(st.sampled_from(sorted(_DPKT_TEXT)), max_size=5)):
        rr = dpkt.dns.DNS.RR(name=draw(st.sampled_from([name, draw(_ascii_labels)])), type=rtype, cls=1,
                             ttl=draw(st.integers(0, 2**31 - 1)))
        if rtype == 1:
            rr.ip = draw(st.binary(min_size=4, max_size=4))
        elif rtype == 28:
            rr.ip6 = draw(st.binary(min_size=16, max_size=16))
        elif rtype == 16:
            rr.text = [t.encode() for t in draw(st.lists(st.text("abc =;", max_size=20), min_size=1, max_size=3))]
        else:
            target = draw(_ascii_labels)
            setattr(rr, {2: "nsname", 5: "cname", 12: "ptrname", 15: "mxname", 33: "srvname"}[rtype], target)
            if rtype == 15:
                rr.preference = draw(st.integers(0, 0xFFFF))
            if rtype == 33:
                rr.priority, rr.weight, rr.port = (draw(st.integers(0, 0xFFFF)) for _ in range(3))
        answers.append(rr)
    msg.an = answers
    # Authority and additional records are counted, not read.
    msg.ns = [dpkt.dns.DNS.RR(name=name, type=2, cls=1, ttl=1, nsname=draw(_ascii_labels))
              for _ in range(draw(st.integers(0, 2)))]
    msg.ar = [dpkt.dns.DNS.RR(name=draw(_ascii_labels), type=1, cls=1, ttl=1, ip=bytes(4))
              for _ in range(draw(st.integers(0, 2)))]
    return bytes(msg)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dpkt_replies())
def test_message_and_kernel_read_what_dpkt_reads(data: bytes) -> None:
    """`Message` (the readable path) and the kernel against dpkt.dns, an implementation
    written apart from both, on the messages dpkt builds and parses: header fields, the
    question, and every answer's owner, type, TTL and dns.log text (names lower-cased, as
    Zeek's DNS analyzer writes them)."""
    d = dpkt.dns.DNS(data)
    q = d.qd[0]
    want = {
        "id": d.id, "qr": d.qr, "opcode": d.opcode, "aa": d.aa, "tc": d.tc, "rd": d.rd, "ra": d.ra, "z": d.zero,
        "rcode": d.rcode, "counts": (len(d.qd), len(d.an), len(d.ns), len(d.ar)),
        "question": (q.name.lower(), q.type, q.cls),
        "answers": [(rr.name.lower(), rr.type, rr.ttl, _DPKT_TEXT[rr.type](rr)) for rr in d.an],
    }
    # The kernel parses standard queries only (`fast.dns`: the analyzer's opcode rules).
    for parsed in (Message(data), kernel_parse(data)) if d.opcode == OPCODE_QUERY else (Message(data),):
        assert parsed is not None
        assert {f: getattr(parsed, f) for f in FIELDS} == {f: (bool(v) if f in ("qr", "aa", "tc", "rd", "ra") and
                                                              isinstance(getattr(parsed, f), bool) else v)
                                                          for f, v in want.items()}
