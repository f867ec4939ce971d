"""Body bytes counted in the kernel: `fast.dispatch.count_for_analyzers` and the offers behind it.

While an HTTP body of known length runs (and, for TLS, while no ClientHello has come), the
analyzers offer to leave the bytes to the kernel (`identifiers.stream.TcpStreams.offer`);
the fast engine then counts in-order segments inside the offer without replaying them to
Python. These tests hold the kernel rule to a readable oracle, and show on handcrafted
conversations (bodies in both directions, a reply in mid-upload, keep-alive, chunks,
retransmissions, a segment out of order, a snap-length cut, a server that speaks first)
that the logs stay the reference engine's while far fewer packets reach the analyzers
(a segment that ends a body is counted too; the analyzers hear of it as an EV_COUNTED).
"""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest
from helpers_pcap import ether, ipv4, tcp, write_pcap
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fast_engine import _run, assert_same

from pcapexfil.fast.dispatch import COUNTED, COUNTED_TO_END, TO_ANALYZERS, count_for_analyzers
from pcapexfil.fast.layout import EP_DTYPE
from pcapexfil.identifiers.http import HttpAnalyzer
from pcapexfil.identifiers.stream import TcpStreams
from pcapexfil.identifiers.tls import TlsAnalyzer
from pcapexfil.packet import TH_SYN

MOD = 1 << 32


def oracle(sk_seq: int, left: int, flags: int, seq: int, length: int, caplen: int) -> tuple[int, int, int]:
    """(verdict, next sequence, bytes left), as identifiers.stream would see the segment."""
    if flags & TH_SYN or caplen < length:
        return TO_ANALYZERS, sk_seq, left
    if seq == sk_seq:
        if length < left:
            return COUNTED, (sk_seq + length) % MOD, left - length
        if length == left:
            return COUNTED_TO_END, (sk_seq + length) % MOD, 0
        return TO_ANALYZERS, sk_seq, left
    behind = (sk_seq - seq) % MOD
    return (COUNTED if behind < MOD // 2 and behind >= length else TO_ANALYZERS), sk_seq, left


@settings(max_examples=400, deadline=None)
@given(sk_seq=st.integers(0, MOD - 1), left=st.integers(1, 1 << 40), flags=st.sampled_from([0x10, 0x18, 0x11, 0x12]),
       delta=st.integers(-70000, 70000), length=st.integers(1, 65535), cut=st.booleans(), to_end=st.booleans())
def test_count_for_analyzers_matches_its_oracle(sk_seq, left, flags, delta, length, cut, to_end):
    if to_end:  # the segment that ends the offer, exactly
        left, delta = length, 0
    seq = (sk_seq + delta) % MOD
    caplen = length - 1 if cut else length
    E = np.zeros(1, EP_DTYPE)
    E[0]["sk_seq"], E[0]["sk_left"], E[0]["sk_used"] = sk_seq, left, 5
    verdict = count_for_analyzers(E, 0, flags, seq, length, caplen)
    want_verdict, want_seq, want_left = oracle(sk_seq, left, flags, seq, length, caplen)
    assert verdict == want_verdict
    assert (int(E[0]["sk_seq"]), int(E[0]["sk_left"])) == (want_seq, want_left)
    assert int(E[0]["sk_used"]) == 5 + (left - want_left)


@settings(max_examples=400, deadline=None)
@given(sk_seq=st.integers(0, MOD - 1), left=st.integers(1, 1 << 40), flags=st.sampled_from([0x10, 0x18, 0x11, 0x12]),
       delta=st.integers(-70000, 70000), length=st.integers(1, 65535), cut=st.booleans(), to_end=st.booleans(),
       is_orig=st.booleans())
def test_count_offered_is_the_kernels_rule(sk_seq, left, flags, delta, length, cut, to_end, is_orig):
    """TcpStreams.count_offered, for segments the kernel handed over before the offers
    reached it, decides and counts as count_for_analyzers would have."""
    if to_end:
        left, delta = length, 0
    seq = (sk_seq + delta) % MOD
    caplen = length - 1 if cut else length
    E = np.zeros(1, EP_DTYPE)
    E[0]["sk_seq"], E[0]["sk_left"] = sk_seq, left
    verdict = count_for_analyzers(E, 0, flags, seq, length, caplen)
    streams = TcpStreams(frozenset({"http"}))
    direction = streams.orig if is_orig else streams.resp
    direction.next_seq = sk_seq
    heard: list[int] = []
    streams.offer("http", is_orig, left, heard.append)
    assert streams.count_offered(is_orig, flags, seq, length, caplen) == (verdict != TO_ANALYZERS)
    assert (direction.next_seq, streams.count_window(is_orig)[1]) == (int(E[0]["sk_seq"]), int(E[0]["sk_left"]))
    assert sum(heard) == direction.delivered == left - int(E[0]["sk_left"])


class _Conversation:
    """One TCP connection as frames, sequence numbers kept per side."""

    def __init__(self, frames: list, t: float, cport: int, sport: int = 80, client: str = "10.0.0.1",
                 server: str = "10.0.0.2") -> None:
        self.frames, self.t = frames, t
        self.cport, self.sport, self.client, self.server = cport, sport, client, server
        self.cseq, self.sseq = 1000, 50000
        self.wirelens: dict[int, int] = {}
        self.send(True, b"", 0x02)
        self.send(False, b"", 0x12)
        self.send(True, b"", 0x10)

    def segment(self, from_client: bool, data: bytes, flags: int = 0x18, seq: int | None = None) -> bytes:
        if from_client:
            seg = tcp(self.cport, self.sport, flags, self.cseq if seq is None else seq, self.sseq, data)
            return ether(ipv4(seg, self.client, self.server))
        seg = tcp(self.sport, self.cport, flags, self.sseq if seq is None else seq, self.cseq, data)
        return ether(ipv4(seg, self.server, self.client))

    def send(self, from_client: bool, data: bytes, flags: int = 0x18) -> None:
        self.frames.append((self.t, self.segment(from_client, data, flags)))
        self.t += 0.001
        step = len(data) + (1 if flags & 0x03 else 0)
        if from_client:
            self.cseq = (self.cseq + step) % MOD
        else:
            self.sseq = (self.sseq + step) % MOD

    def stream(self, from_client: bool, data: bytes, mss: int = 1000) -> None:
        for pos in range(0, len(data), mss):
            self.send(from_client, data[pos : pos + mss])

    def close(self) -> None:
        self.send(True, b"", 0x11)
        self.send(False, b"", 0x11)
        self.send(True, b"", 0x10)


def _response(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


def _capture(path) -> int:
    """Conversations whose bodies the kernel can count; returns the number of body segments."""
    rng = random.Random(7)
    frames: list = []
    t = 1_700_000_000.0
    segments = 0
    # Keep-alive: two downloads on one connection, then a HEAD.
    c = _Conversation(frames, t, 40001)
    for n in (3, 150):
        c.send(True, b"GET /f%d HTTP/1.1\r\nHost: a.example\r\n\r\n" % n)
        c.stream(False, _response(rng.randbytes(n * 1000)))
        segments += n
    c.send(True, b"HEAD /h HTTP/1.1\r\nHost: a.example\r\n\r\n")
    c.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n")
    c.close()
    # An upload the server answers half-way (its row is logged with what had come by then).
    c = _Conversation(frames, c.t + 1, 40002)
    body = rng.randbytes(100_000)
    c.send(True, b"POST /up HTTP/1.1\r\nHost: b.example\r\nContent-Length: %d\r\n\r\n" % len(body))
    c.stream(True, body[:15_000])
    c.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
    c.stream(True, body[15_000:])
    c.close()
    segments += 100
    # Retransmissions, a segment out of order and a chunked body inside one download.
    c = _Conversation(frames, c.t + 1, 40003)
    c.send(True, b"GET /r HTTP/1.1\r\nHost: c.example\r\n\r\n")
    c.stream(False, _response(rng.randbytes(8000)))
    c.send(True, b"GET /r2 HTTP/1.1\r\nHost: c.example\r\n\r\n")
    start = c.sseq
    head = _response(b"x" * 30_000)
    c.stream(False, head[:5000])
    frames.append((c.t, frames[-2][1]))  # a retransmitted segment, wholly old
    c.t += 0.001
    rest = head[5000:]
    late = c.segment(False, rest[1000:2000], seq=(start + 6000) % MOD)  # sent ahead of its hole
    frames.append((c.t, late))
    c.t += 0.001
    c.stream(False, rest)
    chunks = b"".join(b"%x\r\n" % 20_000 + b"y" * 20_000 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
    c.send(True, b"GET /chunked HTTP/1.1\r\nHost: c.example\r\n\r\n")
    c.stream(False, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
    c.close()
    segments += 98
    # A server that speaks first (a banner) before the client's ClientHello-less talk.
    c = _Conversation(frames, c.t + 1, 40004, sport=8443)
    c.stream(False, b"220 " + rng.randbytes(6000))
    c.send(True, b"hello\r\n")
    c.close()
    segments += 6
    # A snap-length cut in the middle of a body: its direction breaks for the analyzers.
    c = _Conversation(frames, c.t + 1, 40005)
    c.send(True, b"GET /cut HTTP/1.1\r\nHost: d.example\r\n\r\n")
    c.stream(False, _response(b"z" * 9000)[:3000])
    cut_at = len(frames)
    c.stream(False, _response(b"z" * 9000)[3000:])
    c.close()
    wirelens = [len(f) for _, f in frames]
    frames[cut_at] = (frames[cut_at][0], frames[cut_at][1][:-200])
    write_pcap(path, frames, wirelens=wirelens)
    return segments


def test_counted_bodies_leave_logs_as_the_reference_writes_them(tmp_path, monkeypatch):
    cap = tmp_path / "bodies.pcap"
    segments = _capture(cap)
    assert assert_same([str(cap)], tmp_path / "cmp") == 5

    calls = {"http": 0, "tls": 0}

    def counting(name, original):
        def on_packet(self, conn, is_orig, pkt):
            calls[name] += 1
            return original(self, conn, is_orig, pkt)
        return on_packet

    monkeypatch.setattr(HttpAnalyzer, "on_packet", counting("http", HttpAnalyzer.on_packet))
    monkeypatch.setattr(TlsAnalyzer, "on_packet", counting("tls", TlsAnalyzer.on_packet))
    _run([str(cap)], str(tmp_path / "fast-count"), "fast")
    fast = dict(calls)
    calls.update(http=0, tls=0)
    _run([str(cap)], str(tmp_path / "ref-count"), "reference")
    # The body segments stayed in the kernel: most of them never reached the analyzers.
    assert calls["http"] > segments
    assert fast["http"] < segments // 4


@pytest.mark.parametrize("port,handed", [(1080, True), (80, False)])
def test_segments_sent_before_an_offer_reached_the_kernel_are_counted(tmp_path, monkeypatch, port, handed):
    """A response head and its body in one kernel call: the kernel hands the body's first
    segments over before it hears of HTTP's offer (at its next call); past the PIA's first
    KiB (the service recognisers' window) they are counted in Python, not read. On a port
    whose analyzers wait behind the PIA gate (fast.pia_gate; on 1080 socks attaches by the
    port, so there is none) the kernel keeps the request and head and ends their wait at
    that segment: nothing reaches Python."""
    frames: list = []
    c = _Conversation(frames, 1_700_000_000.0, 40010, sport=port)
    request, head = b"GET /f HTTP/1.1\r\nHost: a.example\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 6000\r\n\r\n"
    c.send(True, request)
    c.send(False, head)
    c.stream(False, b"b" * 6000)
    c.close()
    cap = tmp_path / "late.pcap"
    write_pcap(cap, frames)
    assert assert_same([str(cap)], tmp_path / "cmp") == 1
    sizes: list[int] = []
    on_packet = HttpAnalyzer.on_packet

    def noting(self, conn, is_orig, pkt):
        sizes.append(pkt.payload_len)
        return on_packet(self, conn, is_orig, pkt)

    monkeypatch.setattr(HttpAnalyzer, "on_packet", noting)
    _run([str(cap)], str(tmp_path / "fast"), "fast")
    # The request, the head, and the first body segment (with them, past the KiB).
    assert sizes == ([len(request), len(head), 1000] if handed else [])


def _dns(name: str, address: str, reply: bool) -> bytes:
    """An A query for `name`, or its reply with `address`."""
    import dpkt

    msg = dpkt.dns.DNS(id=7, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)])
    if reply:
        msg.an = [dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_A, ttl=300, rdata=socket.inet_aton(address))]
        msg.qr, msg.ra = dpkt.dns.DNS_R, 1
    return bytes(msg)


def test_connections_without_payload_stay_in_the_kernel(tmp_path, monkeypatch):
    """Analyzers meet a connection at creation (`on_new`: services attached by the responder
    port, the DNS name looked up); only payload reaches `on_packet` in the fast engine. A
    scan, SYN-only attempts, a rejected connection and ICMP cost no packet replay, and the
    logs and records stay the reference engine's, DNS names included; a late flip carries
    the reassembly with it."""
    from helpers_pcap import udp

    from pcapexfil.identifiers.dns import DnsAnalyzer
    from pcapexfil.services import ServiceAnalyzer

    frames: list = []
    t = 100.0
    frames.append((t, ether(ipv4(udp(5000, 53, _dns("files.example", "10.0.0.9", False)), "10.0.0.1", "10.0.0.53"))))
    frames.append((t + 0.001, ether(ipv4(udp(53, 5000, _dns("files.example", "10.0.0.9", True)), "10.0.0.53",
                                         "10.0.0.1"))))
    for port in range(20, 40):  # a scan: SYN, and RST from the closed ports
        t += 0.01
        frames.append((t, ether(ipv4(tcp(40000 + port, port, 0x02, 7), "10.0.0.1", "10.0.0.9"))))
        frames.append((t + 0.001, ether(ipv4(tcp(port, 40000 + port, 0x14, 0, 8), "10.0.0.9", "10.0.0.1"))))
    t += 0.1
    frames.append((t, ether(ipv4(tcp(41000, 443, 0x02, 9), "10.0.0.1", "10.0.0.9"))))  # no answer
    import dpkt

    echo = dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=1, seq=1, data=b"ping"))
    frames.append((t + 0.01, ether(ipv4(echo, "10.0.0.1", "10.0.0.9"))))
    # SYN-ACK first between two likely server ports: flipped when the client's data follows.
    c = _Conversation(frames, t + 1, 6669, sport=80)
    del frames[-3:]
    c.cseq, c.sseq = 1000, 50000
    c.send(False, b"", 0x12)
    c.send(True, b"", 0x10)
    c.send(True, b"GET /late HTTP/1.1\r\nHost: late.example\r\n\r\n")
    c.stream(False, _response(b"k" * 3000))
    c.close()
    cap = tmp_path / "quiet.pcap"
    write_pcap(cap, frames)
    assert assert_same([str(cap)], tmp_path / "cmp") == 24

    packets: list[tuple[int, int, int]] = []
    created: list[str] = []
    on_packet, on_message, on_new = ServiceAnalyzer.on_packet, DnsAnalyzer.on_message, DnsAnalyzer.on_new
    kernel_pair = DnsAnalyzer.kernel_pair

    def noting_packet(self, conn, is_orig, pkt):
        packets.append((conn.orig_p, conn.resp_p, pkt.payload_len))
        return on_packet(self, conn, is_orig, pkt)

    def noting_message(self, conn, msg, size, ts):  # a DNS message the kernel parsed (fast.dns)
        packets.append((conn.orig_p, conn.resp_p, size))
        return on_message(self, conn, msg, size, ts)

    def noting_pair(self, conn, query, reply, ts):  # a transaction the kernel paired (fast.dns_pairs)
        packets.append((conn.orig_p, conn.resp_p, 2))  # its two messages
        return kernel_pair(self, conn, query, reply, ts)

    def noting_new(self, conn):
        created.append(conn.uid)
        return on_new(self, conn)

    monkeypatch.setattr(ServiceAnalyzer, "on_packet", noting_packet)
    monkeypatch.setattr(DnsAnalyzer, "on_message", noting_message)
    monkeypatch.setattr(DnsAnalyzer, "kernel_pair", noting_pair)
    monkeypatch.setattr(DnsAnalyzer, "on_new", noting_new)
    _, sink = _run([str(cap)], str(tmp_path / "fast"), "fast")
    assert created == [r.uid for r in sorted(sink.records, key=lambda r: r.ts)]
    # Only the DNS transactions and the late connection's payload reached the analyzers.
    assert {(o, r) for o, r, _ in packets} == {(5000, 53), (6669, 80)}
    assert all(n > 0 for _, _, n in packets)
    named = {(r.resp_h, r.resp_p): r.dns_name for r in sink.records}
    assert named[("10.0.0.9", 443)] == named[("10.0.0.9", 25)] == "files.example"
    late = next(r for r in sink.records if r.orig_p == 6669)
    assert late.history.startswith("^") and late.http_host == "late.example" and "http" in late.service
