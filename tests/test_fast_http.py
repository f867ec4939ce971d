"""The kernel's HTTP head reading (pcapexfil/fast/http.py) against identifiers.http, the
oracle: where a head ends, the request and reply lines' parts, the header lines."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pcapexfil.fast import http as kh
from pcapexfil.identifiers.http import (
    REQUEST_LINE,
    RESPONSE_LINE,
    HttpAnalyzer,
    Side,
    Transaction,
    is_reply_line,
    is_request_line,
    parse_headers,
    take_head,
)

# Bytes the rules turn on, so that generated heads hit them often.
_PIECES = [b"GET", b"POST", b"HEAD", b"CONNECT", b"get", b"HTTP/", b"1.1", b"1.0", b"0.9", b"200", b"404 ", b"12",
           b" ", b"  ", b"\t", b"\r", b"\n", b"\r\n", b"\n\r\n", b":", b": ", b"Host", b"X-A", b"/", b"/a?b=%41",
           b".", b"%", b"\x00", b"\xc3\xa9", b"\xff", b"\xc3\x9f", b"a", b"Z", b"-", b"~", b"(", b"\x0b", b"\x0c"]
_soup = st.lists(st.sampled_from(_PIECES), max_size=40).map(b"".join)
_line = st.lists(st.sampled_from([p for p in _PIECES if b"\n" not in p]), max_size=14).map(b"".join)


def _array(data: bytes, pad: bytes = b"") -> tuple[np.ndarray, int, int]:
    """`data` inside a larger array (the kernel reads offsets into a chunk buffer)."""
    buf = np.frombuffer(pad + data + pad, np.uint8)
    return buf, len(pad), len(pad) + len(data)


def _kernel_head(data: bytes, allow_09: bool) -> tuple[bytes, bytes, int] | None:
    buf, start, end = _array(data, b"\n\nxx")
    status, fs, fe, hs, he, head_end = kh.head_bounds(buf, start, end, allow_09)
    if status == kh.HEAD_INCOMPLETE:
        return None
    if status == kh.HEAD_HTTP09:
        assert allow_09 and hs == he
    return bytes(buf[fs:fe]), bytes(buf[hs:he]), head_end - start


def _oracle_head(data: bytes, allow_09: bool) -> tuple[bytes, bytes, int] | None:
    buf = bytearray(data)
    head = take_head(buf, allow_09)
    if head is None:
        return None
    return head[0], head[1], len(data) - len(buf)


@settings(max_examples=1500, deadline=None)
@given(_soup, st.booleans())
@example(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest", False)
@example(b"\r\n\nGET /\n", True)
@example(b"HTTP/1.1 200 OK\n\nbody", False)
@example(b"GET / HTTP/1.1\n\r\n", False)
@example(b"HTTP/1.1 200\r\r\n\n", False)
def test_head_bounds_is_take_head(data: bytes, allow_09: bool) -> None:
    assert _kernel_head(data, allow_09) == _oracle_head(data, allow_09)


def _kernel_request(line: bytes) -> tuple[bytes, bytes, bytes | None] | None:
    buf, start, end = _array(line, b" x")
    method_end, uri_start, uri_end, v_start, v_end = kh.request_line(buf, start, end)
    if method_end == kh.NOT_A_REQUEST:
        return None
    version = None if v_start == kh.NO_VERSION else bytes(buf[v_start:v_end])
    return bytes(buf[start:method_end]), bytes(buf[uri_start:uri_end]), version


def _oracle_request(line: bytes) -> tuple[bytes, bytes, bytes | None] | None:
    m = REQUEST_LINE.match(line) if is_request_line(line) else None
    return None if m is None else (m.group(1), m.group(2), m.group(3))


@settings(max_examples=3000, deadline=None)
@given(_line)
@example(b"GET / HTTP/1.1")
@example(b"GET /a b HTTP/1.1  ")
@example(b"GET  /x HTTP/1.1 HTTP/2.0")
@example(b"GET HTTP/1.1")
@example(b"GET /  HTTP/1.")
@example(b"GET\t/ HTTP/1.1")
@example(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg / HTTP/1.1")
@example(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef / HTTP/1.1")
@example(b"GE /")
@example(b"GET /\rx HTTP/1.1\r")
def test_request_line_is_the_oracle(line: bytes) -> None:
    assert _kernel_request(line) == _oracle_request(line)


def _kernel_reply(line: bytes) -> tuple[bytes, int, bytes | None] | None:
    buf, start, end = _array(line, b"HTTP/1.1 ")
    version_end, code, r_start, r_end = kh.reply_line(buf, start, end)
    if version_end == kh.NOT_A_REPLY:
        return None
    return bytes(buf[start + 5 : version_end]), code, None if r_start == kh.NO_REASON else bytes(buf[r_start:r_end])


def _oracle_reply(line: bytes) -> tuple[bytes, int, bytes | None] | None:
    m = RESPONSE_LINE.match(line) if is_reply_line(line) else None
    return None if m is None else (m.group(1), int(m.group(2)), m.group(3))


@settings(max_examples=3000, deadline=None)
@given(_line)
@example(b"HTTP/1.1 200 OK")
@example(b"HTTP/1.1 200")
@example(b"HTTP/1.1 200 ")
@example(b"HTTP/1.1  404 Not Found")
@example(b"HTTP/1.1 2000")
@example(b"HTTP/1.1\t200 OK")
@example(b"HTTP/1. 200 OK")
@example(b"HTTP/1.1 20")
def test_reply_line_is_the_oracle(line: bytes) -> None:
    assert _kernel_reply(line) == _oracle_reply(line)


def _kernel_headers(block: bytes) -> list[tuple[str, str]] | None:
    buf, start, end = _array(block, b"\nA: b\n")
    out = np.zeros((kh.MAX_HEADERS, 4), np.int64)
    n = kh.header_lines(buf, start, end, out)
    if n == kh.HEADERS_LEFT_TO_PYTHON:
        return None
    return [(bytes(buf[ns:ne]).decode("ascii").upper(), bytes(buf[vs:ve]).decode("utf-8", "surrogateescape"))
            for ns, ne, vs, ve in out[:n].tolist()]


@settings(max_examples=3000, deadline=None)
@given(_soup)
@example(b"Host: a\r\nX-A:  b c \r\n")
@example(b"Host: a\r\n folded\r\n")
@example(b" lead: x\r\nHost: a")
@example(b"\xc3\xa9: x")
@example(b"x\xc3\xa9: \xc3\xa9")
@example(b"no colon\r\n:\r\n")
@example(b"A" + b":\n" * 129)
def test_header_lines_are_parse_headers(block: bytes) -> None:
    """Equal wherever the kernel reads the block; it leaves to Python only a folded line,
    a name with a byte above 0x7f or more than MAX_HEADERS lines."""
    got = _kernel_headers(block)
    want = parse_headers(block)
    if got is not None:
        assert got == want
        return
    named = folded = 0
    for line in block.split(b"\n"):
        folded = folded or (named > 0 and line[:1] in (b" ", b"\t"))
        if b":" in line:
            named += 1
            folded = folded or max(line.split(b":", 1)[0], default=0) >= 0x80
    assert folded or named > kh.MAX_HEADERS


def _oracle_fields(block: bytes) -> list[int]:
    """What `_requests` and `_start_body` take from the headers, in message_fields' layout."""
    headers = parse_headers(block)
    out = [kh.NO_HEADER] * 4 + [0] * 5 + [kh.NO_LENGTH]
    length: str | None = None
    for i, (name, value) in enumerate(headers):
        for f, wanted in enumerate(("HOST", "REFERER", "USER-AGENT", "ORIGIN")):
            if name == wanted and out[f] == kh.NO_HEADER:
                out[f] = i
        if name in ("FORWARDED", "X-FORWARDED-FOR", "X-FORWARDED-FROM", "CLIENT-IP", "VIA", "XROXY-CONNECTION",
                    "PROXY-CONNECTION"):
            out[kh.FIELD_PROXIED] += 1
        if name == "AUTHORIZATION":
            out[kh.FIELD_AUTHORIZATION] += 1
        elif name == "CONNECTION" and re.split(r'[\s()<>@,;:\\"/\[\]?=]', value, maxsplit=1)[0].lower() == "keep-alive":
            out[kh.FIELD_KEEP_ALIVE] = 1
        elif name == "CONTENT-TYPE" and value.lower().startswith("multipart/"):
            out[kh.FIELD_MULTIPART] = 1
        elif name == "TRANSFER-ENCODING" and "chunked" in value.lower():
            out[kh.FIELD_CHUNKED] = 1
        elif name == "CONTENT-LENGTH" and length is None:
            length = value
    if length is not None:
        try:
            n = int(length)
            out[kh.FIELD_CONTENT_LENGTH] = n if n >= 0 else kh.NO_LENGTH
        except ValueError:
            pass
    return out


_HEADER_PIECES = [b"Host", b"HOST", b"host", b"Referer", b"User-Agent", b"Origin", b"Connection", b"Authorization",
                  b"Content-Type", b"Transfer-Encoding", b"Content-Length", b"Via", b"X-Forwarded-For", b"X-A",
                  b": ", b":", b"\r\n", b"keep-alive", b"Keep-Alive", b"close", b", ", b"multipart/form-data",
                  b"text/html", b"chunked", b"gzip, ChUnKeD", b"0", b"12", b"007", b"+5", b"1_0", b"-1", b"\x1c",
                  b"99999999999999999999", b"\xe2\x84\xaa", b"\xc3\xa9", b"\xc2\xa0", b"\xd9\xa3", b" ",
                  b"Basic dXNlcjpwYXNz", b"\t"]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_HEADER_PIECES), max_size=30).map(b"".join))
@example(b"Host: a\r\nHost: b\r\nConnection: keep-alive\r\nContent-Length: 12\r\nContent-Length: 5")
@example(b"Transfer-Encoding: gzip, ChUnKeD\r\nContent-Type: Multipart/x")
@example(b"Connection: \xe2\x84\xaaeep-alive")  # the Kelvin sign lower-cases to 'k'
@example(b"Content-Length: +5\r\nContent-Length: 3")
@example(b"Connection: keep-alives")
@example(b"Content-Length: 99999999999999999999")
def test_message_fields_are_what_the_analyzer_reads(block: bytes) -> None:
    """Equal to the Python reading wherever the kernel reads the block; a Content-Length
    only int() reads is left to Python, and so are blocks where a deciding value (of
    Connection, Content-Type, Transfer-Encoding) is not ASCII."""
    buf, start, end = _array(block, b"\nHost: x\n")
    lines = np.zeros((kh.MAX_HEADERS, 4), np.int64)
    n = kh.header_lines(buf, start, end, lines)
    if n == kh.HEADERS_LEFT_TO_PYTHON:
        return
    got = np.zeros(kh.N_FIELDS, np.int64)
    status = kh.message_fields(buf, lines, n, got)
    if status == kh.FIELDS_LEFT_TO_PYTHON:
        deciding = [v for name, v in parse_headers(block)
                    if name in ("CONNECTION", "CONTENT-TYPE", "TRANSFER-ENCODING")]
        assert any(not v.isascii() for v in deciding)
        return
    want = _oracle_fields(block)
    fields = got.tolist()
    if fields[kh.FIELD_CONTENT_LENGTH] == kh.LENGTH_LEFT_TO_PYTHON:
        first = next(v for name, v in parse_headers(block) if name == "CONTENT-LENGTH")
        assert not (first.isascii() and first.isdigit()) or len(first) > kh.MAX_LENGTH_DIGITS
        fields[kh.FIELD_CONTENT_LENGTH] = want[kh.FIELD_CONTENT_LENGTH]
    assert fields == want


def _oracle_chunk_size(line: bytes) -> int:
    try:
        return int(line.strip().split(b";", 1)[0], 16)
    except ValueError:
        return kh.CHUNK_SIZE_BAD


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from([b"0", b"1", b"a", b"F", b"ff", b"10", b"g", b"x", b"0x", b"+", b"-", b"_", b";",
                                 b"ext=1", b" ", b"\t", b"\r", b"\x0b", b"\x1c", b"\xc3\xa9", b"fffffffffffffff"]),
                max_size=8).map(b"".join))
@example(b"1a ;name=value\r")
@example(b"0x1a")
@example(b"1_0")
@example(b";x")
@example(b"")
def test_chunk_size_is_what_the_analyzer_reads(line: bytes) -> None:
    """The size int() gives, or the stop where it raises; left to Python only where the
    text before ';' is not plain hex digits (or longer than MAX_CHUNK_DIGITS)."""
    buf, start, end = _array(line, b"1;\n")
    got = kh.chunk_size(buf, start, end)
    if got == kh.CHUNK_SIZE_LEFT_TO_PYTHON:
        text = line.strip().split(b";", 1)[0].strip()
        assert not all(c in b"0123456789abcdefABCDEF" for c in text) or len(text) > kh.MAX_CHUNK_DIGITS
        return
    assert got == _oracle_chunk_size(line)


_PY_STATES = {"head": kh.HEAD, "body": kh.BODY, "chunk_size": kh.CHUNK_SIZE, "chunk_data": kh.CHUNK_DATA,
              "chunk_crlf": kh.CHUNK_CRLF, "trailer": kh.TRAILER, "close": kh.CLOSE, "off": kh.OFF}
_BODY_PIECES = [b"1a\r\n", b"5\r\n", b"0\r\n", b"\r\n", b"\n", b"hello", b"x" * 30, b";ext=1", b" ", b"g\r\n",
                b"0x5\r\n", b"a", b"\r", b"5\r\nhello\r\n", b"0\r\n\r\n", b"trailer: 1\r\n", b"fffffffffffffffff\r\n"]


@settings(max_examples=1500, deadline=None)
@given(start=st.sampled_from([(kh.BODY, "body"), (kh.CHUNK_SIZE, "chunk_size"), (kh.CLOSE, "close")]),
       remaining=st.integers(1, 80), line_mode=st.booleans(),
       chunks=st.lists(st.lists(st.sampled_from(_BODY_PIECES), min_size=1, max_size=5).map(b"".join), max_size=6))
@example(start=(kh.CHUNK_SIZE, "chunk_size"), remaining=1, line_mode=False,
         chunks=[b"5\r\nhel", b"lo\r\n0\r", b"\n\r\nGET"])
@example(start=(kh.BODY, "body"), remaining=5, line_mode=True, chunks=[b"hello"])
@example(start=(kh.CHUNK_SIZE, "chunk_size"), remaining=1, line_mode=False, chunks=[b"x" * 4000, b"x" * 200])
@example(start=(kh.CHUNK_SIZE, "chunk_size"), remaining=1, line_mode=False, chunks=[b"x" * 4096, b"\n"])
def test_body_feed_reads_bodies_as_the_analyzer(start, remaining, line_mode, chunks) -> None:
    """Content-Length, chunked (sizes, extensions, resyncs, trailers, lines split across
    chunks) and close-delimited bodies, line mode's last line: where each chunk's reading
    stops, the state after it, the bytes counted and whether the body ended, as
    HttpAnalyzer._body gives them; left to Python only on a size line only int() reads."""
    state, name = start
    analyzer = HttpAnalyzer.__new__(HttpAnalyzer)  # _body reads no analyzer state
    side = Side(is_resp=True)
    side.trans = Transaction(0.0, 1, "GET", "/", "1.1")
    side.state, side.remaining, side.line_mode = name, remaining if name == "body" else 0, line_mode
    row = np.zeros(kh.SIDE_FIELDS, np.int64)
    row[kh.S_STATE], row[kh.S_REMAINING], row[kh.S_LINE_MODE] = state, side.remaining, line_mode
    line = np.zeros(2 * kh.LINE_MAX, np.uint8)
    for chunk in chunks:
        pos = 0
        while pos < len(chunk) and side.state not in ("off", "head"):
            pos = analyzer._body(side, chunk, pos)
        buf, begin, end = _array(chunk, b"\n5\r\n")
        got = kh.body_feed(row, line, buf, begin, end)
        if got == kh.BODY_LEFT_TO_PYTHON:
            return
        assert (got - begin, int(row[kh.S_STATE])) == (pos, _PY_STATES[side.state])
        if side.state != "off":
            assert row[kh.S_REMAINING] == side.remaining
        assert row[kh.S_COUNTED] == side.trans.response_body_len
        assert bool(row[kh.S_DONE]) == side.trans.complete
        if side.state in ("off", "head"):
            return
    if side.state == "close":  # the connection ended the body: its last line, in line mode
        analyzer._unterminated_last_line(side)
        kh_done = row.copy()
        kh.end_body(kh_done)
        assert kh_done[kh.S_COUNTED] == side.trans.response_body_len
