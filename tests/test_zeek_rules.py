"""Handcrafted captures for rules taken from Zeek's source (docs/zeek-semantics.md names
each one). Every capture runs through both engines (identical logs asserted by
`test_fast_engine.assert_same`) and the records are checked against what the Zeek source
says."""

from __future__ import annotations

import struct

import dpkt
import pytest
from helpers_pcap import ether, ipv4, ipv4_fragments, ipv6, tcp, udp, write_pcap
from record_sink import RecordCollector
from test_fast_engine import assert_same
from test_identifiers_support import client_hello_record, ext, handshake, record, server_hello_body
from zeek_logs import read_zeek_log

from pcapexfil.pipeline import RunOptions, run
from pcapexfil.record import ConnRecord

SYN, ACK, PSH, FIN = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_FIN
CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def records(tmp_path, frames: list[tuple[float, bytes]], **opts) -> list[ConnRecord]:
    """Both engines agree on the capture; the reference engine's records, by start time."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = str(write_pcap(tmp_path / "t.pcap", frames))
    assert assert_same([path], tmp_path, local_nets=(), **opts) > 0
    sink = RecordCollector()
    run([path], RunOptions(out_dir=None, seed=1, local_nets=(), engine="reference", **opts), [sink])
    return sorted(sink.records, key=lambda r: r.ts)


def tcp_frame(ts: float, src: str, sport: int, dst: str, dport: int, flags: int, seq: int, ack: int = 0,
              data: bytes = b"") -> tuple[float, bytes]:
    return ts, ether(ipv4(tcp(sport, dport, flags, seq, ack, data), src, dst))


def udp_frame(ts: float, src: str, sport: int, dst: str, dport: int, data: bytes) -> tuple[float, bytes]:
    return ts, ether(ipv4(udp(sport, dport, data), src, dst))


def dns_query(ident: int = 0x1234) -> bytes:
    return bytes(dpkt.dns.DNS(id=ident, qd=[dpkt.dns.DNS.Q(name="example.com")]))


# -- roles: TCPAnalyzer::WantConnection ------------------------------------------------------


def test_syn_ack_first_on_irc_port_is_not_flipped_until_the_ack(tmp_path) -> None:
    """80 and 6667 are both likely server ports (http/main.zeek, irc/main.zeek), so the
    first SYN-ACK keeps its sender as originator; the client's ACK then flips the
    connection (corpus: core.tcp.flip-without-syn, `^hADadFf`)."""
    frames = [
        tcp_frame(1.0, SERVER, 80, CLIENT, 6667, SYN | ACK, 5000, 1001),
        tcp_frame(1.1, CLIENT, 6667, SERVER, 80, ACK, 1001, 5001),
        tcp_frame(1.2, CLIENT, 6667, SERVER, 80, PSH | ACK, 1001, 5001, b"GET / HTTP/1.0\r\n\r\n"),
    ]
    (rec,) = records(tmp_path, frames)
    assert (rec.orig_h, rec.orig_p, rec.resp_p) == (CLIENT, 6667, 80)
    assert rec.history == "^hAD"


def test_lone_syn_ack_from_likely_server_port_flips_at_once(tmp_path) -> None:
    (rec,) = records(tmp_path, [tcp_frame(1.0, SERVER, 443, CLIENT, 50000, SYN | ACK, 5000, 1001)])
    assert (rec.orig_h, rec.orig_p, rec.resp_p, rec.history) == (CLIENT, 50000, 443, "^h")


def test_bare_mode_has_no_likely_server_ports(tmp_path) -> None:
    (rec,) = records(tmp_path, [tcp_frame(1.0, SERVER, 443, CLIENT, 50000, SYN | ACK, 5000, 1001)],
                     zeek_bare_mode=True)
    assert (rec.orig_h, rec.orig_p, rec.history) == (SERVER, 443, "H")


# -- timers: DNS_Analyzer::ExpireTimer, inactivity.zeek ------------------------------------


def test_dns_query_repeated_after_15s_idle_is_a_new_connection(tmp_path) -> None:
    """dns_session_timeout (10 s): the DNS analyzer's timer fires at 10 s, finds the session
    idle for >= 9 s and removes it; the repeat on the same 5-tuple is a new connection."""
    frames = [udp_frame(100.0, CLIENT, 40000, SERVER, 53, dns_query()),
              udp_frame(115.0, CLIENT, 40000, SERVER, 53, dns_query(0x4321))]
    recs = records(tmp_path, frames)
    assert [(r.ts, r.orig_pkts) for r in recs] == [(100.0, 1), (115.0, 1)]


def test_dns_timer_rearms_while_the_session_is_active(tmp_path) -> None:
    """At 10 s the session was last active 2 s before: the timer re-arms (t + 10 s); at 20 s
    it has been idle 12 s and expires, so the query at 25 s starts a second connection."""
    frames = [udp_frame(100.0, CLIENT, 40000, SERVER, 53, dns_query()),
              udp_frame(108.0, CLIENT, 40000, SERVER, 53, dns_query(2)),
              udp_frame(125.0, CLIENT, 40000, SERVER, 53, dns_query(3))]
    recs = records(tmp_path, frames)
    assert [(r.ts, r.orig_pkts) for r in recs] == [(100.0, 2), (125.0, 1)]


def test_netbios_ns_and_mdns_ports_get_the_dns_timer_but_other_udp_does_not(tmp_path) -> None:
    for port, conns in ((137, 2), (5353, 2), (5355, 2), (5000, 1)):
        frames = [udp_frame(100.0, CLIENT, 40000, SERVER, port, dns_query()),
                  udp_frame(115.0, CLIENT, 40000, SERVER, port, dns_query(2))]
        assert len(records(tmp_path / str(port), frames)) == conns, port


def test_bare_mode_has_no_dns_timer(tmp_path) -> None:
    frames = [udp_frame(100.0, CLIENT, 40000, SERVER, 53, dns_query()),
              udp_frame(115.0, CLIENT, 40000, SERVER, 53, dns_query(2))]
    assert len(records(tmp_path, frames, zeek_bare_mode=True)) == 1


def _idle_session(port: int, idle: float) -> list[tuple[float, bytes]]:
    t = 1000.0
    return [
        tcp_frame(t, CLIENT, 50000, SERVER, port, SYN, 100),
        tcp_frame(t + 0.01, SERVER, port, CLIENT, 50000, SYN | ACK, 900, 101),
        tcp_frame(t + 0.02, CLIENT, 50000, SERVER, port, ACK, 101, 901),
        tcp_frame(t + 0.03, CLIENT, 50000, SERVER, port, PSH | ACK, 101, 901, b"x" * 10),
        tcp_frame(t + 0.03 + idle, CLIENT, 50000, SERVER, port, PSH | ACK, 111, 901, b"y" * 10),
    ]


def test_ssh_port_idle_for_10_minutes_stays_one_connection(tmp_path) -> None:
    """port_inactivity_timeouts: 22/tcp gets 1 hr at connection_established."""
    (rec,) = records(tmp_path, _idle_session(22, 600.0))
    assert rec.orig_pkts == 4 and rec.history.startswith("ShAD")


def test_other_port_idle_for_10_minutes_times_out_after_5(tmp_path) -> None:
    """tcp_inactivity_timeout (5 min) on a port without an entry: the session ends and the
    late packet starts a midstream connection."""
    recs = records(tmp_path, _idle_session(2222, 600.0))
    assert len(recs) == 2 and recs[0].orig_pkts == 3


def test_ssh_port_idle_for_over_an_hour_times_out(tmp_path) -> None:
    assert len(records(tmp_path, _idle_session(22, 3700.0))) == 2


def _confirmed_then_idle(port: int, client: bytes, server: bytes, idle: float) -> list[tuple[float, bytes]]:
    """A handshake, the server's then the client's first line, an idle gap, one more segment
    (one capture: both engines see the gap inside one kernel call)."""
    t = 1000.0
    c2 = 101 + len(client)
    return [*_tcp_exchange(port, client, server, t),
            tcp_frame(t + 0.04 + idle, CLIENT, 50000, SERVER, port, PSH | ACK, c2, 901 + len(server), b"y" * 10)]


def test_ssh_confirmed_on_any_port_gets_an_hour(tmp_path) -> None:
    """conn/inactivity.zeek, analyzer_inactivity_timeouts: SSH's confirmation (ssh/dpd.sig on
    2200/tcp) sets 1 hr, so 10 idle minutes do not end the session."""
    frames = _confirmed_then_idle(2200, b"SSH-2.0-OpenSSH_9.6\r\n", b"SSH-2.0-OpenSSH_9.0\r\n", 600.0)
    (rec,) = records(tmp_path / "ssh", frames)
    assert rec.service == ["ssh"] and rec.orig_pkts == 4
    recs = records(tmp_path / "hour", _confirmed_then_idle(2200, b"SSH-2.0-a\r\n", b"SSH-2.0-b\r\n", 3700.0))
    assert len(recs) == 2


def test_unconfirmed_session_on_the_same_port_times_out_after_5_minutes(tmp_path) -> None:
    recs = records(tmp_path, _confirmed_then_idle(2200, b"hello\r\n", b"SSH-2.0-OpenSSH_9.0\r\n", 600.0))
    assert len(recs) == 2 and recs[0].service == []


def test_ftp_confirmed_off_the_port_table_gets_an_hour(tmp_path) -> None:
    """2811/tcp is an FTP port (ftp/main.zeek) but no port_inactivity_timeouts entry: the hour
    comes from FTP's confirmation."""
    (rec,) = records(tmp_path, _confirmed_then_idle(2811, b"USER anonymous\r\n", b"220 ready\r\n", 600.0))
    assert rec.service == ["ftp"] and rec.orig_pkts == 4


# -- service: analyzer confirmation (pcapexfil.services, identifiers) ----------------------


def _tcp_exchange(port: int, client: bytes, server: bytes, t: float = 10.0) -> list[tuple[float, bytes]]:
    """A handshake, then the server's bytes and the client's (one segment each) from time t."""
    return [
        tcp_frame(t, CLIENT, 50000, SERVER, port, SYN, 100),
        tcp_frame(t + 0.01, SERVER, port, CLIENT, 50000, SYN | ACK, 900, 101),
        tcp_frame(t + 0.02, CLIENT, 50000, SERVER, port, ACK, 101, 901),
        tcp_frame(t + 0.03, SERVER, port, CLIENT, 50000, PSH | ACK, 901, 101, server),
        tcp_frame(t + 0.04, CLIENT, 50000, SERVER, port, PSH | ACK, 101, 901 + len(server), client),
    ]


def test_ssh_on_any_port_needs_both_version_strings(tmp_path) -> None:
    """ssh/dpd.sig attaches the analyzer on any port; it confirms once both versions are known."""
    (rec,) = records(tmp_path / "both", _tcp_exchange(2200, b"SSH-2.0-OpenSSH_9.6\r\n", b"SSH-2.0-OpenSSH_9.0\r\n"))
    assert rec.service == ["ssh"]
    frames = _tcp_exchange(22, b"", b"SSH-2.0-OpenSSH_9.0\r\n")[:4]  # the server's banner only
    (rec,) = records(tmp_path / "half", frames)
    assert rec.service == []


def test_ftp_and_smtp_on_their_registered_ports(tmp_path) -> None:
    (rec,) = records(tmp_path / "ftp", _tcp_exchange(21, b"USER anonymous\r\n", b"220 ready\r\n"))
    assert rec.service == ["ftp"]
    (rec,) = records(tmp_path / "smtp", _tcp_exchange(25, b"EHLO client.example\r\n", b"220 mx ESMTP\r\n"))
    assert rec.service == ["smtp"]
    # Off the ports ftp/dpd.sig needs a 230/331 after the greeting too.
    (rec,) = records(tmp_path / "other", _tcp_exchange(2121, b"USER anonymous\r\n", b"220 ready\r\n"))
    assert rec.service == []


def test_ntp_and_dhcp_datagrams(tmp_path) -> None:
    ntp_request = bytes([0x23]) + bytes(47)  # version 4, mode 3 (client)
    (rec,) = records(tmp_path / "ntp", [udp_frame(1.0, CLIENT, 123, SERVER, 123, ntp_request)])
    assert rec.service == ["ntp"]
    discover = bytes([1, 1, 6, 0]) + bytes(232) + b"\x63\x82\x53\x63" + b"\x35\x01\x01\xff"
    (rec,) = records(tmp_path / "dhcp", [udp_frame(1.0, "0.0.0.0", 68, "255.255.255.255", 67, discover)])
    assert rec.service == ["dhcp"]
    # As ntp-protocol.pac parses: no version check, mode 0's body is the rest of the data,
    # mode 7 needs 6 bytes (a scanner's 8-byte monlist request), a field past the end fails.
    for name, payload, service in [("mode0", b"\x00" * 48, ["ntp"]),
                                   ("monlist", bytes([0x17, 0, 3, 0x2A]) + bytes(4), ["ntp"]),
                                   ("short", bytes([0x23]) + bytes(10), []),
                                   ("control", bytes([0x16]) + bytes(9) + b"\x00\x10" + bytes(8), [])]:
        (rec,) = records(tmp_path / name, [udp_frame(1.0, CLIENT, 40000, SERVER, 123, payload)])
        assert rec.service == service, name


def test_a_certificate_segment_stays_in_the_kernel(tmp_path, monkeypatch) -> None:
    """The TLS analyzer offers the server's bytes inside a Certificate (it reads only the
    hello, the key exchange and the hello-done): the fast engine counts a segment that lies
    wholly inside it instead of handing it over, and both engines write the same ssl.log
    (curve from the key exchange after it)."""
    from pcapexfil.identifiers import tls

    hello = record(22, handshake(2, server_hello_body(771, 49199, [ext(65281, b"\x00")])), 0x0303)
    flight = hello + record(22, handshake(11, b"\x00" * 3000) + handshake(12, b"\x03\x00\x17" + bytes(70))
                            + handshake(14, b""), 0x0303)
    turns = [(True, client_hello_record("cert.example")), (False, flight[:1448]), (False, flight[1448:2896]),
             (False, flight[2896:])]
    seen: list[int] = []
    real_on_packet = tls.TlsAnalyzer.on_packet

    def on_packet(self, conn, is_orig, pkt):  # type: ignore[no-untyped-def]
        if not is_orig and pkt.payload:
            seen.append(len(pkt.payload))
        real_on_packet(self, conn, is_orig, pkt)

    monkeypatch.setattr(tls.TlsAnalyzer, "on_packet", on_packet)
    path = tmp_path / "t"
    (rec,) = records(path, _dialogue(443, turns))
    assert rec.service == ["ssl"]
    fast = read_zeek_log(str(path / "fast" / "ssl.log"))
    assert [row["curve"] for row in fast.rows] == ["secp256r1"]
    # `records` runs the reference engine, the fast one, the reference one again: the
    # reference engine reads all three server segments, the fast engine not the middle one.
    whole, last = [1448, 1448, len(flight) - 2896], len(flight) - 2896
    assert seen == [*whole, 1448, last, *whole]


def test_modbus_pdus_with_a_modbus_header(tmp_path) -> None:
    """modbus-protocol.pac: records of `length + 6` bytes, the body by function code;
    deliver_ModbusTCP_PDU confirms on one parsed whose protocol identifier is 0
    (zeek/zeek#3972's IsValidHeader), a binpac exception is a violation. 502/tcp only."""
    def pdu(tid: int, pid: int, fc: int, body: bytes, length: int | None = None) -> bytes:
        n = 2 + len(body) if length is None else length
        return tid.to_bytes(2, "big") + pid.to_bytes(2, "big") + n.to_bytes(2, "big") + bytes([1, fc]) + body

    read = pdu(1, 0, 3, bytes([0, 0, 0, 2]))  # read two holding registers
    answer = pdu(1, 0, 3, bytes([4, 0, 1, 0, 2]))
    for name, port, turns, service in [
        ("read", 502, [(True, read), (False, answer)], ["modbus"]),
        ("request-only", 502, [(True, read)], ["modbus"]),
        ("other-protocol-id", 502, [(True, pdu(1, 7, 3, bytes(4))), (False, pdu(1, 7, 0x83, b"\x02"))], []),
        ("short-body", 502, [(True, pdu(1, 0, 3, b"\x00"))], []),  # 4 bytes needed
        ("then-bad", 502, [(True, pdu(1, 0, 3, b"\x00") + read)], []),  # disabled first
        ("waiting", 502, [(True, pdu(1, 0, 3, bytes(4), length=600))], []),
        ("other-port", 503, [(True, read), (False, answer)], []),
    ]:
        (rec,) = records(tmp_path / name, _dialogue(port, turns))
        assert rec.service == service, name


def _ws_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode, (0x80 if masked else 0) | len(payload)])
    return head + (b"\x01\x02\x03\x04" if masked else b"") + payload


def test_websocket_after_an_http_upgrade(tmp_path) -> None:
    """HTTP.cc ReplyMade/HTTP_Upgrade: a 101 with `Connection: upgrade` and `Upgrade:
    websocket` answering the one request attaches the WebSocket analyzer, which confirms at
    the first whole message (websocket-protocol.pac: a first frame with an opcode, then
    continuation frames to FIN; a header breaking that is a violation). Another protocol
    gets a PIA on the rest (here SSH's banners), a 101 without those headers upgrades
    nothing."""
    get = (True, b"GET /chat HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")

    def switching(headers: bytes) -> tuple[bool, bytes]:
        return False, b"HTTP/1.1 101 Switching Protocols\r\n" + headers + b"\r\n"

    upgrade = switching(b"Upgrade: websocket\r\nConnection: Upgrade\r\n")
    for name, turns, service in [
        ("message", [get, upgrade, (True, _ws_frame(1, b"hi"))], ["http", "websocket"]),
        ("server-first", [get, upgrade, (False, _ws_frame(2, b"x", masked=False))], ["http", "websocket"]),
        ("in-the-101-chunk", [get, (False, upgrade[1] + _ws_frame(1, b"hi", masked=False))], ["http", "websocket"]),
        ("fragmented", [get, upgrade, (True, _ws_frame(1, b"a", fin=False)), (True, _ws_frame(0, b"b"))],
         ["http", "websocket"]),
        ("unfinished", [get, upgrade, (True, _ws_frame(1, b"a", fin=False))], ["http"]),
        ("continuation-first", [get, upgrade, (True, _ws_frame(0, b"a"))], ["http"]),
        ("ping-inside", [get, upgrade, (True, _ws_frame(1, b"a", fin=False) + _ws_frame(9, b""))], ["http"]),
        ("no-connection-upgrade", [get, switching(b"Upgrade: websocket\r\n"), (True, _ws_frame(1, b"hi"))],
         ["http"]),
        ("other-protocol", [get, switching(b"Upgrade: h2c\r\nConnection: upgrade\r\n"),
                            (True, b"SSH-2.0-client\r\n"), (False, b"SSH-2.0-server\r\n")], ["http", "ssh"]),
    ]:
        (rec,) = records(tmp_path / name, _dialogue(80, turns))
        assert rec.service == service, name


def test_radius_datagrams_that_the_grammar_parses(tmp_path) -> None:
    """radius-protocol.pac: a 20-byte header, then attributes to the datagram's end (each
    code, length >= 2, value); proc_radius_message confirms on any PDU parsed, a binpac
    exception is a violation. Registered on 1812/udp only."""
    header = bytes([1, 7]) + (38).to_bytes(2, "big") + bytes(16)  # Access-Request
    user = bytes([1, 7]) + b"alice"  # User-Name
    empty = bytes([80, 2])  # a value of no bytes
    for name, port, payload, service in [
        ("request", 1812, header + user + empty + bytes([4, 6, 10, 0, 0, 1]), ["radius"]),
        ("header-only", 1812, header, ["radius"]),
        ("short", 1812, header[:19], []),
        ("past-the-end", 1812, header + bytes([1, 9]) + b"alice", []),
        ("length-1", 1812, header + bytes([1, 1]), []),
        ("one-byte-left", 1812, header + user + b"\x01", []),
        ("other-port", 1813, header + user, []),
    ]:
        (rec,) = records(tmp_path / name, [udp_frame(1.0, CLIENT, 40000, SERVER, port, payload)])
        assert rec.service == service, name


def test_quic_initial_on_443_udp(tmp_path) -> None:
    initial = bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + bytes(8) + bytes([0]) + bytes(1186)
    (rec,) = records(tmp_path / "quic", [udp_frame(1.0, CLIENT, 50000, SERVER, 443, initial)])
    assert rec.service == ["quic"]
    short = bytes([0x43]) + bytes(1199)  # a short-header packet: no Initial
    (rec,) = records(tmp_path / "short", [udp_frame(1.0, CLIENT, 50000, SERVER, 443, short)])
    assert rec.service == []


def test_netbios_ns_on_137_is_dns(tmp_path) -> None:
    """dns/main.zeek registers the DNS analyzer on 137/udp (NetBIOS name service)."""
    query = bytes(dpkt.dns.DNS(id=7, qd=[dpkt.dns.DNS.Q(name="CKAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", type=32)]))
    (rec,) = records(tmp_path, [udp_frame(1.0, CLIENT, 137, "10.0.0.255", 137, query)])
    assert rec.service == ["dns"]


NETBIOS_NAMES = [
    # functions.bif's own example: 16 bytes, the last (the type) dropped.
    ("FEEIEFCAEOEFFEECEJEPFDCAEOEBENEF", "THE NETBIOS NAM"),
    # A workstation name padded with spaces, type 0x00: the padding goes.
    ("FHEPFCELFDFEEBFEEJEPEOCACACACAAA", "WORKSTATION"),
    # Bytes below 3 pass (written escaped); decoding stops at the first byte that is not
    # printable, a space or below 3 (0x0d here).
    ("EBAAEBANEBEBEBEBEBEBEBEBEBEBEBEB", r"A\x00A"),
    # Not the first-level encoding (a letter past P): the name as it was asked.
    ("EBEBEBEBEBEBEBEBEBEBEBEBEBEBEBEZ", "ebebebebebebebebebebebebebebebez"),
    # Not 32 letters.
    ("EBEB", "ebeb"),
]


@pytest.mark.parametrize("encoded,query", NETBIOS_NAMES, ids=[q for _, q in NETBIOS_NAMES])
def test_netbios_ns_names_are_decoded_as_zeek_decodes_them(tmp_path, encoded, query) -> None:
    """dns/main.zeek dns_request on 137/udp: `decode_netbios_name` (functions.bif), the
    name as asked where it decodes to nothing; a node status request (SRV's number) is
    NBSTAT. Elsewhere the name is the name."""
    frames = []
    for port, qtype in ((137, 32), (137, 33), (53, 33)):
        data = bytes(dpkt.dns.DNS(id=7, qd=[dpkt.dns.DNS.Q(name=encoded, type=qtype)]))
        frames.append(udp_frame(1.0 + len(frames), CLIENT, 40000 + port + qtype, SERVER, port, data))
    records(tmp_path, frames)
    rows = read_zeek_log(str(tmp_path / "reference" / "dns.log")).rows
    got = [(r["id.resp_p"], r["query"], r["qtype_name"]) for r in rows]
    assert got == [("137", query, "NIMLOC"), ("137", query, "NBSTAT"), ("53", encoded.lower(), "SRV")]


# -- service removal: dpd.zeek analyzer_violation_info / analyzer_failed -------------------


def _dialogue(port: int, turns: list[tuple[bool, bytes]], t: float = 10.0) -> list[tuple[float, bytes]]:
    """A handshake, then one segment per turn (True: the client's), each acknowledging the other's."""
    frames = [
        tcp_frame(t, CLIENT, 50000, SERVER, port, SYN, 100),
        tcp_frame(t + 0.01, SERVER, port, CLIENT, 50000, SYN | ACK, 900, 101),
        tcp_frame(t + 0.02, CLIENT, 50000, SERVER, port, ACK, 101, 901),
    ]
    cseq, sseq = 101, 901
    for i, (client, data) in enumerate(turns):
        ts = t + 0.03 + 0.01 * i
        if client:
            frames.append(tcp_frame(ts, CLIENT, 50000, SERVER, port, PSH | ACK, cseq, sseq, data))
            cseq += len(data)
        else:
            frames.append(tcp_frame(ts, SERVER, port, CLIENT, 50000, PSH | ACK, sseq, cseq, data))
            sseq += len(data)
    return frames


def test_ftp_reply_violation_after_confirmation_removes_the_service(tmp_path) -> None:
    """FTP_Analyzer::DeliverStream confirms on the client's USER and reports a violation on a
    reply without a numeric code or without a space after it; dpd.zeek disables the analyzer
    and analyzer_failed deletes "ftp" from the service (corpus: ftp-missing-reply-code,
    ftp-missing-space-after-reply-code)."""
    greeting, user = (False, b"220 ready\r\n"), (True, b"USER anonymous\r\n")
    (rec,) = records(tmp_path / "ok", _dialogue(21, [greeting, user, (False, b"331 password\r\n")]))
    assert rec.service == ["ftp"]
    (rec,) = records(tmp_path / "nocode", _dialogue(21, [greeting, user, (False, b"password please\r\n")]))
    assert rec.service == []
    (rec,) = records(tmp_path / "nospace", _dialogue(21, [greeting, user, (False, b"331password\r\n")]))
    assert rec.service == []
    # A multi-line reply: text lines between `230-` and `230 ` are no violation.
    multi = (False, b"230-Welcome\r\nno code here\r\n230 done\r\n")
    (rec,) = records(tmp_path / "multi", _dialogue(21, [greeting, user, multi]))
    assert rec.service == ["ftp"]


def test_ftp_violation_past_10k_is_ignored(tmp_path) -> None:
    """DPD::ignore_violations_after (10 KiB of c$orig$size + c$resp$size): a violation
    further into the connection leaves the service alone."""
    def frames(filler: int) -> list[tuple[float, bytes]]:
        turns = [(False, b"220 ready\r\n"), (True, b"USER anonymous\r\n")]
        turns += [(True, b"NOOP " + b"x" * 993 + b"\r\n")] * filler  # 1000-byte command lines
        return _dialogue(21, [*turns, (False, b"oops\r\n")])

    (rec,) = records(tmp_path / "early", frames(9))  # about 9 KiB before the bad line
    assert rec.service == []
    (rec,) = records(tmp_path / "late", frames(11))
    assert rec.service == ["ftp"]


def test_pop3_confirms_on_ok_to_user_capa_or_stls(tmp_path) -> None:
    """POP3.cc ProcessReply: AnalyzerConfirmation on a +OK in state USER, CAPA or STLS; pop3
    attaches by dpd.sig only (the server's first +OK, a client USER/APOP/CAPA/AUTH/STLS line)."""
    greeting = (False, b"+OK POP3 ready\r\n")
    for name, turns, service in [
        ("capa", [greeting, (True, b"CAPA\r\n"), (False, b"+OK list\r\nUSER\r\n.\r\n")], ["pop3"]),
        ("user", [greeting, (True, b"USER alice\r\n"), (False, b"+OK send PASS\r\n")], ["pop3"]),
        ("refused", [greeting, (True, b"USER alice\r\n"), (False, b"-ERR no\r\n")], []),
        # No +OK to begin the server's bytes: dpd_pop3_server does not match, nothing attaches.
        ("no-ok", [(False, b"* OK IMAP4 ready\r\n"), (True, b"USER alice\r\n"), (False, b"+OK\r\n")], []),
        # A +OK to PASS confirms nothing; the greeting's +OK neither.
        ("pass-only", [greeting, (True, b"APOP alice 0123\r\n"), (False, b"+OK in\r\n")], []),
    ]:
        (rec,) = records(tmp_path / name, _dialogue(8110, turns))
        assert rec.service == service, name


def test_pop3_server_line_without_a_pop3_word_is_a_violation(tmp_path) -> None:
    """ProcessReply: a server line outside a multi-line reply whose first word is none of
    POP3_cmd.def's is AnalyzerViolation; dpd.zeek deletes "pop3" (within 10 KiB). Lines of
    a multi-line reply are data, and an AUTH exchange's continuation lines are no violation."""
    greeting, capa = (False, b"+OK POP3 ready\r\n"), (True, b"CAPA\r\n")
    listing = (False, b"+OK list\r\nSASL PLAIN\r\n.\r\n")
    (rec,) = records(tmp_path / "bad", _dialogue(110, [greeting, capa, listing, (True, b"NOOP\r\n"),
                                                       (False, b"what\r\n")]))
    assert rec.service == []
    auth = [greeting, capa, listing, (True, b"AUTH PLAIN\r\n"), (False, b"+ \r\n"), (True, b"AGFsaWNlAHB3\r\n"),
            (False, b"+OK welcome\r\n"), (True, b"STAT\r\n"), (False, b"+OK 0 0\r\n")]
    (rec,) = records(tmp_path / "auth", _dialogue(110, auth))
    assert rec.service == ["pop3"]


def test_pop3_reads_nothing_of_a_partial_connection(tmp_path) -> None:
    turns = [(False, b"+OK POP3 ready\r\n"), (True, b"CAPA\r\n"), (False, b"+OK list\r\nUSER\r\n.\r\n")]
    (rec,) = records(tmp_path, _dialogue(110, turns)[3:])  # no handshake
    assert rec.service == []


def test_imap_confirms_on_its_port_as_proc_imap_token_does(tmp_path) -> None:
    """imap-analyzer.pac proc_imap_token: a server `* OK`, a client `capability` (compared as
    written) or STARTTLS (any case); registered on 143/tcp only (no dpd.sig)."""
    for name, port, turns, service in [
        ("greeting", 143, [(False, b"* OK IMAP4rev1 ready\r\n")], ["imap"]),
        ("capability", 143, [(True, b"a1 capability\r\n")], ["imap"]),
        ("upper-case", 143, [(True, b"a1 CAPABILITY\r\n"), (False, b"* CAPABILITY IMAP4rev1\r\n")], []),
        ("starttls", 143, [(True, b"a1 StartTLS\r\n")], ["imap"]),
        ("other-port", 1143, [(False, b"* OK IMAP4rev1 ready\r\n")], []),
    ]:
        (rec,) = records(tmp_path / name, _dialogue(port, turns))
        assert rec.service == service, name
    (rec,) = records(tmp_path / "partial", _dialogue(143, [(False, b"* OK IMAP4rev1 ready\r\n")])[3:])
    assert rec.service == []


def test_xmpp_confirms_on_the_clients_stream_token(tmp_path) -> None:
    """xmpp-analyzer.pac proc_xmpp_token: a client `stream:stream` token, unless a token that
    makes the analyzer skip came first; registered on 5222/tcp and 5269/tcp only."""
    stream = (True, b"<?xml version='1.0'?><stream:stream to='example.net' xmlns='jabber:client'>")
    for name, port, turns, service in [
        ("stream", 5222, [stream], ["xmpp"]),
        ("server-port", 5269, [stream], ["xmpp"]),
        ("skipped", 5222, [(True, b"<presence/>"), stream], []),
        ("server-only", 5222, [(False, b"<stream:stream from='example.net'>")], []),
        ("other-port", 5223, [stream], []),
    ]:
        (rec,) = records(tmp_path / name, _dialogue(port, turns))
        assert rec.service == service, name


def _filler(client: bool, segments: int) -> list[tuple[bool, bytes]]:
    """1000-byte segments from one side that carry the connection past 10 KiB when there
    are 11 of them (9: still below)."""
    return [(client, b"x" * 1000)] * segments


def test_http_request_line_violation_removes_the_service(tmp_path) -> None:
    """HTTP_Analyzer::DeliverStream: where a request line is expected on a keep-alive
    connection (HTTP/1.1), a line HTTP_RequestLine does not take is a violation ("not a
    http request line"); dpd.zeek deletes "http"."""
    get = (True, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
    ok = (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    (rec,) = records(tmp_path / "ok", _dialogue(80, [get, ok, get, ok]))
    assert rec.service == ["http"] and rec.http_host == "a.example"
    (rec,) = records(tmp_path / "bad", _dialogue(80, [get, ok, (True, b"\x16\x03\x01 not http\r\n")]))
    assert rec.service == []
    # HTTP/1.0 without keep-alive: a second request is not expected (RequestExpected), so
    # the same line is only crud, no violation.
    get10 = (True, b"GET / HTTP/1.0\r\n\r\n")
    ok10 = (False, b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    (rec,) = records(tmp_path / "crud", _dialogue(80, [get10, ok10, (True, b"\x16\x03\x01 not http\r\n")]))
    assert rec.service == ["http"]


def test_http_reply_line_violation_removes_the_service_within_10k(tmp_path) -> None:
    """A reply line that is not `HTTP/<version> <code>` where a reply is expected ("not a
    http reply line"); past DPD::ignore_violations_after it is ignored."""
    get = (True, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
    ok = (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    junk = (False, b"SSH-2.0-OpenSSH_9.6\r\n")
    (rec,) = records(tmp_path / "bad", _dialogue(80, [get, ok, get, junk]))
    assert rec.service == []
    body = b"HTTP/1.1 200 OK\r\nContent-Length: 11000\r\n\r\n"
    turns = [get, (False, body), *_filler(False, 11), get, junk]
    (rec,) = records(tmp_path / "late", _dialogue(80, turns))
    assert rec.service == ["http"]


def test_http_violation_before_the_request_never_confirms(tmp_path) -> None:
    """A server line before any request is a violation too: the analyzer is disabled and the
    request that follows confirms nothing."""
    turns = [(False, b"hello there\r\n"), (True, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")]
    (rec,) = records(tmp_path, _dialogue(80, turns))
    assert rec.service == []


def test_smtp_reply_code_violation_removes_the_service(tmp_path) -> None:
    """SMTP_Analyzer::ProcessLine: a server line without a reply code in 100..599 (an empty
    line included) is a violation; within 10 KiB dpd.zeek deletes "smtp"."""
    hello = [(False, b"220 mx ESMTP\r\n"), (True, b"EHLO client\r\n"), (False, b"250-mx\r\n250 SIZE 1000\r\n")]
    (rec,) = records(tmp_path / "ok", _dialogue(25, [*hello, (True, b"QUIT\r\n"), (False, b"221 bye\r\n")]))
    assert rec.service == ["smtp"]
    (rec,) = records(tmp_path / "bad", _dialogue(25, [*hello, (True, b"QUIT\r\n"), (False, b"bye\r\n")]))
    assert rec.service == []
    (rec,) = records(tmp_path / "empty", _dialogue(25, [*hello, (True, b"NOOP\r\n"), (False, b"\r\n")]))
    assert rec.service == []
    late = [*hello, *_filler(True, 11), (False, b"999 what\r\n")]
    (rec,) = records(tmp_path / "late", _dialogue(25, late))
    assert rec.service == ["smtp"]


def test_smtp_starttls_hands_the_stream_to_ssl(tmp_path) -> None:
    """A 220 answering STARTTLS (replies answer the queued commands in order) ends the
    line parsing (StartTLS): the TLS bytes after it are no violation."""
    turns = [(False, b"220 mx ESMTP\r\n"), (True, b"EHLO client\r\n"), (False, b"250-mx\r\n250 STARTTLS\r\n"),
             (True, b"STARTTLS\r\n"), (False, b"220 go ahead\r\n"), (True, client_hello_record("mx.example")),
             (False, record(22, handshake(2, server_hello_body(0x0303, 0xC02F, None)), 0x0303) + b"\r\n")]
    (rec,) = records(tmp_path / "tls", _dialogue(25, turns))
    assert rec.service == ["smtp", "ssl"]
    # The same 220 answering NOOP starts no TLS: the binary line after it is a violation.
    turns[3] = (True, b"NOOP\r\n")
    (rec,) = records(tmp_path / "noop", _dialogue(25, turns))
    assert "smtp" not in rec.service


def test_smtp_confirms_on_a_client_command(tmp_path) -> None:
    """SMTP_Analyzer::ProcessLine → RequestEvent → AnalyzerConfirmation: the first client
    line whose first word ParseCmd knows confirms, without the server's greeting (a capture
    that starts after it); unknown words before it do not, nor a word after leading blanks."""
    (rec,) = records(tmp_path / "mail", _dialogue(25, [(True, b"mail FROM:<a@example.com>\r\n")]))
    assert rec.service == ["smtp"]
    (rec,) = records(tmp_path / "later", _dialogue(25, [(True, b"XYZZY\r\n"), (True, b"NOOP\r\n")]))
    assert rec.service == ["smtp"]
    (rec,) = records(tmp_path / "unknown", _dialogue(25, [(True, b"HELLO there\r\n"), (True, b"EHLOx\r\n")]))
    assert rec.service == []
    (rec,) = records(tmp_path / "blank", _dialogue(25, [(True, b" EHLO client\r\n")]))
    assert rec.service == []
    (rec,) = records(tmp_path / "partial", _dialogue(25, [(True, b"EHLO client")]))  # no line end yet
    assert rec.service == []


def test_smtp_violation_before_confirmation_never_confirms(tmp_path) -> None:
    turns = [(False, b"hello\r\n220 mx ESMTP\r\n"), (True, b"EHLO client\r\n")]
    (rec,) = records(tmp_path, _dialogue(25, turns))
    assert rec.service == []


def test_smtp_off_its_ports_is_attached_by_its_signature_pair(tmp_path) -> None:
    """smtp/dpd.sig: dpd_smtp_client (HELO/EHLO in any case after blanks at a line's start
    of the client's bytes) enables smtp, with its reverse dpd_smtp_server (the server's
    bytes start with blanks, 220 and a blank or dash; `requires-reverse-signature`). On 25
    the analyzer needs neither."""
    greeting = (False, b"220 mx.example ESMTP\r\n")
    (rec,) = records(tmp_path / "ehlo", _dialogue(2525, [greeting, (True, b"EHLO client\r\n")]))
    assert rec.service == ["smtp"]
    # HELO on a later line after blanks; a `220-` greeting.
    later = [(False, b"220-mx\r\n220 ESMTP\r\n"), (True, b"NOOP\r\n\t hElO client\r\n")]
    (rec,) = records(tmp_path / "later", _dialogue(2525, later))
    assert rec.service == ["smtp"]
    # Blanks before the 220 match dpd_smtp_server, but the analyzer it attached finds a
    # line without a reply code (a violation) before the client's command.
    blank = [(False, b" 220 mx ESMTP\r\n"), (True, b"EHLO client\r\n")]
    (rec,) = records(tmp_path / "blank", _dialogue(2525, blank))
    assert rec.service == []
    (rec,) = records(tmp_path / "client-only", _dialogue(2525, [(True, b"EHLO client\r\n")]))
    assert rec.service == []
    (rec,) = records(tmp_path / "client-only-25", _dialogue(25, [(True, b"EHLO client\r\n")]))
    assert rec.service == ["smtp"]
    (rec,) = records(tmp_path / "no-helo", _dialogue(2525, [greeting, (True, b"MAIL FROM:<a@example.com>\r\n")]))
    assert rec.service == []
    (rec,) = records(tmp_path / "not-220", _dialogue(2525, [(False, b"554 busy\r\n"), (True, b"EHLO client\r\n")]))
    assert rec.service == []
    (rec,) = records(tmp_path / "220x", _dialogue(2525, [(False, b"220mx\r\n"), (True, b"EHLO client\r\n")]))
    assert rec.service == []


def test_smtp_attached_by_its_signature_hands_over_to_ssl(tmp_path) -> None:
    """Off 25/587 the SMTP analyzer smtp/dpd.sig attached hands over to SSL after a 220
    answering STARTTLS, as on its ports (SMTP.cc UpdateState)."""
    turns = [(False, b"220 mx ESMTP\r\n"), (True, b"EHLO client\r\n"), (False, b"250-mx\r\n250 STARTTLS\r\n"),
             (True, b"STARTTLS\r\n"), (False, b"220 go ahead\r\n"), (True, client_hello_record("mx.example")),
             (False, record(22, handshake(2, server_hello_body(0x0303, 0xC02F, None)), 0x0303))]
    (rec,) = records(tmp_path / "tls", _dialogue(2525, turns))
    assert rec.service == ["smtp", "ssl"]
    (rec,) = records(tmp_path / "no-greeting", _dialogue(2525, [(False, b"554 busy\r\n"), *turns[1:]]))
    assert rec.service == []


def test_ftp_off_its_ports_is_attached_by_its_signature_pair(tmp_path) -> None:
    """ftp/dpd.sig: dpd_ftp_server (blanks, a 120/220 greeting, then a line starting with
    230 or 331 in the server's bytes) enables ftp, with its reverse dpd_ftp_client (USER and
    a space after blanks at a line's start of the client's bytes). On 21 the analyzer
    confirms on any client command."""
    user = (True, b"USER anonymous\r\n")
    (rec,) = records(tmp_path / "331", _dialogue(2121, [(False, b"220 ready\r\n"), user,
                                                       (False, b"331 password please\r\n")]))
    assert rec.service == ["ftp"]
    (rec,) = records(tmp_path / "120-230", _dialogue(2121, [(False, b"\r\n120 soon\r\n"), (True, b"PWD\r\n user x\r\n"),
                                                           (False, b"220 ready\r\n230 in\r\n")]))
    assert rec.service == ["ftp"]
    (rec,) = records(tmp_path / "530", _dialogue(2121, [(False, b"220 ready\r\n"), user, (False, b"530 no\r\n")]))
    assert rec.service == []
    (rec,) = records(tmp_path / "no-greeting", _dialogue(2121, [user, (False, b"331 password please\r\n")]))
    assert rec.service == []
    no_user = [(False, b"220 ready\r\n"), (True, b"PASS secret\r\n"), (False, b"331 password please\r\n")]
    (rec,) = records(tmp_path / "no-user", _dialogue(2121, no_user))
    assert rec.service == []
    (rec,) = records(tmp_path / "no-user-21", _dialogue(21, no_user))
    assert rec.service == ["ftp"]


# -- HTTP CONNECT tunnel: HTTP.cc HTTP_Analyzer::DeliverStream, a new PIA_TCP -------------

_CONNECT_SMTP = (True, b"CONNECT mx.example:25 HTTP/1.1\r\nHost: mx.example:25\r\n\r\n")
_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
# Off smtp's ports (3128: HTTP's, where the fast engine's lane reads HTTP; 8240: HTTP attached
# by dpd_http_client).
_PROXY_PORTS = (3128, 8240)


def test_smtp_inside_an_http_connect_tunnel_is_attached_by_its_signatures(tmp_path) -> None:
    """After a 200 answering CONNECT, the tunnel's bytes go to a new PIA (HTTP.cc
    HTTP_Analyzer::DeliverStream), whose dpd.sig signatures attach analyzers on each
    direction's tunnel bytes as a new stream start: SMTP's pair (the server's 220, the
    client's EHLO) on any port (corpus: http-connect, `http,smtp`). The server's bytes after
    the reply head in the same segment are the tunnel's too
    (protocol_data_with_HTTP_CONNECT_reply)."""
    smtp = [(False, b"220 mx.example ESMTP\r\n"), (True, b"EHLO client\r\n"), (False, b"250 mx.example\r\n")]
    for port in _PROXY_PORTS:
        (rec,) = records(tmp_path / f"{port}", _dialogue(port, [_CONNECT_SMTP, (False, _ESTABLISHED), *smtp]))
        assert rec.service == ["http", "smtp"]
        same_segment = [_CONNECT_SMTP, (False, _ESTABLISHED + smtp[0][1]), *smtp[1:]]
        (rec,) = records(tmp_path / f"{port}-same-segment", _dialogue(port, same_segment))
        assert rec.service == ["http", "smtp"]
        # The 220 at the tunnel's first byte is dpd_smtp_server's anchor: not at the stream's.
        late = [_CONNECT_SMTP, (False, _ESTABLISHED), (False, b"554 no\r\n" + smtp[0][1]), *smtp[1:]]
        (rec,) = records(tmp_path / f"{port}-not-first", _dialogue(port, late))
        assert rec.service == ["http"]


def test_other_protocols_inside_an_http_connect_tunnel(tmp_path) -> None:
    """The tunnel's PIA tries every signature: ssh's (any port) and ftp's pair alike."""
    connect = (True, b"CONNECT host.example:22 HTTP/1.0\r\n\r\n")
    ssh = [(True, b"SSH-2.0-OpenSSH_9.6\r\n"), (False, b"SSH-2.0-OpenSSH_9.0\r\n")]
    ftp = [(False, b"220 ftp ready\r\n"), (True, b"USER anonymous\r\n"), (False, b"331 password please\r\n")]
    for port in _PROXY_PORTS:
        (rec,) = records(tmp_path / f"ssh-{port}", _dialogue(port, [connect, (False, _ESTABLISHED), *ssh]))
        assert rec.service == ["http", "ssh"]
        (rec,) = records(tmp_path / f"ftp-{port}", _dialogue(port, [connect, (False, _ESTABLISHED), *ftp]))
        assert rec.service == ["http", "ftp"]


def test_a_refused_http_connect_opens_no_tunnel(tmp_path) -> None:
    """HTTP_ReplyLine clears connect_request on any reply code but 200 (407, 403, even 201):
    no PIA reads what follows, which is the reply's body here (until the close, or its
    Content-Length), so nothing in it attaches SMTP."""
    greeting, ehlo = b"220 mx.example ESMTP\r\n", (True, b"EHLO client\r\n")
    refusals = {
        "407": b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
        "403": b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n" % len(greeting),
        "201": b"HTTP/1.1 201 Created\r\n\r\n",
    }
    for port in _PROXY_PORTS:
        for code, head in refusals.items():
            talk = [_CONNECT_SMTP, (False, head + greeting), ehlo]
            (rec,) = records(tmp_path / f"{port}-{code}", _dialogue(port, talk))
            assert rec.service == ["http"], code


def _http_rows(tmp_path) -> list[dict[str, str]]:
    """http.log as `records` had both engines write it (they agree), by start time."""
    return read_zeek_log(str(tmp_path / "reference" / "http.log")).rows


_GREETING = b"220 mx.example ESMTP\r\n"
_SMTP_TALK = [(False, _GREETING), (True, b"EHLO client\r\n"), (False, b"250 mx.example\r\n")]


def test_a_refused_http_connect_reads_on_as_http(tmp_path) -> None:
    """No tunnel after a code other than 200, a 2xx included (HTTP_ReplyLine clears
    connect_request), so the HTTP analyzer reads on: a 201 without Content-Length has a
    body until the close, which counts what the server sends after it. (The client's EHLO
    is an HTTP/0.9 request line to HTTP_RequestLine: a second row.)"""
    for port in _PROXY_PORTS:
        talk = [_CONNECT_SMTP, (False, b"HTTP/1.1 201 Created\r\n\r\n"), *_SMTP_TALK]
        (rec,) = records(tmp_path / f"201-{port}", _dialogue(port, talk))
        row = _http_rows(tmp_path / f"201-{port}")[0]
        assert (row["status_code"], row["response_body_len"]) == ("201", str(len(_GREETING) + len(_SMTP_TALK[2][1])))
        assert rec.service == ["http"]


def test_an_interim_reply_before_the_200_to_connect_opens_no_tunnel(tmp_path) -> None:
    """A 1xx reply line is one whose code is not 200: HTTP_ReplyLine clears connect_request,
    so the 200 after it opens no tunnel (HTTP.cc DeliverStream), and the tunnel's bytes are
    that reply's body (until the close); the same 200 alone opens it (body 0, smtp named)."""
    interim = (False, b"HTTP/1.1 100 Continue\r\n\r\n")
    for port in _PROXY_PORTS:
        talk = [_CONNECT_SMTP, interim, (False, _ESTABLISHED), *_SMTP_TALK]
        (rec,) = records(tmp_path / f"100-{port}", _dialogue(port, talk))
        row = _http_rows(tmp_path / f"100-{port}")[0]
        assert (row["info_code"], row["status_code"]) == ("100", "200")
        assert row["response_body_len"] == str(len(_GREETING) + len(_SMTP_TALK[2][1]))
        assert rec.service == ["http"]
        (rec,) = records(tmp_path / f"200-{port}", _dialogue(port, [_CONNECT_SMTP, (False, _ESTABLISHED), *_SMTP_TALK]))
        (row,) = _http_rows(tmp_path / f"200-{port}")
        assert (row["info_code"], row["status_code"], row["response_body_len"]) == ("-", "200", "0")
        assert rec.service == ["http", "smtp"]


def test_connect_is_compared_in_any_case_and_over_the_methods_length(tmp_path) -> None:
    """HTTP_Request: `strncasecmp(method, "CONNECT", method_len)`: a lower-case `connect`
    and a prefix of the word (`CONNEC`, `c`) set connect_request as CONNECT does, and the
    services analyzer's tunnel (the HTTP analyzer's) follows them alike; `CONNECTS` does not (its reply body
    then runs until the close). Off HTTP's ports (8240) dpd_http_server's reply attaches
    HTTP where dpd_http_client does not match."""
    for port in _PROXY_PORTS:
        for method in (b"connect", b"CONNEC", b"c"):
            request = (True, method + b" mx.example:25 HTTP/1.1\r\nHost: mx.example:25\r\n\r\n")
            where = tmp_path / f"{method.decode()}-{port}"
            (rec,) = records(where, _dialogue(port, [request, (False, _ESTABLISHED), *_SMTP_TALK]))
            row = _http_rows(where)[0]
            assert (row["method"], row["status_code"], row["response_body_len"]) == (method.decode(), "200", "0")
            assert rec.service == ["http", "smtp"], method
        request = (True, b"CONNECTS mx.example:25 HTTP/1.1\r\n\r\n")
        (rec,) = records(tmp_path / f"longer-{port}", _dialogue(port, [request, (False, _ESTABLISHED), *_SMTP_TALK]))
        row = _http_rows(tmp_path / f"longer-{port}")[0]
        assert row["response_body_len"] == str(len(_GREETING) + len(_SMTP_TALK[2][1]))
        assert rec.service == ["http"]


def test_a_reply_line_in_lower_case_opens_no_tunnel(tmp_path) -> None:
    """HTTP_ReplyLine's PrefixMatch takes `HTTP/` in this case only: `http/1.1 200` is not a
    reply line ("not a http reply line": dpd.zeek takes http out of the service), so no
    tunnel opens and nothing names the SMTP after it."""
    for port in _PROXY_PORTS:
        talk = [_CONNECT_SMTP, (False, b"http/1.1 200 Connection established\r\n\r\n"), *_SMTP_TALK]
        (rec,) = records(tmp_path / f"{port}", _dialogue(port, talk))
        assert rec.service == []

def test_connect_request_outlives_other_requests_on_a_keep_alive_connection(tmp_path) -> None:
    """connect_request is the connection's, not a request's: a CONNECT after a GET on a
    keep-alive connection opens the tunnel at its 200; and with the CONNECT pipelined
    behind the GET, the GET's own 200 opens it (HTTP.cc sets the flag on the request line
    and only a reply line clears it), its body going to the tunnel, the CONNECT left
    unanswered. The services analyzer's tunnel is the HTTP analyzer's (identifiers.http_tunnel):
    smtp is named after the later CONNECT; in the pipelined one the tunnel starts with the
    GET's body, so the 220 is not at its first byte: no smtp."""
    get = b"GET / HTTP/1.1\r\nHost: www.example\r\n\r\n"
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    later = [(True, get), (False, ok), _CONNECT_SMTP, (False, _ESTABLISHED), *_SMTP_TALK]
    pipelined = [(True, get + _CONNECT_SMTP[1]), (False, ok), (False, _ESTABLISHED), *_SMTP_TALK]
    for port in _PROXY_PORTS:
        (rec,) = records(tmp_path / f"later-{port}", _dialogue(port, later))
        rows = _http_rows(tmp_path / f"later-{port}")
        assert [(r["method"], r["status_code"], r["response_body_len"]) for r in rows] == [
            ("GET", "200", "2"), ("CONNECT", "200", "0")]
        assert rec.service == ["http", "smtp"]
        (rec,) = records(tmp_path / f"pipelined-{port}", _dialogue(port, pipelined))
        rows = _http_rows(tmp_path / f"pipelined-{port}")
        assert [(r["method"], r["status_code"], r["response_body_len"]) for r in rows] == [
            ("GET", "200", "0"), ("CONNECT", "-", "0")]
        assert rec.service == ["http"]


_KEEP_ALIVE_GET = (True, b"GET / HTTP/1.1\r\nHost: www.example\r\n\r\n")
_KEEP_ALIVE_OK = (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def _tls_talk(name: str) -> list[tuple[bool, bytes]]:
    return [(True, client_hello_record(name)),
            (False, record(22, handshake(2, server_hello_body(0x0303, 0xC02F, None)), 0x0303))]


def test_tls_in_a_connect_tunnel_after_a_keep_alive_get(tmp_path) -> None:
    """The tunnel TLS reads is the HTTP analyzer's (identifiers.http_tunnel): after a GET on
    a keep-alive connection, the CONNECT's 200 opens it, and dpd_tls_client attaches SSL on
    the tunnel's first bytes (ssl.log's row with the SNI, service http,ssl); on HTTP's port
    and where dpd_http_client attached HTTP."""
    connect = (True, b"CONNECT tls.example.net:443 HTTP/1.1\r\nHost: tls.example.net:443\r\n\r\n")
    for port in _PROXY_PORTS:
        talk = [_KEEP_ALIVE_GET, _KEEP_ALIVE_OK, connect, (False, _ESTABLISHED), *_tls_talk("tls.example.net")]
        (rec,) = records(tmp_path / f"{port}", _dialogue(port, talk))
        assert rec.service == ["http", "ssl"] and rec.server_name == "tls.example.net"
        rows = read_zeek_log(str(tmp_path / f"{port}" / "reference" / "ssl.log")).rows
        assert [row["server_name"] for row in rows] == ["tls.example.net"]


def test_a_connect_after_blank_lines_opens_the_tunnel(tmp_path) -> None:
    """HTTP_Analyzer skips the empty lines before a request line between messages
    (DeliverStream, empty_http_request): a CONNECT after them on a keep-alive connection
    sets connect_request, so its 200 opens the tunnel, whose SMTP and TLS are named."""
    for port in _PROXY_PORTS:
        talk = [_KEEP_ALIVE_GET, _KEEP_ALIVE_OK, (True, b"\r\n\r\n" + _CONNECT_SMTP[1]), (False, _ESTABLISHED),
                *_SMTP_TALK]
        (rec,) = records(tmp_path / f"smtp-{port}", _dialogue(port, talk))
        assert rec.service == ["http", "smtp"]
        connect = (True, b"\r\nCONNECT tls.example.net:443 HTTP/1.1\r\n\r\n")
        talk = [_KEEP_ALIVE_GET, _KEEP_ALIVE_OK, connect, (False, _ESTABLISHED), *_tls_talk("tls.example.net")]
        (rec,) = records(tmp_path / f"tls-{port}", _dialogue(port, talk))
        assert rec.service == ["http", "ssl"] and rec.server_name == "tls.example.net"


# -- HTTP inside a CONNECT tunnel: the tunnel's PIA attaches a second HTTP_Analyzer --------

_TUNNEL_GET = (True, b"GET /inner HTTP/1.1\r\nHost: inner.example:8080\r\n\r\n")
_TUNNEL_OK = (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
_TUNNEL_GET_2 = (True, b"GET /two HTTP/1.1\r\nHost: second.example\r\n\r\n")
_TUNNEL_404 = (False, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
_CONNECT_WEB = (True, b"CONNECT www.example:80 HTTP/1.1\r\nHost: www.example:80\r\n\r\n")


def _tunnel_rows(tmp_path) -> list[tuple[str, ...]]:
    """http.log's rows, each with whether its uid is the one connection's of conn.log."""
    (conn,) = read_zeek_log(str(tmp_path / "reference" / "conn.log")).rows
    return [(r["uid"] == conn["uid"], r["trans_depth"], r["method"], r["host"], r["uri"], r["status_code"],
             r["response_body_len"]) for r in _http_rows(tmp_path)]


def test_http_inside_an_http_connect_tunnel_is_a_second_http_analyzer(tmp_path) -> None:
    """After a 200 to CONNECT the tunnel's PIA attaches HTTP by http/dpd.sig (HTTP.cc
    DeliverStream, PIA_TCP::ActivateAnalyzer): a new HTTP_Analyzer whose requests are
    logged with the connection's uid; http/main.zeek's c$http_state is the connection's,
    so their trans_depth goes on from the CONNECT's (2, 3). The service stays `http`; the
    record's http_host is the first row's Host (the CONNECT's, written at its 200)."""
    talk = [_CONNECT_WEB, (False, _ESTABLISHED), _TUNNEL_GET, _TUNNEL_OK, _TUNNEL_GET_2, _TUNNEL_404]
    for port in _PROXY_PORTS:
        (rec,) = records(tmp_path / f"{port}", _dialogue(port, talk))
        assert _tunnel_rows(tmp_path / f"{port}") == [
            (True, "1", "CONNECT", "www.example:80", "www.example:80", "200", "0"),
            (True, "2", "GET", "inner.example:8080", "/inner", "200", "2"),
            (True, "3", "GET", "second.example", "/two", "404", "0")]
        assert rec.service == ["http"]
        assert rec.http_host == "www.example"
        # After a keep-alive GET the CONNECT is the connection's second request: the tunnel's third.
        get = (True, b"GET / HTTP/1.1\r\nHost: proxy.example\r\n\r\n")
        ok = (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        (rec,) = records(tmp_path / f"later-{port}", _dialogue(port, [get, ok, *talk[:4]]))
        assert [r[1:3] for r in _tunnel_rows(tmp_path / f"later-{port}")] == [
            ("1", "GET"), ("2", "CONNECT"), ("3", "GET")]
        assert rec.http_host == "proxy.example"


def test_a_connect_without_host_names_the_connection_by_the_tunnels_request(tmp_path) -> None:
    """The record's http_host is the first written row's Host (pcapexfil.zeekread reads
    http.log so): without one on the CONNECT, the tunnel's first request's, port removed."""
    connect = (True, b"CONNECT www.example:80 HTTP/1.1\r\n\r\n")
    for port in _PROXY_PORTS:
        (rec,) = records(tmp_path / f"{port}", _dialogue(port, [connect, (False, _ESTABLISHED), _TUNNEL_GET,
                                                                _TUNNEL_OK]))
        assert [r[1:4] for r in _tunnel_rows(tmp_path / f"{port}")] == [
            ("1", "CONNECT", "-"), ("2", "GET", "inner.example:8080")]
        assert rec.http_host == "inner.example"


def test_a_tunnel_whose_bytes_no_http_signature_matches_has_no_http_rows(tmp_path) -> None:
    """The tunnel's HTTP analyzer is attached by http/dpd.sig only (no port: the PIA builds
    no analyzer by port): a request line with a method dpd_http_client does not list attaches
    none, though HTTP_RequestLine would take it; nor do SMTP's or TLS's bytes. The server's
    `HTTP/<digit>` (dpd_http_server, which enables http on its own: `http.dpd_signature`)
    attaches it, and the buffered request is replayed to it."""
    fetch = (True, b"FETCH /x HTTP/1.1\r\nHost: inner.example\r\n\r\n")
    tls = [(True, client_hello_record("tls.example"))]
    for port in _PROXY_PORTS:
        for name, inner in (("method", [fetch]), ("smtp", _SMTP_TALK), ("tls", tls)):
            talk = [_CONNECT_WEB, (False, _ESTABLISHED), *inner]
            (rec,) = records(tmp_path / f"{name}-{port}", _dialogue(port, talk))
            assert [r[2] for r in _tunnel_rows(tmp_path / f"{name}-{port}")] == ["CONNECT"], name
            assert rec.http_host == "www.example"
        (rec,) = records(tmp_path / f"reply-{port}", _dialogue(port, [_CONNECT_WEB, (False, _ESTABLISHED), fetch,
                                                                      _TUNNEL_OK]))
        assert [r[1:3] for r in _tunnel_rows(tmp_path / f"reply-{port}")] == [("1", "CONNECT"), ("2", "FETCH")]


# -- SOCKS tunnel: SOCKS.cc SOCKS_Analyzer::DeliverStream, a new PIA_TCP --------------------

_SOCKS5_GREETING, _SOCKS5_NO_AUTH = (True, b"\x05\x01\x00"), (False, b"\x05\x00")
_SOCKS5_REQUEST = (True, b"\x05\x01\x00\x03\x0amx.example\x00\x19")


def _socks5_reply(status: int) -> tuple[bool, bytes]:
    return False, b"\x05" + bytes([status]) + b"\x00\x01\x0a\x00\x00\x02\x00\x19"


_SOCKS5 = [_SOCKS5_GREETING, _SOCKS5_NO_AUTH, _SOCKS5_REQUEST, _socks5_reply(0)]
_SOCKS4 = [(True, b"\x04\x01\x00\x19\x0a\x00\x00\x02user\x00"), (False, b"\x00\x5a\x00\x19\x0a\x00\x00\x02")]
# 1080: socks/main.zeek's port; 8124: SOCKS attached by socks/dpd.sig.
_SOCKS_PORTS = (1080, 8124)


def test_the_tunnel_after_a_socks_handshake_is_a_new_pia(tmp_path) -> None:
    """Once the client's request (socks5_request, socks4_request) and the server's reply
    (socks5_reply, socks4_reply) are parsed, every later chunk goes to a new PIA whose
    signatures attach analyzers as on a new stream: SMTP's pair, ssh's."""
    ssh = [(True, b"SSH-2.0-OpenSSH_9.6\r\n"), (False, b"SSH-2.0-OpenSSH_9.0\r\n")]
    for port in _SOCKS_PORTS:
        (rec,) = records(tmp_path / f"5-{port}", _dialogue(port, [*_SOCKS5, *_SMTP_TALK]))
        assert rec.service == ["socks", "smtp"]
        # SOCKS4 as services.socks reads socks4_reply (docs/zeek-semantics.md, row "SOCKS
        # tunnel": the stored pac's version byte before the reply is not followed).
        (rec,) = records(tmp_path / f"4-{port}", _dialogue(port, [*_SOCKS4, *_SMTP_TALK]))
        assert rec.service == ["socks", "smtp"]
        (rec,) = records(tmp_path / f"ssh-{port}", _dialogue(port, [*_SOCKS5, *ssh]))
        assert rec.service == ["socks", "ssh"]
        # SSL too: TLS's hand-over watch (identifiers.tls.STARTTLS) reads the same rule.
        tls = [(True, client_hello_record("mx.example")),
               (False, record(22, handshake(2, server_hello_body(0x0303, 0xC02F, None)), 0x0303))]
        (rec,) = records(tmp_path / f"tls-{port}", _dialogue(port, [*_SOCKS5, *tls]))
        assert rec.service == ["socks", "ssl"] and rec.server_name == "mx.example"
    # Username/password (RFC 1929) before the request; on 1080 only: dpd_socks5_server does
    # not match the server's choice of it (`\x05\x02`).
    auth = [(True, b"\x05\x01\x02"), (False, b"\x05\x02"), (True, b"\x01\x04user\x04pass"), (False, b"\x01\x00"),
            _SOCKS5_REQUEST, _socks5_reply(0)]
    (rec,) = records(tmp_path / "userpass", _dialogue(1080, [*auth, *_SMTP_TALK]))
    assert rec.service == ["socks", "smtp"]


def test_the_socks_tunnel_opens_whatever_the_replys_status(tmp_path) -> None:
    """EndpointDone(false) comes with every parsed reply (socks-analyzer.pac socks5_reply):
    a refusal (5, connection refused) too."""
    for port in _SOCKS_PORTS:
        talk = [_SOCKS5_GREETING, _SOCKS5_NO_AUTH, _SOCKS5_REQUEST, _socks5_reply(5), *_SMTP_TALK]
        (rec,) = records(tmp_path / f"{port}", _dialogue(port, talk))
        assert rec.service == ["socks", "smtp"]


def test_the_socks_tunnel_starts_at_the_chunk_after_the_handshake(tmp_path) -> None:
    """SOCKS.cc forwards whole chunks once both endpoints are done: the bytes after the
    reply in its own segment went to the SOCKS parser, so a greeting there is not the
    tunnel's first (dpd_smtp_server's 220 is not at its start: no smtp); nor is anything
    without a valid request first (socks5_request refuses a reserved byte other than 0)."""
    for port in _SOCKS_PORTS:
        same_segment = [*_SOCKS5[:3], (False, _socks5_reply(0)[1] + _GREETING), *_SMTP_TALK[1:]]
        (rec,) = records(tmp_path / f"same-{port}", _dialogue(port, same_segment))
        assert rec.service == ["socks"]
        bad_request = (True, b"\x05\x01\x01\x03\x0amx.example\x00\x19")
        talk = [_SOCKS5_GREETING, _SOCKS5_NO_AUTH, bad_request, _socks5_reply(0), *_SMTP_TALK]
        (rec,) = records(tmp_path / f"reserved-{port}", _dialogue(port, talk))
        assert rec.service == ["socks"]


def test_http_inside_a_socks_tunnel_is_attached_by_its_signatures(tmp_path) -> None:
    """The SOCKS tunnel's PIA attaches HTTP by http/dpd.sig (SOCKS.cc DeliverStream, a new
    PIA_TCP; PIA_TCP::ActivateAnalyzer): its confirmation adds `http` after `socks`, its
    rows carry the connection's uid with trans_depth from 1 (no HTTP request before on the
    connection: on 1080, an HTTP port too, the connection's own HTTP analyzer gave up on
    the handshake), and the first Host names the record. SMTP there: no http rows."""
    for port in _SOCKS_PORTS:
        # Past the tunnel PIA's buffer (the services analyzer is done there), HTTP reads on.
        large = (False, b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + b"x" * 3000)
        talk = [*_SOCKS5, _TUNNEL_GET, large, _TUNNEL_GET_2, _TUNNEL_404]
        (rec,) = records(tmp_path / f"5-{port}", _dialogue(port, talk))
        assert _tunnel_rows(tmp_path / f"5-{port}") == [
            (True, "1", "GET", "inner.example:8080", "/inner", "200", "3000"),
            (True, "2", "GET", "second.example", "/two", "404", "0")]
        assert rec.service == ["socks", "http"]
        assert rec.http_host == "inner.example"
        (rec,) = records(tmp_path / f"4-{port}", _dialogue(port, [*_SOCKS4, _TUNNEL_GET, _TUNNEL_OK]))
        assert [r[1:3] for r in _tunnel_rows(tmp_path / f"4-{port}")] == [("1", "GET")]
        assert rec.service == ["socks", "http"]
        (rec,) = records(tmp_path / f"smtp-{port}", _dialogue(port, [*_SOCKS5, *_SMTP_TALK]))
        assert not (tmp_path / f"smtp-{port}" / "reference" / "http.log").exists() or not _http_rows(
            tmp_path / f"smtp-{port}")
        assert rec.service == ["socks", "smtp"] and rec.http_host is None


def _dns_datagrams(payloads: list[bytes]) -> list[tuple[float, bytes]]:
    """One UDP 5-tuple to port 53, the datagrams alternating query (client) and reply."""
    frames = []
    for i, data in enumerate(payloads):
        src, dst, sport, dport = (CLIENT, SERVER, 40000, 53) if i % 2 == 0 else (SERVER, CLIENT, 53, 40000)
        frames.append(udp_frame(1.0 + 0.01 * i, src, sport, dst, dport, data))
    return frames


def _too_many_questions(qdcount: int = 26) -> bytes:
    return struct.pack("!HHHHHH", 9, 0x0100, qdcount, 0, 0, 0) + b"\x00" * 30


def test_dns_more_than_25_questions_is_a_violation(tmp_path) -> None:
    """DNS_Interpreter::ParseMessage: qdcount above dns_max_queries (25) is
    AnalyzerViolation("DNS_Conn_count_too_large"): a confirmed "dns" is removed within
    10 KiB, kept past it; before any confirmation the analyzer is disabled for good."""
    reply = bytes(dpkt.dns.DNS(id=0x1234, qr=1, qd=[dpkt.dns.DNS.Q(name="example.com")]))
    (rec,) = records(tmp_path / "bad", _dns_datagrams([dns_query(), reply, _too_many_questions()]))
    assert rec.service == []
    (rec,) = records(tmp_path / "25", _dns_datagrams([dns_query(), reply, _too_many_questions(25)]))
    assert rec.service == ["dns"]
    big = [dns_query(), reply] + [b"\x00" * 1000] * 11 + [_too_many_questions()]
    (rec,) = records(tmp_path / "late", _dns_datagrams(big))
    assert rec.service == ["dns"]
    (rec,) = records(tmp_path / "first", _dns_datagrams([_too_many_questions(), reply, dns_query()]))
    assert rec.service == []
    # LimitReachedWeird: the weird says by how much, and the history gets its 'X'.
    weirds = read_zeek_log(str(tmp_path / "first" / "reference" / "weird.log")).rows
    assert [(w["name"], w["addl"]) for w in weirds] == [("DNS_Conn_count_too_large", "26 > 25")]
    assert "X" in rec.history


def _dns_rows(tmp_path, frames: list[tuple[float, bytes]]) -> list[dict[str, str]]:
    """dns.log as both engines wrote it (they agree), in its order."""
    records(tmp_path, frames)
    path = tmp_path / "reference" / "dns.log"
    return read_zeek_log(str(path)).rows if path.exists() else []


def test_each_message_to_a_multicast_responder_is_its_own_row(tmp_path) -> None:
    """dns/main.zeek set_session (zeek PR 5608): a responder in `multicast_subnets`
    (224.0.0.0/4, ff00::/8) pairs nothing; each message is written at its end, a query
    without rcode, a response with its answers and no rtt. On a unicast responder the same
    two messages (one transaction id) are one row."""
    query = bytes(dpkt.dns.DNS(id=0, qd=[dpkt.dns.DNS.Q(name="printer.local", type=12)]))
    answer = bytes(dpkt.dns.DNS(id=0, qr=1, aa=1, an=[
        dpkt.dns.DNS.RR(name="printer.local", type=1, cls=1, ttl=120, ip=bytes([10, 0, 0, 7]))]))
    for group, src in (("224.0.0.251", CLIENT), ("10.0.0.9", CLIENT)):
        frames = [udp_frame(1.0, src, 5353, group, 5353, query), udp_frame(1.5, src, 5353, group, 5353, answer)]
        rows = _dns_rows(tmp_path / group, frames)
        got = [(r["ts"], r["query"], r["rcode"], r["answers"], r["rtt"]) for r in rows]
        if group == "10.0.0.9":
            assert got == [("1.000000", "printer.local", "0", "10.0.0.7", "0.500000")]
        else:
            assert got == [("1.000000", "printer.local", "-", "-", "-"), ("1.500000", "printer.local", "0", "10.0.0.7", "-")]
    frames = [(1.0, ether(ipv6(udp(5355, 5355, query), "fe80::1", "ff02::1:3"), ethertype=0x86DD)),
              (1.5, ether(ipv6(udp(5355, 5355, answer), "fe80::1", "ff02::1:3"), ethertype=0x86DD))]
    assert len(_dns_rows(tmp_path / "llmnr6", frames)) == 2


def _with_opcode(data: bytes, opcode: int) -> bytes:
    flags = struct.unpack_from(">H", data, 2)[0] & ~0x7800 | opcode << 11
    return data[:2] + struct.pack(">H", flags) + data[4:]


def test_dns_opcodes_as_zeek_parses_and_pairs_them(tmp_path) -> None:
    """DNS_Interpreter::ParseMessage parses standard queries, NOTIFY and dynamic updates,
    and every opcode on NetBIOS's port; another opcode is weird DNS_unknown_opcode with an
    'X' and no confirmation. dns/main.zeek pairs opcodes 0, 4 and 5 and names them from
    `opcodes`, or on port 137 from `netbios_opcodes` (consts.zeek)."""
    def pair(opcode: int, port: int) -> list[bytes]:
        q = dpkt.dns.DNS(id=9, opcode=opcode, qd=[dpkt.dns.DNS.Q(name="FHEPFCELFDFEEBFEEJEPEOCACACACAAA")])
        r = dpkt.dns.DNS(id=9, opcode=opcode, qr=1, qd=q.qd)
        return [bytes(q), bytes(r)]

    cases = {  # (opcode, port) → its rows' (opcode, opcode_name, query)
        (4, 53): [("4", "notify", "fhepfcelfdfeebfeejepeocacacacaaa")],
        (0, 137): [("0", "netbios-query", "WORKSTATION")],
        (5, 137): [("5", "netbios-registration", "WORKSTATION")],
        (6, 137): [],  # a release: parsed (the service), not paired
        (2, 53): [],  # server status: unknown
    }
    for (opcode, port), want in cases.items():
        frames = [udp_frame(1.0 + i, CLIENT, 40000, SERVER, port, data) for i, data in enumerate(pair(opcode, port))]
        rows = _dns_rows(tmp_path / f"{opcode}-{port}", frames)
        assert [(r["opcode"], r["opcode_name"], r["query"]) for r in rows] == want, (opcode, port)
        (rec,) = records(tmp_path / f"{opcode}-{port}-rec", frames)
        assert rec.service == ([] if (opcode, port) == (2, 53) else ["dns"])
        assert ("X" in rec.history) == ((opcode, port) == (2, 53))
    weirds = read_zeek_log(str(tmp_path / "2-53" / "reference" / "weird.log")).rows
    assert [(w["name"], w["addl"]) for w in weirds] == [("DNS_unknown_opcode", "2")]


def _reply_with(records: list[tuple[int, bytes]], tid: int = 5) -> bytes:
    """A reply to "a.example" whose answers (owner: the question) have these types and data."""
    out = struct.pack(">6H", tid, 0x8180, 1, len(records), 0, 0) + b"\x01a\x07example\x00" + struct.pack(">HH", 1, 1)
    for rtype, rdata in records:
        out += b"\xc0\x0c" + struct.pack(">HHIH", rtype, 1, 60, len(rdata)) + rdata
    return out


def _naptr(order: int, pref: int, flags: bytes, service: bytes, regexp: bytes, replacement: bytes) -> bytes:
    strings = b"".join(bytes([len(x)]) + x for x in (flags, service, regexp))
    name = b"".join(bytes([len(label)]) + label for label in replacement.split(b".") if label) + b"\x00"
    return struct.pack(">HH", order, pref) + strings + name


def test_dns_answer_texts_as_dns_main_zeek_writes_them(tmp_path) -> None:
    """Only the records dns/main.zeek has a handler for give an answer text: NAPTR's
    (order, preference, flags, service, regexp and replacement as written), LOC's (size and
    precisions, raw); SVCB and HTTPS
    (dns_SVCB, dns_HTTPS), NetBIOS's NB (ParseRR_NBS) and TKEY give none, and an SRV record
    on port 137 is NetBIOS's node status, not parsed (DNS.cc ParseAnswer)."""
    query = bytes(dpkt.dns.DNS(id=5, rd=1, qd=[dpkt.dns.DNS.Q(name="a.example")]))
    reply = _reply_with([
        (1, bytes([192, 0, 2, 1])),
        (35, _naptr(100, 10, b"S", b"SIP+D2U", b"", b"_Sip._UDP.Example.com")),
        (35, _naptr(100, 20, b"U", b"E2U+sip", b"!^.*$!sip:a@b!", b"")),
        (65, b"\x00\x01\x00\x00\x01\x00\x03\x02h2"), (64, b"\x00\x01\x00"), (32, b"\x00\x00\x0a\x00\x00\x01"),
        (249, b"\x00" * 8), (29, bytes([0, 0x12, 0x16, 0x13]) + bytes(12)),
    ])
    frames = [udp_frame(1.0, CLIENT, 40000, SERVER, 53, query), udp_frame(1.1, SERVER, 53, CLIENT, 40000, reply)]
    (row,) = _dns_rows(tmp_path / "53", frames)
    assert row["answers"] == ("192.0.2.1,NAPTR 100 10 S SIP+D2U _Sip._UDP.Example.com,"
                              "NAPTR 100 20 U E2U+sip !^.*$!sip:a@b!,LOC:  18 22 19")
    assert row["TTLs"] == "60.000000,60.000000,60.000000,60.000000"
    srv = _reply_with([(33, struct.pack(">HHH", 0, 0, 0) + b"\x01x\x00")])
    frames = [udp_frame(1.0, CLIENT, 137, SERVER, 137, query), udp_frame(1.1, SERVER, 137, CLIENT, 137, srv)]
    (row,) = _dns_rows(tmp_path / "137", frames)
    assert row["answers"] == "-" and row["rcode"] == "0"


def _update(tid: int, qr: int, zones: list[tuple[str, int]], rcode: int = 0) -> bytes:
    """A dynamic update (opcode 5): its zones, one update record (add an A record)."""
    out = struct.pack(">6H", tid, (qr << 15) | (5 << 11) | rcode, len(zones), 0, 0 if qr else 1, 0)
    for name, ztype in zones:
        out += b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00" + struct.pack(">HH", ztype, 1)
    if not qr:
        out += b"\x04host\xc0\x0c" + struct.pack(">HHIH", 1, 1, 300, 4) + bytes([10, 0, 0, 5])
    return out


def test_dns_dynamic_updates_as_dns_cc_parses_them(tmp_path) -> None:
    """DNS.cc ParseMessage, dynamic update: paired as any message (opcode 5, named
    dynamic-update), the zone is no question (no dns_request: no query, RD F); one zone of
    type SOA confirms; two zones are DNS_DU_invalid_zone_count and no confirmation, the row
    is written all the same; a zone of another type is DNS_DU_incorrect_zone_type and the
    message ends without dns_end, so no row."""
    cases = {
        "soa": ([("corp.example", 6)], "dns", [("5", "dynamic-update", "-", "NOERROR", "F")], []),
        "two": ([("corp.example", 6), ("b.example", 6)], "", [("5", "dynamic-update", "-", "NOERROR", "F")],
                [("DNS_DU_invalid_zone_count", "2")] * 2),
        "a": ([("corp.example", 1)], "", [], [("DNS_DU_incorrect_zone_type", "-")] * 2),
    }
    for name, (zones, service, want_rows, want_weirds) in cases.items():
        frames = [udp_frame(1.0, CLIENT, 40000, SERVER, 53, _update(7, 0, zones)),
                  udp_frame(1.1, SERVER, 53, CLIENT, 40000, _update(7, 1, zones))]
        rows = _dns_rows(tmp_path / name, frames)
        assert [(r["opcode"], r["opcode_name"], r["query"], r["rcode_name"], r["RD"]) for r in rows] == want_rows
        (rec,) = records(tmp_path / f"{name}-rec", frames)
        assert ",".join(rec.service) == service
        path = tmp_path / name / "reference" / "weird.log"
        weirds = read_zeek_log(str(path)).rows if path.exists() else []
        assert [(w["name"], w["addl"]) for w in weirds] == want_weirds


def test_a_dns_connection_opened_by_a_reply_from_its_originator_flips(tmp_path) -> None:
    """DNS_Interpreter::ParseMessage: the connection's first message (one past the opcode
    check) is a response from the originator: the roles flip ('^'), unless the responder
    is multicast. A NetBIOS response to a broadcast query opens its own 137-137 connection
    this way. The DNS analyzer flips before ConnSize counts the packet and the UDP adapter
    swaps no length, so the counts stay the originator's (FlowTable._dns_first_message)."""
    reply = bytes(dpkt.dns.DNS(id=7, qr=1, aa=1, qd=[dpkt.dns.DNS.Q(name="host.example")], an=[
        dpkt.dns.DNS.RR(name="host.example", type=1, cls=1, ttl=60, ip=bytes([10, 0, 0, 7]))]))
    query = bytes(dpkt.dns.DNS(id=7, qd=[dpkt.dns.DNS.Q(name="host.example")]))
    responder = "10.0.0.7"

    def conn(frames):
        (rec,) = records(tmp_path / str(len(list(tmp_path.iterdir()))), frames)
        return rec.orig_h, rec.resp_h, rec.history, rec.orig_pkts, rec.resp_pkts, rec.orig_bytes, rec.resp_bytes

    for port in (137, 53):
        assert conn([udp_frame(1.0, responder, port, CLIENT, port, reply)])[:5] == (CLIENT, responder, "D^", 1, 0)
        # The next packet from the same sender is the responder's.
        assert conn([udp_frame(1.0, responder, port, CLIENT, port, reply),
                     udp_frame(1.1, responder, port, CLIENT, port, reply)]) == (
            CLIENT, responder, "D^d", 1, 1, len(reply), len(reply))
    # A query first: no flip, whatever follows.
    assert conn([udp_frame(1.0, CLIENT, 137, responder, 137, query),
                 udp_frame(1.1, responder, 137, CLIENT, 137, reply)])[:3] == (CLIENT, responder, "Dd")
    # A multicast responder: no flip.
    assert conn([udp_frame(1.0, responder, 5353, "224.0.0.251", 5353, reply)])[:3] == (
        responder, "224.0.0.251", "D")
    # A message the opcode check stops (weird, 'X') is not the first one: the next is.
    status = _with_opcode(reply, 2)
    # ConnSize swaps the count of the message before, and counts the flipping one as the
    # (new) originator's; the UDP adapter's lengths stay (Connection.flip_mid_packet).
    assert conn([udp_frame(1.0, responder, 53, CLIENT, 53, status),
                 udp_frame(1.1, responder, 53, CLIENT, 53, reply)]) == (
        CLIENT, responder, "DX^", 1, 1, len(status) + len(reply), 0)
    # A first message the decoder reassembled from fragments (the kernel call ends there).
    datagram = ipv4(udp(137, 137, reply), responder, CLIENT)
    frames = [(1.0 + 0.01 * i, ether(f)) for i, f in enumerate(ipv4_fragments(datagram, 32))]
    assert conn(frames)[:3] == (CLIENT, responder, "D^")


def _ntp(mode: int, version: int = 4) -> bytes:
    return bytes([(version << 3) | mode]) + bytes(47)


def test_ntp_flips_at_a_server_message_from_the_originator_or_a_client_message_from_the_responder(
        tmp_path) -> None:
    """ntp-analyzer.pac proc_ntp_message (Zeek 6+, PR 3016): on the NTP analyzer's port
    (123/udp, by the responder), a SERVER-mode message from the originator or a CLIENT-mode
    one from the responder flips the connection, once. ConnSize swaps what it counted
    before the message and counts the message after the flip in the direction it came in;
    the UDP adapter's lengths stay (Connection.flip_mid_packet). A datagram that is no NTP
    message is a violation, which disables the analyzer while dpd.zeek acts on one."""

    def conn(frames):
        (rec,) = records(tmp_path / str(len(list(tmp_path.iterdir()))), frames)
        return rec.orig_h, rec.resp_h, rec.history, rec.orig_pkts, rec.resp_pkts, rec.orig_bytes, rec.resp_bytes

    reply, request = _ntp(4), _ntp(3)
    # A server's reply seen first (the request was missed): its receiver is the originator.
    first_reply = udp_frame(1.0, SERVER, 123, CLIENT, 123, reply)
    assert conn([first_reply, udp_frame(1.1, SERVER, 123, CLIENT, 123, reply)]) == (CLIENT, SERVER, "D^d", 1, 1, 48, 48)
    # Symmetric mode first, then a client request from the responder: the flip swaps the
    # first packet's count, the request stays the responder's (then the originator's side).
    symmetric = udp_frame(1.0, CLIENT, 123, SERVER, 123, _ntp(1))
    assert conn([symmetric, udp_frame(1.1, SERVER, 123, CLIENT, 123, request)]) == (SERVER, CLIENT, "Dd^", 0, 2, 48, 48)
    # Request, then reply: roles as they were.
    assert conn([udp_frame(1.0, CLIENT, 40000, SERVER, 123, request),
                 udp_frame(1.1, SERVER, 123, CLIENT, 40000, reply)])[:3] == (CLIENT, SERVER, "Dd")
    # Once only: a second server message from the (new) originator does not flip back.
    assert conn([first_reply, udp_frame(1.1, CLIENT, 123, SERVER, 123, reply)])[:3] == (CLIENT, SERVER, "D^")
    # Not NTP first: the violation disables the analyzer, nothing flips after it ...
    garbage = bytes([0x24]) + bytes(10)  # a server message cut short
    second_reply = udp_frame(1.1, SERVER, 123, CLIENT, 123, reply)
    assert conn([udp_frame(1.0, SERVER, 123, CLIENT, 123, garbage), second_reply])[:3] == (SERVER, CLIENT, "D")
    # ... unless more than DPD::ignore_violations_after bytes came (the violation is ignored).
    big = bytes([0x26]) + bytes(9) + b"\xff\xff" + bytes(10_988)  # a control message whose `c` runs past the end
    assert conn([udp_frame(1.0, SERVER, 123, CLIENT, 123, big), second_reply])[:3] == (CLIENT, SERVER, "D^")
    # Off the analyzer's port nothing flips; nor in a bare run (`zeek -b`: ntp/main.zeek,
    # which registers the port, is not loaded).
    assert conn([udp_frame(1.0, SERVER, 9999, CLIENT, 9999, reply)])[:3] == (SERVER, CLIENT, "D")
    (bare,) = records(tmp_path / "bare", [udp_frame(1.0, SERVER, 123, CLIENT, 123, reply)], zeek_bare_mode=True)
    assert (bare.orig_h, bare.history) == (SERVER, "D")
    # A reply the decoder reassembled from fragments (the fast engine's kernel call ends there).
    datagram = ipv4(udp(123, 123, reply), SERVER, CLIENT)
    frames = [(1.0 + 0.01 * i, ether(f)) for i, f in enumerate(ipv4_fragments(datagram, 32))]
    assert conn(frames)[:3] == (CLIENT, SERVER, "D^")


def test_igmp_is_a_packet_analyzer_with_no_connection(tmp_path) -> None:
    """scripts/base/packet-protocols/igmp registers a (Spicy) packet analyzer on IP protocol
    2 (zeek PR 5095, before the corpus commit): IGMP makes no session and no conn.log row,
    bare or inside a GRE tunnel, and the tunnel's next inner connection still gets its
    parent."""
    report = bytes([0x16, 0, 0xFA, 0x04, 239, 1, 2, 3])  # IGMPv2 membership report for 239.1.2.3
    igmp = ipv4(report, CLIENT, "239.1.2.3", p=2)
    inner_udp = ipv4(udp(40000, 9999, b"x" * 20), CLIENT, SERVER)
    gre = b"\x00\x00\x08\x00"
    frames = [
        (1.0, ether(igmp)),
        (1.1, ether(ipv4(gre + igmp, "203.0.113.1", "203.0.113.2", p=47))),
        (1.2, ether(ipv4(gre + inner_udp, "203.0.113.1", "203.0.113.2", p=47))),
        udp_frame(1.3, CLIENT, 40001, SERVER, 53, dns_query()),
    ]
    recs = records(tmp_path, frames)
    assert [(r.proto, r.resp_p) for r in recs] == [("udp", 9999), ("udp", 53)]
    assert len(recs[0].tunnel_parents) == 1 and not recs[1].tunnel_parents


def test_a_query_with_two_questions_shows_the_last(tmp_path) -> None:
    """DNS_Interpreter::ParseQuestions raises dns_request per question, and dns/main.zeek
    sets the row's query, qtype and qclass from each: the last question stays. An answer
    whose owner points at the first question still reads that name."""
    qd = [dpkt.dns.DNS.Q(name="first.example", type=1), dpkt.dns.DNS.Q(name="second.example", type=28)]
    query = bytes(dpkt.dns.DNS(id=4, rd=1, qd=qd))
    reply = bytearray(bytes(dpkt.dns.DNS(id=4, qr=1, qd=qd)))
    reply[7] = 1  # one answer, owner: a pointer to the first question's name
    reply += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + bytes([192, 0, 2, 4])
    frames = [udp_frame(1.0, CLIENT, 40000, SERVER, 53, query), udp_frame(1.1, SERVER, 53, CLIENT, 40000, bytes(reply))]
    (row,) = _dns_rows(tmp_path, frames)
    assert (row["query"], row["qtype_name"], row["answers"]) == ("second.example", "AAAA", "192.0.2.4")


def test_dns_names_and_flags_as_consts_zeek_and_dns_request_give_them(tmp_path) -> None:
    """consts.zeek's tables (NIMLOC for 32, C_HESIOD, NXRRSet, unassigned-12) and their
    defaults; RD, TC and Z come from dns_request, which a query without a question does not
    raise."""
    q = dpkt.dns.DNS(id=3, rd=1, qd=[dpkt.dns.DNS.Q(name="a.example", type=32, cls=4)])
    frames = [udp_frame(1.0, CLIENT, 40000, SERVER, 53, bytes(q))]
    for i, rcode in enumerate((8, 12)):
        frames.append(udp_frame(2.0 + i, SERVER, 53, CLIENT, 40000,
                                bytes(dpkt.dns.DNS(id=3 + i, qr=1, rcode=rcode, qd=q.qd))))
    frames.append(udp_frame(4.0, CLIENT, 40000, SERVER, 53, bytes(dpkt.dns.DNS(id=4, rd=1, qd=[]))))
    rows = _dns_rows(tmp_path, frames)
    got = [(r["trans_id"], r["qtype_name"], r["qclass_name"], r["rcode_name"], r["RD"]) for r in rows]
    assert got == [("3", "NIMLOC", "C_HESIOD", "NXRRSet", "T"), ("4", "-", "-", "unassigned-12", "F")]


def test_a_disabled_dns_analyzer_no_longer_expires_the_session(tmp_path) -> None:
    """Disabling the DNS analyzer after a violation (Analyzer::Done → CancelTimers) cancels
    DNS_Analyzer::ExpireTimer: a query 15 s later on the same 5-tuple stays in the one
    connection, which only the UDP inactivity timeout (60 s) would end."""
    frames = [udp_frame(100.0, CLIENT, 40000, SERVER, 53, _too_many_questions()),
              udp_frame(115.0, CLIENT, 40000, SERVER, 53, dns_query())]
    recs = records(tmp_path / "disabled", frames)
    assert [(r.ts, r.orig_pkts, r.service) for r in recs] == [(100.0, 2, [])]
    # Past 10 KiB the violation is ignored: the analyzer and its timer stay.
    frames = [udp_frame(100.0 + 0.01 * i, CLIENT, 40000, SERVER, 53, b"\x00" * 1000) for i in range(11)]
    frames += [udp_frame(101.0, CLIENT, 40000, SERVER, 53, _too_many_questions()),
               udp_frame(116.0, CLIENT, 40000, SERVER, 53, dns_query())]
    assert [r.orig_pkts for r in records(tmp_path / "ignored", frames)] == [12, 1]


def test_ftp_confirms_on_the_client_command_alone(tmp_path) -> None:
    """AnalyzerConfirmation follows the first client line whose first word is a command
    (>= 3 printable characters, at most FTP::max_command_length = 100); a longer word or a
    short one confirms nothing."""
    (rec,) = records(tmp_path / "cmd", _dialogue(21, [(True, b"SYST\r\n")]))
    assert rec.service == ["ftp"]
    (rec,) = records(tmp_path / "short", _dialogue(21, [(True, b"AB cd\r\n")]))
    assert rec.service == []
    (rec,) = records(tmp_path / "long", _dialogue(21, [(True, b"A" * 101 + b"\r\n")]))
    assert rec.service == []


# -- history 'X': Connection::CheckEncapsulation, Tunnel::max_changes_per_connection ---------

VTEP_A, VTEP_B = "192.168.56.12", "192.168.56.11"
VXLAN_HEADER = b"\x08\x00\x00\x00\x00\x00\x01\x00"  # I flag, VNI 1


def in_vxlan(ts: float, inner: bytes, towards_b: bool) -> tuple[float, bytes]:
    """`inner` (an IPv4 packet) in VXLAN; each direction between the VTEPs is its own UDP
    connection (source ports 40000 / 40001), so the two are different encapsulations."""
    if towards_b:
        outer = ipv4(udp(40000, 4789, VXLAN_HEADER + ether(inner)), VTEP_A, VTEP_B)
    else:
        outer = ipv4(udp(40001, 4789, VXLAN_HEADER + ether(inner)), VTEP_B, VTEP_A)
    return ts, ether(outer)


def _echo(kind: int, seq: int) -> dpkt.icmp.ICMP:
    return dpkt.icmp.ICMP(type=kind, code=0, data=dpkt.icmp.ICMP.Echo(id=7, seq=seq, data=b"ping" * 8))


def test_more_than_5_tunnel_changes_give_x(tmp_path) -> None:
    """Echo requests through one VXLAN carrier, replies through the other: every packet
    after the first changes the connection's encapsulation. Zeek raises tunnel_changed 5
    times; the 6th change is the weird tunnel_max_changes_per_connection_exceeded and
    CheckHistory(HIST_UNKNOWN_PKT, 'X') (corpus: core.tunnels.vxlan, ICMP history `X`)."""
    def pings(n: int) -> list[tuple[float, bytes]]:
        frames = []
        for k in range(n):
            frames.append(in_vxlan(1.0 + k, ipv4(_echo(8, k), CLIENT, SERVER), towards_b=True))
            frames.append(in_vxlan(1.5 + k, ipv4(_echo(0, k), SERVER, CLIENT), towards_b=False))
        return frames

    icmp = [r for r in records(tmp_path / "three", pings(3)) if r.proto == "icmp"]
    assert [(r.history, r.orig_pkts, r.resp_pkts) for r in icmp] == [("", 3, 3)]  # 5 changes
    icmp = [r for r in records(tmp_path / "four", pings(4)) if r.proto == "icmp"]
    assert [(r.history, r.orig_pkts, r.resp_pkts) for r in icmp] == [("X", 4, 4)]  # 7 changes


def test_tunnel_change_x_comes_before_the_packets_letters(tmp_path) -> None:
    """CheckEncapsulation runs before the packet is analyzed (IPBasedAnalyzer::AnalyzePacket),
    so 'X' precedes what the 6th changing packet adds; a packet without encapsulation after
    one with it is a change too (corpus: core.tunnels.count-default-tunnel-changes)."""
    def seg(ts: float, client: bool, flags: int, seq: int, ack: int, data: bytes = b"") -> tuple[float, bytes]:
        if client:
            return in_vxlan(ts, ipv4(tcp(50000, 80, flags, seq, ack, data), CLIENT, SERVER), towards_b=True)
        return tcp_frame(ts, SERVER, 80, CLIENT, 50000, flags, seq, ack, data)  # not encapsulated

    frames = [
        seg(1.0, True, SYN, 100, 0),
        seg(1.1, False, SYN | ACK, 900, 101),  # change 1
        seg(1.2, True, ACK, 101, 901),  # 2
        seg(1.3, True, PSH | ACK, 101, 901, b"a" * 10),
        seg(1.4, False, PSH | ACK, 901, 111, b"b" * 10),  # 3
        seg(1.5, True, PSH | ACK, 111, 911, b"c" * 10),  # 4
        seg(1.6, False, PSH | ACK, 911, 121, b"d" * 10),  # 5
        seg(1.7, True, FIN | ACK, 121, 921),  # 6: X, then this packet's F
    ]
    tcp_recs = [r for r in records(tmp_path, frames) if r.proto == "tcp"]
    assert [r.history for r in tcp_recs] == ["ShADdXF"]


# -- UDP checksums: UDPAnalyzer::DeliverPacket -----------------------------------------------


def test_zero_udp_checksum_on_vxlan_over_ipv6_is_accepted(tmp_path) -> None:
    """Over IPv6 a UDP checksum is mandatory, but a datagram to a vxlan_ports port (4789)
    that looks like VXLAN (I flag, longer than UDP + VXLAN + Ethernet headers) with a zero
    checksum is not checked: the carrier is a connection and its inner packet is decoded.
    To another port the same datagram is a bad checksum ('C', nothing decapsulated)."""
    inner = ipv4(_echo(8, 1), CLIENT, SERVER)
    def datagram(dport: int) -> tuple[float, bytes]:
        payload = VXLAN_HEADER + ether(inner)
        raw_udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload  # checksum 0
        return 1.0, ether(ipv6(raw_udp, "2001:db8::a", "2001:db8::b", nxt=17), ethertype=0x86DD)

    recs = records(tmp_path / "vxlan", [datagram(4789)], verify_checksums=True)
    assert sorted((r.proto, r.resp_p, r.history) for r in recs) == [("icmp", 0, ""), ("udp", 4789, "D")]
    recs = records(tmp_path / "other", [datagram(4790)], verify_checksums=True)
    assert [(r.proto, r.resp_p, r.history) for r in recs] == [("udp", 4790, "C")]


def test_vxlan_nested_past_max_depth_gives_x_on_the_carrier(tmp_path) -> None:
    """Tunnel::max_depth (4): VXLAN_Analyzer::AnalyzePacket on a carrier already inside 4
    tunnels calls CheckHistory(HIST_UNKNOWN_PKT, 'X') on it (after UDP's 'D'), reports
    exceeded_tunnel_max_depth and neither confirms (no `vxlan` service) nor decapsulates
    (Zeek's core.tunnels.max-depth-exceeded, with Tunnel::max_depth = 2 there)."""
    packet = ipv4(_echo(8, 1), CLIENT, SERVER)
    for level in range(5, 0, -1):  # level 1 outermost
        outer_src, outer_dst = f"10.{level}.0.1", f"10.{level}.0.9"
        packet = ipv4(udp(4789, 4789, VXLAN_HEADER + ether(packet)), outer_src, outer_dst)
    recs = records(tmp_path, [(1.0, ether(packet))])
    got = sorted((r.orig_h, r.proto, r.history, r.service) for r in recs)
    assert got == [(f"10.{level}.0.1", "udp", "DX" if level == 5 else "D", [] if level == 5 else ["vxlan"])
                   for level in range(1, 6)]


def test_tunnel_carrier_service_follows_the_tunnel_analyzers_confirmation(tmp_path) -> None:
    """The carrier's service is the tunnel analyzer's confirmation: VXLAN confirms once its
    header parsed (an ARP frame inside still counts, corpus: core.tunnels.vxlan's one-packet
    carriers); GTPv1 only for a T-PDU with an IP packet inside (an echo request confirms
    nothing, corpus: core.tunnels.gtp.not_user_plane_data); Teredo once both endpoints sent
    a valid packet (Tunnel::delay_teredo_confirmation = T)."""
    arp = ether(bytes(28), ethertype=0x0806)
    vx = ipv4(udp(40000, 4789, VXLAN_HEADER + arp), VTEP_A, VTEP_B)
    (rec,) = records(tmp_path / "arp", [(1.0, ether(vx))])
    assert (rec.resp_p, rec.service) == (4789, ["vxlan"])

    echo_request = b"\x32\x01\x00\x04\x00\x00\x00\x00\x00\x01\x00\x00"  # GTPv1, S flag, type 1
    gtp = ipv4(udp(2152, 2152, echo_request), VTEP_A, VTEP_B)
    (rec,) = records(tmp_path / "gtp", [(1.0, ether(gtp))])
    assert (rec.resp_p, rec.service) == (2152, [])

    def teredo(ts: float, to_relay: bool) -> tuple[float, bytes]:
        inner = ipv6(udp(5000, 6000, b"hello"), "2001:0:5ef5:79fb::1", "2001:db8::2")
        if to_relay:
            return ts, ether(ipv4(udp(40000, 3544, inner), CLIENT, SERVER))
        return ts, ether(ipv4(udp(3544, 40000, inner), SERVER, CLIENT))

    carriers = [r for r in records(tmp_path / "one", [teredo(1.0, True)]) if r.resp_p == 3544]
    assert [r.service for r in carriers] == [[]]
    carriers = [r for r in records(tmp_path / "both", [teredo(1.0, True), teredo(1.1, False)]) if r.resp_p == 3544]
    assert [r.service for r in carriers] == [["teredo"]]


# -- link layer: packet-protocols/*/main.zeek register_packet_analyzer ----------------------


def test_ethertypes_follow_each_analyzers_registrations(tmp_path) -> None:
    """Ethernet forwards 0x8847 MPLS but no analyzer registers 0x8848 (multicast MPLS); a
    VN-Tag (0x8926) forwards only VLAN tags; a VLAN tag forwards 0x8100 but not 0x88A8/0x9100.
    A frame that stops at an unregistered Ethertype makes no connection."""
    datagram = ipv4(udp(40000, 5000, b"x" * 8), CLIENT, SERVER)
    mpls_label = struct.pack("!I", (16 << 12) | 0x100 | 64)  # label 16, bottom of stack, TTL 64
    vlan_ip = struct.pack("!HH", 10, 0x0800) + datagram  # a VLAN tag (VID 10) then IPv4
    vntag = b"\x00\x00\x00\x00"  # the VN-Tag's 4 bytes before its Ethertype

    def frame(ethertype: int, body: bytes) -> tuple[float, bytes]:
        return 1.0, ether(body, ethertype=ethertype)

    cases = {
        "mpls": (frame(0x8847, mpls_label + datagram), 1),
        "mpls_multicast": (frame(0x8848, mpls_label + datagram), 0),
        "vntag_vlan": (frame(0x8926, vntag + struct.pack("!H", 0x8100) + vlan_ip), 1),
        "vntag_ip": (frame(0x8926, vntag + struct.pack("!H", 0x0800) + datagram), 0),
        "vlan_in_vlan": (frame(0x8100, struct.pack("!HH", 5, 0x8100) + vlan_ip), 1),
        "qinq_in_vlan": (frame(0x8100, struct.pack("!HH", 5, 0x88A8) + vlan_ip), 0),
    }
    for name, (fr, expected) in cases.items():
        if expected:
            recs = records(tmp_path / name, [fr])
            assert [(r.proto, r.resp_p) for r in recs] == [("udp", 5000)], name
        else:
            path = str(write_pcap(tmp_path / f"{name}.pcap", [fr]))
            assert assert_same([path], tmp_path / name, local_nets=()) == 0, name


def test_ftp_command_over_100_characters_after_confirmation_gives_x(tmp_path) -> None:
    """FTP_Analyzer::DeliverStream: a command word longer than FTP::max_command_length (100)
    on a confirmed analyzer is LimitReachedWeird: weird FTP_max_command_length_exceeded and
    CheckHistory(HIST_UNKNOWN_PKT, 'X') after that packet's letters (corpus:
    ftp-max-command-length, `ShAdDaXFf`). Before the confirmation it is only ignored."""
    greeting, user = (False, b"220 ready\r\n"), (True, b"USER anonymous\r\n")
    long_command = (True, b"A" * 101 + b" x\r\n")
    frames = _dialogue(21, [greeting, user, (False, b"331 password\r\n"), long_command, (False, b"500 what\r\n")])
    seq = 101 + len(user[1]) + len(long_command[1])
    frames.append(tcp_frame(11.0, CLIENT, 50000, SERVER, 21, FIN | ACK, seq, 901 + 11 + 14 + 10))
    (rec,) = records(tmp_path / "after", frames)
    assert (rec.history, rec.service) == ("ShAdDXF", ["ftp"])
    (rec,) = records(tmp_path / "before", _dialogue(21, [greeting, long_command, user]))
    assert (rec.history, rec.service) == ("ShAdD", ["ftp"])


# -- TCPSessionAdapter::IsPartial: HTTP and SSL read nothing of a partial connection --------

_GET = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n"
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


def _logged(tmp_path, log: str) -> list[dict[str, str]]:
    """A log as `records` had both engines write it (they agree); none written: no rows."""
    path = tmp_path / "reference" / log
    return read_zeek_log(str(path)).rows if path.exists() else []


def test_http_reads_nothing_of_a_partial_connection(tmp_path) -> None:
    """TCPSessionAdapter::SetPartialStatus: a connection is partial when the originator's
    first packet is not a plain SYN, or when the responder's first is no SYN while it is not
    partial yet; UpdateInactiveState clears it where the originator's first packet
    acknowledges the responder's SYN-ACK (a missed SYN). HTTP_Analyzer::DeliverStream returns
    at once while it is set (corpus: core.mpls-in-vlan's lone GETs on port 80 and
    modbus_and_non_modbus_on_port_502's GET after a RST have no service)."""
    reply_seq = 101 + len(_GET)
    mid_stream = [
        tcp_frame(10.0, CLIENT, 50000, SERVER, 80, PSH | ACK, 101, 901, _GET),
        tcp_frame(10.01, SERVER, 80, CLIENT, 50000, PSH | ACK, 901, reply_seq, _OK),
    ]
    (rec,) = records(tmp_path / "mid", mid_stream)
    assert (rec.history, rec.service) == ("Dd", [])
    assert _logged(tmp_path / "mid", "http.log") == []
    # With its handshake the same exchange is HTTP.
    (rec,) = records(tmp_path / "whole", _dialogue(80, [(True, _GET), (False, _OK)]))
    assert rec.service == ["http"]
    assert [(r["method"], r["status_code"]) for r in _logged(tmp_path / "whole", "http.log")] == [("GET", "200")]
    # The client's SYN missed, the server's SYN-ACK seen: the ACK with the request clears it.
    missed_syn = [tcp_frame(9.99, SERVER, 80, CLIENT, 50000, SYN | ACK, 900, 101), *mid_stream]
    (rec,) = records(tmp_path / "missed-syn", missed_syn)
    assert (rec.history, rec.service) == ("^hDd", ["http"])
    assert [(r["method"], r["status_code"]) for r in _logged(tmp_path / "missed-syn", "http.log")] == [("GET", "200")]
    # The SYN seen, the SYN-ACK missed: the server's first packet, no SYN, makes it partial
    # after the request was read: the request is logged, its reply is not read.
    missed_synack = [tcp_frame(9.99, CLIENT, 50000, SERVER, 80, SYN, 100), *mid_stream]
    (rec,) = records(tmp_path / "missed-synack", missed_synack)
    assert (rec.history, rec.service) == ("SDd", ["http"])
    assert [(r["method"], r["status_code"]) for r in _logged(tmp_path / "missed-synack", "http.log")] == [("GET", "-")]


def test_ssl_reads_nothing_of_a_partial_connection(tmp_path) -> None:
    """SSL_Analyzer::DeliverStream returns at once while the connection is partial: a
    ClientHello seen mid-stream on 443 names no ssl and writes no ssl.log row."""
    hello = client_hello_record()
    mid_stream = [tcp_frame(10.0, CLIENT, 50000, SERVER, 443, PSH | ACK, 101, 901, hello)]
    (rec,) = records(tmp_path / "mid", mid_stream)
    assert (rec.history, rec.service, rec.server_name) == ("D", [], None)
    assert _logged(tmp_path / "mid", "ssl.log") == []
    (rec,) = records(tmp_path / "whole", _dialogue(443, [(True, hello)]))
    assert (rec.service, rec.server_name) == (["ssl"], "example.com")
    assert [r["server_name"] for r in _logged(tmp_path / "whole", "ssl.log")] == ["example.com"]


def test_service_analyzers_that_skip_partial_connections(tmp_path) -> None:
    """Of the service analyzers, SSH, SMTP (SetSkipPartial on its ContentLine analyzers),
    SOCKS, MySQL, RDP and KRB_TCP read nothing of a partial connection (their DeliverStream
    checks TCPSessionAdapter::IsPartial); FTP's has no such check and reads on."""
    ssh = (22, b"SSH-2.0-OpenSSH_9.6\r\n", b"SSH-2.0-OpenSSH_9.0\r\n")
    smtp = (25, b"EHLO client.example\r\n", b"220 mx ESMTP\r\n")
    ftp = (21, b"USER anonymous\r\n", b"220 ready\r\n")
    for name, (port, client, server), mid_stream in (("ssh", ssh, []), ("smtp", smtp, []), ("ftp", ftp, ["ftp"])):
        frames = _tcp_exchange(port, client, server)
        (rec,) = records(tmp_path / f"{name}-whole", frames)
        assert rec.service == [name]
        (rec,) = records(tmp_path / f"{name}-mid", frames[3:])  # the same without the handshake
        assert (rec.history, rec.service) == ("^dD", mid_stream), name
