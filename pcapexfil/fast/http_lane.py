"""HTTP read inside the flow table: each connection on one of HTTP's ports gets a row of
`fast.http_machine` state, and `process_batch` hands the machine every in-order segment of
it, so its heads and bodies need no Python call per packet (issue 17). The segments the
service recognisers and TLS still read (the PIA's first KiB) reach them as before.

The stream is followed as `identifiers.stream.StreamDirection.add` follows it: from the
SYN (or the first payload), retransmitted bytes dropped, overlaps trimmed, a snap-length
cut delivering what was captured and ending its direction. A segment it cannot read in
order (a gap, a payload only the reference decoder has) or one the machine leaves to
Python ends the kernel's reading: the connection's HTTP goes
back to Python (HE_LEFT), the segment and all after it reach the analyzers as before.

A connection on those ports is marked at its creation (`UNOPENED`: HTTP attaches by the
port `on_new` sees) and takes a row at its first payload, so a flood of SYNs costs none;
a row takes a head buffer (`heads`, a pool of its own) only while a segment leaves a head
incomplete, so a live connection costs about 600 bytes.
Rows come from a free stack and go back when Python has read them (at the connection's
record, or its HE_LEFT); the kernel asks Python to grow the pool before a packet when it is
empty (GROW_LANE).
The events of one kernel call and the bytes they name are in `events` and `arena`; each
EV_PKT / EV_LANE names its range of them (`EV_DTYPE.lane_lo`, `lane_hi`) and row, and an
EV_REC its row, whose last counts Python then reads (`http_machine.apply_end`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pcapexfil.fast.http import LINE_MAX, SIDE_FIELDS
from pcapexfil.fast.http_machine import (
    E_BROKEN,
    E_DELIVERED,
    E_NEXT_SEQ,
    EVENT_FIELDS,
    FED,
    LEFT,
    NEED_HEAD,
    N_STATE,
    PENDING_MAX,
    Scratch,
    heads_kept,
    http_chunk,
    leave,
    new_scratch,
    new_state,
)
from pcapexfil.fast.anchors import Gates
from pcapexfil.fast.layout import M32
from pcapexfil.fast.pia_gate import PiaGate, gate_open, gate_room, new_gate
from pcapexfil.jit import njit
from pcapexfil.packet import TH_SYN

HEAD_CAPACITY = 1024  # a head a segment leaves incomplete is kept up to this long, else left to Python
LINE_CAPACITY = 64  # a chunk-size or trailer line likewise
assert LINE_CAPACITY <= LINE_MAX

# A row's stream state (`stream`), per physical endpoint (the flow table's 2c + phys: a
# role flip does not move it): the next sequence number (NO_SEQ before the SYN or first
# payload), the bytes delivered, whether a snap-length cut ended the stream
# (StreamDirection.broken); then the head buffer it holds (NO_HEADS: none).
NEXT_SEQ, DELIVERED, BROKEN, HEAD_BUFFER = 0, 2, 4, 6
STREAM_FIELDS = 7
NO_HEADS = -1
NO_SEQ = -1
SEQ_HALF = 1 << 31

# CONN_DTYPE.lane besides a row: no HTTP read here, or a row to take at the first payload.
NO_LANE, UNOPENED = -1, -2

# `ints`: the free stack's height, this call's events and arena bytes (http_machine's
# out_n, in this order), whether connections get rows, the head buffers' free stack height;
# the in-order bytes lane_segment's segment delivered (buffer offsets) and their sequence
# number (`fast.pia_gate` keeps them).
L_NFREE, L_EV_N, L_ARENA_N, L_ON, L_HFREE, L_CHUNK_LO, L_CHUNK_HI, L_CHUNK_SEQ = 0, 1, 2, 3, 4, 5, 6, 7
L_SIZE = 8

# lane_segment's answer.
LANE_QUIET, LANE_EVENTS, LANE_LEFT = 0, 1, 2

# Room a segment may need: an event per 8 bytes of it (no request or response is
# shorter: a shift, not a division, as it is asked of every packet) and a few more; its
# bytes and a kept head's in the arena.
EVENTS_PER_BYTE_SHIFT = 3  # 8
EVENT_ROOM = 16


class HttpLane(NamedTuple):
    state: np.ndarray  # (rows, http_machine.N_STATE)
    sides: np.ndarray  # (rows, 2, SIDE_FIELDS)
    pending: np.ndarray  # (rows, PENDING_MAX)
    lines: np.ndarray  # (rows, 2, LINE_CAPACITY)
    stream: np.ndarray  # (rows, STREAM_FIELDS)
    free: np.ndarray  # stack of free rows, `ints[L_NFREE]` high
    heads: np.ndarray  # (buffers, 2, HEAD_CAPACITY): head buffers, taken by rows that need one
    head_free: np.ndarray  # stack of free head buffers, `ints[L_HFREE]` high
    no_heads: np.ndarray  # (2, 0): what a row without a head buffer reads into
    ints: np.ndarray
    ports: np.ndarray  # bool per TCP port: HTTP's registered ports (the analyzer attaches there)
    events: np.ndarray  # (n, EVENT_FIELDS): this kernel call's
    arena: np.ndarray
    scratch: Scratch
    gate: PiaGate  # per row: the PIA's windows while no anchor is there


def new_lane(rows: int, ports: np.ndarray, on: bool, events: int = 8192, arena: int = 1 << 20,
             head_buffers: int = 64, gates: Gates | None = None) -> HttpLane:
    ints = np.zeros(L_SIZE, np.int64)
    ints[L_NFREE] = rows
    ints[L_HFREE] = head_buffers
    ints[L_ON] = 1 if on else 0
    return HttpLane(state=np.zeros((rows, N_STATE), np.int64), sides=np.zeros((rows, 2, SIDE_FIELDS), np.int64),
                    pending=np.zeros((rows, PENDING_MAX), np.int64), lines=np.zeros((rows, 2, LINE_CAPACITY), np.uint8),
                    stream=np.zeros((rows, STREAM_FIELDS), np.int64), free=np.arange(rows - 1, -1, -1, dtype=np.int64),
                    heads=np.zeros((head_buffers, 2, HEAD_CAPACITY), np.uint8),
                    head_free=np.arange(head_buffers - 1, -1, -1, dtype=np.int64), no_heads=np.zeros((2, 0), np.uint8),
                    ints=ints, ports=ports,
                    events=np.zeros((events, EVENT_FIELDS), np.int64), arena=np.zeros(arena, np.uint8),
                    scratch=new_scratch(LINE_CAPACITY), gate=new_gate(rows, gates))


_FRESH = new_state()


@njit(cache=True, _nrt=False)
def lane_open(L, resp_p):
    """What a new TCP connection's CONN_DTYPE.lane starts as: UNOPENED on HTTP's ports
    while the lane is on, else NO_LANE."""
    return UNOPENED if L.ints[L_ON] and L.ports[resp_p] else NO_LANE


@njit(cache=True, _nrt=False)
def lane_take(L, start0, start1, resp_p, orig_phys):
    """A row for a connection's first payload; `start0`, `start1`: where each physical
    endpoint's stream starts (EP_DTYPE.stream_start, -1: not yet), as the engine opens
    Python's streams at them; its PIA gate opens (`fast.pia_gate`). A row is free
    (process_batch asks for more before a packet)."""
    n = L.ints[L_NFREE] - 1
    L.ints[L_NFREE] = n
    r = L.free[n]
    for i in range(_FRESH.shape[0]):
        L.state[r, i] = _FRESH[i]
    for s in range(2):
        for i in range(L.sides.shape[2]):
            L.sides[r, s, i] = 0
        L.stream[r, DELIVERED + s] = 0
        L.stream[r, BROKEN + s] = 0
    L.stream[r, NEXT_SEQ] = NO_SEQ if start0 < 0 else start0
    L.stream[r, NEXT_SEQ + 1] = NO_SEQ if start1 < 0 else start1
    L.stream[r, HEAD_BUFFER] = NO_HEADS
    gate_open(L.gate, r, resp_p, orig_phys)
    return r


@njit(cache=True, _nrt=False)
def lane_room(L, payload_len):
    """Whether this call's events and arena hold what a segment of `payload_len` bytes may
    write (else the kernel returns before the packet). Always true while the lane is off or
    for a segment without payload."""
    if not L.ints[L_ON] or payload_len == 0:
        return True
    return (L.ints[L_EV_N] + (payload_len >> EVENTS_PER_BYTE_SHIFT) + EVENT_ROOM <= L.events.shape[0]
            and L.ints[L_ARENA_N] + payload_len + HEAD_CAPACITY <= L.arena.shape[0])


@njit(cache=True, _nrt=False)
def lane_rows_free(L):
    """Whether a row, a head buffer and a window buffer are free (else the kernel asks
    Python to grow them)."""
    return not L.ints[L_ON] or (L.ints[L_NFREE] > 0 and L.ints[L_HFREE] > 0 and gate_room(L.gate))


@njit(cache=True, _nrt=False)
def lane_segment(L, r, phys, is_orig, flags, seq, payload_len, payload_cap, buf, off, readable):
    """One TCP segment of row `r`'s connection from physical endpoint `phys` (0/1), in the
    role `is_orig`: StreamDirection.add's in-order bytes to the HTTP machine. `readable`:
    its payload is in `buf` at `off` (not a row the reference decoder made). The bytes it
    delivers are left in `ints` (L_CHUNK_LO .. L_CHUNK_HI, at L_CHUNK_SEQ)."""
    L.ints[L_CHUNK_LO] = L.ints[L_CHUNK_HI] = 0
    st = L.stream[r]
    if st[BROKEN + phys]:
        return LANE_QUIET
    nxt = st[NEXT_SEQ + phys]
    if nxt == NO_SEQ:
        if flags & TH_SYN:
            nxt = (seq + 1) & M32
            seq = nxt
        elif payload_len:
            nxt = seq
        else:
            return LANE_QUIET
        st[NEXT_SEQ + phys] = nxt
    elif flags & TH_SYN:
        seq = (seq + 1) & M32  # SYN retransmission or SYN carrying data
    if payload_len == 0:
        return LANE_QUIET
    if not readable:
        return lane_leave(L, r, phys, is_orig)  # the bytes are the decoder's: Python reads on
    captured = min(payload_cap, payload_len)
    cut = captured < payload_len  # what was captured is delivered, then nothing more (BROKEN)
    offset = (seq - nxt) & M32
    skip = 0
    if offset >= SEQ_HALF:  # starts before the next byte: a retransmission or an overlap
        skip = (1 << 32) - offset
    elif offset > 0:
        if cut:
            st[BROKEN + phys] = 1
            return LANE_QUIET  # a cut segment past a gap: never delivered
        return lane_leave(L, r, phys, is_orig)  # a gap: Python keeps the segment until it fills
    if skip >= captured:
        # No new byte (a retransmission, or none captured): the analyzers get no chunk
        # (tcp_data's b""), so HTTP reads nothing, not even that the server spoke first.
        st[BROKEN + phys] = cut
        return LANE_QUIET
    n = captured - skip
    size = st[DELIVERED] + st[DELIVERED + 1] + n
    before = L.ints[L_EV_N]
    h = st[HEAD_BUFFER]
    answer = _read(L, r, h, is_orig, buf, off + skip, off + captured, size)
    if answer == NEED_HEAD:
        # A head this segment leaves incomplete: the row takes a head buffer (process_batch
        # keeps one free) and the segment is read again, exactly.
        n_free = L.ints[L_HFREE] - 1
        L.ints[L_HFREE] = n_free
        h = st[HEAD_BUFFER] = L.head_free[n_free]
        answer = _read(L, r, h, is_orig, buf, off + skip, off + captured, size)
    if h >= 0 and answer == FED and not heads_kept(L.state[r]):
        release_heads(L, r)
    if answer == LEFT:
        return _left_at(L, r, phys, is_orig)
    if answer != FED:
        # More events than lane_room keeps for a segment (e.g. many short pipelined replies):
        # the segment was rolled back, so the room kept holds HE_LEFT; Python reads on, exactly.
        return lane_leave(L, r, phys, is_orig)
    L.ints[L_CHUNK_LO] = off + skip
    L.ints[L_CHUNK_HI] = off + captured
    L.ints[L_CHUNK_SEQ] = nxt
    st[NEXT_SEQ + phys] = (nxt + n) & M32
    st[DELIVERED + phys] += n
    st[BROKEN + phys] = cut  # (left to Python above, the segment's cut is Python's to see)
    return LANE_EVENTS if L.ints[L_EV_N] > before else LANE_QUIET


@njit(cache=True, _nrt=False)
def _read(L, r, h, is_orig, buf, start, end, size):
    """http_chunk on row `r`'s state with head buffer `h` (NO_HEADS: none)."""
    return http_chunk(L.state[r], L.sides[r], L.lines[r], L.heads[h] if h >= 0 else L.no_heads, L.pending[r],
                      is_orig, buf, start, end, size, L.events, L.arena, L.ints[L_EV_N : L_EV_N + 2], L.scratch)


@njit(cache=True, _nrt=False)
def release_heads(L, r):
    """Row `r` gives its head buffer back (no head waits in it, or the row is done)."""
    h = L.stream[r, HEAD_BUFFER]
    if h >= 0:
        L.head_free[L.ints[L_HFREE]] = h
        L.ints[L_HFREE] += 1
        L.stream[r, HEAD_BUFFER] = NO_HEADS


@njit(cache=True, _nrt=False)
def lane_leave(L, r, phys, is_orig):
    """Python reads the connection's HTTP from this segment on (HE_LEFT): where the kernel
    cannot read it (a decoded frame's bytes, a gap, ...), or must not (a partial connection)."""
    if not leave(L.state[r], L.sides[r], L.events, L.ints[L_EV_N : L_EV_N + 2]):
        return LANE_QUIET  # unreachable: lane_room kept EVENT_ROOM rows free before the segment
    return _left_at(L, r, phys, is_orig)


@njit(cache=True, _nrt=False)
def _left_at(L, r, phys, is_orig):
    """HE_LEFT (the last event) gets where each direction's stream is, the originator's
    first, so that Python's reassembly goes on from there."""
    ev = L.events[L.ints[L_EV_N] - 1]
    orig = phys if is_orig else phys ^ 1
    for k in range(2):
        p = orig if k == 0 else orig ^ 1
        ev[E_NEXT_SEQ + k] = L.stream[r, NEXT_SEQ + p]
        ev[E_DELIVERED + k] = L.stream[r, DELIVERED + p]
        ev[E_BROKEN + k] = L.stream[r, BROKEN + p]
    return LANE_LEFT
