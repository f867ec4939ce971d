"""IMAP's STARTTLS hand-over (the analyzer itself confirms nothing pcapexfil reports).

src/analyzer/protocol/imap/imap-protocol.pac reads each line as `TAG SPACING COMMAND ...`
(TAG and COMMAND: `[[:alnum:][:punct:]]+`, lines end at `[\\r\\n]+`); imap-analyzer.pac,
proc_imap_token: a client `STARTTLS` (any case) remembers its tag, and a server line with
that tag and the command `OK` (any case) calls IMAP_Analyzer::StartTLS; AUTHENTICATE,
LOGIN, EXAMINE, CREATE, LIST or FETCH (compared as written, lower case) on either side first
means the handshake is past STARTTLS (SetSkip). Registered on 143/tcp (imap/main.zeek).
"""

from __future__ import annotations

import re

_TOKEN = re.compile(rb"([!-~]+) +([!-~]+)")
_LINE_END = re.compile(rb"[\r\n]+")
_STARTTLS, _OK = b"starttls", b"ok"
_PAST_STARTTLS = frozenset((b"authenticate", b"login", b"examine", b"create", b"list", b"fetch"))


def _tokens(data: bytes) -> list[tuple[bytes, bytes]]:
    """(tag, command) of each complete line the grammar takes."""
    out = []
    for line in _LINE_END.split(data)[:-1]:
        m = _TOKEN.match(line)
        if m is not None:
            out.append((m.group(1), m.group(2)))
    return out


def starttls(orig: bytes, resp: bytes) -> bool | None:
    """Whether StartTLS ran on these first bytes; False once the analyzer skips."""
    tags = set()
    for tag, command in _tokens(orig):
        if command in _PAST_STARTTLS:
            return False
        if command.lower() == _STARTTLS:
            tags.add(tag)
    for tag, command in _tokens(resp):
        if command in _PAST_STARTTLS:
            return False
        if tag in tags and command.lower() == _OK:
            return True
    return None
