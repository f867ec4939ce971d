"""RADIUS: a datagram the grammar parses.

src/analyzer/protocol/radius/radius-protocol.pac reads a datagram as RADIUS_PDU: code,
identifier, a 16-bit length, a 16-byte authenticator, then attributes until the datagram
ends, each a code, a length and `length - 2` bytes of value (the header's length field is
not checked against the datagram). radius-analyzer.pac, proc_radius_message: every PDU
parsed calls AnalyzerConfirmation, from either side; RADIUS.cc turns a binpac exception
(a datagram shorter than the header, an attribute running past its end or with a length
below 2) into an AnalyzerViolation. Registered on 1812/udp (radius/main.zeek), no dpd.sig.
"""

from __future__ import annotations

from pcapexfil.packet import PROTO_UDP
from pcapexfil.services.base import Recogniser, Verdict

HEADER_LEN = 20  # code, identifier, length, authenticator
ATTRIBUTE_HEADER_LEN = 2  # code, length


def parses(datagram: bytes) -> bool:
    """Whether RADIUS_PDU parses the whole datagram."""
    if len(datagram) < HEADER_LEN:
        return False
    pos = HEADER_LEN
    while pos < len(datagram):  # &until($input.length() == 0), asked before each attribute
        if pos + ATTRIBUTE_HEADER_LEN > len(datagram):
            return False
        length = datagram[pos + 1]
        if length < ATTRIBUTE_HEADER_LEN or pos + length > len(datagram):
            return False  # a negative value length, or one past the datagram
        pos += length
    return True


def check(orig: bytes, resp: bytes) -> Verdict:
    """The first datagram read (either side's) confirms if it parses, else disables it."""
    first = orig or resp
    return Verdict.CONFIRM if parses(first) else Verdict.REJECT


RECOGNISER = Recogniser("radius", PROTO_UDP, check)
