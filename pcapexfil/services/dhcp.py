"""DHCP: a BOOTP message with the DHCP magic cookie.

Zeek's DHCP analyzer (src/analyzer/protocol/dhcp/dhcp-analyzer.pac, parse_request /
parse_reply) confirms when a message with op BOOTREQUEST/BOOTREPLY parses; registered on
67/udp, 68/udp and 4011/udp (dhcp/main.zeek), no signature.
"""

from __future__ import annotations

from pcapexfil.packet import PROTO_UDP
from pcapexfil.services.base import Recogniser, Verdict

BOOTREQUEST, BOOTREPLY = 1, 2
COOKIE_OFFSET = 236  # op..file fields of RFC 2131's fixed part
MAGIC_COOKIE = b"\x63\x82\x53\x63"


def check(orig: bytes, resp: bytes) -> Verdict:
    data = orig or resp
    if not data:
        return Verdict.MORE
    ok = data[0] in (BOOTREQUEST, BOOTREPLY) and data[COOKIE_OFFSET : COOKIE_OFFSET + 4] == MAGIC_COOKIE
    return Verdict.CONFIRM if ok else Verdict.REJECT


RECOGNISER = Recogniser("dhcp", PROTO_UDP, check)
