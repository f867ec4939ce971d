"""HTTP/1.x: one transaction per request (method, Host, URI, body lengths, status), on
http/main.zeek's ports, and elsewhere where Zeek's PIA attaches the analyzer: one of
http/dpd.sig's signatures matched in its buffer (a listed method at the client's first
byte, or `HTTP/d` at the server's), the buffer then replayed.

Both directions are parsed incrementally from the reassembled stream: header blocks are
buffered (bounded), bodies are only counted (Content-Length, chunked, or until close), so a
long download costs one subtraction per segment. Responses pair with requests in order
(pipelining), 1xx responses are interim, and after a CONNECT tunnel opens (HTTP.cc's
`connect_request` rule: identifiers.http_tunnel) or a 101 upgrade the rest of the
connection is not this analyzer's. A CONNECT's or a SOCKS tunnel's bytes are a new PIA's,
which may attach a second instance (`_HttpConn.tunnel`) by http/dpd.sig: the same parsing
on the tunnel's sub-stream, logging to the same connection. An upgrade's are the WebSocket
analyzer's, or a new PIA's for another protocol (`HttpAnalyzer._upgrade`,
identifiers.websocket).

http.log's `host` column keeps the Host header as sent (Zeek's does, `:port` included); the
connection record's `http_host`, the identifier, is the first request's Host without its
port.

Violations, as src/analyzer/protocol/http/HTTP.cc's HTTP_Analyzer::DeliverStream raises
them: where a request line is expected, a non-empty line HTTP_RequestLine does not take
("not a http request line", only while RequestExpected: before the first request or on a
keep-alive connection); where a reply line is expected, a non-empty line HTTP_ReplyLine
does not take ("not a http reply line"). dpd.zeek then removes "http" from the service
(`services.base.analyzer_violation`) and the analyzer stops. Reply lines are checked where
a request waits for its response; bytes the server sends with no request pending are
dropped unchecked.
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pcapexfil.flow.ports import registered_ports
from pcapexfil.identifiers.http_tunnel import blank_lines_end, connect_method, head_end, open_tunnel
from pcapexfil.identifiers.output import LogOut
from pcapexfil.identifiers.stream import PiaBuffer, stream_size, streams, tcp_data
from pcapexfil.identifiers.websocket import NAME as WEBSOCKET
from pcapexfil.identifiers.websocket import WebSocketFrames, has_analyzer, upgrade_protocol
from pcapexfil.logs.http import HTTP_FIELDS, http_row
from pcapexfil.packet import PROTO_TCP
from pcapexfil.services import handed_over
from pcapexfil.services.base import PiaWait, Verdict, analyzer_violation, either_signature

if TYPE_CHECKING:
    from pcapexfil.hooks import AnalyzerContext, ConnView
    from pcapexfil.packet import Packet
    from pcapexfil.record import ConnRecord

NAME = "http"
MAX_HEADER = 64 * 1024  # a header block longer than this is not HTTP we follow
# A first request line longer than this is not followed either, and named as Zeek's line
# reader names it (analyzer/protocol/tcp/ContentLine.cc, DoDeliverOnce: contentline_size_exceeded).
MAX_REQUEST_LINE = 8192
# Transactions held per connection (they are logged when it ends). Beyond it, finished ones
# are logged and forgotten early, and a client with this many requests unanswered is no
# longer followed (HTTP_excessive_pipelining): endless pipelining cannot grow memory.
MAX_TRANSACTIONS = 1000

# Request line: a token method, a target, and an HTTP version (or none: HTTP/0.9).
# The target runs to the last " HTTP/x.y" (Zeek keeps spaces inside it).
REQUEST_LINE = re.compile(rb"^([A-Za-z][A-Za-z0-9_.!#$%&'*+^`|~-]{0,31}) +(\S.*?)(?: +HTTP/(\d+\.\d+))? *$")
RESPONSE_LINE = re.compile(rb"^HTTP/(\d+\.\d+) +(\d{3})(?: (.*))?$")
_METHOD_SO_FAR = re.compile(rb"^[A-Za-z][A-Za-z0-9_.!#$%&'*+^`|~-]{0,31}( |$)")  # an unfinished first line
_KNOWN_09 = frozenset((b"GET", b"HEAD", b"POST"))
# Body states whose bytes are only counted, up to a known length.
_COUNTED_STATES = frozenset(("body", "chunk_data"))
# Zeek's HTTP::proxy_headers: request headers that betray a proxy.
_PROXY_HEADERS = frozenset(
    ("FORWARDED", "X-FORWARDED-FOR", "X-FORWARDED-FROM", "CLIENT-IP", "VIA", "XROXY-CONNECTION", "PROXY-CONNECTION")
)
# HTTP.cc is_HTTP_token_char: printable ASCII but these separators.
_TOKEN_CHARS = frozenset(c for c in range(32, 127) if c not in b'()<>@,;:\\"/[]?={} \t')
# HTTP.cc is_reserved_URI_char, is_unreserved_URI_char (alphanumerics too) and ParseRequest's
# '%'; their strchr also finds the string's terminating NUL.
_URI_CHARS = frozenset(
    b":/?#[]@!$&'()*+,;=" + b"-_.!~*'()" + b"%\x00" + bytes(c for c in range(128) if chr(c).isalnum())
)
_BLANKS = b" \t"  # util::skip_whitespace, analyzer::mime::is_lws
# What bytes.strip() removes: header text is decoded before it is stripped (str.strip()
# alone would also remove \x1c-\x1f and Unicode spaces).
_ASCII_SPACE = " \t\n\r\x0b\x0c"


def _run_of(chars: frozenset[int]) -> re.Pattern[bytes]:
    """A pattern matching the longest run of bytes from `chars` (one C call, not a loop)."""
    return re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in sorted(chars)) + b"]*")


_TOKEN_RUN = _run_of(_TOKEN_CHARS)
_URI_RUN = _run_of(_URI_CHARS)
# HTTP_ReplyLine's test (`is_reply_line`): `HTTP/`, the version up to the first blank, the
# blanks, then 3 characters or more.
_REPLY_LINE_TAKEN = re.compile(rb"HTTP/[^ \t]*[ \t]+[^ \t]..", re.DOTALL)
_VERSION_PREFIX = b"HTTP/"
_MIN_09_METHOD = 3  # HTTP_RequestLine: an HTTP/0.9 request needs a 3-character method (GET)
_MIME_TOKEN_END = re.compile(r'[\s()<>@,;:\\"/\[\]?=]')  # mime is_tspecial, where get_value_token ends
_PERSISTENT = re.compile(rb"(?:[2-9]\.\d|1\.[1-9])")  # SetVersion: above 1.0 keeps the connection alive


def strip_port(host: str) -> str:
    """Host header without `:port` (bracketed IPv6 literals lose their brackets)."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def is_request_line(line: bytes) -> bool:
    """Whether HTTP_Analyzer::HTTP_RequestLine takes the line (else bad_HTTP_request): a
    method token, blanks, then a target and version ParseRequest reads; without an
    `HTTP/` version (HTTP/0.9), a method of 3 characters or more and a URI."""
    method = _TOKEN_RUN.match(line).end()  # type: ignore[union-attr]  # `*` always matches
    if method == 0:
        return False
    rest = line[method:].lstrip(_BLANKS)
    if len(rest) == len(line) - method:
        return False  # no blank after the method
    uri_end = _URI_RUN.match(rest).end()  # type: ignore[union-attr]
    if uri_end == len(rest):
        has_version = rest.startswith(_VERSION_PREFIX)  # missing_HTTP_uri
    else:
        has_version = _VERSION_PREFIX in rest[uri_end:]
    # The URI ParseRequest keeps is empty only for a single character outside the URI set.
    has_uri = len(rest) > 1 or uri_end == 1
    return has_version or (method >= _MIN_09_METHOD and has_uri)


def is_reply_line(line: bytes) -> bool:
    """Whether HTTP_Analyzer::HTTP_ReplyLine takes the line: `HTTP/`, the version up to a
    blank, then at least 3 characters (the code; non-digits read as code 0)."""
    return _REPLY_LINE_TAKEN.match(line) is not None  # else bad_HTTP_reply


def _first_line(buf: bytearray) -> bytes | None:
    """The first line after blank ones, without its end; None until it is complete."""
    start = blank_lines_end(buf)
    end = buf.find(b"\n", start)
    return None if end < 0 else bytes(buf[start:end]).rstrip(b"\r")


def take_head(buf: bytearray, allow_09: bool) -> tuple[bytes, bytes] | None:
    """Remove one message head from the start of `buf`: (its first line, the header lines
    after it, undecoded); None if it is not complete yet. Blank lines before it go."""
    # Leading blank lines between messages are tolerated.
    blanks = blank_lines_end(buf)
    if blanks:
        del buf[:blanks]
    first_nl = buf.find(b"\n")
    if first_nl < 0:
        return None
    first = bytes(buf[:first_nl]).rstrip(b"\r")
    if allow_09 and b"HTTP/" not in first:
        del buf[: first_nl + 1]
        return first, b""
    end = head_end(buf)
    if end is None:
        return None
    block_end, blank_end = end
    headers = bytes(buf[first_nl + 1 : block_end])  # empty when the block is one line
    del buf[:blank_end]
    return first, headers


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


_HEX = b"0123456789abcdefABCDEF"


def unescape_uri(raw: bytes) -> tuple[bytes, list[str]]:
    """Decode `%xx` (and `%uxxxx`) escapes as Zeek's `unescape_URI` does for http.log's `uri`.

    Malformed escapes are kept literally and named as Zeek's weirds, which are returned.
    """
    if b"%" not in raw:
        return raw, []
    out = bytearray()
    weirds: list[str] = []
    i, end = 0, len(raw)
    while i < end:
        percent = raw.find(b"%", i)  # the bytes up to the next '%' are copied as they are
        if percent < 0:
            out += raw[i:]
            break
        out += raw[i:percent]
        i = percent + 1
        if i == end:
            out.append(0x25)
            weirds.append("illegal_%_at_end_of_URI")
            break
        if i + 1 == end:
            out += raw[i - 1 : i + 1]
            weirds.append("partial_escape_at_end_of_URI")
            break
        if raw[i] == 0x25:  # "%%": the first one is dropped
            weirds.append("double_%_in_URI")
            continue
        if raw[i] in _HEX and raw[i + 1] in _HEX:
            out.append(int(raw[i : i + 2], 16))
            i += 2
        elif end - i >= 5 and raw[i] == 0x75 and all(b in _HEX for b in raw[i + 1 : i + 5]):  # %uXXXX
            if raw[i + 1 : i + 3] != b"00":
                out.append(int(raw[i + 1 : i + 3], 16))
            out.append(int(raw[i + 3 : i + 5], 16))
            i += 5
        else:
            weirds.append("unescaped_%_in_URI")
            out.append(0x25)
            out.append(raw[i])
            i += 1
    return bytes(out), weirds


@dataclass(slots=True)
class Transaction:
    ts: float
    depth: int
    method: str
    uri: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    request_body_len: int = 0
    response_body_len: int = 0
    status_code: int | None = None
    status_msg: str | None = None
    info_code: int | None = None
    info_msg: str | None = None
    proxied: list[str] = field(default_factory=list)
    username: str | None = None
    resp_version: str | None = None
    complete: bool = False  # final response body finished
    logged: bool = False

    def row_fields(self) -> dict[str, Any]:
        h = self.headers
        return {
            "ts": self.ts,
            "trans_depth": self.depth,
            "method": self.method,
            "host": h.get("HOST"),
            "uri": self.uri,
            "referrer": h.get("REFERER"),
            "version": self.resp_version or self.version,
            "user_agent": h.get("USER-AGENT"),
            "origin": h.get("ORIGIN"),
            "request_body_len": self.request_body_len,
            "response_body_len": self.response_body_len,
            "status_code": self.status_code,
            "status_msg": self.status_msg,
            "info_code": self.info_code,
            "info_msg": self.info_msg,
            "tags": [],
            "username": self.username,
            "proxied": self.proxied or None,
        }


class Side:
    """Incremental parser state of one direction."""

    __slots__ = ("is_resp", "buf", "state", "remaining", "trans", "line_mode", "tail")

    def __init__(self, is_resp: bool) -> None:
        self.is_resp = is_resp
        # Zeek reads multipart and read-until-close bodies line by line and counts a last
        # line without its CRLF as if it had one; `tail` holds the body's last two bytes.
        self.line_mode = False
        self.tail = b""
        self.buf = bytearray()
        self.state = "head"  # head, body, chunk_size, chunk_data, chunk_crlf, trailer, close, off
        self.remaining = 0
        self.trans: Transaction | None = None  # whose body is being counted


# http/dpd.sig's signatures, each of which attaches the analyzer off its ports on its own
# (zeek/zeek PR 1160, "each side can trigger the analyzer"): dpd_http_client, the
# originator's /^[[:space:]]*(METHOD|...)[[:space:]]*/ over these methods (QUERY since PR
# 5595), and dpd_http_server, the responder's /^HTTP\/[0-9]/.
_DPD_CLIENT_METHODS = tuple(m.encode() for m in (
    "OPTIONS GET HEAD POST PUT DELETE TRACE CONNECT PROPFIND PROPPATCH MKCOL COPY MOVE LOCK UNLOCK VERSION-CONTROL "
    "REPORT CHECKOUT CHECKIN UNCHECKOUT MKWORKSPACE UPDATE LABEL MERGE BASELINE-CONTROL MKACTIVITY ORDERPATCH ACL "
    "PATCH SEARCH BCOPY BDELETE BMOVE BPROPFIND BPROPPATCH NOTIFY POLL SUBSCRIBE UNSUBSCRIBE X-MS-ENUMATTS "
    "RPC_OUT_DATA RPC_IN_DATA QUERY").split())
# What the originator's bytes may still become: the methods' proper prefixes (b"" too).
_DPD_CLIENT_METHOD_PREFIXES = frozenset(m[:i] for m in _DPD_CLIENT_METHODS for i in range(len(m)))
_DPD_SERVER_PREFIX = b"HTTP/"  # /^HTTP\/[0-9]/
_POSIX_SPACE = _ASCII_SPACE.encode()  # [[:space:]]: the same six characters
HTTP_PORTS = registered_ports(NAME, PROTO_TCP)


def dpd_client(orig: bytes) -> bool | None:
    """dpd_http_client on the originator's first bytes: None while they could still match."""
    text = orig.lstrip(_POSIX_SPACE)
    if text.startswith(_DPD_CLIENT_METHODS):
        return True
    return None if text in _DPD_CLIENT_METHOD_PREFIXES else False


def dpd_server(resp: bytes) -> bool | None:
    """dpd_http_server on the responder's first bytes: None while they could still match."""
    if len(resp) <= len(_DPD_SERVER_PREFIX):
        return None if _DPD_SERVER_PREFIX.startswith(resp) else False
    return resp.startswith(_DPD_SERVER_PREFIX) and resp[len(_DPD_SERVER_PREFIX)] in b"0123456789"



def dpd_signature(orig: bytes, resp: bytes) -> Verdict:
    """http/dpd.sig on the PIA's windows: either signature attaches HTTP on its own."""
    return either_signature(dpd_client(orig) if orig else None, dpd_server(resp) if resp else None)

class _HttpConn:
    __slots__ = ("orig", "resp", "trans", "next_resp", "is_http", "done", "dropped", "keep_alive", "attached",
                 "in_kernel", "connect_request", "depth_base", "tunnel", "pia", "upgraded")

    def __init__(self, attached: bool | None, depth_base: int = 0) -> None:
        # The analyzer is attached by the responder port (analyzer::Manager::
        # BuildInitialAnalyzerTree, http/main.zeek's ports) or, elsewhere, once the PIA
        # matched a dpd.sig signature (None until then).
        self.attached = attached
        self.orig = Side(False)
        self.resp = Side(True)
        self.trans: list[Transaction] = []
        self.dropped = 0  # finished transactions logged and forgotten early (MAX_TRANSACTIONS)
        self.next_resp = 0  # index of the first transaction still waiting for its response
        self.is_http: bool | None = None  # None: undecided
        self.done = False
        # HTTP_Analyzer's keep_alive: a version above 1.0 either way, or the client's
        # `Connection: keep-alive`; with it, requests are expected after the first.
        self.keep_alive = False
        # HTTP_Analyzer's connect_request: set by a CONNECT request, cleared by a reply
        # line whose code is not 200; a reply head ending while it is set opens the tunnel.
        self.connect_request = False
        self.in_kernel = False  # the fast engine's kernel reads the bytes (the kernel_* methods)
        # The connection's requests before this analyzer's first: trans_depth goes on from
        # them (http/main.zeek: c$http_state, and its current_request, is the connection's).
        self.depth_base = depth_base
        # After a 200 to CONNECT: the HTTP analyzer the tunnel's PIA attaches (`_open_tunnel`)
        # and, for a tunnel's analyzer, that PIA (HTTP.cc DeliverStream's new PIA_TCP).
        self.tunnel: _HttpConn | None = None
        self.pia: PiaBuffer | None = None
        # After a 101 upgrading to a protocol with an analyzer (HTTP_Upgrade): that analyzer,
        # reading the rest of the stream until it confirmed or failed.
        self.upgraded: WebSocketFrames | None = None


# What the kernel keeps of one direction for `HttpAnalyzer.kernel_resume`: state name,
# remaining, line mode, tail, buffered bytes, depth of the transaction it reads (0: none).
KernelSide = tuple[str, int, bool, bytes, bytes, int]


def reason_text(raw: bytes | None) -> str | None:
    """A response's reason as http.log's status_msg / info_msg holds it."""
    return _text(raw or b"").strip() or None


def parse_headers(block: bytes) -> list[tuple[str, str]]:
    """Header lines to (UPPER-NAME, value); obsolete line folding joins continuation lines.

    The block is decoded once: UTF-8 with surrogateescape decodes line by line as it does
    whole, as no byte of a multi-byte sequence is `\\n`, `:` or a blank."""
    out: list[tuple[str, str]] = []
    for line in _text(block).split("\n"):
        if line.startswith((" ", "\t")) and out:
            folded_name, folded_value = out[-1]
            out[-1] = (folded_name, (folded_value + " " + line.strip(_ASCII_SPACE)).strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            out.append((name.strip(_ASCII_SPACE).upper(), value.strip(_ASCII_SPACE)))
    return out


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 0 else None


class HttpAnalyzer:
    """AppAnalyzer for HTTP/1.x; writes http.log when the context has an output directory."""

    name = NAME

    def __init__(self, ctx: AnalyzerContext, stream_users: frozenset[str] = frozenset({NAME})) -> None:
        self.ctx = ctx
        self.users = stream_users
        self.log = LogOut(ctx, "http", HTTP_FIELDS)

    def reads_datagrams(self, resp_p: int) -> bool:
        return False  # TCP only

    def pia_gate(self, resp_p: int) -> PiaWait | None:
        return None  # it reads every request and reply (the kernel's lane, where it can)

    def pia_released(self, conn: ConnView) -> None:
        return  # never asked: it is not gated

    def on_new(self, conn: ConnView) -> None:
        if conn.proto == PROTO_TCP:
            conn.app[NAME] = _HttpConn(True if conn.resp_p in HTTP_PORTS else None)

    def on_packet(self, conn: ConnView, is_orig: bool, pkt: Packet) -> None:
        if pkt.proto != PROTO_TCP:
            return
        st: _HttpConn | None = conn.app.get(NAME)
        if st is None or st.in_kernel:
            return
        if st.done and st.tunnel is None and handed_over(conn):
            self._open_handed_over(conn, st)
        tunnel = st.tunnel
        if st.done and (tunnel is None or tunnel.done) and st.upgraded is None:
            return
        data = tcp_data(conn, is_orig, pkt, self.users)
        if not data:
            return
        if conn.is_partial:
            self._partial(conn, st)
            return
        if st.upgraded is not None:
            self._upgraded_chunk(conn, st, is_orig, data)
        elif tunnel is not None:
            self._tunnel_chunk(conn, tunnel, is_orig, data, pkt.ts)
        elif st.attached is None:
            s = streams(conn)
            if s is not None:
                self._attach_by_signature(conn, st, s.pia, pkt.ts)
        else:
            self._feed(conn, st, is_orig, data, pkt.ts)

    def _attach_by_signature(self, conn: ConnView, st: _HttpConn, pia: PiaBuffer, ts: float) -> None:
        """Off its ports (and in a CONNECT tunnel) the analyzer starts once `pia` matched one
        of http/dpd.sig's signatures, with its buffer replayed (PIA_TCP::ActivateAnalyzer,
        ReplayStreamBuffer); if matching ends first, it never does."""
        verdict = dpd_signature(pia.orig, pia.resp)
        if verdict is Verdict.CONFIRM:
            st.attached = True
            for is_orig, chunk in list(pia.chunks):
                if st.done:
                    break
                self._feed(conn, st, is_orig, chunk, ts)
        elif verdict is Verdict.REJECT or not pia.matching:
            st.attached = False
            self._give_up(conn, st)

    def _feed(self, conn: ConnView, st: _HttpConn, is_orig: bool, data: bytes, ts: float) -> None:
        """One chunk of a direction's stream, at network time `ts`."""
        if is_orig:
            self._feed_orig(conn, st, data, ts)
        elif st.is_http:
            self._feed_resp(conn, st, data, ts)
        elif st.is_http is None and st.orig.state == "head" and not st.orig.buf:
            # The server spoke first: HTTP clients always do.
            self._give_up(conn, st)
        if st.done:
            return
        if st.orig.state == "off" and st.resp.state == "off":
            self._give_up(conn, st)
        else:
            self._offer_counts(conn, st)

    def _offer_counts(self, conn: ConnView, st: _HttpConn) -> None:
        """Let the fast engine count body bytes of known length without handing them to us.
        Line-mode bodies are left out: their last two bytes matter (`_unterminated_last_line`)."""
        s = streams(conn)
        if s is None:
            return
        for side in (st.orig, st.resp):
            if side.state in _COUNTED_STATES and side.remaining > 0 and not side.line_mode:
                s.offer(NAME, not side.is_resp, side.remaining, functools.partial(self._counted, conn, st, side))
            else:
                s.withdraw(NAME, not side.is_resp)

    def _counted(self, conn: ConnView, st: _HttpConn, side: Side, n: int) -> None:
        """`n` body bytes the fast engine counted for us (`TcpStreams.offer`): what `_body`
        does with them, logging included when they end a response."""
        if side.state not in _COUNTED_STATES or st.done:
            return  # we stopped reading (a tunnel began): the bytes are not HTTP's
        self._add(side, b"", 0, n)
        side.remaining -= n
        if side.remaining:
            return
        if side.state == "chunk_data":
            side.state = "chunk_crlf"
        else:
            self._body_done(side)
            if side.is_resp and side.trans is not None and side.trans.complete:
                self._log(conn, side.trans)
        self._offer_counts(conn, st)

    def _give_up(self, conn: ConnView, st: _HttpConn) -> None:
        """The analyzer reads no more; the stream is let go unless its tunnel or the analyzer
        its upgrade attached reads on."""
        st.done = True
        if (st.tunnel is not None and not st.tunnel.done) or st.upgraded is not None:
            return
        s = streams(conn)
        if s is not None:
            s.release(NAME)

    def _partial(self, conn: ConnView, st: _HttpConn) -> None:
        """src/analyzer/protocol/http/HTTP.cc, HTTP_Analyzer::DeliverStream returns at once
        while the connection is partial (TCPSessionAdapter::IsPartial: it began without its
        handshake), before a CONNECT tunnel's forwarding too: the analyzer and its tunnel read
        no more. The flag is settled by each direction's first packet; only a flip of roles
        clears it later (at a SYN or SYN-ACK), so the analyzer is done here, what it logged
        before kept."""
        if st.tunnel is not None:
            st.tunnel.done = True
        st.upgraded = None
        self._give_up(conn, st)

    def _violation(self, conn: ConnView, st: _HttpConn) -> None:
        """AnalyzerViolation: within DPD::ignore_violations_after dpd.zeek disables the
        analyzer (and takes "http" out of the service); the transactions seen are logged."""
        if analyzer_violation(conn.service, NAME, stream_size(conn)):
            self._give_up(conn, st)

    # -- client side -------------------------------------------------------------------

    def _feed_orig(self, conn: ConnView, st: _HttpConn, data: bytes, ts: float) -> None:
        side = st.orig
        pos = 0
        while pos < len(data) and side.state != "off":
            if side.state == "head":
                side.buf += data[pos:]
                pos = len(data)
                if st.is_http is None:
                    nl = side.buf.find(b"\n")
                    if not self._plausible_request(side.buf[:nl] if nl >= 0 else side.buf, complete=nl >= 0):
                        if nl < 0 and _METHOD_SO_FAR.match(side.buf):  # a request line without end
                            self._weird(conn, "contentline_size_exceeded", ts)
                        st.is_http = False
                        side.state = "off"
                        st.resp.state = "off"
                        return
                self._requests(conn, st, ts)
                if side.state in ("head", "off"):
                    return
                # A body started inside the buffered bytes: count it from there.
                rest = bytes(side.buf)
                side.buf.clear()
                pos = 0
                data = rest
            else:
                pos = self._body(side, data, pos)

    @staticmethod
    def _plausible_request(first: bytes | bytearray, complete: bool) -> bool:
        if not first[:1].isalpha():  # methods start with a letter; TLS and other binary protocols stop here
            return False
        if not complete:
            # Not a full line yet: a method token so far is still plausible.
            return bool(_METHOD_SO_FAR.match(first)) and len(first) < MAX_REQUEST_LINE
        m = REQUEST_LINE.match(first.rstrip(b"\r"))
        return m is not None and (m.group(3) is not None or m.group(1) in _KNOWN_09)

    def _requests(self, conn: ConnView, st: _HttpConn, ts: float) -> None:
        """Parse every complete request head in the client buffer."""
        side = st.orig
        while side.state == "head":
            head = take_head(side.buf, allow_09=True)
            if head is None:
                if len(side.buf) > MAX_HEADER:
                    self._weird(conn, "HTTP_header_too_long", ts)
                    side.state = "off"
                return
            first, header_lines = head
            request_line = is_request_line(first)
            m = REQUEST_LINE.match(first) if request_line else None
            if m is None:
                self._weird(conn, "bad_HTTP_request", ts)
                side.state = "off"
                if not request_line and (st.keep_alive or not st.dropped + len(st.trans)):
                    self._violation(conn, st)  # "not a http request line" (RequestExpected)
                return
            method, uri, version = m.group(1), m.group(2), m.group(3)
            headers = parse_headers(header_lines) if version else []
            t = self._transaction(conn, st, ts, method, uri, version, headers)
            if t is None:
                side.state = "off"
                return
            if version is None:
                side.state = "off"  # HTTP/0.9: one request, the response runs until close
                return
            if connect_method(method):
                # HTTP.cc HTTP_Analyzer::HTTP_Request: strncasecmp over the method's length.
                # (After an HTTP/0.9 request, above, HTTP.cc reads every reply raw: none
                # opens a tunnel, so such a CONNECT is not marked.)
                st.connect_request = True
            self._start_body(side, t, headers, is_request=True)

    def _transaction(self, conn: ConnView, st: _HttpConn, ts: float, method: bytes, uri: bytes,
                     version: bytes | None, headers: list[tuple[str, str]]) -> Transaction | None:
        """A request taken (its first one confirms the analyzer) becomes the next
        transaction; None when too many wait (HTTP_excessive_pipelining)."""
        if st.is_http is None:
            st.is_http = True
            if "http" not in conn.service:
                conn.service.append("http")
        if version and _PERSISTENT.match(version):
            st.keep_alive = True
        uri, uri_weirds = unescape_uri(uri)
        for name in uri_weirds:
            self._weird(conn, name, ts)
        if len(st.trans) >= MAX_TRANSACTIONS and not self._trim(conn, st):
            self._weird(conn, "HTTP_excessive_pipelining", ts)
            return None
        t = Transaction(ts, st.depth_base + st.dropped + len(st.trans) + 1, _text(method), _text(uri),
                        _text(version or b"0.9"))
        for name, value in headers:
            if name not in t.headers:
                t.headers[name] = value
            if name in _PROXY_HEADERS:
                t.proxied.append(f"{name} -> {value}")
            if name == "CONNECTION" and _MIME_TOKEN_END.split(value, maxsplit=1)[0].lower() == "keep-alive":
                st.keep_alive = True
            if name == "AUTHORIZATION" and value[:6].lower() == "basic ":
                try:
                    user = base64.b64decode(value[6:].strip(), validate=False).split(b":", 1)[0]
                    t.username = _text(user)
                except ValueError:
                    pass
        st.trans.append(t)
        return t

    def _start_body(self, side: Side, t: Transaction, headers: list[tuple[str, str]], is_request: bool) -> None:
        side.trans = t
        side.tail = b""
        line_mode = chunked = False
        length: str | None = None  # the first Content-Length header
        for name, value in headers:  # one pass: this runs for every message
            if name == "CONTENT-TYPE":
                line_mode = line_mode or value.lower().startswith("multipart/")
            elif name == "TRANSFER-ENCODING":
                chunked = chunked or "chunked" in value.lower()
            elif name == "CONTENT-LENGTH" and length is None:
                length = value
        side.line_mode = line_mode
        if chunked:
            side.state = "chunk_size"
            return
        n = _content_length(length)
        if n:
            side.state, side.remaining = "body", n
        elif n is None and not is_request:
            side.state = "close"
            side.line_mode = True
        else:
            side.state = "head"
            if not is_request:
                t.complete = True

    def _body(self, side: Side, data: bytes, pos: int) -> int:
        """Consume body bytes from data[pos:]; return the new position."""
        if side.state == "close":
            self._add(side, data, pos, len(data) - pos)
            return len(data)
        if side.state == "body":
            n = min(side.remaining, len(data) - pos)
            self._add(side, data, pos, n)
            side.remaining -= n
            if side.remaining == 0:
                self._body_done(side)
            return pos + n
        # Chunked framing: sizes, data, CRLF after data, trailer.
        if side.state == "chunk_data":
            n = min(side.remaining, len(data) - pos)
            self._add(side, data, pos, n)
            side.remaining -= n
            if side.remaining == 0:
                side.state = "chunk_crlf"
            return pos + n
        nl = data.find(b"\n", pos)
        if nl < 0:
            side.buf += data[pos:]
            if len(side.buf) > 4096:
                side.state = "off"
            return len(data)
        line = bytes(side.buf + data[pos:nl]).strip()
        side.buf.clear()
        pos = nl + 1
        if side.state == "chunk_crlf":
            side.state = "chunk_size"
            if line:  # data ran past its size: resync on this line
                return self._chunk_size(side, line, pos)
            return pos
        if side.state == "chunk_size":
            return self._chunk_size(side, line, pos)
        # trailer: ends at an empty line
        if not line:
            self._body_done(side)
        return pos

    def _chunk_size(self, side: Side, line: bytes, pos: int) -> int:
        try:
            size = int(line.split(b";", 1)[0], 16)
        except ValueError:
            side.state = "off"
            return pos
        if size == 0:
            side.state = "trailer"
        else:
            side.state, side.remaining = "chunk_data", size
        return pos

    @staticmethod
    def _add(side: Side, data: bytes, pos: int, n: int) -> None:
        t = side.trans
        if t is None or n <= 0:
            return
        if side.line_mode:  # only then is the tail read; line mode begins with an empty one
            side.tail = (side.tail + data[max(pos, pos + n - 2) : pos + n])[-2:]
        if side.is_resp:
            t.response_body_len += n
        else:
            t.request_body_len += n

    # -- server side -------------------------------------------------------------------

    def _feed_resp(self, conn: ConnView, st: _HttpConn, data: bytes, ts: float) -> None:
        side = st.resp
        pos = 0
        while pos < len(data) and side.state != "off":
            if side.state == "head":
                if st.next_resp >= len(st.trans):
                    return  # a response nobody asked for (or to a request we did not parse)
                t = st.trans[st.next_resp]
                if t.version == "0.9":
                    t.status_code, t.status_msg, t.resp_version = 0, "<empty>", "0.9"
                    side.trans = t
                    side.state = "close"
                    continue
                side.buf += data[pos:]
                pos = len(data)
                first = _first_line(side.buf)
                if first is not None and not is_reply_line(first):
                    self._weird(conn, "bad_HTTP_reply", ts)
                    side.state = "off"
                    self._violation(conn, st)  # "not a http reply line"
                    return
                head = take_head(side.buf, allow_09=False)
                if head is None:
                    if len(side.buf) > MAX_HEADER:
                        side.state = "off"
                    return
                first, header_lines = head
                m = RESPONSE_LINE.match(first)
                if m is None:
                    self._weird(conn, "bad_HTTP_reply", ts)
                    side.state = "off"
                    return
                code = int(m.group(2))
                if _PERSISTENT.match(m.group(1)):
                    st.keep_alive = True
                msg = reason_text(m.group(3))
                headers = parse_headers(header_lines)
                if code != 200:
                    st.connect_request = False  # HTTP.cc DeliverStream, EXPECT_REPLY_LINE
                if 100 <= code < 200 and code != 101:
                    t.info_code, t.info_msg = code, msg
                else:
                    t.status_code, t.status_msg = code, msg
                    t.resp_version = _text(m.group(1))
                    protocol = upgrade_protocol(headers, len(st.trans) - st.next_resp) if code == 101 else None
                    st.next_resp += 1
                    # HTTP.cc DeliverStream, EXPECT_REPLY_MESSAGE: the head of a 200 ends
                    # while connect_request is set (whichever request it answers).
                    tunnel = code == 101 or st.connect_request
                    no_body = t.method.upper() == "HEAD" or code in (204, 304) or tunnel
                    if no_body:
                        t.complete = True
                        self._log(conn, t)
                        side.state = "head"
                    else:
                        self._start_body(side, t, headers, is_request=False)
                        if t.complete:
                            self._log(conn, t)
                    if tunnel:
                        side.state = "off"
                        st.orig.state = "off"
                        if code == 200:
                            self._open_tunnel(conn, st, bytes(side.buf), ts)
                            side.buf.clear()
                        elif protocol is not None:
                            self._upgrade(conn, st, protocol, bytes(side.buf), ts)
                            side.buf.clear()
                        return
                rest = bytes(side.buf)
                side.buf.clear()
                data, pos = rest, 0
            else:
                pos = self._body(side, data, pos)
                if side.state == "head" and side.trans is not None and side.trans.complete:
                    self._log(conn, side.trans)

    # -- an upgrade (HTTP_Upgrade) --------------------------------------------------------------

    def _upgrade(self, conn: ConnView, st: _HttpConn, protocol: str, rest: bytes, ts: float) -> None:
        """HTTP.cc HTTP_Upgrade: the analyzer HTTP::upgrade_analyzers names reads the rest of
        the connection (the server's bytes after the 101's head too, weird
        protocol_data_with_HTTP_upgrade_reply), or a new PIA_TCP where none is named (as
        after a CONNECT). Not modelled: a 101 that does not upgrade, after which Zeek's
        analyzer expects another reply (here it reads no more, as before)."""
        if rest:
            self._weird(conn, "protocol_data_with_HTTP_upgrade_reply", ts)
        if not has_analyzer(protocol):
            self._open_tunnel(conn, st, rest, ts)
            return
        st.upgraded = WebSocketFrames()
        if rest:
            self._upgraded_chunk(conn, st, False, rest)

    def _upgraded_chunk(self, conn: ConnView, st: _HttpConn, is_orig: bool, data: bytes) -> None:
        """A chunk for the upgrade's analyzer: once it confirmed (its name joins the service)
        or failed (dpd.zeek disables it before it confirmed), the stream is let go."""
        assert st.upgraded is not None
        verdict = st.upgraded.feed(is_orig, data)
        if verdict is None:
            return
        if verdict and WEBSOCKET not in conn.service:
            conn.service.append(WEBSOCKET)
        st.upgraded = None
        self._give_up(conn, st)

    # -- a tunnel's HTTP (CONNECT's, SOCKS's) ---------------------------------------------------

    def _open_tunnel(self, conn: ConnView, st: _HttpConn, rest: bytes, ts: float) -> None:
        """HTTP.cc HTTP_Analyzer::DeliverStream (EXPECT_REPLY_MESSAGE, a 200's head ending
        while connect_request is set): a new PIA_TCP reads the rest of the connection, the
        server's bytes after the head (`rest`) and the client's from its next chunk. Of the
        analyzers its dpd.sig signatures attach, HTTP is a new HTTP_Analyzer (its own
        parsing state, a child of this one), whose events go to the same connection: its
        rows have the connection's uid and their trans_depth goes on from this analyzer's
        requests (http/main.zeek, c$http_state$current_request). The services analyzer's
        and TLS's readers of the tunnel take it over from here (`open_tunnel`), on the
        connection's own stream only: tunnels in a tunnel are not modelled."""
        if st.pia is None:
            open_tunnel(conn, rest)
        tunnel = self._new_tunnel(st)
        if rest:
            self._tunnel_chunk(conn, tunnel, False, rest, ts)

    @staticmethod
    def _open_handed_over(conn: ConnView, st: _HttpConn) -> None:
        """SOCKS.cc SOCKS_Analyzer::DeliverStream: once both endpoints are done, a new
        PIA_TCP reads every later chunk (`services.handed_over`: this one on, as the services
        analyzer runs after this one); its dpd.sig signatures may attach HTTP, a child of
        SOCKS, as after a CONNECT. The connection's own HTTP analyzer (on 1080, one of
        http/main.zeek's ports too) gave up on the handshake's bytes: the stream is read again."""
        HttpAnalyzer._new_tunnel(st)
        s = streams(conn)
        if s is not None:
            s.want(NAME)

    @staticmethod
    def _new_tunnel(st: _HttpConn) -> _HttpConn:
        """The HTTP analyzer a tunnel's PIA may attach, with that PIA."""
        tunnel = st.tunnel = _HttpConn(None, st.depth_base + st.dropped + len(st.trans))
        tunnel.pia = PiaBuffer()
        return tunnel

    def _tunnel_chunk(self, conn: ConnView, tunnel: _HttpConn, is_orig: bool, data: bytes, ts: float) -> None:
        """A chunk of the tunnel: its PIA keeps it (PIA_TCP::DeliverStream) until a signature
        attached the tunnel's HTTP analyzer, which then reads every chunk."""
        if tunnel.done:
            return
        if tunnel.attached:
            self._feed(conn, tunnel, is_orig, data, ts)
            return
        pia = tunnel.pia
        assert pia is not None
        pia.add(is_orig, data)
        self._attach_by_signature(conn, tunnel, pia, ts)

    @staticmethod
    def _unterminated_last_line(side: Side) -> None:
        """Zeek's count for a line-mode body whose last line has no CRLF: two bytes more."""
        if side.line_mode and side.tail and not side.tail.endswith(b"\n"):
            HttpAnalyzer._add(side, b"\r\n", 0, 2)
        side.line_mode = False

    def _body_done(self, side: Side) -> None:
        self._unterminated_last_line(side)
        side.state = "head"
        if side.trans is not None and side.is_resp:
            side.trans.complete = True

    def _trim(self, conn: ConnView, st: _HttpConn) -> int:
        """Log and forget finished transactions, keeping those up to the first with a Host
        (it names the connection); return how many went."""
        first_host = next((i for i, t in enumerate(st.trans) if "HOST" in t.headers), len(st.trans))
        keep: list[Transaction] = []
        gone = 0
        for i, t in enumerate(st.trans):
            if i > first_host and i < st.next_resp and t.complete:
                self._log(conn, t)
                gone += 1
            else:
                keep.append(t)
        st.trans = keep
        st.next_resp -= gone  # every transaction that went was before next_resp
        st.dropped += gone
        return gone

    def _log(self, conn: ConnView, t: Transaction) -> None:
        if self.log.enabled and not t.logged:
            t.logged = True
            self.log.write(http_row(conn, t.row_fields()))

    def _weird(self, conn: ConnView, name: str, ts: float) -> None:
        if self.ctx.weirds is not None:
            self.ctx.weirds.report(name, ts, uid=conn.uid, conn_id=(conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p))

    # -- what the kernel read (fast.http_machine.apply_events) ------------------------------
    # The kernel reads the bytes; these keep the transactions as the byte-reading methods
    # above do at the same points.

    def read_by_kernel(self, conn: ConnView) -> None:
        """The fast engine's kernel reads this connection's bytes (fast.http_lane) until
        it leaves them to Python (`kernel_resume`)."""
        self._state(conn).in_kernel = True

    def _state(self, conn: ConnView) -> _HttpConn:
        st: _HttpConn = conn.app[NAME]
        return st

    def _numbered(self, st: _HttpConn, depth: int) -> Transaction:
        return st.trans[depth - st.dropped - 1]

    def kernel_request(self, conn: ConnView, ts: float, method: bytes, uri: bytes, version: bytes | None,
                       headers: list[tuple[str, str]]) -> None:
        """A request head `_requests` would have taken."""
        st = self._state(conn)
        t = self._transaction(conn, st, ts, method, uri, version, headers)
        assert t is not None, "the kernel leaves a connection to Python before MAX_TRANSACTIONS"

    def kernel_reply(self, conn: ConnView, depth: int, code: int, reason: bytes | None, version: bytes) -> None:
        """A final response head (`_feed_resp`); the kernel says when it is complete."""
        st = self._state(conn)
        t = self._numbered(st, depth)
        t.status_code, t.status_msg, t.resp_version = code, reason_text(reason), _text(version)
        st.next_resp += 1

    def kernel_info(self, conn: ConnView, depth: int, code: int, reason: bytes | None) -> None:
        """A 1xx response head other than 101."""
        t = self._numbered(self._state(conn), depth)
        t.info_code, t.info_msg = code, reason_text(reason)

    def kernel_reply_09(self, conn: ConnView, depth: int) -> None:
        """The response to an HTTP/0.9 request: no head, the body runs until close."""
        t = self._numbered(self._state(conn), depth)
        t.status_code, t.status_msg, t.resp_version = 0, "<empty>", "0.9"

    def kernel_body(self, conn: ConnView, depth: int, is_orig: bool, n: int) -> None:
        """`n` body bytes of a transaction's request or response (`_add`)."""
        t = self._numbered(self._state(conn), depth)
        if is_orig:
            t.request_body_len += n
        else:
            t.response_body_len += n

    def kernel_done(self, conn: ConnView, depth: int) -> None:
        """A response is complete: its transaction is logged."""
        t = self._numbered(self._state(conn), depth)
        t.complete = True
        self._log(conn, t)

    def kernel_weird(self, conn: ConnView, name: str, ts: float) -> None:
        self._weird(conn, name, ts)

    def kernel_violation(self, conn: ConnView, size: int) -> None:
        """`_violation` after `size` bytes of both directions."""
        st = self._state(conn)
        if analyzer_violation(conn.service, NAME, size):
            self._give_up(conn, st)

    def kernel_stop(self, conn: ConnView) -> None:
        """The kernel gave up, and reads no more: a SOCKS tunnel's HTTP is read here."""
        st = self._state(conn)
        st.in_kernel = False
        self._give_up(conn, st)

    def kernel_resume(self, conn: ConnView, is_http: bool | None, keep_alive: bool, connect_request: bool,
                      sides: tuple[KernelSide, KernelSide]) -> None:
        """The kernel leaves the connection to Python: from its state the byte-reading
        methods go on where it stopped (client side first)."""
        st = self._state(conn)
        st.is_http, st.keep_alive, st.connect_request, st.in_kernel = is_http, keep_alive, connect_request, False
        for side, (state, remaining, line_mode, tail, buf, depth) in zip((st.orig, st.resp), sides):
            side.state, side.remaining, side.line_mode, side.tail = state, remaining, line_mode, tail
            side.buf = bytearray(buf)
            side.trans = self._numbered(st, depth) if depth else None

    def on_remove(self, conn: ConnView, rec: ConnRecord) -> None:
        """The transactions still unlogged are written (http/main.zeek's
        connection_state_remove); the record's `http_host` is the first Host in the order
        the rows are written (pcapexfil.zeekread reads it so from http.log): the CONNECT
        analyzer's rows come before its tunnel's, which follow the 200 that opened it."""
        st: _HttpConn | None = conn.app.get(NAME)
        while st is not None:
            if st.trans and st.attached:
                if st.resp.state == "close":
                    self._unterminated_last_line(st.resp)  # the body ended with the connection
                for t in st.trans:
                    host = t.headers.get("HOST")
                    if host and rec.http_host is None:
                        rec.http_host = strip_port(host) or None
                    self._log(conn, t)
            st = st.tunnel

    def close(self) -> None:
        self.log.close()
