"""Encapsulations Zeek's packet analyzers decode (Cisco FabricPath, NFLOG, PPP carrying
MPLS), handcrafted per the Zeek source each test names; the reference decoder reads them,
the fast parser hands them to it (KIND_SLOW), and both engines write the same logs."""

from __future__ import annotations

import struct

from helpers_pcap import ether, ipv4, ipv6, tcp, udp, write_pcap
from test_fast_engine import assert_same

from pcapexfil.decode import Decoder
from pcapexfil.decode.link import LT_NFLOG, LT_PPP, LT_PPP_HDLC, SUPPORTED_LINKTYPES
from pcapexfil.fast.batch import KIND_SLOW
from pcapexfil.fast.reader import parse_frames
from pcapexfil.packet import RawPacket
from pcapexfil.weird import Weirds

V4 = ipv4(tcp(sport=40000, dport=443, data=b"hello"), src="192.0.2.1", dst="198.51.100.7")
V6 = ipv6(udp(sport=5000, dport=53, data=b"q" * 12))
INNER_SRC, INNER_DST = b"\x02\x00\x00\x00\x00\x0a", b"\x02\x00\x00\x00\x00\x0b"


def decode(linktype: int, data: bytes) -> tuple[list, Weirds]:
    w = Weirds()
    return Decoder(w).decode(RawPacket(1.0, linktype, data, len(data))), w


# -- Cisco FabricPath (src/packet_analysis/protocol/ethernet/Ethernet.cc) ----------------------


def fabricpath(inner: bytes) -> bytes:
    """Outer MACs, type 0x8903, the 2-byte FabricPath tag, then the customer frame."""
    return b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x89\x03" + b"\x81\x00" + inner


def test_fabricpath_is_skipped_to_the_inner_ethernet_frame() -> None:
    (pkt,), w = decode(1, fabricpath(ether(V4, src=INNER_SRC, dst=INNER_DST)))
    assert (pkt.src, pkt.dst, pkt.sport, pkt.dport) == ("192.0.2.1", "198.51.100.7", 40000, 443)
    assert pkt.l2_src == "02:00:00:00:00:0a"  # packet->l2_src is the inner frame's
    assert w.total == 0


def test_truncated_fabricpath_is_weird() -> None:
    out, w = decode(1, fabricpath(b"\x00" * 14))  # cfplen + 14 >= len
    assert out == [] and w.counts["truncated_link_header_cfp"] == 1


# -- NFLOG (src/packet_analysis/protocol/nflog/NFLog.cc) ---------------------------------------


def tlv(tlv_type: int, value: bytes) -> bytes:
    body = struct.pack("<HH", 4 + len(value), tlv_type) + value
    return body + b"\x00" * (-len(body) % 4)


def nflog(family: int, payload: bytes, version: int = 0) -> bytes:
    header = bytes([family, version]) + b"\x00\x00"
    prefix = tlv(10, b"log-prefix\x00")  # NFULA_PREFIX: 15 bytes, padded to 16
    hwproto = tlv(1, b"\x08\x00\x00\x01")  # NFULA_PACKET_HDR
    return header + hwproto + prefix + tlv(9, payload)


def test_nflog_payload_tlv_is_ip() -> None:
    assert LT_NFLOG in SUPPORTED_LINKTYPES
    (pkt,), w = decode(LT_NFLOG, nflog(2, V4))
    assert (pkt.src, pkt.dport, pkt.payload) == ("192.0.2.1", 443, b"hello")
    (pkt,), w = decode(LT_NFLOG, nflog(10, V6))
    assert (pkt.dst, pkt.dport) == ("2001:db8::2", 53)
    assert w.total == 0


def test_nflog_bad_version_missing_payload_and_other_family_are_weird() -> None:
    assert decode(LT_NFLOG, nflog(2, V4, version=1))[1].counts["unknown_nflog_version"] == 1
    header_only = bytes([2, 0, 0, 0]) + tlv(10, b"prefix\x00")
    assert decode(LT_NFLOG, header_only)[1].counts["nflog_no_pcap_payload"] == 1
    bad_len = bytes([2, 0, 0, 0]) + struct.pack("<HH", 2, 10) + b"\x00" * 8
    assert decode(LT_NFLOG, bad_len)[1].counts["nflog_bad_tlv_len"] == 1
    out, w = decode(LT_NFLOG, nflog(7, V4))
    assert out == [] and w.counts["no_suitable_analyzer_found"] == 1


# -- PPP carrying MPLS (scripts/base/packet-protocols/ppp{,_serial}/main.zeek: 0x0281) ----------


def mpls_label(label: int, bottom: bool) -> bytes:
    return struct.pack("!I", (label << 12) | (int(bottom) << 8) | 64)


def test_ppp_mpls_unicast_reaches_ip() -> None:
    payload = mpls_label(100, False) + mpls_label(200, True) + V4
    (pkt,), w = decode(LT_PPP, b"\xff\x03\x02\x81" + payload)
    assert (pkt.src, pkt.dport) == ("192.0.2.1", 443)
    (pkt,), w = decode(LT_PPP_HDLC, b"\xff\x03\x02\x81" + payload)
    assert pkt.dport == 443 and w.total == 0


def test_ppp_other_protocols_stay_control_traffic() -> None:
    out, w = decode(LT_PPP, b"\xff\x03\xc0\x21" + b"\x01\x01\x00\x04")  # LCP
    assert out == [] and w.total == 0


# -- both engines ------------------------------------------------------------------------------


def test_fast_parser_hands_fabricpath_to_the_reference() -> None:
    frame = fabricpath(ether(V4))
    batch = parse_frames([RawPacket(1.0, 1, frame, len(frame))], False)
    assert batch.packets["kind"][0] == KIND_SLOW and len(batch.slow) == 1


def test_both_engines_agree_on_the_new_encapsulations(tmp_path) -> None:
    syn = ipv4(tcp(sport=40000, dport=443, flags=0x02), src="192.0.2.1", dst="198.51.100.7")
    frames = [(1.0, fabricpath(ether(syn))), (1.1, fabricpath(ether(V4)))]
    assert assert_same([str(write_pcap(tmp_path / "fp.pcap", frames))], tmp_path / "fp", local_nets=()) == 1
    frames = [(1.0, nflog(2, syn)), (1.1, nflog(2, V4))]
    path = str(write_pcap(tmp_path / "nflog.pcap", frames, linktype=LT_NFLOG))
    assert assert_same([path], tmp_path / "nflog", local_nets=()) == 1
    frames = [(1.0, b"\xff\x03\x02\x81" + mpls_label(5, True) + syn)]
    path = str(write_pcap(tmp_path / "ppp.pcap", frames, linktype=LT_PPP))
    assert assert_same([path], tmp_path / "ppp", local_nets=()) == 1
