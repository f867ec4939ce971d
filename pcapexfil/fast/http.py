"""HTTP/1.x message heads read in the kernel: where a head ends, its first line's parts and
its header lines, as offsets into the bytes, with the rules of `identifiers.http`.

The first piece of HTTP in the kernels (issue 17). Each function answers what one piece of
`identifiers.http.HttpAnalyzer` answers in Python, on a uint8 array instead of bytes:

- `head_bounds`: `HttpAnalyzer._take_head` (blank lines between messages skipped, the
  first line without its trailing CRs, an HTTP/0.9 request line alone, else the header
  block up to the first empty line, `head_end`);
- `request_line`: `is_request_line` and `_REQUEST_LINE` together (method, target and
  version as `HttpAnalyzer._requests` takes them);
- `reply_line`: `is_reply_line` and `_RESPONSE_LINE` (version, status code, reason);
- `header_lines`: `_parse_headers` (each `name: value` line's name and value with ASCII
  blanks stripped). A folded line, a name with a non-ASCII byte (`str.upper` would map
  it by Unicode rules) or more than `MAX_HEADERS` lines are left to Python
  (`HEADERS_LEFT_TO_PYTHON`).

Python's functions are the oracle (tests/test_fast_http.py).
"""

from __future__ import annotations

import numpy as np

from pcapexfil.jit import njit

CR, LF, SPACE, TAB, COLON = 0x0D, 0x0A, 0x20, 0x09, 0x3A

# head_bounds' status.
HEAD_INCOMPLETE = 0  # no complete head yet (the bytes before `first_start` are blank lines)
HEAD_COMPLETE = 1  # a first line and a header block
HEAD_HTTP09 = 2  # a request line without `HTTP/` (allow_09): the line alone

# header_lines: the block is left to `_parse_headers`.
HEADERS_LEFT_TO_PYTHON = -1
MAX_HEADERS = 128

# request_line: no version (HTTP/0.9), or the line is not a request `_requests` takes.
NO_VERSION = -1
NOT_A_REQUEST = -1
# reply_line: the line is not a reply `_feed_resp` takes; the reply has no reason.
NOT_A_REPLY = -1
NO_REASON = -1

MAX_METHOD = 32  # _REQUEST_LINE's method: a letter and up to 31 more
MIN_09_METHOD = 3  # identifiers.http._MIN_09_METHOD


def _table(chars: bytes) -> np.ndarray:
    out = np.zeros(256, np.bool_)
    out[np.frombuffer(chars, np.uint8)] = True
    return out


_ALNUM = bytes(c for c in range(128) if chr(c).isalnum())
# identifiers.http._TOKEN_CHARS (HTTP.cc is_HTTP_token_char).
TOKEN_CHARS = _table(bytes(c for c in range(32, 127) if c not in b'()<>@,;:\\"/[]?={} \t'))
# identifiers.http._URI_CHARS (is_reserved_URI_char, is_unreserved_URI_char, '%', NUL).
URI_CHARS = _table(b":/?#[]@!$&'()*+,;=" + b"-_.!~*'()" + b"%\x00" + _ALNUM)
# _REQUEST_LINE's method characters after the first letter.
METHOD_CHARS = _table(_ALNUM + b"_.!#$%&'*+^`|~-")
LETTERS = _table(bytes(c for c in range(128) if chr(c).isalpha()))
DIGITS = _table(b"0123456789")
# What regex `\s` and identifiers.http._ASCII_SPACE hold (bytes.strip's set).
ASCII_SPACE = _table(b" \t\n\r\x0b\x0c")
BLANKS = _table(b" \t")


HTTP_SLASH = np.frombuffer(b"HTTP/", np.uint8).copy()
LF_CRLF = np.frombuffer(b"\n\r\n", np.uint8).copy()
LF_LF = np.frombuffer(b"\n\n", np.uint8).copy()


@njit(cache=True, _nrt=False)
def copy_bytes(dst: np.ndarray, at: int, src: np.ndarray, start: int, n: int) -> None:
    """dst[at:at + n] = src[start:start + n] (a slice assignment needs numba's runtime,
    which the table's kernels run without)."""
    for k in range(n):
        dst[at + k] = src[start + k]


@njit(cache=True, _nrt=False)
def find(buf: np.ndarray, start: int, end: int, pattern: np.ndarray) -> int:
    """bytes.find(pattern, start, end): the first position, or -1."""
    n = len(pattern)
    for i in range(start, end - n + 1):
        j = 0
        while j < n and buf[i + j] == pattern[j]:
            j += 1
        if j == n:
            return i
    return -1


@njit(cache=True, _nrt=False)
def blank_lines_end(buf: np.ndarray, start: int, end: int) -> int:
    """identifiers.http_tunnel.blank_lines_end: where the empty lines (LF or CRLF) at buf[start:]
    end (the analyzer ignores them where a message starts)."""
    p = start
    while p < end:
        if buf[p] == LF:
            p += 1
        elif buf[p] == CR and p + 1 < end and buf[p + 1] == LF:
            p += 2
        else:
            break
    return p


@njit(cache=True, _nrt=False)
def head_bounds(buf: np.ndarray, start: int, end: int, allow_09: bool) -> tuple[int, int, int, int, int, int]:
    """The head at the start of buf[start:end]: (status, first_start, first_end,
    headers_start, headers_end, head_end). The first line is buf[first_start:first_end]
    (trailing CRs dropped), the header lines buf[headers_start:headers_end] (empty for a
    one-line block), and the head takes the bytes up to `head_end`. When incomplete, only
    `first_start` (after the blank lines) is meaningful."""
    p = blank_lines_end(buf, start, end)
    first_nl = -1
    for i in range(p, end):
        if buf[i] == LF:
            first_nl = i
            break
    if first_nl < 0:
        return HEAD_INCOMPLETE, p, p, p, p, p
    first_end = first_nl
    while first_end > p and buf[first_end - 1] == CR:
        first_end -= 1
    if allow_09 and find(buf, p, first_end, HTTP_SLASH) < 0:
        return HEAD_HTTP09, p, first_end, first_nl + 1, first_nl + 1, first_nl + 1
    # head_end: the first "\n\r\n", or a "\n\n" before it.
    crlf = find(buf, p, end, LF_CRLF)
    lf = find(buf, p, end if crlf < 0 else crlf + 1, LF_LF)
    nl = lf if lf >= 0 else crlf
    if nl < 0:
        return HEAD_INCOMPLETE, p, p, p, p, p
    block_end = nl - 1 if nl > p and buf[nl - 1] == CR else nl
    blank_end = nl + 2 if nl == lf else nl + 3
    headers_end = max(block_end, first_nl + 1)
    return HEAD_COMPLETE, p, first_end, first_nl + 1, headers_end, blank_end


@njit(cache=True, _nrt=False)
def takes_request(buf: np.ndarray, start: int, end: int) -> bool:
    """identifiers.http.is_request_line."""
    method = start
    while method < end and TOKEN_CHARS[buf[method]]:
        method += 1
    if method == start:
        return False
    rest = method
    while rest < end and BLANKS[buf[rest]]:
        rest += 1
    if rest == method:
        return False  # no blank after the method
    uri_end = rest
    while uri_end < end and URI_CHARS[buf[uri_end]]:
        uri_end += 1
    if uri_end == end:
        has_version = find(buf, rest, min(end, rest + 5), HTTP_SLASH) == rest
    else:
        has_version = find(buf, uri_end, end, HTTP_SLASH) >= 0
    has_uri = end - rest > 1 or uri_end - rest == 1
    return has_version or (method - start >= MIN_09_METHOD and has_uri)


@njit(cache=True, _nrt=False)
def _version_end(buf: np.ndarray, start: int, end: int) -> int:
    """Where `\\d+\\.\\d+` starting at `start` ends, or -1."""
    i = start
    while i < end and DIGITS[buf[i]]:
        i += 1
    if i == start or i >= end or buf[i] != 0x2E:
        return -1
    j = i + 1
    while j < end and DIGITS[buf[j]]:
        j += 1
    return j if j > i + 1 else -1


@njit(cache=True, _nrt=False)
def request_line(buf: np.ndarray, start: int, end: int) -> tuple[int, int, int, int, int]:
    """The request line buf[start:end] as `_requests` takes it: (method_end, uri_start,
    uri_end, version_start, version_end); the method starts the line; NO_VERSION in both
    version fields for HTTP/0.9. NOT_A_REQUEST in every field when is_request_line or
    _REQUEST_LINE rejects it."""
    if not takes_request(buf, start, end):
        return NOT_A_REQUEST, NOT_A_REQUEST, NOT_A_REQUEST, NOT_A_REQUEST, NOT_A_REQUEST
    return request_match(buf, start, end)


@njit(cache=True, _nrt=False)
def request_match(buf: np.ndarray, start: int, end: int) -> tuple[int, int, int, int, int]:
    """identifiers.http.REQUEST_LINE alone on buf[start:end], fields as `request_line`."""
    no = (NOT_A_REQUEST, NOT_A_REQUEST, NOT_A_REQUEST, NOT_A_REQUEST, NOT_A_REQUEST)
    # _REQUEST_LINE: ^([A-Za-z][method chars]{0,31}) +(\S.*?)(?: +HTTP/(\d+\.\d+))? *$
    if not LETTERS[buf[start]]:
        return no
    method_end = start + 1
    while method_end < end and METHOD_CHARS[buf[method_end]]:
        method_end += 1
    if method_end - start > MAX_METHOD or method_end >= end or buf[method_end] != SPACE:
        return no
    uri_start = method_end
    while uri_start < end and buf[uri_start] == SPACE:
        uri_start += 1
    if uri_start >= end or ASCII_SPACE[buf[uri_start]]:
        return no
    # The lazy target ends where the rest first matches the optional version and the
    # spaces: at the spaces before a last token "HTTP/d.d" (the target's first byte is no
    # space, so they come after it), else at the trailing spaces.
    last = end
    while buf[last - 1] == SPACE:
        last -= 1
    token = last
    while token > uri_start and buf[token - 1] != SPACE:
        token -= 1
    if token > uri_start and find(buf, token, last, HTTP_SLASH) == token \
            and _version_end(buf, token + 5, last) == last:
        spaces = token - 1
        while buf[spaces - 1] == SPACE:
            spaces -= 1
        return method_end, uri_start, spaces, token + 5, last
    return method_end, uri_start, last, NO_VERSION, NO_VERSION


@njit(cache=True, _nrt=False)
def takes_reply(buf: np.ndarray, start: int, end: int) -> bool:
    """identifiers.http.is_reply_line: `HTTP/[^ \\t]*[ \\t]+[^ \\t]..` (DOTALL)."""
    if find(buf, start, min(end, start + 5), HTTP_SLASH) != start:
        return False
    i = start + 5
    while i < end and not BLANKS[buf[i]]:
        i += 1
    j = i
    while j < end and BLANKS[buf[j]]:
        j += 1
    return j > i and j + 3 <= end


@njit(cache=True, _nrt=False)
def reply_line(buf: np.ndarray, start: int, end: int) -> tuple[int, int, int, int]:
    """The reply line buf[start:end] as `_feed_resp` takes it: (version_end, code,
    reason_start, reason_end); the version starts after `HTTP/`; NO_REASON in both reason
    fields when there is none. NOT_A_REPLY in every field when is_reply_line or
    _RESPONSE_LINE rejects it."""
    no = (NOT_A_REPLY, NOT_A_REPLY, NOT_A_REPLY, NOT_A_REPLY)
    if not takes_reply(buf, start, end):
        return no
    # _RESPONSE_LINE: ^HTTP/(\d+\.\d+) +(\d{3})(?: (.*))?$
    version_end = _version_end(buf, start + 5, end)
    if version_end < 0 or version_end >= end or buf[version_end] != SPACE:
        return no
    code_start = version_end
    while code_start < end and buf[code_start] == SPACE:
        code_start += 1
    if code_start + 3 > end:
        return no
    code = 0
    for k in range(code_start, code_start + 3):
        if not DIGITS[buf[k]]:
            return no
        code = code * 10 + (buf[k] - 0x30)
    after = code_start + 3
    if after == end:
        return version_end, code, NO_REASON, NO_REASON
    if buf[after] != SPACE:
        return no
    return version_end, code, after + 1, end


@njit(cache=True, _nrt=False)
def header_lines(buf: np.ndarray, start: int, end: int, out: np.ndarray) -> int:
    """The header lines of buf[start:end] as `_parse_headers` has them: row k of `out`
    (shape (MAX_HEADERS, 4)) is (name_start, name_end, value_start, value_end), name and
    value stripped of ASCII blanks; returns how many, or HEADERS_LEFT_TO_PYTHON."""
    n = 0
    line = start
    while line <= end:
        line_end = line
        while line_end < end and buf[line_end] != LF:
            line_end += 1
        if n > 0 and line < line_end and BLANKS[buf[line]]:
            return HEADERS_LEFT_TO_PYTHON  # obsolete line folding joins it to the last value
        colon = line
        while colon < line_end and buf[colon] != COLON:
            colon += 1
        if colon < line_end:
            ns, ne = line, colon
            while ns < ne and ASCII_SPACE[buf[ns]]:
                ns += 1
            while ne > ns and ASCII_SPACE[buf[ne - 1]]:
                ne -= 1
            for k in range(ns, ne):
                if buf[k] >= 0x80:
                    return HEADERS_LEFT_TO_PYTHON  # str.upper maps it by Unicode rules
            vs, ve = colon + 1, line_end
            while vs < ve and ASCII_SPACE[buf[vs]]:
                vs += 1
            while ve > vs and ASCII_SPACE[buf[ve - 1]]:
                ve -= 1
            if n == MAX_HEADERS:
                return HEADERS_LEFT_TO_PYTHON
            out[n, 0], out[n, 1], out[n, 2], out[n, 3] = ns, ne, vs, ve
            n += 1
        line = line_end + 1
    return n


# message_fields: what `HttpAnalyzer._requests` and `_start_body` read from the header
# lines, at these indexes of the output row.
FIELD_HOST, FIELD_REFERER, FIELD_USER_AGENT, FIELD_ORIGIN = 0, 1, 2, 3  # the first such line's index
FIELD_KEEP_ALIVE = 4  # a Connection value whose first token is keep-alive
FIELD_PROXIED = 5  # how many of HTTP::proxy_headers
FIELD_AUTHORIZATION = 6  # how many Authorization lines (Python reads a Basic one's user)
FIELD_MULTIPART = 7  # a Content-Type of multipart/... (the body is read in line mode)
FIELD_CHUNKED = 8  # a Transfer-Encoding naming chunked
FIELD_CONTENT_LENGTH = 9  # the first Content-Length, NO_LENGTH or LENGTH_LEFT_TO_PYTHON
N_FIELDS = 10
NO_HEADER = -1
NO_LENGTH = -1  # none, or one int() rejects
LENGTH_LEFT_TO_PYTHON = -2  # one only int() reads (a sign, '_', other blanks, > 18 digits)
MAX_LENGTH_DIGITS = 18
# message_fields' answer when a value that decides something holds a non-ASCII byte: the
# Python side lower-cases and splits decoded text by Unicode rules (the Kelvin sign lower-
# cases to 'k').
FIELDS_LEFT_TO_PYTHON = -1


def _names(*names: str) -> np.ndarray:
    """Header names, NUL-padded rows of one uint8 array (numba reads them as constants)."""
    width = max(len(n) for n in names)
    out = np.zeros((len(names), width), np.uint8)
    for i, name in enumerate(names):
        out[i, : len(name)] = np.frombuffer(name.encode(), np.uint8)
    return out


# The names message_fields tells apart: the first four are FIELD_HOST .. FIELD_ORIGIN.
NAMES = _names("HOST", "REFERER", "USER-AGENT", "ORIGIN", "CONNECTION", "AUTHORIZATION", "CONTENT-TYPE",
               "TRANSFER-ENCODING", "CONTENT-LENGTH")
NAME_CONNECTION, NAME_AUTHORIZATION, NAME_CONTENT_TYPE, NAME_TRANSFER_ENCODING, NAME_CONTENT_LENGTH = 4, 5, 6, 7, 8
# identifiers.http._PROXY_HEADERS (Zeek's HTTP::proxy_headers).
PROXY_NAMES = _names("FORWARDED", "X-FORWARDED-FOR", "X-FORWARDED-FROM", "CLIENT-IP", "VIA", "XROXY-CONNECTION",
                     "PROXY-CONNECTION")
KEEP_ALIVE = np.frombuffer(b"keep-alive", np.uint8).copy()
MULTIPART = np.frombuffer(b"multipart/", np.uint8).copy()
CHUNKED = np.frombuffer(b"chunked", np.uint8).copy()
# identifiers.http._MIME_TOKEN_END on ASCII: str `\s` (with \x1c-\x1f) and mime tspecials.
TOKEN_END = _table(b' \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f()<>@,;:\\"/[]?=')


@njit(cache=True, _nrt=False)
def _lower(byte: int) -> int:
    return byte + 32 if 0x41 <= byte <= 0x5A else byte


@njit(cache=True, _nrt=False)
def _is_name(buf: np.ndarray, start: int, end: int, names: np.ndarray, row: int) -> bool:
    """Whether buf[start:end] is names[row] in any case (names are upper case)."""
    width = names.shape[1]
    n = end - start
    if n > width or (n < width and names[row, n] != 0):
        return False
    for k in range(n):
        byte = buf[start + k]
        if (byte - 32 if 0x61 <= byte <= 0x7A else byte) != names[row, k]:
            return False
    return True


@njit(cache=True, _nrt=False)
def _ascii(buf: np.ndarray, start: int, end: int) -> bool:
    for k in range(start, end):
        if buf[k] >= 0x80:
            return False
    return True


@njit(cache=True, _nrt=False)
def _starts_lower(buf: np.ndarray, start: int, end: int, word: np.ndarray) -> bool:
    if end - start < len(word):
        return False
    for k in range(len(word)):
        if _lower(buf[start + k]) != word[k]:
            return False
    return True


@njit(cache=True, _nrt=False)
def message_fields(buf: np.ndarray, lines: np.ndarray, n: int, out: np.ndarray) -> int:
    """What the header lines `lines[:n]` (from `header_lines`) decide, into `out` (N_FIELDS,
    see FIELD_*), as `HttpAnalyzer._requests` and `_start_body` read them. Returns 0, or
    FIELDS_LEFT_TO_PYTHON where a deciding value holds a non-ASCII byte."""
    for f in range(N_FIELDS):
        out[f] = 0
    for f in range(FIELD_ORIGIN + 1):
        out[f] = NO_HEADER
    out[FIELD_CONTENT_LENGTH] = NO_LENGTH
    length_seen = False
    for i in range(n):
        ns, ne, vs, ve = lines[i, 0], lines[i, 1], lines[i, 2], lines[i, 3]
        for f in range(FIELD_ORIGIN + 1):
            if out[f] == NO_HEADER and _is_name(buf, ns, ne, NAMES, f):
                out[f] = i
        for p in range(PROXY_NAMES.shape[0]):
            if _is_name(buf, ns, ne, PROXY_NAMES, p):
                out[FIELD_PROXIED] += 1
        if _is_name(buf, ns, ne, NAMES, NAME_AUTHORIZATION):
            out[FIELD_AUTHORIZATION] += 1
        elif _is_name(buf, ns, ne, NAMES, NAME_CONNECTION):
            end = vs
            while end < ve and buf[end] < 0x80 and not TOKEN_END[buf[end]]:
                end += 1
            if end < ve and buf[end] >= 0x80:
                return FIELDS_LEFT_TO_PYTHON
            if end - vs == len(KEEP_ALIVE) and _starts_lower(buf, vs, end, KEEP_ALIVE):
                out[FIELD_KEEP_ALIVE] = 1
        elif _is_name(buf, ns, ne, NAMES, NAME_CONTENT_TYPE):
            if not _ascii(buf, vs, min(ve, vs + len(MULTIPART))):
                return FIELDS_LEFT_TO_PYTHON
            if _starts_lower(buf, vs, ve, MULTIPART):
                out[FIELD_MULTIPART] = 1
        elif _is_name(buf, ns, ne, NAMES, NAME_TRANSFER_ENCODING):
            if not _ascii(buf, vs, ve):
                return FIELDS_LEFT_TO_PYTHON
            for k in range(vs, ve - len(CHUNKED) + 1):
                if _starts_lower(buf, k, ve, CHUNKED):
                    out[FIELD_CHUNKED] = 1
                    break
        elif _is_name(buf, ns, ne, NAMES, NAME_CONTENT_LENGTH) and not length_seen:
            length_seen = True
            value = 0
            for k in range(vs, ve):
                if not DIGITS[buf[k]] or k - vs >= MAX_LENGTH_DIGITS:
                    value = LENGTH_LEFT_TO_PYTHON
                    break
                value = value * 10 + (buf[k] - 0x30)
            out[FIELD_CONTENT_LENGTH] = NO_LENGTH if ve == vs else value
    return 0


# chunk_size: a line int() rejects (the analyzer stops reading the body), or one only
# int() reads (a sign, a 0x prefix, '_', more than MAX_CHUNK_DIGITS digits).
CHUNK_SIZE_BAD = -1
CHUNK_SIZE_LEFT_TO_PYTHON = -2
MAX_CHUNK_DIGITS = 15  # below 2^60
HEX = _table(b"0123456789abcdefABCDEF")


@njit(cache=True, _nrt=False)
def chunk_size(buf: np.ndarray, start: int, end: int) -> int:
    """A chunked body's size line buf[start:end] (its LF excluded) as
    `HttpAnalyzer._chunk_size` reads it: `int(line.strip().split(b";")[0], 16)`."""
    while start < end and ASCII_SPACE[buf[start]]:
        start += 1
    stop = start
    while stop < end and buf[stop] != 0x3B:  # ';' starts an extension
        stop += 1
    while stop > start and ASCII_SPACE[buf[stop - 1]]:
        stop -= 1
    if stop == start:
        return CHUNK_SIZE_BAD  # int(b"", 16)
    if stop - start > MAX_CHUNK_DIGITS:
        return CHUNK_SIZE_LEFT_TO_PYTHON
    size = 0
    for k in range(start, stop):
        byte = buf[k]
        if not HEX[byte]:
            return CHUNK_SIZE_LEFT_TO_PYTHON
        size = size * 16 + (byte - 0x30 if byte <= 0x39 else (byte | 0x20) - 0x57)
    return size


# A body's reading state (HttpAnalyzer's `_Side.state` past the head), as `body_feed` keeps
# it in a row of SIDE_FIELDS int64s and a line buffer of LINE_MAX + 1 bytes.
HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, CLOSE, OFF = range(8)
S_STATE, S_REMAINING, S_LINE_LEN, S_LINE_MODE, S_TAIL_LEN, S_TAIL, S_COUNTED, S_DONE = range(8)
SIDE_FIELDS = 8
LINE_MAX = 4096  # a size line longer than this stops the reading (HttpAnalyzer._body)
BODY_LEFT_TO_PYTHON = -1


@njit(cache=True, _nrt=False)
def _count(side: np.ndarray, buf: np.ndarray, pos: int, n: int) -> None:
    """HttpAnalyzer._add: n body bytes at buf[pos:], and in line mode the last two kept."""
    if n <= 0:
        return
    if side[S_LINE_MODE]:
        for k in range(max(pos, pos + n - 2), pos + n):
            side[S_TAIL] = ((side[S_TAIL] << 8) | buf[k]) & 0xFFFF
            side[S_TAIL_LEN] = min(side[S_TAIL_LEN] + 1, 2)
    side[S_COUNTED] += n


@njit(cache=True, _nrt=False)
def end_body(side: np.ndarray) -> None:
    """HttpAnalyzer._body_done: a last line without its CRLF in line mode counts two more."""
    if side[S_LINE_MODE] and side[S_TAIL_LEN] and (side[S_TAIL] & 0xFF) != LF:
        side[S_COUNTED] += 2
        side[S_TAIL], side[S_TAIL_LEN] = (CR << 8) | LF, 2
    side[S_LINE_MODE] = 0
    side[S_STATE] = HEAD
    side[S_DONE] = 1


@njit(cache=True, _nrt=False)
def _size_line(side: np.ndarray, line: np.ndarray, start: int, end: int) -> bool:
    """HttpAnalyzer._chunk_size on the size line; False where it is left to Python."""
    size = chunk_size(line, start, end)
    if size == CHUNK_SIZE_LEFT_TO_PYTHON:
        return False
    if size == CHUNK_SIZE_BAD:
        side[S_STATE] = OFF
    elif size == 0:
        side[S_STATE] = TRAILER
    else:
        side[S_STATE], side[S_REMAINING] = CHUNK_DATA, size
    return True


@njit(cache=True, _nrt=False)
def body_feed(side: np.ndarray, line: np.ndarray, buf: np.ndarray, pos: int, end: int) -> int:
    """HttpAnalyzer._body over buf[pos:end] until the body ends (HEAD: where the next head
    begins), reading stops (OFF) or the bytes do; returns where it stopped, or
    BODY_LEFT_TO_PYTHON (a size line only int() reads, or one longer than `line` keeps). Counted
    bytes are added to side[S_COUNTED]; side[S_DONE] is set when the body ended."""
    while pos < end and side[S_STATE] != HEAD and side[S_STATE] != OFF:
        state = side[S_STATE]
        if state == CLOSE:
            _count(side, buf, pos, end - pos)
            pos = end
        elif state == BODY or state == CHUNK_DATA:
            n = min(side[S_REMAINING], end - pos)
            _count(side, buf, pos, n)
            side[S_REMAINING] -= n
            pos += n
            if side[S_REMAINING] == 0:
                if state == BODY:
                    end_body(side)
                else:
                    side[S_STATE] = CHUNK_CRLF
        else:
            nl = pos
            while nl < end and buf[nl] != LF:
                nl += 1
            held = side[S_LINE_LEN]
            if nl == end:
                if held + end - pos > LINE_MAX:
                    side[S_STATE] = OFF
                elif held + end - pos > line.shape[0]:
                    return BODY_LEFT_TO_PYTHON  # longer than this line buffer keeps
                else:
                    copy_bytes(line, held, buf, pos, end - pos)
                    side[S_LINE_LEN] = held + end - pos
                return end
            if held:
                if held + nl - pos > line.shape[0]:
                    return BODY_LEFT_TO_PYTHON
                copy_bytes(line, held, buf, pos, nl - pos)
                text, start, stop = line, 0, held + nl - pos
            else:
                text, start, stop = buf, pos, nl
            side[S_LINE_LEN] = 0
            pos = nl + 1
            while start < stop and ASCII_SPACE[text[start]]:
                start += 1
            while stop > start and ASCII_SPACE[text[stop - 1]]:
                stop -= 1
            if state == CHUNK_CRLF:
                side[S_STATE] = CHUNK_SIZE
                if stop > start and not _size_line(side, text, start, stop):  # data ran past its size
                    return BODY_LEFT_TO_PYTHON
            elif state == CHUNK_SIZE:
                if not _size_line(side, text, start, stop):
                    return BODY_LEFT_TO_PYTHON
            elif stop == start:  # TRAILER: an empty line ends it
                end_body(side)
    return pos
