"""The PIA's first windows of an HTTP-port connection, kept in the kernel while no anchor is there.

On HTTP's ports the services analyzer and TLS wait for dpd.sig signatures (and hand-overs)
that cannot match while the PIA's windows hold none of their anchors (`fast.anchors`); until
then each of their packets only adds bytes to the PIA and to what they keep. So a lane
connection is *gated*: its in-order chunks stay in a window buffer here, with their
direction, sequence number and time, and its packets do not go to Python. The gate ends at
the chunk that makes a window hold an anchor, that ends the PIA's matching (more than
DPD_BUFFER_SIZE bytes or DPD_MAX_PACKETS chunks), that the buffer cannot keep, after a role
flip, or when the HTTP lane leaves: that packet goes to Python with the buffer, whose chunks
the analyzers read first, as they would have one by one (`FastFlow._gate_replay`). A
connection that ends gated needs nothing of them (their `on_remove` reads no such state).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pcapexfil.fast.anchors import HELD, NO_GATE, NO_RELEASE, Gates, walk
from pcapexfil.identifiers.stream import DPD_BUFFER_SIZE, DPD_MAX_PACKETS
from pcapexfil.jit import njit

# Chunks a window buffer keeps; the next one ends the gate (many tiny segments: rare).
KEPT_CHUNKS = 16
assert KEPT_CHUNKS <= DPD_MAX_PACKETS

# A lane row's gate (`rows`): gated?, PIA bytes and chunks so far, each role's automaton
# state (originator's first), the physical endpoint that was the originator when the gate
# opened, the window buffer (NO_WINDOW: none yet), bytes in it, the originator's bytes
# among them, whether the gate ended with the analyzers done (GATE_RELEASED).
G_GATED, G_SIZE, G_CHUNKS, G_STATE, G_ORIG_PHYS, G_WINDOW, G_USED, G_ORIG_BYTES, G_RELEASED = 0, 1, 2, 3, 5, 6, 7, 8, 9
G_PORT = 10  # the responder's port as the gate opened (its release rule)
GATE_FIELDS = 11
NO_WINDOW = -1

# A window's chunks (`chunks`): from the originator (roles as the gate opened)?, length,
# sequence number of the first byte. `meta`: how many, whether the roles flipped since.
C_IS_ORIG, C_LEN, C_SEQ = 0, 1, 2
CHUNK_FIELDS = 3
M_CHUNKS, M_FLIPPED = 0, 1
META_FIELDS = 2

# gate_chunk's answer: kept; over (the packet and the window to Python); over with every
# analyzer done (their `PiaWait` condition met: nothing to Python). GATE_NONE: not gated.
GATE_KEPT, GATE_OVER, GATE_RELEASED, GATE_NONE = 0, 1, 2, 3

# `ints`: the window buffers' free stack height.
W_FREE = 0


class PiaGate(NamedTuple):
    gates: Gates
    rows: np.ndarray  # (lane rows, GATE_FIELDS)
    windows: np.ndarray  # (buffers, DPD_BUFFER_SIZE) uint8
    chunks: np.ndarray  # (buffers, KEPT_CHUNKS, CHUNK_FIELDS)
    chunk_ts: np.ndarray  # (buffers, KEPT_CHUNKS)
    meta: np.ndarray  # (buffers, META_FIELDS)
    free: np.ndarray  # stack of free window buffers, `ints[W_FREE]` high
    ints: np.ndarray


def new_gate(rows: int, gates: Gates | None, buffers: int = 64) -> PiaGate:
    """A gate for `rows` lane rows; `gates` None: no port is gated."""
    if gates is None:
        gates = Gates(table=np.zeros((1, 256), np.int32), accept=np.zeros(1, np.uint8), dead=np.ones(1, np.uint8),
                      start=np.full((65536, 2), NO_GATE, np.int32), release=np.full(65536, NO_RELEASE, np.int32))
    ints = np.zeros(1, np.int64)
    ints[W_FREE] = buffers
    return PiaGate(gates=gates, rows=np.zeros((rows, GATE_FIELDS), np.int64),
                   windows=np.zeros((buffers, DPD_BUFFER_SIZE), np.uint8),
                   chunks=np.zeros((buffers, KEPT_CHUNKS, CHUNK_FIELDS), np.int64),
                   chunk_ts=np.zeros((buffers, KEPT_CHUNKS), np.float64), meta=np.zeros((buffers, META_FIELDS), np.int64),
                   free=np.arange(buffers - 1, -1, -1, dtype=np.int64), ints=ints)


@njit(cache=True, _nrt=False)
def gate_open(W, r, resp_p, orig_phys):
    """Lane row `r` starts (its connection's first payload): gated if its port is."""
    row = W.rows[r]
    row[G_ORIG_BYTES] = 0
    row[G_RELEASED] = 0
    row[G_PORT] = resp_p
    start = W.gates.start[resp_p]
    row[G_GATED] = 1 if start[0] != NO_GATE else 0
    row[G_SIZE] = 0
    row[G_CHUNKS] = 0
    row[G_STATE] = start[0]
    row[G_STATE + 1] = start[1]
    row[G_ORIG_PHYS] = orig_phys
    row[G_WINDOW] = NO_WINDOW
    row[G_USED] = 0


@njit(cache=True, _nrt=False)
def gate_room(W):
    """Whether a window buffer is free (else the kernel asks Python for more first)."""
    return W.ints[W_FREE] > 0


@njit(cache=True, _nrt=False)
def gate_chunk(W, r, is_orig, orig_phys, src, start, end, seq, ts):
    """One in-order chunk src[start:end] of a gated row: kept (GATE_KEPT), the last the PIA
    matches with its analyzers done then (GATE_RELEASED), or the gate is over at it
    (GATE_OVER: the packet goes to Python, `gate_end` gives the buffer)."""
    row = W.rows[r]
    if row[G_ORIG_PHYS] != orig_phys:
        return GATE_OVER  # the roles flipped: the chunks kept were read under the others
    n = end - start
    size = row[G_SIZE] + n
    chunks = row[G_CHUNKS] + 1
    role = 0 if is_orig else 1
    G = W.gates
    state = walk(G.table, G.accept, G.dead, row[G_STATE + role], src, start, end)
    if state == HELD:
        return GATE_OVER
    # PIA_TCP::DeliverStream: the chunk that takes it past either limit is matched last.
    if size > DPD_BUFFER_SIZE or chunks > DPD_MAX_PACKETS:
        done_after_orig = G.release[row[G_PORT]]
        orig_bytes = row[G_ORIG_BYTES] + (n if is_orig else 0)
        if done_after_orig != NO_RELEASE and orig_bytes >= done_after_orig:
            row[G_RELEASED] = 1
            return GATE_RELEASED
        return GATE_OVER
    if chunks > KEPT_CHUNKS:
        return GATE_OVER
    w = row[G_WINDOW]
    if w == NO_WINDOW:
        k = W.ints[W_FREE] - 1
        W.ints[W_FREE] = k
        w = row[G_WINDOW] = W.free[k]
        W.meta[w, M_CHUNKS] = 0
    used = row[G_USED]
    for i in range(n):
        W.windows[w, used + i] = src[start + i]
    c = W.meta[w, M_CHUNKS]
    W.chunks[w, c, C_IS_ORIG] = 1 if is_orig else 0
    W.chunks[w, c, C_LEN] = n
    W.chunks[w, c, C_SEQ] = seq
    W.chunk_ts[w, c] = ts
    W.meta[w, M_CHUNKS] = c + 1
    row[G_USED] = used + n
    if is_orig:
        row[G_ORIG_BYTES] += n
    row[G_SIZE] = size
    row[G_CHUNKS] = chunks
    row[G_STATE + role] = state
    return GATE_KEPT


@njit(cache=True, _nrt=False)
def gate_end(W, r, orig_phys):
    """The gate of row `r` is over: its window buffer (NO_WINDOW: none was kept) goes to
    Python, which reads the chunks and frees it (`FastFlowTable.window_free`)."""
    row = W.rows[r]
    row[G_GATED] = 0
    w = row[G_WINDOW]
    row[G_WINDOW] = NO_WINDOW
    if w != NO_WINDOW:
        W.meta[w, M_FLIPPED] = 1 if row[G_ORIG_PHYS] != orig_phys else 0
    return w


@njit(cache=True, _nrt=False)
def window_release(W, w):
    W.free[W.ints[W_FREE]] = w
    W.ints[W_FREE] += 1
