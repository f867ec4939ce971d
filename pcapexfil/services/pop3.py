"""POP3: Zeek's POP3 analyzer confirms on the server's +OK to USER, CAPA or STLS, and fails on
a server line that is no reply; its STLS hands the stream to SSL.

pop3 has no main.zeek: the analyzer is attached only by pop3/dpd.sig (`dpd_pop3_server`,
the responder's `^\\+OK`, requiring `dpd_pop3_client`, an originator line starting with
blanks then USER/APOP + space, CAPA, AUTH or STLS, any case). src/analyzer/protocol/pop3/
POP3.cc: replies answer the greeting then the client's commands in order (ProcessReply,
FinishClientCmd); a `+OK` answering STLS calls StartTLS. A `+OK` to CAPA, to LIST or UIDL
without an argument, to RETR or TOP opens a multi-line reply that a `.` line closes.

`session_of` replays ProcessClientCmd and ProcessReply on the first bytes of each direction:
the command a reply answers is the oldest pending one (the analyzer queues what a client
pipelines), so the interleaving of the two directions does not matter, with one exception
not modelled: a command sent before the server's greeting is processed before it (in the
START state) where here it is processed after it. AnalyzerConfirmation: a `+OK` in state
USER (a USER command accepted in the AUTHORIZATION state), CAPA or STLS. AnalyzerViolation:
a server line outside a multi-line reply whose first word (after one leading `+` or `-`,
`ParseCmd`) is no POP3 word, unless an AUTH exchange is waiting for the client's lines.
POP3 reads nothing of a partial connection (POP3_Analyzer::DeliverStream).
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import (
    Anchors,
    AtLineStart,
    Marks,
    Recogniser,
    Verdict,
    both_directions,
    content_lines,
    signature_match,
)

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


# POP3_cmd.def, in order (ParseCmd tries them in this order).
_WORDS = ("OK", "ERR", "USER", "PASS", "APOP", "AUTH", "STAT", "LIST", "RETR", "DELE", "RSET", "NOOP", "LAST", "QUIT",
          "TOP", "CAPA", "UIDL", "STLS", "XSENDER")
# masterState
_START, _AUTHORIZATION, _TRANSACTION, _UPDATE, _FINISHED = range(5)
# Commands allowed in the TRANSACTION state only (else NotAllowed, `guessing`).
_TRANSACTION_ONLY = frozenset(("STAT", "LIST", "RETR", "DELE", "RSET", "NOOP", "LAST", "UIDL", "TOP", "XSENDER"))
_AUTH_STATES = frozenset(("AUTH", "AUTH_LOGIN", "AUTH_PLAIN", "AUTH_CRAM_MD5"))
_CONFIRMING_STATES = frozenset(("USER", "CAPA", "STLS"))


def _trim(line: bytes) -> bytes:
    """POP3.cc trim_whitespace: leading blanks dropped, runs of spaces made one, trailing ones dropped."""
    return b" ".join(word for word in line.lstrip(b" \t").split(b" ") if word)


def _tokens(line: bytes) -> tuple[bytes, bytes]:
    """TokenizeLine(trimmed, ' '): the first word and the rest."""
    word, _, rest = _trim(line).partition(b" ")
    return word, rest


def _parse_cmd(word: bytes) -> str | None:
    """POP3_Analyzer::ParseCmd: one leading '+' or '-' dropped per word tried, upper-cased."""
    if not word:
        return None
    text = word.decode("latin-1")
    for candidate in _WORDS:
        if text[:1] in ("+", "-"):
            text = text[1:]
        if text.upper() == candidate:
            return candidate
    return None


class _Pop3:
    """The analyzer's state as far as confirmation and violations need it."""

    def __init__(self) -> None:
        self.master = _START
        self.state = "START"
        self.last_state = "START"
        self.guessing = False
        self.waiting_auth = False
        self.multi_request = False
        self.multi = False
        self.confirmed = False
        self.violated = False
        self.tls = False

    def command(self, line: bytes) -> None:
        """ProcessClientCmd, as far as states go."""
        word, arg = _tokens(line)
        cmd = _parse_cmd(word)
        if cmd is None or cmd in ("OK", "ERR"):
            return
        master = self.master
        if cmd == "USER" or cmd == "APOP" or cmd == "AUTH":
            if master == _AUTHORIZATION:
                self.state = cmd
                if cmd == "AUTH":
                    if not arg:
                        self.multi_request = True
                    else:
                        self.state = ("AUTH_LOGIN" if b"LOGIN" in arg else "AUTH_PLAIN" if b"PLAIN" in arg
                                      else "AUTH_CRAM_MD5" if b"CRAM-MD5" in arg else "AUTH")
                        self.waiting_auth = True
        elif cmd == "PASS":
            if master == _AUTHORIZATION and self.state == "USER":
                self.state = "PASS"
        elif cmd in _TRANSACTION_ONLY:
            if cmd in ("RETR", "TOP") or (cmd in ("LIST", "UIDL") and not arg):
                self.multi_request = True
            if master == _TRANSACTION:
                self.state = "LAST" if cmd == "XSENDER" else cmd
            else:
                self.guessing, self.last_state = True, cmd
        elif cmd == "QUIT":
            if master in (_AUTHORIZATION, _TRANSACTION, _START):
                self.state = "QUIT"
            else:
                self.guessing, self.last_state = True, "LAST"
        elif cmd == "CAPA":
            self.state, self.multi_request = "CAPA", True
        elif cmd == "STLS":
            self.state = "STLS"

    def reply(self, line: bytes) -> bool:
        """ProcessReply; True where it finishes the pending command (FinishClientCmd)."""
        if self.multi:
            if line == b".":
                self.multi = self.multi_request = False
                return True
            return False
        cmd = _parse_cmd(_tokens(line)[0])
        if cmd is None:
            if not self.waiting_auth:
                self.violated = True
            return False
        if cmd == "OK":
            if self.guessing:
                self.master, self.guessing, self.state = _TRANSACTION, False, self.last_state
            state = self.state
            if state == "START":  # the greeting, or a command after a failed login
                self.master = _AUTHORIZATION
            elif state in _CONFIRMING_STATES:
                self.confirmed = self.confirmed or not self.violated
                if state == "USER":
                    self.master = _AUTHORIZATION
                elif state == "STLS":
                    self.tls = True
                    return False
                elif self.multi_request:
                    self.multi = True
            elif state in _AUTH_STATES:
                self.multi = self.multi or self.multi_request
                if self.waiting_auth:
                    self.master = _TRANSACTION
                self.waiting_auth = False
            elif state in ("TOP", "RETR", "UIDL", "LIST"):
                self.multi = self.multi or self.multi_request
            elif state == "QUIT":
                self.master = _FINISHED if self.master in (_AUTHORIZATION, _START) else (
                    _UPDATE if self.master == _TRANSACTION else self.master)
            else:  # PASS, APOP and the TRANSACTION commands
                self.master = _TRANSACTION
            return not self.multi
        if cmd == "ERR":
            self.multi = self.multi_request = self.guessing = self.waiting_auth = False
            state = self.state
            if state in ("USER", "PASS", "APOP") or state in _AUTH_STATES:
                self.master, self.state = _AUTHORIZATION, "START"
            elif state in ("NOOP", "LAST", "STAT", "RSET", "DELE", "LIST", "RETR", "UIDL", "TOP", "XSENDER"):
                self.master = _TRANSACTION
            elif state == "QUIT" and self.master in (_AUTHORIZATION, _TRANSACTION, _START):
                self.master = _FINISHED
            return True
        return False  # pop3_server_sending_client_commands


def session_of(orig: bytes, resp: bytes) -> _Pop3:
    """The analyzer after these first bytes: the first server line is the greeting, each
    later one answers the oldest pending command, which is processed when it reaches the
    queue's front. During an AUTH exchange each server continuation line (no POP3 word)
    takes one client line as the client's answer, as the analyzer reads those lines while
    it waits for them."""
    pop = _Pop3()
    commands = [line for line in content_lines(orig) if line]
    taken = 0  # client lines processed (commands) or read as AUTH answers
    pending = False  # the queue's front was processed and waits for its answer
    greeted = False
    for line in content_lines(resp):
        if pop.tls:
            break
        if greeted and not pending and taken < len(commands):
            pop.command(commands[taken])
            taken += 1
            pending = True
        waiting = pop.waiting_auth
        if pop.reply(line):
            pending = False
        elif waiting and pop.waiting_auth and not pop.multi and taken < len(commands):
            taken += 1  # a continuation: the client's answer to it
        greeted = True
    return pop


def check(orig: bytes, resp: bytes) -> Verdict:
    """Confirmed by a +OK answering USER, CAPA or STLS, before any violation."""
    return Verdict.CONFIRM if session_of(orig, resp).confirmed else Verdict.MORE


def violation(orig: bytes, resp: bytes) -> bool:
    return session_of(orig, resp).violated


RECOGNISER = Recogniser("pop3", PROTO_TCP, check, signature=signature, violation=violation, skips_partial=True,
                        anchors=Anchors(resp=Marks(start=rb"\+OK")))  # dpd_pop3_server
