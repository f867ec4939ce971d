"""The kernel's HTTP state machine (pcapexfil/fast/http_machine.py) against HttpAnalyzer
reading the bytes itself, the oracle: the same conversations, cut into chunks anywhere,
give the same http.log rows, weirds, service and Host; where the kernel leaves a
connection to Python, the analyzer goes on from the kernel's state and still agrees."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_identifiers_support import FakeConn, syn, tcp

from pcapexfil.fast import http as kh
from pcapexfil.fast import http_machine as hm
from pcapexfil.hooks import AnalyzerContext
from pcapexfil.identifiers.http import HttpAnalyzer
from pcapexfil.identifiers.stream import open_streams

ISN_CLIENT, ISN_SERVER = 999, 4999
HEAD_CAPACITY = 512  # small, so that long heads are left to Python too
LINE_CAPACITY = 16  # and long chunk-size lines


@dataclass
class _Rows:
    """Stands in for http.log."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    enabled: bool = True

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))

    def close(self) -> None:
        pass


@dataclass
class _Weirds:
    seen: list[tuple[str, float]] = field(default_factory=list)

    def report(self, name: str, ts: float, addl: str | None = None, **_: Any) -> None:
        self.seen.append((name, ts))


def _analyzer() -> tuple[HttpAnalyzer, _Rows, _Weirds]:
    weirds = _Weirds()
    analyzer = HttpAnalyzer(AnalyzerContext(out_dir=None, weirds=weirds))
    rows = _Rows()
    analyzer.log = rows  # type: ignore[assignment]
    return analyzer, rows, weirds


Chunks = list[tuple[bool, bytes]]


def _oracle(chunks: Chunks) -> tuple[list, list, list[str], str | None]:
    analyzer, rows, weirds = _analyzer()
    conn = FakeConn(resp_p=80)
    analyzer.on_new(conn)
    analyzer.on_packet(conn, True, syn(conn, True, ISN_CLIENT))
    analyzer.on_packet(conn, False, syn(conn, False, ISN_SERVER))
    sent = {True: 0, False: 0}
    for k, (is_orig, chunk) in enumerate(chunks):
        seq = (ISN_CLIENT if is_orig else ISN_SERVER) + 1 + sent[is_orig]
        analyzer.on_packet(conn, is_orig, tcp(conn, is_orig, seq, chunk, ts=1000.0 + k))
        sent[is_orig] += len(chunk)
    rec = conn.record()
    analyzer.on_remove(conn, rec)
    return rows.rows, weirds.seen, conn.service, rec.http_host


@dataclass
class _Kernel:
    """One connection's kernel state and the output its chunks go to."""

    state: np.ndarray = field(default_factory=hm.new_state)
    sides: np.ndarray = field(default_factory=lambda: np.zeros((2, kh.SIDE_FIELDS), np.int64))
    lines: np.ndarray = field(default_factory=lambda: np.zeros((2, LINE_CAPACITY), np.uint8))
    heads: np.ndarray = field(default_factory=lambda: np.zeros((2, HEAD_CAPACITY), np.uint8))
    pending: np.ndarray = field(default_factory=lambda: np.zeros(hm.PENDING_MAX, np.int64))
    events: np.ndarray = field(default_factory=lambda: np.zeros((4096, hm.EVENT_FIELDS), np.int64))
    arena: np.ndarray = field(default_factory=lambda: np.zeros(1 << 17, np.uint8))
    out_n: np.ndarray = field(default_factory=lambda: np.zeros(2, np.int64))
    scratch: hm.Scratch = field(default_factory=lambda: hm.new_scratch(LINE_CAPACITY))


def _kernel(chunks: Chunks) -> tuple[list, list, list[str], str | None, bool]:
    """The chunks through http_chunk, its events applied; after HE_LEFT, through the
    analyzer's own on_packet from the kernel's state (its stream placed where the kernel
    stopped, as the fast engine must place it)."""
    analyzer, rows, weirds = _analyzer()
    conn = FakeConn(resp_p=80)
    analyzer.on_new(conn)
    k = _Kernel()
    sent = {True: 0, False: 0}
    left = False
    for i, (is_orig, chunk) in enumerate(chunks):
        ts = 1000.0 + i
        seq = (ISN_CLIENT if is_orig else ISN_SERVER) + 1 + sent[is_orig]
        if not left:
            buf = np.frombuffer(b"\r\n" + chunk + b"\n\n", np.uint8)
            k.out_n[:] = 0
            size = sent[True] + sent[False] + len(chunk)
            answer = hm.http_chunk(k.state, k.sides, k.lines, k.heads, k.pending, is_orig, buf, 2, 2 + len(chunk),
                                   size, k.events, k.arena, k.out_n, k.scratch)
            assert answer != hm.NO_ROOM
            hm.apply_events(analyzer, conn, k.events[: k.out_n[hm.O_EVENTS]].tolist(),
                            k.arena[: k.out_n[hm.O_ARENA]].tobytes(), ts)
            if answer == hm.LEFT:
                left = True
                hm.resume(analyzer, conn, k.state, k.sides, k.lines, k.heads)
                s = open_streams(conn, analyzer.users)
                s.orig.next_seq, s.resp.next_seq = ISN_CLIENT + 1 + sent[True], ISN_SERVER + 1 + sent[False]
                s.orig.delivered, s.resp.delivered = sent[True], sent[False]
        if left:
            analyzer.on_packet(conn, is_orig, tcp(conn, is_orig, seq, chunk, ts=ts))
        sent[is_orig] += len(chunk)
    if not left:
        hm.apply_end(analyzer, conn, k.state, k.sides)
    rec = conn.record()
    analyzer.on_remove(conn, rec)
    return rows.rows, weirds.seen, conn.service, rec.http_host, left


def _same(chunks: Chunks) -> bool:
    """Asserts the kernel's and the oracle's outputs agree; returns whether it left the
    connection to Python."""
    *got, left = _kernel(chunks)
    assert got == list(_oracle(chunks))
    return left


# -- conversations ----------------------------------------------------------------------

# CONNECT as HTTP_Request's strncasecmp takes it: any case, any non-empty prefix.
_METHODS = [b"GET", b"POST", b"HEAD", b"CONNECT", b"PUT", b"get", b"Head", b"OPTIONS", b"connect", b"CONNEC",
            b"C", b"CONNECTS"]
_URIS = [b"/", b"/a%20b", b"/%zz", b"/x y", b"*", b"/%u00e9", b"/%", b"http://h/p?q=1", b"\xc3\xa9"]
_VERSIONS = [b" HTTP/1.1", b" HTTP/1.0", b"", b" HTTP/2.0", b" HTTP/1.x", b" HTTP/10.0"]
_REQUEST_HEADERS = [b"Host: example.com", b"Host: example.com:8080", b"host:  spaced ", b"Referer: /r",
                    b"User-Agent: curl/8", b"Origin: http://o", b"Connection: keep-alive", b"Connection: close",
                    b"Content-Type: multipart/form-data; b=1", b"X-Forwarded-For: 10.1.1.1", b"Via: 1.1 p",
                    b"Authorization: Basic " + base64.b64encode(b"user:pw"), b"Authorization: Bearer x",
                    b"X-Folded: a\r\n  b", b"\xc3\xa9: x", b"Content-Length: +5", b"Empty:"]
_REASONS = [b" OK", b"", b" ", b" Not Found", b" \xc3\xa9t\xc3\xa9 ", b"  two"]
_RESPONSE_HEADERS = [b"Server: nginx", b"Connection: keep-alive", b"Content-Type: text/plain",
                     b"Content-Type: multipart/byteranges; boundary=x", b"Date: today"]


@st.composite
def _body(draw: st.DrawFn, is_request: bool) -> tuple[list[bytes], bytes]:
    """A framing header (or none) and the body bytes that follow the head."""
    kind = draw(st.sampled_from(["none", "length", "chunked", "zero"] + ([] if is_request else ["close"])))
    data = draw(st.sampled_from([b"", b"hello", b"line one\r\nline two", b"x" * 300, b"a\r\n", b"\r\n"]))
    if kind == "length":
        return [b"Content-Length: %d" % len(data)], data
    if kind == "zero":
        return [b"Content-Length: 0"], b""
    if kind == "chunked":
        pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
        body = b"".join(b"%x%s\r\n%s\r\n" % (len(p), draw(st.sampled_from([b"", b";ext=1"])), p) for p in pieces)
        trailer = draw(st.sampled_from([b"", b"T: 1\r\n"]))
        return [b"Transfer-Encoding: chunked"], body + b"0\r\n" + trailer + b"\r\n"
    if kind == "close":
        return [], data
    return [], b""


@st.composite
def _request(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A request and its method (which decides how the response is read)."""
    method = draw(st.sampled_from(_METHODS))
    version = draw(st.sampled_from(_VERSIONS))
    line = method + b" " + draw(st.sampled_from(_URIS)) + version
    if not version:
        return line + b"\r\n", method
    headers = draw(st.lists(st.sampled_from(_REQUEST_HEADERS), max_size=5))
    framing, body = draw(_body(True))
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    return line + eol + b"".join(h + eol for h in headers + framing) + eol + body, method


@st.composite
def _response(draw: st.DrawFn, method: bytes) -> bytes:
    code = draw(st.sampled_from([200, 200, 404, 100, 101, 204, 304, 302, 201]))
    info = b"HTTP/1.1 100 Continue\r\n\r\n" if draw(st.booleans()) and code != 100 else b""
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    head = version + b" %d" % code + draw(st.sampled_from(_REASONS)) + b"\r\n"
    headers = draw(st.lists(st.sampled_from(_RESPONSE_HEADERS), max_size=3))
    framing, body = draw(_body(False))
    if method.upper() == b"HEAD" or code in (101, 204, 304, 100):
        body = b""
    return info + head + b"".join(h + b"\r\n" for h in headers + framing) + b"\r\n" + body


_GARBAGE = [b"\x16\x03\x01\x00\x05hello", b"SSH-2.0-x\r\n", b"FOO\r\n", b"HTTP/1.1 2x0 Bad\r\n\r\n", b"\r\n",
            b"HTTP/1.1\r\n\r\n", b"G", b"GET", b"x" * 600]


@st.composite
def conversation(draw: st.DrawFn) -> Chunks:
    """Requests and responses (in turn or pipelined, with garbage now and then), each
    direction's bytes cut into chunks at random places."""
    exchanges = []
    for _ in range(draw(st.integers(1, 4))):
        request, method = draw(_request())
        if draw(st.integers(0, 9)) == 0:
            request = draw(st.sampled_from(_GARBAGE))
        response = draw(_response(method))
        if draw(st.integers(0, 9)) == 0:
            response = draw(st.sampled_from(_GARBAGE)) + response
        exchanges.append((request, response))
    pipelined = draw(st.booleans())
    order = [(True, r) for r, _ in exchanges] + [(False, r) for _, r in exchanges] if pipelined else \
        [m for r, s in exchanges for m in ((True, r), (False, s))]
    if draw(st.integers(0, 7)) == 0:
        order.insert(0, (False, draw(st.sampled_from(_GARBAGE))))  # the server first
    chunks: Chunks = []
    for is_orig, data in order:
        cuts = sorted(draw(st.lists(st.integers(1, max(len(data) - 1, 1)), max_size=3)))
        for a, b in zip([0] + cuts, cuts + [len(data)]):
            if a < b:
                chunks.append((is_orig, data[a:b]))
    return chunks


@settings(max_examples=1500, deadline=None)
@given(conversation())
@example([(True, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), (False, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")])
@example([(True, b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
          (False, b"HTTP/1.1 204 No\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
          (False, b"lo\r\n0\r\n\r\n")])
@example([(True, b"GET /\r\n"), (False, b"anything at all")])
@example([(True, b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n"),
          (False, b"HTTP/1.1 200 OK\r\n\r\nrest\r\nof")])
@example([(False, b"HTTP/1.1 200 OK\r\n\r\n"), (True, b"GET / HTTP/1.1\r\n\r\n")])
@example([(True, b"CONNECT h:443 HTTP/1.1\r\n\r\n"), (False, b"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x01")])
@example([(True, b"connect h:443 HTTP/1.1\r\n\r\n"), (False, b"HTTP/1.1 100 Go\r\n\r\nHTTP/1.1 200 OK\r\n\r\nab\r\n")])
@example([(True, b"GET / HTTP/1.1\r\n\r\nCON h:443 HTTP/1.1\r\n\r\n"),
          (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n")])
@example([(True, b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab")])
def test_the_kernel_keeps_the_transactions_the_analyzer_keeps(chunks: Chunks) -> None:
    _same(chunks)


def test_a_long_head_is_left_to_python_and_read_on_there() -> None:
    long_head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * HEAD_CAPACITY + b"\r\n\r\n"
    chunks = [(True, b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"),
              (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab"),
              (True, long_head[:100]), (True, long_head[100:]),
              (False, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")]
    assert _same(chunks)


def test_connect_request_goes_to_python_with_the_connection() -> None:
    """HTTP.cc's connect_request, set by a CONNECT the kernel read, holds in Python after
    the kernel left it a long reply head: the 200 opens the tunnel there (no body read)."""
    head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * HEAD_CAPACITY + b"\r\n\r\n"
    chunks = [(True, b"CONNECT h:443 HTTP/1.1\r\n\r\n"), (False, head[:100]), (False, head[100:] + b"tunnel\r\n")]
    assert _same(chunks)


def test_plain_transactions_stay_in_the_kernel() -> None:
    """The common case is the kernel's alone: heads in one or several chunks, bodies of
    every framing, keep-alive and pipelining."""
    chunks = [(True, b"GET /a HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"),
              (False, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"), (False, b"cdHTTP/1.1 200 OK\r\nTrans"),
              (False, b"fer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
              (True, b"POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhe"), (True, b"llo"),
              (False, b"HTTP/1.0 200 OK\r\n\r\nuntil close")]
    assert not _same(chunks)
