"""The confirm-only service recognisers (pcapexfil.services), one handcrafted positive and
one negative per protocol, checked against what the Zeek analyzer named in each module's
docstring confirms; then a few through both engines (the UDP responder datagram, a
signature on another port)."""

from __future__ import annotations

import re

import dpkt
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from helpers_pcap import ether, ipv4, tcp, udp, write_pcap
from record_sink import RecordCollector
from test_fast_engine import assert_same

from pcapexfil.packet import PROTO_TCP, PROTO_UDP
from pcapexfil.pipeline import RunOptions, run
from pcapexfil.record import ConnRecord
from pcapexfil.services import (
    REPLY_UDP_PORTS,
    candidates,
    dce_rpc,
    ftp,
    irc,
    krb,
    ldap,
    mysql,
    postgresql,
    rdp,
    sip,
    smb,
    smtp,
    snmp,
    socks,
    syslog,
)
from pcapexfil.services.base import AtLineStart, Verdict, confirmable_by

CONFIRM, REJECT, MORE = Verdict.CONFIRM, Verdict.REJECT, Verdict.MORE


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


# -- Kerberos --------------------------------------------------------------------------------

AS_REQ = tlv(0x6A, tlv(0x30, tlv(0xA1, tlv(0x02, b"\x05")) + tlv(0xA2, tlv(0x02, b"\x0a"))))


def test_krb_as_req_confirms_over_udp_and_tcp() -> None:
    assert krb.check_udp(AS_REQ, b"") is CONFIRM
    assert krb.check_tcp(len(AS_REQ).to_bytes(4, "big") + AS_REQ, b"") is CONFIRM
    assert krb.check_tcp(len(AS_REQ).to_bytes(4, "big") + AS_REQ[:5], b"") is MORE


def test_krb_unknown_application_tag_or_overrun_rejects() -> None:
    assert krb.check_udp(tlv(0x61, tlv(0x30, b"")), b"") is REJECT  # APPLICATION 1: no KRB message
    assert krb.check_tcp((3).to_bytes(4, "big") + AS_REQ, b"") is REJECT  # longer than its record


# -- LDAP --------------------------------------------------------------------------------------

BIND_REQUEST = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x60, tlv(0x02, b"\x03") + tlv(0x04, b"") + tlv(0x80, b"")))
BIND_RESPONSE = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x61, tlv(0x0A, b"\x00") + tlv(0x04, b"") + tlv(0x04, b"")))


def test_ldap_one_whole_message_confirms() -> None:
    assert ldap.check(BIND_REQUEST, b"") is CONFIRM
    assert ldap.check(b"", BIND_RESPONSE) is CONFIRM
    assert ldap.check(BIND_REQUEST[:-1], b"") is MORE


def test_ldap_unknown_opcode_or_no_sequence_rejects() -> None:
    unknown_op = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x71, b""))  # APPLICATION 17: not a ProtocolOpcode
    assert ldap.check(unknown_op, b"") is REJECT
    assert ldap.check(b"GET / HTTP/1.1\r\n", b"") is REJECT


def test_ldap_signature_needs_the_server_sequence() -> None:
    assert ldap.signature_tcp(BIND_REQUEST, BIND_RESPONSE) is CONFIRM
    assert ldap.signature_tcp(BIND_REQUEST, b"") is MORE
    assert ldap.signature_tcp(BIND_REQUEST, b"HTTP/1.1 400\r\n") is REJECT


# -- SNMP --------------------------------------------------------------------------------------


def snmp_v2c(pdu_tag: int) -> bytes:
    varbind = tlv(0x30, tlv(0x30, tlv(0x06, b"\x2b\x06\x01") + b"\x05\x00"))
    pdu = tlv(pdu_tag, tlv(0x02, b"\x01") + tlv(0x02, b"\x00") + tlv(0x02, b"\x00") + varbind)
    return tlv(0x30, tlv(0x02, b"\x01") + tlv(0x04, b"public") + pdu)


def test_snmp_confirms_on_the_responder_header_only() -> None:
    assert snmp.check(snmp_v2c(0xA0), b"") is MORE  # a GetRequest: proc_header confirms only `! is_orig`
    assert snmp.check(snmp_v2c(0xA0), snmp_v2c(0xA2)) is CONFIRM


def test_snmp_wrong_tag_rejects() -> None:
    assert snmp.check(snmp_v2c(0xA0), tlv(0x30, tlv(0x02, b"\x01") + tlv(0x02, b"\x00"))) is REJECT
    assert snmp.check(b"\x17\x03\x03\x00\x10", b"") is REJECT


# -- syslog, SIP -------------------------------------------------------------------------------


def test_syslog_any_datagram_confirms() -> None:
    assert syslog.check(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed", b"") is CONFIRM
    assert syslog.check(b"no priority at all", b"") is CONFIRM  # Syslog::Message's PRI is optional
    assert syslog.check(b"", b"") is MORE


def test_sip_confirms_on_the_reply_line_only() -> None:
    invite = b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33\r\n\r\n"
    assert sip.check(invite, b"") is MORE
    assert sip.check(invite, b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP pc33\r\n\r\n") is CONFIRM
    assert sip.check(invite, b"HTTP/1.1 200 OK\r\n\r\n") is REJECT


# -- SMB, DCE/RPC ------------------------------------------------------------------------------


def nbss(body: bytes) -> bytes:
    return b"\x00" + len(body).to_bytes(3, "big") + body


SMB2_HEADER = b"\xfeSMB" + (64).to_bytes(2, "little") + bytes(58)


def test_smb_confirms_after_three_messages() -> None:
    assert smb.check(nbss(SMB2_HEADER), nbss(SMB2_HEADER)) is MORE
    assert smb.check(nbss(SMB2_HEADER) * 2, nbss(SMB2_HEADER)) is CONFIRM
    assert smb.check(nbss(b"\xffSMB" + bytes(28)) * 2, nbss(b"\xffSMB" + bytes(28))) is CONFIRM


def test_smb_without_the_magic_rejects_and_signature_needs_it() -> None:
    assert smb.check(nbss(b"\x00SMB" + bytes(60)), nbss(b"garbage!" * 4)) is REJECT
    assert smb.signature(nbss(SMB2_HEADER), b"") is CONFIRM
    assert smb.signature(b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n") is REJECT


def dcerpc_bind(frag_len: int = 72, ptype: int = 11) -> bytes:
    header = bytes([5, 0, ptype, 0x03, 0x10, 0, 0, 0]) + frag_len.to_bytes(2, "little") + bytes(6)
    return header + bytes(frag_len - len(header))


def test_dce_rpc_whole_pdu_confirms() -> None:
    assert dce_rpc.check(dcerpc_bind(), b"") is CONFIRM
    assert dce_rpc.check(dcerpc_bind()[:40], b"") is MORE
    assert dce_rpc.signature(dcerpc_bind(), b"") is CONFIRM


def test_dce_rpc_wrong_version_rejects() -> None:
    assert dce_rpc.check(b"\x04" + dcerpc_bind()[1:], b"") is REJECT
    not_first_and_last = b"\x05\x00\x0b\x01" + bytes(12)  # the signature wants flags 0x03
    assert dce_rpc.signature(not_first_and_last, b"") is MORE  # either direction may match
    assert dce_rpc.signature(not_first_and_last, not_first_and_last) is REJECT


# -- MySQL, PostgreSQL -------------------------------------------------------------------------


def mysql_packet(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


GREETING = mysql_packet(0, b"\x0a" + b"8.0.36\x00" + bytes(40))
SSL_REQUEST = mysql_packet(1, bytes(32))


def test_mysql_greeting_then_handshake_response_confirms() -> None:
    assert mysql.check(b"", GREETING) is MORE
    assert mysql.check(SSL_REQUEST, GREETING) is CONFIRM


def test_mysql_other_version_or_error_greeting_rejects() -> None:
    assert mysql.check(SSL_REQUEST, mysql_packet(0, b"\xff\x6a\x04Host not allowed")) is REJECT
    assert mysql.check(b"", b"SSH-2.0-OpenSSH_9.6\r\n") is REJECT


def startup(params: bytes, version: int = 0x00030000) -> bytes:
    body = version.to_bytes(4, "big") + params + b"\x00"
    return (len(body) + 4).to_bytes(4, "big") + body


def test_postgresql_startup_or_answered_sslrequest_confirms() -> None:
    assert postgresql.check(startup(b"user\x00alice\x00database\x00db\x00"), b"") is CONFIRM
    ssl_request = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
    assert postgresql.check(ssl_request, b"") is MORE
    assert postgresql.check(ssl_request, b"S") is CONFIRM
    assert postgresql.check(ssl_request, b"N") is CONFIRM


def test_postgresql_other_major_or_bad_parameter_rejects() -> None:
    assert postgresql.check(startup(b"user\x00alice\x00", version=0x00020000), b"") is REJECT
    assert postgresql.check(startup(b"us er\x00alice\x00"), b"") is REJECT
    assert postgresql.signature(startup(b"user\x00alice\x00"), b"R\x00\x00\x00\x08\x00\x00\x00\x00") is CONFIRM


# -- IRC, SOCKS, RDP ---------------------------------------------------------------------------


def test_irc_first_well_formed_client_line_confirms() -> None:
    assert irc.check(b"NICK alice\r\nUSER alice 0 * :Alice\r\n", b"") is CONFIRM
    assert irc.check(b"  \r\nNICK alice\r\n", b"") is CONFIRM  # the short line is skipped (weird only)
    assert irc.check(b"NICK al", b"") is MORE


def test_irc_without_a_usable_client_line_rejects() -> None:
    assert irc.check(b"\x16\x03\x01" + bytes(1100), b"") is REJECT
    assert irc.check(b":prefix-without-space\r\n" + b"x" * 1001, b"") is REJECT


def test_irc_signature_user_nick_with_server_reply() -> None:
    client = b"NICK alice\r\nUSER alice 0 * :Alice\r\n"
    assert irc.signature(client, b":irc.example.net 001 alice :Welcome\r\n") is CONFIRM
    assert irc.signature(client, b"HTTP/1.1 400 Bad\r\n") is MORE  # a reply line may come later
    # No length ends these patterns: only the PIA's buffer does (test_signatures_stop_past_the_pia_buffer).
    assert irc.signature(b"GET / HTTP/1.1\r\n" + bytes(1100), b"HTTP/1.1 200 OK\r\n" + bytes(1100)) is MORE


def test_socks4_and_socks5_reply_confirms() -> None:
    request4 = b"\x04\x01\x00\x50\x0a\x00\x00\x01alice\x00"
    assert socks.check(request4, b"\x00\x5a\x00\x50\x0a\x00\x00\x01") is CONFIRM
    greeting5 = b"\x05\x01\x00"
    request5 = b"\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50"
    reply5 = b"\x05\x00\x00\x01\x0a\x00\x00\x02\x04\x00"
    assert socks.check(greeting5, b"\x05\x00") is MORE  # negotiation only: no reply yet
    assert socks.check(greeting5 + request5, b"\x05\x00" + reply5) is CONFIRM
    assert socks.signature(greeting5, b"\x05\x00") is CONFIRM


def test_socks_wrong_version_or_address_type_rejects() -> None:
    assert socks.check(b"GET / HTTP/1.1\r\n", b"") is REJECT
    assert socks.check(b"\x05\x01\x00", b"\x05\x00\x05\x00\x00\x09" + bytes(6)) is REJECT


def test_socks_tunnel_opens_once_both_handshakes_are_parsed() -> None:
    """SOCKS.cc: the tunnel needs the client's request (socks4_request: the user and, for
    an address up to 0.0.0.255, a name, each NUL-terminated; socks5_request after the
    negotiation and a user/pass sub-negotiation) and the server's reply, whatever its
    status; a SOCKS5 request with a reserved byte or a command socks5_request refuses
    never opens it."""
    reply4 = b"\x00\x5b\x00\x50\x0a\x00\x00\x01"  # rejected: the tunnel opens all the same
    assert socks.tunnel(b"\x04\x01\x00\x50\x0a\x00\x00\x01alice\x00", reply4) is True
    assert socks.tunnel(b"\x04\x01\x00\x50\x0a\x00\x00\x01alice", reply4) is None
    socks4a = b"\x04\x01\x00\x50\x00\x00\x00\x07alice\x00"
    assert socks.tunnel(socks4a, reply4) is None  # the name is still to come
    assert socks.tunnel(socks4a + b"host.example\x00", reply4) is True
    greeting, request = b"\x05\x02\x00\x02", b"\x05\x01\x00\x03\x04host\x00\x50"
    reply = b"\x05\x04\x00\x01\x0a\x00\x00\x02\x04\x00"
    assert socks.tunnel(greeting, b"\x05\x00") is None
    assert socks.tunnel(greeting + request, b"\x05\x00" + reply) is True
    assert socks.tunnel(greeting + request[:-1], b"\x05\x00" + reply) is None
    userpass = b"\x01\x02me\x02pw"
    assert socks.tunnel(greeting + userpass + request, b"\x05\x02\x01\x00" + reply) is True
    assert socks.tunnel(greeting + b"\x05\x01\x01" + request[3:], b"\x05\x00" + reply) is False
    assert socks.tunnel(greeting + b"\x05\x04\x00" + request[3:], b"\x05\x00" + reply) is False
    assert socks.tunnel(b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n") is False

def tpkt(body: bytes) -> bytes:
    return b"\x03\x00" + (len(body) + 4).to_bytes(2, "big") + body


RDP_CR = tpkt(b"\x26\xe0\x00\x00\x00\x00\x00Cookie: mstshash=alice\r\n")
RDP_CC = tpkt(b"\x0e\xd0\x00\x00\x12\x34\x00\x02\x00\x08\x00\x00\x00\x00\x00")
CONNECT_INITIAL = tpkt(b"\x02\xf0\x80\x7f\x65\x82\x01\x00" + bytes(20) + b"\x01\xc0\xd8\x00" + bytes(40))


def test_rdp_connect_initial_with_core_data_confirms() -> None:
    assert rdp.check(RDP_CR, RDP_CC) is MORE  # the X.224 exchange confirms nothing
    assert rdp.check(RDP_CR + CONNECT_INITIAL, RDP_CC) is CONFIRM
    assert rdp.signature(RDP_CR, RDP_CC) is CONFIRM


def test_rdp_tls_after_negotiation_rejects() -> None:
    client_hello = b"\x16\x03\x01\x00\x50" + bytes(80)
    assert rdp.check(RDP_CR + client_hello, RDP_CC) is REJECT


# -- registry ----------------------------------------------------------------------------------


def test_candidates_by_port_and_by_signature() -> None:
    by_port = {r.name: sig for r, sig in candidates(PROTO_TCP, 445)}
    assert by_port["smb"] is False and by_port["dce_rpc"] is True
    assert {r.name for r, sig in candidates(PROTO_TCP, 6667) if not sig} == {"irc", "ssh"}
    assert "mysql" not in {r.name for r, _ in candidates(PROTO_TCP, 9999)}  # no dpd.sig
    # smtp/dpd.sig and ftp/dpd.sig: by port on 25 and 21, by signature elsewhere.
    assert {r.name: sig for r, sig in candidates(PROTO_TCP, 25) if r.name in ("smtp", "ftp")} == {
        "smtp": False, "ftp": True}
    assert {r.name: sig for r, sig in candidates(PROTO_TCP, 21) if r.name in ("smtp", "ftp")} == {
        "smtp": True, "ftp": False}
    assert {r.name for r, _ in candidates(PROTO_UDP, 161)} == {"snmp"}
    assert REPLY_UDP_PORTS == {161, 162, 5060}


# -- through both engines ----------------------------------------------------------------------

SYN, ACK, PSH = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH
CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def _records(tmp_path, frames: list[tuple[float, bytes]]) -> list[ConnRecord]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = str(write_pcap(tmp_path / "t.pcap", frames))
    assert assert_same([path], tmp_path, local_nets=()) > 0
    sink = RecordCollector()
    run([path], RunOptions(out_dir=None, seed=1, local_nets=(), engine="reference"), [sink])
    return sorted(sink.records, key=lambda r: r.ts)


def tcp_exchange(port: int, turns: list[tuple[bool, bytes]]) -> list[tuple[float, bytes]]:
    """A handshake, then each (from client?, bytes) turn as one segment."""
    t, cseq, sseq = 10.0, 101, 901
    frames = [
        (t, ether(ipv4(tcp(50000, port, SYN, 100, 0), CLIENT, SERVER))),
        (t + 0.01, ether(ipv4(tcp(port, 50000, SYN | ACK, 900, 101), SERVER, CLIENT))),
        (t + 0.02, ether(ipv4(tcp(50000, port, ACK, 101, 901), CLIENT, SERVER))),
    ]
    for i, (from_client, data) in enumerate(turns):
        ts = t + 0.03 + 0.01 * i
        if from_client:
            frames.append((ts, ether(ipv4(tcp(50000, port, PSH | ACK, cseq, sseq, data), CLIENT, SERVER))))
            cseq += len(data)
        else:
            frames.append((ts, ether(ipv4(tcp(port, 50000, PSH | ACK, sseq, cseq, data), SERVER, CLIENT))))
            sseq += len(data)
    return frames


def test_snmp_response_datagram_confirms_in_both_engines(tmp_path) -> None:
    frames = [
        (1.0, ether(ipv4(udp(40000, 161, snmp_v2c(0xA0)), CLIENT, SERVER))),
        (1.1, ether(ipv4(udp(161, 40000, snmp_v2c(0xA2)), SERVER, CLIENT))),
    ]
    (rec,) = _records(tmp_path / "answered", frames)
    assert rec.service == ["snmp"]
    (rec,) = _records(tmp_path / "unanswered", frames[:1])
    assert rec.service == []


def test_mysql_and_irc_on_their_ports(tmp_path) -> None:
    (rec,) = _records(tmp_path / "mysql", tcp_exchange(3306, [(False, GREETING), (True, SSL_REQUEST)]))
    assert rec.service == ["mysql"]
    (rec,) = _records(tmp_path / "irc", tcp_exchange(6667, [(True, b"NICK alice\r\nUSER alice 0 * :A\r\n")]))
    assert rec.service == ["irc"]


def test_dce_rpc_signature_on_another_port(tmp_path) -> None:
    """dce-rpc/dpd.sig attaches the analyzer on 502/tcp (corpus: modbus_and_non_modbus_on_port_502)."""
    (rec,) = _records(tmp_path / "sig", tcp_exchange(502, [(True, dcerpc_bind())]))
    assert rec.service == ["dce_rpc"]
    (rec,) = _records(tmp_path / "nosig", tcp_exchange(3306, [(True, b"\x05\x00\x0b\x01" + bytes(68))]))
    assert rec.service == []


IRC_CLIENT = b"NICK alice\r\nUSER alice 0 * :Alice\r\n"
IRC_WELCOME = b":irc.example.net 001 alice :Welcome\r\n"


def test_signatures_stop_past_the_pia_buffer(tmp_path) -> None:
    """PIA_TCP::DeliverStream: one buffer for both directions; the chunk that takes it past
    dpd_buffer_size (1024) bytes is matched whole, later chunks are not (port 7000: irc by
    its dpd.sig only)."""
    notice = b":irc.example.net NOTICE * :" + b"x" * 1100 + b"\r\n"
    (rec,) = _records(tmp_path / "within", tcp_exchange(7000, [(True, IRC_CLIENT), (False, IRC_WELCOME)]))
    assert rec.service == ["irc"]
    # The server's first chunk takes the buffer past 1 KiB: its welcome line, 1.1 KiB in, still counts.
    (rec,) = _records(tmp_path / "crossing", tcp_exchange(7000, [(True, IRC_CLIENT), (False, notice + IRC_WELCOME)]))
    assert rec.service == ["irc"]
    # The client's first chunk did: the reply comes after matching stopped.
    (rec,) = _records(tmp_path / "after", tcp_exchange(7000, [(True, IRC_CLIENT + b"PING :" + bytes(1000) + b"\r\n"),
                                                          (False, IRC_WELCOME)]))
    assert rec.service == []
    # dpd_max_packets: the 101st chunk, however small, is the last one matched.
    chatter = [(True, b"\r\n")] * 100
    (rec,) = _records(tmp_path / "chunks", tcp_exchange(7000, [(True, IRC_CLIENT), *chatter, (False, IRC_WELCOME)]))
    assert rec.service == []
    (rec,) = _records(tmp_path / "chunks-within", tcp_exchange(7000, [(True, IRC_CLIENT), *chatter[1:],
                                                                  (False, IRC_WELCOME)]))
    assert rec.service == ["irc"]


# The line patterns of irc/dpd.sig, smtp/dpd.sig (dpd_smtp_client) and ftp/dpd.sig
# (dpd_ftp_client) as Zeek writes them (`[[:space:]]`: isspace): the oracle for AtLineStart.
_LINE_DPD_SIG = {
    irc._SIG_SERVER_REPLY: rb"(|.*[\n\r])(:[^ \n\r]+ )?[0-9][0-9][0-9] ",
    irc._SIG_CLIENT[0]: rb"(|.*[\r\n]) *[Uu][Ss][Ee][Rr] +.+[\n\r]+ *[Nn][Ii][Cc][Kk] +.*[\r\n]",
    irc._SIG_CLIENT[1]: rb"(|.*[\r\n]) *[Nn][Ii][Cc][Kk] +.+[\r\n]+ *[Uu][Ss][Ee][Rr] +.+[\r\n]",
    irc._SIG_SERVER_TO_SERVER: rb"(|.*[\r\n]) *[Ss][Ee][Rr][Vv][Ee][Rr] +[^ ]+ +[0-9]+ +:.+[\r\n]",
    smtp._SIG_CLIENT: rb"(|.*[\n\r])[ \t\n\x0b\x0c\r]*([hH][eE][lL][oO]|[eE][hH][lL][oO])",
    ftp._SIG_CLIENT: rb"(|.*[\n\r]) *[uU][sS][eE][rR] ",
}
# Lines that match one of the patterns, nearly match, or do not, and what may end them.
_LINES = [b"", b"x", b" ", b"123 ", b"12 ", b":irc.example 001 ", b":p001 ", b"1234 ", b"USER a b", b"user", b" NICK x",
          b"nick ", b"SERVER irc 1 :hi", b"server a 1 :", b"\x00", b"EHLO", b"\t\x0bhelo x", b"xhelo", b"HEL", b"\x0c",
          b"\t", b" User x", b"\tuser x", b"USER\t"]
_BREAKS = [b"\r", b"\n", b"\r\n", b"", b" "]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_LINES), st.sampled_from(_BREAKS)), max_size=8),
       st.sampled_from(list(_LINE_DPD_SIG)))
def test_at_line_start_answers_as_the_dpd_sig_regex(lines: list[tuple[bytes, bytes]], pattern: AtLineStart) -> None:
    window = b"".join(line + end for line, end in lines)
    expected = re.compile(_LINE_DPD_SIG[pattern], re.DOTALL).match(window) is not None
    assert pattern.match(window) is expected


# The server patterns of smtp/dpd.sig (dpd_smtp_server) and ftp/dpd.sig (dpd_ftp_server)
# as Zeek writes them, with the recogniser's verdict on a responder window alone.
_SERVER_DPD_SIG = {
    smtp: rb"^[ \t\n\x0b\x0c\r]*220[ \t\n\x0b\x0c\r-]",
    ftp: rb"[\n\r ]*(120|220)[^0-9].*[\n\r] *(230|331)[^0-9]",
}
_SERVER_PIECES = [b"220", b"120", b"22", b"2", b"0", b"230", b"331", b"332", b" ", b"\t", b"\r", b"\n", b"-", b"x",
                  b"\x0b", b"HTTP/1.1 200 OK\r\n"]
_server_windows = st.lists(st.sampled_from(_SERVER_PIECES), max_size=8).map(b"".join)


@settings(max_examples=1500, deadline=None)
@given(module=st.sampled_from(list(_SERVER_DPD_SIG)), window=_server_windows, more=_server_windows)
@example(module=smtp, window=b" \r\n220-", more=b"")
@example(module=smtp, window=b" 22", more=b"0 ")
@example(module=ftp, window=b"\r\n120x\n  331 ", more=b"")
@example(module=ftp, window=b"220 ", more=b"\r331 ")
def test_server_signatures_answer_as_the_dpd_sig_regex_and_fail_for_good(module, window, more) -> None:
    """The server side's pattern verdict (with the client's matched): CONFIRM exactly where
    Zeek's regex matches the responder's bytes, REJECT only where no more bytes can make it
    match, MORE otherwise."""
    client = b"EHLO x\r\n" if module is smtp else b"USER x\r\n"
    zeek = re.compile(_SERVER_DPD_SIG[module], re.DOTALL)
    verdict = module.signature(client, window) if window else MORE
    assert (verdict is CONFIRM) is (zeek.match(window) is not None)
    if verdict is REJECT:
        assert zeek.match(window + more) is None


def test_at_line_start_checks_every_line() -> None:
    reply = irc._SIG_SERVER_REPLY
    assert reply.match(b"001 welcome")
    assert reply.match(b"NOTICE x\r:irc.example 001 nick")
    assert reply.match(b"HTTP/1.1 200 OK\n\n404 ")
    assert not reply.match(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n")
    assert not reply.match(b"x001 \n:prefix001 ")


# Pieces of the reverse-signature recognisers' dpd.sig patterns (and of traffic that is not
# theirs), for windows that match, fail, or stay undecided in either direction.
_SIGNATURE_PIECES = [
    b"NICK alice\r\n", b"USER alice 0 * :Alice\r\n", b":irc.example.net 001 alice :Welcome\r\n", b"002 ",
    b"SERVER hub.example 1 :Hub\r\n", b"Cookie: mstshash=bob\r\n", b"Duca", b"rdpdr", b"McDn",
    b"\x03\x00\x00\x13\x0e\xd0", b"\x30\x0c\x02\x01\x01\x60\x07\x02\x01\x03\x04\x00\x80\x00", b"\x30",
    b"\x00\x00\x00\x08\x04\xd2\x16\x2f", b"S", b"\x00\x00\x00\x10\x00\x03\x00\x00user\x00bob\x00\x00",
    b"R\x00\x00\x00\x08", b"\x04\x01\x00\x50\x0a\x00\x00\x01\x00",
    b"\x00\x5a", b"\x05\x01\x00", b"\x05\x00", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"\r\n", b"\n", b" ",
    b"x" * 40, b"220 mx ESMTP\r\n", b"220-", b"EHLO client\r\n", b"\thelo", b"USER anonymous\r\n", b"331 password\r\n",
    b"230 ok\r\n", b"120 soon\r\n",
]
_windows = st.lists(st.sampled_from(_SIGNATURE_PIECES), max_size=4).map(b"".join)
_REVERSE_SIGNATURES = [r for r in (irc.RECOGNISER, rdp.RECOGNISER, ldap.RECOGNISER_TCP, postgresql.RECOGNISER,
                                   socks.RECOGNISER, smtp.RECOGNISER, ftp.RECOGNISER)]


@settings(max_examples=1500, deadline=None)
@given(recogniser=st.sampled_from(_REVERSE_SIGNATURES), orig=_windows, resp=_windows,
       more=st.lists(_windows, min_size=1, max_size=3), grows_orig=st.booleans())
def test_a_signature_one_direction_cannot_confirm_never_does(recogniser, orig, resp, more, grows_orig) -> None:
    """`confirmable_by`: where more bytes of one direction are said not to be able to make
    a signature pair confirm, no bytes appended to that direction do (the services analyzer
    then skips the signature on that direction's chunks)."""
    assert recogniser.signature is not None and recogniser.signature_pairs is not None
    by_orig, by_resp = confirmable_by(recogniser.signature_pairs(orig, resp))
    if by_orig if grows_orig else by_resp:
        return
    grown = orig if grows_orig else resp
    for extra in more:
        grown += extra
        verdict = recogniser.signature(grown, resp) if grows_orig else recogniser.signature(orig, grown)
        assert verdict is not CONFIRM


def test_confirmable_needs_the_other_direction_matched() -> None:
    """irc's USER/NICK lines wait for a server reply: only the server's bytes can confirm then."""
    client = b"NICK alice\r\nUSER alice 0 * :Alice\r\n"
    assert confirmable_by(irc.RECOGNISER.signature_pairs(client, b"")) == (False, True)
    assert confirmable_by(irc.RECOGNISER.signature_pairs(b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n")) == (
        False, False)
    assert confirmable_by(rdp.RECOGNISER.signature_pairs(b"Cookie: mstshash=bob\r\n", b"x")) == (False, True)


@settings(max_examples=150, deadline=None)
@given(turns=st.lists(st.tuples(st.booleans(), _windows.filter(bool)), min_size=1, max_size=6),
       port=st.sampled_from([7000, 80, 443]))
@example(turns=[(True, IRC_CLIENT), (False, IRC_WELCOME)], port=7000)
@example(turns=[(False, IRC_WELCOME), (True, b"NICK alice\r\n"), (False, b"x"), (True, b"USER alice 0 * :A\r\n")],
         port=7000)
@example(turns=[(True, b"GET / HTTP/1.1\r\n\r\n"), (False, b"HTTP/1.1 200 OK\r\n\r\n"), (True, IRC_CLIENT),
                (False, IRC_WELCOME)], port=80)
@example(turns=[(True, b"Cookie: mstshash=bob\r\n"), (False, b"\x03\x00\x00\x13\x0e\xd0")], port=7000)
@example(turns=[(True, b"SERVER hub.example 1 :Hub\r\n"), (False, b"x"), (False, b"SERVER leaf 1 :Leaf\r\n")],
         port=7000)
@example(turns=[(True, b"EHLO client\r\n"), (False, b"220 mx ESMTP\r\n"), (True, b"\thelo")], port=7000)
@example(turns=[(False, b"220 ready\r\n"), (True, b"USER anonymous\r\n"), (False, b"331 password\r\n")], port=80)
def test_skipping_signatures_one_direction_cannot_confirm_changes_no_record(tmp_path_factory, turns, port) -> None:
    """The services analyzer does not ask a signature pair on chunks of a direction that
    alone cannot make it confirm (`ServiceAnalyzer._decide`). Asking on every chunk (the
    oracle: `confirmable_by` saying every direction can) gives the same records, services
    and TLS hand-overs included, on conversations of the pairs' pieces in any order."""
    import pcapexfil.services as services

    frames = tcp_exchange(port, turns)
    path = str(write_pcap(tmp_path_factory.mktemp("skip") / "t.pcap", frames))

    def records() -> list[ConnRecord]:
        sink = RecordCollector()
        run([path], RunOptions(out_dir=None, seed=1, local_nets=(), engine="reference"), [sink])
        return sink.records

    skipping = records()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, "confirmable_by", lambda pairs: (True, True))
        assert records() == skipping
