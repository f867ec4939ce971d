"""One HTTP connection's transactions read in the kernel: `identifiers.http.HttpAnalyzer`'s
state machine over each direction's in-order chunks, writing what Python must do with them
as a few events per transaction instead of handing it the chunks (issue 17).

`http_chunk` takes one chunk of one direction, as `HttpAnalyzer._feed` does, for a
connection the analyzer is attached to by its port. It writes `HE_*` events (rows of
`EVENT_FIELDS` int64s) and copies the bytes they name (method, URI, header values, reason)
into an arena; `apply_events` has the analyzer do what they say through its `kernel_*`
methods: the transactions and their rows, the weirds, the service, exactly as it would have
on the chunks.

Whatever it does not read the analyzer's way it leaves to Python (`LEFT`): the chunk's
effects are rolled back, both directions' states are kept as they were before it, and
`resume` rebuilds the analyzer's state from them (`HttpAnalyzer.kernel_resume`); the chunk
and all after it then go to Python. That is: a head longer than the head buffer, a folded
header line, a header name or deciding value with a non-ASCII byte, a length or chunk size
only Python's int() reads, more transactions than `PENDING_MAX` waiting for responses or
`MAX_TRANSACTIONS_IN_KERNEL` in all (Python trims its list), a first request line that is
neither plausible nor implausible yet at `MAX_REQUEST_LINE`, the 200 that opens a CONNECT
tunnel (HTTP in the tunnel is read in Python: `HttpAnalyzer._open_tunnel`). The oracle test is
tests/test_http_machine.py.

A connection's state is five arrays the caller keeps: `state` (N_STATE int64s), `sides`
(two `fast.http` body-reading rows: orig, resp), `lines` (their size-line buffers),
`heads` (their head buffers, whose width is the longest head kept; none at all until a
head must be kept: NEED_HEAD) and `pending` (the kind of each transaction waiting for its
response).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from pcapexfil.fast.http import (
    BODY,
    BODY_LEFT_TO_PYTHON,
    CHUNK_CRLF,
    CHUNK_DATA,
    CHUNK_SIZE,
    CLOSE,
    FIELD_AUTHORIZATION,
    FIELD_CHUNKED,
    FIELD_CONTENT_LENGTH,
    FIELD_KEEP_ALIVE,
    FIELD_MULTIPART,
    FIELD_ORIGIN,
    FIELD_PROXIED,
    FIELDS_LEFT_TO_PYTHON,
    HEAD,
    HEAD_INCOMPLETE,
    HEADERS_LEFT_TO_PYTHON,
    LENGTH_LEFT_TO_PYTHON,
    LETTERS,
    LF,
    CR,
    MAX_HEADERS,
    MAX_METHOD,
    METHOD_CHARS,
    N_FIELDS,
    NO_HEADER,
    NO_LENGTH,
    NO_REASON,
    NO_VERSION,
    NOT_A_REPLY,
    NOT_A_REQUEST,
    OFF,
    S_COUNTED,
    S_DONE,
    S_LINE_LEN,
    S_LINE_MODE,
    S_REMAINING,
    S_STATE,
    S_TAIL,
    S_TAIL_LEN,
    SIDE_FIELDS,
    SPACE,
    TRAILER,
    blank_lines_end,
    body_feed,
    copy_bytes,
    end_body,
    head_bounds,
    header_lines,
    message_fields,
    reply_line,
    request_match,
    takes_request,
    takes_reply,
)
from pcapexfil.flow.ports import IGNORE_VIOLATIONS_AFTER
from pcapexfil.identifiers.http import (
    MAX_REQUEST_LINE,
    MAX_TRANSACTIONS,
    HttpAnalyzer,
    KernelSide,
    parse_headers,
)
from pcapexfil.identifiers.http_tunnel import CONNECT_METHOD
from pcapexfil.jit import njit

if TYPE_CHECKING:
    from pcapexfil.hooks import ConnView

ORIG, RESP = 0, 1

# A connection's state row.
K_IS_HTTP = 0  # UNDECIDED, 0 or 1 (HttpAnalyzer's is_http)
K_DONE = 1  # the analyzer gave up (HE_STOP written)
K_KEEP_ALIVE = 2
K_REQUESTS = 3  # requests parsed: the last one's trans_depth
K_NEXT_RESP = 4  # how many transactions have their final response
K_LEFT = 5  # left to Python (HE_LEFT written): the kernel reads no more of it
K_TRANS = 6  # + side: the depth of the transaction whose body the side reads (0: none)
K_HEAD_START = 8  # + side: the head buffer holds heads[side, start:len]
K_HEAD_LEN = 10  # + side
K_CONNECT = 12  # HttpAnalyzer's connect_request (HTTP.cc's): 0 or 1
N_STATE = 13
UNDECIDED = -1

# The kind of a transaction waiting for its response (pending[depth % PENDING_MAX]).
T_HEAD, T_09 = 1, 2
PENDING_MAX = 16
# Python trims its list of transactions at MAX_TRANSACTIONS (HttpAnalyzer._trim): a
# connection with this many requests goes to Python before it gets there.
MAX_TRANSACTIONS_IN_KERNEL = MAX_TRANSACTIONS - PENDING_MAX

# Events: kind and the transaction's depth, then the kind's fields. Spans are (start, end)
# into the arena, NO_SPAN when absent.
# HE_REQUEST (the first one confirms the analyzer): E_METHOD, E_URI, E_VERSION, E_HOST ..
# E_ORIGIN, E_BLOCK (the header lines, where Python must parse them itself).
SWITCHING_PROTOCOLS = 101  # a reply that may upgrade the connection (HTTP.cc ReplyMade)
HE_REQUEST = 0
HE_INFO = 1  # a 1xx response: E_CODE, E_REASON
HE_REPLY = 2  # the final response: E_CODE, E_REASON, E_VERSION
HE_REPLY_09 = 3  # the response to an HTTP/0.9 request (no head)
HE_BODY = 4  # E_SIDE's body bytes counted for the transaction since the last HE_BODY: E_BYTES
HE_DONE = 5  # the response is complete: the transaction is logged
HE_WEIRD = 6  # E_CODE: WEIRD_NAMES
HE_VIOLATION = 7  # E_SIZE: the stream's size (services.base.analyzer_violation decides)
HE_STOP = 8  # the analyzer gives up on the connection
HE_LEFT = 9  # the rest is Python's (`resume`): E_NEXT_SEQ, E_DELIVERED, E_BROKEN
E_KIND, E_DEPTH = 0, 1
E_METHOD, E_URI, E_VERSION, E_HOST, E_REFERER, E_USER_AGENT, E_ORIGIN, E_BLOCK = 2, 4, 6, 8, 10, 12, 14, 16
E_CODE, E_REASON = 2, 3
E_SIDE, E_BYTES = 2, 3
E_SIZE = 2
# HE_LEFT: each direction's next sequence number, bytes delivered and whether a cut ended
# it (fast.http_lane), the originator's first.
E_NEXT_SEQ, E_DELIVERED, E_BROKEN = 2, 4, 6
EVENT_FIELDS = 18
NO_SPAN = -1
W_BAD_REQUEST, W_BAD_REPLY = 0, 1
WEIRD_NAMES = ("bad_HTTP_request", "bad_HTTP_reply")

# The output's counters (out_n).
O_EVENTS, O_ARENA = 0, 1

# http_chunk's answer.
FED = 0  # the chunk is read
NO_ROOM = 1  # the events or the arena are full: nothing of the chunk is kept; again after draining
LEFT = 2  # left to Python (HE_LEFT written): nothing of the chunk is kept
NEED_HEAD = 3  # a head must be kept and `heads` has no room at all: nothing is kept; again with a head buffer

ZERO, NINE, DOT = 0x30, 0x39, 0x2E


def new_state() -> np.ndarray:
    """A connection's state row before its first chunk, attached by its port."""
    state = np.zeros(N_STATE, np.int64)
    state[K_IS_HTTP] = UNDECIDED
    return state


@njit(cache=True, _nrt=False)
def _event(events, out_n, kind, depth):
    """A new event row's index, or -1 when full."""
    k = out_n[O_EVENTS]
    if k >= events.shape[0]:
        return -1
    out_n[O_EVENTS] = k + 1
    for f in range(EVENT_FIELDS):
        events[k, f] = NO_SPAN
    events[k, E_KIND] = kind
    events[k, E_DEPTH] = depth
    return k


@njit(cache=True, _nrt=False)
def _span(events, k, field, arena, out_n, src, start, end):
    """src[start:end] copied to the arena, its span into events[k, field:field + 2];
    False when the arena is full."""
    a = out_n[O_ARENA]
    n = end - start
    if a + n > arena.shape[0]:
        return False
    copy_bytes(arena, a, src, start, n)
    out_n[O_ARENA] = a + n
    events[k, field] = a
    events[k, field + 1] = a + n
    return True


@njit(cache=True, _nrt=False)
def _flush_counts(state, sides, events, out_n, side):
    """HE_BODY: the bytes the side counted for its transaction since the last one."""
    n = sides[side, S_COUNTED]
    if n == 0:
        return True
    k = _event(events, out_n, HE_BODY, state[K_TRANS + side])
    if k < 0:
        return False
    events[k, E_SIDE] = side
    events[k, E_BYTES] = n
    sides[side, S_COUNTED] = 0
    return True


@njit(cache=True, _nrt=False)
def _done(state, sides, events, out_n, depth):
    """HE_DONE (the transaction is logged), after both sides' counts: a request body may
    still be counting when its response completes."""
    return (_flush_counts(state, sides, events, out_n, ORIG) and _flush_counts(state, sides, events, out_n, RESP)
            and _event(events, out_n, HE_DONE, depth) >= 0)


@njit(cache=True, _nrt=False)
def _persistent(src, start, end):
    """identifiers.http._PERSISTENT on a version: above 1.0 keeps the connection alive."""
    if end - start < 3 or src[start + 1] != DOT or not (ZERO <= src[start + 2] <= NINE):
        return False
    return (0x32 <= src[start] <= NINE) or (src[start] == 0x31 and src[start + 2] != ZERO)


@njit(cache=True, _nrt=False)
def _is_word(src, start, end, word):
    """src[start:end] is `word` (upper case) in any case."""
    if end - start != len(word):
        return False
    for i in range(len(word)):
        byte = src[start + i]
        if (byte - 32 if 0x61 <= byte <= 0x7A else byte) != word[i]:
            return False
    return True


_HEAD_WORD = np.frombuffer(b"HEAD", np.uint8).copy()
_CONNECT_WORD = np.frombuffer(CONNECT_METHOD, np.uint8).copy()
# identifiers.http._KNOWN_09, NUL-padded rows: the methods an HTTP/0.9 first line may have.
_KNOWN_09 = np.zeros((3, 4), np.uint8)
for _row, _word in enumerate((b"GET", b"HEAD", b"POST")):
    _KNOWN_09[_row, : len(_word)] = np.frombuffer(_word, np.uint8)


@njit(cache=True, _nrt=False)
def _known_09(src, start, end):
    """The method src[start:end] is one of _KNOWN_09, in this case."""
    n = end - start
    for row in range(_KNOWN_09.shape[0]):
        if n == _KNOWN_09.shape[1] or (n < _KNOWN_09.shape[1] and _KNOWN_09[row, n] == 0):
            same = n > 0
            for i in range(n):
                if src[start + i] != _KNOWN_09[row, i]:
                    same = False
                    break
            if same:
                return True
    return False


@njit(cache=True, _nrt=False)
def _connect_method(src, start, end):
    """identifiers.http_tunnel.connect_method on src[start:end]: CONNECT or a non-empty
    prefix of it, in any case (HTTP.cc HTTP_Request's strncasecmp)."""
    n = end - start
    if n == 0 or n > len(_CONNECT_WORD):
        return False
    for i in range(n):
        byte = src[start + i]
        if (byte - 32 if 0x61 <= byte <= 0x7A else byte) != _CONNECT_WORD[i]:
            return False
    return True


@njit(cache=True, _nrt=False)
def _method_so_far(src, start, end):
    """identifiers.http._METHOD_SO_FAR on an unfinished first line."""
    if end == start or not LETTERS[src[start]]:
        return False
    i = start + 1
    while i < end and METHOD_CHARS[src[i]]:
        i += 1
    return i - start <= MAX_METHOD and (i == end or src[i] == SPACE)


@njit(cache=True, _nrt=False)
def _plausible(src, start, end, complete):
    """HttpAnalyzer._plausible_request on the first line src[start:end] (without its LF)."""
    if end == start or not LETTERS[src[start]]:
        return False
    if not complete:
        return _method_so_far(src, start, end) and end - start < MAX_REQUEST_LINE
    while end > start and src[end - 1] == CR:
        end -= 1
    method_end, _, _, version_start, _ = request_match(src, start, end)
    if method_end == NOT_A_REQUEST:
        return False
    return version_start != NO_VERSION or _known_09(src, start, method_end)


@njit(cache=True, _nrt=False)
def _violation(state, events, out_n, size):
    """HttpAnalyzer._violation: dpd.zeek disables the analyzer within its first bytes."""
    k = _event(events, out_n, HE_VIOLATION, 0)
    if k < 0:
        return False
    events[k, E_SIZE] = size
    if size <= IGNORE_VIOLATIONS_AFTER:
        state[K_DONE] = 1
    return True


@njit(cache=True, _nrt=False)
def _weird(events, out_n, code):
    k = _event(events, out_n, HE_WEIRD, 0)
    if k < 0:
        return False
    events[k, E_CODE] = code
    return True


@njit(cache=True, _nrt=False)
def _start_body(state, sides, events, out_n, side, fields, is_request):
    """HttpAnalyzer._start_body with message_fields' answers; FED, NO_ROOM or LEFT."""
    row = sides[side]
    row[S_TAIL] = 0
    row[S_TAIL_LEN] = 0
    row[S_DONE] = 0
    row[S_LINE_MODE] = fields[FIELD_MULTIPART]
    if fields[FIELD_CHUNKED]:
        row[S_STATE] = CHUNK_SIZE
        return FED
    length = fields[FIELD_CONTENT_LENGTH]
    if length == LENGTH_LEFT_TO_PYTHON:
        return LEFT
    if length > 0:
        row[S_STATE] = BODY
        row[S_REMAINING] = length
    elif length == NO_LENGTH and not is_request:
        row[S_STATE] = CLOSE
        row[S_LINE_MODE] = 1
    else:
        row[S_STATE] = HEAD
        if not is_request and not _done(state, sides, events, out_n, state[K_TRANS + side]):
            return NO_ROOM
    return FED


@njit(cache=True, _nrt=False)
def _no_head_room(heads):
    """A head does not fit: a connection without a head buffer asks for one (NEED_HEAD),
    one whose buffer is full is left to Python."""
    return NEED_HEAD if heads.shape[1] == 0 else LEFT


@njit(cache=True, _nrt=False)
def heads_kept(state):
    """Whether either side keeps an incomplete head (its head buffer is in use)."""
    return (state[K_HEAD_LEN + ORIG] > state[K_HEAD_START + ORIG]
            or state[K_HEAD_LEN + RESP] > state[K_HEAD_START + RESP])


@njit(cache=True, _nrt=False)
def _append(state, heads, side, src, start, end):
    """`side.buf += data[start:end]`; False when the head buffer cannot hold it."""
    n = state[K_HEAD_LEN + side]
    if n + end - start > heads.shape[1]:
        return False
    copy_bytes(heads[side], n, src, start, end - start)
    state[K_HEAD_LEN + side] = n + end - start
    return True


@njit(cache=True, _nrt=False)
def _requests(state, sides, pending, lines_out, fields, events, arena, out_n, size, buf, pos, end):
    """HttpAnalyzer._requests: every complete request head in buf[pos:end]. Returns the
    answer and where reading stopped: after the last head taken, or where an incomplete
    one begins (take_head drops the blank lines before it)."""
    row = sides[ORIG]
    while row[S_STATE] == HEAD:
        status, fs, fe, hs, he, head_end = head_bounds(buf, pos, end, True)
        if status == HEAD_INCOMPLETE:
            return FED, fs
        pos = head_end
        taken = takes_request(buf, fs, fe)
        method_end, uri_start, uri_end, v_start, v_end = request_match(buf, fs, fe) if taken else (
            NOT_A_REQUEST, NOT_A_REQUEST, NOT_A_REQUEST, NOT_A_REQUEST, NOT_A_REQUEST)
        if method_end == NOT_A_REQUEST:
            if not _weird(events, out_n, W_BAD_REQUEST):
                return NO_ROOM, pos
            row[S_STATE] = OFF
            if not taken and (state[K_KEEP_ALIVE] or state[K_REQUESTS] == 0):
                if not _violation(state, events, out_n, size):
                    return NO_ROOM, pos
            return FED, pos
        if state[K_REQUESTS] >= MAX_TRANSACTIONS_IN_KERNEL or state[K_REQUESTS] - state[K_NEXT_RESP] >= PENDING_MAX:
            return LEFT, pos
        has_version = v_start != NO_VERSION
        n = 0
        for f in range(N_FIELDS):
            fields[f] = 0
        for f in range(FIELD_ORIGIN + 1):
            fields[f] = NO_HEADER
        fields[FIELD_CONTENT_LENGTH] = NO_LENGTH
        if has_version:
            n = header_lines(buf, hs, he, lines_out)
            if n == HEADERS_LEFT_TO_PYTHON or message_fields(buf, lines_out, n, fields) == FIELDS_LEFT_TO_PYTHON:
                return LEFT, pos
        state[K_IS_HTTP] = 1
        if has_version and _persistent(buf, v_start, v_end):
            state[K_KEEP_ALIVE] = 1
        if fields[FIELD_KEEP_ALIVE]:
            state[K_KEEP_ALIVE] = 1
        if not _flush_counts(state, sides, events, out_n, ORIG):
            return NO_ROOM, pos
        depth = state[K_REQUESTS] + 1
        k = _event(events, out_n, HE_REQUEST, depth)
        if k < 0:
            return NO_ROOM, pos
        ok = _span(events, k, E_METHOD, arena, out_n, buf, fs, method_end)
        ok = ok and _span(events, k, E_URI, arena, out_n, buf, uri_start, uri_end)
        if has_version:
            ok = ok and _span(events, k, E_VERSION, arena, out_n, buf, v_start, v_end)
            for f in range(FIELD_ORIGIN + 1):
                line = fields[f]
                if line != NO_HEADER:
                    ok = ok and _span(events, k, E_HOST + 2 * f, arena, out_n, buf, lines_out[line, 2],
                                      lines_out[line, 3])
            if fields[FIELD_PROXIED] or fields[FIELD_AUTHORIZATION]:
                ok = ok and _span(events, k, E_BLOCK, arena, out_n, buf, hs, he)
        if not ok:
            return NO_ROOM, pos
        kind = 0 if has_version else T_09
        if _is_word(buf, fs, method_end, _HEAD_WORD):
            kind |= T_HEAD
        elif has_version and _connect_method(buf, fs, method_end):
            state[K_CONNECT] = 1  # HTTP.cc HTTP_Request (not after HTTP/0.9: HttpAnalyzer._requests)
        pending[depth % PENDING_MAX] = kind
        state[K_REQUESTS] = depth
        if not has_version:
            row[S_STATE] = OFF  # HTTP/0.9: one request, the response runs until close
            return FED, pos
        state[K_TRANS + ORIG] = depth
        answer = _start_body(state, sides, events, out_n, ORIG, fields, True)
        if answer != FED:
            return answer, pos
    return FED, pos


@njit(cache=True, _nrt=False)
def _first_line(buf, start, end):
    """identifiers.http._first_line's bounds (blank lines skipped, trailing CRs dropped), or
    (-1, -1) while it is not complete."""
    p = blank_lines_end(buf, start, end)
    nl = p
    while nl < end and buf[nl] != LF:
        nl += 1
    if nl == end:
        return -1, -1
    while nl > p and buf[nl - 1] == CR:
        nl -= 1
    return p, nl


@njit(cache=True, _nrt=False)
def _status_event(events, arena, out_n, kind, depth, code, buf, r_start, r_end):
    """HE_INFO or HE_REPLY with the code and reason; its row, or -1 without room."""
    k = _event(events, out_n, kind, depth)
    if k < 0:
        return -1
    events[k, E_CODE] = code
    if r_start != NO_REASON and not _span(events, k, E_REASON, arena, out_n, buf, r_start, r_end):
        return -1
    return k


@njit(cache=True, _nrt=False)
def _reply(state, sides, pending, lines_out, fields, events, arena, out_n, size, buf, start, end):
    """One response head at buf[start:end] (HttpAnalyzer._feed_resp's head branch). Returns
    the answer, where reading stopped (after the head, or where an incomplete one begins)
    and whether a head was taken."""
    row = sides[RESP]
    fs, fe = _first_line(buf, start, end)
    if fs >= 0 and not takes_reply(buf, fs, fe):
        if not _weird(events, out_n, W_BAD_REPLY):
            return NO_ROOM, end, True
        row[S_STATE] = OFF
        return (FED if _violation(state, events, out_n, size) else NO_ROOM), end, True
    status, fs, fe, hs, he, head_end = head_bounds(buf, start, end, False)
    if status == HEAD_INCOMPLETE:
        return FED, fs, False
    version_end, code, r_start, r_end = reply_line(buf, fs, fe)
    if version_end == NOT_A_REPLY:
        if not _weird(events, out_n, W_BAD_REPLY):
            return NO_ROOM, head_end, True
        row[S_STATE] = OFF
        return FED, head_end, True
    n = header_lines(buf, hs, he, lines_out)
    if n == HEADERS_LEFT_TO_PYTHON or message_fields(buf, lines_out, n, fields) == FIELDS_LEFT_TO_PYTHON:
        return LEFT, head_end, True
    if code == SWITCHING_PROTOCOLS:
        # The analyzer decides whether it upgrades and what reads on (HttpAnalyzer._upgrade).
        return LEFT, head_end, True
    if _persistent(buf, fs + 5, version_end):
        state[K_KEEP_ALIVE] = 1
    depth = state[K_NEXT_RESP] + 1
    if code != 200:
        state[K_CONNECT] = 0  # HTTP.cc DeliverStream, EXPECT_REPLY_LINE
    elif state[K_CONNECT] == 1:
        # The 200 opens a CONNECT tunnel (HTTP.cc DeliverStream, EXPECT_REPLY_MESSAGE): the
        # HTTP analyzer its PIA may attach reads on in Python (HttpAnalyzer._open_tunnel).
        return LEFT, head_end, True
    if 100 <= code < 200:
        k = _status_event(events, arena, out_n, HE_INFO, depth, code, buf, r_start, r_end)
        return (FED if k >= 0 else NO_ROOM), head_end, True
    if not _flush_counts(state, sides, events, out_n, RESP):
        return NO_ROOM, head_end, True
    k = _status_event(events, arena, out_n, HE_REPLY, depth, code, buf, r_start, r_end)
    if k < 0 or not _span(events, k, E_VERSION, arena, out_n, buf, fs + 5, version_end):
        return NO_ROOM, head_end, True
    state[K_NEXT_RESP] = depth
    kind = pending[depth % PENDING_MAX]
    if (kind & T_HEAD) != 0 or code == 204 or code == 304:
        if not _done(state, sides, events, out_n, depth):
            return NO_ROOM, head_end, True
        row[S_STATE] = HEAD
    else:
        state[K_TRANS + RESP] = depth
        answer = _start_body(state, sides, events, out_n, RESP, fields, False)
        if answer != FED:
            return answer, head_end, True
    return FED, head_end, True


@njit(cache=True, _nrt=False)
def _feed_side(state, sides, lines, heads, pending, lines_out, fields, side, src, start, end, events, arena, out_n,
               size):
    """HttpAnalyzer._feed_orig / _feed_resp over src[start:end]. Heads are read where they
    lie; only one a chunk leaves incomplete is kept in the side's head buffer, and the next
    chunk's bytes are read after it there (`in_buf`), as Python reads its `side.buf`."""
    row = sides[side]
    cur, pos, stop = src, start, end
    in_buf = kept = False
    while row[S_STATE] != OFF and pos < stop:
        if row[S_STATE] != HEAD:
            pos = body_feed(row, lines[side], cur, pos, stop)
            if pos == BODY_LEFT_TO_PYTHON:
                return LEFT
            if row[S_DONE]:
                row[S_DONE] = 0
                if side == RESP and not _done(state, sides, events, out_n, state[K_TRANS + RESP]):
                    return NO_ROOM
            continue
        if side == RESP:
            if state[K_NEXT_RESP] >= state[K_REQUESTS]:
                break  # a response nobody asked for: its bytes are dropped
            depth = state[K_NEXT_RESP] + 1
            if pending[depth % PENDING_MAX] & T_09:
                if not _flush_counts(state, sides, events, out_n, RESP):
                    return NO_ROOM
                if _event(events, out_n, HE_REPLY_09, depth) < 0:
                    return NO_ROOM
                state[K_TRANS + RESP] = depth
                row[S_STATE] = CLOSE
                continue
        if not in_buf and state[K_HEAD_LEN + side] > state[K_HEAD_START + side]:
            # A head begun in an earlier chunk: these bytes follow it.
            if not _append(state, heads, side, cur, pos, stop):
                return _no_head_room(heads)
            cur, pos, stop = heads[side], state[K_HEAD_START + side], state[K_HEAD_LEN + side]
            in_buf = True
        if side == ORIG:
            if state[K_IS_HTTP] == UNDECIDED:
                nl = pos
                while nl < stop and cur[nl] != LF:
                    nl += 1
                if not _plausible(cur, pos, nl, nl < stop):
                    if nl == stop and _method_so_far(cur, pos, nl):
                        return LEFT  # contentline_size_exceeded: Python names it
                    state[K_IS_HTTP] = 0
                    row[S_STATE] = OFF
                    sides[RESP, S_STATE] = OFF
                    break
            answer, pos = _requests(state, sides, pending, lines_out, fields, events, arena, out_n, size, cur, pos,
                                    stop)
            taken = False
        else:
            answer, pos, taken = _reply(state, sides, pending, lines_out, fields, events, arena, out_n, size, cur,
                                        pos, stop)
        if answer != FED:
            return answer
        if row[S_STATE] == HEAD and not taken:
            # An incomplete head from `pos`: kept for the next chunk.
            if in_buf:
                state[K_HEAD_START + side] = pos
            elif not _append(state, heads, side, cur, pos, stop):
                return _no_head_room(heads)
            kept = True
            break
    if in_buf and not kept:
        state[K_HEAD_START + side] = state[K_HEAD_LEN + side]  # the buffer is read
    return FED


@njit(cache=True, _nrt=False)
def _compact(state, heads, side):
    """Move the unread head bytes to the buffer's start (only between chunks: a chunk
    left to Python must find the buffer as it was)."""
    start, end = state[K_HEAD_START + side], state[K_HEAD_LEN + side]
    if start == 0:
        return
    for i in range(end - start):
        heads[side, i] = heads[side, start + i]
    state[K_HEAD_START + side] = 0
    state[K_HEAD_LEN + side] = end - start


class Scratch(NamedTuple):
    """What `http_chunk` works in (kernels without numba's runtime allocate nothing): the
    state it rolls back to, the header lines' offsets and what they decide."""

    state: np.ndarray
    sides: np.ndarray
    line: np.ndarray
    header_rows: np.ndarray
    fields: np.ndarray


def new_scratch(line_capacity: int) -> Scratch:
    return Scratch(state=np.zeros(N_STATE, np.int64), sides=np.zeros((2, SIDE_FIELDS), np.int64),
                   line=np.zeros(line_capacity, np.uint8), header_rows=np.zeros((MAX_HEADERS, 4), np.int64),
                   fields=np.zeros(N_FIELDS, np.int64))


@njit(cache=True, _nrt=False)
def _save(state, sides, scratch):
    for i in range(N_STATE):
        scratch.state[i] = state[i]
    for s in range(2):
        for i in range(SIDE_FIELDS):
            scratch.sides[s, i] = sides[s, i]


@njit(cache=True, _nrt=False)
def _restore(state, sides, scratch):
    for i in range(N_STATE):
        state[i] = scratch.state[i]
    for s in range(2):
        for i in range(SIDE_FIELDS):
            sides[s, i] = scratch.sides[s, i]


@njit(cache=True, _nrt=False)
def http_chunk(state, sides, lines, heads, pending, is_orig, src, start, end, size, events, arena, out_n, scratch):
    """HttpAnalyzer._feed on src[start:end], one in-order chunk of the client's (is_orig)
    or the server's stream; `size`: both directions' stream bytes so far, this chunk's
    included (dpd.zeek's violation rule). FED, NO_ROOM, LEFT (see the module) or NEED_HEAD.
    `heads` (2, capacity) may have no room at all: a connection needs it only while a head
    is incomplete at a chunk's end."""
    if state[K_DONE] or state[K_LEFT]:
        return FED
    side = ORIG if is_orig else RESP
    row = sides[side]
    if (row[S_STATE] == BODY and row[S_REMAINING] > end - start and not row[S_LINE_MODE]
            and (is_orig or state[K_IS_HTTP] == 1)):
        # Inside a body of known length (most segments): counted, nothing else happens.
        row[S_REMAINING] -= end - start
        row[S_COUNTED] += end - start
        return FED
    _save(state, sides, scratch)
    held = sides[side, S_LINE_LEN]
    for i in range(held):
        scratch.line[i] = lines[side, i]
    saved_events, saved_arena = out_n[O_EVENTS], out_n[O_ARENA]
    lines_out, fields = scratch.header_rows, scratch.fields
    answer = FED
    if is_orig:
        answer = _feed_side(state, sides, lines, heads, pending, lines_out, fields, ORIG, src, start, end, events,
                            arena, out_n, size)
    elif state[K_IS_HTTP] == 1:
        answer = _feed_side(state, sides, lines, heads, pending, lines_out, fields, RESP, src, start, end, events,
                            arena, out_n, size)
    elif state[K_IS_HTTP] == UNDECIDED and sides[ORIG, S_STATE] == HEAD \
            and state[K_HEAD_LEN + ORIG] == state[K_HEAD_START + ORIG]:
        answer = _stop(state, events, out_n)  # the server spoke first: HTTP clients always do
    if answer == FED and not state[K_DONE] and sides[ORIG, S_STATE] == OFF and sides[RESP, S_STATE] == OFF:
        answer = _stop(state, events, out_n)
    if answer == FED:
        _compact(state, heads, side)
        return FED
    _restore(state, sides, scratch)
    for i in range(held):
        lines[side, i] = scratch.line[i]
    out_n[O_EVENTS], out_n[O_ARENA] = saved_events, saved_arena
    if answer == NEED_HEAD:
        return NEED_HEAD
    if answer == LEFT and leave(state, sides, events, out_n):
        return LEFT
    return NO_ROOM


@njit(cache=True, _nrt=False)
def leave(state, sides, events, out_n):
    """Leave the connection to Python (HE_LEFT, after both sides' counts); False when
    there is no room for the events (nothing written)."""
    if out_n[O_EVENTS] + 3 > events.shape[0]:
        return False
    _flush_counts(state, sides, events, out_n, ORIG)
    _flush_counts(state, sides, events, out_n, RESP)
    _event(events, out_n, HE_LEFT, 0)
    state[K_LEFT] = 1
    return True


@njit(cache=True, _nrt=False)
def _stop(state, events, out_n):
    if _event(events, out_n, HE_STOP, 0) < 0:
        return NO_ROOM
    state[K_DONE] = 1
    return FED


# -- Python's side: the events applied to the analyzer ------------------------------------

_STATE_NAMES = {HEAD: "head", BODY: "body", CHUNK_SIZE: "chunk_size", CHUNK_DATA: "chunk_data",
                CHUNK_CRLF: "chunk_crlf", TRAILER: "trailer", CLOSE: "close", OFF: "off"}
_LINE_STATES = (CHUNK_SIZE, CHUNK_CRLF, TRAILER)  # a size or trailer line may be held


def _bytes(arena: bytes, row: list[int], field: int) -> bytes | None:
    start = row[field]
    return None if start == NO_SPAN else arena[start : row[field + 1]]


def _request_headers(arena: bytes, row: list[int]) -> list[tuple[str, str]]:
    """The header lines the transaction reads: the whole block where proxy or Authorization
    lines need `parse_headers`, else the four values the kernel found."""
    block = _bytes(arena, row, E_BLOCK)
    if block is not None:
        return parse_headers(block)
    out = []
    for name, field in _VALUE_FIELDS:
        value = _bytes(arena, row, field)
        if value is not None:
            out.append((name, value.decode("utf-8", "surrogateescape")))
    return out


_VALUE_FIELDS = (("HOST", E_HOST), ("REFERER", E_REFERER), ("USER-AGENT", E_USER_AGENT), ("ORIGIN", E_ORIGIN))


def apply_events(analyzer: HttpAnalyzer, conn: ConnView, events: list[list[int]], arena: bytes, ts: float) -> None:
    """What `http_chunk` wrote for one connection's segment (its event rows, and the arena
    their spans point into, as Python values: the caller converts a kernel call's once), at
    network time `ts`, done by the analyzer (HE_LEFT is the caller's: `resume`)."""
    for row in events:
        kind, depth = row[E_KIND], row[E_DEPTH]
        if kind == HE_REQUEST:
            analyzer.kernel_request(conn, ts, _bytes(arena, row, E_METHOD) or b"", _bytes(arena, row, E_URI) or b"",
                                    _bytes(arena, row, E_VERSION), _request_headers(arena, row))
        elif kind == HE_BODY:
            analyzer.kernel_body(conn, depth, row[E_SIDE] == ORIG, row[E_BYTES])
        elif kind == HE_REPLY:
            analyzer.kernel_reply(conn, depth, row[E_CODE], _bytes(arena, row, E_REASON),
                                  _bytes(arena, row, E_VERSION) or b"")
        elif kind == HE_DONE:
            analyzer.kernel_done(conn, depth)
        elif kind == HE_INFO:
            analyzer.kernel_info(conn, depth, row[E_CODE], _bytes(arena, row, E_REASON))
        elif kind == HE_REPLY_09:
            analyzer.kernel_reply_09(conn, depth)
        elif kind == HE_WEIRD:
            analyzer.kernel_weird(conn, WEIRD_NAMES[row[E_CODE]], ts)
        elif kind == HE_VIOLATION:
            analyzer.kernel_violation(conn, row[E_SIZE])
        elif kind == HE_STOP:
            analyzer.kernel_stop(conn)


def apply_end(analyzer: HttpAnalyzer, conn: ConnView, state: np.ndarray, sides: np.ndarray) -> None:
    """The connection ends (HttpAnalyzer.on_remove's first part, which then finds nothing
    to do): a body read until close ends with it (`fast.http.end_body`: its last line
    counted as `_unterminated_last_line` counts it), and the bytes counted since the last
    HE_BODY go to their transactions."""
    if sides[RESP, S_STATE] == CLOSE:
        end_body(sides[RESP])
    for side in (ORIG, RESP):
        n = int(sides[side, S_COUNTED])
        if n:
            analyzer.kernel_body(conn, int(state[K_TRANS + side]), side == ORIG, n)


def _tail(row: np.ndarray) -> bytes:
    n, tail = int(row[S_TAIL_LEN]), int(row[S_TAIL])
    return bytes([tail >> 8 & 0xFF, tail & 0xFF][2 - n :]) if n else b""


def resume(analyzer: HttpAnalyzer, conn: ConnView, state: np.ndarray, sides: np.ndarray, lines: np.ndarray,
           heads: np.ndarray) -> None:
    """After HE_LEFT: the analyzer reads on in Python from the kernel's state."""
    kept: list[KernelSide] = []
    for side in (ORIG, RESP):
        row = sides[side]
        code = int(row[S_STATE])
        if code == HEAD:
            buf = heads[side, state[K_HEAD_START + side] : state[K_HEAD_LEN + side]].tobytes()
        elif code in _LINE_STATES:
            buf = lines[side, : row[S_LINE_LEN]].tobytes()
        else:
            buf = b""
        kept.append((_STATE_NAMES[code], int(row[S_REMAINING]), bool(row[S_LINE_MODE]), _tail(row), buf,
                     int(state[K_TRANS + side])))
    is_http = None if state[K_IS_HTTP] == UNDECIDED else bool(state[K_IS_HTTP])
    analyzer.kernel_resume(conn, is_http, bool(state[K_KEEP_ALIVE]), bool(state[K_CONNECT]), (kept[0], kept[1]))
