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

Like the STARTTLS hand-overs, the tunnel is watched by the services analyzer and TLS on
the first bytes of each direction (`http_connect_tunnel`): the client's first request
line and the server's first reply head. Where that differs from HTTP.cc: a CONNECT after
an earlier request of a keep-alive connection (and a 200 to an earlier request while a
pipelined CONNECT waits, which HTTP.cc takes as the tunnel's start) is not watched; nor
one after blank lines; a CONNECT without a version (HTTP/0.9, whose reply HTTP.cc reads
raw: no tunnel) is; off HTTP's ports, the services analyzer takes HTTP as attached where
the client's method is any CONNECT, although dpd_http_client matches the upper-case one
only (dpd_http_server then matches the reply's `HTTP/<digit>` in every usual case).
A leaf module (no import of identifiers.http, which imports pcapexfil.services, so that
pcapexfil.services may import it): TLS, the HTTP analyzer and the services analyzer share it.
"""

from __future__ import annotations

import re

CONNECT_METHOD = b"CONNECT"


def _any_case_prefixes(word: bytes) -> bytes:
    """A regex source matching a non-empty prefix of `word` (ASCII letters in any case)."""
    out = b""
    for byte in reversed(word):
        letter = b"[" + bytes([byte]).upper() + bytes([byte]).lower() + b"]"
        out = letter + (b"(?:" + out + b")?" if out else b"")
    return out


# The client's first bytes where its first request line is a CONNECT: HTTP_RequestLine's
# method token, then util::skip_whitespace's blank (space or tab). The services analyzer's
# and TLS's gates anchor on it (a regex source, `services.base.Marks.start`).
CONNECT_REQUEST = _any_case_prefixes(CONNECT_METHOD) + rb"[ \t]"
CONNECT_REQUEST_MAX = len(CONNECT_METHOD) + 1  # its longest match
_CONNECT_REQUEST = re.compile(CONNECT_REQUEST)
# HTTP_ReplyLine: "HTTP/" (PrefixMatch: this case), the version up to a blank, blanks,
# then the code (HTTP_ReplyCode: its first three digits).
_REPLY_200 = re.compile(rb"HTTP/[^ \t\r\n]*[ \t]+200")
_REPLY_PREFIX = b"HTTP/"


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


def reply_head_end(resp: bytes) -> int | None:
    """Where the server's first reply head ends in its first bytes (the byte after its
    empty line, blank lines before it skipped); None while it is incomplete."""
    start = blank_lines_end(resp)
    end = head_end(resp[start:])
    return None if end is None else start + end[1]


def http_connect_tunnel(orig: bytes, resp: bytes) -> bool | None:
    """Whether HTTP.cc opens a CONNECT tunnel on these first bytes of each direction: None
    while undecided, decided at the server's chunk that completes its first reply head
    (True: a 200 answering the client's CONNECT; a 1xx first is a reply line whose code is
    not 200, which clears `connect_request`). False at once where the client's bytes are
    not a CONNECT or the server's do not begin a reply line (HTTP_ReplyLine refuses it: no
    tunnel on that connection)."""
    request = _CONNECT_REQUEST.match(orig) is not None
    if not request and orig and not connect_method(orig):
        return False  # neither a CONNECT request line nor the start of one
    start = blank_lines_end(resp)
    if not _REPLY_PREFIX.startswith(resp[start : start + len(_REPLY_PREFIX)]):
        return False
    end = head_end(resp[start:])
    if end is None:
        return None
    return request and _REPLY_200.match(resp, start) is not None
