"""Finding a connection: an open-addressing hash index over connection slots
(`Flows.hash_index`, linear probing, kept at most half full), and the activity list that
says which live connection the LRU cap evicts first."""

from __future__ import annotations

import numpy as np

from pcapexfil.fast.layout import G_LRU_HEAD, G_LRU_TAIL
from pcapexfil.jit import njit

EMPTY = -1  # an unused index slot; also "no neighbour" in the activity list

# Multipliers of the key hash (xxHash / SplitMix64 constants).
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)
_M4 = np.uint64(0x27D4EB2F165667C5)
_M5 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, _nrt=False)
def key_hash(proto, oneway, ahi, alo, ap, bhi, blo, bp):
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
def addr_le(ahi, alo, ap, bhi, blo, bp):
    """(address, port) a sorts before b: the key's canonical order (FlowTable.process)."""
    if ahi != bhi:
        return ahi < bhi
    if alo != blo:
        return alo < blo
    return ap <= bp


@njit(cache=True, _nrt=False)
def lookup(F, h, proto, oneway, ahi, alo, ap, bhi, blo, bp):
    """(slot, index position): the key's connection slot, or EMPTY and where to insert it."""
    C, hidx = F.conns, F.hash_index
    mask = hidx.shape[0] - 1
    i = np.int64(h & np.uint64(mask))
    while True:
        c = hidx[i]
        if c < 0:
            return EMPTY, i
        if (
            C[c].hash == h and C[c].proto == proto and C[c].oneway == oneway
            and C[c].k_ahi == ahi and C[c].k_alo == alo and C[c].k_ap == ap
            and C[c].k_bhi == bhi and C[c].k_blo == blo and C[c].k_bp == bp
        ):
            return c, i
        i = (i + 1) & mask


@njit(cache=True, _nrt=False)
def hash_delete(F, c):
    """Remove slot `c` from the index, moving later entries of its probe run back."""
    C, hidx = F.conns, F.hash_index
    mask = hidx.shape[0] - 1
    i = C[c].hslot
    hidx[i] = EMPTY
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
            hidx[j] = EMPTY
            i = j


@njit(cache=True, _nrt=False)
def rehash(F):
    """Rebuild the index (after it was reallocated larger)."""
    C, hidx = F.conns, F.hash_index
    hidx[:] = EMPTY
    mask = hidx.shape[0] - 1
    for c in range(C.shape[0]):
        if C[c].live:
            i = np.int64(C[c].hash & np.uint64(mask))
            while hidx[i] >= 0:
                i = (i + 1) & mask
            hidx[i] = c
            C[c].hslot = i


@njit(cache=True, _nrt=False)
def lru_unlink(C, S, c):
    G = S.ints
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
def lru_append(C, S, c):
    """`c` becomes the most recently active (the reference's OrderedDict.move_to_end)."""
    G = S.ints
    tail = G[G_LRU_TAIL]
    C[c].lru_prev = tail
    C[c].lru_next = EMPTY
    if tail >= 0:
        C[tail].lru_next = c
    else:
        G[G_LRU_HEAD] = c
    G[G_LRU_TAIL] = c
