"""What DNS_Interpreter::ParseMessage (src/analyzer/protocol/dns/DNS.cc) decides from a
message's header alone, before it parses the rest: which opcodes it parses, and what a
connection's first message does to its roles. The flow tables (both engines) apply the
latter, since it moves the connection's roles; the DNS analyzer (identifiers.dns) the
former."""

from __future__ import annotations

import ipaddress
import struct
from typing import TYPE_CHECKING

from pcapexfil.identifiers.netbios import NETBIOS_NS_PORT

if TYPE_CHECKING:
    from pcapexfil.hooks import ConnView

HEADER_LEN = 12
QR = 0x8000  # the flags' query/response bit
OPCODE_SHIFT, OPCODE_MASK = 11, 0xF
# ParseMessage parses these opcodes (any on NetBIOS's port); dns/main.zeek pairs them
# (dns_message): standard query, NOTIFY, dynamic update.
OPCODE_QUERY, OPCODE_NOTIFY, OPCODE_UPDATE = 0, 4, 5
PARSED_OPCODES = frozenset((OPCODE_QUERY, OPCODE_NOTIFY, OPCODE_UPDATE))
FLAGS_QDCOUNT = struct.Struct("!HH")
FLAGS_AT = 2


def is_multicast(address: str) -> bool:
    """In dns/main.zeek's `multicast_subnets` (224.0.0.0/4, ff00::/8), as IPAddr::IsMulticast."""
    return ipaddress.ip_address(address).is_multicast


def opcode_of(flags: int) -> int:
    return (flags >> OPCODE_SHIFT) & OPCODE_MASK


def is_netbios(conn: ConnView) -> bool:
    """DNS_Interpreter's `is_netbios`: either port is NetBIOS name service's."""
    return NETBIOS_NS_PORT in (conn.orig_p, conn.resp_p)


def parsed_opcode(flags: int, netbios: bool) -> bool:
    """ParseMessage gets past its opcode check (else: weird DNS_unknown_opcode and 'X')."""
    return opcode_of(flags) in PARSED_OPCODES or netbios


def first_message(header: bytes, from_orig: bool, netbios: bool, multicast: bool) -> bool | None:
    """ParseMessage on a connection's first DNS message (`first_message`): a header that
    passes the opcode check is the first message (None: it is not, the next one may be); a
    response from the originator flips the roles unless the responder is multicast
    (True). `header`: at least HEADER_LEN bytes."""
    flags = FLAGS_QDCOUNT.unpack_from(header, FLAGS_AT)[0]
    if not parsed_opcode(flags, netbios):
        return None
    return bool(flags & QR) and from_orig and not multicast


def connection_first_message(conn: ConnView, payload: bytes, from_orig: bool) -> bool | None:
    """`first_message` for a datagram of `conn` (at least HEADER_LEN bytes of payload)."""
    return first_message(payload, from_orig, is_netbios(conn), is_multicast(conn.resp_h))
