"""pcapng files: every interface keeps its own link type and timestamp resolution.

dpkt's reader applies the first interface description to every packet; captures merged
from several interfaces (e.g. `any` plus a tunnel device) need each packet's own interface.
Sections may repeat (concatenated files) and each may have its own byte order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from pcapexfil.packet import RawPacket
from pcapexfil.source.pcap import STREAM_ERRORS, CaptureError
from pcapexfil.weird import Weirds

SHB = 0x0A0D0D0A
IDB = 0x00000001
OPB = 0x00000002  # obsolete packet block
SPB = 0x00000003
EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
MAX_BLOCK = 1 << 24  # larger blocks are corruption, not data

OPT_END = 0
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14


class Interface:
    __slots__ = ("linktype", "snaplen", "divisor", "offset")

    def __init__(self, linktype: int, snaplen: int, divisor: float, offset: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.divisor = divisor  # timestamp units per second
        self.offset = offset  # if_tsoffset, seconds


def parse_interface_block(body: bytes, order: str) -> Interface:
    linktype, _res, snaplen = struct.unpack_from(order + "HHI", body, 0)
    divisor = 1e6
    offset = 0
    pos = 8
    while pos + 4 <= len(body):
        code, length = struct.unpack_from(order + "HH", body, pos)
        pos += 4
        if code == OPT_END:
            break
        value = body[pos : pos + length]
        if code == OPT_IF_TSRESOL and value:  # an option may claim more than its block holds
            res = value[0]
            divisor = float(2 ** (res & 0x7F)) if res & 0x80 else float(10 ** res)
        elif code == OPT_IF_TSOFFSET and len(value) >= 8:
            offset = struct.unpack(order + "q", value[:8])[0]
        pos += (length + 3) & ~3
    return Interface(linktype, snaplen, divisor, offset)


class PcapngReader:
    """Reader for one pcapng stream whose first 4 bytes (the SHB type) were consumed."""

    def __init__(self, f: BinaryIO, magic: bytes, name: str) -> None:
        self.f = f
        self.name = name
        self.order = "<"
        self.interfaces: list[Interface] = []
        # Validate the first section header now, so a non-capture fails before any packet.
        head = f.read(8)
        if len(head) < 8:
            raise CaptureError(f"{name}: truncated pcapng section header")
        self._start_section(head, name)

    def _start_section(self, head: bytes, name: str) -> None:
        """Read the rest of an SHB given its length+byte-order-magic bytes."""
        if len(head) < 8:
            raise CaptureError(f"{name}: truncated pcapng section header")
        if struct.unpack("<I", head[4:8])[0] == BYTE_ORDER_MAGIC:
            self.order = "<"
        elif struct.unpack(">I", head[4:8])[0] == BYTE_ORDER_MAGIC:
            self.order = ">"
        else:
            raise CaptureError(f"{name}: bad pcapng byte-order magic")
        (length,) = struct.unpack(self.order + "I", head[:4])
        if length < 28 or length % 4 or length > MAX_BLOCK:
            raise CaptureError(f"{name}: bad pcapng section header length {length}")
        rest = self.f.read(length - 12)
        if len(rest) < length - 12:
            raise CaptureError(f"{name}: truncated pcapng section header")
        self.interfaces = []

    @property
    def linktype(self) -> int | None:
        """Link type of the first interface, once seen (for messages only)."""
        return self.interfaces[0].linktype if self.interfaces else None

    def packets(self, weirds: Weirds) -> Iterator[RawPacket]:
        read = self.f.read
        name = self.name
        index = 0
        last_ts = 0.0
        while True:
            try:
                head = read(8)
                if len(head) < 8:
                    if head:
                        weirds.report("truncated_capture_file", last_ts, f"{name}: partial block header")
                    return
                order = self.order
                btype = struct.unpack(order + "I", head[:4])[0]
                if btype == SHB:
                    try:
                        self._start_section(head[4:8] + read(4), name)
                    except CaptureError as exc:
                        weirds.report("corrupt_capture_file", last_ts, str(exc))
                        return
                    continue
                (length,) = struct.unpack(order + "I", head[4:8])
                if length < 12 or length % 4 or length > MAX_BLOCK:
                    weirds.report("corrupt_capture_file", last_ts, f"{name}: bad block length {length}")
                    return
                body = read(length - 8)
            except STREAM_ERRORS as exc:
                weirds.report("truncated_capture_file", last_ts, f"{name}: {exc}")
                return
            if len(body) < length - 8:
                weirds.report("truncated_capture_file", last_ts, f"{name}: block cut short after frame {index}")
                return
            body = body[:-4]  # drop the trailing length copy
            if btype == EPB or btype == OPB:
                if btype == EPB:
                    if len(body) < 20:
                        weirds.report("corrupt_capture_file", last_ts, f"{name}: short packet block")
                        return
                    ifid, hi, lo, caplen, wirelen = struct.unpack_from(order + "IIIII", body, 0)
                    start = 20
                else:
                    if len(body) < 20:
                        weirds.report("corrupt_capture_file", last_ts, f"{name}: short packet block")
                        return
                    ifid, _drops, hi, lo, caplen, wirelen = struct.unpack_from(order + "HHIIII", body, 0)
                    start = 20
                if ifid >= len(self.interfaces):
                    weirds.report("corrupt_capture_file", last_ts, f"{name}: packet on undeclared interface {ifid}")
                    index += 1
                    continue
                if start + caplen > len(body):
                    weirds.report("corrupt_capture_file", last_ts, f"{name}: packet longer than its block")
                    return
                iface = self.interfaces[ifid]
                index += 1
                last_ts = ((hi << 32) | lo) / iface.divisor + iface.offset
                yield RawPacket(last_ts, iface.linktype, body[start : start + caplen], wirelen, name, index)
            elif btype == SPB:
                if not self.interfaces or len(body) < 4:
                    weirds.report("corrupt_capture_file", last_ts, f"{name}: simple packet without interface")
                    return
                (wirelen,) = struct.unpack_from(order + "I", body, 0)
                iface = self.interfaces[0]
                caplen = min(wirelen, len(body) - 4)
                if iface.snaplen:
                    caplen = min(caplen, iface.snaplen)
                index += 1
                # Simple packet blocks carry no timestamp: reuse the previous one.
                yield RawPacket(last_ts, iface.linktype, body[4 : 4 + caplen], wirelen, name, index)
            elif btype == IDB:
                if len(body) < 8:
                    weirds.report("corrupt_capture_file", last_ts, f"{name}: short interface block")
                    return
                self.interfaces.append(parse_interface_block(body, order))
            # other blocks (name resolution, statistics, custom) carry nothing we need
