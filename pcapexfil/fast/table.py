"""The fast flow table: Zeek connection state in an open-addressing hash table, in numba.

Same semantics as the reference `pcapexfil.flow.table.FlowTable` (which stays the
readable implementation and the test oracle): connection identity and originator choice,
per-protocol counters, the TCP state machine (below), timers on network time
(a binary heap ordered like the reference's heapq), connection splitting on 5-tuple reuse,
ICMP pairing, the LRU cap on live connections, and the pipeline's once-a-second ticks.

`process_batch` walks a batch of `PACKET_DTYPE` rows in order and writes an ordered event
stream (`EV_DTYPE`): new connection (a uid is drawn), packet an application analyzer needs,
the end of bytes the analyzers left to the kernel to count, finished record (a `REC_DTYPE`
row), tick, weird, eviction. Python replays that stream
(`fast.engine`), so analyzers, uids and sinks see exactly the reference's order of calls.
Whenever an array would overflow the kernel returns early, Python drains or grows
(`FastFlowTable.feed`), and the kernel resumes at the same row.

One file on purpose: numba's cache notices edits only in the file that defines a cached
function, so the TCP functions that `process_batch` compiles in must live beside it.

TCP part: Zeek's TCP endpoint state machine as numba functions over the table's arrays.

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

from collections.abc import Callable

import numpy as np

from pcapexfil.fast.batch import KIND_FOREIGN, KIND_SKIP
from pcapexfil.flow.ports import LIKELY_SERVER_PORTS, registered_analyzers
from pcapexfil.flow.table import (
    ICMP4_PAIRS,
    ICMP6_PAIRS,
    DNS_EXPIRE_SLACK,
    HIST_UNKNOWN_PKT,
    PORT_INACTIVITY_PORTS,
    TUNNEL_CHANGES_WEIRD,
    TUNNEL_MAX_CHANGES_PER_CONNECTION,
    FlowConfig,
)
from pcapexfil.jit import njit
from pcapexfil.services import REPLY_UDP_PORTS

# == TCP endpoints, connection state and events (port of flow/tcp.py) ==================

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
HALF_SEQ = 0x80000000  # sequence distances past half the space count backwards

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
W_TUNNEL_CHANGES = 10
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
    TUNNEL_CHANGES_WEIRD,
)

# Timer kinds.
T_INACTIVITY, T_DELETE, T_ATTEMPT, T_EXPIRE = 0, 1, 2, 3
T_DNS_EXPIRE = 4  # DNS_Analyzer::ExpireTimer (FlowTable._fire)
# Timers beyond 4 per live connection plus this many are compacted away (see heap_compact).
HEAP_SLACK = 4096

# Config slots (CFG float array).
CFG_TCP_INACT, CFG_UDP_INACT, CFG_ICMP_INACT, CFG_UNKNOWN_INACT = 0, 1, 2, 3
CFG_ATTEMPT, CFG_CLOSE, CFG_SYN_TIMEOUT, CFG_SESSION, CFG_LINGER = 4, 5, 6, 7, 8
CFG_DNS_SESSION, CFG_PORT_INACT = 9, 10
CFG_SIZE = 11
# PORTS blocks: likely_server_ports TCP, UDP; then TCP ports in port_inactivity_timeouts.
PORTS_UDP, PORTS_INACT = 65536, 2 * 65536

# Global scalar slots (G int64 array, GF float64 array).
G_SERIAL, G_TOUCH, G_LIVE, G_TIMER_SEQ, G_HEAP_N, G_NFREE, G_EV_N, G_REC_N = 0, 1, 2, 3, 4, 5, 6, 7
G_MAX_FLOWS, G_HAVE_TICK, G_ANALYZERS = 8, 9, 10
G_LRU_HEAD, G_LRU_TAIL = 11, 12  # least / most recently active live connection (-1: none)
G_SIZE = 13
GF_NOW, GF_PNOW, GF_NEXT_TICK = 0, 1, 2
GF_SIZE = 4

# Event kinds (the ordered stream the kernel hands back to Python).
EV_NEW, EV_PKT, EV_REC, EV_TICK, EV_WEIRD, EV_EVICT = 0, 1, 2, 3, 4, 5
# A segment the kernel counted ended what the analyzers offered (a body is complete): they
# take over the counts at its place in the stream, as at an EV_PKT, without the packet.
EV_COUNTED = 6

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
        # EV_PKT, EV_COUNTED: stream bytes the kernel counted for the analyzers in each
        # direction since the connection's previous one (`count_for_analyzers`).
        ("counted_orig", np.int64),
        ("counted_resp", np.int64),
        ("stream_start", np.int64),  # EV_PKT: its direction's EP_DTYPE.stream_start
        ("hist_len", np.int64),  # EV_PKT: the history's length after the packet (an analyzer's 'X' goes there)
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
        # Body bytes the analyzers leave to the kernel to count (`count_for_analyzers`):
        # the next in-order stream sequence, bytes still countable, bytes counted so far.
        ("sk_seq", np.int64),
        ("sk_left", np.int64),
        ("sk_used", np.int64),
        # Where the byte stream the analyzers read starts: SYN + 1, or the first payload's
        # sequence without a SYN (identifiers.stream.StreamDirection.add); -1 before either.
        ("stream_start", np.int64),
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
        ("lru_prev", np.int64),  # neighbours in the activity list (eviction order)
        ("lru_next", np.int64),
        ("orig_ep", np.uint8),
        ("is_tcp", np.bool_),
        ("is_partial", np.bool_),
        ("first_packet_seen", np.int64),
        ("is_active", np.bool_),
        ("synack_first", np.bool_),
        ("close_deferred", np.bool_),
        ("established", np.bool_),  # connection_established raised, port timeout not yet applied
        ("app_mode", np.uint8),  # APP_FIRST, APP_EVERY, APP_NONE: which packets the analyzers want
        ("app_call", np.int64),  # kernel call in which app_sent was counted
        ("app_sent", np.int64),  # packets handed to the analyzers in that call
        ("app_dead", np.uint8),  # mode 1, TCP: bit 1 / 2: the orig / resp byte stream ended for analyzers
        ("encap", np.uint64),  # the last packet's flow.table.encapsulation_key
        ("tunnel_changes", np.int64),  # tunnel_changed events raised (Connection::CheckEncapsulation)
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
    ev.counted_orig = 0
    ev.counted_resp = 0
    ev.stream_start = -1
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


@njit(cache=True, _nrt=False)
def check_encapsulation(C, HI, EV, G, GF, c, key):
    """Connection.check_encapsulation (Zeek's Connection::CheckEncapsulation): a packet of
    an existing connection came with another encapsulation."""
    if C[c].tunnel_changes >= TUNNEL_MAX_CHANGES_PER_CONNECTION:
        conn_weird(C, EV, G, GF, c, W_TUNNEL_CHANGES)
        conn_check_history(C, HI, c, HIST_UNKNOWN_PKT, 88)  # X
    else:
        C[c].tunnel_changes += 1
    C[c].encap = key


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
    _sift_down(hw, hs, hc, hser, hk, hg, n, 0)


@njit(cache=True, _nrt=False)
def heap_compact(G, C, hw, hs, hc, hser, hk, hg):
    """Drop the timers of connections that are gone and re-heapify.

    Popping skips such timers anyway, but evicted connections' timers would otherwise pile
    up until due: under a flood, memory would grow with the input, not with the cap.
    (when, seq) is a total order, so the pop order of the timers kept is unchanged.
    """
    n = G[G_HEAP_N]
    m = 0
    for i in range(n):
        c = hc[i]
        if C[c].live and C[c].serial == hser[i] and (hk[i] == T_INACTIVITY or hg[i] == C[c].timer_gen):
            hw[m], hs[m], hc[m], hser[m], hk[m], hg[m] = hw[i], hs[i], hc[i], hser[i], hk[i], hg[i]
            m += 1
    G[G_HEAP_N] = m
    for i in range(m // 2 - 1, -1, -1):
        _sift_down(hw, hs, hc, hser, hk, hg, m, i)


@njit(cache=True, _nrt=False)
def _sift_down(hw, hs, hc, hser, hk, hg, n, i):
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
    size = (max(ack, last)) - np.uint64(E[e].start_seq)
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
        lrs = max(lrs, BL[e, 0, 1])
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
            E[e].last_reassem_seq = max(E[e].last_reassem_seq, u)
        lrs = E[e].last_reassem_seq
        if up_to > lrs:
            _gap(C, E, HI, EC, e, up_to - lrs)
    E[e].last_reassem_seq = max(E[e].last_reassem_seq, up_to)


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
    dead = C[c].app_dead  # bit 1 / 2: orig / resp stream ended for the analyzers
    C[c].app_dead = ((dead & 1) << 1) | ((dead >> 1) & 1)
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
    elif delta > 0:  # noqa: SIM102 (mirrors the reference)
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
    elif st == RESET:  # noqa: SIM102 (mirrors the reference)
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
                if E[p].state != PARTIAL:
                    C[c].established = True  # TCPAdapter._established, applied by process_batch
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
    elif st == CLOSED:  # noqa: SIM102 (mirrors the reference)
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
        if E[o].did_close or E[r].did_close:  # noqa: SIM102 (mirrors the reference)
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


# == The table ==========================================================================

PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMP6 = 1, 6, 17, 58

# aux column (one byte per batch row, beside the batch): what the reference decoder said.
AUX_BAD_CHECKSUM = 1  # checksum_ok is False
AUX_NO_TICK = 2  # not the first packet of its frame: the pipeline's tick already ran
AUX_CARRIER = 4  # outer packet of an IP-level tunnel: advances time, is no connection
AUX_PARTIAL = 8  # Packet.analysis_partial: 'X' after the packet's letters
# Above the flag bits: flow.table.encapsulation_key of a decapsulated packet (0: none). A
# per-call array beside the batch (not a batch column: the parser's chunks stay as they are).
AUX_ENCAP_SHIFT = 8
AUX_DTYPE = np.uint64

# Kernel return status.
ST_DONE, ST_OUT_FULL, ST_GROW = 0, 1, 2
# What to grow (G[G_GROW] bits).
GROW_CONNS, GROW_HASH, GROW_HEAP, GROW_HIST, GROW_BLOCKS = 1, 2, 4, 8, 16
# Two table-only slots past the shared ones: what to grow, and how far row processing got
# (1: the row's tick is done) so a call that returned early resumes without repeating it.
G_GROW = G_SIZE
G_STAGE = G_SIZE + 1
G_CALL = G_SIZE + 2  # kernel calls so far (per-call counts of analyzer packets)
_EXTRA_G = 3
# A connection whose every packet goes to the analyzers ends the kernel call after this
# many of them, so Python can tell it to stop (analyzers are done after a handshake or two).
APP_PKTS_PER_CALL = 4
# C.app_mode: the analyzers want the first (UDP) packet, every packet (TCP payload while a
# direction is wanted; UDP on DNS ports and services.REPLY_UDP_PORTS), or none.
APP_FIRST, APP_EVERY, APP_NONE = 0, 1, 2

REC_DTYPE = np.dtype(
    [
        ("serial", np.int64),
        ("ts", np.float64),
        ("duration", np.float64),
        ("orig_hi", np.uint64),
        ("orig_lo", np.uint64),
        ("resp_hi", np.uint64),
        ("resp_lo", np.uint64),
        ("orig_p", np.int32),
        ("resp_p", np.int32),
        ("proto", np.uint8),
        ("conn_state", np.uint8),
        ("orig_bytes", np.int64),
        ("resp_bytes", np.int64),
        ("missed_bytes", np.int64),
        ("orig_pkts", np.int64),
        ("orig_ip_bytes", np.int64),
        ("resp_pkts", np.int64),
        ("resp_ip_bytes", np.int64),
        ("hist_len", np.int64),
        ("counted_orig", np.int64),  # stream bytes the kernel counted for the analyzers since
        ("counted_resp", np.int64),  # the connection's last EV_PKT or EV_COUNTED
    ]
)

# Room the kernel wants before it starts on a packet (a packet emits at most a few events).
EV_ROOM = 24
REC_ROOM = 4
HEAP_ROOM = 8
HIST_ROOM = 8
BLOCK_ROOM = 2
_BCAST_LO = np.uint64((0xFFFF << 32) | 0xFFFFFFFF)  # 255.255.255.255, IPv4-mapped

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)
_M4 = np.uint64(0x27D4EB2F165667C5)
_M5 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, _nrt=False)
def _hash(proto, oneway, ahi, alo, ap, bhi, blo, bp):
    h = ahi * _M1
    h ^= alo * _M2
    h ^= bhi * _M3
    h ^= blo * _M4
    h ^= ((np.uint64(ap) << np.uint64(24)) | (np.uint64(bp) << np.uint64(8)) | np.uint64(proto)
          | (np.uint64(oneway) << np.uint64(40))) * _M5
    h ^= h >> np.uint64(29)
    h *= _M2
    h ^= h >> np.uint64(32)
    return h


@njit(cache=True, _nrt=False)
def _addr_le(ahi, alo, ap, bhi, blo, bp):
    if ahi != bhi:
        return ahi < bhi
    if alo != blo:
        return alo < blo
    return ap <= bp


@njit(cache=True, _nrt=False)
def _lookup(C, hidx, h, proto, oneway, ahi, alo, ap, bhi, blo, bp):
    mask = hidx.shape[0] - 1
    i = np.int64(h & np.uint64(mask))
    while True:
        c = hidx[i]
        if c < 0:
            return -1, i
        if (
            C[c].hash == h and C[c].proto == proto and C[c].oneway == oneway
            and C[c].k_ahi == ahi and C[c].k_alo == alo and C[c].k_ap == ap
            and C[c].k_bhi == bhi and C[c].k_blo == blo and C[c].k_bp == bp
        ):
            return c, i
        i = (i + 1) & mask


@njit(cache=True, _nrt=False)
def _hash_delete(C, hidx, c):
    mask = hidx.shape[0] - 1
    i = C[c].hslot
    hidx[i] = -1
    j = i
    while True:
        j = (j + 1) & mask
        k = hidx[j]
        if k < 0:
            break
        home = np.int64(C[k].hash & np.uint64(mask))
        if j > i:
            stays = i < home <= j
        else:
            stays = home <= j or home > i
        if not stays:
            hidx[i] = k
            C[k].hslot = i
            hidx[j] = -1
            i = j


@njit(cache=True, _nrt=False)
def rehash(C, hidx):
    """Rebuild the index (after it was reallocated larger)."""
    hidx[:] = -1
    mask = hidx.shape[0] - 1
    for c in range(C.shape[0]):
        if C[c].live:
            i = np.int64(C[c].hash & np.uint64(mask))
            while hidx[i] >= 0:
                i = (i + 1) & mask
            hidx[i] = c
            C[c].hslot = i


@njit(cache=True, _nrt=False)
def lru_unlink(C, G, c):
    prev, nxt = C[c].lru_prev, C[c].lru_next
    if prev >= 0:
        C[prev].lru_next = nxt
    else:
        G[G_LRU_HEAD] = nxt
    if nxt >= 0:
        C[nxt].lru_prev = prev
    else:
        G[G_LRU_TAIL] = prev


@njit(cache=True, _nrt=False)
def lru_append(C, G, c):
    """`c` becomes the most recently active (the reference's OrderedDict.move_to_end)."""
    tail = G[G_LRU_TAIL]
    C[c].lru_prev = tail
    C[c].lru_next = -1
    if tail >= 0:
        C[tail].lru_next = c
    else:
        G[G_LRU_HEAD] = c
    G[G_LRU_TAIL] = c


@njit(cache=True, _nrt=False)
def _remove(C, E, HI, hidx, free, EV, REC, RH, G, c):
    """End connection `c`: its record row, an EV_REC event, its slot freed."""
    r = G[G_REC_N]
    G[G_REC_N] = r + 1
    rec = REC[r]
    rec.serial = C[c].serial
    rec.ts = C[c].start_ts
    duration = C[c].last_ts - C[c].start_ts
    rec.duration = duration
    rec.orig_hi = C[c].orig_hi
    rec.orig_lo = C[c].orig_lo
    rec.resp_hi = C[c].resp_hi
    rec.resp_lo = C[c].resp_lo
    rec.orig_p = C[c].orig_p
    rec.resp_p = C[c].resp_p
    proto = C[c].proto
    rec.proto = proto
    if proto == PROTO_TCP:
        rec.conn_state = tcp_conn_state(C, E, HI, c)
        o = orig_phys(C, c)
        rec.orig_bytes = np.int64(ep_size(E, o))
        rec.resp_bytes = np.int64(ep_size(E, o ^ 1))
    elif proto == PROTO_UDP:
        ob = C[c].orig_len >= 0
        rb = C[c].resp_len >= 0
        if ob:
            rec.conn_state = CS_SF if rb else CS_S0
        else:
            rec.conn_state = CS_SHR if rb else CS_OTH
        rec.orig_bytes = max(C[c].orig_len, 0)
        rec.resp_bytes = max(C[c].resp_len, 0)
    elif proto == PROTO_ICMP or proto == PROTO_ICMP6:
        rec.conn_state = CS_OTH
        rec.orig_bytes = max(C[c].orig_len, 0)
        rec.resp_bytes = max(C[c].resp_len, 0)
    else:
        rec.conn_state = CS_OTH
        rec.orig_bytes = 0
        rec.resp_bytes = 0
    rec.missed_bytes = C[c].missed_bytes
    rec.orig_pkts = C[c].orig_pkts
    rec.orig_ip_bytes = C[c].orig_ip_bytes
    rec.resp_pkts = C[c].resp_pkts
    rec.resp_ip_bytes = C[c].resp_ip_bytes
    if proto == PROTO_TCP:
        o = orig_phys(C, c)
        rec.counted_orig = E[o].sk_used
        rec.counted_resp = E[o ^ 1].sk_used
    else:
        rec.counted_orig = 0
        rec.counted_resp = 0
    n = C[c].hist_len
    rec.hist_len = n
    for k in range(n):
        RH[r, k] = HI[c, k]
    ev = ev_conn(EV, G, EV_REC, C, c, C[c].last_ts)
    EV[ev].row = r
    C[c].live = False
    lru_unlink(C, G, c)
    _hash_delete(C, hidx, c)
    free[G[G_NFREE]] = c
    G[G_NFREE] += 1
    G[G_LIVE] -= 1


@njit(cache=True, _nrt=False)
def _advance(C, E, BL, HI, EC, hidx, free, EV, REC, RH, G, GF, CFG, T, now):
    """Fire due timers (FlowTable.advance). False: output full, call again."""
    GF[GF_NOW] = max(GF[GF_NOW], now)
    hw, hs, hc, hser, hk, hg = T
    while G[G_HEAP_N] > 0 and hw[0] <= now:
        if G[G_REC_N] + 1 > REC.shape[0] or G[G_EV_N] + 2 > EV.shape[0] or G[G_HEAP_N] + 2 > hw.shape[0]:
            return False
        when = hw[0]
        c = hc[0]
        serial = hser[0]
        kind = hk[0]
        gen = hg[0]
        if (kind == T_INACTIVITY and C[c].live and C[c].serial == serial and C[c].app_call == G[G_CALL]
                and C[c].last_ts + C[c].inactivity_timeout <= when):
            # The analyzers have not seen this call's packets of the connection yet: one may
            # confirm SSH/FTP and lengthen its timeout (FastFlow._events) before it expires.
            return False
        heap_pop(G, hw, hs, hc, hser, hk, hg)
        if not C[c].live or C[c].serial != serial:
            continue
        if kind == T_INACTIVITY:
            due = C[c].last_ts + C[c].inactivity_timeout
            if due <= when:
                _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)
            else:
                schedule(G, C, hw, hs, hc, hser, hk, hg, due, c, T_INACTIVITY)
            continue
        if kind == T_DNS_EXPIRE:
            if when - C[c].last_ts >= CFG[CFG_DNS_SESSION] - DNS_EXPIRE_SLACK:
                _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)
            else:
                schedule(G, C, hw, hs, hc, hser, hk, hg, when + CFG[CFG_DNS_SESSION], c, T_DNS_EXPIRE)
            continue
        if gen != C[c].timer_gen:
            continue
        if kind == T_DELETE:
            _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)
        elif kind == T_ATTEMPT:
            if attempt_timer(C, E, c):
                C[c].is_active = False
                _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)
        elif kind == T_EXPIRE:
            verdict = expire_timer(C, E, CFG, c, when)
            if verdict == 1:
                _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)
            elif verdict == 0:
                schedule(G, C, hw, hs, hc, hser, hk, hg, when + CFG[CFG_SESSION], c, T_EXPIRE)
    return True


@njit(cache=True, _nrt=False)
def _reset_endpoint(E, EC, e, is_orig):
    ep = E[e]
    ep.state = INACTIVE
    ep.prev_state = INACTIVE
    ep.is_orig = is_orig
    ep.did_close = False
    ep.start_seq = 0
    ep.last_seq = 0
    ep.ack_seq = 0
    ep.seq_wraps = 0
    ep.ack_wraps = 0
    ep.fin_cnt = 0
    ep.fin_seq = 0
    ep.hist_last_syn = 0
    ep.hist_last_fin = 0
    ep.hist_last_rst = 0
    ep.nblocks = 0
    ep.last_reassem_seq = 1
    ep.trim_seq = 1
    ep.data_upper = 0
    ep.skip_deliveries = False
    ep.did_eof = False
    ep.sk_seq = 0
    ep.sk_left = 0
    ep.sk_used = 0
    ep.stream_start = -1
    EC[e, :, :] = 0


@njit(cache=True, _nrt=False)
def _new_conn(C, E, BL, HI, EC, hidx, free, EV, REC, RH, G, GF, CFG, T, PORTS, b, i, slot_i, h,
              proto, oneway, ahi, alo, ap, bhi, blo, bp, sport, dport, encap):
    ts = b[i].ts
    if proto == PROTO_TCP or proto == PROTO_UDP:
        timeout = CFG[CFG_UDP_INACT]  # Zeek's TCP analyzer starts with the UDP one, too
    elif proto == PROTO_ICMP or proto == PROTO_ICMP6:
        timeout = CFG[CFG_ICMP_INACT]
    else:
        timeout = CFG[CFG_UNKNOWN_INACT]
    cap = G[G_MAX_FLOWS]
    if G[G_HEAP_N] > 4 * G[G_LIVE] + HEAP_SLACK:
        hw, hs, hc, hser, hk, hg = T
        heap_compact(G, C, hw, hs, hc, hser, hk, hg)
    if cap > 0 and G[G_LIVE] >= cap:
        for _ in range(G[G_LIVE] - cap + 1):
            best = G[G_LRU_HEAD]  # least recently active first (the reference's OrderedDict order)
            ev_conn(EV, G, EV_EVICT, C, best, GF[GF_NOW])
            _remove(C, E, HI, hidx, free, EV, REC, RH, G, best)
        # Deletions moved entries: find the insertion slot again.
        _, slot_i = _lookup(C, hidx, h, proto, oneway, ahi, alo, ap, bhi, blo, bp)
    G[G_NFREE] -= 1
    c = free[G[G_NFREE]]
    G[G_SERIAL] += 1
    cc = C[c]
    cc.live = True
    cc.serial = G[G_SERIAL]
    cc.hash = h
    cc.hslot = slot_i
    hidx[slot_i] = c
    cc.proto = proto
    cc.oneway = oneway
    cc.k_ahi = ahi
    cc.k_alo = alo
    cc.k_ap = ap
    cc.k_bhi = bhi
    cc.k_blo = blo
    cc.k_bp = bp
    cc.orig_hi = b[i].src_hi
    cc.orig_lo = b[i].src_lo
    cc.orig_p = sport
    cc.resp_hi = b[i].dst_hi
    cc.resp_lo = b[i].dst_lo
    cc.resp_p = dport
    cc.start_ts = ts
    cc.last_ts = ts
    cc.hist_len = 0
    cc.hist_seen = 0
    cc.encap = encap
    cc.tunnel_changes = 0
    cc.orig_pkts = 0
    cc.orig_ip_bytes = 0
    cc.resp_pkts = 0
    cc.resp_ip_bytes = 0
    cc.missed_bytes = 0
    cc.orig_len = -1
    cc.resp_len = -1
    cc.inactivity_timeout = timeout
    cc.timer_gen = 0
    cc.weirds_seen = 0
    G[G_TOUCH] += 1
    cc.touch = G[G_TOUCH]
    lru_append(C, G, c)
    cc.orig_ep = 0
    cc.is_tcp = proto == PROTO_TCP
    cc.is_partial = False
    cc.first_packet_seen = 0
    cc.is_active = True
    cc.synack_first = False
    cc.close_deferred = False
    cc.established = False
    cc.chk_orig_cnt = 0
    cc.chk_orig_thr = 1
    cc.chk_resp_cnt = 0
    cc.chk_resp_thr = 1
    G[G_LIVE] += 1
    flip = False
    if proto == PROTO_TCP:
        _reset_endpoint(E, EC, 2 * c, True)
        _reset_endpoint(E, EC, 2 * c + 1, False)
        flags = b[i].flags
        if flags & TH_SYN and flags & TH_ACK:
            # TCPAnalyzer::WantConnection flips a SYN-ACK from a likely server port at once.
            flip = PORTS[sport] != 0 and PORTS[dport] == 0
            cc.synack_first = not flip
        elif not flags & TH_SYN:  # noqa: SIM102 (mirrors the reference)
            if PORTS[sport]:
                if PORTS[dport]:
                    flip = sport < dport
                else:
                    flip = True
    elif proto == PROTO_UDP:
        flip = PORTS[65536 + sport] != 0 and PORTS[65536 + dport] == 0
    if flip and not (b[i].dst_hi == 0 and b[i].dst_lo == _BCAST_LO):
        flip_roles(C, E, HI, c, False)
    k = ev_conn(EV, G, EV_NEW, C, c, ts)  # the roles as the analyzers' on_new sees them
    EV[k].code = proto
    EV[k].row = i
    cc.app_dead = 0
    cc.app_call = 0
    cc.app_sent = 0
    if proto == PROTO_TCP or proto == PROTO_UDP and APP_UDP[cc.resp_p]:  # DNS ports, services.REPLY_UDP_PORTS
        cc.app_mode = APP_EVERY
    elif proto == PROTO_UDP:
        cc.app_mode = APP_FIRST
    else:
        cc.app_mode = APP_NONE  # analyzers read TCP and UDP payload only (hooks.AppAnalyzer)
    hw, hs, hc, hser, hk, hg = T
    schedule(G, C, hw, hs, hc, hser, hk, hg, ts + timeout, c, T_INACTIVITY)
    if proto == PROTO_TCP:
        schedule(G, C, hw, hs, hc, hser, hk, hg, ts + CFG[CFG_SYN_TIMEOUT], c, T_EXPIRE)
    elif proto == PROTO_UDP and CFG[CFG_DNS_SESSION] > 0 and DNS_UDP[cc.resp_p]:
        schedule(G, C, hw, hs, hc, hser, hk, hg, ts + CFG[CFG_DNS_SESSION], c, T_DNS_EXPIRE)
    return c


@njit(cache=True, _nrt=False)
def _port_inactivity(C, E, PORTS, CFG, c):
    """TCPAdapter._established: inactivity.zeek's port_inactivity_timeouts."""
    port = C[c].resp_p
    if E[orig_phys(C, c)].state == INACTIVE and not PORTS[port] and PORTS[C[c].orig_p]:
        port = C[c].orig_p
    if PORTS[PORTS_INACT + port]:
        C[c].inactivity_timeout = CFG[CFG_PORT_INACT]


@njit(cache=True, _nrt=False)
def _udp_chk_scaled(C, HI, c, is_orig):
    if is_orig:
        C[c].chk_orig_cnt += 1
        if C[c].chk_orig_cnt == C[c].chk_orig_thr:
            hist_append(C, HI, c, 67)  # C
            C[c].chk_orig_thr *= 10
    else:
        C[c].chk_resp_cnt += 1
        if C[c].chk_resp_cnt == C[c].chk_resp_thr:
            hist_append(C, HI, c, 99)  # c
            C[c].chk_resp_thr *= 10


@njit(cache=True, _nrt=False)
def app_sent_pause(C, G, c):
    """Count one more packet handed to the analyzers in this kernel call; True when the call
    should end here so they can say they are done with the connection (APP_PKTS_PER_CALL)."""
    if C[c].app_call != G[G_CALL]:
        C[c].app_call = G[G_CALL]
        C[c].app_sent = 0
    C[c].app_sent += 1
    return C[c].app_sent >= APP_PKTS_PER_CALL


# count_for_analyzers' verdicts.
TO_ANALYZERS, COUNTED, COUNTED_TO_END = 0, 1, 2


@njit(cache=True, _nrt=False)
def count_for_analyzers(E, e, flags, seq, length, caplen):
    """Whether endpoint `e`'s segment needs the analyzers: COUNTED if its bytes lie inside
    what they left to the kernel to count (`identifiers.stream.TcpStreams.offer`) right
    after the bytes counted so far, or if they had them all already (a retransmission);
    COUNTED_TO_END if it ends exactly there (a body is complete: they must hear of it at
    this place). Anything else (a gap, an overlap, bytes past the offer, a snap-length
    cut, a SYN) is TO_ANALYZERS, and the analyzers take the count back from there."""
    if flags & TH_SYN or caplen < length:
        return TO_ANALYZERS
    ahead = (seq - E[e].sk_seq) & M32
    if ahead == 0:
        if length <= E[e].sk_left:
            E[e].sk_seq = (E[e].sk_seq + length) & M32
            E[e].sk_left -= length
            E[e].sk_used += length
            return COUNTED if E[e].sk_left else COUNTED_TO_END
        return TO_ANALYZERS
    # A retransmission wholly before the next byte: StreamDirection drops it unread.
    if ahead >= HALF_SEQ and ((E[e].sk_seq - seq) & M32) >= length:
        return COUNTED
    return TO_ANALYZERS


@njit(cache=True, _nrt=False)
def hand_counts_to_analyzers(C, E, EV, k, c):
    """Event `k` hands both directions' counts to the analyzers; the kernel counts no more
    until they say again what it may (fast.engine, between kernel calls)."""
    o = orig_phys(C, c)
    EV[k].counted_orig = E[o].sk_used
    EV[k].counted_resp = E[o ^ 1].sk_used
    for d in (o, o ^ 1):
        E[d].sk_used = 0
        E[d].sk_left = 0


@njit(cache=True, _nrt=False)
def process_batch(C, E, BL, HI, EC, hidx, free, T, EV, REC, RH, G, GF, CFG, PORTS, ICMP4, ICMP6,
                  b, aux, row_conn, start):
    """Rows `start`.. of batch `b` through the table. Returns (status, next row)."""
    hw = T[0]
    n = b.shape[0]
    for i in range(start, n):
        ts = b[i].ts
        a = aux[i]
        if G[G_STAGE] == 0:
            # The pipeline's tick: time advances and sinks hear of it once a second.
            if not a & AUX_NO_TICK:
                GF[GF_PNOW] = max(GF[GF_PNOW], ts)
                pnow = GF[GF_PNOW]
                if G[G_HAVE_TICK] == 0 or pnow >= GF[GF_NEXT_TICK]:
                    if G[G_EV_N] + 1 > EV.shape[0]:
                        return ST_OUT_FULL, i
                    if not _advance(C, E, BL, HI, EC, hidx, free, EV, REC, RH, G, GF, CFG, T, pnow):
                        return ST_OUT_FULL, i
                    if G[G_EV_N] + 1 > EV.shape[0]:
                        return ST_OUT_FULL, i
                    k = G[G_EV_N]
                    EV[k].kind = EV_TICK
                    EV[k].ts = pnow
                    G[G_EV_N] = k + 1
                    GF[GF_NEXT_TICK] = pnow + 1.0
                    G[G_HAVE_TICK] = 1
            G[G_STAGE] = 1
        row_conn[i] = -1
        if b[i].kind == KIND_SKIP:
            G[G_STAGE] = 0
            continue
        if a & AUX_CARRIER:
            if not _advance(C, E, BL, HI, EC, hidx, free, EV, REC, RH, G, GF, CFG, T, ts):
                return ST_OUT_FULL, i
            G[G_STAGE] = 0
            continue
        if ts > GF[GF_NOW]:  # noqa: SIM102 (mirrors the reference)
            if not _advance(C, E, BL, HI, EC, hidx, free, EV, REC, RH, G, GF, CFG, T, ts):
                return ST_OUT_FULL, i
        if b[i].kind == KIND_FOREIGN:
            G[G_STAGE] = 0
            continue
        if G[G_EV_N] + EV_ROOM > EV.shape[0] or G[G_REC_N] + REC_ROOM > REC.shape[0]:
            return ST_OUT_FULL, i
        grow = 0
        if G[G_HEAP_N] + HEAP_ROOM > hw.shape[0]:
            grow |= GROW_HEAP
        if G[G_NFREE] < 2:
            grow |= GROW_CONNS
        if 2 * (G[G_LIVE] + 1) > hidx.shape[0]:
            grow |= GROW_HASH
        if grow:
            G[G_GROW] = grow
            return ST_GROW, i

        pause = False
        # Connection identity (FlowTable.process).
        proto = b[i].proto
        sport = np.int32(b[i].sport)
        dport = np.int32(b[i].dport)
        oneway = 0
        if proto == PROTO_ICMP or proto == PROTO_ICMP6:
            t = b[i].sport
            cp = -1
            if t < 256:
                cp = ICMP4[t] if proto == PROTO_ICMP else ICMP6[t]
            if cp < 0:
                oneway = 1
            else:
                dport = np.int32(cp)
        elif proto != PROTO_TCP and proto != PROTO_UDP:
            sport = np.int32(0)
            dport = np.int32(0)
        shi, slo, dhi, dlo = b[i].src_hi, b[i].src_lo, b[i].dst_hi, b[i].dst_lo
        if oneway or _addr_le(shi, slo, sport, dhi, dlo, dport):
            ahi, alo, ap, bhi, blo, bp = shi, slo, sport, dhi, dlo, dport
        else:
            ahi, alo, ap, bhi, blo, bp = dhi, dlo, dport, shi, slo, sport
        h = _hash(proto, oneway, ahi, alo, ap, bhi, blo, bp)
        c, slot_i = _lookup(C, hidx, h, proto, oneway, ahi, alo, ap, bhi, blo, bp)
        if c >= 0:
            if C[c].hist_len + HIST_ROOM > HI.shape[1]:
                G[G_GROW] = GROW_HIST
                return ST_GROW, i
            if C[c].is_tcp and (E[2 * c].nblocks + BLOCK_ROOM > BL.shape[1]
                                or E[2 * c + 1].nblocks + BLOCK_ROOM > BL.shape[1]):
                G[G_GROW] = GROW_BLOCKS
                return ST_GROW, i
        flags = b[i].flags
        seq = np.int64(b[i].seq)
        encap = np.uint64(a) >> np.uint64(AUX_ENCAP_SHIFT)  # the packet's encapsulation (0: none)
        if c >= 0 and C[c].is_tcp and is_reuse(C, E, c, flags, seq):
            _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)
            c, slot_i = _lookup(C, hidx, h, proto, oneway, ahi, alo, ap, bhi, blo, bp)
        if c < 0:
            c = _new_conn(C, E, BL, HI, EC, hidx, free, EV, REC, RH, G, GF, CFG, T, PORTS, b, i, slot_i, h,
                          proto, oneway, ahi, alo, ap, bhi, blo, bp, sport, dport, encap)
        else:
            G[G_TOUCH] += 1
            C[c].touch = G[G_TOUCH]
            if G[G_LRU_TAIL] != c:
                lru_unlink(C, G, c)
                lru_append(C, G, c)
            if C[c].encap != encap:
                check_encapsulation(C, HI, EV, G, GF, c, encap)
        if (
            C[c].is_tcp
            and C[c].synack_first
            and C[c].orig_pkts + C[c].resp_pkts >= 1
            and flags & (TH_SYN | TH_ACK) != TH_SYN | TH_ACK
        ):
            C[c].synack_first = False
            if not flags & (TH_SYN | TH_RST) and (flags & TH_ACK or b[i].payload_len > 0):
                flip_roles(C, E, HI, c, True)
                synack_sender_is_responder(C, E, c)
        is_orig = shi == C[c].orig_hi and slo == C[c].orig_lo and sport == C[c].orig_p

        ok = not (a & AUX_BAD_CHECKSUM)
        if proto == PROTO_TCP:
            if not ok:
                conn_weird(C, EV, G, GF, c, W_BAD_TCP_CHK)
                o = orig_phys(C, c)
                ep_scaled(C, E, HI, EC, o if is_orig else o ^ 1, CNT_CHK, 67)
            else:
                tcp_process(C, E, BL, HI, EC, EV, G, GF, CFG, T, c, is_orig, ts, np.int64(flags), seq,
                            np.int64(b[i].ack), np.int64(b[i].window), np.int64(b[i].payload_len),
                            np.int64(b[i].payload_cap))
                if C[c].established:
                    C[c].established = False
                    _port_inactivity(C, E, PORTS, CFG, c)
        elif proto == PROTO_UDP:
            if not ok:
                conn_weird(C, EV, G, GF, c, W_BAD_UDP_CHK)
                _udp_chk_scaled(C, HI, c, is_orig)
            else:
                C[c].last_ts = ts
                length = np.int64(b[i].payload_len)
                if is_orig:
                    conn_check_history(C, HI, c, 0x1, 68)
                    C[c].orig_len = length if C[c].orig_len < 0 else C[c].orig_len + length
                else:
                    conn_check_history(C, HI, c, 0x2, 100)
                    C[c].resp_len = length if C[c].resp_len < 0 else C[c].resp_len + length
                if a & AUX_PARTIAL:
                    conn_check_history(C, HI, c, HIST_UNKNOWN_PKT, 88)  # X
        elif proto == PROTO_ICMP or proto == PROTO_ICMP6:
            if not ok:
                conn_weird(C, EV, G, GF, c, W_BAD_ICMP_CHK)
            else:
                C[c].last_ts = ts
                length = np.int64(b[i].payload_len)
                if is_orig:
                    C[c].orig_len = length if C[c].orig_len < 0 else C[c].orig_len + length
                else:
                    C[c].resp_len = length if C[c].resp_len < 0 else C[c].resp_len + length
        else:
            C[c].last_ts = ts

        if ok:
            if is_orig:
                C[c].orig_pkts += 1
                C[c].orig_ip_bytes += np.int64(b[i].ip_len)
            else:
                C[c].resp_pkts += 1
                C[c].resp_ip_bytes += np.int64(b[i].ip_len)
            mode = C[c].app_mode
            now_orig = shi == C[c].orig_hi and slo == C[c].orig_lo and sport == C[c].orig_p
            want = G[G_ANALYZERS] != 0 and mode != APP_NONE
            e = -1
            if C[c].is_tcp:
                e = orig_phys(C, c) if now_orig else orig_phys(C, c) ^ 1
                if E[e].stream_start < 0 and (flags & TH_SYN or b[i].payload_len > 0):
                    E[e].stream_start = (seq + 1) & M32 if flags & TH_SYN else seq
            if want and C[c].is_tcp:
                # TCP analyzers act only on stream bytes (fast.engine): a packet without
                # payload gives them none (a SYN's sequence reaches them as the next
                # EV_PKT's stream_start).
                want = b[i].payload_len > 0 and not (C[c].app_dead & (1 if now_orig else 2))
                if want and E[e].sk_left > 0:
                    verdict = count_for_analyzers(E, e, flags, seq, np.int64(b[i].payload_len),
                                                  np.int64(b[i].payload_cap))
                    if verdict == COUNTED_TO_END:
                        k = ev_conn(EV, G, EV_COUNTED, C, c, ts)
                        hand_counts_to_analyzers(C, E, EV, k, c)
                        pause = app_sent_pause(C, G, c)
                    want = verdict == TO_ANALYZERS
            if want:
                k = ev_conn(EV, G, EV_PKT, C, c, ts)
                EV[k].row = i
                EV[k].is_orig = now_orig
                EV[k].hist_len = C[c].hist_len
                if e >= 0:
                    EV[k].stream_start = E[e].stream_start
                    hand_counts_to_analyzers(C, E, EV, k, c)
                if mode == APP_FIRST:
                    C[c].app_mode = APP_NONE
                else:
                    pause = app_sent_pause(C, G, c)
        row_conn[i] = C[c].serial
        G[G_STAGE] = 0
        if pause:
            # Let the analyzers look: they may be done with this connection.
            return ST_OUT_FULL, i + 1
    return ST_DONE, n


@njit(cache=True, _nrt=False)
def flush_conns(C, E, HI, hidx, free, EV, REC, RH, G, order):
    """End of input: remove the connections in `order` (start time, then least recent)."""
    for c in order:
        if C[c].live:
            _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)


def _port_table(ports: frozenset[tuple[int, int]] = LIKELY_SERVER_PORTS,
                inactivity: frozenset[int] = PORT_INACTIVITY_PORTS) -> np.ndarray:
    """likely_server_ports as a lookup table: TCP ports, then UDP ports; then the TCP ports
    of port_inactivity_timeouts."""
    table = np.zeros(3 * 65536, np.uint8)
    for port in inactivity:
        table[PORTS_INACT + port] = 1
    for port, proto in ports:  # TCP and UDP ports only
        table[(65536 if proto == PROTO_UDP else 0) + port] = 1
    return table


def _icmp_table(pairs: dict[int, int]) -> np.ndarray:
    table = np.full(256, -1, np.int64)
    for k, v in pairs.items():
        table[k] = v
    return table


PORTS = _port_table()
# UDP responder ports the DNS analyzer is registered for (its expiry timer, T_DNS_EXPIRE).
DNS_UDP = np.array([("dns" in registered_analyzers(p, PROTO_UDP)) for p in range(65536)], np.bool_)
# UDP responder ports whose every datagram goes to the analyzers: DNS's, and those where a
# service recogniser needs the responder's first datagram (services.REPLY_UDP_PORTS).
APP_UDP = DNS_UDP | np.isin(np.arange(65536), np.array(sorted(REPLY_UDP_PORTS), np.int64))
ICMP4 = _icmp_table(ICMP4_PAIRS)
ICMP6 = _icmp_table(ICMP6_PAIRS)

EventHandler = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


class FastFlowTable:
    """Owns the kernel's arrays; grows them and replays its events through `handler`.

    `handler(events, records, histories)` gets each slice of the ordered event stream
    (EV_DTYPE rows, with REC_DTYPE rows and history bytes that EV_REC events point at);
    it must consume them before returning: the arrays are reused.
    """

    def __init__(self, config: FlowConfig, analyzers: bool, handler: EventHandler,
                 cap: int = 1024, hist: int = 24, blocks: int = 4, heap: int = 4096,
                 out: int = 8192) -> None:
        self.s = State(cap, hist, blocks, heap)
        self.G = np.zeros(G_SIZE + _EXTRA_G, np.int64)
        self.G[G_NFREE] = cap
        self.G[G_LRU_HEAD] = self.G[G_LRU_TAIL] = -1
        self.G[G_MAX_FLOWS] = config.max_flows or 0
        self.G[G_ANALYZERS] = 1 if analyzers else 0
        self.GF = np.zeros(GF_SIZE, np.float64)
        cfg = np.zeros(CFG_SIZE, np.float64)
        cfg[CFG_TCP_INACT] = config.tcp_inactivity_timeout
        cfg[CFG_UDP_INACT] = config.udp_inactivity_timeout
        cfg[CFG_ICMP_INACT] = config.icmp_inactivity_timeout
        cfg[CFG_UNKNOWN_INACT] = config.unknown_inactivity_timeout
        cfg[CFG_ATTEMPT] = config.tcp_attempt_delay
        cfg[CFG_CLOSE] = config.tcp_close_delay
        cfg[CFG_SYN_TIMEOUT] = config.tcp_syn_timeout
        cfg[CFG_SESSION] = config.tcp_session_timer
        cfg[CFG_LINGER] = config.tcp_connection_linger
        self.CFG = cfg
        cfg[CFG_DNS_SESSION] = config.dns_session_timeout
        cfg[CFG_PORT_INACT] = config.port_inactivity_timeout
        self.ports = PORTS if (config.likely_server_ports, config.port_inactivity_ports) == (
            LIKELY_SERVER_PORTS, PORT_INACTIVITY_PORTS) else _port_table(config.likely_server_ports,
                                                                         config.port_inactivity_ports)
        self.EV = np.zeros(out, EV_DTYPE)
        self.REC = np.zeros(out // 4, REC_DTYPE)
        self.RH = np.zeros((out // 4, hist), np.uint8)
        self.handler = handler
        self.row_conn = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.G[G_LIVE])

    def feed(self, batch: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """Process `batch` (with its aux flags); returns each row's connection serial (-1: none)."""
        s, G = self.s, self.G
        if self.row_conn.shape[0] < batch.shape[0]:
            self.row_conn = np.zeros(batch.shape[0], np.int64)
        i = 0
        n = batch.shape[0]
        while True:
            G[G_EV_N] = 0
            G[G_REC_N] = 0
            G[G_CALL] += 1
            T = (s.h_when, s.h_seq, s.h_conn, s.h_serial, s.h_kind, s.h_gen)
            status, i = process_batch(s.C, s.E, s.BL, s.HI, s.EC, s.hidx, s.free, T, self.EV, self.REC, self.RH,
                                      G, self.GF, self.CFG, self.ports, ICMP4, ICMP6, batch, aux, self.row_conn, i)
            if G[G_EV_N]:
                self.handler(self.EV[: G[G_EV_N]], self.REC[: G[G_REC_N]], self.RH)
            if status == ST_DONE:
                return self.row_conn[:n]
            if status == ST_GROW:
                self._grow(int(G[G_GROW]))
            elif G[G_EV_N] == 0 and i < n:
                self._grow_output()

    def flush(self, now: float) -> None:
        """End of input: every live connection ends, oldest first (FlowTable.flush)."""
        s, G = self.s, self.G
        self.GF[GF_NOW] = max(self.GF[GF_NOW], now)
        live = np.flatnonzero(s.C["live"])
        order = live[np.lexsort((s.C["touch"][live], s.C["start_ts"][live]))]
        step = self.REC.shape[0]
        while self.EV.shape[0] < 2 * step:
            self._grow_output()
        for k in range(0, len(order), step):
            G[G_EV_N] = 0
            G[G_REC_N] = 0
            flush_conns(s.C, s.E, s.HI, s.hidx, s.free, self.EV, self.REC, self.RH, G, order[k : k + step])
            if G[G_EV_N]:
                self.handler(self.EV[: G[G_EV_N]], self.REC[: G[G_REC_N]], self.RH)
        G[G_HEAP_N] = 0

    # -- growth (from Python, between kernel calls) ----------------------------------------
    def _grow_output(self) -> None:
        self.EV = np.zeros(2 * self.EV.shape[0], EV_DTYPE)
        self.REC = np.zeros(2 * self.REC.shape[0], REC_DTYPE)
        self.RH = np.zeros((self.REC.shape[0], self.s.HI.shape[1]), np.uint8)

    def _grow(self, what: int) -> None:
        s, G = self.s, self.G
        if what & GROW_CONNS:
            old = s.C.shape[0]
            new = 2 * old
            s.C = _grown(s.C, new)
            s.E = _grown(s.E, 2 * new)
            s.EC = _grown(s.EC, 2 * new)
            s.BL = _grown(s.BL, 2 * new)
            s.HI = _grown(s.HI, new)
            nfree = int(G[G_NFREE])
            free = np.zeros(new, np.int64)
            free[:nfree] = s.free[:nfree]
            added = np.arange(new - 1, old - 1, -1, dtype=np.int64)
            free[nfree : nfree + len(added)] = added
            s.free = free
            G[G_NFREE] = nfree + len(added)
        if what & GROW_HASH:
            s.hidx = np.full(2 * s.hidx.shape[0], -1, np.int64)
            rehash(s.C, s.hidx)
        if what & GROW_HEAP:
            for name in ("h_when", "h_seq", "h_conn", "h_serial", "h_kind", "h_gen"):
                setattr(s, name, _grown(getattr(s, name), 2 * getattr(s, name).shape[0]))
        if what & GROW_HIST:
            width = 2 * s.HI.shape[1]
            hi = np.zeros((s.HI.shape[0], width), np.uint8)
            hi[:, : s.HI.shape[1]] = s.HI
            s.HI = hi
            self.RH = np.zeros((self.REC.shape[0], width), np.uint8)
        if what & GROW_BLOCKS:
            width = 2 * s.BL.shape[1]
            bl = np.zeros((s.BL.shape[0], width, 2), np.uint64)
            bl[:, : s.BL.shape[1]] = s.BL
            s.BL = bl


def _grown(arr: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, *arr.shape[1:]), arr.dtype)
    out[: arr.shape[0]] = arr
    return out
