"""The BER (ASN.1) element headers the LDAP, SNMP and Kerberos recognisers read.

Zeek's parsers of these protocols (ldap/asn1.spicy, snmp and krb's asn1.pac) read definite
lengths of up to a few octets; an indefinite length or a longer one is a parse error there.
"""

from __future__ import annotations

from typing import NamedTuple

SEQUENCE = 0x30  # universal, constructed, 16
INTEGER = 0x02
OCTET_STRING = 0x04
CLASS_MASK = 0xC0
APPLICATION = 0x40
CONTEXT = 0x80
TAG_NUMBER_MASK = 0x1F
LONG_LENGTH = 0x80
MAX_LENGTH_OCTETS = 4


class BerError(ValueError):
    """Not a definite-length BER element header."""


class Header(NamedTuple):
    tag: int  # the identifier octet
    start: int  # where the content begins
    length: int  # the content's length

    @property
    def end(self) -> int:
        return self.start + self.length


def header(data: bytes, pos: int = 0) -> Header | None:
    """The element header at `pos`; None when `data` ends inside it; BerError when it is
    malformed (a multi-octet tag number, an indefinite or over-long length)."""
    if pos + 2 > len(data):
        return None
    tag = data[pos]
    if tag & TAG_NUMBER_MASK == TAG_NUMBER_MASK:
        raise BerError("multi-octet tag number")
    first = data[pos + 1]
    if first < LONG_LENGTH:
        return Header(tag, pos + 2, first)
    n = first & ~LONG_LENGTH
    if n == 0 or n > MAX_LENGTH_OCTETS:
        raise BerError("indefinite or over-long length")
    if pos + 2 + n > len(data):
        return None
    return Header(tag, pos + 2 + n, int.from_bytes(data[pos + 2 : pos + 2 + n], "big"))


def element(data: bytes, pos: int, tag: int) -> Header | None:
    """The header at `pos` of an element that must have `tag`: None when `data` ends inside
    it, BerError when it is malformed or another element."""
    found = header(data, pos)
    if found is not None and found.tag != tag:
        raise BerError(f"tag {found.tag:#04x}, not {tag:#04x}")
    return found
