"""The numba L2-L4 parser: one PACKET_DTYPE row per captured record of a chunk.

`parse_records` mirrors the reference decoder (`pcapexfil.decode`) for the common case only:
a frame gets KIND_FAST when the reference would decode it into exactly one packet without
reporting a weird and without keeping state (no fragment, no tunnel, no rewritten address).
Everything else is KIND_SLOW and goes to the reference decoder unchanged, so weird names,
fragment reassembly and decapsulation stay in one place. KIND_SKIP marks frames the
reference drops silently (ARP, LLC, PPP control, ESP): no packet and no weird.

The test oracle is the reference decoder itself: every FAST row must equal
`batch.packets_to_batch(Decoder.decode(frame))` (tests/test_fast_parse.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pcapexfil.decode.link import PARENT_ANY, PARENT_ETHERNET, PARENT_PBB, PARENT_VLAN, PARENT_VNTAG
from pcapexfil.fast.batch import KIND_FAST, KIND_SKIP, KIND_SLOW, PACKET_DTYPE, V4_MAPPED_LO
from pcapexfil.jit import njit

# Link types the kernel reads (anything else is KIND_SLOW).
LT_NULL = 0
LT_ETHERNET = 1
LT_RAW_OPENBSD = 12
LT_RAW_BSD = 14
LT_RAW = 101
LT_LOOP = 108
LT_LINUX_SLL = 113
LT_IPV4 = 228
LT_IPV6 = 229
LT_LINUX_SLL2 = 276

# UDP ports the reference decoder inspects as tunnels (decode/tunnels.py _UDP_TUNNELS; a
# literal, as numba freezes globals into the cached kernel; a test keeps the two equal).
TUNNEL_PORTS = (4789, 6081, 3544, 5072, 2152, 4754)

_V4_MAPPED_LO = np.uint64(V4_MAPPED_LO)

# Result of the link walk besides a non-negative IP offset.
_SLOW = -1
_SKIP = -2


@njit(cache=True, inline="always")
def _be16(buf: np.ndarray, i: int) -> np.int64:
    return (np.int64(buf[i]) << 8) | np.int64(buf[i + 1])


@njit(cache=True, inline="always")
def _be32(buf: np.ndarray, i: int) -> np.int64:
    return (
        (np.int64(buf[i]) << 24) | (np.int64(buf[i + 1]) << 16) | (np.int64(buf[i + 2]) << 8) | np.int64(buf[i + 3])
    )


@njit(cache=True, inline="always")
def _be64(buf: np.ndarray, i: int) -> np.uint64:
    v = np.uint64(0)
    for k in range(8):
        v = (v << np.uint64(8)) | np.uint64(buf[i + k])
    return v


@njit(cache=True, inline="always")
def _sum16(buf: np.ndarray, start: int, end: int) -> np.int64:
    """Unfolded sum of big-endian 16-bit words of buf[start:end] (odd tail padded with 0)."""
    total = np.int64(0)
    i = start
    while i + 1 < end:
        total += (np.int64(buf[i]) << 8) | np.int64(buf[i + 1])
        i += 2
    if i < end:
        total += np.int64(buf[i]) << 8
    return total


@njit(cache=True, inline="always")
def _sum_ok(total: int) -> bool:
    """RFC 1071: the folded sum over data that includes its checksum is 0xFFFF."""
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


@njit(cache=True)
def _l4_sum_ok(buf: np.ndarray, ip: int, version: int, proto: int, l4: int, claimed: int) -> bool:
    """Transport checksum with the pseudo header (decode.checksum.pseudo_header_sum)."""
    if version == 4:
        pseudo = _sum16(buf, ip + 12, ip + 20)
    else:
        pseudo = _sum16(buf, ip + 8, ip + 40)
    pseudo += proto + (claimed & 0xFFFF) + (claimed >> 16)
    return _sum_ok(pseudo + _sum16(buf, l4, l4 + claimed))


@njit(cache=True)
def _llc(buf: np.ndarray, base: int, end: int, off: int) -> tuple[int, int]:
    """802.2 LLC: (Ethertype, offset) after SNAP, or (-1, _SLOW/_SKIP)."""
    if end < off + 3:
        return -1, _SLOW  # truncated_link_header
    if buf[off] == 0xAA and buf[off + 1] == 0xAA:
        if end < off + 8:
            return -1, _SLOW
        return _be16(buf, off + 6), off + 8
    return -1, _SKIP


@njit(cache=True)
def _forwards(parent: int, et: int) -> bool:
    """link._FORWARDS: whether the header `parent` hands Ethertype `et` on."""
    vlan = et == 0x8100 or et == 0x88A8 or et == 0x9100
    if parent == PARENT_VNTAG:
        return vlan
    if et == 0x0800 or et == 0x86DD or et == 0x8864:
        return True
    if parent == PARENT_VLAN:
        return et == 0x8100 or et == 0x8847 or et == 0x88E7
    if parent == PARENT_PBB:
        return vlan
    return vlan or et == 0x8847 or et == 0x88E7 or et == 0x8926 or (parent == PARENT_ANY and et == 0x6558)


@njit(cache=True)
def _ethertype(buf: np.ndarray, base: int, end: int, off: int, et: int, parent: int) -> int:
    """Follow VLAN / MPLS / PPPoE / PBB / VN-Tag headers to the IP header (link.ethertype)."""
    while True:
        if not _forwards(parent, et):
            return _SKIP
        if et == 0x0800 or et == 0x86DD:
            return off
        if et == 0x8100 or et == 0x88A8 or et == 0x9100:
            if end < off + 4:
                return _SLOW  # truncated_VLAN_header
            et = _be16(buf, off + 2)
            off += 4
            parent = PARENT_VLAN
            if et < 1536:
                et, off = _llc(buf, base, end, off)
                if et < 0:
                    return off
                parent = PARENT_ANY  # after SNAP (link.llc)
            continue
        if et == 0x8847:  # MPLS
            while True:
                if end < off + 4:
                    return _SLOW
                bottom = buf[off + 2] & 1
                off += 4
                if bottom:
                    break
            if end <= off:
                return _SLOW
            v = buf[off] >> 4
            if v == 4 or v == 6:
                return off
            return _SLOW  # no_suitable_analyzer_found
        if et == 0x8864:  # PPPoE session
            if end < off + 8:
                return _SLOW  # truncated_pppoe_header
            proto = _be16(buf, off + 6)
            if proto == 0x0021 or proto == 0x0057:
                return off + 8
            return _SKIP
        if et == 0x88E7:  # PBB
            if end < off + 18:
                return _SLOW
            et = _be16(buf, off + 16)
            off += 18
            parent = PARENT_PBB
            continue
        if et == 0x8926:  # VN-Tag
            if end < off + 6:
                return _SLOW
            et = _be16(buf, off + 4)
            off += 6
            parent = PARENT_VNTAG
            continue
        if et == 0x6558:  # bridged Ethernet inside: rare, leave it to the reference
            return _SLOW
        return _SKIP


@njit(cache=True)
def _link(buf: np.ndarray, base: int, end: int, linktype: int) -> int:
    """Absolute offset of the IP header, or _SLOW / _SKIP (decode/link.py frame)."""
    if linktype == LT_ETHERNET:
        if end < base + 14:
            return _SLOW  # truncated_ethernet_frame
        et = _be16(buf, base + 12)
        if et == 0x8903:
            return _SLOW  # Cisco FabricPath: the reference decoder skips its header (link.ethernet)
        off = base + 14
        parent = PARENT_ETHERNET
        if et < 1536:
            et, off = _llc(buf, base, end, off)
            if et < 0:
                return off
            parent = PARENT_ANY  # after SNAP (link.llc)
        return _ethertype(buf, base, end, off, et, parent)
    if linktype == LT_RAW or linktype == LT_IPV4 or linktype == LT_IPV6 or linktype == LT_RAW_OPENBSD or linktype == LT_RAW_BSD:
        return base
    if linktype == LT_LINUX_SLL:
        if end < base + 16:
            return _SLOW
        return _ethertype(buf, base, end, base + 16, _be16(buf, base + 14), PARENT_ANY)
    if linktype == LT_LINUX_SLL2:
        if end < base + 20:
            return _SLOW
        return _ethertype(buf, base, end, base + 20, _be16(buf, base), PARENT_ANY)
    if linktype == LT_NULL or linktype == LT_LOOP:
        if end < base + 4:
            return _SLOW
        fam = (
            np.int64(buf[base]) | (np.int64(buf[base + 1]) << 8) | (np.int64(buf[base + 2]) << 16)
            | (np.int64(buf[base + 3]) << 24)
        )
        if fam > 0xFFFF:
            fam = _be32(buf, base)
        if fam == 2 or fam == 24 or fam == 28 or fam == 30:
            return base + 4
        return _SLOW  # non_ip_packet_in_null_transport
    return _SLOW


@njit(cache=True)
def _parse_one(buf: np.ndarray, base: int, caplen: int, wirelen: int, linktype: int, row: Any,
               verify_checksums: bool) -> int:
    """Fill `row` (a record of PACKET_DTYPE, inside numba) for one frame; returns its kind."""
    end = base + caplen
    off = _link(buf, base, end, linktype)
    if off == _SKIP:
        return KIND_SKIP
    if off < 0:
        return KIND_SLOW
    avail = end - off
    if avail < 20:
        return KIND_SLOW  # truncated_IP
    version = buf[off] >> 4
    rel = off - base  # IP offset within the frame (the reference's `off`)
    if version == 4:
        hl = np.int64(buf[off] & 0x0F) * 4
        total = _be16(buf, off + 2)
        if total == 0:
            return KIND_SLOW  # ip_hdr_len_zero
        if wirelen < total + rel:
            return KIND_SLOW  # truncated_IP_len
        if hl > total or hl > avail or hl < 20:
            return KIND_SLOW
        if verify_checksums and not _sum_ok(_sum16(buf, off, off + hl)):
            return KIND_SLOW  # bad_IP_checksum
        if _be16(buf, off + 6) & 0x3FFF:
            return KIND_SLOW  # fragment
        proto = np.int64(buf[off + 9])
        if proto == 50:
            return KIND_SKIP  # ESP: no connection, no weird
        ttl = buf[off + 8]
        src_hi = np.uint64(0)
        dst_hi = np.uint64(0)
        src_lo = _V4_MAPPED_LO | np.uint64(_be32(buf, off + 12))
        dst_lo = _V4_MAPPED_LO | np.uint64(_be32(buf, off + 16))
        l4 = off + hl
    elif version == 6:
        if avail < 40:
            return KIND_SLOW
        total = 40 + _be16(buf, off + 4)
        if wirelen < total + rel:
            return KIND_SLOW
        nxt = np.int64(buf[off + 6])
        pos = off + 40
        while nxt == 0 or nxt == 43 or nxt == 60 or nxt == 44 or nxt == 51 or nxt == 135:
            if nxt == 44 or nxt == 51 or nxt == 135:
                return KIND_SLOW  # fragment, AH, mobility
            if pos + 2 > end:
                return KIND_SLOW
            hlen = (np.int64(buf[pos + 1]) + 1) * 8
            if pos + hlen > end:
                return KIND_SLOW
            if nxt == 43 and (buf[pos + 2] == 0 or buf[pos + 2] == 2) and buf[pos + 3] > 0 and hlen >= 24:
                return KIND_SLOW  # source route: the reference rewrites the destination
            nxt = np.int64(buf[pos])
            pos += hlen
        if pos - off > total:
            return KIND_SLOW  # invalid_IP_header_size
        if nxt == 50:
            return KIND_SKIP
        if nxt == 59:
            return KIND_SLOW  # ipv6_no_next
        proto = nxt
        ttl = buf[off + 7]
        src_hi = _be64(buf, off + 8)
        src_lo = _be64(buf, off + 16)
        dst_hi = _be64(buf, off + 24)
        dst_lo = _be64(buf, off + 32)
        l4 = pos
    else:
        return KIND_SLOW  # unknown_ip_version
    ip_end = off + total
    claimed = ip_end - l4
    cap_end = min(ip_end, end)
    remaining = cap_end - l4
    sport = 0
    dport = 0
    flags = 0
    seq = 0
    ack = 0
    window = 0
    if proto == 6:
        if claimed < 20 or remaining < 20:
            return KIND_SLOW
        thl = np.int64(buf[l4 + 12] >> 4) * 4
        if thl < 20 or thl > claimed or thl > remaining:
            return KIND_SLOW
        sport = _be16(buf, l4)
        dport = _be16(buf, l4 + 2)
        seq = _be32(buf, l4 + 4)
        ack = _be32(buf, l4 + 8)
        flags = buf[l4 + 13]
        window = _be16(buf, l4 + 14)
        pay = l4 + thl
        payload_len = claimed - thl
        if verify_checksums and remaining >= claimed and not _l4_sum_ok(buf, off, version, proto, l4, claimed):
            return KIND_SLOW  # the reference marks it checksum_ok=False
    elif proto == 17:
        if claimed < 8 or remaining < 8:
            return KIND_SLOW
        sport = _be16(buf, l4)
        dport = _be16(buf, l4 + 2)
        if _be16(buf, l4 + 4) != claimed:
            return KIND_SLOW  # the reference notes the disagreement in Packet.extra
        for port in TUNNEL_PORTS:
            if sport == port or dport == port:
                return KIND_SLOW
        pay = l4 + 8
        payload_len = claimed - 8
        optional = version == 4 and _be16(buf, l4 + 6) == 0  # no checksum over IPv4: accepted
        if verify_checksums and not optional and remaining >= claimed and not _l4_sum_ok(
            buf, off, version, proto, l4, claimed
        ):
            return KIND_SLOW
    elif proto == 1 or proto == 58:
        if claimed < 8 or remaining < 8:
            return KIND_SLOW
        sport = buf[l4]
        dport = buf[l4 + 1]
        pay = l4 + 8
        payload_len = claimed - 8
        if verify_checksums and remaining >= claimed:
            if proto == 1:
                ok = _sum_ok(_sum16(buf, l4, cap_end))
            else:
                ok = _l4_sum_ok(buf, off, version, proto, l4, claimed)
            if not ok:
                return KIND_SLOW
    elif proto == 4 or proto == 41 or proto == 47:
        return KIND_SLOW  # IP-in-IP, GRE
    else:
        pay = l4
        payload_len = claimed
    row.ip_version = version
    row.proto = proto
    row.ttl = ttl
    row.src_hi = src_hi
    row.src_lo = src_lo
    row.dst_hi = dst_hi
    row.dst_lo = dst_lo
    row.sport = sport
    row.dport = dport
    row.ip_len = total
    row.flags = flags
    row.seq = seq
    row.ack = ack
    row.window = window
    row.payload_len = payload_len
    row.payload_off = pay
    row.payload_cap = cap_end - pay
    return KIND_FAST


@njit(cache=True)
def _parse_kernel(buf, offsets, caplens, wirelens, linktypes, ts, frames, out, verify_checksums):
    for i in range(offsets.shape[0]):
        row = out[i]
        row.ts = ts[i]
        row.frame = frames[i]
        row.kind = _parse_one(buf, offsets[i], caplens[i], wirelens[i], linktypes[i], row, verify_checksums)
    return out


def parse_records(
    buf: np.ndarray,
    offsets: np.ndarray,
    caplens: np.ndarray,
    wirelens: np.ndarray,
    linktypes: np.ndarray,
    ts: np.ndarray,
    frames: np.ndarray,
    verify_checksums: bool = False,
) -> np.ndarray:
    """One batch row per record (same order). `offsets` are record data starts in `buf`;
    FAST rows' `payload_off` is an offset in `buf` too. With `verify_checksums` (Zeek
    without -C) the kernel checks IP and transport checksums as the reference decoder does:
    a FAST row then stands for `checksum_ok` True or None (not verifiable: snap-truncated);
    a bad sum makes the frame SLOW, so the reference reports and counts it."""
    out = np.zeros(len(offsets), dtype=PACKET_DTYPE)
    if len(offsets):
        _parse_kernel(buf, offsets, caplens, wirelens, linktypes, ts, frames, out, verify_checksums)
    return out
