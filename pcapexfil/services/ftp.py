"""FTP: Zeek's FTP analyzer confirms on a client command and fails on a malformed reply.

src/analyzer/protocol/ftp/FTP.cc, FTP_Analyzer::DeliverStream, on the lines its NVT support
analyzers deliver (LF ends a line, a CR before it is dropped; empty lines are skipped):
- client: the first word after spaces/tabs (util::get_word) is a command if it has at least
  3 characters, all printable and none a space (is_ftp_cmd) and at most
  FTP::max_command_length; such a line calls AnalyzerConfirmation. Other lines are ignored.
- server: outside a multi-line reply, a line without a 3-digit code, a code below 100, or
  a 4th character other than ' ' / '-' is an AnalyzerViolation ("non-numeric reply
  code", "invalid reply code", "invalid reply line"); `ddd-` opens a multi-line reply that
  only `ddd ` (same code) closes, every line in between is text. After `234` to an
  `AUTH TLS` the lines are TLS and no longer parsed.
- a command word longer than FTP::max_command_length once confirmed is LimitReachedWeird
  (weird FTP_max_command_length_exceeded and the history's 'X'), read as far as the
  service analyzer reads the stream (`services.base.IGNORE_VIOLATIONS_AFTER`).
Registered on 21/tcp and 2811/tcp (ftp/main.zeek). ftp/dpd.sig attaches it on any other
port: dpd_ftp_server (the server's bytes start with line ends or spaces and a 120/220 greeting,
then a later line with 230 or 331) enables it, with its reverse dpd_ftp_client (USER and a
space after spaces at a line's start of the client's bytes; `requires-reverse-signature`);
modelled. The analyzer so attached reads the PIA's buffer replayed: it confirms and fails
as above, and hands over to SSL after 234 as on its ports. (A client sending AUTH TLS
before USER, the usual order, never lets the signature match.)
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
    reverse_signatures,
    signature_match,
    signature_match_or_fail,
)
from pcapexfil.services.ftp_session import BLANKS, MAX_COMMAND_LENGTH, FtpSession, command_word

_MIN_REPLY_CODE = 100
_TLS_REPLY = 234  # ftp_starttls: the SSL analyzer takes over the stream


def _lines(data: bytes) -> list[bytes]:
    """The complete lines, as the NVT analyzer (LF_as_EOL) delivers them."""
    return [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")[:-1]]


def _command(line: bytes) -> bytes | None:
    """The line's command word if FTP_Analyzer::DeliverStream takes it as one."""
    word = command_word(line)
    return word if word is not None and len(word) <= MAX_COMMAND_LENGTH else None


def _tls_requested(orig: bytes) -> bool:
    """A client `AUTH TLS` (auth_requested == "TLS")."""
    for line in _lines(orig):
        word = _command(line)
        if word is not None and word.upper() == b"AUTH":
            if line.lstrip(BLANKS)[len(word):].lstrip(BLANKS) == b"TLS":
                return True
    return False


def starttls(orig: bytes, resp: bytes) -> bool | None:
    """Whether FTP_Analyzer::DeliverStream handed the stream to SSL on these first bytes,
    walking the server lines: True at a 234 answering `AUTH TLS` (ftp_starttls), False at a
    violation, None while neither happened."""
    pending = 0
    tls = None
    for line in _lines(resp):
        if not line:
            continue
        code = int(line[:3]) if len(line) >= 3 and line[:3].isdigit() else 0
        if pending:
            if code == pending and len(line) > 3 and line[3:4] == b" ":
                pending = 0
            continue
        if code < _MIN_REPLY_CODE:  # 0: non-numeric
            return False
        if len(line) > 3 and line[3:4] == b"-":
            pending = code
        elif len(line) > 3 and line[3:4] != b" ":
            return False
        elif code == _TLS_REPLY:
            if tls is None:
                tls = _tls_requested(orig)
            if tls:
                return True
    return None


def violation(orig: bytes, resp: bytes) -> bool:
    """Whether the server's lines hold one of the analyzer's violations."""
    return starttls(orig, resp) is False


LIMIT_WEIRD = "FTP_max_command_length_exceeded"


def limit(orig: bytes, resp: bytes) -> str | None:
    """A command word longer than FTP::max_command_length after the confirming command:
    DeliverStream's LimitReachedWeird (only `if ( AnalyzerConfirmed() )`)."""
    confirmed = False
    for line in _lines(orig):
        word = command_word(line)
        if word is None:
            continue
        if len(word) <= MAX_COMMAND_LENGTH:
            confirmed = True
        elif confirmed:
            return LIMIT_WEIRD
    return None


def check(orig: bytes, resp: bytes) -> Verdict:
    """Confirmed by the first client line with a command (AnalyzerConfirmation)."""
    if any(_command(line) is not None for line in _lines(orig)):
        return Verdict.CONFIRM
    return Verdict.MORE


# zeek/zeek scripts/base/protocols/ftp/dpd.sig, as Zeek matches payloads (anchored at the
# direction's first byte; `.` any byte):
#   signature dpd_ftp_client {
#     ip-proto == tcp
#     payload /(|.*[\n\r]) *[uU][sS][eE][rR] /
#     tcp-state originator
#   }
#   # Match for server greeting (220, 120) and for login or passwd
#   # required (230, 331).
#   signature dpd_ftp_server {
#     ip-proto == tcp
#     payload /[\n\r ]*(120|220)[^0-9].*[\n\r] *(230|331)[^0-9]/
#     tcp-state responder
#     requires-reverse-signature dpd_ftp_client
#     enable "ftp"
#   }
# The client's USER line is never ruled out (a later line may hold it); the server's reply
# is, by its first bytes: blanks, then anything but a beginning of a 120/220 greeting
# (after one, a later 230/331 line may still come).
_SIG_CLIENT = AtLineStart(rb" *[uU][sS][eE][rR] ", b" uU")
_SIG_GREETING = rb"[\n\r ]*(?:120|220)[^0-9]"
_SIG_SERVER = re.compile(_SIG_GREETING + rb".*[\n\r] *(?:230|331)[^0-9]", re.DOTALL)
_SIG_SERVER_UNDECIDED = re.compile(rb"[\n\r ]*(?:[12](?:20?)?)?|" + _SIG_GREETING + rb".*", re.DOTALL)


def _signature_pairs(orig: bytes, resp: bytes) -> tuple[PatternPair, ...]:
    """dpd_ftp_server (responder) with its reverse dpd_ftp_client (originator)."""
    return ((signature_match(_SIG_CLIENT, orig) if orig else None,
             signature_match_or_fail(_SIG_SERVER, _SIG_SERVER_UNDECIDED, resp) if resp else None),)


signature = reverse_signatures(_signature_pairs)
# The pair confirms only with the server's greeting matched, and its failure is final. The
# session reads the announced data channels (services.ftp_session).
RECOGNISER = Recogniser("ftp", PROTO_TCP, check, violation=violation, limit=limit, signature=signature,
                        signature_pairs=_signature_pairs, anchors=Anchors(resp=Marks(start=_SIG_GREETING)),
                        session=FtpSession)
