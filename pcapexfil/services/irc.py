"""IRC: one well-formed client line.

Zeek's IRC analyzer (src/analyzer/protocol/irc/IRC.cc, IRC_Analyzer::DeliverStream) reads
lines (ContentLine_Analyzer) and calls ProtocolConfirmation for the first originator line
that survives its first checks: at most 512 bytes (longer: weird, skipped), at least 3
characters after leading spaces (shorter: weird, skipped), and a `:prefix` followed by a
space (else weird, skipped). Registered on 6666-6669/tcp (irc/main.zeek). irc/dpd.sig
attaches it on any port: a client's USER and NICK lines (either order) with a server reply
line (`(:prefix )?ddd `, `requires-reverse-signature`), or SERVER lines both ways; modelled.
A 670 reply (RPL_STARTTLS) hands the rest of the stream to the SSL analyzer (`starttls`).
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import (
    Anchors,
    AtLineStart,
    Marks,
    PatternPair,
    Recogniser,
    Verdict,
    content_lines,
    reverse_signatures,
    signature_match,
)
from pcapexfil.services.irc_session import IrcSession

MAX_LINE = 512
MIN_LINE = 3
MAX_LINE_BUFFER = 1000  # IRC.cc: ContentLine_Analyzer(conn, orig, 1000)

# irc/dpd.sig's patterns, each `/^(|.*[\r\n])LINE/` (AtLineStart), with the bytes LINE can begin with.
_SIG_CLIENT = (
    AtLineStart(rb" *[Uu][Ss][Ee][Rr] +.+[\n\r]+ *[Nn][Ii][Cc][Kk] +.*[\r\n]", b" Uu", re.DOTALL),
    AtLineStart(rb" *[Nn][Ii][Cc][Kk] +.+[\r\n]+ *[Uu][Ss][Ee][Rr] +.+[\r\n]", b" Nn", re.DOTALL),
)
_SIG_SERVER_REPLY = AtLineStart(rb"(:[^ \n\r]+ )?[0-9][0-9][0-9] ", b":0123456789")
_SIG_SERVER_TO_SERVER = AtLineStart(rb" *[Ss][Ee][Rr][Vv][Ee][Rr] +[^ ]+ +[0-9]+ +:.+[\r\n]", b" Ss", re.DOTALL)


def _confirming_line(line: bytes) -> bool:
    if len(line) > MAX_LINE:
        return False
    line = line.lstrip(b" ")
    if len(line) < MIN_LINE:
        return False
    return not (line[:1] == b":" and b" " not in line)


def client(data: bytes) -> bool | None:
    """True once a client line would confirm; False when none did in the bytes read."""
    pos = 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            return False if len(data) - pos > MAX_LINE_BUFFER else None
        if _confirming_line(data[pos:end].rstrip(b"\r")):
            return True
        pos = end + 1


def check(orig: bytes, resp: bytes) -> Verdict:
    ok = client(orig)
    return Verdict.CONFIRM if ok else Verdict.REJECT if ok is False else Verdict.MORE


def _any(patterns: tuple[AtLineStart, ...], data: bytes) -> bool | None:
    results = [signature_match(p, data) for p in patterns]
    return True if any(results) else None if None in results else False


def _signature_pairs(orig: bytes, resp: bytes) -> tuple[PatternPair, ...]:
    """irc/dpd.sig: the client's USER/NICK lines with a server reply, or SERVER lines both ways."""
    return ((_any(_SIG_CLIENT, orig) if orig else None, signature_match(_SIG_SERVER_REPLY, resp) if resp else None),
            (signature_match(_SIG_SERVER_TO_SERVER, orig) if orig else None,
             signature_match(_SIG_SERVER_TO_SERVER, resp) if resp else None))


signature = reverse_signatures(_signature_pairs)
# The client's side of both pairs: a line beginning with USER, NICK or SERVER and a blank.
_CLIENT_LINE = Marks(line_words=(b"USER ", b"NICK ", b"SERVER "))
# The session reads the announced DCC transfers (services.irc_session).
RECOGNISER = Recogniser("irc", PROTO_TCP, check, signature=signature, signature_pairs=_signature_pairs,
                        anchors=Anchors(orig=_CLIENT_LINE), session=IrcSession)


_TLS_REPLY = b"670"  # RPL_STARTTLS


def _reply_code(line: bytes) -> bytes | None:
    """The 3-digit reply code IRC_Analyzer::DeliverStream reads from a line, if any."""
    line = line.lstrip(b" ")
    if line[:1] == b":":
        space = line.find(b" ")
        if space < 0:
            return None
        line = line[space + 1 :].lstrip(b" ")
    if len(line) > 3 and line[:3].isdigit() and line[3:4] == b" ":
        return line[:3]
    return None


def starttls(orig: bytes, resp: bytes) -> bool | None:
    """Whether IRC_Analyzer::DeliverStream called StartTLS on these first bytes: a line of
    at most 512 bytes (either side) whose reply code is 670 (RPL_STARTTLS); None until then."""
    if _TLS_REPLY not in orig and _TLS_REPLY not in resp:
        return None  # no line can carry the code yet (one search, not a split into lines)
    for data in (orig, resp):
        for line in content_lines(data):
            if len(line) <= MAX_LINE and _reply_code(line) == _TLS_REPLY:
                return True
    return None
