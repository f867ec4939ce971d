"""DCE/RPC (connection-oriented, over TCP): one whole PDU.

Zeek's DCE_RPC analyzer (src/analyzer/protocol/dce-rpc/dce_rpc-analyzer.pac,
DCE_RPC_Conn::proc_dce_rpc_pdu: "If a whole pdu message parsed ok, let's confirm the
protocol") confirms on the first complete PDU: the 16-byte common header
(dce_rpc-protocol.pac, DCE_RPC_Header: rpc_vers 5, rpc_vers_minor, PTYPE, flags, the data
representation whose first byte's 0x10 bit selects little-endian, frag_length, auth_length,
call_id) and frag_length bytes in all. Registered on 135/tcp (dce-rpc/main.zeek);
dce-rpc/dpd.sig (`^\\x05[\\x00\\x01][\\x00-\\x13]\\x03`, a first-and-last fragment) attaches it
on any port, in either direction.
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import Anchors, Marks, Recogniser, matched_in_either_direction, parsed_in_either_direction

HEADER_LEN = 16
RPC_VERSION = 5
MINOR_VERSIONS = (0, 1)
MAX_PTYPE = 0x13  # RFC: request 0 .. rts 20 (dpd.sig admits 0x00-0x13)
DREP_LITTLE_ENDIAN = 0x10
FRAG_LENGTH_OFFSET = 8

_SIGNATURE = re.compile(rb"\x05[\x00\x01][\x00-\x13]\x03")
SIGNATURE_NEED = 4


def pdu(data: bytes) -> bool | None:
    if not data:
        return None
    if data[0] != RPC_VERSION or (len(data) > 1 and data[1] not in MINOR_VERSIONS) or (len(data) > 2 and data[2] > MAX_PTYPE):
        return False
    if len(data) < HEADER_LEN:
        return None
    raw = data[FRAG_LENGTH_OFFSET : FRAG_LENGTH_OFFSET + 2]
    frag_length = int.from_bytes(raw, "little") if data[4] & DREP_LITTLE_ENDIAN else int.from_bytes(raw, "big")
    if frag_length < HEADER_LEN:
        return False
    return True if len(data) >= frag_length else None


check = parsed_in_either_direction(pdu)
signature = matched_in_either_direction(_SIGNATURE, SIGNATURE_NEED)
_VERSION_FIRST = Marks(start=rb"\x05")  # the signature in either direction
RECOGNISER = Recogniser("dce_rpc", PROTO_TCP, check, signature=signature,
                        anchors=Anchors(orig=_VERSION_FIRST, resp=_VERSION_FIRST))
