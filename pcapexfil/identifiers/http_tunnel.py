"""HTTP's CONNECT tunnel: where it opens, for the analyzers that read the bytes it carries.

src/analyzer/protocol/http/HTTP.cc: HTTP_Analyzer::HTTP_Request sets `connect_request` on
a request whose method is CONNECT as `strncasecmp(method, "CONNECT", method_len)` compares
it: any case, and any non-empty prefix too (`connect_method`); nothing else sets or clears
it but a reply line, in DeliverStream's EXPECT_REPLY_LINE: HTTP_ReplyLine parsed one whose
code is not 200 (a 1xx interim reply included) clears it. At the empty line ending a
reply's head while it is set (whichever request that reply answers), DeliverStream adds a
new PIA_TCP (FirstPacket for both directions) and forwards it everything after: the
server's bytes from the one after that empty line (the rest of its chunk too, with the weird
protocol_data_with_HTTP_CONNECT_reply), the client's from its next chunk. That PIA matches
dpd.sig's signatures on the tunnel's bytes as a new stream start (SSL, SMTP, SSH, ...).
The HTTP analyzer itself (identifiers.http, fast.http_machine) follows that rule exactly.

The services analyzer's tunnel PIA and TLS take the tunnel over from the HTTP analyzer
(`open_tunnel`, `take_tunnel`), whichever engine read the connection: its rule is theirs,
also for a CONNECT after an earlier request of a keep-alive connection and after blank
lines between messages. Off HTTP's ports a tunnel opens only where dpd.sig attached the
HTTP analyzer (dpd_http_client's upper-case method, dpd_http_server's reply), as in Zeek.
A leaf module (no import of identifiers.http, which imports pcapexfil.services, so that
pcapexfil.services may import it): TLS, the HTTP analyzer and the services analyzer share it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pcapexfil.hooks import ConnView

CONNECT_METHOD = b"CONNECT"


# conn.app: a CONNECT tunnel the HTTP analyzer opened, the server's bytes after the 200's
# head in its chunk and the readers that took it over (`take_tunnel`).
_OPENED = "http_connect_tunnel"


class _Opened:
    __slots__ = ("rest", "taken")

    def __init__(self, rest: bytes) -> None:
        self.rest = rest
        self.taken: set[str] = set()


def connect_method(method: bytes) -> bool:
    """HTTP_Request's `strncasecmp(method, "CONNECT", method_len) == 0`: the method is
    CONNECT or a non-empty prefix of it, in any case."""
    return 0 < len(method) <= len(CONNECT_METHOD) and CONNECT_METHOD.startswith(method.upper())


def blank_lines_end(buf: bytes | bytearray) -> int:
    """Where the empty lines at the start of `buf` end (the analyzer ignores them where a
    message starts)."""
    start = 0
    while True:
        if buf.startswith(b"\n", start):
            start += 1
        elif buf.startswith(b"\r\n", start):
            start += 2
        else:
            return start


def head_end(buf: bytes | bytearray) -> tuple[int, int] | None:
    """Where the first empty line (`\\r?\\n\\r?\\n`) ends a header block: (block end, end
    of the blank line); None while there is none. Two C searches, not a regex scan; a bare
    `\\n\\n` is only looked for before the first `\\n\\r\\n`, not through the body after it."""
    crlf = buf.find(b"\n\r\n")
    lf = buf.find(b"\n\n") if crlf < 0 else buf.find(b"\n\n", 0, crlf + 1)
    nl = lf if lf >= 0 else crlf
    if nl < 0:
        return None
    return (nl - 1 if nl and buf[nl - 1] == 0x0D else nl), (nl + 2 if nl == lf else nl + 3)


def open_tunnel(conn: ConnView, rest: bytes) -> None:
    """The connection's HTTP analyzer opened a CONNECT tunnel on this chunk, whose server
    bytes after the 200's head are `rest`: its readers take it over (`take_tunnel`)."""
    conn.app[_OPENED] = _Opened(rest)


def take_tunnel(conn: ConnView, reader: str) -> bytes | None:
    """For one reader of a CONNECT tunnel's bytes (the services analyzer's PIA, TLS), once:
    the server's bytes of the chunk that opened it after the 200's head (b"" for none);
    None while no tunnel opened, or once this reader took it. A reader that runs after
    the HTTP analyzer on each chunk takes it on that chunk, one before it on the next."""
    opened: _Opened | None = conn.app.get(_OPENED)
    if opened is None or reader in opened.taken:
        return None
    opened.taken.add(reader)
    return opened.rest
