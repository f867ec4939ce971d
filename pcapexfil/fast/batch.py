"""The packet batch: the columnar form of `Packet` that the fast path's kernels share.

The numba parser (`fast.parse`) fills one structured array per chunk of a capture; the
numba flow table (`fast.table`) consumes it. `packets_to_batch` builds the same columns
from the reference decoder's `Packet`s: it is the oracle the parser is tested against, and
the way packets that only the reference decoder understands (tunnels, fragments, rare link
types) join the fast flow table.

Addresses are 128-bit, split in two u64 halves; IPv4 is stored IPv4-mapped
(::ffff:a.b.c.d), so one comparison orders both families.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

import numpy as np

from pcapexfil.packet import Packet

# `kind` column: who handles the packet.
KIND_FAST = 0  # parsed by the kernel; the flow table takes it as it is
KIND_SLOW = 1  # the kernel could not (tunnel, fragment, unknown link type...): reference decoder
KIND_SKIP = 2  # nothing for the flow table (non-IP frame, damaged beyond use: counted as a weird)
# A connection another worker owns (pcapexfil.workers): it moves network time as its own
# packet would, and nothing else.
KIND_FOREIGN = 3

PACKET_DTYPE = np.dtype(
    [
        ("ts", np.float64),
        ("frame", np.uint64),  # 1-based frame number within its source
        ("kind", np.uint8),
        ("ip_version", np.uint8),
        ("proto", np.uint8),
        ("ttl", np.uint8),
        ("src_hi", np.uint64),
        ("src_lo", np.uint64),
        ("dst_hi", np.uint64),
        ("dst_lo", np.uint64),
        ("sport", np.uint16),  # ICMP: type
        ("dport", np.uint16),  # ICMP: code
        ("ip_len", np.uint32),  # IP total length as the header claims (IPv6: 40 + payload length)
        ("flags", np.uint8),
        ("seq", np.uint32),
        ("ack", np.uint32),
        ("window", np.uint16),
        ("payload_len", np.uint32),  # transport payload length as the headers claim
        ("payload_off", np.uint64),  # offset of the captured payload in the chunk buffer
        ("payload_cap", np.uint32),  # captured payload bytes (<= payload_len when snap-truncated)
    ]
)

# One batch row as Python values, read straight from the array's bytes (a structured
# scalar's `.item()` costs five times as much): the fast engine builds a Packet from it.
PACKET_FIELDS: tuple[str, ...] = PACKET_DTYPE.names or ()
PACKET_ROW = struct.Struct(
    "<" + "".join({"f8": "d", "u8": "Q", "u4": "I", "u2": "H", "u1": "B"}[PACKET_DTYPE[name].str[1:]]
                  for name in PACKET_FIELDS))
assert PACKET_ROW.size == PACKET_DTYPE.itemsize  # packed, in field order

V4_MAPPED_LO = 0xFFFF << 32  # the low half of an IPv4 address's IPv4-mapped IPv6 form, address bits 0


def addr_to_halves(text: str) -> tuple[int, int]:
    """Text address → (hi, lo) u64 halves, IPv4 as IPv4-mapped IPv6."""
    ip = ipaddress.ip_address(text)
    value = int(ip) | V4_MAPPED_LO if ip.version == 4 else int(ip)
    return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF


def halves_to_addr(hi: int, lo: int) -> str:
    """(hi, lo) → the canonical text Zeek logs (IPv4 dotted, IPv6 compressed)."""
    value = (int(hi) << 64) | int(lo)
    if value >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(value & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address(value))


def packets_to_batch(packets: Sequence[Packet], frame: int = 0) -> np.ndarray:
    """The reference decoder's packets as batch rows (payload offsets left 0: no chunk buffer)."""
    batch = np.zeros(len(packets), dtype=PACKET_DTYPE)
    for i, p in enumerate(packets):
        row = batch[i]
        row["ts"], row["frame"], row["kind"] = p.ts, frame, KIND_FAST
        row["ip_version"], row["proto"], row["ttl"] = p.ip_version, p.proto, p.ttl
        row["src_hi"], row["src_lo"] = addr_to_halves(p.src)
        row["dst_hi"], row["dst_lo"] = addr_to_halves(p.dst)
        row["sport"], row["dport"], row["ip_len"] = p.sport, p.dport, p.ip_len
        row["flags"], row["seq"], row["ack"], row["window"] = p.flags, p.seq, p.ack, p.window
        row["payload_len"], row["payload_cap"] = p.payload_len, len(p.payload)
    return batch
