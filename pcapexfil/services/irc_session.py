"""An IRC connection read for its whole life: the DCC transfers it announces.

src/analyzer/protocol/irc/IRC.cc `IRC_Analyzer::DeliverStream` reads each line (either
side): at most 512 bytes, leading spaces skipped, at least 3 characters, a `:prefix` and
its space dropped; a line starting with a digit is a reply (670, RPL_STARTTLS, hands the
rest of the stream to SSL); otherwise its first word, upper-cased, is the command. For a
PRIVMSG, the message after the target (a leading ':' and \x01 dropped) that begins with
"DCC" is split into words (`SplitWords`, a trailing \x01 dropped); with 5 or 6 words (7
when the last is "T", Turbo DCC) it is `irc_dcc_message`: type, argument, the address as a
decimal number (each character's `atoi` added to ten times the sum: what is not a digit
counts 0) and the port. scripts/base/protocols/irc/dcc-send.zeek then schedules
IRC_DATA for any originator (0.0.0.0) to that address and port when the type is "SEND"
(services.expected).
"""

from __future__ import annotations

import ipaddress
import re

from pcapexfil.hooks import ConnView
from pcapexfil.services.base import Announce
from pcapexfil.services.expected import IRC_DATA

MAX_LINE = 512  # IRC.cc: longer lines are skipped (weird irc_line_size_exceeded)
MIN_LINE = 3
MAX_COMMAND = 20  # IRC.cc: a longer command is an invalid one
ANY_ORIGINATOR = "0.0.0.0"  # dcc-send.zeek's schedule_analyzer originator
_TLS_REPLY = 670  # RPL_STARTTLS
_CTCP = b"\x01"
_LINE_END = re.compile(rb"\r\n|\r|\n")
_ATOI = re.compile(rb"[ \t\n\v\f\r]*([+-]?\d+)")


def _atoi(text: bytes) -> int:
    m = _ATOI.match(text)
    return int(m.group(1)) if m is not None else 0


def dcc_send(message: bytes) -> tuple[str, int] | None:
    """The (address, port) of a PRIVMSG message that IRC.cc reads as `irc_dcc_message` of
    type SEND (the message after its target, as DeliverStream hands it on)."""
    message = message.lstrip(b" ")
    if message[:1] == b":":
        message = message[1:]
    if message[:1] == _CTCP:
        message = message[1:]
    if not (len(message) > 3 and message[:3] == b"DCC"):
        return None
    if message[-1:] == _CTCP:
        message = message[:-1]
    parts = [word for word in message.split(b" ") if word]  # SplitWords
    if not (5 <= len(parts) <= 6 or (len(parts) == 7 and parts[6] == b"T")):
        return None
    if parts[1] != b"SEND":
        return None
    raw_ip = 0
    for ch in parts[3]:
        raw_ip = (10 * raw_ip + (ch - 0x30 if 0x30 <= ch <= 0x39 else 0)) & 0xFFFFFFFF
    port = _atoi(parts[4])
    if not 0 <= port <= 0xFFFF:
        return None  # count_to_port of a number past the port range
    return str(ipaddress.IPv4Address(raw_ip)), port


class IrcSession:
    """One IRC connection's lines, as far as they announce DCC transfers."""

    def __init__(self, conn: ConnView, announce: Announce) -> None:
        self.announce = announce
        self.partial = {True: b"", False: b""}
        self.tls = False

    def feed(self, is_orig: bool, data: bytes) -> bool:
        """A chunk of one direction: its complete lines (ContentLine: CR, LF or CRLF end a
        line). False once the stream is TLS's."""
        lines = _LINE_END.split(self.partial[is_orig] + data)
        self.partial[is_orig] = lines.pop()[: MAX_LINE + 1]  # a longer line is skipped anyway
        for line in lines:
            if self.tls:
                break
            self._line(line)
        return not self.tls

    def _line(self, line: bytes) -> None:
        if len(line) > MAX_LINE:
            return
        line = line.lstrip(b" ")
        if len(line) < MIN_LINE:
            return
        if line[:1] == b":":
            space = line.find(b" ")
            if space < 0:
                return
            line = line[space + 1 :].lstrip(b" ")
            if len(line) < MIN_LINE:
                return
        if line[:1].isdigit():
            if line[1:3].isdigit() and line[3:4] == b" " and int(line[:3]) == _TLS_REPLY:
                self.tls = True
            return
        space = line.find(b" ")
        command = (line if space < 0 else line[:space]).upper()
        params = b"" if space < 0 else line[space + 1 :].lstrip(b" ")
        if len(command) > MAX_COMMAND or command != b"PRIVMSG":
            return
        space = params.find(b" ")
        if space < 0:
            return
        transfer = dcc_send(params[space + 1 :])
        if transfer is not None:
            self.announce(IRC_DATA, ANY_ORIGINATOR, transfer[0], transfer[1])
