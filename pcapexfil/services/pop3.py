"""POP3's STLS hand-over (the analyzer itself confirms nothing pcapexfil reports).

pop3 has no main.zeek: the analyzer is attached only by pop3/dpd.sig (`dpd_pop3_server`,
the responder's `^\\+OK`, requiring `dpd_pop3_client`, an originator line starting with
blanks then USER/APOP + space, CAPA, AUTH or STLS, any case). src/analyzer/protocol/pop3/
POP3.cc: replies answer the greeting then the client's commands in order (ProcessReply,
FinishClientCmd); a `+OK` answering STLS calls StartTLS. A `+OK` to CAPA, to LIST or UIDL
without an argument, to RETR or TOP opens a multi-line reply that a `.` line closes.
"""

from __future__ import annotations

import re

from pcapexfil.services.base import AtLineStart, Verdict, both_directions, content_lines, signature_match

_SIG_CLIENT = AtLineStart(
    rb"[ \t\v\f\r\n]*([uU][sS][eE][rR][ \t\v\f\r\n]|[aA][pP][oO][pP][ \t\v\f\r\n]|[cC][aA][pP][aA]|[aA][uU][tT][hH]|[sS][tT][lL][sS])",
    b" \t\x0b\x0cUuAaCcSs",
)
_OK, _STLS, _END = b"+OK", b"STLS", b"."
_OK_ANYWHERE = re.compile(rb"\+[oO][kK]")  # commands and replies compare upper-cased words
_STLS_ANYWHERE = re.compile(rb"[sS][tT][lL][sS]")
_MULTI_LINE = frozenset((b"CAPA", b"RETR", b"TOP"))
_MULTI_LINE_WITHOUT_ARGUMENT = frozenset((b"LIST", b"UIDL"))


def signature(orig: bytes, resp: bytes) -> Verdict:
    """dpd_pop3_server with its reverse signature dpd_pop3_client. The client's pattern may
    begin any line, so it never rejects: the verdict waits for the server's `+OK`, and a
    server whose first bytes are not one rejects the signature without the client's lines
    being read (every plain-HTTP connection asks it)."""
    # dpd_pop3_server, /^\+OK/: a prefix test (no regex, no cached match of the window)
    server = True if resp.startswith(_OK) else False if len(resp) >= len(_OK) else None
    if not server:
        return Verdict.REJECT if server is False else Verdict.MORE
    return both_directions(signature_match(_SIG_CLIENT, orig) if orig else None, server)


def _multi_line(words: list[bytes]) -> bool:
    command = words[0].upper()
    return command in _MULTI_LINE or (command in _MULTI_LINE_WITHOUT_ARGUMENT and len(words) == 1)


def starttls(orig: bytes, resp: bytes) -> bool | None:
    """Whether StartTLS ran on these first bytes: the reply answering STLS is `+OK`."""
    if _STLS_ANYWHERE.search(orig) is None or _OK_ANYWHERE.search(resp) is None:
        return None  # neither the command nor its answer yet (two searches, no split into lines)
    commands = [line.split() for line in content_lines(orig)]
    commands = [words for words in commands if words]
    answered = -1  # the greeting answers the connection's establishment
    in_multi_line = False
    for line in content_lines(resp):
        if in_multi_line:
            in_multi_line = line != _END
            continue
        words = line.split()
        if not words:
            continue
        if 0 <= answered < len(commands):
            command = commands[answered]
            if words[0].upper() == _OK:
                if command[0].upper() == _STLS:
                    return True
                in_multi_line = _multi_line(command)
        answered += 1
    return None
