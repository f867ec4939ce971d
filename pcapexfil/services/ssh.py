"""SSH: both sides' version strings.

Zeek's SSH analyzer (src/analyzer/protocol/ssh/SSH.cc, SSH_Analyzer::DeliverStream) confirms
once the interpreter knows the protocol version, which ssh-protocol.pac's update_version
sets only when both the client's and the server's `SSH-x.y-...` lines were seen (a
half-duplex capture is never confirmed). Signature: ssh/dpd.sig (`^[sS][sS][hH]-`) on any
port, registered on 22/tcp.
"""

from __future__ import annotations

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import Anchors, Marks, Recogniser, Verdict, both_directions

BANNER = b"SSH-"
# RFC 4253 4.2: the server may send other lines before its version line.
MAX_PRE_BANNER = 8192


def _has_version(data: bytes, server: bool) -> bool | None:
    if data[: len(BANNER)].upper() == BANNER:
        return True
    if not server:
        return False if len(data) >= len(BANNER) else None
    if b"\n" + BANNER in data.upper():
        return True
    return False if len(data) > MAX_PRE_BANNER else None


def check(orig: bytes, resp: bytes) -> Verdict:
    client = _has_version(orig, False) if orig else None
    if client is False:
        return Verdict.REJECT  # the server's bytes need not be searched
    return both_directions(client, _has_version(resp, True) if resp else None)


# The check confirms only on a client whose first bytes are the banner (any case).
# skips_partial: ssh/SSH.cc SSH_Analyzer::DeliverStream, `if ( TCP() && TCP()->IsPartial() ) return;`.
RECOGNISER = Recogniser("ssh", PROTO_TCP, check, any_port=True, anchors=Anchors(orig=Marks(start=rb"(?i:SSH-)")),
                        rejects_unanchored_after=len(BANNER), skips_partial=True)
