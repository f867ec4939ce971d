"""TLS: SNI, JA3 (against pyja3), JA3S (against identifiers.md and hand-built hellos),
reassembly of split/out-of-order/retransmitted hellos, STARTTLS, lying lengths; the hello
parsers against dpkt.ssl's."""

from __future__ import annotations

import hashlib

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ja3 import ja3 as pyja3
from test_identifiers_support import (
    FakeConn,
    Run,
    client_hello_body,
    client_hello_record,
    ext,
    handshake,
    record,
    server_hello_body,
    sni_ext,
    syn,
    tcp,
)

from pcapexfil.identifiers import tls
from pcapexfil.identifiers.stream import streams
from pcapexfil.identifiers.tls import HandshakeScanner, Malformed, parse_client_hello, parse_server_hello
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


def test_the_client_side_is_released_after_the_client_hello() -> None:
    """The fast engine then keeps the client's packets in the kernel while the server's
    hello is awaited; once that is read, neither side is wanted."""
    conn = FakeConn()
    run = Run()
    run.feed(conn, _hello_flow(conn, [(0, client_hello_record("a.example"))]))
    shared = streams(conn)
    assert shared is not None
    assert tls.NAME not in shared.orig_wanted and tls.NAME in shared.resp_wanted
    run.feed(conn, [(False, tcp(conn, False, 5000, _server_flight()))])
    assert tls.NAME not in shared.orig_wanted | shared.resp_wanted
    assert run.finish(conn).ja3s == KNOWN_JA3S


def test_the_scanner_lets_a_certificate_go_by_unread() -> None:
    """`skippable` counts the bytes left inside a message the analyzer does not read (the
    Certificate) and inside its record; `skip` stands in for them, and the messages after it
    are found as if the bytes had been read. (A hello sharing its record with the rest of the
    flight is only read with the whole record: nothing is skipped then.)"""
    hello = record(22, handshake(2, server_hello_body(771, 49199, [ext(65281, b"\x00")])), 0x0303)
    rest_of_flight = handshake(11, b"\x00" * 3000) + handshake(12, b"\x03\x00\x17" + bytes(70)) + handshake(14, b"")
    flight = hello + record(22, rest_of_flight, 0x0303)
    read = [(t, len(b)) for t, b in HandshakeScanner(tls._SERVER_HELLO_AT).feed(flight)]
    scanner = HandshakeScanner(tls._SERVER_HELLO_AT)
    first = scanner.feed(flight[: len(hello) + 200])  # the hello and the certificate's start
    assert [t for t, _ in first] == [2]
    unread = scanner.skippable(tls._SERVER_READS)
    cert_end = len(hello) + 5 + 4 + 3000
    assert unread == cert_end - len(hello) - 200
    assert scanner.skippable(tls._SERVER_READS | {11}) == 0  # a message it reads is never skipped
    scanner.skip(unread - 100)
    assert scanner.skippable(tls._SERVER_READS) == 100
    scanner.skip(100)
    rest = scanner.feed(flight[cert_end:])
    assert [(t, len(b)) for t, b in first + rest] == read
    assert (12, b"\x03\x00\x17" + bytes(70)) in rest  # the key exchange, read
    one_record = HandshakeScanner(tls._SERVER_HELLO_AT)
    one_record.feed(_server_flight()[:200])
    assert one_record.skippable(tls._SERVER_READS) == 0


def test_a_record_that_ends_the_handshake_ends_it_at_its_header() -> None:
    """Anything but handshake and ChangeCipherSpec records ends the plaintext handshake: the
    scanner is done at the record's header, not after its body (the fast engine then keeps
    the rest of an encrypted flight in its kernel)."""
    sh = record(22, handshake(2, server_hello_body(771, 49199, None)), 0x0303)
    scanner = HandshakeScanner(tls._SERVER_HELLO_AT)
    assert [t for t, _ in scanner.feed(sh + record(20, b"\x01") + b"\x17\x03\x03\x10\x00" + bytes(10))] == [2]
    assert scanner.done


def test_a_part_of_the_registry_shares_streams_among_itself() -> None:
    """make_analyzers(only=...) (what benchmarks/bench_analyzers.py measures): the stream's
    readers are the analyzers that run, so without HTTP a TLS connection is let go of
    entirely once TLS has both hellos."""
    conn = FakeConn()
    run = Run(only={"tls", "dns"})
    assert [a.__class__.__name__ for a in run.analyzers] == ["TlsAnalyzer", "DnsAnalyzer"]
    run.feed(conn, _hello_flow(conn, [(0, client_hello_record("a.example"))]))
    shared = streams(conn)
    assert shared is not None
    assert shared.resp_wanted == {tls.NAME}  # DNS let go of port 443 at once; no HTTP reader
    run.feed(conn, [(False, tcp(conn, False, 5000, _server_flight()))])
    assert shared.exhausted(True) and shared.exhausted(False)


def test_starttls_after_plaintext_prefix() -> None:
    """IMAP on 143: the tagged OK to STARTTLS hands the stream over; the ClientHello that
    follows it is read (imap-analyzer.pac, proc_imap_token)."""
    prefix = b"a001 CAPABILITY\r\na002 STARTTLS\r\n"
    hello = client_hello_record("imap.example.net")
    conn = FakeConn(resp_p=143)
    run = Run()
    greeting = b"* OK IMAP ready\r\na001 OK done\r\na002 OK Begin TLS\r\n"
    run.feed(conn, [
        (True, syn(conn, True, 999)), (False, syn(conn, False, 4999)),
        (True, tcp(conn, True, 1000, prefix)), (False, tcp(conn, False, 5000, greeting)),
        (True, tcp(conn, True, 1000 + len(prefix), hello)),
        (False, tcp(conn, False, 5000 + len(greeting), _server_flight())),
    ])
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


@pytest.mark.parametrize(
    ("extensions", "text"),
    [
        # Offsets count from the start of the vector holding the field: the extensions block,
        # the extension's data, the server name list.
        ([sni_ext("a.example"), ext(23, b""), b"\x00\x0a\x00\x09\x00"], "need 9 bytes at 26, message ends at 27"),
        ([sni_ext("a.example"), b"\x00"], "need 2 bytes at 18, message ends at 19"),
        ([sni_ext("a.example"), b"\x00\x17\x00"], "need 2 bytes at 20, message ends at 21"),
        ([ext(0, b"\x00\x06\x00\x00\x50abc")], "need 80 bytes at 3, message ends at 6"),
        ([ext(0, b"\x00\x09\x00\x00\x03abc")], "need 9 bytes at 2, message ends at 8"),
        ([ext(10, b"\x00\x03\x00\x1d\x00")], "odd-length list of 16-bit values"),
        ([ext(11, b"\x05\x00")], "need 5 bytes at 1, message ends at 2"),
    ],
)
def test_malformed_client_hello_names_what_is_missing(extensions: list[bytes], text: str) -> None:
    """The text goes to weird.log's addl column: it must not change with the parser's internals."""
    with pytest.raises(Malformed) as exc:
        parse_client_hello(client_hello_body(0x0303, [0x1301], extensions))
    assert str(exc.value) == text


@pytest.mark.parametrize(
    ("cut", "text"),
    [
        (1, "need 2 bytes at 0, message ends at 1"),
        (10, "need 32 bytes at 2, message ends at 10"),
        (34, "need 1 bytes at 34, message ends at 34"),
        (36, "need 2 bytes at 35, message ends at 36"),
        (41, "need 1 bytes at 41, message ends at 41"),
        (50, "need 30 bytes at 45, message ends at 50"),
    ],
)
def test_truncated_client_hello_names_what_is_missing(cut: int, text: str) -> None:
    body = client_hello_body(0x0303, [0x1301, 0xC02F], [sni_ext("a.example"), ext(23, b""), ext(10, b"\x00\x04\x00\x1d")])
    with pytest.raises(Malformed) as exc:
        parse_client_hello(body[:cut])
    assert str(exc.value) == text


@pytest.mark.parametrize(
    ("cut", "text"),
    [
        (35, "need 2 bytes at 35, message ends at 35"),
        (36, "need 2 bytes at 35, message ends at 36"),
        (37, "need 1 bytes at 37, message ends at 37"),
        (43, "need 6 bytes at 40, message ends at 43"),
    ],
)
def test_truncated_server_hello_names_what_is_missing(cut: int, text: str) -> None:
    with pytest.raises(Malformed) as exc:
        parse_server_hello(server_hello_body(0x0303, 0x1301, [ext(43, b"\x03\x04")])[:cut])
    assert str(exc.value) == text


def test_ja3_cache_follows_the_fields() -> None:
    """Cached digests are keyed by every hashed field: extension order matters, and a cache
    cleared when full gives the same answers."""
    a = parse_client_hello(client_hello_body(0x0303, [0x1301], [ext(23, b""), ext(35, b"")]))
    b = parse_client_hello(client_hello_body(0x0303, [0x1301], [ext(35, b""), ext(23, b"")]))
    for hello in (a, b, a, b):
        assert hello.ja3() == hashlib.md5(hello.ja3_string().encode()).hexdigest()
    assert a.ja3() != b.ja3()
    tls._JA3_CACHE.clear()
    assert a.ja3() == hashlib.md5(b"771,4865,23-35,,").hexdigest()


def test_record_header_split_across_feeds_after_a_prefix() -> None:
    """The search for the first header resumes where the last one stopped, so a header cut
    between segments is still found."""
    hello = client_hello_record("cut.example")
    stream = b"STARTTLS ok\r\n" * 20 + hello
    scanner = HandshakeScanner(tls._CLIENT_HELLO_AT)
    messages = []
    for i in range(0, len(stream), 7):
        messages += scanner.feed(stream[i : i + 7])
    assert scanner.start == len(stream) - len(hello)
    assert [mtype for mtype, _ in messages] == [1]
    assert parse_client_hello(messages[0][1]).server_name == "cut.example"


# -- an independent oracle: dpkt.ssl's hello parsers ---------------------------------------

_u16s = st.integers(0, 0xFFFF)
# Extensions of random kinds and contents; not the three whose contents a ClientHello's
# parse reads (server_name, supported_groups, ec_point_formats): those come well-formed.
_extension_lists = st.lists(st.tuples(_u16s.filter(lambda kind: kind not in (0, 10, 11)), st.binary(max_size=40)),
                            max_size=8)


def _vec(size: int, data: bytes) -> bytes:
    return len(data).to_bytes(size, "big") + data


def _hello_body(version: int, session_id: bytes, middle: bytes, extensions: list[tuple[int, bytes]] | None) -> bytes:
    body = version.to_bytes(2, "big") + bytes(range(32)) + _vec(1, session_id) + middle
    if extensions is not None:
        body += _vec(2, b"".join(kind.to_bytes(2, "big") + _vec(2, data) for kind, data in extensions))
    return body


@settings(max_examples=500, deadline=None)
@given(version=_u16s, session_id=st.binary(max_size=32), ciphers=st.lists(_u16s, min_size=1, max_size=20),
       compression=st.binary(min_size=1, max_size=3), extensions=st.one_of(st.none(), _extension_lists),
       sni=st.one_of(st.none(), st.text("abcXYZ.-09", min_size=1, max_size=30)))
def test_client_hello_fields_as_dpkt_reads_them(version, session_id, ciphers, compression, extensions, sni) -> None:
    """parse_client_hello against dpkt.ssl.TLSClientHello, written apart from it: version,
    session id, cipher suites and extensions (GREASE values among the random ones), and
    the server name from a server_name extension."""
    if sni is not None:
        extensions = [(0, _vec(2, b"\x00" + _vec(2, sni.encode()))), *(extensions or [])]
    middle = _vec(2, b"".join(c.to_bytes(2, "big") for c in ciphers)) + _vec(1, compression)
    body = _hello_body(version, session_id, middle, extensions)
    theirs = dpkt.ssl.TLSClientHello(body)
    ours = parse_client_hello(body)
    assert ours.version == theirs.version
    assert ours.session_id == theirs.session_id
    assert ours.ciphers == [c.code for c in theirs.ciphersuites]
    assert ours.extensions == list(getattr(theirs, "extensions", []))  # dpkt sets none without the block
    if sni is not None:
        assert ours.server_name == sni


@settings(max_examples=300, deadline=None)
@given(version=_u16s, session_id=st.binary(max_size=32), cipher=_u16s,
       extensions=st.one_of(st.none(), _extension_lists))
def test_server_hello_fields_as_dpkt_reads_them(version, session_id, cipher, extensions) -> None:
    """parse_server_hello against dpkt.ssl.TLSServerHello: version, session id, the chosen
    cipher suite and the extensions, which JA3S is made of."""
    body = _hello_body(version, session_id, cipher.to_bytes(2, "big") + b"\x00", extensions)
    theirs = dpkt.ssl.TLSServerHello(body)
    ours = parse_server_hello(body)
    assert (ours.version, ours.session_id, ours.cipher) == (theirs.version, theirs.session_id, theirs.ciphersuite.code)
    assert ours.extensions == list(getattr(theirs, "extensions", []))
