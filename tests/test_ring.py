"""fast.ring: the numba walk of a TPACKET_V3 block against a plain-Python walk of the same
bytes (the per-frame code the live source used before), on blocks built here."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from pcapexfil.fast.ring import (
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    block_chunk,
)

FRAME_HDR = struct.Struct("=IIIIIIHHIIHH")  # next, sec, nsec, snaplen, len, status, mac, net, rxhash, tci, tpid, pad
MAC_OFFSET = 80  # header + sockaddr_ll, TPACKET_ALIGNed, as the kernel lays frames out


def build_block(frames: list[tuple[int, int, bytes, int, int, int, int]], first: int = 48) -> bytes:
    """A block whose frames start at `first`: (sec, nsec, data, wirelen, status, tci, tpid) each."""
    block = bytearray(first)
    for n, (sec, nsec, data, wirelen, status, tci, tpid) in enumerate(frames):
        size = (MAC_OFFSET + len(data) + 15) // 16 * 16
        nxt = size if n + 1 < len(frames) else 0
        header = FRAME_HDR.pack(nxt, sec, nsec, len(data), wirelen, status, MAC_OFFSET, MAC_OFFSET, 0, tci, tpid, 0)
        block += header + bytes(MAC_OFFSET - len(header)) + data + bytes(size - MAC_OFFSET - len(data))
    return bytes(block)


def python_walk(block: bytes, pos: int, num: int, ethernet: bool) -> list[tuple[float, bytes, int]]:
    """(ts, data, wirelen) of each frame, libpcap's way, one struct.unpack at a time."""
    out = []
    for _ in range(num):
        nxt, sec, nsec, caplen, wirelen, status, mac, _net, _rxhash, tci, tpid, _pad = FRAME_HDR.unpack_from(block, pos)
        data = block[pos + mac : pos + mac + caplen]
        if status & TP_STATUS_VLAN_VALID and ethernet and len(data) >= 12:
            if not status & TP_STATUS_VLAN_TPID_VALID:
                tpid = 0x8100
            data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
            wirelen += 4
        out.append((sec + (nsec // 1000) / 1e6, data, wirelen))
        pos += nxt
    return out


def random_frames(rng: random.Random, n: int) -> list[tuple[int, int, bytes, int, int, int, int]]:
    frames = []
    for _ in range(n):
        data = rng.randbytes(rng.choice([0, 5, 11, 12, 13, 60, 1514, rng.randrange(2000)]))
        status = rng.choice([0, 1, TP_STATUS_VLAN_VALID | 1, TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID | 1])
        frames.append((rng.randrange(2**32), rng.randrange(10**9), data, len(data) + rng.choice([0, 0, 100]),
                       status, rng.randrange(2**16), rng.choice([0x8100, 0x88A8])))
    return frames


@pytest.mark.parametrize("linktype", [1, 101])
@pytest.mark.parametrize("seed", range(20))
def test_block_walk_equals_python_walk(seed: int, linktype: int) -> None:
    rng = random.Random(seed)
    frames = random_frames(rng, rng.randrange(1, 40))
    block = build_block(frames)
    ring = np.frombuffer(bytes(64) + block + bytes(64), np.uint8)  # the block somewhere in the ring
    chunk = block_chunk(ring, 64 + 48, len(frames), len(block), linktype, "veth0", 1000)
    got = [chunk.raw(i) for i in range(len(frames))]
    want = python_walk(block, 48, len(frames), linktype == 1)
    assert [(p.ts, p.data, p.wirelen) for p in got] == want
    assert [p.index for p in got] == list(range(1001, 1001 + len(frames)))
    assert {(p.linktype, p.source) for p in got} == {(linktype, "veth0")}
    assert not chunk.buf.flags.writeable  # a file's type: the same compiled kernels (test_jit's probe)


def test_vlan_tag_goes_back_after_the_mac_addresses() -> None:
    data = bytes(range(12)) + b"\x08\x00" + b"payload"
    block = build_block([(5, 2_500_000, data, len(data), TP_STATUS_VLAN_VALID | 1, 0x0123, 0)])
    chunk = block_chunk(np.frombuffer(block, np.uint8), 48, 1, len(block), 1, "eth0", 0)
    (raw,) = [chunk.raw(0)]
    assert raw.data == bytes(range(12)) + b"\x81\x00\x01\x23" + b"\x08\x00" + b"payload"
    assert raw.wirelen == len(data) + 4 and raw.ts == 5.0025


def test_pending_frames_counts_handed_over_blocks_from_the_reader_on() -> None:
    from pcapexfil.source.live import (
        BLOCK_HEADER,
        BLOCK_SIZE,
        TP_STATUS_USER,
        LiveCapture,
    )

    ring = np.zeros(4 * BLOCK_SIZE, np.uint8)
    for block, (status, num) in enumerate([(TP_STATUS_USER, 7), (0, 0), (TP_STATUS_USER, 5), (TP_STATUS_USER, 3)]):
        BLOCK_HEADER.pack_into(ring, block * BLOCK_SIZE, 3, 0, status, num, 48, 0, block)
    cap = LiveCapture.__new__(LiveCapture)  # the ring alone, no socket
    cap._ring_array, cap._nblocks = ring, 4
    cap._block = 2  # the reader is at block 2: blocks 2, 3, 0 are the kernel's hand-over, block 1 is not
    assert cap.pending_frames() == 5 + 3 + 7
    cap._block = 1
    assert cap.pending_frames() == 0
