"""conn.log's history letters, kernel side (flow.tcp's Endpoint / Connection history).

Zeek's Connection::CheckHistory records a letter the first time its bit is seen
(upper case for the originator, lower case for the responder: the responder's bits sit
16 above); ScaledHistoryEntry records it at the 1st, 10th, 100th ... occurrence.
"""

from __future__ import annotations

from pcapexfil.jit import njit

# Bits of CONN_DTYPE.hist_seen (the responder's are 16 above): TCP's are flow.tcp.HIST_*;
# UDP's data bits: CheckHistory(HIST_ORIG_DATA_PKT / HIST_RESP_DATA_PKT) in UDP.cc.
HIST_UDP_ORIG_DATA = 0x1
HIST_UDP_RESP_DATA = 0x2

# The letters, as the originator writes them (`lower` gives the responder's).
L_SYN, L_SYNACK, L_ACK, L_DATA, L_FIN, L_RST = ord("S"), ord("H"), ord("A"), ord("D"), ord("F"), ord("R")
L_FIN_RST, L_MULTI_FLAG, L_BAD_CHECKSUM, L_GAP = ord("I"), ord("Q"), ord("C"), ord("G")
L_RETRANSMIT, L_ZERO_WINDOW, L_FLIPPED, L_PARTIAL = ord("T"), ord("W"), ord("^"), ord("X")
# Scaled entries are written at the 1st, 10th, 100th ... occurrence (Connection::ScaledHistoryEntry).
HISTORY_SCALE = 10
_UPPER_A, _UPPER_Z, _LOWER_A, _LOWER_Z, _CASE = ord("A"), ord("Z"), ord("a"), ord("z"), 32


@njit(cache=True, _nrt=False)
def lower(ch):
    if _UPPER_A <= ch <= _UPPER_Z:
        return ch + _CASE
    return ch


@njit(cache=True, _nrt=False)
def swapcase(ch):
    if _UPPER_A <= ch <= _UPPER_Z:
        return ch + _CASE
    if _LOWER_A <= ch <= _LOWER_Z:
        return ch - _CASE
    return ch


@njit(cache=True, _nrt=False)
def hist_append(F, c, ch):
    C = F.conns
    n = C[c].hist_len
    F.history[c, n] = ch
    C[c].hist_len = n + 1


@njit(cache=True, _nrt=False)
def conn_check_history(F, c, mask, ch):
    """Record `ch` the first time `mask` is seen; True if it was seen before."""
    C = F.conns
    if C[c].hist_seen & mask:
        return True
    C[c].hist_seen = C[c].hist_seen | mask
    hist_append(F, c, ch)
    return False


@njit(cache=True, _nrt=False)
def ep_check_history(F, e, mask, ch):
    if not F.endpoints[e].is_orig:
        mask = mask << 16
        ch = lower(ch)
    return conn_check_history(F, e // 2, mask, ch)


@njit(cache=True, _nrt=False)
def ep_add_history(F, e, ch):
    hist_append(F, e // 2, ch if F.endpoints[e].is_orig else lower(ch))


@njit(cache=True, _nrt=False)
def scaled(F, e, k, ch):
    """Endpoint `e`'s scaled history entry `k` (a CNT_*): record `ch` at the 1st, 10th,
    100th ... occurrence."""
    EC = F.counters
    if EC[e, k, 1] == 0:
        EC[e, k, 1] = 1
    EC[e, k, 0] += 1
    if EC[e, k, 0] == EC[e, k, 1]:
        hist_append(F, e // 2, ch)
        EC[e, k, 1] *= HISTORY_SCALE


@njit(cache=True, _nrt=False)
def ep_scaled(F, e, k, ch):
    scaled(F, e, k, ch if F.endpoints[e].is_orig else lower(ch))


@njit(cache=True, _nrt=False)
def swap_history_roles(F, c):
    """A late flip rewrites the history so far as if the roles had been right from the
    start (flow.table.Connection.flip_roles with recase_history): '^' leads, every
    letter's case and the seen bits swap."""
    C, HI = F.conns, F.history
    n = C[c].hist_len
    for k in range(n, 0, -1):
        HI[c, k] = swapcase(HI[c, k - 1])
    HI[c, 0] = L_FLIPPED
    C[c].hist_len = n + 1
    seen = C[c].hist_seen
    C[c].hist_seen = ((seen & 0xFFFF) << 16) | (seen >> 16)
