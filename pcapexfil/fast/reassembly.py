"""The reassembler's sequence-range bookkeeping (flow.tcp.Reassembler, the part of Zeek's
TCP_Reassembler that finds content gaps): blocks of undelivered data per endpoint in
`Flows.blocks`, trimmed as the peer acknowledges them.
"""

from __future__ import annotations

import numpy as np

from pcapexfil.fast.endpoint import ep_size, no_data_acked, rel
from pcapexfil.fast.events import W_ABOVE_HOLE, W_EXCESSIVE, conn_weird
from pcapexfil.fast.history import L_GAP, lower, scaled
from pcapexfil.fast.layout import CNT_GAP, U64_0, U64_1
from pcapexfil.flow.tcp import (
    CLOSED,
    ESTABLISHED,
    EXCESSIVE_DATA_WITHOUT_ACKS,
    MAX_ABOVE_HOLE_WITHOUT_ACKS,
    MAX_INITIAL_WINDOW,
    RESET,
)
from pcapexfil.jit import njit

# Up to here a partial connection's faked initial sequence leaves no real gap
# (flow.tcp.Reassembler._undelivered_to).
PARTIAL_START_SLACK = 2


@njit(cache=True, _nrt=False)
def has_blocks(E, e):
    return E[e].data_upper > E[e].trim_seq


@njit(cache=True, _nrt=False)
def data_pending(E, e):
    if E[e].skip_deliveries:
        return False
    delivered = np.uint64(E[e].start_seq) + E[e].last_reassem_seq
    last = np.uint64((E[e].seq_wraps << 32) | E[e].last_seq)
    if last < delivered:
        return False
    if delivered != last - U64_1 and delivered != last:
        return True
    return E[e].state != RESET and has_blocks(E, e ^ 1)


@njit(cache=True, _nrt=False)
def _del_block0(F, e):
    E, BL = F.endpoints, F.blocks
    n = E[e].nblocks
    for k in range(1, n):
        BL[e, k - 1, 0] = BL[e, k, 0]
        BL[e, k - 1, 1] = BL[e, k, 1]
    E[e].nblocks = n - 1


@njit(cache=True, _nrt=False)
def block_inserted(F, e):
    E, BL = F.endpoints, F.blocks
    lrs = E[e].last_reassem_seq
    while E[e].nblocks > 0 and BL[e, 0, 0] <= lrs:
        lrs = max(lrs, BL[e, 0, 1])
        _del_block0(F, e)
    E[e].last_reassem_seq = lrs
    if no_data_acked(E, e) and ep_size(E, e) > np.uint64(MAX_INITIAL_WINDOW):
        # Reference: self._trim(lrs), which here only moves trim_seq (nothing is below lrs).
        E[e].trim_seq = lrs


@njit(cache=True, _nrt=False)
def new_block(F, e, seq, upper):
    E, BL = F.endpoints, F.blocks
    trim = E[e].trim_seq
    if upper <= seq or upper <= trim:
        return
    seq = max(seq, trim)
    E[e].data_upper = max(E[e].data_upper, upper)
    n = E[e].nblocks
    i = 0
    while i < n and BL[e, i, 1] < seq:
        i += 1
    j = i
    while j < n and BL[e, j, 0] <= upper:
        seq = min(seq, BL[e, j, 0])
        upper = max(upper, BL[e, j, 1])
        j += 1
    removed = j - i
    if removed == 0:
        for k in range(n, i, -1):
            BL[e, k, 0] = BL[e, k - 1, 0]
            BL[e, k, 1] = BL[e, k - 1, 1]
        E[e].nblocks = n + 1
    elif removed > 1:
        shift = removed - 1
        for k in range(i + 1, n - shift):
            BL[e, k, 0] = BL[e, k + shift, 0]
            BL[e, k, 1] = BL[e, k + shift, 1]
        E[e].nblocks = n - shift
    BL[e, i, 0] = seq
    BL[e, i, 1] = upper
    block_inserted(F, e)


@njit(cache=True, _nrt=False)
def _clear(E, e):
    E[e].nblocks = 0
    E[e].data_upper = U64_0
    E[e].skip_deliveries = True


@njit(cache=True, _nrt=False)
def data_sent(F, O, S, e, seq, length):
    E, BL = F.endpoints, F.blocks
    if E[e].skip_deliveries:
        return
    ack = rel(E, e, E[e].ack_seq, E[e].ack_wraps)
    upper = seq + np.uint64(length)
    if seq < ack:
        if upper <= ack:
            return
        seq = ack
    new_block(F, e, seq, upper)
    n = E[e].nblocks
    undelivered = np.int64(BL[e, n - 1, 1]) - np.int64(E[e].last_reassem_seq) if n > 0 else 0
    if no_data_acked(E, e) and undelivered > MAX_ABOVE_HOLE_WITHOUT_ACKS:
        conn_weird(F, O, S, e // 2, W_ABOVE_HOLE)
        _clear(E, e)
    else:
        total = U64_0
        for k in range(n):
            total += BL[e, k, 1] - BL[e, k, 0]
        if total > np.uint64(EXCESSIVE_DATA_WITHOUT_ACKS):
            conn_weird(F, O, S, e // 2, W_EXCESSIVE)
            _clear(E, e)


@njit(cache=True, _nrt=False)
def _is_clean(E, e):
    st = E[e].state
    return st == ESTABLISHED or (st == CLOSED and E[e].prev_state == ESTABLISHED)


@njit(cache=True, _nrt=False)
def _gap(F, e, length):
    E = F.endpoints
    if _is_clean(E, e) and _is_clean(E, e ^ 1):
        scaled(F, e, CNT_GAP, L_GAP if E[e].is_orig else lower(L_GAP))
        F.conns[e // 2].missed_bytes += np.int64(length)


@njit(cache=True, _nrt=False)
def undelivered_to(F, e, up_to):
    E, BL = F.endpoints, F.blocks
    if up_to <= np.uint64(PARTIAL_START_SLACK) and F.conns[e // 2].is_partial:
        return
    if not E[e].skip_deliveries:
        while E[e].nblocks > 0 and BL[e, 0, 0] < up_to:
            s = BL[e, 0, 0]
            u = BL[e, 0, 1]
            lrs = E[e].last_reassem_seq
            if s >= lrs:
                _gap(F, e, s - lrs)
            _del_block0(F, e)
            E[e].last_reassem_seq = max(E[e].last_reassem_seq, u)
        lrs = E[e].last_reassem_seq
        if up_to > lrs:
            _gap(F, e, up_to - lrs)
    E[e].last_reassem_seq = max(E[e].last_reassem_seq, up_to)


@njit(cache=True, _nrt=False)
def trim(F, e, seq):
    """The peer acknowledged up to `seq`: what lies below is delivered, or a gap."""
    E, BL = F.endpoints, F.blocks
    if seq > E[e].last_reassem_seq:
        undelivered_to(F, e, seq)
    while E[e].nblocks > 0 and BL[e, 0, 1] <= seq:
        _del_block0(F, e)
    if E[e].nblocks > 0 and BL[e, 0, 0] <= E[e].last_reassem_seq:
        block_inserted(F, e)
    E[e].trim_seq = seq
