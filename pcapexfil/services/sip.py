"""SIP: the responder's status line.

Zeek's SIP analyzer (src/analyzer/protocol/sip/sip-analyzer.pac) confirms only in
proc_sip_reply, when a SIP_ReplyLine (`SIP/x.y ddd reason`, sip-protocol.pac) parsed;
proc_sip_request does not confirm. Registered on 5060/udp (sip/main.zeek). sip/dpd.sig
(a datagram starting with a status line) is not modelled: off the registered port the
engines hand analyzers the first datagram only, and that is the request.
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_UDP
from pcapexfil.services.base import Recogniser, Verdict, first_line

_REPLY = re.compile(rb"SIP/[0-9]\.[0-9] [0-9]{3}( |$)")


def check(orig: bytes, resp: bytes) -> Verdict:
    if not resp:
        return Verdict.MORE
    line = first_line(resp)
    return Verdict.CONFIRM if line is not None and _REPLY.match(line) else Verdict.REJECT


RECOGNISER = Recogniser("sip", PROTO_UDP, check, both_datagrams=True)
