"""Tunnels Zeek decapsulates by default.

IP-carried (IP-in-IP, GRE incl. PPTP, ERSPAN I/II/III, Aruba, GRE-in-GRE): Zeek logs no
connection for the outer packet, so only the inner packets are returned; their `outer` is a
Packet describing the outer IP header (proto 4/41/47) so the flow table can name a parent.
UDP-carried (VXLAN, Geneve, Teredo, AYIYA, GTPv1-U, GRE over UDP 4754): the outer datagram
is a connection of its own and is returned first by the caller; the inner packets follow.
Zeek checks that the payload really looks like the tunnel before decapsulating (e.g.
Teredo's embedded IPv6 length, GTP's T-PDU message type); we apply the same checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcapexfil.decode import ip as ip_mod
from pcapexfil.decode import link
from pcapexfil.packet import Packet

if TYPE_CHECKING:
    from pcapexfil.decode import Decoder, Frame

PORT_VXLAN = 4789
PORT_GENEVE = 6081
PORT_TEREDO = 3544
PORT_AYIYA = 5072
PORT_GTPV1 = 2152
PORT_GRE_UDP = 4754

_UDP_TUNNELS = {
    PORT_VXLAN: "vxlan",
    PORT_GENEVE: "geneve",
    PORT_TEREDO: "teredo",
    PORT_AYIYA: "ayiya",
    PORT_GTPV1: "gtpv1",
    PORT_GRE_UDP: "gre",
}


# VXLAN_Analyzer / GeneveAnalyzer::AnalyzePacket confirm as soon as their header parsed,
# before the inner packet is looked at (an ARP frame inside still names the service).
_CONFIRMED_BY_HEADER = frozenset({"vxlan", "geneve"})
# The UDP tunnels whose Zeek analyzers check Tunnel::max_depth first, on the carrier session.
_DEPTH_FIRST = frozenset({"vxlan", "geneve", "ayiya", "teredo"})


def _inner_frame(dec: Decoder, fr: Frame, kind: str, length: int) -> Frame | None:
    if fr.depth >= dec.max_tunnel_depth:
        dec.weird(fr, "exceeded_tunnel_max_depth")
        return None
    cls = type(fr)
    # Zeek's inner packet keeps the outer packet's uncaptured tail in its wire length.
    return cls(
        fr.ts, length + fr.missing, fr.source, fr.index, tunnel=kind, depth=fr.depth + 1, missing=fr.missing
    )


def _inner_ip(dec: Decoder, fr: Frame, kind: str, payload: bytes, outer: Packet) -> list[Packet]:
    inner = _inner_frame(dec, fr, kind, len(payload))
    if inner is None:
        return []
    return ip_mod.ip(dec, inner, payload, 0, outer)


def _inner_l2(
    dec: Decoder, fr: Frame, kind: str, payload: bytes, outer: Packet, fn=link.ethernet  # noqa: ANN001
) -> list[Packet]:
    inner = _inner_frame(dec, fr, kind, len(payload))
    if inner is None:
        return []
    off = fn(dec, inner, payload, 0)
    if off < 0:
        return []
    return dec.frame_ip(inner, payload, off, outer)


def ip_tunnel(
    dec: Decoder,
    fr: Frame,
    data: bytes,
    l4: int,
    cap_end: int,
    version: int,
    src: str,
    dst: str,
    proto: int,
    ttl: int,
    ip_len: int,
    outer: Packet | None,
) -> list[Packet]:
    """IP-in-IP (proto 4/41) and GRE (47) directly over IP."""
    opkt = Packet(fr.ts, src, dst, proto, ip_len, 0, 0, version, ttl, payload_len=cap_end - l4)
    opkt.vlan, opkt.inner_vlan, opkt.l2_src, opkt.l2_dst = fr.vlan, fr.inner_vlan, fr.l2_src, fr.l2_dst
    opkt.outer = outer
    payload = data[l4:cap_end]
    if proto == 47:
        opkt.tunnel_type = "gre"
        return gre(dec, fr, payload, opkt)
    opkt.tunnel_type = "ip"
    if not payload or (payload[0] >> 4) != (4 if proto == 4 else 6):
        dec.weird(fr, "ip_tunnel_wrong_version" if payload else "truncated_inner_IP")
        return []
    return _inner_ip(dec, fr, "ip", payload, opkt)


def gre(dec: Decoder, fr: Frame, p: bytes, outer: Packet) -> list[Packet]:
    """GRE header as Zeek's GRE analyzer reads it (version 0 and PPTP's version 1)."""
    n = len(p)
    if n < 4:
        dec.weird(fr, "truncated_GRE")
        return []
    flags = (p[0] << 8) | p[1]
    ptype = (p[2] << 8) | p[3]
    ver = flags & 0x7
    glen = 4 + 4 * (bool(flags & 0x8000) + bool(flags & 0x2000) + bool(flags & 0x1000) + bool(flags & 0x0080))
    if ver not in (0, 1):
        dec.weird(fr, "unknown_gre_version", f"version={ver}")
        return []
    l2 = None  # link decoder for the payload; None = IP by ptype
    skip = 0
    if ver == 0:
        if ptype == 0x6558:
            if n <= glen + 14:
                dec.weird(fr, "truncated_GRE")
                return []
            l2 = link.ethernet
        elif ptype == 0x88BE:  # ERSPAN I (no header) or II (8-byte header, when S is set)
            if n <= glen + 14:
                dec.weird(fr, "truncated_GRE")
                return []
            skip = 8 if flags & 0x1000 else 0
            l2 = link.ethernet
        elif ptype == 0x22EB:  # ERSPAN III: 12-byte header, 8 more with the O bit
            if n <= glen + 26:
                dec.weird(fr, "truncated_GRE")
                return []
            skip = 12
            if p[glen + 11] & 0x01:
                if n <= glen + 34:
                    dec.weird(fr, "truncated_GRE")
                    return []
                skip += 8
            l2 = link.ethernet
        elif (
            ((ptype & 0x8200) == 0x8200 and (ptype & 0xF) == 0)
            or ((ptype & 0x8300) == 0x8300 and (ptype & 0xF) == 0 and ptype <= 0x8370)
            or ptype == 0x9000
        ):  # Aruba: an 802.11 frame
            if n <= glen:
                dec.weird(fr, "truncated_GRE")
                return []
            l2 = link.ieee802_11
    elif ptype != 0x880B:
        dec.weird(fr, "egre_protocol_type", f"proto={ptype}")
        return []
    if flags & 0x4000:
        dec.weird(fr, "gre_routing")
        return []
    if flags & 0x0078:
        dec.weird(fr, "unknown_gre_flags")
        return []
    pptp = 4 if ver == 1 else 0
    if n < glen + pptp + skip + (14 if l2 is link.ethernet else 0):
        dec.weird(fr, "truncated_GRE")
        return []
    if ver == 1:
        pp = (p[glen + 2] << 8) | p[glen + 3]
        if pp not in (0x0021, 0x0057):
            dec.weird(fr, "non_ip_packet_in_encap")
            return []
        ptype = 0x0800 if pp == 0x0021 else 0x86DD
    payload = p[glen + pptp + skip :]
    if l2 is not None:
        return _inner_l2(dec, fr, "gre", payload, outer, l2)
    if ptype == 0x0800 or ptype == 0x86DD:
        if not payload or (payload[0] >> 4) != (4 if ptype == 0x0800 else 6):
            dec.weird(fr, "gre_wrong_ip_version" if payload else "truncated_GRE")
            return []
        return _inner_ip(dec, fr, "gre", payload, outer)
    # Any other Ethertype (MPLS, VLAN...) goes through the Ethertype dispatcher.
    inner = _inner_frame(dec, fr, "gre", len(payload))
    if inner is None:
        return []
    off = link.ethertype(dec, inner, payload, 0, ptype)
    if off < 0:
        return []
    return ip_mod.ip(dec, inner, payload, off, outer)


def udp_tunnel(dec: Decoder, fr: Frame, pkt: Packet) -> list[Packet] | None:
    """Inner packets of a UDP-carried tunnel, or None when `pkt` is not one.

    Sets `pkt.tunnel_type` when the tunnel analyzer confirms (Zeek then names the service):
    VXLAN and Geneve once their header parsed, whatever follows; GTPv1, Teredo and AYIYA
    only with a valid inner IP packet (a T-PDU, AYIYA's forward opcode).
    """
    kind = _UDP_TUNNELS.get(pkt.dport) or _UDP_TUNNELS.get(pkt.sport)
    if kind is None:
        return None
    if kind in _DEPTH_FIRST and fr.depth >= dec.max_tunnel_depth:
        # VXLAN_Analyzer / GeneveAnalyzer / AYIYAAnalyzer / TeredoAnalyzer::AnalyzePacket
        # check the depth before the header: CheckHistory(HIST_UNKNOWN_PKT, 'X') on the
        # carrier, the weird, nothing decapsulated and no confirmation (no service).
        dec.weird(fr, "exceeded_tunnel_max_depth")
        pkt.analysis_partial = True
        return None
    p = pkt.payload
    if kind == "vxlan":
        result = _vxlan(dec, fr, p, pkt)
    elif kind == "geneve":
        result = _geneve(dec, fr, p, pkt)
    elif kind == "teredo":
        result = _teredo(dec, fr, p, pkt)
    elif kind == "ayiya":
        result = _ayiya(dec, fr, p, pkt)
    elif kind == "gtpv1":
        result = _gtpv1(dec, fr, p, pkt)
    else:
        result = gre(dec, fr, p, pkt)
        # Zeek logs GRE-over-UDP's outer connection without a service name.
        return result
    if result is not None and (result or kind in _CONFIRMED_BY_HEADER):
        pkt.tunnel_type = kind
    return result


def _vxlan(dec: Decoder, fr: Frame, p: bytes, pkt: Packet) -> list[Packet] | None:
    if len(p) < 8:
        dec.weird(fr, "vxlan_truncated")
        return None
    if not p[0] & 0x08:  # the I flag: a valid VNI follows
        return None
    if len(p) < 8 + 14:
        dec.weird(fr, "vxlan_truncated")
        return []
    return _inner_l2(dec, fr, "vxlan", p[8:], pkt)


def _geneve(dec: Decoder, fr: Frame, p: bytes, pkt: Packet) -> list[Packet] | None:
    if len(p) < 8:
        dec.weird(fr, "geneve_truncated")
        return None
    if p[0] >> 6 != 0:
        dec.weird(fr, "geneve_invalid_version")
        return None
    hlen = 8 + (p[0] & 0x3F) * 4
    if len(p) < hlen:
        dec.weird(fr, "geneve_truncated")
        return []
    ptype = (p[2] << 8) | p[3]
    payload = p[hlen:]
    if ptype == 0x6558:
        return _inner_l2(dec, fr, "geneve", payload, pkt)
    inner = _inner_frame(dec, fr, "geneve", len(payload))
    if inner is None:
        return []
    off = link.ethertype(dec, inner, payload, 0, ptype)
    return [] if off < 0 else ip_mod.ip(dec, inner, payload, off, pkt)


def _teredo(dec: Decoder, fr: Frame, p: bytes, pkt: Packet) -> list[Packet] | None:
    """Teredo: optional authentication and origin indications, then an IPv6 packet whose
    length must match the datagram exactly (Zeek's test that this really is Teredo)."""
    off = 0
    n = len(p)
    if n >= 4 and p[0] == 0x00 and p[1] == 0x01:  # authentication indicator
        if n < 13:
            return None
        off = 4 + p[2] + p[3] + 9
    if n >= off + 8 and p[off] == 0x00 and p[off + 1] == 0x00:  # origin indication
        off += 8
    if n < off + 40 or p[off] >> 4 != 6:
        return None
    if 40 + ((p[off + 4] << 8) | p[off + 5]) != n - off:
        return None
    return _inner_ip(dec, fr, "teredo", p[off:], pkt)


def _ayiya(dec: Decoder, fr: Frame, p: bytes, pkt: Packet) -> list[Packet] | None:
    if len(p) < 8:
        dec.weird(fr, "truncated_AYIYA")
        return None
    id_len = 1 << (p[0] >> 4)
    sig_len = (p[1] >> 4) * 4
    opcode = p[2] & 0x0F
    nxt = p[3]
    hlen = 8 + id_len + sig_len
    if len(p) < hlen:
        dec.weird(fr, "truncated_AYIYA")
        return None
    if opcode != 1:  # only "forward" carries a packet
        return []
    if nxt not in (4, 41):
        dec.weird(fr, "ayiya_tunnel_non_ip")
        return []
    return _inner_ip(dec, fr, "ayiya", p[hlen:], pkt)


def _gtpv1(dec: Decoder, fr: Frame, p: bytes, pkt: Packet) -> list[Packet] | None:
    if len(p) < 8:
        dec.weird(fr, "truncated_GTPv1")
        return None
    flags, mtype = p[0], p[1]
    if flags >> 5 != 1:
        dec.weird(fr, "GTPv1_invalid_version")
        return None
    if not flags & 0x10:  # GTP' (protocol type 0) is not user-plane GTP
        return None
    if mtype != 0xFF:  # not a T-PDU: signalling, no inner packet (and no confirmation)
        return []
    off = 8
    if flags & 0x07:
        if len(p) < 12:
            dec.weird(fr, "truncated_GTPv1")
            return []
        nxt_ext = p[11]
        off = 12
        while flags & 0x04 and nxt_ext:
            if len(p) < off + 1 or p[off] == 0:
                dec.weird(fr, "truncated_GTPv1")
                return []
            elen = p[off] * 4
            if len(p) < off + elen:
                dec.weird(fr, "truncated_GTPv1")
                return []
            nxt_ext = p[off + elen - 1]
            off += elen
    if len(p) <= off:
        dec.weird(fr, "truncated_GTPv1")
        return []
    if p[off] >> 4 not in (4, 6):
        dec.weird(fr, "GTPv1_payload_not_IP")
        return []
    return _inner_ip(dec, fr, "gtpv1", p[off:], pkt)
