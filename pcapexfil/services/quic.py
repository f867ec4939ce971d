"""QUIC: an Initial packet of a known version.

Zeek's QUIC analyzer (src/analyzer/protocol/quic/QUIC.spicy, a Spicy parser) handles long
header Initial packets of QUIC v1 (RFC 9000) and v2 (RFC 9369) and Google's draft versions;
registered on 443/udp, 784/udp and 853/udp (quic/main.zeek); other ports need a signature,
which is not modelled here (ports only). Here: the first datagram is a long-header Initial of a known version
with a plausible connection-id length (Zeek then also decrypts the ClientHello, which this
recogniser does not).
"""

from __future__ import annotations

from pcapexfil.packet import PROTO_UDP
from pcapexfil.services.base import Recogniser, Verdict

LONG_HEADER_FIXED = 0xC0  # header form and fixed bit (RFC 9000 17.2)
VERSION_1 = 0x00000001
VERSION_2 = 0x6B3343CF
INITIAL_V1, INITIAL_V2 = 0, 1  # the long packet type of Initial in v1 / v2
MAX_CID_LEN = 20
MIN_INITIAL_LEN = 1200  # RFC 9000 14.1: a client's Initial datagram is padded to 1200 bytes
DRAFT_PREFIX = 0xFF000000  # IETF drafts ff0000xx


def _initial(data: bytes) -> bool:
    if len(data) < 7 or data[0] & LONG_HEADER_FIXED != LONG_HEADER_FIXED:
        return False
    version = int.from_bytes(data[1:5], "big")
    ptype = (data[0] >> 4) & 0x3
    if version == VERSION_2:
        is_initial = ptype == INITIAL_V2
    else:
        is_initial = ptype == INITIAL_V1 and (version == VERSION_1 or version & 0xFFFFFF00 == DRAFT_PREFIX)
    return is_initial and data[5] <= MAX_CID_LEN and len(data) >= MIN_INITIAL_LEN


def check(orig: bytes, resp: bytes) -> Verdict:
    if not orig:
        return Verdict.MORE if not resp else Verdict.REJECT
    return Verdict.CONFIRM if _initial(orig) else Verdict.REJECT


RECOGNISER = Recogniser("quic", PROTO_UDP, check)
