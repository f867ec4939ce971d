"""Cut captures into fixed time slices, as a rotating sensor (or `editcap -i`) would.

Used to make rotated datasets for tests and benchmarks, and to cut one huge capture into
files that cluster tasks can share out. Slices are classic pcap with microsecond times;
a packet that comes out of time order stays in the current slice, so slices never overlap.
"""

from __future__ import annotations

import bisect
import math
import os
import struct
from collections.abc import Sequence

PCAP_MAGIC_USEC = 0xA1B2C3D4
SNAPLEN = 262144


def split_captures(paths: Sequence[str], out_dir: str, interval: float | None = None,
                   cuts: Sequence[float] = (), prefix: str = "slice") -> list[str]:
    """Write the packets of `paths` (one stream in time order) into OUT/PREFIX-NNNNN.pcap,
    one file per `interval` seconds from the first packet, or a new file at each time in
    `cuts`; returns the files written."""
    from pcapexfil.source import open_captures
    from pcapexfil.weird import Weirds

    if interval is not None and not interval > 0:
        raise ValueError("interval must be positive")
    cuts = sorted(cuts)
    os.makedirs(out_dir, exist_ok=True)
    written: list[str] = []
    out = None
    linktype: int | None = None
    start: float | None = None
    current = -1
    try:
        for raw in open_captures(list(paths), Weirds()):
            if start is None:
                start, linktype = raw.ts, raw.linktype
            if raw.linktype != linktype:
                raise ValueError(f"{raw.source}: link type changes mid-stream ({linktype} → {raw.linktype})")
            if interval is not None:
                slot = max(current, math.floor((raw.ts - start) / interval))
            else:
                slot = max(current, bisect.bisect_right(cuts, raw.ts))
            if slot != current:
                if out is not None:
                    out.close()
                path = os.path.join(out_dir, f"{prefix}-{slot:05d}.pcap")
                out = open(path, "wb")
                out.write(struct.pack("<IHHiIII", PCAP_MAGIC_USEC, 2, 4, 0, 0, SNAPLEN, linktype))
                written.append(path)
                current = slot
            sec = math.floor(raw.ts)
            usec = round((raw.ts - sec) * 1e6)
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            assert out is not None
            out.write(struct.pack("<IIII", sec, usec, len(raw.data), raw.wirelen))
            out.write(raw.data)
    finally:
        if out is not None:
            out.close()
    return written
