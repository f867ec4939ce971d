"""Decoder: link types, L2 stacks, IP options/extension headers, fragments, tunnels, damage."""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import pytest
from helpers_pcap import (
    MAC_A,
    ether,
    ipv4,
    ipv4_fragments,
    ipv6,
    ipv6_fragments,
    tcp,
    udp,
    vlan_tags,
)

from pcapexfil.decode import MAX_TUNNEL_DEPTH, Decoder
from pcapexfil.packet import RawPacket
from pcapexfil.source import open_captures
from pcapexfil.weird import Weirds

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "bad"
V4 = ipv4(tcp(sport=40000, dport=443, data=b"hello"), src="192.0.2.1", dst="198.51.100.7")
V6 = ipv6(udp(sport=5000, dport=53, data=b"q" * 12))


def dec1(linktype: int, data: bytes, verify: bool = False, wirelen: int | None = None) -> tuple[list, Weirds]:
    w = Weirds()
    out = Decoder(w, verify_checksums=verify).decode(RawPacket(1.0, linktype, data, wirelen or len(data)))
    return out, w


def only(out: list):  # noqa: ANN201
    assert len(out) == 1, out
    return out[0]


def test_ethernet_ipv4_tcp_fields() -> None:
    out, w = dec1(1, ether(V4))
    p = only(out)
    assert (p.src, p.sport, p.dst, p.dport, p.proto) == ("192.0.2.1", 40000, "198.51.100.7", 443, 6)
    assert p.ip_len == 20 + 20 + 5 and p.payload_len == 5 and p.payload == b"hello"
    assert p.flags == dpkt.tcp.TH_SYN and p.seq == 1 and p.ttl == 64
    assert p.l2_src == MAC_A.hex(":") and p.checksum_ok is None and w.total == 0


def test_ipv6_udp_fields() -> None:
    p = only(dec1(1, ether(V6, 0x86DD))[0])
    assert (p.src, p.dst, p.ip_version, p.proto, p.dport) == ("2001:db8::1", "2001:db8::2", 6, 17, 53)
    assert p.ip_len == 40 + 8 + 12 and p.payload_len == 12


@pytest.mark.parametrize(
    "linktype,frame",
    [
        (113, struct.pack("!HHH8sH", 0, 1, 6, b"\0" * 8, 0x0800) + V4),  # Linux SLL
        (276, struct.pack("!HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"\0" * 8) + V4),  # SLL2
        (101, V4),
        (228, V4),
        (12, V4),
        (0, struct.pack("<I", 2) + V4),  # BSD null, little-endian host
        (0, struct.pack(">I", 2) + V4),  # BSD null, big-endian host
        (108, struct.pack(">I", 2) + V4),  # OpenBSD loop
        (9, b"\xff\x03\x00\x21" + V4),  # PPP with address/control
        (1, ether(struct.pack("!BBHH", 0x11, 0, 1, len(V4) + 2) + b"\x00\x21" + V4, 0x8864)),  # PPPoE
        # radiotap (8-byte header) + 802.11 data frame (to-DS) + LLC/SNAP
        (127, struct.pack("<BBHI", 0, 0, 8, 0) + struct.pack("<BB", 0x08, 0x01) + b"\0" * 22
              + b"\xaa\xaa\x03\0\0\0\x08\x00" + V4),
    ],
)
def test_link_types(linktype: int, frame: bytes) -> None:
    out, w = dec1(linktype, frame)
    p = only(out)
    assert (p.src, p.dst, p.payload) == ("192.0.2.1", "198.51.100.7", b"hello")
    assert w.total == 0


def test_raw_ipv6_linktypes() -> None:
    for lt in (101, 229):
        assert only(dec1(lt, V6)[0]).dst == "2001:db8::2"


def test_unknown_linktype_is_counted_weird() -> None:
    out, w = dec1(147, ether(V4))
    assert out == [] and w.counts["unknown_link_type"] == 1


def test_vlan_stack_records_outer_and_inner() -> None:
    et, body = vlan_tags([100, 200], 0x0800, V4)
    p = only(dec1(1, ether(body, et))[0])
    assert (p.vlan, p.inner_vlan, p.dport) == (100, 200, 443)


def test_mpls_stack_in_vlan() -> None:
    labels = struct.pack("!I", (16 << 12) | 64) + struct.pack("!I", (17 << 12) | 0x100 | 64)
    et, body = vlan_tags([5], 0x8847, labels + V4)
    p = only(dec1(1, ether(body, et))[0])
    assert p.vlan == 5 and p.dport == 443


def test_pppoe_session_over_qinq() -> None:
    pppoe = struct.pack("!BBHH", 0x11, 0, 0x1234, len(V4) + 2) + struct.pack("!H", 0x0021) + V4
    et, body = vlan_tags([10, 20], 0x8864, pppoe)
    p = only(dec1(1, ether(body, et))[0])
    assert (p.vlan, p.inner_vlan, p.src) == (10, 20, "192.0.2.1")


def test_ipv4_options_are_skipped() -> None:
    pkt = ipv4(udp(dport=161, data=b"abc"), opts=b"\x94\x04\x00\x00" + b"\x01\x01\x01\x00")  # router alert + NOPs
    p = only(dec1(101, pkt)[0])
    assert p.dport == 161 and p.payload == b"abc" and p.ip_len == 28 + 8 + 3


def test_ipv6_extension_headers_and_routing_destination() -> None:
    final = bytes.fromhex("20010db8000000000000000000000099")
    hop = bytes([60, 0]) + b"\x01\x04\0\0\0\0"  # hop-by-hop -> dest opts, PadN
    dsto = bytes([43, 0]) + b"\x01\x04\0\0\0\0"  # dest opts -> routing
    rh0 = bytes([17, 2, 0, 1]) + b"\0" * 4 + final  # type 0, one segment left
    pkt = ipv6(udp(dport=53, data=b"z"), nxt=17, ext=hop + dsto + rh0, first_nxt=0)
    p = only(dec1(101, pkt)[0])
    assert p.proto == 17 and p.dport == 53 and p.payload == b"z"
    assert p.dst == "2001:db8::99"  # Zeek uses the final destination of a source route
    assert p.ip_len == 40 + 8 + 8 + 24 + 8 + 1


@pytest.mark.parametrize("order", ["in", "reversed"])
def test_ipv4_fragment_reassembly(order: str) -> None:
    datagram = ipv4(udp(dport=9999, data=bytes(range(256)) * 8), ident=77)
    frags = ipv4_fragments(datagram, 512)
    assert len(frags) == 5
    if order == "reversed":
        frags.reverse()
    w = Weirds()
    dec = Decoder(w)
    results = [dec.decode(RawPacket(float(i), 101, f, len(f))) for i, f in enumerate(frags)]
    assert all(r == [] for r in results[:-1])
    p = only(results[-1])
    assert p.ip_len == len(datagram) and p.payload == bytes(range(256)) * 8 and p.dport == 9999
    assert w.total == 0 and not dec.reassembler.pending


@pytest.mark.parametrize("order", ["in", "shuffled"])
def test_ipv6_fragment_reassembly(order: str) -> None:
    datagram = ipv6(udp(dport=4242, data=b"\xab" * 3000))
    frags = ipv6_fragments(datagram, 1232)
    if order == "shuffled":
        frags = [frags[1], frags[2], frags[0]]
    dec = Decoder(Weirds())
    results = [dec.decode(RawPacket(float(i), 229, f, len(f))) for i, f in enumerate(frags)]
    p = only(results[-1])
    assert results[0] == [] and results[1] == []
    assert p.ip_len == len(datagram) and p.payload_len == 3000 and p.dport == 4242


def test_fragment_overlap_with_different_bytes_is_weird() -> None:
    datagram = ipv4(udp(data=b"a" * 64))
    f1, f2 = ipv4_fragments(datagram, 40)
    evil = bytearray(f1)
    evil[-1] ^= 0xFF
    w = Weirds()
    dec = Decoder(w)
    for i, f in enumerate([f1, bytes(evil), f2]):
        dec.decode(RawPacket(float(i), 101, f, len(f)))
    assert w.counts["fragment_inconsistency"] == 1


def test_incomplete_fragments_expire() -> None:
    f1, _ = ipv4_fragments(ipv4(udp(data=b"a" * 64)), 40)
    dec = Decoder(Weirds(), frag_timeout=30.0)
    dec.decode(RawPacket(0.0, 101, f1, len(f1)))
    assert len(dec.reassembler.pending) == 1
    dec.decode(RawPacket(100.0, 101, V4, len(V4)))
    assert not dec.reassembler.pending


def test_icmp_type_code_and_unknown_protocol() -> None:
    echo = ipv4(dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(id=1, seq=1, data=b"ping")))
    p = only(dec1(101, echo)[0])
    assert (p.proto, p.sport, p.dport, p.payload_len) == (1, 8, 0, len(b"ping"))  # after the 8-byte header
    sctp = ipv4(b"\x00" * 28, p=132)
    q = only(dec1(101, sctp)[0])
    assert (q.proto, q.sport, q.dport, q.payload_len) == (132, 0, 0, 28)


def test_checksums_only_when_asked() -> None:
    good = ether(V4)
    bad = bytearray(good)
    bad[14 + 20 + 16] ^= 0x01  # flip a TCP checksum bit
    assert only(dec1(1, good)[0]).checksum_ok is None
    assert only(dec1(1, good, verify=True)[0]).checksum_ok is True
    assert only(dec1(1, bytes(bad), verify=True)[0]).checksum_ok is False
    badip = bytearray(good)
    badip[14 + 10] ^= 0x01
    out, w = dec1(1, bytes(badip), verify=True)
    assert out == [] and w.counts["bad_IP_checksum"] == 1
    assert only(dec1(1, bytes(badip))[0]).dport == 443  # -C: counted anyway


def test_snaplen_truncated_capture_keeps_claimed_lengths() -> None:
    pkt = ether(ipv4(tcp(data=b"d" * 1000)))
    p = only(dec1(1, pkt[:14 + 40 + 10], wirelen=len(pkt))[0])
    assert p.payload_len == 1000 and len(p.payload) == 10 and p.ip_len == 1040


def test_short_packets_are_skipped_with_weirds_neighbours_kept() -> None:
    w = Weirds()
    dec = Decoder(w)
    out = [p for raw in open_captures([str(FIX / "short-packets.pcap")], w) for p in dec.decode(raw)]
    assert [p.sport for p in out] == [2000, 2001]
    assert w.counts["truncated_IP_len"] == 1
    assert w.counts["truncated_header"] == 1
    assert w.counts["truncated_ethernet_frame"] == 1


# ---- tunnels -----------------------------------------------------------------------------

INNER = ipv4(tcp(sport=1111, dport=80, data=b"GET"), src="10.9.9.1", dst="10.9.9.2")
INNER6 = ipv6(tcp(sport=2222, dport=443), src="2001:db8::a", dst="2001:db8::b")


def outer_udp(dport: int, payload: bytes) -> bytes:
    return ether(ipv4(udp(sport=50000, dport=dport, data=payload), src="172.16.0.1", dst="172.16.0.2"))


def check_udp_tunnel(frame: bytes, kind: str, inner_dst: str = "10.9.9.2") -> None:
    out, w = dec1(1, frame)
    assert len(out) == 2, (out, w.counts)
    outer, inner = out
    assert outer.proto == 17 and outer.tunnel_type == kind and outer.outer is None
    assert inner.outer is outer and inner.dst == inner_dst
    assert w.total == 0


def test_vxlan() -> None:
    check_udp_tunnel(outer_udp(4789, b"\x08\0\0\0\0\0\x01\0" + ether(INNER)), "vxlan")


def test_vxlan_without_i_flag_is_plain_udp() -> None:
    out, _ = dec1(1, outer_udp(4789, b"\x00" * 8 + ether(INNER)))
    assert len(out) == 1 and out[0].tunnel_type is None


def test_geneve_with_options() -> None:
    hdr = bytes([0x01, 0x00]) + struct.pack("!H", 0x6558) + b"\0\0\x2a\0" + b"\x01\x02\x03\x01"
    check_udp_tunnel(outer_udp(6081, hdr + ether(INNER)), "geneve")


def test_teredo_with_origin_indication() -> None:
    origin = b"\x00\x00" + b"\x12\x34" + b"\x01\x02\x03\x04"
    check_udp_tunnel(outer_udp(3544, origin + INNER6), "teredo", "2001:db8::b")


def test_teredo_port_without_ipv6_is_not_decapsulated() -> None:
    out, _ = dec1(1, outer_udp(3544, b"\x60" + b"\0" * 50))
    assert len(out) == 1 and out[0].tunnel_type is None


def test_ayiya() -> None:
    hdr = bytes([0x41, 0x52, 0x11, 41]) + b"\0" * 4 + b"\0" * 16 + b"\0" * 20  # id 16B, sha1 sig 20B
    check_udp_tunnel(outer_udp(5072, hdr + INNER6), "ayiya", "2001:db8::b")


def test_gtpv1_user_plane_and_signalling() -> None:
    gtp = struct.pack("!BBHI", 0x30, 0xFF, len(INNER), 1) + INNER
    check_udp_tunnel(outer_udp(2152, gtp), "gtpv1")
    echo = struct.pack("!BBHIHBB", 0x32, 0x01, 4, 0, 1, 0, 0)
    out, _ = dec1(1, outer_udp(2152, echo))
    assert len(out) == 1  # signalling: the outer connection only


def test_gre_over_udp() -> None:
    out, _ = dec1(1, outer_udp(4754, b"\x00\x00\x08\x00" + INNER))
    assert [p.dst for p in out] == ["172.16.0.2", "10.9.9.2"] and out[1].outer is out[0]


def ip_over_ip(proto: int, payload: bytes) -> bytes:
    return ether(ipv4(payload, src="203.0.113.1", dst="203.0.113.2", p=proto))


@pytest.mark.parametrize(
    "frame,inner_dst",
    [
        (ip_over_ip(4, INNER), "10.9.9.2"),  # IP-in-IP
        (ip_over_ip(41, INNER6), "2001:db8::b"),  # 6in4
        (ip_over_ip(47, b"\x00\x00\x08\x00" + INNER), "10.9.9.2"),  # GRE
        (ip_over_ip(47, b"\x20\x00\x65\x58" + b"\0\0\0\x07" + ether(INNER)), "10.9.9.2"),  # GRE key + TEB
        (ip_over_ip(47, b"\x30\x01\x88\x0b" + b"\0\x20\0\x01" + b"\0\0\0\x05" + b"\xff\x03\x00\x21" + INNER),
         "10.9.9.2"),  # PPTP enhanced GRE
        (ip_over_ip(47, b"\x10\x00\x88\xbe" + b"\0\0\0\x01" + b"\x10\x01\0\0\0\0\0\0" + ether(INNER)),
         "10.9.9.2"),  # ERSPAN II
        (ip_over_ip(47, b"\x00\x00\x08\x00" + ipv4(b"\x00\x00\x08\x00" + INNER, p=47)), "10.9.9.2"),  # GRE in GRE
    ],
)
def test_ip_carried_tunnels(frame: bytes, inner_dst: str) -> None:
    out, w = dec1(1, frame)
    p = only(out)
    assert p.dst == inner_dst and w.total == 0
    assert p.outer is not None and p.outer.proto in (4, 41, 47)


@pytest.mark.parametrize(
    "proto,payload,weird",
    [
        (47, b"\x00\x00\x08", "truncated_GRE"),  # shorter than the 4-byte header
        (47, b"\x00\x02\x08\x00" + INNER, "unknown_gre_version"),  # version 2
        (47, b"\x00\x01\x08\x00" + INNER, "egre_protocol_type"),  # version 1 is PPTP's, 0x880b only
        (47, b"\x40\x00\x08\x00" + b"\0" * 4 + INNER, "gre_routing"),  # R bit
        (47, b"\x00\x08\x08\x00" + INNER, "unknown_gre_flags"),  # a reserved flag bit
        (47, b"\x00\x00\x65\x58" + b"\0" * 10, "truncated_GRE"),  # TEB without a whole Ethernet header
        (47, b"\x00\x00\x22\xeb" + b"\0" * 20, "truncated_GRE"),  # ERSPAN III cut inside its header
        (47, b"\x30\x01\x88\x0b" + b"\0\x20\0\x01" + b"\0\0\0\x05" + b"\xff\x03\xc0\x21" + INNER,
         "non_ip_packet_in_encap"),  # PPTP carrying LCP, not IP
        (47, b"\x00\x00\x08\x00" + INNER6, "gre_wrong_ip_version"),  # says IPv4, carries IPv6
        (4, INNER6, "ip_tunnel_wrong_version"),  # IP-in-IP (proto 4) carrying IPv6
        (4, b"", "truncated_inner_IP"),
    ],
)
def test_damaged_tunnel_headers_are_one_weird_each(proto: int, payload: bytes, weird: str) -> None:
    """Each damage of a GRE or IP-in-IP header is one weird and no packet (the outer IP
    packet carries no transport Zeek keeps a connection for; nothing inner is made up)."""
    out, w = dec1(1, ip_over_ip(proto, payload))
    assert w.counts[weird] == 1 and w.total == 1, w.counts
    assert out == []


def test_tunnel_depth_limit() -> None:
    """Tunnel::max_depth (4): a packet already inside 4 tunnels is not decapsulated again."""
    nested = INNER
    for _ in range(MAX_TUNNEL_DEPTH):
        nested = ipv4(nested, p=4)
    out, w = dec1(101, nested)
    assert len(out) == 1 and w.total == 0
    out, w = dec1(101, ipv4(nested, p=4))
    assert out == [] and w.counts["exceeded_tunnel_max_depth"] == 1
