"""Classic libpcap files: micro- or nanosecond timestamps, either byte order.

Streams record by record from any binary file object, so memory does not grow with the file.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from pcapexfil.packet import RawPacket
from pcapexfil.weird import Weirds

# magic (as read little-endian) -> (struct byte order, timestamp divisor)
MAGICS = {
    0xA1B2C3D4: ("<", 1e6),
    0xD4C3B2A1: (">", 1e6),
    0xA1B23C4D: ("<", 1e9),
    0x4D3CB2A1: (">", 1e9),
}

# A record claiming more than this is corrupt, not a jumbo frame (libpcap's own ceiling
# is 256 KiB for most link types; we leave headroom for odd captures).
MAX_RECORD = 1 << 20

# What reading a damaged or cut gzip stream raises (zlib.error is no OSError).
STREAM_ERRORS = (OSError, EOFError, zlib.error)


class CaptureError(Exception):
    """The input cannot be read as a capture at all (one-line message naming the file)."""


class PcapReader:
    """Reader for one classic pcap stream whose 4-byte magic has already been consumed."""

    def __init__(self, f: BinaryIO, magic: bytes, name: str) -> None:
        order, self.divisor = MAGICS[struct.unpack("<I", magic)[0]]
        rest = f.read(20)
        if len(rest) < 20:
            raise CaptureError(f"{name}: truncated pcap file header")
        _vmaj, _vmin, _zone, _sig, self.snaplen, network = struct.unpack(order + "HHiIII", rest)
        self.linktype = network & 0xFFFF  # upper bits may carry FCS information
        self.f = f
        self.name = name
        self._rec = struct.Struct(order + "IIII")

    def packets(self, weirds: Weirds) -> Iterator[RawPacket]:
        """Yield records until EOF; a damaged tail is reported as a weird and ends the file."""
        read = self.f.read
        unpack = self._rec.unpack
        div = self.divisor
        linktype = self.linktype
        name = self.name
        index = 0
        last_ts = 0.0
        while True:
            try:
                hdr = read(16)
                if len(hdr) < 16:
                    if hdr:
                        weirds.report(
                            "truncated_capture_file", last_ts, f"{name}: partial record header after frame {index}"
                        )
                    return
                sec, frac, caplen, wirelen = unpack(hdr)
                if caplen > MAX_RECORD:
                    weirds.report(
                        "corrupt_capture_file", last_ts, f"{name}: record {index + 1} claims {caplen} bytes"
                    )
                    return
                data = read(caplen)
            except STREAM_ERRORS as exc:  # gzip stream damaged or cut short
                weirds.report("truncated_capture_file", last_ts, f"{name}: {exc}")
                return
            if len(data) < caplen:
                weirds.report("truncated_capture_file", last_ts, f"{name}: record {index + 1} cut short")
                return
            index += 1
            last_ts = sec + frac / div
            yield RawPacket(last_ts, linktype, data, wirelen, name, index)
