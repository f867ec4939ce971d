"""IMAP: Zeek's IMAP analyzer confirms on the server's `* OK` or a client's CAPABILITY or
STARTTLS; its STARTTLS hands the stream to SSL.

src/analyzer/protocol/imap/imap-protocol.pac reads each line as `TAG SPACING COMMAND ...`
(TAG and COMMAND: `[[:alnum:][:punct:]]+`, lines end at `[\\r\\n]+`); imap-analyzer.pac,
proc_imap_token: a client `STARTTLS` (any case) remembers its tag, and a server line with
that tag and the command `OK` (any case) calls IMAP_Analyzer::StartTLS; AUTHENTICATE,
LOGIN, EXAMINE, CREATE, LIST or FETCH (compared as written, lower case) on either side first
means the handshake is past STARTTLS (SetSkip). Registered on 143/tcp (imap/main.zeek), no
dpd.sig. proc_imap_token calls AnalyzerConfirmation on a server token `*` `OK` (any case), a
client `capability` (compared as written) or `starttls` (any case), and any AUTHENTICATE ...
FETCH token. IMAP_Analyzer::DeliverStream reads nothing of a partial connection. Not
modelled: the grammar's violations (the flow parses each delivered chunk as a datagram of
whole lines, so they depend on how the stream was segmented).
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import Recogniser, Verdict

_TOKEN = re.compile(rb"([!-~]+) +([!-~]+)")
_LINE_END = re.compile(rb"[\r\n]+")
_STARTTLS, _OK, _CAPABILITY, _UNTAGGED = b"starttls", b"ok", b"capability", b"*"
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


def check(orig: bytes, resp: bytes) -> Verdict:
    """proc_imap_token's AnalyzerConfirmation on the tokens of these first bytes."""
    for tag, command in _tokens(resp):
        if (tag == _UNTAGGED and command.lower() == _OK) or command in _PAST_STARTTLS:
            return Verdict.CONFIRM
    for _, command in _tokens(orig):
        if command == _CAPABILITY or command.lower() == _STARTTLS or command in _PAST_STARTTLS:
            return Verdict.CONFIRM
    return Verdict.MORE


RECOGNISER = Recogniser("imap", PROTO_TCP, check, skips_partial=True)
