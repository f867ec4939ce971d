"""PostgreSQL: a client StartupMessage, or an SSLRequest the server answered.

Zeek's PostgreSQL analyzer is a Spicy parser (src/analyzer/protocol/postgresql/
postgresql.spicy) whose confirmations are in postgresql_zeek.spicy: `on
PostgreSQL::StartupMessage::%done` (a length >= 9, protocol major version 3, name/value
parameters, a terminating NUL) and `on PostgreSQL::MaybeBackendSSL::ssl_byte` (the server's
'S' or 'N' after the client's 8-byte SSLRequest, code 80877103). FrontendMessages throws
on another major version (a violation). Registered on 5432/tcp (postgresql/main.zeek).
postgresql/dpd.sig attaches it on other ports for an SSLRequest answered by S/N, or a
version-3 startup message carrying `user\\0` answered by a message header; modelled.
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import (
    Anchors,
    Marks,
    PatternPair,
    Recogniser,
    Verdict,
    reverse_signatures,
    signature_match,
)

SSL_REQUEST_LEN = 8
SSL_REQUEST_CODE = 80877103
MAJOR_VERSION = 3
MIN_STARTUP_LEN = 9
SSL_ANSWERS = b"SN"
_PARAMETER_NAME = re.compile(rb"[-_/A-Za-z0-9]+")
_PARAMETER_VALUE = re.compile(rb"[\x20-\x7e]+")

_SIG_SSL_REQUEST = re.compile(rb"\x00\x00\x00\x08\x04\xd2\x16\x2f")
_SIG_SSL_ANSWER = re.compile(rb"[SN]")
_SIG_STARTUP = re.compile(rb"....\x00\x03\x00.{0,256}user\x00", re.DOTALL)
_SIG_ANY_RESPONSE = re.compile(rb"[a-zA-Z0-9]\x00\x00..", re.DOTALL)
SIG_STARTUP_NEED = 4 + 3 + 256 + 5


def _startup(data: bytes) -> bool | None:
    """A whole StartupMessage (postgresql.spicy's unit)."""
    length = int.from_bytes(data[:4], "big")
    if length < MIN_STARTUP_LEN:
        return False
    if len(data) < length:
        return None
    pos, end = 8, length - 1
    while pos < end:
        for pattern in (_PARAMETER_NAME, _PARAMETER_VALUE):
            m = pattern.match(data, pos, end)
            if m is None or m.end() >= end or data[m.end()] != 0:
                return False
            pos = m.end() + 1
    return pos == end and data[end] == 0


def check(orig: bytes, resp: bytes) -> Verdict:
    if len(orig) < SSL_REQUEST_LEN:
        return Verdict.MORE
    length = int.from_bytes(orig[:4], "big")
    code = int.from_bytes(orig[4:8], "big")
    if length == SSL_REQUEST_LEN and code == SSL_REQUEST_CODE:
        if not resp:
            return Verdict.MORE
        return Verdict.CONFIRM if resp[0] in SSL_ANSWERS else Verdict.REJECT
    if length < SSL_REQUEST_LEN or code >> 16 != MAJOR_VERSION:
        return Verdict.REJECT
    ok = _startup(orig)
    return Verdict.MORE if ok is None else Verdict.CONFIRM if ok else Verdict.REJECT


def _signature_pairs(orig: bytes, resp: bytes) -> tuple[PatternPair, ...]:
    """postgresql/dpd.sig's two pairs: dpd_postgresql_client_sslrequest answered by
    dpd_postgresql_server_ssl_confirm, dpd_postgresql_client_startup_3_x answered by
    dpd_postgresql_server_any_response."""
    return ((signature_match(_SIG_SSL_REQUEST, orig, SSL_REQUEST_LEN) if orig else None,
             signature_match(_SIG_SSL_ANSWER, resp, 1) if resp else None),
            (signature_match(_SIG_STARTUP, orig, SIG_STARTUP_NEED) if orig else None,
             signature_match(_SIG_ANY_RESPONSE, resp, 5) if resp else None))


signature = reverse_signatures(_signature_pairs)


SSL_ACCEPTED = b"S"


def starttls(orig: bytes, resp: bytes) -> bool | None:
    """Whether postgresql_zeek.spicy hands the stream to SSL on these first bytes: the
    client's SSLRequest answered by 'S' (MaybeBackendSSL::ssl_byte); False for any other
    first message or answer."""
    if len(orig) < SSL_REQUEST_LEN:
        return None
    if int.from_bytes(orig[:4], "big") != SSL_REQUEST_LEN or int.from_bytes(orig[4:8], "big") != SSL_REQUEST_CODE:
        return False
    if not resp:
        return None
    return resp[:1] == SSL_ACCEPTED


# Both client patterns: the SSLRequest's length, or a startup message's version 3.0.
_CLIENT_START = Marks(start=rb"(?s:\x00\x00\x00\x08|....\x00\x03\x00)")
RECOGNISER = Recogniser("postgresql", PROTO_TCP, check, signature=signature, signature_pairs=_signature_pairs,
                        anchors=Anchors(orig=_CLIENT_START))
