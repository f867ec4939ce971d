"""Packet decoding: a captured frame in, the IP packets the flow table counts out.

`Decoder.decode` walks link layer -> IP (with fragment reassembly) -> transport, and
through tunnels: for a UDP-carried tunnel the outer datagram (a connection of its own in
Zeek) comes first, marked with `tunnel_type`, then the inner packets whose `outer` points
at it. Damaged packets are counted weirds and yield nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from pcapexfil.decode import fragments, ip, link, transport
from pcapexfil.packet import Packet, RawPacket
from pcapexfil.weird import Weirds

__all__ = ["MAX_TUNNEL_DEPTH", "Decoder", "Frame"]

# Tunnel::max_depth (init-bare.zeek, default 4): a tunnel analyzer refuses to decapsulate a
# packet that already is inside this many tunnels (weird exceeded_tunnel_max_depth).
MAX_TUNNEL_DEPTH = 4


@dataclass(slots=True)
class Frame:
    """Per-frame decoding state (one per captured frame, a fresh one per tunnel level)."""

    ts: float
    wirelen: int  # bytes on the wire from the start of `data` (for Zeek's length checks)
    source: str = ""
    index: int = 0
    vlan: int | None = None
    inner_vlan: int | None = None
    l2_src: str | None = None
    l2_dst: str | None = None
    tunnel: str | None = None  # the encapsulation this frame came out of
    depth: int = 0
    missing: int = 0  # wire bytes beyond the captured ones (inherited by inner frames)
    more: list[int] | None = None  # further IP offsets in this frame (802.11 A-MSDU)


class Decoder:
    """Stateful decoder (fragment buffers live here); one per packet stream."""

    def __init__(
        self,
        weirds: Weirds,
        verify_checksums: bool = False,
        frag_timeout: float = fragments.DEFAULT_TIMEOUT,
        max_tunnel_depth: int = MAX_TUNNEL_DEPTH,
    ) -> None:
        self.weirds = weirds
        self.verify_checksums = verify_checksums
        self.reassembler = fragments.Reassembler(frag_timeout)
        self.max_tunnel_depth = max_tunnel_depth

    def decode(self, raw: RawPacket) -> list[Packet]:
        """0..n packets in processing order (outer tunnel packets before inner ones)."""
        data = raw.data
        if self.reassembler.pending:
            self.reassembler.expire(raw.ts, lambda name, addl: self.weirds.report(name, raw.ts, addl))
        fr = Frame(raw.ts, raw.wirelen, raw.source, raw.index, missing=max(raw.wirelen - len(data), 0))
        off = link.frame(self, fr, raw.linktype, data)
        if off < 0:
            return []
        return self.frame_ip(fr, data, off, None)

    def frame_ip(self, fr: Frame, data: bytes, off: int, outer: Packet | None) -> list[Packet]:
        """IP packet(s) of one frame once the link layer found them."""
        out = ip.ip(self, fr, data, off, outer)
        if fr.more:
            for extra in fr.more:
                out.extend(ip.ip(self, fr, data, extra, outer))
        return out

    def weird(self, fr: Frame, name: str, addl: str | None = None) -> None:
        where = f"{fr.source}#{fr.index}" if fr.source else None
        self.weirds.report(name, fr.ts, addl, source=where)

    def transport(self, *args) -> list[Packet]:  # type: ignore[no-untyped-def]
        return transport.transport(self, *args)
