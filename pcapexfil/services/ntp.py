"""NTP: one well-formed message on 123/udp.

Zeek's NTP analyzer (src/analyzer/protocol/ntp/ntp-analyzer.pac, proc_ntp_message) confirms
on the first message it parses; registered on 123/udp (ntp/main.zeek), no signature. The
roles its messages give are the flow tables' (`flow.ntp_roles`).
"""

from __future__ import annotations

from pcapexfil.flow.ntp_roles import message_shape
from pcapexfil.packet import PROTO_UDP
from pcapexfil.services.base import Recogniser, Verdict


def check(orig: bytes, resp: bytes) -> Verdict:
    seen = orig or resp
    ok = message_shape(seen)
    if ok is None:
        return Verdict.MORE
    return Verdict.CONFIRM if ok else Verdict.REJECT


RECOGNISER = Recogniser("ntp", PROTO_UDP, check)
