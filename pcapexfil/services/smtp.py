"""SMTP: a client command confirms; a malformed reply is a violation.

Zeek's SMTP analyzer (src/analyzer/protocol/smtp/SMTP.cc) parses the session state machine
from the 220 greeting and the client's commands; registered on 25/tcp and 587/tcp
(smtp/main.zeek). smtp/dpd.sig attaches it on any other port: dpd_smtp_client (HELO or
EHLO, any case, after blanks at a line's start of the client's bytes) enables it, with its
reverse dpd_smtp_server (the server's bytes start with blanks, 220 and a blank or dash;
`requires-reverse-signature`); modelled. The analyzer so attached reads the PIA's buffer
replayed: it confirms and fails as below, and hands over to SSL as on its ports.

Confirmation (SMTP_Analyzer::ProcessLine → RequestEvent → AnalyzerConfirmation): the first
client line whose first word (util::get_word: up to whitespace or NUL, no leading blanks
skipped) ParseCmd knows, case-insensitively; the server's greeting is not needed, and client
lines with unknown words only count as "unknown command".

Violations (SMTP_Analyzer::ProcessLine): every server line, as its ContentLine_Analyzer
delivers it (CR, LF or CRLF ends a line), must start with a reply code of 3 digits in
100..599, else AnalyzerViolation("reply code ... out of range"), an empty line included.
Once a 220 reply answers STARTTLS (or X-ANONYMOUSTLS), UpdateState calls StartTLS and the
rest of the stream goes to the SSL analyzer unparsed. Replies answer the client's commands
in order (NewReply pops the queue NewCmd fills, the greeting answers the connection's
establishment); only words ParseCmd knows are queued, and lines after DATA up to the "."
line are mail data, not commands. AUTH exchanges (whose client lines are AUTH_ANSWER
commands only while the server's 334 holds) are not modelled.
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
    signature_match_or_fail,
)

# The reply codes ProcessLine accepts ("we see 5xx codes larger than 559, so we still
# tolerate that").
_MIN_REPLY_CODE, _MAX_REPLY_CODE = 100, 599
_CODE_LENGTH = 3
_CONTINUED = b"-"  # `ddd-`: the reply goes on with the same code
_TLS_READY = 220
# SMTP_cmd.def: the words ParseCmd knows (istrequal: case-insensitive, whole word).
_COMMANDS = frozenset((
    b"EHLO", b"HELO", b"MAIL", b"RCPT", b"DATA", b"QUIT", b"RSET", b"VRFY", b"EXPN", b"HELP", b"NOOP",
    b"STARTTLS", b"X_ANONYMOUSTLS", b"X-ANONYMOUSTLS", b"CONN_ESTABLISHMENT", b"END_OF_DATA", b"SEND",
    b"SOML", b"SAML", b"TURN", b"BDAT", b"ETRN", b"AUTH", b"AUTH_ANSWER",
))
_TLS_COMMANDS = frozenset((b"STARTTLS", b"X_ANONYMOUSTLS", b"X-ANONYMOUSTLS"))
_DATA, _END_OF_DATA = b"DATA", b"."
_WORD_END = re.compile(rb"[\s\x00]")  # util::get_word ends a word at a space (isspace) or NUL


def _word(line: bytes) -> bytes:
    """The line's command word as ParseCmd compares it."""
    return _WORD_END.split(line, maxsplit=1)[0].upper()


def check(orig: bytes, resp: bytes) -> Verdict:
    """CONFIRM once a client line starts with a known command; until then MORE (Zeek reads
    on for as long as the connection lasts, the recogniser as far as services.MAX_BYTES)."""
    return Verdict.CONFIRM if any(_word(line) in _COMMANDS for line in content_lines(orig)) else Verdict.MORE


def _commands(orig: bytes) -> list[bytes]:
    """The client's commands that replies answer, in order (upper case; "." ends data)."""
    out = []
    in_data = False
    for line in content_lines(orig):
        if in_data:
            if line == _END_OF_DATA:
                in_data = False
                out.append(line)
            continue
        word = _word(line)
        if word in _COMMANDS:
            out.append(word)
            in_data = word == _DATA
    return out


def starttls(orig: bytes, resp: bytes) -> bool | None:
    """Whether SMTP_Analyzer::StartTLS ran on these first bytes, walking the server lines:
    True where a 220 answers STARTTLS / X-ANONYMOUSTLS (UpdateState), False at a line
    without a valid reply code (a violation: dpd.zeek disables the analyzer), None while
    neither happened."""
    commands: list[bytes] | None = None
    replies = 0  # replies begun so far (the first answers the connection's establishment)
    pending = 0  # the code of a `ddd-` reply still going on
    for line in content_lines(resp):
        digits = line[:_CODE_LENGTH]
        code = int(digits) if len(digits) == _CODE_LENGTH and digits.isdigit() else 0
        if not _MIN_REPLY_CODE <= code <= _MAX_REPLY_CODE:
            return False
        if pending and code != pending:
            pending = 0
        if not pending:
            if replies and code == _TLS_READY:
                if commands is None:
                    commands = _commands(orig)
                if replies <= len(commands) and commands[replies - 1] in _TLS_COMMANDS:
                    return True  # StartTLS: the SSL analyzer reads the rest
            replies += 1
        pending = code if line[_CODE_LENGTH : _CODE_LENGTH + 1] == _CONTINUED else 0
    return None


def violation(orig: bytes, resp: bytes) -> bool:
    """Whether a server line before the STARTTLS hand-over lacks a valid reply code."""
    return starttls(orig, resp) is False


# zeek/zeek scripts/base/protocols/smtp/dpd.sig, as Zeek matches payloads (anchored at the
# direction's first byte; `.` any byte):
#   signature dpd_smtp_client {
#     ip-proto == tcp
#     payload /(|.*[\n\r])[[:space:]]*([hH][eE][lL][oO]|[eE][hH][lL][oO])/
#     requires-reverse-signature dpd_smtp_server
#     enable "smtp"
#     tcp-state originator
#   }
#   signature dpd_smtp_server {
#     ip-proto == tcp
#     payload /^[[:space:]]*220[[:space:]-]/
#     tcp-state responder
#   }
# The client's: HELO or EHLO after blanks at a line's start (AtLineStart; a blank run that
# crosses a line end is tried again after it, so the line's blanks need no CR/LF). Never
# ruled out: a later line may hold it. The server's greeting is ruled out by its first
# bytes: blanks, then anything but a beginning of `220`.
_SPACE = rb"[ \t\n\x0b\x0c\r]"  # [[:space:]] (isspace)
_SIG_CLIENT = AtLineStart(rb"[ \t\x0b\x0c]*(?:[hH][eE][lL][oO]|[eE][hH][lL][oO])", b" \t\x0b\x0cHhEe")
_SIG_SERVER_TEXT = _SPACE + rb"*220[ \t\n\x0b\x0c\r-]"
_SIG_SERVER = re.compile(_SIG_SERVER_TEXT)
_SIG_SERVER_UNDECIDED = re.compile(_SPACE + rb"*(?:2(?:20?)?)?")


def _signature_pairs(orig: bytes, resp: bytes) -> tuple[PatternPair, ...]:
    """dpd_smtp_client (originator) with its reverse dpd_smtp_server (responder)."""
    return ((signature_match(_SIG_CLIENT, orig) if orig else None,
             signature_match_or_fail(_SIG_SERVER, _SIG_SERVER_UNDECIDED, resp) if resp else None),)


signature = reverse_signatures(_signature_pairs)
# The pair confirms only with the server's greeting matched, and its failure is final.
# skips_partial: smtp/SMTP.cc SMTP_Analyzer's constructor calls SetSkipPartial(true) on both
# ContentLine analyzers (tcp/ContentLine.cc drops their data while TCP()->IsPartial()).
RECOGNISER = Recogniser("smtp", PROTO_TCP, check, violation=violation, signature=signature,
                        signature_pairs=_signature_pairs, anchors=Anchors(resp=Marks(start=_SIG_SERVER_TEXT)),
                        skips_partial=True)
