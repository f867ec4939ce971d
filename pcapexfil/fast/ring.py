"""A TPACKET_V3 ring block as a `Chunk`, in one numba pass.

The live source (`source.live.LiveCapture`) gets a block of frames from the kernel and must
hand it back at once. Copying it here, frame headers decoded and VLAN tags that the driver
moved out of the frame put back (as libpcap does), gives the chunk the file readers give:
the numba parser takes it without a Python object per frame.

Header fields are read in host byte order, as the kernel writes them (<linux/if_packet.h>,
struct tpacket3_hdr): next 0, sec 4, nsec 8, snaplen 12, len 16, status 20, mac 24 (u16),
hv1.tp_vlan_tci 32, hv1.tp_vlan_tpid 36 (u16).
"""

from __future__ import annotations

import numpy as np

from pcapexfil.fast.reader import Chunk
from pcapexfil.jit import njit

TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
_DEFAULT_TPID = 0x8100


@njit(cache=True, inline="always")
def _u32(ring, pos):
    return np.int64(ring[pos : pos + 4].view(np.uint32)[0])


@njit(cache=True, inline="always")
def _u16(ring, pos):
    return np.int64(ring[pos : pos + 2].view(np.uint16)[0])


@njit(cache=True)
def walk_block(ring, pos, num, ethernet, out, offsets, caplens, wirelens, ts):
    """Copy the `num` frames from ring[pos:] (the block's first frame) into `out`, filling
    the per-frame arrays; returns the bytes used in `out` (at most the block's data length
    plus 4 per frame)."""
    used = 0
    for i in range(num):
        caplen = _u32(ring, pos + 12)
        wirelen = _u32(ring, pos + 16)
        status = _u32(ring, pos + 20)
        start = pos + _u16(ring, pos + 24)
        offsets[i] = used
        if status & TP_STATUS_VLAN_VALID and ethernet and caplen >= 12:
            tpid = _u16(ring, pos + 36) if status & TP_STATUS_VLAN_TPID_VALID else _DEFAULT_TPID
            tci = _u32(ring, pos + 32)
            out[used : used + 12] = ring[start : start + 12]
            out[used + 12] = (tpid >> 8) & 0xFF
            out[used + 13] = tpid & 0xFF
            out[used + 14] = (tci >> 8) & 0xFF
            out[used + 15] = tci & 0xFF
            out[used + 16 : used + 4 + caplen] = ring[start + 12 : start + caplen]
            caplen += 4
            wirelen += 4
        else:
            out[used : used + caplen] = ring[start : start + caplen]
        caplens[i] = caplen
        wirelens[i] = wirelen
        # Microseconds, as libpcap's default precision and the pcap --write-pcap stores.
        ts[i] = np.float64(_u32(ring, pos + 4)) + np.float64(_u32(ring, pos + 8) // 1000) / 1e6
        used += caplen
        pos += _u32(ring, pos)
    return used


def block_chunk(ring: np.ndarray, pos: int, num: int, block_size: int, linktype: int, source: str,
                first_index: int) -> Chunk:
    """The block's frames as a Chunk (a copy: the block can go back to the kernel at once);
    frames are numbered from `first_index` + 1. The copy's pages are touched only as far
    as the frames fill it."""
    out = np.empty(block_size + 4 * num, np.uint8)
    offsets = np.empty(num, np.int64)
    caplens = np.empty(num, np.uint32)
    wirelens = np.empty(num, np.uint32)
    ts = np.empty(num, np.float64)
    used = walk_block(ring, pos, num, linktype == 1, out, offsets, caplens, wirelens, ts)
    out.flags.writeable = False  # as a file's windows are: the same compiled kernels read both
    return Chunk(out[:used], offsets, caplens, wirelens, np.full(num, linktype, np.int32), ts,
                 np.arange(first_index + 1, first_index + num + 1, dtype=np.uint64), source)
