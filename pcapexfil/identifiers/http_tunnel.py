"""HTTP's CONNECT tunnel: where it opens, for the analyzers that read the bytes it carries.

src/analyzer/protocol/http/HTTP.cc: HTTP_Request sets `connect_request` on a CONNECT
request; HTTP_ReplyLine clears it on a reply whose code is not 200 (a 1xx interim reply
included); at the empty line ending a 200 reply's head, HTTP_Analyzer::DeliverStream adds a
new PIA_TCP (FirstPacket for both directions) and forwards it everything after: the server's
bytes from the one after that empty line (the rest of its chunk too, with the weird
protocol_data_with_HTTP_CONNECT_reply), the client's from its next chunk. That PIA matches
dpd.sig's signatures on the tunnel's bytes as a new stream start (SSL, SMTP, SSH, ...).

Like the STARTTLS hand-overs, the tunnel is watched on the first bytes of each direction:
the client's first request only. A leaf module (no import of identifiers.http, which
imports pcapexfil.services, so that pcapexfil.services may import it): TLS, the HTTP
analyzer and the services analyzer share it.
"""

from __future__ import annotations

import re

# The client's first bytes where its first request is a CONNECT (its method, then a blank).
CONNECT = b"CONNECT "
# HTTP_ReplyLine: "HTTP/" (any case), the version up to a blank, blanks, then the code.
_REPLY_200 = re.compile(rb"[Hh][Tt][Tt][Pp]/[^ \t\r\n]*[ \t]+200")
_REPLY_PREFIX = b"HTTP/"


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


def reply_head_end(resp: bytes) -> int | None:
    """Where the server's first reply head ends in its first bytes (the byte after its
    empty line, blank lines before it skipped); None while it is incomplete."""
    start = blank_lines_end(resp)
    end = head_end(resp[start:])
    return None if end is None else start + end[1]


def http_connect_tunnel(orig: bytes, resp: bytes) -> bool | None:
    """Whether HTTP.cc opens a CONNECT tunnel on these first bytes of each direction: None
    while undecided, decided at the server's chunk that completes its first reply head
    (True: a 200 answering the client's CONNECT). False at once where the client's bytes
    are not a CONNECT or the server's do not begin a reply line (HTTP_ReplyLine refuses it:
    no tunnel on that connection)."""
    if not (orig.startswith(CONNECT) if len(orig) >= len(CONNECT) else CONNECT.startswith(orig)):
        return False
    start = blank_lines_end(resp)
    prefix = resp[start : start + len(_REPLY_PREFIX)].upper()
    if not _REPLY_PREFIX.startswith(prefix):
        return False
    end = head_end(resp[start:])
    if end is None:
        return None
    return orig.startswith(CONNECT) and _REPLY_200.match(resp, start) is not None
