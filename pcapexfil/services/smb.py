"""SMB (1, 2 and 3 over NetBIOS session framing): three messages without a parse error.

Zeek's SMB analyzer (src/analyzer/protocol/smb/SMB.cc, SMB_Analyzer::DeliverStream) skips
data until a delivery with an SMB header (`\\xffSMB` or `\\xfeSMB` at offset 4, after the
4-byte NetBIOS session header, HasSMBHeader), then hands every delivery to the binpac
parser and calls ProtocolConfirmation after the third one without an exception ("Let's
assume that if there are no binpac exceptions after 3 data chunks that this is probably
actually SMB"). Registered on 139/tcp and 445/tcp (smb/main.zeek); smb/dpd.sig
(`^....[\\xfe\\xff]SMB`, either direction) attaches it on any port.

Here deliveries are counted as whole NetBIOS session messages (a message usually is one
segment): three across both directions, the first of each direction carrying the magic.
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import Anchors, Marks, Recogniser, Verdict, matched_in_either_direction

NBSS_HEADER_LEN = 4
MAGICS = (b"\xffSMB", b"\xfeSMB")
MAGIC_LEN = 4
CONFIRMING_CHUNKS = 3  # SMB.cc: `if ( ++chunks == 3 ) ProtocolConfirmation()`

_SIGNATURE = re.compile(rb"....[\xfe\xff]SMB", re.DOTALL)
SIGNATURE_NEED = NBSS_HEADER_LEN + MAGIC_LEN


def messages(data: bytes) -> int | None:
    """Whole session messages at the start of `data`; None when the first lacks the magic."""
    if len(data) >= NBSS_HEADER_LEN + MAGIC_LEN and data[NBSS_HEADER_LEN : NBSS_HEADER_LEN + MAGIC_LEN] not in MAGICS:
        return None
    count, pos = 0, 0
    while pos + NBSS_HEADER_LEN <= len(data):
        end = pos + NBSS_HEADER_LEN + int.from_bytes(data[pos + 1 : pos + NBSS_HEADER_LEN], "big")
        if end > len(data):
            break
        count, pos = count + 1, end
    return count


def check(orig: bytes, resp: bytes) -> Verdict:
    a, b = messages(orig), messages(resp)
    if a is None and b is None:
        return Verdict.REJECT
    return Verdict.CONFIRM if (a or 0) + (b or 0) >= CONFIRMING_CHUNKS else Verdict.MORE


signature = matched_in_either_direction(_SIGNATURE, SIGNATURE_NEED)
_MAGIC_BYTE_AT_4 = Marks(start=rb"(?s:....[\xfe\xff])")  # the signature in either direction
RECOGNISER = Recogniser("smb", PROTO_TCP, check, signature=signature,
                        anchors=Anchors(orig=_MAGIC_BYTE_AT_4, resp=_MAGIC_BYTE_AT_4))
