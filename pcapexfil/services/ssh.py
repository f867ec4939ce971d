"""SSH: both sides' version strings.

Zeek's SSH analyzer (src/analyzer/protocol/ssh/SSH.cc, SSH_Analyzer::DeliverStream) confirms
once the interpreter knows the protocol version, which ssh-protocol.pac's update_version
sets only when both the client's and the server's `SSH-x.y-...` lines were seen (a
half-duplex capture is never confirmed). Signature: ssh/dpd.sig (`^[sS][sS][hH]-`) on any
port, registered on 22/tcp.
"""

from __future__ import annotations

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import Recogniser, Verdict, both_directions

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
    return both_directions(_has_version(orig, False) if orig else None, _has_version(resp, True) if resp else None)


RECOGNISER = Recogniser("ssh", PROTO_TCP, check, any_port=True)
