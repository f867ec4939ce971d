"""Syslog: any datagram on 514/udp.

Zeek's Syslog analyzer is a Spicy parser (src/analyzer/protocol/syslog/syslog.spicy): a UDP
datagram is one `Syslog::Message` (an optional `<PRI>`, then the message text to the end
of the datagram), whose `%done` hook calls `spicy::accept_input()`; nothing in it can fail,
so every datagram confirms. Registered on 514/udp (syslog/main.zeek), no signature. (The
TCP analyzer Syslog_TCP is not registered on any port by default.)
"""

from __future__ import annotations

from pcapexfil.packet import PROTO_UDP
from pcapexfil.services.base import Recogniser, Verdict


def check(orig: bytes, resp: bytes) -> Verdict:
    return Verdict.CONFIRM if orig or resp else Verdict.MORE


RECOGNISER = Recogniser("syslog", PROTO_UDP, check)
