"""IPv4 and IPv6 headers (options, extension headers) with Zeek's sanity checks.

The checks and their weird names follow Zeek's IP packet analyzer, in its order, so the
same damaged packets are dropped: e.g. a total length beyond the wire length is
`truncated_IP_len`, while a snap-length-truncated capture is fine (lengths are what the
header claims).
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING

from pcapexfil.decode import fragments
from pcapexfil.decode.checksum import internet_checksum

if TYPE_CHECKING:
    from pcapexfil.decode import Decoder, Frame
    from pcapexfil.packet import Packet

_inet_ntop = socket.inet_ntop
AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6

# IPv6 extension headers Zeek walks through.
EXT_HOPOPTS = 0
EXT_ROUTING = 43
EXT_FRAGMENT = 44
EXT_ESP = 50
EXT_AH = 51
EXT_NONE = 59
EXT_DSTOPTS = 60
EXT_MOBILITY = 135
_EXT_CHAIN = frozenset({EXT_HOPOPTS, EXT_ROUTING, EXT_FRAGMENT, EXT_DSTOPTS, EXT_AH, EXT_MOBILITY})


def ip(dec: Decoder, fr: Frame, data: bytes, off: int, outer: Packet | None, reassembled: bool = False) -> list[Packet]:
    """Decode the IP packet at `data[off:]` and what it carries."""
    avail = len(data) - off
    if avail < 20:
        dec.weird(fr, "truncated_IP")
        return []
    version = data[off] >> 4
    if version == 4:
        return _ipv4(dec, fr, data, off, avail, outer, reassembled)
    if version == 6:
        if avail < 40:
            dec.weird(fr, "truncated_IP")
            return []
        return _ipv6(dec, fr, data, off, avail, outer)
    dec.weird(fr, "unknown_ip_version", str(version))
    return []


def _ipv4(
    dec: Decoder, fr: Frame, data: bytes, off: int, avail: int, outer: Packet | None, reassembled: bool
) -> list[Packet]:
    hl = (data[off] & 0x0F) * 4
    total_len = (data[off + 2] << 8) | data[off + 3]
    if total_len == 0:
        # TCP segmentation offload zeroes ip_len; Zeek -C falls back to the captured length.
        dec.weird(fr, "ip_hdr_len_zero")
        if dec.verify_checksums:
            return []
        total_len = avail
    if fr.wirelen < total_len + off:
        dec.weird(fr, "truncated_IP_len")
        return []
    if hl > total_len:
        dec.weird(fr, "invalid_IP_header_size")
        return []
    if hl > avail:
        dec.weird(fr, "internally_truncated_header")
        return []
    if hl < 20:
        dec.weird(fr, "IPv4_min_header_size")
        return []
    ip_ok = None
    if dec.verify_checksums and not reassembled:
        ip_ok = internet_checksum(data[off : off + hl]) == 0
        if not ip_ok:
            dec.weird(fr, "bad_IP_checksum")
            return []
    src = _inet_ntop(AF_INET, data[off + 12 : off + 16])
    dst = _inet_ntop(AF_INET, data[off + 16 : off + 20])
    proto = data[off + 9]
    frag = (data[off + 6] << 8) | data[off + 7]
    if frag & 0x3FFF:  # MF set or offset non-zero
        frag_off = (frag & 0x1FFF) * 8
        if avail < total_len:
            dec.weird(fr, "incompletely_captured_fragment")
            if frag_off != 0:
                return []
        else:
            got = dec.reassembler.add(
                (4, src, dst, (data[off + 4] << 8) | data[off + 5], proto),
                fr.ts,
                frag_off,
                bool(frag & 0x2000),
                data[off + hl : off + total_len],
                data[off : off + hl],
                lambda name, addl: dec.weird(fr, name, addl),
            )
            if got is None:
                return []
            whole = fragments.rebuild_ipv4(*got)
            fr.wirelen = len(whole)
            return _ipv4(dec, fr, whole, 0, len(whole), outer, True)
    if proto == EXT_ESP:
        return []  # encrypted: Zeek stops here without a connection
    return dec.transport(fr, data, off, off + hl, off + total_len, 4, src, dst, proto, data[off + 8], total_len, outer)


def _ipv6(dec: Decoder, fr: Frame, data: bytes, off: int, avail: int, outer: Packet | None) -> list[Packet]:
    total_len = 40 + ((data[off + 4] << 8) | data[off + 5])
    if fr.wirelen < total_len + off:
        dec.weird(fr, "truncated_IP_len")
        return []
    src_b = data[off + 8 : off + 24]
    dst_b = data[off + 24 : off + 40]
    nxt = data[off + 6]
    nxt_at = off + 6  # where the current next-header byte lives (for reassembly)
    pos = off + 40
    end = off + avail
    frag_hdr: tuple[int, int, bool, int, int] | None = None  # (at, offset, more, id, named-at)
    while nxt in _EXT_CHAIN:
        if nxt == EXT_MOBILITY:
            return []  # Mobile IPv6 messages: no connection in Zeek
        if pos + 2 > end:
            dec.weird(fr, "internally_truncated_header")
            return []
        if nxt == EXT_FRAGMENT:
            if pos + 8 > end:
                dec.weird(fr, "internally_truncated_header")
                return []
            fo = (data[pos + 2] << 8) | data[pos + 3]
            frag_hdr = (pos, fo & 0xFFF8, bool(fo & 1), struct.unpack_from("!I", data, pos + 4)[0], nxt_at)
            hlen = 8
        elif nxt == EXT_AH:
            hlen = (data[pos + 1] + 2) * 4
        else:
            hlen = (data[pos + 1] + 1) * 8
        if pos + hlen > end:
            dec.weird(fr, "internally_truncated_header")
            return []
        if nxt == EXT_ROUTING and frag_hdr is None:
            rtype, left = data[pos + 2], data[pos + 3]
            # Zeek takes the final destination of a type-0 source route (and the home
            # address of a type-2 header) as the connection's responder.
            if rtype == 0 and left > 0 and hlen >= 24:
                n_addr = (hlen - 8) // 16
                dst_b = data[pos + 8 + 16 * (n_addr - 1) : pos + 8 + 16 * n_addr]
            elif rtype == 2 and left > 0 and hlen >= 24:
                dst_b = data[pos + 8 : pos + 24]
        nxt_at = pos
        nxt = data[pos]
        pos += hlen
        if frag_hdr is not None and frag_hdr[0] + 8 == pos:
            break  # everything after the fragment header is fragmentable payload
    hdr_len = pos - off
    if hdr_len > total_len:
        dec.weird(fr, "invalid_IP_header_size")
        return []
    src = _inet_ntop(AF_INET6, src_b)
    dst = _inet_ntop(AF_INET6, dst_b)
    if frag_hdr is not None:
        at, frag_off, more, ident, prev_at = frag_hdr
        if frag_off or more:
            if avail < total_len:
                dec.weird(fr, "incompletely_captured_fragment")
                if frag_off != 0:
                    return []
            else:
                got = dec.reassembler.add(
                    (6, src, dst, ident),
                    fr.ts,
                    frag_off,
                    more,
                    data[pos : off + total_len],
                    data[off:at],
                    lambda name, addl: dec.weird(fr, name, addl),
                )
                if got is None:
                    return []
                unfrag, payload = got
                whole = fragments.rebuild_ipv6(unfrag, prev_at - off, nxt, payload)
                fr.wirelen = len(whole)
                return _ipv6(dec, fr, whole, 0, len(whole), outer)
    if nxt == EXT_ESP:
        return []
    if nxt == EXT_NONE:
        if fr.tunnel != "teredo":  # a Teredo bubble is expected to carry nothing
            dec.weird(fr, "ipv6_no_next")
        return []
    return dec.transport(fr, data, off, pos, off + total_len, 6, src, dst, nxt, data[off + 7], total_len, outer)

