"""FTP: a server reply line with a status code and a client command.

Zeek's FTP analyzer (src/analyzer/protocol/ftp/FTP.cc, FTP_Analyzer::DeliverStream) parses
client command lines and server reply lines `ddd[ -]text`; registered on 21/tcp and
2811/tcp (ftp/main.zeek). ftp/dpd.sig's signature for other ports (a client USER line, a
server 120/220 greeting then 230/331) is not modelled: registered ports only.
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import Recogniser, Verdict, first_line

_REPLY = re.compile(rb"^[1-5][0-9][0-9]( |-|$)")
_COMMAND = re.compile(rb"^[A-Za-z]{3,4}( |$)")
MAX_LINE = 1024


def _line(data: bytes, pattern: re.Pattern[bytes]) -> bool | None:
    line = first_line(data)
    if line is None:
        return False if len(data) > MAX_LINE else None
    return pattern.match(line.lstrip(b" \t")) is not None


def check(orig: bytes, resp: bytes) -> Verdict:
    reply = _line(resp, _REPLY) if resp else None
    command = _line(orig, _COMMAND) if orig else None
    if reply is False or command is False:
        return Verdict.REJECT
    return Verdict.CONFIRM if reply and command else Verdict.MORE


RECOGNISER = Recogniser("ftp", PROTO_TCP, check)
