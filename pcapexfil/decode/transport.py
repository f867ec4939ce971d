"""TCP, UDP, ICMP/ICMPv6 and unknown transports: the Packet the flow table consumes.

Truncation follows Zeek's `CheckHeaderTrunc`: a transport header longer than the IP payload
claims is `truncated_header`; one the capture cut short is `internally_truncated_header`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcapexfil.decode import tunnels
from pcapexfil.decode.checksum import internet_checksum, pseudo_header_sum
from pcapexfil.packet import PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP, Packet

if TYPE_CHECKING:
    from pcapexfil.decode import Decoder, Frame

PROTO_IPIP = 4
PROTO_IPV6 = 41
PROTO_GRE = 47

UDP_HEADER_LEN = 8
# UDPAnalyzer::DeliverPacket (src/packet_analysis/protocol/udp/UDP.cc): a datagram to a port
# of PacketAnalyzer::VXLAN::vxlan_ports (4789) longer than UDP + VXLAN + Ethernet headers
# whose first payload byte has VXLAN's I flag "looks like VXLAN": a zero checksum is then
# accepted, over IPv6 too, and a non-zero one checked (Tunnel::validate_vxlan_checksums = T).
VXLAN_PORTS = frozenset({tunnels.PORT_VXLAN})
_VXLAN_LOOKS_LEN = UDP_HEADER_LEN + 8 + 14
_VXLAN_I_FLAG = 0x08


def transport(
    dec: Decoder,
    fr: Frame,
    data: bytes,
    ip_off: int,
    l4: int,
    ip_end: int,
    version: int,
    src: str,
    dst: str,
    proto: int,
    ttl: int,
    ip_len: int,
    outer: Packet | None,
) -> list[Packet]:
    claimed = ip_end - l4  # transport length per the IP header
    cap_end = min(ip_end, len(data))
    remaining = cap_end - l4  # what was captured of it
    if proto == PROTO_TCP:
        if not _check_trunc(dec, fr, 20, claimed, remaining):
            return []
        hl = (data[l4 + 12] >> 4) * 4
        if hl < 20:
            dec.weird(fr, "bad_TCP_header_len")
            return []
        if hl > claimed or hl > remaining:
            dec.weird(fr, "truncated_header")
            return []
        pkt = Packet(
            fr.ts,
            src,
            dst,
            proto,
            ip_len,
            (data[l4] << 8) | data[l4 + 1],
            (data[l4 + 2] << 8) | data[l4 + 3],
            version,
            ttl,
            data[l4 + 13],
            int.from_bytes(data[l4 + 4 : l4 + 8], "big"),
            int.from_bytes(data[l4 + 8 : l4 + 12], "big"),
            (data[l4 + 14] << 8) | data[l4 + 15],
            claimed - hl,
            data[l4 + hl : cap_end],
        )
        if dec.verify_checksums:
            pkt.checksum_ok = _l4_checksum(version, src, dst, proto, data, l4, claimed, remaining)
    elif proto == PROTO_UDP:
        if not _check_trunc(dec, fr, 8, claimed, remaining):
            return []
        ulen = (data[l4 + 4] << 8) | data[l4 + 5]
        pkt = Packet(
            fr.ts,
            src,
            dst,
            proto,
            ip_len,
            (data[l4] << 8) | data[l4 + 1],
            (data[l4 + 2] << 8) | data[l4 + 3],
            version,
            ttl,
            payload_len=max(ulen - 8, 0),
            payload=data[l4 + 8 : cap_end],
        )
        if ulen != claimed:
            # Zeek counts the UDP header's length but notes the disagreement.
            pkt.extra["udp_ip_payload_len"] = claimed - 8
        if dec.verify_checksums:
            csum = (data[l4 + 6] << 8) | data[l4 + 7]
            if version == 4 and csum == 0:
                pkt.checksum_ok = True  # checksum optional over IPv4
            elif csum == 0 and _looks_like_vxlan(pkt.dport, claimed, pkt.payload):
                pkt.checksum_ok = True
            else:
                pkt.checksum_ok = _l4_checksum(version, src, dst, proto, data, l4, claimed, remaining)
    elif proto == PROTO_ICMP or proto == PROTO_ICMP6:
        if not _check_trunc(dec, fr, 8, claimed, remaining):
            return []
        pkt = Packet(
            fr.ts,
            src,
            dst,
            proto,
            ip_len,
            data[l4],
            data[l4 + 1],
            version,
            ttl,
            payload_len=claimed - 8,
            payload=data[l4 + 8 : cap_end],
        )
        if dec.verify_checksums:
            if proto == PROTO_ICMP:
                pkt.checksum_ok = remaining < claimed or internet_checksum(data[l4:cap_end]) == 0
            else:
                pkt.checksum_ok = _l4_checksum(version, src, dst, proto, data, l4, claimed, remaining)
    elif proto == PROTO_IPIP or proto == PROTO_IPV6 or proto == PROTO_GRE:
        return tunnels.ip_tunnel(dec, fr, data, l4, cap_end, version, src, dst, proto, ttl, ip_len, outer)
    else:
        pkt = Packet(fr.ts, src, dst, proto, ip_len, 0, 0, version, ttl, payload_len=claimed, payload=data[l4:cap_end])
    pkt.vlan = fr.vlan
    pkt.inner_vlan = fr.inner_vlan
    pkt.l2_src = fr.l2_src
    pkt.l2_dst = fr.l2_dst
    pkt.outer = outer
    if proto == PROTO_UDP:
        if dec.verify_checksums and pkt.checksum_ok is False:
            return [pkt]  # Zeek does not decapsulate a datagram it rejected
        inner = tunnels.udp_tunnel(dec, fr, pkt)
        if inner is not None:
            return [pkt, *inner]
    return [pkt]


def _looks_like_vxlan(dport: int, claimed: int, payload: bytes) -> bool:
    """UDP.cc's test before it drops the checksum check for a zero checksum (the packet's
    destination port, not the connection's responder port)."""
    return dport in VXLAN_PORTS and claimed > _VXLAN_LOOKS_LEN and bool(payload) and bool(payload[0] & _VXLAN_I_FLAG)


def _check_trunc(dec: Decoder, fr: Frame, min_len: int, claimed: int, remaining: int) -> bool:
    if claimed < min_len:
        dec.weird(fr, "truncated_header")
        return False
    if remaining < min_len:
        dec.weird(fr, "internally_truncated_header")
        return False
    return True


def _l4_checksum(
    version: int, src: str, dst: str, proto: int, data: bytes, l4: int, claimed: int, remaining: int
) -> bool | None:
    """Verdict on a pseudo-header checksum; None when the capture lacks the bytes to judge."""
    if remaining < claimed:
        return None
    initial = pseudo_header_sum(version, src, dst, proto, claimed)
    return internet_checksum(data[l4 : l4 + claimed], initial) == 0
