"""Timers on network time: a binary heap ordered by (when, seq), like the reference's heapq.

A timer names its connection by slot and serial (a reused slot's old timers are skipped)
and, for the TCP timers, by the connection's timer generation (`CONN_DTYPE.timer_gen`:
raised to cancel them).
"""

from __future__ import annotations

from pcapexfil.fast.layout import G_HEAP_N, G_TIMER_SEQ
from pcapexfil.jit import njit

# Timer kinds.
T_INACTIVITY, T_DELETE, T_ATTEMPT, T_EXPIRE = 0, 1, 2, 3
T_DNS_EXPIRE = 4  # DNS_Analyzer::ExpireTimer (FlowTable._fire)
# Timers beyond 4 per live connection plus this many are compacted away (see heap_compact).
HEAP_SLACK = 4096


@njit(cache=True, _nrt=False)
def _less(T, i, j):
    if T.when[i] != T.when[j]:
        return T.when[i] < T.when[j]
    return T.seq[i] < T.seq[j]


@njit(cache=True, _nrt=False)
def _move(T, src, dst):
    T.when[dst] = T.when[src]
    T.seq[dst] = T.seq[src]
    T.conn[dst] = T.conn[src]
    T.serial[dst] = T.serial[src]
    T.kind[dst] = T.kind[src]
    T.gen[dst] = T.gen[src]


@njit(cache=True, _nrt=False)
def _swap(T, i, j):
    T.when[i], T.when[j] = T.when[j], T.when[i]
    T.seq[i], T.seq[j] = T.seq[j], T.seq[i]
    T.conn[i], T.conn[j] = T.conn[j], T.conn[i]
    T.serial[i], T.serial[j] = T.serial[j], T.serial[i]
    T.kind[i], T.kind[j] = T.kind[j], T.kind[i]
    T.gen[i], T.gen[j] = T.gen[j], T.gen[i]


@njit(cache=True, _nrt=False)
def _sift_down(T, n, i):
    while True:
        lft = 2 * i + 1
        if lft >= n:
            break
        m = lft
        r = lft + 1
        if r < n and _less(T, r, lft):
            m = r
        if _less(T, m, i):
            _swap(T, i, m)
            i = m
        else:
            break


@njit(cache=True, _nrt=False)
def schedule(T, S, C, when, c, kind):
    G = S.ints
    n = G[G_HEAP_N]
    T.when[n] = when
    T.seq[n] = G[G_TIMER_SEQ]
    G[G_TIMER_SEQ] += 1
    T.conn[n] = c
    T.serial[n] = C[c].serial
    T.kind[n] = kind
    T.gen[n] = C[c].timer_gen
    G[G_HEAP_N] = n + 1
    i = n
    while i > 0:
        p = (i - 1) // 2
        if _less(T, i, p):
            _swap(T, i, p)
            i = p
        else:
            break


@njit(cache=True, _nrt=False)
def heap_pop(T, S):
    """Remove the root (the caller read it first)."""
    G = S.ints
    n = G[G_HEAP_N] - 1
    G[G_HEAP_N] = n
    if n == 0:
        return
    _move(T, n, 0)
    _sift_down(T, n, 0)


@njit(cache=True, _nrt=False)
def heap_compact(T, S, C):
    """Drop the timers of connections that are gone and re-heapify.

    Popping skips such timers anyway, but evicted connections' timers would otherwise pile
    up until due: under a flood, memory would grow with the input, not with the cap.
    (when, seq) is a total order, so the pop order of the timers kept is unchanged.
    """
    G = S.ints
    n = G[G_HEAP_N]
    m = 0
    for i in range(n):
        c = T.conn[i]
        if C[c].live and C[c].serial == T.serial[i] and (T.kind[i] == T_INACTIVITY or T.gen[i] == C[c].timer_gen):
            _move(T, i, m)
            m += 1
    G[G_HEAP_N] = m
    for i in range(m // 2 - 1, -1, -1):
        _sift_down(T, m, i)
