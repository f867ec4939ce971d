"""Flow-table semantics on hand-built packets: each case is a conn.log behaviour of Zeek's
that is documented in Zeek's source or scripts (cited per test)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcapexfil.flow import FlowConfig, FlowTable
from pcapexfil.flow.tcp import seq_delta
from pcapexfil.flow.uid import ConnUids, base62
from pcapexfil.packet import (
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TH_ACK,
    TH_FIN,
    TH_RST,
    TH_SYN,
    Packet,
)
from pcapexfil.record import ConnRecord

C, S = "10.0.0.1", "93.184.216.34"
SYN, SA, A, PA, FA, R, RA = TH_SYN, TH_SYN | TH_ACK, TH_ACK, TH_ACK | 0x08, TH_FIN | TH_ACK, TH_RST, TH_RST | TH_ACK


def tcp(ts, src, sport, dst, dport, flags, seq, ack=0, data=0, window=1000, caplen=None, ok=None):
    payload = b"x" * (data if caplen is None else caplen)
    return Packet(ts=ts, src=src, dst=dst, proto=PROTO_TCP, ip_len=40 + data, sport=sport, dport=dport,
                  flags=flags, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, window=window, payload_len=data,
                  payload=payload, checksum_ok=ok)


def udp(ts, src, sport, dst, dport, data, ok=None):
    return Packet(ts=ts, src=src, dst=dst, proto=PROTO_UDP, ip_len=28 + data, sport=sport, dport=dport,
                  payload_len=data, payload=b"u" * data, checksum_ok=ok)


def run(pkts, **cfg) -> list[ConnRecord]:
    out: list[ConnRecord] = []
    table = FlowTable(FlowConfig(seed=1, **cfg), out.append)
    for p in pkts:
        table.process(p)
    table.flush()
    return out


def handshake_and_close(t0=100.0, cs=1000, ss=5000, req=100, resp=300, sport=40000):
    return [
        tcp(t0, C, sport, S, 80, SYN, cs),
        tcp(t0 + 0.1, S, 80, C, sport, SA, ss, cs + 1),
        tcp(t0 + 0.2, C, sport, S, 80, A, cs + 1, ss + 1),
        tcp(t0 + 0.3, C, sport, S, 80, PA, cs + 1, ss + 1, data=req),
        tcp(t0 + 0.4, S, 80, C, sport, PA, ss + 1, cs + 1 + req, data=resp),
        tcp(t0 + 0.5, C, sport, S, 80, FA, cs + 1 + req, ss + 1 + resp),
        tcp(t0 + 0.6, S, 80, C, sport, FA, ss + 1 + resp, cs + 2 + req),
        tcp(t0 + 0.7, C, sport, S, 80, A, cs + 2 + req, ss + 2 + resp),
    ]


def test_normal_tcp_connection_is_sf_with_sequence_byte_counts():
    (rec,) = run(handshake_and_close())
    assert (rec.orig_h, rec.orig_p, rec.resp_h, rec.resp_p, rec.proto) == (C, 40000, S, 80, "tcp")
    assert rec.conn_state == "SF"
    assert rec.history == "ShADdFf"  # the server never sends a pure ACK here
    assert (rec.orig_bytes, rec.resp_bytes) == (100, 300)
    assert (rec.orig_pkts, rec.resp_pkts) == (5, 3)
    assert rec.orig_ip_bytes == 5 * 40 + 100 and rec.resp_ip_bytes == 3 * 40 + 300
    # The final ACK after both FINs does not extend the duration (Conn::Info doc).
    assert rec.duration == pytest.approx(0.6)
    assert rec.missed_bytes == 0
    assert rec.ts == 100.0 and rec.ip_proto == 6
    assert rec.uid.startswith("C") and len(rec.uid) > 10


def test_retransmission_counts_bytes_once_and_adds_t():
    pkts = handshake_and_close()
    pkts.insert(4, tcp(100.35, C, 40000, S, 80, PA, 1001, 5001, data=100))
    (rec,) = run(pkts)
    assert rec.orig_bytes == 100
    assert "T" in rec.history
    assert rec.orig_pkts == 6


def test_sequence_wraparound_counts_bytes():
    (rec,) = run(handshake_and_close(cs=0xFFFFFFF0, ss=0xFFFFFF00, req=100, resp=500))
    assert (rec.orig_bytes, rec.resp_bytes) == (100, 500)
    assert seq_delta(5, 0xFFFFFFFF) == 6


def test_content_gap_counts_missed_bytes_and_g():
    pkts = [
        tcp(1.0, C, 40000, S, 80, SYN, 1000),
        tcp(1.1, S, 80, C, 40000, SA, 5000, 1001),
        tcp(1.2, C, 40000, S, 80, A, 1001, 5001),
        tcp(1.3, S, 80, C, 40000, PA, 5001, 1001, data=100),
        # 200 bytes at 5101 never captured; the client acks them.
        tcp(1.4, S, 80, C, 40000, PA, 5301, 1001, data=100),
        tcp(1.5, C, 40000, S, 80, A, 1001, 5401),
    ]
    (rec,) = run(pkts)
    assert rec.missed_bytes == 200
    assert rec.resp_bytes == 400
    assert "g" in rec.history
    assert rec.conn_state == "S1"


def test_snaplen_truncated_payload_is_a_gap_when_acked():
    pkts = [
        tcp(1.0, C, 40000, S, 80, SYN, 1000),
        tcp(1.1, S, 80, C, 40000, SA, 5000, 1001),
        tcp(1.2, C, 40000, S, 80, A, 1001, 5001),
        tcp(1.3, S, 80, C, 40000, PA, 5001, 1001, data=1000, caplen=50),
        tcp(1.4, C, 40000, S, 80, A, 1001, 6001),
    ]
    (rec,) = run(pkts)
    assert rec.missed_bytes == 1000
    assert rec.resp_bytes == 1000


def test_syn_only_is_s0_and_unset_duration_and_bytes():
    (rec,) = run([tcp(5.0, C, 40000, S, 80, SYN, 1)])
    assert rec.conn_state == "S0" and rec.history == "S"
    assert rec.duration is None and rec.orig_bytes is None and rec.resp_bytes is None
    assert rec.orig_pkts == 1 and rec.resp_pkts == 0


def test_rejected_attempt_is_rej():
    (rec,) = run([tcp(5.0, C, 40000, S, 80, SYN, 1), tcp(5.1, S, 80, C, 40000, RA, 0, 2)])
    assert rec.conn_state == "REJ" and rec.history == "Sr"


def test_reset_by_originator_after_establishment_is_rsto():
    pkts = handshake_and_close()[:5] + [tcp(100.5, C, 40000, S, 80, RA, 1101, 5301)]
    (rec,) = run(pkts)
    assert rec.conn_state == "RSTO"
    assert rec.history.endswith("R")


def test_missing_syn_flips_direction_on_syn_ack_from_server_port():
    # The SYN was not captured; the SYN-ACK comes from the server port (core.history-flip).
    pkts = handshake_and_close()[1:]
    (rec,) = run(pkts)
    assert (rec.orig_h, rec.orig_p) == (C, 40000)
    assert rec.history.startswith("^h")
    assert rec.conn_state == "SF"


def test_midstream_from_server_port_is_flipped_and_oth():
    pkts = [tcp(1.0, S, 443, C, 50000, PA, 7000, 9000, data=10), tcp(1.5, C, 50000, S, 443, A, 9000, 7010)]
    (rec,) = run(pkts)
    assert (rec.orig_p, rec.resp_p) == (50000, 443)
    assert rec.history == "^dA"
    assert rec.conn_state == "OTH"
    assert rec.resp_bytes == 10


def test_new_syn_after_close_starts_a_new_connection():
    pkts = handshake_and_close(t0=100.0) + handshake_and_close(t0=101.0, cs=77777, ss=88888)
    recs = run(pkts)
    assert len(recs) == 2
    assert recs[0].uid != recs[1].uid
    assert all(r.conn_state == "SF" for r in recs)


def test_close_delay_emits_record_before_end_of_input():
    out: list[ConnRecord] = []
    table = FlowTable(FlowConfig(seed=1), out.append)
    for p in handshake_and_close():
        table.process(p)
    table.advance(104.0)
    assert out == []
    table.advance(106.0)
    assert len(out) == 1 and len(table) == 0


def test_udp_inactivity_timeout_splits_connections():
    pkts = [udp(0.0, C, 5000, S, 9999, 10), udp(30.0, S, 9999, C, 5000, 20), udp(200.0, C, 5000, S, 9999, 5)]
    recs = run(pkts)
    assert len(recs) == 2
    first = recs[0]
    assert first.conn_state == "SF" and first.history == "Dd"
    assert (first.orig_bytes, first.resp_bytes) == (10, 20)
    assert recs[1].conn_state == "S0" and recs[1].duration is None


def test_udp_reply_only_to_server_port_is_shr_flipped():
    (rec,) = run([udp(1.0, S, 53, C, 33333, 60)])
    assert (rec.orig_h, rec.orig_p, rec.resp_p) == (C, 33333, 53)
    assert rec.history == "^d" and rec.conn_state == "SHR"


def test_udp_bad_checksum_with_verification_adds_c_and_is_not_counted():
    (rec,) = run([udp(1.0, C, 5000, S, 9999, 10, ok=False), udp(1.1, S, 9999, C, 5000, 10, ok=False)])
    assert rec.history == "Cc" and rec.conn_state == "OTH"
    assert rec.orig_pkts == 0 and rec.resp_pkts == 0


def test_scaled_history_repeats_at_1_10_100():
    pkts = [udp(1.0 + i * 0.01, C, 5000, S, 9999, 10, ok=False) for i in range(100)]
    (rec,) = run(pkts)
    assert rec.history == "CCC"


def test_icmp_echo_request_and_reply_pair_into_one_connection():
    def icmp(ts, src, dst, typ):
        return Packet(ts=ts, src=src, dst=dst, proto=PROTO_ICMP, ip_len=84, sport=typ, dport=0, payload_len=56)

    recs = run([icmp(1.0, C, S, 8), icmp(1.1, S, C, 0), icmp(2.0, C, S, 8), icmp(2.1, S, C, 0),
                icmp(3.0, S, C, 3)])
    echo = next(r for r in recs if r.orig_p == 8)
    assert (echo.orig_h, echo.resp_p, echo.proto, echo.conn_state) == (C, 0, "icmp", "OTH")
    assert (echo.orig_pkts, echo.resp_pkts, echo.orig_bytes, echo.resp_bytes) == (2, 2, 112, 112)
    unreach = next(r for r in recs if r.orig_p == 3)
    assert unreach.orig_h == S and unreach.resp_p == 0


def test_unknown_transport_keeps_ip_proto():
    pkts = [Packet(ts=1.0 + i, src=C if i % 2 == 0 else S, dst=S if i % 2 == 0 else C, proto=132, ip_len=100)
            for i in range(4)]
    (rec,) = run(pkts)
    assert rec.proto == "unknown_transport" and rec.ip_proto == 132
    assert (rec.orig_p, rec.resp_p) == (0, 0)
    assert (rec.orig_pkts, rec.resp_pkts, rec.orig_bytes) == (2, 2, 0)
    assert rec.history == ""


def test_local_nets_mark_orig_and_resp():
    (rec,) = run(handshake_and_close())
    assert rec.local_orig is True and rec.local_resp is False
    (rec,) = run(handshake_and_close(), local_nets=())
    assert rec.local_orig is None


def test_seeded_uids_come_from_the_identity_and_are_base62():
    ident = (6, "10.0.0.1", 1, "10.0.0.2", 2, 5.0)
    a, b = ConnUids(7), ConnUids(7)
    first = a.conn(*ident)
    # Either endpoint first, another run with the seed: the same uid.
    assert first == b.conn(6, "10.0.0.2", 2, "10.0.0.1", 1, 5.0)
    assert first.startswith("C") and set(first[1:]) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    # The same identity again (a 5-tuple reused within the microsecond): a new uid...
    second = a.conn(*ident)
    assert second != first
    # ...counted among the connections created since the last tick.
    c = ConnUids(7)
    assert c.conn(*ident) == first
    c.expire(6.0)
    assert c.conn(*ident) == first
    assert ConnUids(8).conn(*ident) != first and a.conn(6, "10.0.0.1", 1, "10.0.0.2", 2, 5.5) != first
    assert base62(61) == "z" and base62(62) == "10"


@given(st.integers(min_value=0, max_value=(1 << 96) - 1))
def test_base62_is_the_digit_by_digit_conversion(value: int) -> None:
    """base62 takes two digits per division; the one-digit loop is the oracle."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    digits = ""
    rest = value
    while True:
        rest, rem = divmod(rest, 62)
        digits = alphabet[rem] + digits
        if not rest:
            break
    assert base62(value) == digits


def test_unseeded_runs_name_a_connection_differently():
    # Each run draws its seed from the OS: two runs share no uid.
    ident = (17, "10.0.0.1", 53, "10.0.0.2", 4000, 1.0)
    assert ConnUids().conn(*ident) != ConnUids().conn(*ident)


def test_analyzers_see_every_packet_and_the_record():
    class Counter:
        name = "counter"

        def __init__(self):
            self.packets = 0
            self.removed = []
            self.created = []

        def on_new(self, conn):
            self.created.append(conn.uid)

        def on_packet(self, conn, is_orig, pkt):
            self.packets += 1
            conn.app["n"] = conn.app.get("n", 0) + 1

        def on_remove(self, conn, rec):
            rec.server_name = f"n={conn.app['n']}"
            self.removed.append(conn.uid)

        def close(self):
            pass

    counter = Counter()
    out: list[ConnRecord] = []
    table = FlowTable(FlowConfig(seed=3), out.append, [counter])
    for p in handshake_and_close():
        table.process(p)
    table.flush()
    assert counter.packets == 8
    assert out[0].server_name == "n=8" and counter.removed == counter.created == [out[0].uid]


def test_lone_syn_ack_from_likely_server_port_flips_at_once():
    # TCPAnalyzer::WantConnection: a SYN-ACK from a likely server port (80) to one that is
    # not (6705) flips the roles on the first packet.
    (rec,) = run([tcp(1.0, S, 80, C, 6705, SA, 5000, 1001)])
    assert (rec.orig_h, rec.orig_p, rec.history, rec.conn_state) == (C, 6705, "^h", "OTH")


def test_lone_syn_ack_between_likely_server_ports_or_in_bare_mode_is_not_flipped():
    # Both ports likely (80, IRC's 6667): no flip for a SYN-ACK (stealth scans). Bare mode
    # (`zeek -b`, empty likely_server_ports; corpus: wikipedia.pcap's 'H', OTH): no flip.
    (rec,) = run([tcp(1.0, S, 80, C, 6667, SA, 5000, 1001)])
    assert (rec.orig_h, rec.orig_p, rec.history) == (S, 80, "H")
    (rec,) = run([tcp(1.0, S, 80, C, 6705, SA, 5000, 1001)], likely_server_ports=frozenset())
    assert (rec.orig_h, rec.orig_p, rec.history) == (S, 80, "H")


def test_syn_ack_followed_by_ack_flips_and_recases_history_even_between_server_ports():
    pkts = [tcp(1.0, S, 80, C, 6669, SA, 5000, 1001), tcp(1.1, C, 6669, S, 80, A, 1001, 5001),
            tcp(1.2, C, 6669, S, 80, PA, 1001, 5001, data=10)]
    (rec,) = run(pkts)
    assert (rec.orig_h, rec.orig_p, rec.resp_p) == (C, 6669, 80)
    assert rec.history == "^hAD"
    assert (rec.orig_pkts, rec.resp_pkts) == (2, 1)


def test_syn_then_rst_from_originator_is_rstos0():
    (rec,) = run([tcp(1.0, C, 40000, S, 80, SYN, 10), tcp(1.2, C, 40000, S, 80, R, 11)])
    assert rec.conn_state == "RSTOS0" and rec.history == "SR"


def test_syn_then_fin_without_answer_is_sh_and_orig_fin_only_is_s2():
    (rec,) = run([tcp(1.0, C, 40000, S, 80, SYN, 10), tcp(1.2, C, 40000, S, 80, FA, 11, 0)])
    assert rec.conn_state == "SH"
    pkts = handshake_and_close()[:6]  # the client's FIN, no answer
    (rec,) = run(pkts)
    assert rec.conn_state == "S2"


def test_zero_window_adds_w():
    pkts = handshake_and_close()
    pkts.insert(5, tcp(100.45, S, 80, C, 40000, A, 5301, 1101, window=0))
    (rec,) = run(pkts)
    assert "w" in rec.history


def test_unanswered_syn_retransmitted_after_attempt_delay_is_a_new_connection():
    # tcp_attempt_delay (5 s) removes an unanswered attempt; a later SYN starts afresh.
    pkts = [tcp(1.0, C, 40000, S, 80, SYN, 10), tcp(2.0, C, 40000, S, 80, SYN, 10),
            tcp(9.0, C, 40000, S, 80, SYN, 10)]
    recs = run(pkts)
    assert [(r.orig_pkts, r.conn_state) for r in recs] == [(2, "S0"), (1, "S0")]
    assert recs[0].duration == pytest.approx(1.0)


def test_tunnel_parents_and_outer_service():
    outer_udp = udp(1.0, "172.16.0.1", 40000, "172.16.0.2", 4789, 100)
    inner = tcp(1.0, C, 40000, S, 80, SYN, 10)
    inner.outer, outer_udp.tunnel_type = outer_udp, "vxlan"
    outer_gre = Packet(ts=2.0, src="172.16.0.1", dst="172.16.0.9", proto=47, ip_len=100)
    inner2 = udp(2.0, C, 5353, S, 53, 30)
    inner2.outer, outer_gre.tunnel_type = outer_gre, "gre"
    out: list[ConnRecord] = []
    table = FlowTable(FlowConfig(seed=5), out.append)
    table.process_all([outer_udp, inner])
    table.process_all([outer_gre, inner2])
    table.flush()
    by_proto = {(r.proto, r.resp_p): r for r in out}
    assert len(out) == 3  # the GRE carrier is no connection of its own
    vx = by_proto[("udp", 4789)]
    assert vx.service == ["vxlan"]
    assert by_proto[("tcp", 80)].tunnel_parents == [vx.uid]
    gre_parent = by_proto[("udp", 53)].tunnel_parents
    assert len(gre_parent) == 1 and gre_parent[0] not in {r.uid for r in out}


def test_repeated_syn_acks_then_data_from_the_server_still_flip():
    # scripts.base.protocols.ssh.half-duplex-server: SYN-ACK retransmits, then server data.
    pkts = [tcp(1.0 + i * 0.1, S, 22, C, 51489, SA, 5000, 1001) for i in range(3)]
    pkts.append(tcp(1.4, S, 22, C, 51489, PA, 5001, 1001, data=21))
    (rec,) = run(pkts)
    assert (rec.orig_h, rec.orig_p) == (C, 51489)
    assert rec.history == "^hd" and (rec.orig_pkts, rec.resp_pkts) == (0, 4)
