"""WebSocket: the analyzer an HTTP upgrade attaches, and what makes it name the connection.

src/analyzer/protocol/http/HTTP.cc: at the end of a reply (`ReplyMade`) whose code is 101,
with exactly one request unanswered, a reply `Connection` header whose first token is
"upgrade" and an `Upgrade` header (its first token the protocol), `HTTP_Upgrade` attaches
the analyzer HTTP::upgrade_analyzers names for the protocol (as sent, else lower-cased;
websocket/main.zeek registers "websocket") or else a PIA, and the HTTP analyzer reads no
more (`upgraded`). The WebSocket analyzer (websocket-protocol.pac) reads each direction as
messages: a first frame whose opcode is not 0, then continuation frames (opcode 0) until
one has FIN; a frame header breaking that rule is a binpac exception (`&enforce`), an
AnalyzerViolation (WebSocket.cc `DeliverStream`). websocket-analyzer.pac `process_message`
calls AnalyzerConfirmation when a whole message (all its frames' payloads) was read.
"""

from __future__ import annotations

from collections.abc import Sequence

NAME = "websocket"
UPGRADE_ANALYZERS = frozenset((NAME,))  # HTTP::upgrade_analyzers' protocols with an analyzer here
_LEN_16, _LEN_64 = 126, 127  # payload length codes for a 16- and a 64-bit extended length
_MASK_LEN = 4


def _first_token(value: str) -> str:
    """MIME_Header::get_value_token: the value's first token."""
    value = value.lstrip(" \t")
    end = 0
    while end < len(value) and value[end] not in ' \t,;()<>@:\\"/[]?={}':
        end += 1
    return value[:end]


def upgrade_protocol(headers: Sequence[tuple[str, str]], unanswered: int) -> str | None:
    """The protocol a 101 reply with these headers upgrades to (HTTP_Header's
    `upgrade_connection` and `upgrade_protocol`, ReplyMade's condition), or None."""
    connection = protocol = ""
    for name, value in headers:
        if name.lower() == "connection":
            connection = _first_token(value)
        elif name.lower() == "upgrade":
            protocol = _first_token(value)
    if unanswered != 1 or connection.lower() != "upgrade" or not protocol:
        return None
    return protocol


def has_analyzer(protocol: str) -> bool:
    """HTTP_Upgrade's lookup in HTTP::upgrade_analyzers: as sent, else lower-cased."""
    return protocol in UPGRADE_ANALYZERS or protocol.lower() in UPGRADE_ANALYZERS


class _Flow:
    """One direction's WebSocket_Flow: the header being read, the payload left to skip."""

    __slots__ = ("head", "skip", "fin", "first")

    def __init__(self) -> None:
        self.head = b""
        self.skip = 0
        self.fin = False
        self.first = True  # the next frame begins a message


class WebSocketFrames:
    """The messages of both directions, as far as confirmation and violations need them."""

    def __init__(self) -> None:
        self._flows = {True: _Flow(), False: _Flow()}

    def feed(self, is_orig: bool, data: bytes) -> bool | None:
        """A chunk of one direction: True once it completed a message (confirmation), False
        at a frame the grammar rejects (violation), None while neither."""
        flow = self._flows[is_orig]
        pos = 0
        while pos < len(data):
            if flow.skip:
                taken = min(flow.skip, len(data) - pos)
                flow.skip -= taken
                pos += taken
                if flow.skip == 0 and self._frame_done(flow):
                    return True
                continue
            need = 2 - len(flow.head)
            if need > 0:
                flow.head += data[pos : pos + need]
                pos += min(need, len(data) - pos)
                if len(flow.head) < 2:
                    return None
                opcode = flow.head[0] & 0x0F
                if (opcode == 0) == flow.first:  # first2's &enforce
                    return False
            code = flow.head[1] & 0x7F
            head_len = 2 + (2 if code == _LEN_16 else 8 if code == _LEN_64 else 0)
            head_len += _MASK_LEN if flow.head[1] & 0x80 else 0
            missing = head_len - len(flow.head)
            if missing > 0:
                flow.head += data[pos : pos + missing]
                pos += min(missing, len(data) - pos)
                if len(flow.head) < head_len:
                    return None
            head = flow.head
            length = code if code < _LEN_16 else int.from_bytes(head[2 : 4 if code == _LEN_16 else 10], "big")
            flow.fin, flow.head, flow.skip = bool(head[0] & 0x80), b"", length
            if length == 0 and self._frame_done(flow):
                return True
        return None

    @staticmethod
    def _frame_done(flow: _Flow) -> bool:
        """A frame's payload was read: whether that completed its message."""
        flow.first = flow.fin
        return flow.fin
