"""Tunnels Zeek decapsulates by default (filled in below)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcapexfil.packet import Packet

if TYPE_CHECKING:
    from pcapexfil.decode import Decoder, Frame


def ip_tunnel(dec, fr, data, l4, cap_end, version, src, dst, proto, ttl, ip_len, outer) -> list[Packet]:
    return []


def udp_tunnel(dec, fr, pkt) -> list[Packet] | None:
    return None
