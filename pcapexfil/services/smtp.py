"""SMTP: the server's greeting and the client's HELO/EHLO.

Zeek's SMTP analyzer (src/analyzer/protocol/smtp/SMTP.cc) parses the session state machine
from the 220 greeting and the client's commands; registered on 25/tcp and 587/tcp
(smtp/main.zeek). smtp/dpd.sig's signature for other ports is not modelled: registered
ports only.
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import Recogniser, Verdict, both_directions, first_line

_GREETING = re.compile(rb"^\s*220(\s|-|$)")
_HELLO = re.compile(rb"^\s*(HELO|EHLO)(\s|$)", re.IGNORECASE)
MAX_LINE = 1024


def _line(data: bytes, pattern: re.Pattern[bytes]) -> bool | None:
    line = first_line(data)
    if line is None:
        return False if len(data) > MAX_LINE else None
    return pattern.match(line) is not None


def check(orig: bytes, resp: bytes) -> Verdict:
    return both_directions(_line(orig, _HELLO) if orig else None, _line(resp, _GREETING) if resp else None)


RECOGNISER = Recogniser("smtp", PROTO_TCP, check)
