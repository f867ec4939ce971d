"""NTP: one well-formed message on 123/udp.

Zeek's NTP analyzer (src/analyzer/protocol/ntp/ntp-analyzer.pac, proc_ntp_message) confirms
on the first message it parses; registered on 123/udp (ntp/main.zeek), no signature.
"""

from __future__ import annotations

from pcapexfil.packet import PROTO_UDP
from pcapexfil.services.base import Recogniser, Verdict

HEADER_LEN = 48  # RFC 5905 fixed header
MIN_VERSION, MAX_VERSION = 1, 4
CONTROL_MODE = 6  # mode 6/7 messages (ntp-protocol.pac: control, mode 7) are shorter
MIN_CONTROL_LEN = 12


def _message(data: bytes) -> bool | None:
    if not data:
        return None
    version, mode = (data[0] >> 3) & 0x7, data[0] & 0x7
    if not MIN_VERSION <= version <= MAX_VERSION or mode == 0:
        return False
    return len(data) >= (MIN_CONTROL_LEN if mode >= CONTROL_MODE else HEADER_LEN)


def check(orig: bytes, resp: bytes) -> Verdict:
    seen = orig or resp
    ok = _message(seen)
    if ok is None:
        return Verdict.MORE
    return Verdict.CONFIRM if ok else Verdict.REJECT


RECOGNISER = Recogniser("ntp", PROTO_UDP, check)
