"""The flow table's small kernels, each against a readable oracle: the timer heap against
heapq, the hash index against a dict, the sequence arithmetic against flow.tcp, history
letters against str. (The whole table against the reference FlowTable: test_fast_table.)"""

from __future__ import annotations

import heapq

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapexfil.fast.endpoint import seq_delta
from pcapexfil.fast.hashtable import EMPTY, hash_delete, key_hash, lookup
from pcapexfil.fast.history import lower, swapcase
from pcapexfil.fast.layout import G_HEAP_N, G_SIZE, GF_SIZE, Scalars, new_flows, new_timers
from pcapexfil.fast.timers import T_INACTIVITY, heap_compact, heap_pop, schedule
from pcapexfil.flow import tcp as ref_tcp


def _scalars() -> Scalars:
    return Scalars(ints=np.zeros(G_SIZE, np.int64), floats=np.zeros(GF_SIZE, np.float64))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("push"), st.integers(0, 20), st.integers(0, 7)),
                          st.tuples(st.just("pop"), st.just(0), st.just(0))), max_size=120))
def test_timer_heap_pops_in_heapq_order(ops: list[tuple[str, int, int]]) -> None:
    """Ties in time pop in scheduling order, as the reference's heapq of (when, seq)."""
    flows = new_flows(8, 4, 2)
    flows.conns["serial"] = np.arange(8)
    timers, scalars = new_timers(256), _scalars()
    oracle: list[tuple[float, int, int]] = []
    seq = 0
    for op, when, c in ops:
        if op == "push":
            schedule(timers, scalars, flows.conns, float(when), c, T_INACTIVITY)
            heapq.heappush(oracle, (float(when), seq, c))
            seq += 1
        elif oracle:
            want = heapq.heappop(oracle)
            assert (timers.when[0], timers.seq[0], timers.conn[0]) == want
            heap_pop(timers, scalars)
        assert scalars.ints[G_HEAP_N] == len(oracle)


def test_heap_compact_keeps_live_timers_in_order() -> None:
    flows = new_flows(8, 4, 2)
    flows.conns["serial"] = np.arange(8)
    flows.conns["live"] = np.arange(8) % 2 == 0  # odd slots are gone
    timers, scalars = new_timers(64), _scalars()
    for k in range(40):
        schedule(timers, scalars, flows.conns, float((k * 7) % 11), k % 8, T_INACTIVITY)
    expected = sorted((timers.when[i], timers.seq[i]) for i in range(40) if timers.conn[i] % 2 == 0)
    heap_compact(timers, scalars, flows.conns)
    popped = []
    while scalars.ints[G_HEAP_N]:
        popped.append((timers.when[0], timers.seq[0]))
        heap_pop(timers, scalars)
    assert popped == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=150))
def test_hash_index_finds_what_a_dict_holds(ops: list[tuple[bool, int]]) -> None:
    """Insertions and deletions (which move later entries of a probe run back) keep every
    live key findable at the slot it was given, and no deleted one."""
    flows = new_flows(64, 4, 2)
    conns = flows.conns
    free = list(range(64))
    oracle: dict[int, int] = {}

    def find(key: int) -> tuple[int, int]:
        # a small index (256 positions) and keys that collide often: long probe runs
        h = np.uint64(key % 7)
        return lookup(flows, h, 6, 0, np.uint64(0), np.uint64(key), 1, np.uint64(0), np.uint64(0), 2)

    for insert, key in ops:
        c, pos = find(key)
        assert c == oracle.get(key, EMPTY)
        if insert and key not in oracle:
            c = free.pop()
            conns[c] = 0
            conns[c]["live"], conns[c]["hash"], conns[c]["hslot"] = True, key % 7, pos
            conns[c]["proto"], conns[c]["k_alo"], conns[c]["k_ap"], conns[c]["k_bp"] = 6, key, 1, 2
            flows.hash_index[pos] = c
            oracle[key] = c
        elif not insert and key in oracle:
            hash_delete(flows, oracle[key])
            conns[oracle[key]]["live"] = False
            free.append(oracle.pop(key))
    for key, c in oracle.items():
        assert find(key)[0] == c
    assert sorted(flows.hash_index[flows.hash_index >= 0].tolist()) == sorted(oracle.values())


def test_key_hash_depends_on_every_part_of_the_key() -> None:
    base = (6, 0, np.uint64(1), np.uint64(2), 3, np.uint64(4), np.uint64(5), 6)
    seen = {key_hash(*base)}
    for k, part in enumerate(base):
        changed = list(base)
        changed[k] = type(part)(int(part) + 1) if not isinstance(part, int) else part + 1
        seen.add(key_hash(*changed))
    assert len(seen) == len(base) + 1


@settings(deadline=None)
@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
def test_seq_delta_is_flow_tcp_seq_delta(a: int, b: int) -> None:
    assert seq_delta(np.int64(a), np.int64(b)) == ref_tcp.seq_delta(a, b)


def test_history_case_is_str_case() -> None:
    for ch in range(128):
        assert swapcase(ch) == ord(chr(ch).swapcase())
        assert lower(ch) == (ord(chr(ch).lower()) if chr(ch).isupper() else ch)
