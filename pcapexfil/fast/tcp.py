"""Zeek's TCP endpoint state machine as numba functions over the fast flow table's arrays.

A line-by-line port of `pcapexfil.flow.tcp` (itself a port of Zeek's TCPSessionAdapter /
TCP_Endpoint / TCP_Reassembler bookkeeping): the same names, the same order of effects,
so the two can be read side by side. State lives in the table's arrays:

- `C`: one `CONN_DTYPE` row per connection slot (the adapter's flags live here too);
- `E`: one `EP_DTYPE` row per endpoint, slot `2*c + phys`; `C[c].orig_ep` says which of
  the two is the originator now (a role flip swaps that bit, not the rows);
- `EC`: scaled-history counters per endpoint (count, threshold) for chk/win0/rxmt/gap;
- `BL`: per-endpoint reassembler blocks `[seq, upper)` (sorted, disjoint), `E.nblocks` used;
- `HI`: history letters per connection, `C.hist_len` used.

Relative sequence numbers are uint64 like the reference's `& M64` values; raw sequence
numbers are int64 holding 32-bit values.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Endpoint states (Zeek's TCP_ENDPOINT_*), as in flow.tcp.
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

HIST_SYN = 0x1
HIST_FIN = 0x2
HIST_RST = 0x4
HIST_FIN_RST = 0x8
HIST_DATA = 0x10
HIST_ACK = 0x20
HIST_MULTI_FLAG = 0x40

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10

TOO_LARGE_SEQ_DELTA = 1048576
MAX_INITIAL_WINDOW = 16384
MAX_ABOVE_HOLE_WITHOUT_ACKS = 16384
EXCESSIVE_DATA_WITHOUT_ACKS = 10 * 1024 * 1024
M32 = 0xFFFFFFFF

# Scaled-history counters (EC second index).
CNT_CHK, CNT_WIN0, CNT_RXMT, CNT_GAP = 0, 1, 2, 3

# Connection weirds, by bit (C.weirds_seen) and code; names in WEIRD_NAMES.
W_SYN_SEQ_JUMP = 0
W_SYN_INSIDE = 1
W_SEQ_UNDERFLOW = 2
W_ACK_UNDERFLOW = 3
W_TRUNCATED = 4
W_ABOVE_HOLE = 5
W_EXCESSIVE = 6
W_BAD_TCP_CHK = 7
W_BAD_UDP_CHK = 8
W_BAD_ICMP_CHK = 9
WEIRD_NAMES = (
    "SYN_seq_jump",
    "SYN_inside_connection",
    "TCP_seq_underflow_or_misorder",
    "TCP_ack_underflow_or_misorder",
    "truncated_tcp_payload",
    "above_hole_data_without_any_acks",
    "excessive_data_without_further_acks",
    "bad_TCP_checksum",
    "bad_UDP_checksum",
    "bad_ICMP_checksum",
)

# Timer kinds.
T_INACTIVITY, T_DELETE, T_ATTEMPT, T_EXPIRE = 0, 1, 2, 3

# Config slots (CFG float array).
CFG_TCP_INACT, CFG_UDP_INACT, CFG_ICMP_INACT, CFG_UNKNOWN_INACT = 0, 1, 2, 3
CFG_ATTEMPT, CFG_CLOSE, CFG_SYN_TIMEOUT, CFG_SESSION, CFG_LINGER = 4, 5, 6, 7, 8
CFG_SIZE = 9

# Global scalar slots (G int64 array, GF float64 array).
G_SERIAL, G_TOUCH, G_LIVE, G_TIMER_SEQ, G_HEAP_N, G_NFREE, G_EV_N, G_REC_N = 0, 1, 2, 3, 4, 5, 6, 7
G_MAX_FLOWS, G_TICK_PENDING, G_HAVE_TICK, G_LAST_C, G_LAST_SERIAL, G_ANALYZERS, G_EVICTED = 8, 9, 10, 11, 12, 13, 14
G_SIZE = 16
GF_NOW, GF_PNOW, GF_NEXT_TICK = 0, 1, 2
GF_SIZE = 4

# Event kinds (the ordered stream the kernel hands back to Python).
EV_NEW, EV_PKT, EV_REC, EV_TICK, EV_WEIRD, EV_EVICT = 0, 1, 2, 3, 4, 5

EV_DTYPE = np.dtype(
    [
        ("kind", np.uint8),
        ("is_orig", np.uint8),
        ("code", np.uint8),
        ("serial", np.int64),
        ("conn", np.int64),  # slot (EV_PKT: to mark the connection's analyzers done)
        ("row", np.int64),  # EV_PKT: batch row; EV_REC: record row
        ("ts", np.float64),
        ("start_ts", np.float64),
        ("orig_hi", np.uint64),
        ("orig_lo", np.uint64),
        ("resp_hi", np.uint64),
        ("resp_lo", np.uint64),
        ("orig_p", np.int32),
        ("resp_p", np.int32),
    ]
)

EP_DTYPE = np.dtype(
    [
        ("state", np.int8),
        ("prev_state", np.int8),
        ("is_orig", np.bool_),
        ("did_close", np.bool_),
        ("start_seq", np.int64),
        ("last_seq", np.int64),
        ("ack_seq", np.int64),
        ("seq_wraps", np.int64),
        ("ack_wraps", np.int64),
        ("fin_cnt", np.int64),
        ("rst_cnt", np.int64),
        ("fin_seq", np.uint64),
        ("hist_last_syn", np.uint64),
        ("hist_last_fin", np.uint64),
        ("hist_last_rst", np.uint64),
        # Reassembler
        ("nblocks", np.int64),
        ("last_reassem_seq", np.uint64),
        ("trim_seq", np.uint64),
        ("data_upper", np.uint64),
        ("skip_deliveries", np.bool_),
        ("did_eof", np.bool_),
    ]
)

CONN_DTYPE = np.dtype(
    [
        ("live", np.bool_),
        ("serial", np.int64),
        ("hslot", np.int64),
        ("hash", np.uint64),
        ("proto", np.uint8),
        ("oneway", np.uint8),
        ("k_ahi", np.uint64),
        ("k_alo", np.uint64),
        ("k_bhi", np.uint64),
        ("k_blo", np.uint64),
        ("k_ap", np.int32),
        ("k_bp", np.int32),
        ("orig_hi", np.uint64),
        ("orig_lo", np.uint64),
        ("resp_hi", np.uint64),
        ("resp_lo", np.uint64),
        ("orig_p", np.int32),
        ("resp_p", np.int32),
        ("start_ts", np.float64),
        ("last_ts", np.float64),
        ("hist_len", np.int64),
        ("hist_seen", np.int64),
        ("orig_pkts", np.int64),
        ("orig_ip_bytes", np.int64),
        ("resp_pkts", np.int64),
        ("resp_ip_bytes", np.int64),
        ("missed_bytes", np.int64),
        ("orig_len", np.int64),
        ("resp_len", np.int64),
        ("inactivity_timeout", np.float64),
        ("timer_gen", np.int64),
        ("weirds_seen", np.int64),
        ("touch", np.int64),
        ("orig_ep", np.uint8),
        ("is_tcp", np.bool_),
        ("is_partial", np.bool_),
        ("first_packet_seen", np.int64),
        ("is_active", np.bool_),
        ("synack_first", np.bool_),
        ("close_deferred", np.bool_),
        ("app_mode", np.uint8),  # 0: first packet wanted, 1: every packet, 2: none
        ("app_call", np.int64),  # kernel call in which app_sent was counted
        ("app_sent", np.int64),  # packets handed to the analyzers in that call
        ("app_dead", np.uint8),  # mode 1, TCP: bit 1 / 2: the orig / resp byte stream ended for analyzers
        ("chk_orig_cnt", np.int64),
        ("chk_orig_thr", np.int64),
        ("chk_resp_cnt", np.int64),
        ("chk_resp_thr", np.int64),
    ]
)

U64_1 = np.uint64(1)
U64_0 = np.uint64(0)


class State:
    """The arrays one numba flow table lives in (grown from Python by `fast.table`)."""

    def __init__(self, cap: int, hist: int, blocks: int, heap: int) -> None:
        self.C = np.zeros(cap, CONN_DTYPE)
        self.E = np.zeros(2 * cap, EP_DTYPE)
        self.EC = np.zeros((2 * cap, 4, 2), np.int64)
        self.BL = np.zeros((2 * cap, blocks, 2), np.uint64)
        self.HI = np.zeros((cap, hist), np.uint8)
        self.free = np.arange(cap - 1, -1, -1, dtype=np.int64)
        self.hidx = np.full(4 * cap, -1, np.int64)
        self.h_when = np.zeros(heap, np.float64)
        self.h_seq = np.zeros(heap, np.int64)
        self.h_conn = np.zeros(heap, np.int64)
        self.h_serial = np.zeros(heap, np.int64)
        self.h_kind = np.zeros(heap, np.int8)
        self.h_gen = np.zeros(heap, np.int64)


# -- small helpers ----------------------------------------------------------------------


@njit(cache=True, _nrt=False, inline="always")
def seq_delta(a, b):
    d = (a - b) & M32
    if d & 0x80000000:
        return d - 0x100000000
    return d


@njit(cache=True, _nrt=False)
def orig_phys(C, c):
    return 2 * c + np.int64(C[c].orig_ep)


@njit(cache=True, _nrt=False)
def hist_append(C, HI, c, ch):
    n = C[c].hist_len
    HI[c, n] = ch
    C[c].hist_len = n + 1


@njit(cache=True, _nrt=False)
def conn_check_history(C, HI, c, mask, ch):
    """Record `ch` the first time `mask` is seen; True if it was seen before."""
    if C[c].hist_seen & mask:
        return True
    C[c].hist_seen = C[c].hist_seen | mask
    hist_append(C, HI, c, ch)
    return False


@njit(cache=True, _nrt=False)
def lower(ch):
    if 65 <= ch <= 90:
        return ch + 32
    return ch


@njit(cache=True, _nrt=False)
def swapcase(ch):
    if 65 <= ch <= 90:
        return ch + 32
    if 97 <= ch <= 122:
        return ch - 32
    return ch


@njit(cache=True, _nrt=False)
def ep_check_history(C, E, HI, e, mask, ch):
    if not E[e].is_orig:
        mask = mask << 16
        ch = lower(ch)
    return conn_check_history(C, HI, e // 2, mask, ch)


@njit(cache=True, _nrt=False)
def ep_add_history(C, E, HI, e, ch):
    hist_append(C, HI, e // 2, ch if E[e].is_orig else lower(ch))


@njit(cache=True, _nrt=False)
def scaled(C, HI, EC, e, k, ch):
    """Endpoint scaled history: record at the 1st, 10th, 100th ... occurrence."""
    if EC[e, k, 1] == 0:
        EC[e, k, 1] = 1
    EC[e, k, 0] += 1
    if EC[e, k, 0] == EC[e, k, 1]:
        hist_append(C, HI, e // 2, ch)
        EC[e, k, 1] *= 10


@njit(cache=True, _nrt=False)
def ep_scaled(C, E, HI, EC, e, k, ch):
    scaled(C, HI, EC, e, k, ch if E[e].is_orig else lower(ch))


# -- events -----------------------------------------------------------------------------


@njit(cache=True, _nrt=False)
def ev_conn(EV, G, kind, C, c, ts):
    """Append an event naming connection slot `c` as it is now."""
    n = G[G_EV_N]
    ev = EV[n]
    ev.kind = kind
    ev.serial = C[c].serial
    ev.conn = c
    ev.ts = ts
    ev.start_ts = C[c].start_ts
    ev.orig_hi = C[c].orig_hi
    ev.orig_lo = C[c].orig_lo
    ev.resp_hi = C[c].resp_hi
    ev.resp_lo = C[c].resp_lo
    ev.orig_p = C[c].orig_p
    ev.resp_p = C[c].resp_p
    G[G_EV_N] = n + 1
    return n


@njit(cache=True, _nrt=False)
def conn_weird(C, EV, G, GF, c, code):
    """Once per connection and name (Zeek's weird_ignore), at the table's network time."""
    bit = np.int64(1) << code
    if C[c].weirds_seen & bit:
        return
    C[c].weirds_seen = C[c].weirds_seen | bit
    if G[G_EV_N] >= EV.shape[0]:
        return  # cannot happen: room is checked per packet
    n = ev_conn(EV, G, EV_WEIRD, C, c, GF[GF_NOW])
    EV[n].code = code


# -- timers: a binary heap ordered by (when, seq) ---------------------------------------


@njit(cache=True, _nrt=False)
def _heap_less(S_when, S_seq, i, j):
    if S_when[i] != S_when[j]:
        return S_when[i] < S_when[j]
    return S_seq[i] < S_seq[j]


@njit(cache=True, _nrt=False)
def _heap_swap(hw, hs, hc, hser, hk, hg, i, j):
    hw[i], hw[j] = hw[j], hw[i]
    hs[i], hs[j] = hs[j], hs[i]
    hc[i], hc[j] = hc[j], hc[i]
    hser[i], hser[j] = hser[j], hser[i]
    hk[i], hk[j] = hk[j], hk[i]
    hg[i], hg[j] = hg[j], hg[i]


@njit(cache=True, _nrt=False)
def schedule(G, C, hw, hs, hc, hser, hk, hg, when, c, kind):
    n = G[G_HEAP_N]
    hw[n] = when
    hs[n] = G[G_TIMER_SEQ]
    G[G_TIMER_SEQ] += 1
    hc[n] = c
    hser[n] = C[c].serial
    hk[n] = kind
    hg[n] = C[c].timer_gen
    G[G_HEAP_N] = n + 1
    i = n
    while i > 0:
        p = (i - 1) // 2
        if _heap_less(hw, hs, i, p):
            _heap_swap(hw, hs, hc, hser, hk, hg, i, p)
            i = p
        else:
            break


@njit(cache=True, _nrt=False)
def heap_pop(G, hw, hs, hc, hser, hk, hg):
    """Remove the root (the caller read it first)."""
    n = G[G_HEAP_N] - 1
    G[G_HEAP_N] = n
    if n == 0:
        return
    hw[0], hs[0], hc[0], hser[0], hk[0], hg[0] = hw[n], hs[n], hc[n], hser[n], hk[n], hg[n]
    i = 0
    while True:
        lft = 2 * i + 1
        if lft >= n:
            break
        m = lft
        r = lft + 1
        if r < n and _heap_less(hw, hs, r, lft):
            m = r
        if _heap_less(hw, hs, m, i):
            _heap_swap(hw, hs, hc, hser, hk, hg, i, m)
            i = m
        else:
            break


# -- endpoints (flow.tcp.Endpoint) -------------------------------------------------------


@njit(cache=True, _nrt=False)
def rel(E, e, seq, wraps):
    return np.uint64((wraps << 32) | seq) - np.uint64(E[e].start_seq)


@njit(cache=True, _nrt=False)
def no_data_acked(E, e):
    ack = (E[e].ack_wraps << 32) | E[e].ack_seq
    return ack == E[e].start_seq or ack == E[e].start_seq + 1


@njit(cache=True, _nrt=False)
def ep_size(E, e):
    p = e ^ 1
    if E[e].prev_state == SYN_SENT and E[e].state == RESET and E[p].state == INACTIVE and not no_data_acked(E, e):
        return U64_0
    last = np.uint64((E[e].seq_wraps << 32) | E[e].last_seq)
    ack = np.uint64((E[e].ack_wraps << 32) | E[e].ack_seq)
    size = (last if last > ack else ack) - np.uint64(E[e].start_seq)
    if size != U64_0:
        size -= U64_1
    if E[e].fin_cnt > 0 and size != U64_0:
        size -= U64_1
    return size


@njit(cache=True, _nrt=False)
def set_state(C, E, CFG, e, new):
    st = E[e].state
    if new == st:
        return
    if new > SYN_ACK_SENT and st <= SYN_ACK_SENT and E[e ^ 1].state <= SYN_ACK_SENT:
        C[e // 2].inactivity_timeout = CFG[CFG_TCP_INACT]
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


# -- reassembler (flow.tcp.Reassembler) --------------------------------------------------


@njit(cache=True, _nrt=False)
def has_blocks(E, e):
    return E[e].data_upper > E[e].trim_seq


@njit(cache=True, _nrt=False)
def data_pending(E, BL, e):
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
def _del_block0(E, BL, e):
    n = E[e].nblocks
    for k in range(1, n):
        BL[e, k - 1, 0] = BL[e, k, 0]
        BL[e, k - 1, 1] = BL[e, k, 1]
    E[e].nblocks = n - 1


@njit(cache=True, _nrt=False)
def block_inserted(C, E, BL, e):
    lrs = E[e].last_reassem_seq
    while E[e].nblocks > 0 and BL[e, 0, 0] <= lrs:
        if BL[e, 0, 1] > lrs:
            lrs = BL[e, 0, 1]
        _del_block0(E, BL, e)
    E[e].last_reassem_seq = lrs
    if no_data_acked(E, e) and ep_size(E, e) > np.uint64(MAX_INITIAL_WINDOW):
        # Reference: self._trim(lrs), which here only moves trim_seq (nothing is below lrs).
        E[e].trim_seq = lrs


@njit(cache=True, _nrt=False)
def new_block(C, E, BL, e, seq, upper):
    trim = E[e].trim_seq
    if upper <= seq or upper <= trim:
        return
    if trim > seq:
        seq = trim
    if upper > E[e].data_upper:
        E[e].data_upper = upper
    n = E[e].nblocks
    i = 0
    while i < n and BL[e, i, 1] < seq:
        i += 1
    j = i
    while j < n and BL[e, j, 0] <= upper:
        if BL[e, j, 0] < seq:
            seq = BL[e, j, 0]
        if BL[e, j, 1] > upper:
            upper = BL[e, j, 1]
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
    block_inserted(C, E, BL, e)


@njit(cache=True, _nrt=False)
def _clear(E, e):
    E[e].nblocks = 0
    E[e].data_upper = U64_0
    E[e].skip_deliveries = True


@njit(cache=True, _nrt=False)
def data_sent(C, E, BL, EV, G, GF, e, seq, length):
    if E[e].skip_deliveries:
        return
    ack = rel(E, e, E[e].ack_seq, E[e].ack_wraps)
    upper = seq + np.uint64(length)
    if seq < ack:
        if upper <= ack:
            return
        seq = ack
    new_block(C, E, BL, e, seq, upper)
    n = E[e].nblocks
    undelivered = np.int64(BL[e, n - 1, 1]) - np.int64(E[e].last_reassem_seq) if n > 0 else 0
    if no_data_acked(E, e) and undelivered > MAX_ABOVE_HOLE_WITHOUT_ACKS:
        conn_weird(C, EV, G, GF, e // 2, W_ABOVE_HOLE)
        _clear(E, e)
    else:
        total = U64_0
        for k in range(n):
            total += BL[e, k, 1] - BL[e, k, 0]
        if total > np.uint64(EXCESSIVE_DATA_WITHOUT_ACKS):
            conn_weird(C, EV, G, GF, e // 2, W_EXCESSIVE)
            _clear(E, e)


@njit(cache=True, _nrt=False)
def _is_clean(E, e):
    st = E[e].state
    return st == ESTABLISHED or (st == CLOSED and E[e].prev_state == ESTABLISHED)


@njit(cache=True, _nrt=False)
def _gap(C, E, HI, EC, e, length):
    if _is_clean(E, e) and _is_clean(E, e ^ 1):
        scaled(C, HI, EC, e, CNT_GAP, 71 if E[e].is_orig else 103)  # G / g
        c = e // 2
        C[c].missed_bytes += np.int64(length)


@njit(cache=True, _nrt=False)
def undelivered_to(C, E, BL, HI, EC, e, up_to):
    if up_to <= np.uint64(2) and C[e // 2].is_partial:
        return
    if not E[e].skip_deliveries:
        while E[e].nblocks > 0 and BL[e, 0, 0] < up_to:
            s = BL[e, 0, 0]
            u = BL[e, 0, 1]
            lrs = E[e].last_reassem_seq
            if s >= lrs:
                _gap(C, E, HI, EC, e, s - lrs)
            _del_block0(E, BL, e)
            if u > E[e].last_reassem_seq:
                E[e].last_reassem_seq = u
        lrs = E[e].last_reassem_seq
        if up_to > lrs:
            _gap(C, E, HI, EC, e, up_to - lrs)
    if up_to > E[e].last_reassem_seq:
        E[e].last_reassem_seq = up_to


@njit(cache=True, _nrt=False)
def _trim(C, E, BL, HI, EC, e, seq):
    if seq > E[e].last_reassem_seq:
        undelivered_to(C, E, BL, HI, EC, e, seq)
    while E[e].nblocks > 0 and BL[e, 0, 1] <= seq:
        _del_block0(E, BL, e)
    if E[e].nblocks > 0 and BL[e, 0, 0] <= E[e].last_reassem_seq:
        block_inserted(C, E, BL, e)
    E[e].trim_seq = seq


# -- adapter (flow.tcp.TCPAdapter) -------------------------------------------------------


@njit(cache=True, _nrt=False)
def flip_endpoints(C, E, c):
    o = 2 * c + np.int64(C[c].orig_ep)
    C[c].orig_ep = 1 - C[c].orig_ep
    E[o].is_orig = False
    E[o ^ 1].is_orig = True
    fps = C[c].first_packet_seen
    C[c].first_packet_seen = (2 if fps & 1 else 0) | (1 if fps & 2 else 0)
    C[c].is_partial = False


@njit(cache=True, _nrt=False)
def flip_roles(C, E, HI, c, recase):
    """Connection.flip_roles: swap originator and responder, note it with '^'."""
    if recase:
        n = C[c].hist_len
        for k in range(n, 0, -1):
            HI[c, k] = swapcase(HI[c, k - 1])
        HI[c, 0] = 94  # '^'
        C[c].hist_len = n + 1
        seen = C[c].hist_seen
        C[c].hist_seen = ((seen & 0xFFFF) << 16) | (seen >> 16)
    else:
        hist_append(C, HI, c, 94)
    C[c].orig_hi, C[c].resp_hi = C[c].resp_hi, C[c].orig_hi
    C[c].orig_lo, C[c].resp_lo = C[c].resp_lo, C[c].orig_lo
    C[c].orig_p, C[c].resp_p = C[c].resp_p, C[c].orig_p
    C[c].orig_pkts, C[c].resp_pkts = C[c].resp_pkts, C[c].orig_pkts
    C[c].orig_ip_bytes, C[c].resp_ip_bytes = C[c].resp_ip_bytes, C[c].orig_ip_bytes
    C[c].orig_len, C[c].resp_len = C[c].resp_len, C[c].orig_len
    if C[c].is_tcp:
        flip_endpoints(C, E, c)


@njit(cache=True, _nrt=False)
def synack_sender_is_responder(C, E, c):
    r = 2 * c + 1 - np.int64(C[c].orig_ep)
    if E[r].state == SYN_ACK_SENT:
        E[r].prev_state = INACTIVE
        E[r].state = ESTABLISHED
    C[c].is_partial = False
    C[c].first_packet_seen = C[c].first_packet_seen | 2


@njit(cache=True, _nrt=False)
def is_closed(C, E, c):
    return E[2 * c].did_close or E[2 * c + 1].did_close


@njit(cache=True, _nrt=False)
def is_reuse(C, E, c, flags, seq):
    if not flags & TH_SYN:
        return False
    o = orig_phys(C, c)
    conn_orig = o
    if flags & TH_ACK:
        if E[o].state != INACTIVE:
            return False
        conn_orig = o ^ 1
    if not is_closed(C, E, c):
        if seq == E[conn_orig].start_seq:
            return False
        if (
            not flags & TH_ACK
            and E[conn_orig].state == SYN_ACK_SENT
            and E[o ^ 1].state == INACTIVE
            and seq == E[o ^ 1].start_seq
        ):
            return False
    return True


@njit(cache=True, _nrt=False)
def _relative(E, e, cur, last, wraps):
    delta = seq_delta(cur, last)
    if delta < 0:
        if wraps and cur > last:
            wraps -= 1
    elif delta > 0:
        if cur < last:
            wraps += 1
    if wraps == 0:
        d = seq_delta(cur, E[e].start_seq)
        return np.uint64(d), d < 0
    return np.uint64((wraps << 32) | cur) - np.uint64(E[e].start_seq), False


@njit(cache=True, _nrt=False)
def _init_endpoint(C, E, EV, G, GF, e, syn, seq, seq_end):
    st = E[e].state
    if st == INACTIVE:
        if syn:
            E[e].start_seq = seq
            E[e].ack_seq = seq
            E[e].last_seq = seq_end
        else:
            E[e].start_seq = (seq - 1) & M32
            E[e].ack_seq = (seq - 1) & M32
            E[e].last_seq = seq
    elif st == SYN_SENT or st == SYN_ACK_SENT:
        if syn and seq != E[e].start_seq:
            conn_weird(C, EV, G, GF, e // 2, W_SYN_SEQ_JUMP)
            init_seqs(E, e, seq, seq_end)
    elif st == ESTABLISHED or st == PARTIAL:
        if syn:
            if ep_size(E, e) > U64_0:
                conn_weird(C, EV, G, GF, e // 2, W_SYN_INSIDE)
            init_seqs(E, e, seq, seq_end)
    elif st == RESET:
        if syn and E[e].prev_state == INACTIVE:
            init_seqs(E, e, seq, seq_end)


@njit(cache=True, _nrt=False)
def _update_history(C, E, HI, e, flags, rel_seq, length):
    syn = flags & TH_SYN
    fin = flags & TH_FIN
    rst = flags & TH_RST
    bits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
    if bits > 1:
        if fin and rst:
            ep_check_history(C, E, HI, e, HIST_FIN_RST, 73)  # I
        else:
            ep_check_history(C, E, HI, e, HIST_MULTI_FLAG, 81)  # Q
    elif bits == 1:
        if syn:
            code = 72 if flags & TH_ACK else 83  # H / S
            if ep_check_history(C, E, HI, e, HIST_SYN, code) and rel_seq != E[e].hist_last_syn:
                ep_add_history(C, E, HI, e, code)
            E[e].hist_last_syn = rel_seq
        if fin:
            end = rel_seq + np.uint64(length)
            if ep_check_history(C, E, HI, e, HIST_FIN, 70) and end != E[e].hist_last_fin:
                ep_add_history(C, E, HI, e, 70)
            E[e].hist_last_fin = end
        if rst:
            if ep_check_history(C, E, HI, e, HIST_RST, 82) and rel_seq != E[e].hist_last_rst:
                ep_add_history(C, E, HI, e, 82)
            E[e].hist_last_rst = rel_seq
    elif length:
        ep_check_history(C, E, HI, e, HIST_DATA, 68)
    elif flags & TH_ACK:
        ep_check_history(C, E, HI, e, HIST_ACK, 65)


@njit(cache=True, _nrt=False)
def _update_last_seq(C, E, HI, EC, e, seq_end, flags, length):
    delta = seq_delta(seq_end, E[e].last_seq)
    if flags & (TH_SYN | TH_RST) and (delta > TOO_LARGE_SEQ_DELTA or delta < -TOO_LARGE_SEQ_DELTA):
        pass
    elif flags & TH_FIN and E[e].last_seq == ((E[e].start_seq + 1) & M32):
        update_last_seq_raw(E, e, seq_end)
    elif E[e].state == RESET:
        pass
    elif delta > 0:
        update_last_seq_raw(E, e, seq_end)
    elif length > 0:
        ep_scaled(C, E, HI, EC, e, CNT_RXMT, 84)  # T


@njit(cache=True, _nrt=False)
def ack_received(C, E, BL, HI, EC, EV, G, GF, CFG, T, e, seq):
    if E[e].fin_cnt > 0 and seq >= E[e].fin_seq:
        if E[e].fin_seq == U64_0:
            return  # reference: -1 <= trim_seq
        seq = E[e].fin_seq - U64_1
    if seq <= E[e].trim_seq:
        return
    _trim(C, E, BL, HI, EC, e, seq)
    check_eof(C, E, BL, HI, EC, EV, G, GF, CFG, T, e)


@njit(cache=True, _nrt=False)
def check_eof(C, E, BL, HI, EC, EV, G, GF, CFG, T, e):
    if (
        not E[e].did_eof
        and (E[e].fin_cnt > 0 or E[e].state == CLOSED or E[e].state == RESET)
        and not data_pending(E, BL, e)
    ):
        E[e].did_eof = True
        c = e // 2
        if C[c].close_deferred:
            connection_closed(C, E, BL, G, CFG, T, e)
            C[c].close_deferred = False


@njit(cache=True, _nrt=False)
def connection_closed(C, E, BL, G, CFG, T, e):
    c = e // 2
    p = e ^ 1
    if data_pending(E, BL, e):
        C[c].close_deferred = True
        return
    C[c].close_deferred = False
    if E[e].did_close:
        return
    E[e].did_close = True
    hw, hs, hc, hser, hk, hg = T
    if E[e].state == RESET or E[p].did_close or E[p].state == INACTIVE:
        C[c].is_active = False
        C[c].timer_gen += 1
        schedule(G, C, hw, hs, hc, hser, hk, hg, C[c].last_ts + CFG[CFG_CLOSE], c, T_DELETE)
    elif E[e].prev_state != INACTIVE:
        schedule(G, C, hw, hs, hc, hser, hk, hg, C[c].last_ts + CFG[CFG_SESSION], c, T_EXPIRE)


@njit(cache=True, _nrt=False)
def _state_machine(C, E, HI, G, CFG, T, e, ts, seq, length, is_orig, flags):
    syn = flags & TH_SYN
    fin = flags & TH_FIN
    rst = flags & TH_RST
    ackf = flags & TH_ACK
    c = e // 2
    p = e ^ 1
    do_close = False
    st = E[e].state
    if st == INACTIVE:
        if syn:
            if is_orig:
                set_state(C, E, CFG, e, SYN_ACK_SENT if ackf else SYN_SENT)
                hw, hs, hc, hser, hk, hg = T
                schedule(G, C, hw, hs, hc, hser, hk, hg, ts + CFG[CFG_ATTEMPT], c, T_ATTEMPT)
            else:
                if not ackf and E[p].state == SYN_ACK_SENT and seq == E[e].start_seq:
                    C[c].is_partial = False
                    flip_roles(C, E, HI, c, False)
                    set_state(C, E, CFG, p, ESTABLISHED)
                    C[c].first_packet_seen = C[c].first_packet_seen | (1 if E[e].is_orig else 2)
                if E[p].state == SYN_SENT:
                    set_state(C, E, CFG, p, ESTABLISHED)
                set_state(C, E, CFG, e, ESTABLISHED)
        if fin:
            set_state(C, E, CFG, e, CLOSED)
            do_close = True
        if rst:
            set_state(C, E, CFG, e, RESET)
            do_close = True
        if E[e].state == INACTIVE:
            if not is_orig and length == 0 and E[orig_phys(C, c)].state == SYN_SENT:
                pass
            elif ackf and E[p].state == ESTABLISHED:
                set_state(C, E, CFG, e, ESTABLISHED)
                C[c].is_partial = False
                C[c].first_packet_seen = C[c].first_packet_seen | (1 if E[e].is_orig else 2)
            else:
                set_state(C, E, CFG, e, PARTIAL)
    elif st == SYN_SENT or st == SYN_ACK_SENT:
        if fin:
            set_state(C, E, CFG, e, CLOSED)
            do_close = True
        if rst:
            set_state(C, E, CFG, e, RESET)
            C[c].is_active = False
            do_close = True
    elif st == ESTABLISHED or st == PARTIAL:
        if syn and st == PARTIAL and E[p].state == INACTIVE and not ackf:
            set_state(C, E, CFG, e, SYN_SENT)
        if fin and not rst:
            set_state(C, E, CFG, e, CLOSED)
            if E[p].state == RESET and E[p].prev_state == CLOSED:
                set_state(C, E, CFG, p, CLOSED)
            do_close = True
        if rst:
            set_state(C, E, CFG, e, RESET)
            do_close = True
            if E[p].state != RESET or E[p].prev_state != ESTABLISHED:
                C[c].is_active = False
    elif st == CLOSED:
        if rst and E[p].state != CLOSED:
            set_state(C, E, CFG, e, RESET)
            if not E[e].did_close:
                do_close = True
    return do_close


@njit(cache=True, _nrt=False)
def tcp_process(C, E, BL, HI, EC, EV, G, GF, CFG, T, c, is_orig, ts, flags, seq, ack, window, length, caplen):
    """TCPAdapter.process."""
    o = orig_phys(C, c)
    e = o if is_orig else o ^ 1
    p = e ^ 1
    syn = flags & TH_SYN
    fin = flags & TH_FIN
    rst = flags & TH_RST
    ackf = flags & TH_ACK

    fps = C[c].first_packet_seen
    if E[e].is_orig:
        if not fps & 1:
            C[c].is_partial = (not syn) or ackf != 0
    elif not fps & 2 and not C[c].is_partial:
        C[c].is_partial = not syn

    seg_len = length + (1 if syn else 0) + (1 if fin else 0)
    if rst:
        seg_len -= length
    seq_end = (seq + seg_len) & M32
    _init_endpoint(C, E, EV, G, GF, e, syn, seq, seq_end)

    rel_seq, seq_underflow = _relative(E, e, seq, E[e].last_seq, E[e].seq_wraps)
    if seq_underflow and not rst:
        conn_weird(C, EV, G, GF, c, W_SEQ_UNDERFLOW)

    _update_history(C, E, HI, e, flags, rel_seq, length)
    if window == 0 and not rst and E[p].state != CLOSED and E[e].state != RESET:
        ep_scaled(C, E, HI, EC, e, CNT_WIN0, 87)  # W

    if not E[o].did_close or not E[o ^ 1].did_close:
        C[c].last_ts = ts

    if fin:
        E[e].fin_cnt += 1
        E[e].fin_seq = rel_seq + np.uint64(seg_len)
    if rst:
        E[e].rst_cnt += 1

    rel_ack = U64_0
    if ackf:
        if E[p].state == INACTIVE:
            rel_ack = U64_1
            start = (ack - 1) & M32
            E[p].start_seq = start
            E[p].ack_seq = start
            E[p].last_seq = start
        else:
            rel_ack, ack_underflow = _relative(E, p, ack, E[p].ack_seq, E[p].ack_wraps)
            if ack_underflow:
                rel_ack = U64_0
                conn_weird(C, EV, G, GF, c, W_ACK_UNDERFLOW)
            elif not rst:
                delta_ack = seq_delta(ack, E[p].ack_seq)
                if not (ack == 0 and delta_ack > TOO_LARGE_SEQ_DELTA) and delta_ack > 0:
                    update_ack_seq(E, p, ack)

    _update_last_seq(C, E, HI, EC, e, seq_end, flags, length)

    do_close = _state_machine(C, E, HI, G, CFG, T, e, ts, seq, length, is_orig, flags)

    if ackf:
        ack_received(C, E, BL, HI, EC, EV, G, GF, CFG, T, p, rel_ack)

    C[c].first_packet_seen = C[c].first_packet_seen | (1 if is_orig else 2)

    rel_data_seq = rel_seq + U64_1 if syn else rel_seq
    if length > 0 and not rst and not seq_underflow and caplen >= length:
        data_sent(C, E, BL, EV, G, GF, e, rel_data_seq, length)
    elif length > 0 and not rst and not seq_underflow:
        conn_weird(C, EV, G, GF, c, W_TRUNCATED)
    check_eof(C, E, BL, HI, EC, EV, G, GF, CFG, T, e)

    if do_close:
        connection_closed(C, E, BL, G, CFG, T, e)


@njit(cache=True, _nrt=False)
def attempt_timer(C, E, c):
    o = orig_phys(C, c)
    so = E[o].state
    return C[c].is_active and (so == SYN_SENT or so == SYN_ACK_SENT) and E[o ^ 1].state == INACTIVE


@njit(cache=True, _nrt=False)
def expire_timer(C, E, CFG, c, now):
    """1: remove. 0: keep and re-arm. -1: inactive, nothing to do."""
    if not C[c].is_active:
        return -1
    o = orig_phys(C, c)
    r = o ^ 1
    if C[c].last_ts + CFG[CFG_LINGER] < now:
        if E[o].did_close or E[r].did_close:
            if (
                (E[o].did_close and E[r].did_close)
                or E[o].state == RESET
                or E[r].state == RESET
                or E[o].state == INACTIVE
                or E[r].state == INACTIVE
            ):
                C[c].is_active = False
                return 1
        if E[r].state == INACTIVE and E[o].state == INACTIVE:
            return 1
    return 0


# conn_state codes, in the order of CONN_STATES.
CONN_STATES = ("OTH", "S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR")
CS_OTH, CS_S0, CS_S1, CS_SF, CS_REJ, CS_S2, CS_S3, CS_RSTO, CS_RSTR, CS_RSTOS0, CS_RSTRH, CS_SH, CS_SHR = range(13)


@njit(cache=True, _nrt=False)
def _is_rstos0(C, HI, c):
    """Zeek's /^?S[^HAFGIQ]*R.*/ against the whole history."""
    n = C[c].hist_len
    k = 0
    if n > 0 and HI[c, 0] == 94:
        k = 1
    if k >= n or HI[c, k] != 83:
        return False
    for j in range(k + 1, n):
        ch = HI[c, j]
        if ch == 82:
            return True
        if ch == 72 or ch == 65 or ch == 70 or ch == 71 or ch == 73 or ch == 81:
            return False
    return False


@njit(cache=True, _nrt=False)
def tcp_conn_state(C, E, HI, c):
    o = orig_phys(C, c)
    r = o ^ 1
    os_ = E[o].state
    rs = E[r].state
    o_inactive = os_ == INACTIVE or os_ == PARTIAL
    r_inactive = rs == INACTIVE or rs == PARTIAL
    if rs == RESET:
        if os_ == SYN_SENT or os_ == SYN_ACK_SENT or (
            os_ == RESET and ep_size(E, o) == U64_0 and ep_size(E, r) == U64_0
        ):
            return CS_REJ
        return CS_RSTRH if o_inactive else CS_RSTR
    if os_ == RESET:
        if r_inactive:
            return CS_RSTOS0 if _is_rstos0(C, HI, c) else CS_OTH
        return CS_RSTO
    if rs == CLOSED and os_ == CLOSED:
        return CS_SF
    if os_ == CLOSED:
        return CS_SH if r_inactive else CS_S2
    if rs == CLOSED:
        return CS_SHR if o_inactive else CS_S3
    if os_ == SYN_SENT and rs == INACTIVE:
        return CS_S0
    if os_ == ESTABLISHED and rs == ESTABLISHED:
        return CS_S1
    return CS_OTH
