"""An FTP control connection read for its whole life: the data channels it announces.

What Zeek does with every line the FTP analyzer reads (src/analyzer/protocol/ftp/FTP.cc
`FTP_Analyzer::DeliverStream`: `ftp_request` with the upper-cased command and the rest of the
line after blanks, `ftp_reply` with the code, the text and whether the line continues a
multi-line reply) in scripts/base/protocols/ftp/main.zeek:

- `ftp_request`: the command is queued among the pending commands (after the "<init>" shim
  of the session's start; at most `max_pending_commands`), the previous one leaves the queue
  if it had its reply; PORT and EPRT with a valid argument announce a data connection from
  the server (the control connection's responder) to the address and port given.
- `ftp_reply`: the reply is matched to a pending command (utils-commands.zeek
  `get_pending_cmd`: compatible reply codes score 100, the command's name in the text 20, its
  argument 10, ties to the oldest); a continuation line only counts when it looks like a reply
  line of its own; the first line of a multi-line reply is matched but announces nothing;
  227 to PASV and 229 to EPSV with a valid text announce a data connection from the client to
  the address (229's "::": the control connection's responder) and port given; with more than
  one command pending, the matched one leaves the queue.

The address and port parsers are src/analyzer/protocol/ftp/functions.bif's `parse_ftp_port`,
`parse_eftp_port`, `parse_ftp_pasv` and `parse_ftp_epsv`. After a 234 to `AUTH TLS` the
lines are TLS's (`tls_active`): nothing more is read.
"""

from __future__ import annotations

import re
import socket

from pcapexfil.hooks import ConnView
from pcapexfil.services.base import Announce
from pcapexfil.services.expected import FTP_DATA

# FTP::max_command_length (ftp/consts.bif, default 100; the ftp-max-command-length test
# uses it with "commands of length > 100"): a longer command word neither confirms nor is
# an event.
MAX_COMMAND_LENGTH = 100
MIN_COMMAND_LENGTH = 3  # is_ftp_cmd
MAX_PENDING_COMMANDS = 20  # FTP::max_pending_commands
# A line's bytes kept until its end comes (memory stays bounded; what is parsed is its start).
MAX_LINE = 65536
_TLS_REPLY = 234
BLANKS = b" \t"  # util::skip_whitespace
_SPACES = b" \t\n\v\f\r"  # isspace, where util::get_word ends a word
# utils-commands.zeek `cmd_reply_code`: the replies each command may get.
_REPLY_CODES: dict[str, frozenset[int]] = {cmd: frozenset(codes) for cmd, codes in {
    "<init>": (120, 220, 421, 0), "USER": (230, 331, 332, 421, 530, 500, 501),
    "PASS": (230, 202, 332, 421, 530, 500, 501, 503), "ACCT": (230, 202, 421, 530, 500, 501, 503),
    "CWD": (250, 421, 500, 501, 502, 530, 550), "CDUP": (200, 250, 421, 500, 501, 502, 530, 550),
    "SMNT": (202, 250, 421, 500, 501, 502, 530, 550), "REIN": (120, 220, 421, 500, 502), "QUIT": (221, 500, 0),
    "PORT": (200, 421, 500, 501, 530), "PASV": (227, 421, 500, 501, 502, 530),
    "MODE": (200, 421, 500, 501, 502, 504, 530), "TYPE": (200, 421, 500, 501, 504, 530),
    "STRU": (200, 421, 500, 501, 504, 530), "ALLO": (200, 202, 421, 500, 501, 504, 530),
    "REST": (200, 350, 421, 500, 501, 502, 530),
    "STOR": (110, 125, 150, 226, 250, 421, 425, 426, 451, 551, 552, 532, 450, 452, 553, 500, 501, 530, 550),
    "STOU": (110, 125, 150, 226, 250, 421, 425, 426, 451, 551, 552, 532, 450, 452, 553, 500, 501, 530, 550),
    "RETR": (110, 125, 150, 226, 250, 421, 425, 426, 451, 450, 500, 501, 530, 550),
    "LIST": (125, 150, 226, 250, 421, 425, 426, 451, 450, 500, 501, 502, 530, 550),
    "NLST": (125, 150, 226, 250, 421, 425, 426, 451, 450, 500, 501, 502, 530, 550),
    "APPE": (125, 150, 226, 250, 421, 425, 426, 451, 551, 552, 532, 450, 550, 452, 553, 500, 501, 502, 530),
    "RNFR": (350, 421, 450, 550, 500, 501, 502, 530), "RNTO": (250, 421, 532, 553, 500, 501, 502, 503, 530),
    "DELE": (250, 421, 450, 550, 500, 501, 502, 530), "RMD": (250, 421, 500, 501, 502, 530, 550),
    "MKD": (257, 421, 500, 501, 502, 530, 550), "PWD": (257, 421, 500, 501, 502, 550),
    "ABOR": (225, 226, 421, 500, 501, 502), "SYST": (215, 421, 500, 501, 502, 530),
    "STAT": (211, 212, 213, 421, 450, 500, 501, 502, 530), "HELP": (200, 211, 214, 421, 500, 501, 502),
    "SITE": (200, 202, 214, 500, 501, 502, 530), "NOOP": (200, 421, 500), "LPRT": (500, 501, 521),
    "FEAT": (211, 500, 502), "OPTS": (200, 451, 501), "EPSV": (229, 500, 501), "EPRT": (200, 500, 501, 522),
    "SIZE": (213, 500, 501, 550), "MDTM": (213, 500, 501, 550), "MLST": (150, 226, 250, 500, 501, 550),
    "MLSD": (150, 226, 250, 500, 501, 550), "CLNT": (200, 500), "MACB": (200, 500, 550), "<missing>": (0,),
}.items()}  # fmt: skip
_SYNTAX_ERROR = 500  # compatible with every command
# main.zeek's ftp_reply: a continuation line that still counts, as a reply line of its own.
_REPLY_LIKE = re.compile(rb"[1-9][0-9]{2} [\x20-\x7e]{10}")
# parse_port: sscanf("%d,%d,%d,%d,%d,%d"): blanks before each number, none before a comma.
_SIX_NUMBERS = re.compile(rb"\s*([+-]?\d+),\s*([+-]?\d+),\s*([+-]?\d+),\s*([+-]?\d+),\s*([+-]?\d+),\s*([+-]?\d+)")
_IPV4 = re.compile(rb"\s*([+-]?\d+)\.\s*([+-]?\d+)\.\s*([+-]?\d+)\.\s*([+-]?\d+)\Z")  # IPAddr::ConvertString
_STRTOL = re.compile(rb"\s*([+-]?\d+)")
_UNSPECIFIED = "::"  # the address parse_eftp leaves where none is given
DataChannel = tuple[str | None, int] | None  # (address, port; None: the "::" of EPSV), or invalid


def command_word(line: bytes) -> bytes | None:
    """The line's first word if is_ftp_cmd accepts it (any length), as util::get_word ends it."""
    rest = line.lstrip(BLANKS)
    end = 0
    while end < len(rest) and rest[end] not in _SPACES and rest[end] != 0:
        end += 1
    word = rest[:end]
    if len(word) < MIN_COMMAND_LENGTH or any(not 0x20 < b < 0x7F for b in word):  # isprint, not isspace
        return None
    return word


def _text(packed: bytes) -> str:
    """An address as the connections' text has it (an IPv4-mapped one as IPv4, as Zeek holds it)."""
    if len(packed) == 16 and packed[:12] == b"\0" * 10 + b"\xff\xff":
        packed = packed[12:]
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def parse_port(line: bytes) -> DataChannel:
    """functions.bif `parse_port`: six comma-separated numbers 0..255 (address, port)."""
    m = _SIX_NUMBERS.match(line) if len(line) >= 11 else None
    if m is None:
        return None
    values = [int(v) for v in m.groups()]
    if any(not 0 <= v <= 255 for v in values):
        return None
    return _text(bytes(values[:4])), values[4] << 8 | values[5]


def _convert(text: bytes) -> str | None:
    """IPAddr::ConvertString: IPv6 (inet_pton) if it has a colon, else dotted IPv4 read by sscanf."""
    if b":" in text:
        try:
            return _text(socket.inet_pton(socket.AF_INET6, text.decode("latin-1")))
        except (OSError, ValueError):
            return None
    m = _IPV4.match(text)
    if m is None:
        return None
    values = [int(v) for v in m.groups()]
    return _text(bytes(values)) if all(0 <= v <= 255 for v in values) else None


def _strtol(line: bytes, at: int) -> tuple[int, int]:
    """strtol(line + at, &end, 10): the value and where it stopped (`at` without digits)."""
    m = _STRTOL.match(line, at)
    return (int(m.group(1)), m.end()) if m is not None else (0, at)


def parse_eftp(line: bytes | None) -> DataChannel:
    """functions.bif `parse_eftp`: `<d><net-prt><d><net-addr><d><tcp-port><d>` (RFC 2428), the
    address None where it is empty (the unspecified address). Its quirks kept: a valid
    address makes the line valid again after a bad protocol field, and a line that ends
    after the address gives port 0."""
    if line is None:
        return None
    line = line.split(b"\0", 1)[0].lstrip(_SPACES)  # a C string
    if not line:
        return None
    delim = line[:1]
    good = True
    _, at = _strtol(line, 1)
    if line[at : at + 1] != delim:
        good = False
    if at < len(line):
        at += 1
    address: str | None = None
    if at < len(line) and line[at : at + 1] != delim:
        end = line.find(delim, at)
        converted = _convert(line[at : end if end >= 0 else len(line)])
        good = converted is not None
        address = None if converted == _UNSPECIFIED else converted
    port = 0
    at = line.find(delim, at)
    if at >= 0:
        port, end = _strtol(line, at + 1)
        if line[end : end + 1] != delim:
            good = False
        if not 0 <= port <= 65535:
            port, good = 0, False
    return (address, port) if good else None


def parse_pasv(msg: bytes) -> DataChannel:
    """functions.bif `parse_ftp_pasv`: the numbers after '(', else after "PORT ", else the
    comma-separated list around the first comma."""
    msg = msg.split(b"\0", 1)[0]  # a C string
    if not msg:
        return None
    at = msg.find(b"(")
    if at >= 0:
        at += 1
    elif (at := msg.find(b"PORT")) >= 0:
        at += 5
    elif (at := msg.find(b",")) >= 0:
        while at > 0 and msg[at - 1 : at].isdigit():
            at -= 1
    else:
        return None
    return parse_port(msg[at:]) if at <= len(msg) else None


def parse_epsv(msg: bytes) -> DataChannel:
    """functions.bif `parse_ftp_epsv`: `parse_eftp` after the first '('."""
    at = msg.find(b"(")
    return parse_eftp(msg[at + 1 :] if at >= 0 else None)


def _command(line: bytes) -> tuple[str, bytes] | None:
    """A client line as FTP_Analyzer::DeliverStream reads it: the command word (is_ftp_cmd,
    at most FTP::max_command_length), upper-cased, and the argument after blanks."""
    word = command_word(line)
    if word is None or len(word) > MAX_COMMAND_LENGTH:
        return None
    rest = line.lstrip(BLANKS)
    return word.decode("ascii").upper(), rest[len(word) :].lstrip(BLANKS)


class _Pending:
    __slots__ = ("seq", "cmd", "arg")

    def __init__(self, seq: int, cmd: str, arg: bytes) -> None:
        self.seq, self.cmd, self.arg = seq, cmd, arg


_NO_COMMAND = _Pending(0, "<unknown>", b"")  # get_pending_cmd on an empty queue: CmdArg's defaults


class FtpSession:
    """One control connection's c$ftp, as far as it announces data connections."""

    def __init__(self, conn: ConnView, announce: Announce) -> None:
        self.conn = conn
        self.announce = announce
        self.partial = {True: b"", False: b""}  # a direction's line not ended yet
        self.pending: dict[int, _Pending] = {}
        self.seq = 0
        self.cmdarg: _Pending | None = None
        self.replied = False  # c$ftp?$reply_code
        self.pending_reply = 0  # FTP.cc: the code of a multi-line reply still open
        self.auth_tls = False  # auth_requested == "TLS"
        self.tls = False

    def feed(self, is_orig: bool, data: bytes) -> bool:
        """A chunk of one direction's stream: its complete lines (LF ends a line, a CR before
        it is dropped, as the NVT analyzers deliver them). False once the stream is TLS's."""
        buf = self.partial[is_orig] + data
        lines = buf.split(b"\n")
        self.partial[is_orig] = lines.pop()[:MAX_LINE]
        for line in lines:
            if self.tls:
                break
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                self._request(line) if is_orig else self._reply(line)
        return not self.tls

    def _session(self) -> None:
        """main.zeek `set_ftp_session`: the "<init>" shim the greeting answers."""
        if self.seq == 0:
            self.seq = 1
            self.pending[1] = _Pending(1, "<init>", b"")

    def _request(self, line: bytes) -> None:
        parsed = _command(line)
        if parsed is None:
            return
        cmd, arg = parsed
        if "AUTH".startswith(cmd):  # FTP.cc: strncmp(cmd, "AUTH", cmd_len), so "AUT" too
            self.auth_tls = arg == b"TLS"
        if self.cmdarg is not None and self.replied:
            self.pending.pop(self.cmdarg.seq, None)
        self._session()
        if len(self.pending) < MAX_PENDING_COMMANDS:
            self.seq += 1
            self.pending[self.seq] = _Pending(self.seq, cmd, arg)
        if cmd == "PORT" or cmd == "EPRT":
            channel = parse_port(arg) if cmd == "PORT" else parse_eftp(arg)
            if channel is not None and channel[0] is not None:
                self.announce(FTP_DATA, self.conn.resp_h, channel[0], channel[1])

    def _reply(self, line: bytes) -> None:
        code = int(line[:3]) if len(line) >= 3 and line[:3].isdigit() else 0
        if self.pending_reply:
            if code == self.pending_reply and len(line) > 3 and line[3:4] == b" ":
                msg, cont, self.pending_reply = line[3:].lstrip(BLANKS), False, 0
            else:
                msg, cont, code = line, True, 0
        elif code < 100:
            return  # a violation: no event (services.ftp.violation has dpd.zeek act on it)
        elif len(line) > 3 and line[3:4] == b"-":
            msg, cont, self.pending_reply = line[4:].lstrip(BLANKS), True, code
        elif len(line) > 3 and line[3:4] != b" ":
            return
        else:
            msg, cont = line[3:].lstrip(BLANKS), False
        if code == _TLS_REPLY and self.auth_tls:
            self.tls = True
        self._session()
        if cont and code == 0 and self.replied and _REPLY_LIKE.match(msg) is None:
            return
        self.cmdarg = cmdarg = self._matched(code, msg)
        self.replied = True
        if cont:
            return
        if (code == 227 or code == 229) and cmdarg.cmd in ("PASV", "EPSV"):
            channel = parse_pasv(msg) if code == 227 else parse_epsv(msg)
            if channel is not None:
                self.announce(FTP_DATA, self.conn.orig_h, channel[0] or self.conn.resp_h, channel[1])
        if len(self.pending) > 1:
            self.pending.pop(cmdarg.seq, None)

    def _matched(self, code: int, msg: bytes) -> _Pending:
        """utils-commands.zeek `get_pending_cmd`."""
        best, best_score = _NO_COMMAND, -1
        for cmd in self.pending.values():
            score = 100 if code == _SYNTAX_ERROR or code in _REPLY_CODES.get(cmd.cmd, ()) else 0
            if cmd.cmd.encode() in msg:
                score += 20
            if cmd.arg in msg:
                score += 10
            if score > best_score or (score == best_score and best.seq > cmd.seq):
                best, best_score = cmd, score
        return best
