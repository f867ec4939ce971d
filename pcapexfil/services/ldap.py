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
from pcapexfil.services.base import Recogniser, Verdict, both_directions, parsed_in_either_direction, signature_match

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


def signature_tcp(orig: bytes, resp: bytes) -> Verdict:
    client = signature_match(_SIG_CLIENT_TCP, orig, SIG_CLIENT_NEED) if orig else None
    server = signature_match(_SIG_SERVER, resp, 1) if resp else None
    return both_directions(client, server)


RECOGNISER_TCP = Recogniser("ldap_tcp", PROTO_TCP, check, signature=signature_tcp)
RECOGNISER_UDP = Recogniser("ldap_udp", PROTO_UDP, check)
