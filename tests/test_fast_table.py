"""The numba flow table against its oracle, the reference FlowTable, on hand-built packets.

Each sequence goes through both tables the way the pipeline drives them (tick once a
second, packets in order, flush at the end); the records must be identical, in the same
order, uids included, and so must the weirds counted.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcapexfil.fast.engine import FastFlow
from pcapexfil.fast.timers import HEAP_SLACK
from pcapexfil.flow import FlowConfig, FlowTable
from pcapexfil.packet import (
    PROTO_ICMP,
    PROTO_ICMP6,
    PROTO_TCP,
    PROTO_UDP,
    TH_ACK,
    TH_FIN,
    TH_RST,
    TH_SYN,
    Packet,
)
from pcapexfil.record import ConnRecord
from pcapexfil.weird import Weirds

C, S, C6, S6 = "10.0.0.1", "93.184.216.34", "2001:db8::1", "2001:db8::2"
SYN, SA, A, PA, FA, R, RA = TH_SYN, TH_SYN | TH_ACK, TH_ACK, TH_ACK | 0x08, TH_FIN | TH_ACK, TH_RST, TH_RST | TH_ACK


def tcp(ts, src, sport, dst, dport, flags, seq, ack=0, data=0, window=1000, caplen=None, ok=None):
    payload = b"x" * (data if caplen is None else caplen)
    return Packet(ts=ts, src=src, dst=dst, proto=PROTO_TCP, ip_len=40 + data, sport=sport, dport=dport,
                  flags=flags, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, window=window, payload_len=data,
                  payload=payload, checksum_ok=ok, ip_version=6 if ":" in src else 4)


def udp(ts, src, sport, dst, dport, data, ok=None):
    return Packet(ts=ts, src=src, dst=dst, proto=PROTO_UDP, ip_len=28 + data, sport=sport, dport=dport,
                  payload_len=data, payload=b"u" * data, checksum_ok=ok)


def icmp(ts, src, dst, typ, code, data=8, proto=PROTO_ICMP):
    return Packet(ts=ts, src=src, dst=dst, proto=proto, ip_len=28 + data, sport=typ, dport=code,
                  payload_len=data, payload=b"i" * data)


class _Collect:
    def __init__(self) -> None:
        self.records: list[ConnRecord] = []
        self.ticks: list[float] = []

    def on_record(self, rec: ConnRecord) -> None:
        self.records.append(rec)

    def on_time(self, now: float) -> None:
        self.ticks.append(now)

    def close(self, now: float) -> None:
        pass


def reference(pkts: list[Packet], **cfg) -> tuple[_Collect, Weirds]:
    """pipeline.run's driving of FlowTable, without decoder and analyzers."""
    sink, weirds = _Collect(), Weirds()
    table = FlowTable(FlowConfig(seed=7, weirds=weirds, **cfg), sink.on_record)
    now, next_tick = 0.0, None
    for p in pkts:
        now = max(now, p.ts)
        if next_tick is None or now >= next_tick:
            table.advance(now)
            sink.on_time(now)
            next_tick = now + 1.0
        table.process_all([p])
    table.flush(now)
    return sink, weirds


def fast(pkts: list[Packet], **cfg) -> tuple[_Collect, Weirds, FastFlow]:
    sink, weirds = _Collect(), Weirds()
    flow = FastFlow(FlowConfig(seed=7, weirds=weirds, **cfg), [], [sink], weirds)
    now = 0.0
    for p in pkts:
        now = max(now, p.ts)
        flow.frame(p.ts, [p])
    flow.flush(now)
    return sink, weirds, flow


def same(pkts: list[Packet], **cfg) -> list[ConnRecord]:
    ref, ref_w = reference(pkts, **cfg)
    got, got_w, _ = fast(pkts, **cfg)
    assert got.records == ref.records
    assert got.ticks == ref.ticks
    assert dict(got_w.counts) == dict(ref_w.counts)
    return ref.records


def handshake(t0=100.0, cs=1000, ss=5000, req=100, resp=300, sport=40000, dport=80):
    return [
        tcp(t0, C, sport, S, dport, SYN, cs),
        tcp(t0 + 0.1, S, dport, C, sport, SA, ss, cs + 1),
        tcp(t0 + 0.2, C, sport, S, dport, A, cs + 1, ss + 1),
        tcp(t0 + 0.3, C, sport, S, dport, PA, cs + 1, ss + 1, data=req),
        tcp(t0 + 0.4, S, dport, C, sport, PA, ss + 1, cs + 1 + req, data=resp),
        tcp(t0 + 0.5, C, sport, S, dport, FA, cs + 1 + req, ss + 1 + resp),
        tcp(t0 + 0.6, S, dport, C, sport, FA, ss + 1 + resp, cs + 2 + req),
        tcp(t0 + 0.7, C, sport, S, dport, A, cs + 2 + req, ss + 2 + resp),
    ]


def test_complete_connection():
    recs = same(handshake())
    assert [(r.conn_state, r.history, r.orig_bytes, r.resp_bytes) for r in recs] == [("SF", "ShADdFf", 100, 300)]


def test_ipv6_and_seq_wraparound():
    recs = same(handshake(cs=0xFFFFFF00, ss=0xFFFFFFF0, req=1000, resp=5000) + handshake(t0=200, sport=1, dport=443))
    assert recs[0].orig_bytes == 1000 and recs[0].resp_bytes == 5000
    pkts = [tcp(p.ts, C6, p.sport, S6, p.dport, p.flags, p.seq, p.ack, p.payload_len) for p in handshake()]
    pkts = [p if p.sport == 40000 else tcp(p.ts, S6, p.sport, C6, p.dport, p.flags, p.seq, p.ack, p.payload_len)
            for p in pkts]
    assert same(pkts)[0].orig_h == C6


def test_rejected_reset_and_unanswered():
    same([tcp(1.0, C, 1, S, 80, SYN, 10), tcp(1.1, S, 80, C, 1, RA, 0, 11)])
    same([tcp(1.0, C, 2, S, 80, SYN, 10), tcp(2.0, C, 2, S, 80, SYN, 10), tcp(30.0, C, 3, S, 80, SYN, 99)])
    same(handshake()[:4] + [tcp(100.5, C, 40000, S, 80, R, 1101)])
    same(handshake()[:4] + [tcp(100.5, S, 80, C, 40000, RA, 5001, 1101), tcp(100.6, C, 40000, S, 80, R, 1101)])


def test_flips_missing_syn_and_synack_first():
    # Mid-stream pickup from the server side: originator flips to the client port.
    same([tcp(1.0, S, 80, C, 5555, PA, 100, 200, data=50), tcp(1.1, C, 5555, S, 80, A, 200, 150)])
    # SYN-ACK first, then the client's ACK: a late flip with history recased.
    same([tcp(1.0, S, 443, C, 6000, SA, 500, 101), tcp(1.1, C, 6000, S, 443, A, 101, 501),
          tcp(1.2, C, 6000, S, 443, PA, 101, 501, data=10)])
    # SYN-ACK first answered by RST (stealth scan): no flip.
    same([tcp(1.0, S, 8080, C, 6001, SA, 500, 101), tcp(1.1, C, 6001, S, 8080, R, 101)])
    # SYN and SYN-ACK seen in reverse order.
    same([tcp(1.0, S, 80, C, 7000, SA, 900, 11), tcp(1.0, C, 7000, S, 80, SYN, 10), tcp(1.1, C, 7000, S, 80, A, 11, 901)])
    # Both likely server ports, no SYN: the lower port is the responder.
    same([tcp(1.0, C, 443, S, 80, A, 5, 6), tcp(1.5, S, 80, C, 443, A, 6, 5)])


def test_gaps_retransmissions_zero_window_truncation():
    p = handshake(req=100, resp=3000)
    gap = [
        *p[:4],
        tcp(100.35, C, 40000, S, 80, PA, 1201, 5001, data=100),  # hole 1101..1201 never filled
        tcp(100.36, C, 40000, S, 80, PA, 1101, 5001, data=100),  # ...then filled (out of order)
        tcp(100.37, C, 40000, S, 80, PA, 1101, 5001, data=100),  # retransmission
        tcp(100.38, C, 40000, S, 80, PA, 1501, 5001, data=100),  # a real hole
        tcp(100.4, S, 80, C, 40000, A, 5001, 1601, window=0),  # acks past the hole: missed bytes
        tcp(100.45, S, 80, C, 40000, PA, 5001, 1601, data=3000, caplen=10),  # snap-truncated
        *p[5:],
    ]
    recs = same(gap)
    assert recs[0].missed_bytes > 0 and "W" not in recs[0].history and "w" in recs[0].history


def test_many_holes_and_long_history_grow_the_arrays():
    base = handshake()[:3]
    holes = [tcp(100.3 + k * 0.001, C, 40000, S, 80, PA, 1001 + 200 * k, 5001, data=50) for k in range(40, 0, -1)]
    # Repeated SYNs with changing sequence numbers and FINs at changing ends: one letter each.
    noisy = [tcp(101 + k * 0.01, C, 40000, S, 80, TH_FIN | TH_ACK, 1001 + 7 * k, 5001, data=3) for k in range(60)]
    recs = same(base + holes + noisy)
    assert len(recs[0].history) > 60


def test_reuse_splits_connections():
    first = handshake()
    again = handshake(t0=103.0, cs=777777)  # same 5-tuple, new ISN within the close delay
    recs = same(first + again)
    assert len(recs) == 2 and recs[0].uid != recs[1].uid


def test_timeouts_udp_icmp_and_other_protocols():
    pkts = [
        udp(1.0, C, 5353, "224.0.0.251", 5353, 40),
        udp(1.5, C, 33000, "8.8.8.8", 53, 30), udp(1.6, "8.8.8.8", 53, C, 33000, 90),
        udp(2.0, "8.8.8.8", 53, C, 33001, 90),  # a reply alone: flipped to the client's view
        udp(3.0, C, 68, "255.255.255.255", 67, 300),
        icmp(4.0, C, S, 8, 0), icmp(4.1, S, C, 0, 0), icmp(4.2, C, S, 3, 3),
        icmp(4.3, C6, S6, 128, 0, proto=PROTO_ICMP6), icmp(4.4, S6, C6, 129, 0, proto=PROTO_ICMP6),
        Packet(ts=5.0, src=C, dst=S, proto=47, ip_len=100),
        udp(200.0, C, 33000, "8.8.8.8", 53, 30),  # after the UDP timeout: a new connection
        tcp(201.0, C, 9, S, 9, SYN, 1),  # attempt timer
        tcp(400.0, C, 10, S, 10, A, 1, 1),
    ]
    recs = same(pkts)
    assert len(recs) == 11


def test_checksum_failures_count_like_the_reference():
    same([tcp(1.0, C, 1, S, 80, SYN, 10, ok=False), tcp(1.1, C, 1, S, 80, SYN, 10),
          udp(2.0, C, 5, S, 53, 10, ok=False), udp(2.1, C, 5, S, 53, 10),
          Packet(ts=3.0, src=C, dst=S, proto=PROTO_ICMP, ip_len=30, sport=8, checksum_ok=False)])


def test_growth_of_table_and_timer_heap():
    pkts = [tcp(10.0 + k * 0.0001, C, 1024 + k, S, 80, SYN, k) for k in range(5000)]
    recs = same(pkts)
    assert len(recs) == 5000


def test_eviction_at_the_cap():
    pkts = [udp(1.0 + k * 0.01, C, 2000 + k % 37, S, 9999, 10) for k in range(300)]
    ref, _ = reference(pkts, max_flows=10)
    got, weirds, flow = fast(pkts, max_flows=10)
    assert got.records == ref.records
    assert flow.evicted > 0 and weirds.counts["flow_table_full_evicted"] == flow.evicted


def test_flood_at_the_cap_keeps_the_timer_heap_bounded():
    """Evicted connections' timers are dropped (heap compaction) without changing any record."""
    flood = [tcp(10.0 + k * 0.00005, f"10.9.{k // 250 % 250}.{k % 250 + 1}", 1024 + k % 60000, S, 80, SYN, k)
             for k in range(20000)]
    pkts = flood[:10000] + handshake(t0=10.3) + flood[10000:]
    pkts.sort(key=lambda p: p.ts)
    ref, _ = reference(pkts, max_flows=50)
    got, _, flow = fast(pkts, max_flows=50)
    assert got.records == ref.records
    # Without compaction the heap would hold a timer of every flood connection (> 20,000).
    assert flow.table.timers.when.shape[0] <= 2 * (4 * 50 + HEAP_SLACK)


_ports = st.sampled_from([80, 443, 1234, 53, 40000])
_seqs = st.one_of(st.sampled_from([0, 1, 1000, 1001, 0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF]),
                  st.integers(0, 0xFFFFFFFF), st.integers(990, 1400))
_flags = st.sampled_from([SYN, SA, A, PA, FA, R, RA, TH_FIN, TH_SYN | TH_FIN, TH_SYN | TH_RST, 0, TH_FIN | TH_RST])


@st.composite
def _packets(draw):
    n = draw(st.integers(1, 40))
    ts = 1000.0
    out = []
    for _ in range(n):
        ts += draw(st.sampled_from([0.0, 0.01, 0.5, 2.0, 6.0, 70.0, 400.0]))
        fwd = draw(st.booleans())
        sp, dp = draw(_ports), draw(_ports)
        a, b = (C, S) if fwd else (S, C)
        kind = draw(st.sampled_from(["tcp", "tcp", "tcp", "udp", "icmp"]))
        if kind == "tcp":
            data = draw(st.sampled_from([0, 0, 1, 100, 1460, 20000]))
            cap = draw(st.sampled_from([None, None, 0]))
            out.append(tcp(ts, a, sp, b, dp, draw(_flags), draw(_seqs), draw(_seqs), data=data,
                           window=draw(st.sampled_from([0, 1000])), caplen=cap))
        elif kind == "udp":
            out.append(udp(ts, a, sp, b, dp, draw(st.sampled_from([0, 10]))))
        else:
            out.append(icmp(ts, a, b, draw(st.sampled_from([0, 8, 3, 13])), 0))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_packets())
def test_random_sequences_match_the_reference(pkts):
    same(pkts)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([SYN, SA, A, PA, FA, R]), st.booleans(), st.integers(0, 3000),
                          st.sampled_from([0, 1, 536, 1460])), min_size=1, max_size=60))
def test_random_conversations_on_one_connection(steps):
    """Plausible sequence numbers (near each side's ISN) on one 5-tuple: deep state machine paths."""
    pkts = []
    ts = 50.0
    for flags, fwd, off, data in steps:
        ts += 0.05
        if fwd:
            pkts.append(tcp(ts, C, 40000, S, 80, flags, 1000 + off, 5000 + off // 2, data=data))
        else:
            pkts.append(tcp(ts, S, 80, C, 40000, flags, 5000 + off // 2, 1000 + off, data=data))
    same(pkts)


def test_port_table_is_likely_server_ports_for_every_port() -> None:
    from pcapexfil.fast.layout import PORTS_NTP
    from pcapexfil.fast.table import PORTS
    from pcapexfil.flow.ports import is_likely_server_port, registered_ports

    for base, proto in ((0, PROTO_TCP), (65536, PROTO_UDP)):
        expected = [is_likely_server_port(port, proto) for port in range(65536)]
        assert PORTS[base : base + 65536].astype(bool).tolist() == expected
    assert set(np.flatnonzero(PORTS[PORTS_NTP:]).tolist()) == set(registered_ports("ntp", PROTO_UDP)) == {123}
