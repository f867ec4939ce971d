"""Where the TLS analyzer reads a connection, as Zeek attaches its SSL analyzer: on
ssl/main.zeek's ports, by ssl/dpd.sig's signatures on any port, or after the STARTTLS
hand-over of an analyzer attached to the connection; never after an unknown plaintext
prefix."""

from __future__ import annotations

from test_identifiers_support import FakeConn, Run, client_hello_record, ext, handshake, record, server_hello_body, syn, tcp
from zeek_logs import read_zeek_log

from pcapexfil.identifiers.tls import dpd_tls
from pcapexfil.packet import Packet


def _conversation(conn: FakeConn, turns: list[tuple[bool, bytes]]) -> list[tuple[bool, Packet]]:
    """A handshake, then each (from the client?, bytes) in turn as one segment."""
    pkts = [(True, syn(conn, True, 999)), (False, syn(conn, False, 4999))]
    seq = {True: 1000, False: 5000}
    for is_orig, data in turns:
        pkts.append((is_orig, tcp(conn, is_orig, seq[is_orig], data)))
        seq[is_orig] += len(data)
    return pkts


def _server_hello() -> bytes:
    return record(22, handshake(2, server_hello_body(771, 49199, [ext(65281, b"\x00")])), 0x0303)


def _services(resp_p: int, turns: list[tuple[bool, bytes]], tmp_path=None) -> list[str]:  # type: ignore[no-untyped-def]
    conn = FakeConn(resp_p=resp_p)
    run = Run(out_dir=None if tmp_path is None else str(tmp_path))
    run.feed(conn, _conversation(conn, turns))
    rec = run.finish(conn)
    run.close()
    return rec.service


HELLO = client_hello_record("tls.example.net")


def test_dpd_signatures_on_either_direction() -> None:
    assert dpd_tls(HELLO) is True  # dpd_tls_client
    assert dpd_tls(_server_hello()) is True  # dpd_tls_server
    alert = b"\x15\x03\x03\x00\x02\x02\x28"
    assert dpd_tls(alert + _server_hello()) is True  # after an optional alert record
    assert dpd_tls(b"\x16\x03") is None  # might still match
    assert dpd_tls(b"GET / HTTP/1.1\r\n") is False
    assert dpd_tls(b"\x16\x03\x04\x00\x10\x01\x00\x00\x0c\x03\x03" + bytes(8)) is False  # record version 3.4


def test_client_hello_at_the_first_byte_on_8443_and_4433_is_ssl() -> None:
    for port in (8443, 4433):
        assert "ssl" in _services(port, [(True, HELLO), (False, _server_hello())])


def test_client_hello_after_an_unknown_prefix_on_a_random_port_is_not_ssl(tmp_path) -> None:  # type: ignore[no-untyped-def]
    turns = [(True, b"HELLO there\r\n"), (False, b"welcome\r\n"), (True, HELLO), (False, _server_hello())]
    assert "ssl" not in _services(40123, turns, tmp_path)
    assert not (tmp_path / "ssl.log").exists() or not read_zeek_log(str(tmp_path / "ssl.log")).rows


def test_client_hello_after_a_prefix_on_443_is_not_ssl() -> None:
    """On its port the SSL analyzer reads the prefix as a record: "Invalid version in TLS
    connection" (ssl.pac, determine_ssl_record_layer) and SetSkip, so the hello is never parsed."""
    turns = [(True, b"PING\r\n"), (False, b"PONG\r\n"), (True, HELLO), (False, _server_hello())]
    assert "ssl" not in _services(443, turns)


def test_smtp_starttls_on_25_is_ssl() -> None:
    turns = [
        (False, b"220 mail.example.net ESMTP\r\n"), (True, b"EHLO me\r\n"),
        (False, b"250-mail.example.net\r\n250 STARTTLS\r\n"), (True, b"STARTTLS\r\n"),
        (False, b"220 Ready to start TLS\r\n"), (True, HELLO), (False, _server_hello()),
    ]
    assert _services(25, turns) == ["smtp", "ssl"]


def test_smtp_starttls_refused_is_not_ssl() -> None:
    turns = [
        (False, b"220 mail.example.net ESMTP\r\n"), (True, b"EHLO me\r\n"), (False, b"250 mail\r\n"),
        (True, b"STARTTLS\r\n"), (False, b"454 TLS not available\r\n"), (True, HELLO),
    ]
    assert "ssl" not in _services(25, turns)


def test_smtp_attached_by_its_signature_hands_over_off_its_ports() -> None:
    """smtp/dpd.sig attaches SMTP on 2525 (the client's EHLO with the server's 220
    greeting): its 220 to STARTTLS hands over as on 25. Without the client's HELO/EHLO
    (dpd_smtp_client) or the server's 220 greeting (dpd_smtp_server) no SMTP analyzer is
    there to hand over. The same where TLS asks the signature itself (no services analyzer)."""
    turns = [
        (False, b"220 mail ESMTP\r\n"), (True, b"EHLO me\r\n"), (False, b"250 mail\r\n"),
        (True, b"STARTTLS\r\n"), (False, b"220 go\r\n"), (True, HELLO), (False, _server_hello()),
    ]
    assert _services(2525, turns) == ["smtp", "ssl"]
    assert _services_only({"tls"}, 2525, turns) == ["ssl"]
    no_helo = [turns[0], (True, b"STARTTLS\r\n"), (False, b"220 go\r\n"), (True, HELLO)]
    no_greeting = [(False, b"554 busy\r\n"), *turns[1:]]
    for unmatched in (no_helo, no_greeting):
        assert _services(2525, unmatched) == []
        assert _services_only({"tls"}, 2525, unmatched) == []


def test_smtp_starttls_refused_off_its_ports_is_not_ssl() -> None:
    turns = [
        (False, b"220 mail ESMTP\r\n"), (True, b"EHLO me\r\n"), (False, b"250 mail\r\n"),
        (True, b"STARTTLS\r\n"), (False, b"454 TLS not available\r\n"), (True, HELLO),
    ]
    assert _services(2525, turns) == ["smtp"]


def test_ftp_auth_tls_is_ssl() -> None:
    turns = [
        (False, b"220 FTP ready\r\n"), (True, b"AUTH TLS\r\n"), (False, b"234 AUTH TLS OK\r\n"),
        (True, HELLO), (False, _server_hello()),
    ]
    assert _services(21, turns) == ["ftp", "ssl"]


def test_ftp_attached_by_its_signature_hands_over_off_its_ports() -> None:
    """ftp/dpd.sig attaches FTP on 2121 once the server's 220 greeting and its 331 answer a
    client's USER: its 234 to AUTH TLS hands over as on 21. An AUTH TLS before any USER
    (the usual order) leaves the signature unmatched: no FTP analyzer, no hand-over. The same
    where TLS asks the signature itself (no services analyzer)."""
    turns = [
        (False, b"220 FTP ready\r\n"), (True, b"USER anonymous\r\n"), (False, b"331 Password required\r\n"),
        (True, b"AUTH TLS\r\n"), (False, b"234 AUTH TLS OK\r\n"), (True, HELLO), (False, _server_hello()),
    ]
    assert _services(2121, turns) == ["ftp", "ssl"]
    assert _services_only({"tls"}, 2121, turns) == ["ssl"]
    auth_first = [(False, b"220 FTP ready\r\n"), (True, b"AUTH TLS\r\n"), (False, b"234 AUTH TLS OK\r\n"),
                  (True, HELLO), (False, _server_hello())]
    assert _services(2121, auth_first) == []
    assert _services_only({"tls"}, 2121, auth_first) == []
    assert _services(21, auth_first) == ["ftp", "ssl"]


def test_pop3_stls_attached_by_its_signature_is_ssl() -> None:
    turns = [
        (False, b"+OK POP3 ready\r\n"), (True, b"CAPA\r\n"), (False, b"+OK\r\nSTLS\r\nUSER\r\n.\r\n"),
        (True, b"STLS\r\n"), (False, b"+OK Begin TLS\r\n"), (True, HELLO), (False, _server_hello()),
    ]
    assert "ssl" in _services(110, turns)


def test_xmpp_proceed_is_ssl() -> None:
    turns = [
        (True, b"<?xml version='1.0'?><stream:stream to='example.net' xmlns='jabber:client'>"),
        (False, b"<stream:stream from='example.net'><stream:features><starttls/></stream:features>"),
        (True, b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
        (False, b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"), (True, HELLO),
    ]
    assert "ssl" in _services(5222, turns)


def test_irc_670_is_ssl() -> None:
    turns = [
        (True, b"STARTTLS\r\n"), (False, b":irc.example.net 670 me :STARTTLS successful\r\n"), (True, HELLO),
    ]
    assert "ssl" in _services(6667, turns)


def test_mysql_ssl_request_is_ssl() -> None:
    greeting = b"\x0a" + b"8.0.0\x00" + bytes(40)
    ssl_request = (0x0800 | 0x0200).to_bytes(4, "little") + bytes(28)
    turns = [
        (False, len(greeting).to_bytes(3, "little") + b"\x00" + greeting),
        (True, len(ssl_request).to_bytes(3, "little") + b"\x01" + ssl_request), (True, HELLO),
    ]
    assert _services(3306, turns) == ["mysql", "ssl"]


def test_postgresql_ssl_request_answered_s_is_ssl() -> None:
    turns = [(True, b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), (False, b"S"), (True, HELLO)]
    assert _services(5432, turns) == ["postgresql", "ssl"]
    refused = [(True, b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), (False, b"N"), (True, HELLO)]
    assert "ssl" not in _services(5432, refused)


def test_client_hello_sent_before_the_hand_over_is_not_read() -> None:
    """StartTLS hands over the chunks after the server's answer: a hello before it went to
    the plaintext analyzer."""
    turns = [
        (False, b"220 FTP ready\r\n"), (True, b"AUTH TLS\r\n"), (True, HELLO), (False, b"234 AUTH TLS OK\r\n"),
    ]
    assert "ssl" not in _services(21, turns)


def test_an_http_connect_tunnel_opens_only_on_a_200() -> None:
    """HTTP.cc's HTTP_ReplyLine clears connect_request on any reply code but 200 (a 1xx
    interim reply included): only then does a new PIA read the tunnel, where dpd_tls_client
    attaches SSL. Blank lines before the reply line are skipped (ContentLine's empty lines)."""
    connect = (True, b"CONNECT tls.example.net:443 HTTP/1.1\r\nHost: tls.example.net\r\n\r\n")
    hello = [(True, HELLO), (False, _server_hello())]
    for port in (3128, 40123):  # HTTP attached by its port, and by dpd_http_client
        assert "ssl" in _services(port, [connect, (False, b"HTTP/1.1 200 Connection established\r\n\r\n"), *hello])
        assert "ssl" in _services(port, [connect, (False, b"\r\nHTTP/1.0 200 OK\r\n\r\n"), *hello])
        assert "ssl" not in _services(port, [connect, (False, b"HTTP/1.1 201 Created\r\n\r\n"), *hello])
        assert "ssl" not in _services(port, [connect, (False, b"HTTP/1.1 100 Continue\r\n\r\n"
                                                             b"HTTP/1.1 200 OK\r\n\r\n"), *hello])
        # HTTP_Request's strncasecmp: any case, any prefix of the method (off HTTP's ports
        # the reply's dpd_http_server attaches HTTP); HTTP_ReplyLine's `HTTP/` in this case.
        for method in (b"connect", b"Con"):
            request = (True, method + connect[1][len(b"CONNECT"):])
            assert "ssl" in _services(port, [request, (False, b"HTTP/1.1 200 OK\r\n\r\n"), *hello]), method
        assert "ssl" not in _services(port, [connect, (False, b"http/1.1 200 OK\r\n\r\n"), *hello])


def test_tls_inside_a_socks_tunnel_is_ssl() -> None:
    """SOCKS.cc DeliverStream: once the client's request and the server's reply are parsed,
    the chunks after them go to a new PIA, where dpd_tls_client attaches SSL; on 1080 and
    where socks/dpd.sig attached SOCKS. Without the reply, the ClientHello is in no
    tunnel: no ssl."""
    greeting, request = (True, b"\x05\x01\x00"), (True, b"\x05\x01\x00\x03\x0ftls.example.net\x01\xbb")
    reply = (False, b"\x05\x00\x00\x01\x0a\x00\x00\x02\x01\xbb")
    hello = [(True, HELLO), (False, _server_hello())]
    for port in (1080, 40124):
        assert _services(port, [greeting, (False, b"\x05\x00"), request, reply, *hello]) == ["socks", "ssl"]
        assert "ssl" not in _services(port, [greeting, (False, b"\x05\x00"), request, *hello])
    socks4 = [(True, b"\x04\x01\x01\xbb\x0a\x00\x00\x02\x00"), (False, b"\x00\x5a\x01\xbb\x0a\x00\x00\x02")]
    assert _services(1080, [*socks4, *hello]) == ["socks", "ssl"]

def _rdp_confirm(selected_protocol: int | None) -> bytes:
    """The server's TPKT with an X.224 Connection Confirm, with an RDP_NEG_RSP selecting
    `selected_protocol` (None: without one)."""
    negotiation = b"" if selected_protocol is None else b"\x02\x00\x08\x00" + selected_protocol.to_bytes(4, "little")
    cotp = bytes([6 + len(negotiation), 0xD0]) + b"\x00\x00\x12\x34\x00" + negotiation
    return b"\x03\x00" + (4 + len(cotp)).to_bytes(2, "big") + cotp


RDP_REQUEST = b"\x03\x00\x00\x2b\x26\xe0\x00\x00\x00\x00\x00Cookie: mstshash=user\r\n\x01\x00\x08\x00\x03\x00\x00\x00"


def test_rdp_negotiating_tls_is_ssl() -> None:
    """RDP.cc DeliverStream: once the Confirm selects TLS (1) or CredSSP (2), the rest of the
    stream goes to a new PIA, where ssl/dpd.sig attaches SSL."""
    for selected in (1, 2):
        turns = [(True, RDP_REQUEST), (False, _rdp_confirm(selected)), (True, HELLO), (False, _server_hello())]
        assert "ssl" in _services(3389, turns)


def test_rdp_standard_security_is_not_ssl() -> None:
    for confirm in (_rdp_confirm(0), _rdp_confirm(None)):
        turns = [(True, RDP_REQUEST), (False, confirm), (True, HELLO), (False, _server_hello())]
        assert "ssl" not in _services(3389, turns)


def _ldap_message(op_tag: int, content: bytes) -> bytes:
    body = b"\x02\x01\x01" + bytes([op_tag, len(content)]) + content
    return bytes([0x30, len(body)]) + body


LDAP_START_TLS = _ldap_message(0x77, b"\x80\x16" + b"1.3.6.1.4.1.1466.20037")


def test_ldap_start_tls_is_ssl() -> None:
    """ldap.spicy: a successful ExtendedResponse after the client's StartTLS request switches
    the connection to TlsForward, which ldap_zeek.spicy hands to SSL."""
    turns = [(True, LDAP_START_TLS), (False, _ldap_message(0x78, b"\x0a\x01\x00\x04\x00\x04\x00")), (True, HELLO)]
    assert "ssl" in _services(389, turns)
    refused = [(True, LDAP_START_TLS), (False, _ldap_message(0x78, b"\x0a\x01\x34\x04\x00\x04\x00")), (True, HELLO)]
    assert "ssl" not in _services(389, refused)


def _services_only(only: set[str] | None, resp_p: int, turns: list[tuple[bool, bytes]]) -> list[str]:
    conn = FakeConn(resp_p=resp_p)
    run = Run(only=only)
    run.feed(conn, _conversation(conn, turns))
    rec = run.finish(conn)
    run.close()
    return rec.service


IRC_OFF_ITS_PORTS = [
    (True, b"NICK me\r\nUSER me 0 * :me\r\n"), (False, b":irc.example.net 670 me :STARTTLS successful\r\n"),
    (True, HELLO), (False, _server_hello()),
]
POSTGRESQL_OFF_ITS_PORTS = [(True, b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), (False, b"S"), (True, HELLO)]


def test_a_hand_over_whose_signature_matches_on_its_own_chunk_reads_the_next_one() -> None:
    """Off their ports irc and postgresql are attached by their dpd.sig signatures, which
    here match on the chunk that hands over: the services analyzer's verdict (read on the
    next chunk, as it runs after TLS) and TLS asking the signature itself (without the
    services analyzer) both let SSL read the hello that follows."""
    for turns in (IRC_OFF_ITS_PORTS, POSTGRESQL_OFF_ITS_PORTS):
        assert "ssl" in _services_only(None, 40123, turns)
        assert _services_only({"tls"}, 40123, turns) == ["ssl"]


def test_an_awaited_signature_matching_on_the_pias_last_chunk_still_hands_over() -> None:
    """Off its ports irc's signature completes on the chunk that takes the PIA past its
    KiB (the client's NICK and USER lines after other bytes): TLS's watch, whose own
    anchors that window does not hold, must still take the services analyzer's verdict
    (irc's anchors are there) and let SSL read after the 670."""
    turns = [(True, b"cap ls 302\r\npass " + b"p" * 600 + b"\r\n"),  # lower case: no HTTP method either
             (False, b":irc.example.net 020 * :Please wait while we process your connection.\r\n"),
             (True, b"nick me\r\nuser me 0 * :me\r\n" + b"x" * 400),
             (False, b":irc.example.net 670 me :STARTTLS successful\r\n"), (True, HELLO), (False, _server_hello())]
    assert sum(len(data) for _, data in turns[:2]) < 1024 < sum(len(data) for _, data in turns[:3])
    assert _services_only(None, 40123, turns) == ["irc", "ssl"]


def test_a_hand_over_needs_its_signature_off_its_ports() -> None:
    """postgresql's signature needs the SSLRequest answered by S or N: without a match no
    analyzer is attached to hand over, with or without the services analyzer."""
    turns = [(True, b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), (False, b"X"), (True, HELLO)]
    assert "ssl" not in _services_only(None, 40123, turns)
    assert "ssl" not in _services_only({"tls"}, 40123, turns)


def test_pop3_signature_reads_the_server_first() -> None:
    """pop3.signature decides on the server's `^+OK` first (a non-POP3 server rejects it on
    its first bytes), then on the client's line; the verdicts of both signatures together."""
    from pcapexfil.services import pop3
    from pcapexfil.services.base import Verdict

    commands = [b"CAPA\r\n", b"GET / HTTP/1.1\r\nAuthorization: x\r\n", b"  user me\r\n"]
    for orig in [b"", b"GET / HTTP/1.1\r\n", *commands]:
        for resp in (b"", b"+", b"+O"):
            assert pop3.signature(orig, resp) is Verdict.MORE
        for resp in (b"-ERR", b"HTTP/1.1 200 OK\r\n", b"+ok"):
            assert pop3.signature(orig, resp) is Verdict.REJECT
        expected = Verdict.CONFIRM if orig in commands else Verdict.MORE
        assert pop3.signature(orig, b"+OK ready\r\n") is expected, orig
