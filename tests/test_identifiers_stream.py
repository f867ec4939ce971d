"""Per-direction TCP reassembly: order, overlaps, holes, bounds, sequence wrap, release."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from test_identifiers_support import FakeConn, tcp

from pcapexfil.identifiers.stream import MAX_PENDING, StreamDirection, streams, tcp_data
from pcapexfil.packet import TH_ACK, TH_SYN


def test_in_order_from_syn() -> None:
    d = StreamDirection()
    assert d.add(100, TH_SYN, b"", 0) == b""
    assert d.add(101, TH_ACK, b"hello ", 6) == b"hello "
    assert d.add(107, TH_ACK, b"world", 5) == b"world"


def test_out_of_order_waits_for_the_hole() -> None:
    d = StreamDirection()
    d.add(100, TH_SYN, b"", 0)
    assert d.add(104, TH_ACK, b"def", 3) == b""
    assert d.add(107, TH_ACK, b"ghi", 3) == b""
    assert d.add(101, TH_ACK, b"abc", 3) == b"abcdefghi"


def test_retransmission_and_overlap_are_not_delivered_twice() -> None:
    d = StreamDirection()
    d.add(100, TH_SYN, b"", 0)
    assert d.add(101, TH_ACK, b"abcd", 4) == b"abcd"
    assert d.add(101, TH_ACK, b"abcd", 4) == b""
    assert d.add(103, TH_ACK, b"cdef", 4) == b"ef"


def test_no_syn_starts_at_first_data() -> None:
    d = StreamDirection()
    assert d.add(5000, TH_ACK, b"", 0) == b""  # a pure ACK does not fix the start
    assert d.add(7000, TH_ACK, b"xy", 2) == b"xy"
    assert d.add(7002, TH_ACK, b"z", 1) == b"z"


def test_sequence_wraparound() -> None:
    d = StreamDirection()
    d.add(0xFFFFFFFE, TH_SYN, b"", 0)
    assert d.add(0xFFFFFFFF, TH_ACK, b"ab", 2) == b"ab"
    assert d.add(1, TH_ACK, b"cd", 2) == b"cd"


def test_truncated_capture_stops_the_stream() -> None:
    d = StreamDirection()
    d.add(0, TH_SYN, b"", 0)
    assert d.add(1, TH_ACK, b"abc", 10) == b"abc"
    assert d.broken
    assert d.add(11, TH_ACK, b"more", 4) == b""


def test_pending_bound() -> None:
    d = StreamDirection()
    d.add(0, TH_SYN, b"", 0)
    chunk = b"x" * 1000
    for i in range(MAX_PENDING // 1000 + 2):
        d.add(1001 + i * 1000, TH_ACK, chunk, 1000)  # a hole at 1..1000 that never fills
    assert d.broken and not d.pending
    assert d.add(1, TH_ACK, chunk, 1000) == b""


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=400),
    isn=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(1, 399), max_size=12),
    order=st.randoms(use_true_random=False),
    dups=st.lists(st.integers(0, 20), max_size=5),
)
def test_any_segmentation_order_and_duplication_gives_the_stream(data, isn, cuts, order, dups) -> None:  # type: ignore[no-untyped-def]
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    segs = [(bounds[i], data[bounds[i] : bounds[i + 1]]) for i in range(len(bounds) - 1)]
    segs += [segs[i % len(segs)] for i in dups]
    order.shuffle(segs)
    d = StreamDirection()
    d.add(isn, TH_SYN, b"", 0)
    out = b"".join(d.add((isn + 1 + off) % 2**32, TH_ACK, seg, len(seg)) for off, seg in segs)
    assert out == data


def test_a_direction_nobody_wants_is_no_longer_reassembled() -> None:
    conn = FakeConn()
    users = frozenset({"a", "b"})
    assert tcp_data(conn, True, tcp(conn, True, 1, b"x"), users) == b"x"
    shared = streams(conn)
    assert shared is not None
    shared.release_direction("a", True)
    assert tcp_data(conn, True, tcp(conn, True, 2, b"y"), users) == b"y"  # b still wants the client's bytes
    shared.release_direction("b", True)
    assert tcp_data(conn, True, tcp(conn, True, 3, b"z"), users) == b""
    assert tcp_data(conn, False, tcp(conn, False, 100, b"r"), users) == b"r"  # the server's still flow
    assert shared.orig_wanted == set() and shared.resp_wanted == {"a", "b"}
    shared.release("a")
    shared.release("b")
    assert tcp_data(conn, False, tcp(conn, False, 101, b"s"), users) == b""
    assert not shared.orig_wanted and not shared.resp_wanted
