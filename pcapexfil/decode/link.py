"""Layer 2: from a frame of some link type down to the first IP header.

Each function returns the offset of an IPv4/IPv6 header in `data` (or -1 when the frame
carries nothing the flow table needs, after reporting a weird if it was damaged) and
fills the frame context with VLAN ids and MAC addresses, as Zeek's packet analyzers do.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pcapexfil.decode import Decoder, Frame

# LINKTYPE_* values this decoder reads.
LT_NULL = 0
LT_ETHERNET = 1
LT_PPP = 9
LT_RAW_OPENBSD = 12  # DLT_RAW on most BSDs / LINKTYPE_RAW alias seen in old files
LT_RAW_BSD = 14
LT_PPP_HDLC = 50
LT_PPPOE_ETHER = 51  # PPPoE session without the Ethernet header (BSD)
LT_RAW = 101
LT_IEEE802_11 = 105
LT_LOOP = 108
LT_LINUX_SLL = 113
LT_RADIOTAP = 127
LT_IPV4 = 228
LT_IPV6 = 229
LT_NFLOG = 239
LT_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES = frozenset(
    {
        LT_NULL,
        LT_ETHERNET,
        LT_PPP,
        LT_RAW_OPENBSD,
        LT_RAW_BSD,
        LT_PPP_HDLC,
        LT_PPPOE_ETHER,
        LT_RAW,
        LT_IEEE802_11,
        LT_LOOP,
        LT_LINUX_SLL,
        LT_RADIOTAP,
        LT_IPV4,
        LT_IPV6,
        LT_NFLOG,
        LT_LINUX_SLL2,
    }
)

# Ethertypes
ET_IPV4 = 0x0800
ET_ARP = 0x0806
ET_VLAN = 0x8100
ET_QINQ = 0x88A8
ET_QINQ_OLD = 0x9100
ET_IPV6 = 0x86DD
ET_MPLS = 0x8847
ET_PPPOE_DISC = 0x8863
ET_PPPOE_SESS = 0x8864
ET_PBB = 0x88E7
ET_VNTAG = 0x8926
ET_TEB = 0x6558  # transparent Ethernet bridging (GRE)
ET_FABRICPATH = 0x8903  # Cisco FabricPath, in the outer Ethernet header only

# Which Ethertypes each packet analyzer forwards (scripts/base/packet-protocols/*/main.zeek,
# PacketAnalyzer::register_packet_analyzer; ARP is left out, it makes no connection). No
# analyzer registers 0x8848 (multicast MPLS). After a VN-Tag only a VLAN tag follows, a
# VLAN tag is followed by 0x8100 but not by 0x88A8/0x9100/VN-Tag, PBB by neither MPLS nor
# PBB. `PARENT_ANY`: a caller whose own table was not reviewed (Linux SLL, SNAP, 802.11,
# GRE); what follows its first header obeys the tables above.
PARENT_ANY, PARENT_ETHERNET, PARENT_VLAN, PARENT_PBB, PARENT_VNTAG = range(5)
_VLAN_TYPES = frozenset({ET_VLAN, ET_QINQ, ET_QINQ_OLD})
_FORWARDS: dict[int, frozenset[int]] = {
    PARENT_ANY: frozenset({ET_IPV4, ET_IPV6, ET_MPLS, ET_PPPOE_SESS, ET_PBB, ET_VNTAG, ET_TEB}) | _VLAN_TYPES,
    PARENT_ETHERNET: frozenset({ET_IPV4, ET_IPV6, ET_MPLS, ET_PPPOE_SESS, ET_PBB, ET_VNTAG}) | _VLAN_TYPES,
    PARENT_VLAN: frozenset({ET_IPV4, ET_IPV6, ET_MPLS, ET_PPPOE_SESS, ET_PBB, ET_VLAN}),
    PARENT_PBB: frozenset({ET_IPV4, ET_IPV6, ET_PPPOE_SESS}) | _VLAN_TYPES,
    PARENT_VNTAG: _VLAN_TYPES,
}
FABRICPATH_HEADER_LEN = 16  # Ethernet.cc: `cfplen`, the outer MACs, type and FabricPath tag

# PPP protocol numbers Zeek's PPP and PPP_SERIAL analyzers forward (packet-protocols/ppp,
# ppp_serial main.zeek); PPPoE forwards the IP ones only (pppoe/main.zeek).
PPP_IPV4, PPP_IPV6, PPP_MPLS = 0x0021, 0x0057, 0x0281

# NFLOG (src/packet_analysis/protocol/nflog/NFLog.cc; tcpdump.org LINKTYPE_NFLOG): a 4-byte
# header (address family, version 0, resource id), then TLVs in the capturing host's byte
# order, each padded to 4 bytes, until the packet payload TLV.
NFLOG_HEADER_LEN = 4
NFLOG_TLV_HEADER_LEN = 4
NFLOG_TYPE_PAYLOAD = 9
NFLOG_AF_INET, NFLOG_AF_INET6 = 2, 10  # nflog/main.zeek dispatch_map

# Result codes for "where is the IP header": its version is read from the header itself.
NONE = -1

_H = struct.Struct("!H")
_BSD_AF_INET = 2
_BSD_AF_INET6 = frozenset({24, 28, 30})  # NetBSD/OpenBSD, FreeBSD, macOS


def _mac(b: bytes) -> str:
    return b.hex(":")


def frame(dec: Decoder, fr: Frame, linktype: int, data: bytes) -> int:
    """Offset of the IP header in a captured frame of `linktype`, or NONE."""
    if linktype == LT_ETHERNET:
        return ethernet(dec, fr, data, 0)
    if linktype in (LT_RAW, LT_IPV4, LT_IPV6, LT_RAW_OPENBSD, LT_RAW_BSD):
        return 0
    if linktype == LT_LINUX_SLL:
        if len(data) < 16:
            dec.weird(fr, "truncated_link_header")
            return NONE
        return ethertype(dec, fr, data, 16, _H.unpack_from(data, 14)[0])
    if linktype == LT_LINUX_SLL2:
        if len(data) < 20:
            dec.weird(fr, "truncated_link_header")
            return NONE
        return ethertype(dec, fr, data, 20, _H.unpack_from(data, 0)[0])
    if linktype in (LT_NULL, LT_LOOP):
        if len(data) < 4:
            dec.weird(fr, "null_analyzer_failed")
            return NONE
        # DLT_NULL is host byte order of the capturing machine, DLT_LOOP network order:
        # the family is small, so whichever end holds it is the right one.
        fam = int.from_bytes(data[:4], "little")
        if fam > 0xFFFF:
            fam = int.from_bytes(data[:4], "big")
        if fam == _BSD_AF_INET or fam in _BSD_AF_INET6:
            return 4
        dec.weird(fr, "non_ip_packet_in_null_transport")
        return NONE
    if linktype in (LT_PPP, LT_PPP_HDLC):
        if len(data) < 4:
            dec.weird(fr, "truncated_link_header")
            return NONE
        off = 2 if data[0] == 0xFF and data[1] == 0x03 else 0  # address/control present
        if (data[off] << 8) | data[off + 1] == PPP_MPLS:
            return mpls(dec, fr, data, off + 2)
        return ppp_protocol(dec, fr, data, off)
    if linktype == LT_NFLOG:
        return nflog(dec, fr, data)
    if linktype == LT_PPPOE_ETHER:
        return pppoe(dec, fr, data, 0)
    if linktype == LT_RADIOTAP:
        if len(data) < 8:
            dec.weird(fr, "truncated_radiotap_header")
            return NONE
        rlen = int.from_bytes(data[2:4], "little")
        if rlen > len(data):
            dec.weird(fr, "truncated_radiotap_header")
            return NONE
        return ieee802_11(dec, fr, data, rlen)
    if linktype == LT_IEEE802_11:
        return ieee802_11(dec, fr, data, 0)
    dec.weird(fr, "unknown_link_type", str(linktype))
    return NONE


def ethernet(dec: Decoder, fr: Frame, data: bytes, off: int) -> int:
    if len(data) < off + 14:
        dec.weird(fr, "truncated_ethernet_frame")
        return NONE
    if (data[off + 12] << 8) | data[off + 13] == ET_FABRICPATH:
        # EthernetAnalyzer::AnalyzePacket skips the FabricPath header to the inner frame.
        if off + FABRICPATH_HEADER_LEN + 14 >= len(data):
            dec.weird(fr, "truncated_link_header_cfp")
            return NONE
        off += FABRICPATH_HEADER_LEN
    if fr.l2_src is None:
        fr.l2_dst = _mac(data[off : off + 6])
        fr.l2_src = _mac(data[off + 6 : off + 12])
    et = (data[off + 12] << 8) | data[off + 13]
    if et < 1536:
        return llc(dec, fr, data, off + 14)
    return ethertype(dec, fr, data, off + 14, et, PARENT_ETHERNET)


def llc(dec: Decoder, fr: Frame, data: bytes, off: int) -> int:
    """802.2 LLC; only SNAP with an Ethertype leads anywhere useful."""
    if len(data) < off + 3:
        dec.weird(fr, "truncated_link_header")
        return NONE
    if data[off] == 0xAA and data[off + 1] == 0xAA:
        if len(data) < off + 8:
            dec.weird(fr, "truncated_link_header")
            return NONE
        return ethertype(dec, fr, data, off + 8, _H.unpack_from(data, off + 6)[0])
    return NONE  # STP, IPX, NetBIOS...: nothing for the flow table


def ethertype(dec: Decoder, fr: Frame, data: bytes, off: int, et: int, parent: int = PARENT_ANY) -> int:
    """Follow Ethertype-dispatched headers (VLAN, MPLS, PPPoE, PBB, VN-Tag) to IP, as far as
    each header's analyzer forwards the next one (`_FORWARDS`)."""
    n = len(data)
    while True:
        if et not in _FORWARDS[parent]:
            return NONE  # ARP, LLDP, PPPoE discovery, ...: no connection in Zeek
        if et == ET_IPV4 or et == ET_IPV6:
            return off
        if et == ET_VLAN or et == ET_QINQ or et == ET_QINQ_OLD:
            if n < off + 4:
                dec.weird(fr, "truncated_VLAN_header")
                return NONE
            vid = ((data[off] << 8) | data[off + 1]) & 0x0FFF
            if fr.vlan is None:
                fr.vlan = vid
            elif fr.inner_vlan is None:
                fr.inner_vlan = vid
            et = (data[off + 2] << 8) | data[off + 3]
            off += 4
            if et < 1536:  # 802.3 length inside a VLAN tag
                return llc(dec, fr, data, off)
            parent = PARENT_VLAN
            continue
        if et == ET_MPLS:
            return mpls(dec, fr, data, off)
        if et == ET_PPPOE_SESS:
            return pppoe(dec, fr, data, off)
        if et == ET_PBB:
            # I-TAG (4 bytes) then the customer's MAC header.
            if n < off + 18:
                dec.weird(fr, "truncated_link_header")
                return NONE
            fr.l2_dst = _mac(data[off + 4 : off + 10])
            fr.l2_src = _mac(data[off + 10 : off + 16])
            et = (data[off + 16] << 8) | data[off + 17]
            off += 18
            parent = PARENT_PBB
            continue
        if et == ET_VNTAG:
            if n < off + 6:
                dec.weird(fr, "truncated_link_header")
                return NONE
            et = (data[off + 4] << 8) | data[off + 5]
            off += 6
            parent = PARENT_VNTAG
            continue
        assert et == ET_TEB
        return ethernet(dec, fr, data, off)


def mpls(dec: Decoder, fr: Frame, data: bytes, off: int) -> int:
    n = len(data)
    while True:
        if n < off + 4:
            dec.weird(fr, "truncated_link_header")
            return NONE
        bottom = data[off + 2] & 0x01
        off += 4
        if bottom:
            break
    if n <= off:
        dec.weird(fr, "truncated_link_header")
        return NONE
    version = data[off] >> 4
    if version == 4 or version == 6:
        return off
    dec.weird(fr, "no_suitable_analyzer_found", "MPLS payload is not IP")
    return NONE


def pppoe(dec: Decoder, fr: Frame, data: bytes, off: int) -> int:
    if len(data) < off + 8:
        dec.weird(fr, "truncated_pppoe_header")
        return NONE
    return ppp_protocol(dec, fr, data, off + 6)


def nflog(dec: Decoder, fr: Frame, data: bytes) -> int:
    """NFLogAnalyzer::AnalyzePacket: the offset of the payload TLV's packet."""
    n = len(data)
    if NFLOG_HEADER_LEN >= n:
        dec.weird(fr, "truncated_nflog_header")
        return NONE
    family, version = data[0], data[1]
    if version != 0:
        dec.weird(fr, "unknown_nflog_version")
        return NONE
    off = NFLOG_HEADER_LEN
    while True:
        if NFLOG_TLV_HEADER_LEN >= n - off:
            dec.weird(fr, "nflog_no_pcap_payload")
            return NONE
        tlv_len = int.from_bytes(data[off : off + 2], "little")
        tlv_type = int.from_bytes(data[off + 2 : off + 4], "little")
        if tlv_type == NFLOG_TYPE_PAYLOAD:
            off += NFLOG_TLV_HEADER_LEN
            break
        if tlv_len < NFLOG_TLV_HEADER_LEN:
            dec.weird(fr, "nflog_bad_tlv_len")
            return NONE
        off += (tlv_len + 3) & ~3  # TLVs are padded to 32 bits
    if family in (NFLOG_AF_INET, NFLOG_AF_INET6):
        return off
    dec.weird(fr, "no_suitable_analyzer_found", f"NFLOG family {family}")
    return NONE


def ppp_protocol(dec: Decoder, fr: Frame, data: bytes, off: int) -> int:
    if len(data) < off + 2:
        dec.weird(fr, "truncated_link_header")
        return NONE
    proto = (data[off] << 8) | data[off + 1]
    if proto == PPP_IPV4 or proto == PPP_IPV6:
        return off + 2
    return NONE  # LCP, IPCP, CHAP...: control traffic


def ieee802_11(dec: Decoder, fr: Frame, data: bytes, off: int) -> int:
    """802.11 data frames down to LLC/SNAP (as Zeek's IEEE802_11 analyzer)."""
    n = len(data)
    if n < off + 24:
        dec.weird(fr, "truncated_802_11_header")
        return NONE
    fc0, fc1 = data[off], data[off + 1]
    if (fc0 >> 2) & 0x3 != 2:  # not a data frame
        return NONE
    subtype = fc0 >> 4
    if subtype & 0x4:  # null-function / no-data subtypes
        return NONE
    hdr = 24
    to_from = fc1 & 0x3
    if to_from == 0x3:
        hdr += 6  # 4-address frame
    amsdu = False
    if subtype & 0x8:
        hdr += 2  # QoS control
        if n >= off + hdr:
            amsdu = bool(data[off + hdr - 2] & 0x80)
        if fc1 & 0x80:
            hdr += 4  # HT control (order bit on QoS data)
    if fc1 & 0x40:  # protected: encrypted payload
        return NONE
    # addresses: a1=receiver, a2=transmitter; dst/src depend on to/from DS bits
    a1, a2, a3 = data[off + 4 : off + 10], data[off + 10 : off + 16], data[off + 16 : off + 22]
    if to_from == 0:
        dst, src = a1, a2
    elif to_from == 1:
        dst, src = a3, a2
    elif to_from == 2:
        dst, src = a1, a3
    else:
        dst, src = a3, data[off + 24 : off + 30]
    fr.l2_dst, fr.l2_src = _mac(dst), _mac(src)
    off += hdr
    if amsdu:
        return _amsdu(dec, fr, data, off)
    return _snap(dec, fr, data, off)


def _amsdu(dec: Decoder, fr: Frame, data: bytes, off: int) -> int:
    """A-MSDU: several subframes (DA, SA, length, LLC/SNAP payload, padded to 4 bytes).
    The first IP offset is returned, the others are queued in `fr.more`."""
    n = len(data)
    found: list[int] = []
    while off + 14 <= n:
        sub_len = (data[off + 12] << 8) | data[off + 13]
        if off + 14 + sub_len > n:
            dec.weird(fr, "truncated_802_11_amsdu")
            break
        ip_off = _snap(dec, fr, data, off + 14)
        if ip_off >= 0:
            found.append(ip_off)
        off += (14 + sub_len + 3) & ~3
    if not found:
        return NONE
    fr.more = found[1:]
    return found[0]


def _snap(dec: Decoder, fr: Frame, data: bytes, off: int) -> int:
    if len(data) < off + 8:
        dec.weird(fr, "truncated_802_11_header")
        return NONE
    if data[off] == 0xAA and data[off + 1] == 0xAA and data[off + 2] == 0x03:
        return ethertype(dec, fr, data, off + 8, _H.unpack_from(data, off + 6)[0])
    return NONE
