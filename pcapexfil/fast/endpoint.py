"""A TCP endpoint's sequence bookkeeping (flow.tcp.Endpoint, Zeek's TCP_Endpoint).

Rows of `Flows.endpoints`: endpoint `e` of connection `e // 2`, its peer `e ^ 1`.
Relative sequence numbers are uint64 like the reference's `& M64` values; raw sequence
numbers are int64 holding 32-bit values.
"""

from __future__ import annotations

import numpy as np

from pcapexfil.fast.layout import CFG_TCP_INACT, M32, U64_0, U64_1
from pcapexfil.flow.tcp import INACTIVE, RESET, SYN_ACK_SENT, SYN_SENT
from pcapexfil.jit import njit

SEQ_SIGN = 0x80000000  # sequence distances past half the space count backwards
SEQ_SPACE = 0x100000000


@njit(cache=True, _nrt=False, inline="always")
def seq_delta(a, b):
    """Signed 32-bit difference a - b (flow.tcp.seq_delta)."""
    d = (a - b) & M32
    if d & SEQ_SIGN:
        return d - SEQ_SPACE
    return d


@njit(cache=True, _nrt=False)
def orig_phys(C, c):
    """The endpoint row of connection `c`'s originator."""
    return 2 * c + np.int64(C[c].orig_ep)


@njit(cache=True, _nrt=False)
def rel(E, e, seq, wraps):
    return np.uint64((wraps << 32) | seq) - np.uint64(E[e].start_seq)


@njit(cache=True, _nrt=False)
def relative(E, e, cur, last, wraps):
    """`cur` relative to the endpoint's start, counting the wraps since `last`; and
    whether it lies before the start (an underflow)."""
    delta = seq_delta(cur, last)
    if delta < 0:
        if wraps and cur > last:
            wraps -= 1
    elif delta > 0:  # noqa: SIM102 (mirrors the reference)
        if cur < last:
            wraps += 1
    if wraps == 0:
        d = seq_delta(cur, E[e].start_seq)
        return np.uint64(d), d < 0
    return np.uint64((wraps << 32) | cur) - np.uint64(E[e].start_seq), False


@njit(cache=True, _nrt=False)
def no_data_acked(E, e):
    ack = (E[e].ack_wraps << 32) | E[e].ack_seq
    return ack == E[e].start_seq or ack == E[e].start_seq + 1


@njit(cache=True, _nrt=False)
def ep_size(E, e):
    """Bytes the endpoint sent, as conn.log's orig_bytes / resp_bytes (Endpoint.size)."""
    p = e ^ 1
    if E[e].prev_state == SYN_SENT and E[e].state == RESET and E[p].state == INACTIVE and not no_data_acked(E, e):
        return U64_0
    last = np.uint64((E[e].seq_wraps << 32) | E[e].last_seq)
    ack = np.uint64((E[e].ack_wraps << 32) | E[e].ack_seq)
    size = (max(ack, last)) - np.uint64(E[e].start_seq)
    if size != U64_0:
        size -= U64_1
    if E[e].fin_cnt > 0 and size != U64_0:
        size -= U64_1
    return size


@njit(cache=True, _nrt=False)
def set_state(F, P, e, new):
    """Endpoint.set_state: leaving the handshake on both sides sets the TCP inactivity timeout."""
    E = F.endpoints
    st = E[e].state
    if new == st:
        return
    if new > SYN_ACK_SENT and st <= SYN_ACK_SENT and E[e ^ 1].state <= SYN_ACK_SENT:
        F.conns[e // 2].inactivity_timeout = P.timeouts[CFG_TCP_INACT]
    E[e].prev_state = st
    E[e].state = new


@njit(cache=True, _nrt=False)
def init_seqs(E, e, start, last):
    E[e].start_seq = start
    E[e].ack_seq = start
    E[e].last_seq = last


@njit(cache=True, _nrt=False)
def update_last_seq_raw(E, e, seq):
    if seq < E[e].last_seq:
        E[e].seq_wraps += 1
    E[e].last_seq = seq


@njit(cache=True, _nrt=False)
def update_ack_seq(E, e, seq):
    if seq < E[e].ack_seq:
        E[e].ack_wraps += 1
    E[e].ack_seq = seq
