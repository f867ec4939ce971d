"""The two packet shapes that cross stage boundaries.

`RawPacket` is what a capture source yields: bytes plus the link type they must be read
with. `Packet` is what the decoder hands the flow table: one IP packet's transport view.
Both are plain slotted dataclasses so the readable path stays cheap and easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# IP protocol numbers the flow table treats specially.
PROTO_ICMP = 1
PROTO_IGMP = 2
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMP6 = 58

# TCP flag bits.
TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PUSH = 0x08
TH_ACK = 0x10
TH_URG = 0x20


@dataclass(slots=True)
class RawPacket:
    """One captured frame, as a capture source read it."""

    ts: float  # seconds since the epoch (network time)
    linktype: int  # DLT_* / LINKTYPE_* value of the interface it was captured on
    data: bytes  # captured bytes (caplen of them)
    wirelen: int  # original length on the wire
    source: str = ""  # file name or interface, for messages
    index: int = 0  # 1-based frame number within its source, for messages


@dataclass(slots=True)
class Packet:
    """One IP packet as the flow table needs it (after reassembly and decapsulation).

    Lengths are what the IP header claims, not what was captured: Zeek counts
    `orig_ip_bytes` from the IP total length and sequence space from TCP headers, so a
    snap-length-truncated capture still yields the right byte counts.
    """

    ts: float
    src: str  # canonical text address (IPv6 compressed)
    dst: str
    proto: int  # IP protocol number of the transport header
    ip_len: int  # IP total length incl. header (IPv6: 40 + payload length)
    sport: int = 0  # TCP/UDP ports; ICMP: type in sport, code in dport
    dport: int = 0
    ip_version: int = 4
    ttl: int = 0
    # TCP
    flags: int = 0
    seq: int = 0
    ack: int = 0
    window: int = 0
    # Transport payload: `payload_len` as the headers claim, `payload` as captured
    # (possibly shorter when the capture was snap-length truncated).
    payload_len: int = 0
    payload: bytes = b""
    # None when not verified (the default, like `zeek -C`), else the verdict.
    checksum_ok: bool | None = None
    # Link-layer details some logs report.
    vlan: int | None = None
    inner_vlan: int | None = None
    l2_src: str | None = None
    l2_dst: str | None = None
    # Set on packets that came out of a tunnel: the outer packet, which the flow table
    # processes first so the inner connection can name it in `tunnel_parents`.
    outer: Packet | None = None
    # On a tunnel's outer packet: the tunnel it carries, e.g. "vxlan", "gre", "teredo" (a
    # UDP carrier's connection lists it as its service).
    tunnel_type: str | None = None
    # Analysis of this packet stopped at a limit (a tunnel nested too deep): its connection
    # gets Zeek's 'X' (CheckHistory(HIST_UNKNOWN_PKT, 'X')) after the packet's own letters.
    analysis_partial: bool = False
    extra: dict = field(default_factory=dict)  # decoder notes, e.g. ICMP inner header
