"""LDAP: one whole LDAPMessage (ldap_tcp on TCP, ldap_udp on UDP).

Zeek's LDAP analyzer is a Spicy parser (src/analyzer/protocol/ldap/ldap.spicy): `on
LDAP::Message::%done { spicy::accept_input(); }` confirms once one LDAPMessage (RFC 4511
4.1.1) parsed: a universal SEQUENCE, an INTEGER messageID, then a protocolOp whose
APPLICATION tag is one of the ProtocolOpcode values the unit's switch knows. Registered on
389/tcp, 3268/tcp and 389/udp (ldap/main.zeek, analyzers LDAP_TCP and LDAP_UDP).

ldap/dpd.sig attaches it on other ports when the client's first bytes are an LDAPMessage
header with a request tag (TCP: delete, bind, search, modify, add, modifyDN, compare,
extended) and the server's start with a SEQUENCE (`requires-reverse-signature`); modelled
for TCP. On UDP (CLDAP) other ports are not modelled: that signature needs the server's
datagram, which the engines hand to analyzers on registered ports only.
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_TCP, PROTO_UDP
from pcapexfil.services import ber
from pcapexfil.services.base import (
    Anchors,
    Marks,
    PatternPair,
    Recogniser,
    Verdict,
    parsed_in_either_direction,
    reverse_signatures,
    signature_match,
)

# ldap.spicy's ProtocolOpcode (RFC 4511 4.2-4.13).
OPCODES = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 19, 23, 24, 25})

_SIG_CLIENT_TCP = re.compile(
    rb"\x30([\x05-\x7f]|\x81.|\x82..|\x83...|\x84....)\x02(\x01.|\x02..|\x03...|\x04....)[\x4a\x60\x63\x66\x68\x6c\x6e\x77]",
    re.DOTALL,
)
_SIG_SERVER = re.compile(rb"\x30")
SIG_CLIENT_NEED = 16  # the longest header the client pattern spans


def message(data: bytes) -> bool | None:
    """A whole LDAPMessage at the start of `data`: True, False (not one), None (incomplete)."""
    try:
        seq = ber.element(data, 0, ber.SEQUENCE)
        if seq is None:
            return None
        msg_id = ber.element(data, seq.start, ber.INTEGER)
        if msg_id is None:
            return None
        if msg_id.end > seq.end:
            return False
        op = ber.header(data, msg_id.end)
    except ber.BerError:
        return False
    if op is None:
        return None
    if op.tag & ber.CLASS_MASK != ber.APPLICATION or op.tag & ber.TAG_NUMBER_MASK not in OPCODES or op.end > seq.end:
        return False
    return True if len(data) >= seq.end else None


check = parsed_in_either_direction(message)


def _signature_pairs_tcp(orig: bytes, resp: bytes) -> tuple[PatternPair, ...]:
    return ((signature_match(_SIG_CLIENT_TCP, orig, SIG_CLIENT_NEED) if orig else None,
             signature_match(_SIG_SERVER, resp, 1) if resp else None),)


signature_tcp = reverse_signatures(_signature_pairs_tcp)
RECOGNISER_TCP = Recogniser("ldap_tcp", PROTO_TCP, check, signature=signature_tcp,
                            signature_pairs=_signature_pairs_tcp,
                            anchors=Anchors(orig=Marks(start=rb"\x30")))  # the client's pattern begins a sequence
RECOGNISER_UDP = Recogniser("ldap_udp", PROTO_UDP, check)


# StartTLS (RFC 4511 4.14): ldap.spicy's ExtendedRequest sets the connection's
# startTlsRequested for this requestName; an ExtendedResponse whose result is success then
# switches both directions to TlsForward, which ldap_zeek.spicy hands to SSL
# (`zeek::protocol_begin("SSL")`).
START_TLS_OID = b"1.3.6.1.4.1.1466.20037"
EXTENDED_REQUEST = ber.APPLICATION | 0x20 | 23  # [APPLICATION 23], constructed
EXTENDED_RESPONSE = ber.APPLICATION | 0x20 | 24
REQUEST_NAME = ber.CONTEXT | 0  # ExtendedRequest's requestName, [0] primitive
ENUMERATED = 0x0A  # LDAPResult's resultCode
SUCCESS = 0


def _operations(data: bytes) -> list[tuple[int, bytes]]:
    """(protocolOp tag, its content) of each whole LDAPMessage at the start of `data`, up
    to the first incomplete or malformed one."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while True:
        try:
            seq = ber.element(data, pos, ber.SEQUENCE)
            if seq is None or seq.end > len(data):
                return out
            msg_id = ber.element(data, seq.start, ber.INTEGER)
            op = ber.header(data, msg_id.end) if msg_id is not None else None
        except ber.BerError:
            return out
        if op is None or op.end > seq.end:
            return out
        out.append((op.tag, data[op.start : op.end]))
        pos = seq.end


def _first_element(content: bytes, tag: int) -> bytes | None:
    try:
        found = ber.element(content, 0, tag)
    except ber.BerError:
        return None
    return None if found is None else content[found.start : found.end]


def starttls(orig: bytes, resp: bytes) -> bool | None:
    """Whether the LDAP analyzer switched to TLS on these first bytes: the client asked
    StartTLS in an ExtendedRequest and an ExtendedResponse succeeded; None until then."""
    if START_TLS_OID not in orig:
        return None  # one search before walking the messages
    if not any(tag == EXTENDED_REQUEST and _first_element(content, REQUEST_NAME) == START_TLS_OID
               for tag, content in _operations(orig)):
        return None
    for tag, content in _operations(resp):
        if tag == EXTENDED_RESPONSE and _first_element(content, ENUMERATED) == bytes([SUCCESS]):
            return True
    return None
