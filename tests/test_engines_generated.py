"""Differential test on generated traffic: the fast engine writes what the reference writes.

Hypothesis builds small captures of TCP and UDP conversations carrying HTTP, TLS and DNS
messages, well formed or not (cut short, bytes flipped, random bytes), on their ports and
on others, cut into segments of random sizes, some reordered, retransmitted or lost, with
and without handshakes and closes, and the two engines must agree on every record and log
line (`test_fast_engine.assert_same`). This is where a change to what the fast engine
hands the analyzers (hooks.AppAnalyzer's contract) shows itself on inputs nobody wrote by
hand.
"""

from __future__ import annotations

import struct

from helpers_pcap import ether, ipv4, tcp, udp, write_pcap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fast_engine import assert_same
from test_identifiers_support import a_answer, client_hello_record, dns_message, handshake, record, server_hello_body

MOD = 1 << 32
SERVER_PORTS = (80, 443, 53, 8080, 6667, 22, 21, 5000)


def _http_request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"CONNECT", b"get", b"X"]))
    body = draw(st.binary(max_size=300)) if method in (b"POST", b"PUT") else b""
    host = draw(st.sampled_from([b"a.example", b"b.example:8080", b"", b"\xff.example"]))
    head = method + b" /" + draw(st.binary(max_size=20)).replace(b" ", b"%20").replace(b"\n", b"") + b" HTTP/1.1\r\n"
    head += b"Host: " + host + b"\r\n"
    if body or draw(st.booleans()):
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def _http_response(draw: st.DrawFn) -> bytes:
    body = draw(st.binary(max_size=2000))
    framing = draw(st.sampled_from(["length", "chunked", "close", "100"]))
    if framing == "length":
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    if framing == "chunked":
        chunks = b"".join(b"%x\r\n" % len(body[i : i + 500]) + body[i : i + 500] + b"\r\n"
                          for i in range(0, len(body), 500))
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    if framing == "100":
        return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    return b"HTTP/1.0 200 OK\r\n\r\n" + body


def _tls_server(draw: st.DrawFn) -> bytes:
    hello = handshake(2, server_hello_body(draw(st.sampled_from([0x0303, 0x0301])), 0xC02F, []))
    return record(22, hello + handshake(14, b""), 0x0303) + record(23, draw(st.binary(max_size=400)), 0x0303)


def _dns(draw: st.DrawFn, reply: bool) -> bytes:
    tid = draw(st.integers(0, 3))
    name = draw(st.sampled_from(["files.example", "x.y.example", "a" * 63 + ".example"]))
    if not reply:
        return dns_message(tid, 0x0100, (name, draw(st.sampled_from([1, 16, 28]))))
    return dns_message(tid, 0x8180, (name, 1), [a_answer(name, "10.0.0.2", draw(st.integers(0, 600)))])


def _damaged(draw: st.DrawFn, message: bytes) -> bytes:
    """The message as is, cut short, with a byte changed, or random bytes instead."""
    how = draw(st.sampled_from(["intact", "intact", "intact", "cut", "flip", "random"]))
    if how == "cut" and message:
        return message[: draw(st.integers(0, len(message) - 1))]
    if how == "flip" and message:
        i = draw(st.integers(0, len(message) - 1))
        return message[:i] + bytes([message[i] ^ draw(st.integers(1, 255))]) + message[i + 1 :]
    if how == "random":
        return draw(st.binary(max_size=200))
    return message


@st.composite
def conversation(draw: st.DrawFn, client_port: int, t0: float) -> list[tuple[float, bytes]]:
    """One connection's frames: a TCP session or a UDP exchange."""
    client, server = "10.0.0.1", "10.0.0.2"
    sport = draw(st.sampled_from(SERVER_PORTS))
    kind = draw(st.sampled_from(["http", "tls", "dns", "dns_tcp", "raw"]))
    if kind == "dns":
        frames = []
        t = t0
        for _ in range(draw(st.integers(1, 3))):
            frames.append((t, ether(ipv4(udp(client_port, sport, _damaged(draw, _dns(draw, False))), client, server))))
            if draw(st.booleans()):
                frames.append((t + 0.001, ether(ipv4(udp(sport, client_port, _damaged(draw, _dns(draw, True))),
                                                     server, client))))
            t += draw(st.sampled_from([0.01, 2.0, 12.0]))  # 12 s: past the DNS analyzer's expiry
        return frames
    if kind == "http":
        talk = [(True, _http_request(draw)), (False, _http_response(draw))] * draw(st.integers(1, 2))
    elif kind == "tls":
        talk = [(True, client_hello_record(draw(st.sampled_from(["s.example", None])))), (False, _tls_server(draw))]
    elif kind == "dns_tcp":
        q, r = _dns(draw, False), _dns(draw, True)
        talk = [(True, struct.pack("!H", len(q)) + q), (False, struct.pack("!H", len(r)) + r)]
    else:
        talk = [(draw(st.booleans()), draw(st.binary(min_size=1, max_size=300))) for _ in range(draw(st.integers(1, 3)))]
    talk = [(is_client, _damaged(draw, data)) for is_client, data in talk]

    seqs = {True: draw(st.integers(0, MOD - 1)), False: draw(st.integers(0, MOD - 1))}
    frames: list[tuple[float, bytes]] = []

    def send(is_client: bool, flags: int, data: bytes = b"", seq: int | None = None) -> None:
        s = seqs[is_client] if seq is None else seq
        ack = seqs[not is_client]
        seg = tcp(client_port if is_client else sport, sport if is_client else client_port, flags, s, ack, data)
        frames.append((t0 + 0.001 * len(frames), ether(ipv4(seg, client, server) if is_client
                                                          else ipv4(seg, server, client))))
        if seq is None and flags & 0x03:  # SYN and FIN take a sequence number
            seqs[is_client] = (seqs[is_client] + 1) % MOD

    handshake_seen = draw(st.sampled_from(["full", "full", "none", "synack-first"]))
    if handshake_seen == "full":
        send(True, 0x02)
        send(False, 0x12)
        send(True, 0x10)
    elif handshake_seen == "synack-first":
        seqs[True] = (seqs[True] + 1) % MOD  # its SYN was not captured
        send(False, 0x12)
        send(True, 0x10)
    segments: list[tuple[bool, int, bytes]] = []
    for is_client, data in talk:
        pos = 0
        while pos < len(data):
            n = draw(st.integers(1, 700))
            segments.append((is_client, seqs[is_client], data[pos : pos + n]))
            seqs[is_client] = (seqs[is_client] + len(data[pos : pos + n])) % MOD
            pos += n
    if len(segments) > 1 and draw(st.booleans()):
        i = draw(st.integers(0, len(segments) - 2))
        segments[i], segments[i + 1] = segments[i + 1], segments[i]  # out of order
    if segments and draw(st.booleans()):
        segments.insert(draw(st.integers(0, len(segments))), draw(st.sampled_from(segments)))  # retransmitted
    if len(segments) > 2 and draw(st.integers(0, 4)) == 0:
        del segments[draw(st.integers(0, len(segments) - 1))]  # lost
    for is_client, seq, data in segments:
        send(is_client, 0x18, data, seq)
    end = draw(st.sampled_from(["fin", "rst", "open"]))
    if end == "fin":
        send(True, 0x11)
        send(False, 0x11)
        send(True, 0x10)
    elif end == "rst":
        send(draw(st.booleans()), 0x04)
    return frames


@st.composite
def capture(draw: st.DrawFn) -> list[tuple[float, bytes]]:
    frames: list[tuple[float, bytes]] = []
    for k in range(draw(st.integers(1, 4))):
        frames += draw(conversation(40000 + k, 1000.0 + draw(st.sampled_from([0.0, 0.0005, 1.0, 30.0])) * k))
    return sorted(frames, key=lambda f: f[0])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(capture())
def test_generated_conversations_give_the_same_logs(tmp_path_factory, frames):
    tmp = tmp_path_factory.mktemp("gen")
    write_pcap(tmp / "gen.pcap", frames)
    assert_same([str(tmp / "gen.pcap")], tmp)
