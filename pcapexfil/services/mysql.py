"""MySQL: the server's greeting, then the client's handshake response.

Zeek's MySQL analyzer (src/analyzer/protocol/mysql/mysql-analyzer.pac) confirms in
proc_mysql_handshake_response_packet, for a Handshake_Response_Packet of protocol version
9 or 10 (`if ( ${msg.version} == 9 || ${msg.version == 10} ) AnalyzerConfirmation()`); the
version comes from the server's Initial_Handshake_Packet (mysql-protocol.pac: a 3-byte
little-endian length, sequence id 0, then the protocol version byte). An SSL request
(CLIENT_SSL) is such a response too, so encrypted sessions are confirmed before the switch
to TLS. Registered on 1434/tcp and 3306/tcp (mysql/main.zeek), no signature.

Here: the server's first packet has sequence id 0 and version 9 or 10, and the client's
first packet (sequence id 1) is complete.
"""

from __future__ import annotations

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import Recogniser, Verdict

HEADER_LEN = 4  # 3-byte length, sequence id
PROTOCOL_VERSIONS = (9, 10)
GREETING_SEQ, RESPONSE_SEQ = 0, 1


def _packet(data: bytes) -> tuple[int, bytes] | None:
    """(sequence id, payload) of the first packet; None while incomplete."""
    if len(data) < HEADER_LEN:
        return None
    length = int.from_bytes(data[:3], "little")
    if len(data) < HEADER_LEN + length:
        return None
    return data[3], data[HEADER_LEN : HEADER_LEN + length]


def check(orig: bytes, resp: bytes) -> Verdict:
    greeting = _packet(resp) if len(resp) > HEADER_LEN else None
    if greeting is None:
        if len(resp) > HEADER_LEN and resp[3] != GREETING_SEQ:
            return Verdict.REJECT
        if len(resp) > HEADER_LEN and resp[HEADER_LEN] not in PROTOCOL_VERSIONS:
            return Verdict.REJECT
        return Verdict.MORE
    seq, payload = greeting
    if seq != GREETING_SEQ or not payload or payload[0] not in PROTOCOL_VERSIONS:
        return Verdict.REJECT
    response = _packet(orig)
    if response is None:
        return Verdict.MORE
    return Verdict.CONFIRM if response[0] == RESPONSE_SEQ and response[1] else Verdict.REJECT


CLIENT_SSL = 0x0800  # mysql-protocol.pac: capability flag of an SSL request
TLS_VERSION = 10  # the hand-over is only read from a version-10 handshake response


def starttls(orig: bytes, resp: bytes) -> bool | None:
    """Whether proc_mysql_handshake_response_packet called StartTLS on these first bytes: a
    version-10 greeting answered by a handshake response whose capability flags (32 bits,
    little-endian) carry CLIENT_SSL. False once the response is there without it."""
    greeting = _packet(resp)
    response = _packet(orig)
    if greeting is None or response is None:
        return None
    if greeting[0] != GREETING_SEQ or greeting[1][:1] != bytes([TLS_VERSION]) or response[0] != RESPONSE_SEQ:
        return False
    flags = response[1][:4]
    return len(flags) == 4 and bool(int.from_bytes(flags, "little") & CLIENT_SSL)


# skips_partial: mysql/MySQL.cc MySQL_Analyzer::DeliverStream.
RECOGNISER = Recogniser("mysql", PROTO_TCP, check, skips_partial=True)
