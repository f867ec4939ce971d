"""TLS: SNI, JA3 (against pyja3), JA3S (against identifiers.md and hand-built hellos),
reassembly of split/out-of-order/retransmitted hellos, STARTTLS, lying lengths."""

from __future__ import annotations

import hashlib

import dpkt
from ja3 import ja3 as pyja3
from test_identifiers_support import (
    FakeConn,
    Run,
    client_hello_record,
    ext,
    handshake,
    record,
    server_hello_body,
    syn,
    tcp,
)

from pcapexfil.identifiers.tls import parse_client_hello, parse_server_hello
from pcapexfil.weird import Weirds

KNOWN_JA3S = "a704460bd0a887c62e4f462bf1bba96b"  # identifiers.md: 771,49199,65281-0-11


def _pyja3(payload: bytes) -> str:
    """pyja3's JA3 for a TCP segment carrying `payload`, read from an Ethernet frame."""
    seg = dpkt.tcp.TCP(sport=40000, dport=443, flags=dpkt.tcp.TH_ACK, data=payload)
    ip = dpkt.ip.IP(src=bytes([10, 0, 0, 5]), dst=bytes([203, 0, 113, 7]), p=6, data=seg)
    eth = dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
    (result,) = pyja3.process_pcap([(0.0, bytes(eth))], any_port=True)
    return result["ja3_digest"]


def _hello_flow(conn: FakeConn, pieces: list[tuple[int, bytes]], server: bytes | None = None) -> list:
    pkts = [(True, syn(conn, True, 999)), (False, syn(conn, False, 4999))]
    pkts += [(True, tcp(conn, True, 1000 + off, data)) for off, data in pieces]
    if server is not None:
        pkts.append((False, tcp(conn, False, 5000, server)))
    return pkts


def test_ja3_string_by_hand_and_equal_to_pyja3() -> None:
    rec = client_hello_record("example.com")
    hello = parse_client_hello(rec[9:])
    # GREASE (0x2a2a cipher, 0x0a0a extension, 0x1a1a group) left out; written by hand:
    assert hello.ja3_string() == "771,4865-49195-49199-156,0-23-65281-10-11-35,29-23-24,0"
    assert hello.ja3() == _pyja3(rec)
    assert hello.server_name == "example.com"


def test_ja3s_known_value() -> None:
    body = server_hello_body(771, 49199, [ext(65281, b"\x00"), ext(0, b""), ext(11, b"\x01\x00")])
    hello = parse_server_hello(body)
    assert hello.ja3s_string() == "771,49199,65281-0-11"
    assert hello.ja3s() == KNOWN_JA3S


def test_ja3s_tls13_uses_the_body_version() -> None:
    body = server_hello_body(0x0303, 0x1301, [ext(43, b"\x03\x04"), ext(51, b"\x00\x1d\x00\x20" + bytes(32))])
    hello = parse_server_hello(body)
    assert hello.ja3s_string() == "771,4865,43-51"
    assert hello.selected_version == 0x0304 and hello.key_share_group == 29
    assert hello.ja3s() == hashlib.md5(b"771,4865,43-51").hexdigest()


def test_ja3s_without_extensions_has_trailing_comma() -> None:
    hello = parse_server_hello(server_hello_body(769, 47, None))
    assert hello.ja3s_string() == "769,47,"
    assert hello.ja3s() == hashlib.md5(b"769,47,").hexdigest()


def test_ja3s_keeps_grease() -> None:
    hello = parse_server_hello(server_hello_body(771, 49199, [ext(0x0A0A, b""), ext(65281, b"\x00")]))
    assert hello.ja3s_string() == "771,49199,2570-65281"


def _server_flight() -> bytes:
    sh = handshake(2, server_hello_body(771, 49199, [ext(65281, b"\x00"), ext(0, b""), ext(11, b"\x01\x00")]))
    cert = handshake(11, b"\x00" * 3000)
    ske = handshake(12, b"\x03\x00\x17" + bytes(70))
    # One record holding the hello, the certificate and the key exchange, as servers send it.
    return record(22, sh + cert + ske + handshake(14, b""), 0x0303)


def test_split_over_three_segments_out_of_order_with_retransmission() -> None:
    hello = client_hello_record("split.example.org")
    a, b, c = hello[:7], hello[7:60], hello[60:]
    conn = FakeConn()
    run = Run()
    pieces = [(0, a), (len(a) + len(b), c), (0, a), (len(a), b), (len(a), b)]
    flight = _server_flight()
    run.feed(conn, _hello_flow(conn, pieces))
    # The server flight spans segments too, and arrives out of order.
    half = len(flight) // 2
    run.feed(conn, [(False, tcp(conn, False, 5000 + half, flight[half:])), (False, tcp(conn, False, 5000, flight[:half]))])
    rec = run.finish(conn)
    assert rec.server_name == "split.example.org"
    assert rec.ja3 == _pyja3(hello)
    assert rec.ja3s == KNOWN_JA3S
    assert rec.service == ["ssl"]


def test_starttls_after_plaintext_prefix() -> None:
    prefix = b"a001 CAPABILITY\r\na002 STARTTLS\r\n"
    hello = client_hello_record("imap.example.net")
    conn = FakeConn(resp_p=143)
    run = Run()
    server = b"* OK IMAP ready\r\na002 OK Begin TLS\r\n" + _server_flight()
    run.feed(conn, _hello_flow(conn, [(0, prefix), (len(prefix), hello)], server))
    rec = run.finish(conn)
    assert rec.server_name == "imap.example.net"
    assert rec.ja3s == KNOWN_JA3S
    assert "ssl" in rec.service


def test_lying_lengths_are_weird_not_fatal() -> None:
    good = client_hello_record("x.example")
    body = bytearray(good[9:])
    # Walk to the extensions block's length and make it claim more than the message holds.
    pos = 2 + 32
    pos += 1 + body[pos]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 1 + body[pos]
    body[pos : pos + 2] = (0xFFF0).to_bytes(2, "big")
    bad = record(22, handshake(1, bytes(body)))
    weirds = Weirds()
    conn = FakeConn()
    run = Run(weirds=weirds)
    run.feed(conn, _hello_flow(conn, [(0, bad)]))
    rec = run.finish(conn)
    assert rec.server_name is None and rec.ja3 is None
    assert weirds.counts["SSL_malformed_client_hello"] == 1


def test_not_tls_is_ignored() -> None:
    conn = FakeConn(resp_p=443)
    run = Run()
    run.feed(conn, _hello_flow(conn, [(0, b"\x16\x03\x01 garbage that is no handshake" * 3)], b"nope"))
    rec = run.finish(conn)
    assert rec.ja3 is None and rec.server_name is None and "ssl" not in rec.service


def test_ssl_log_written(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = FakeConn()
    run = Run(out_dir=str(tmp_path))
    run.feed(conn, _hello_flow(conn, [(0, client_hello_record("log.example"))], _server_flight()))
    run.finish(conn)
    run.close()
    lines = (tmp_path / "ssl.log").read_text().splitlines()
    fields = lines[6].split("\t")[1:]
    row = dict(zip(fields, lines[8].split("\t")))
    assert row["server_name"] == "log.example"
    assert row["version"] == "TLSv12"
    assert row["cipher"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert row["curve"] == "secp256r1"
    assert row["ja3s"] == KNOWN_JA3S


def test_hello_retry_request_fingerprints_the_first_server_hello() -> None:
    conn = FakeConn()
    run = Run()
    hrr = handshake(2, server_hello_body(0x0303, 0x1301, [ext(43, b"\x03\x04"), ext(51, b"\x00\x17")]))
    second = handshake(2, server_hello_body(0x0303, 0x1302, [ext(43, b"\x03\x04"), ext(51, b"\x00\x17" + bytes(67)), ext(41, b"\x00\x00")]))
    ccs = record(20, b"\x01", 0x0303)
    server = record(22, hrr, 0x0303) + ccs + record(22, second, 0x0303)
    run.feed(conn, _hello_flow(conn, [(0, client_hello_record("hrr.example"))], server))
    rec = run.finish(conn)
    assert rec.ja3s == hashlib.md5(b"771,4865,43-51").hexdigest()  # documented choice: first hello only
