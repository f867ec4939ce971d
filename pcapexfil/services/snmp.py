"""SNMP: a well-formed message header from the responder.

Zeek's SNMP analyzer (src/analyzer/protocol/snmp/snmp-analyzer.pac, SNMP_Conn::proc_header)
calls AnalyzerConfirmation when it has parsed a message Header that is *not* from the
originator (`if ( ! ${rec.is_orig} )`): the responder's SEQUENCE, INTEGER version and, for
v1/v2c, the community OCTET STRING (v3: the header-data SEQUENCE); any other version parses
as UnknownVersionHeader and still confirms. A wrong tag on the way throws (check_tag) and
is an analyzer violation. Registered on 161/udp and 162/udp (snmp/main.zeek), no signature.
So a request without a response, or a v1 trap (no response), is not confirmed.
"""

from __future__ import annotations

from pcapexfil.packet import PROTO_UDP
from pcapexfil.services import ber
from pcapexfil.services.base import Recogniser, Verdict

VERSION_1, VERSION_2C, VERSION_3 = 0, 1, 3
MAX_INTEGER_LEN = 9  # snmp-analyzer.pac check_int_width


def header(data: bytes) -> bool | None:
    """An SNMP message header at the start of `data`: True, False, None (incomplete)."""
    try:
        seq = ber.element(data, 0, ber.SEQUENCE)
        if seq is None:
            return None
        version = ber.element(data, seq.start, ber.INTEGER)
        if version is None:
            return None
        if not 0 < version.length <= MAX_INTEGER_LEN:
            return False
        if len(data) < version.end:
            return None
        value = int.from_bytes(data[version.start : version.end], "big", signed=True)
        if value not in (VERSION_1, VERSION_2C, VERSION_3):
            return True  # UnknownVersionHeader
        nxt = ber.header(data, version.end)
    except ber.BerError:
        return False
    if nxt is None:
        return None
    expected = ber.SEQUENCE if value == VERSION_3 else ber.OCTET_STRING
    return nxt.tag == expected


def check(orig: bytes, resp: bytes) -> Verdict:
    request = header(orig) if orig else None
    response = header(resp) if resp else None
    if response:
        return Verdict.CONFIRM
    if request is False or response is False:
        return Verdict.REJECT
    return Verdict.MORE


RECOGNISER = Recogniser("snmp", PROTO_UDP, check, both_datagrams=True)
