"""Live capture from a Linux interface: AF_PACKET with a TPACKET_V3 memory-mapped ring.

The kernel fills blocks of the ring with frames and hands each block to user space whole,
so reading costs one poll per block rather than one system call per packet. BPF filters
are compiled by libpcap (the copy vendored in the pcapy-ng wheel) and attached to the
socket; the snap length is the filter's accept value, exactly as libpcap does it. With a
fanout group several sockets (one per worker process) share the interface; the kernel
hashes each flow symmetrically to one of them (PACKET_FANOUT_HASH).

Blocks come out as the `Chunk`s the fast parser takes (fast.ring copies and decodes a
block in one numba pass), or as lists of `RawPacket`s like the file sources give.
Timestamps are the kernel's, truncated to microseconds (libpcap's default precision, and
what a pcap file written from them stores, so a live run and a run over that file see
identical times). VLAN tags that the driver moved out of the frame are put back, as
libpcap does.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import select
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pcapexfil.packet import RawPacket
from pcapexfil.source.pcap import CaptureError

if TYPE_CHECKING:
    from pcapexfil.fast.reader import Chunk

# <linux/if_packet.h>, <linux/if_ether.h>, <asm-generic/socket.h>
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
TPACKET_V3 = 2
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
SO_ATTACH_FILTER = 26
ETH_P_ALL = 0x0003
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1

# ARPHRD_* (from /sys/class/net/IFACE/type) -> link type of the frames a SOCK_RAW socket reads.
_LINKTYPES = {1: 1, 772: 1, 65534: 101}  # Ethernet, loopback (Ethernet framing), none (raw IP)

DEFAULT_SNAPLEN = 262144  # libpcap's default
# One ring block; must hold the largest frame (snaplen + headers). The kernel hands a block
# over when it is full or BLOCK_TIMEOUT_MS after its first frame, so at low rates every
# block carries a few frames and the ring absorbs a reader's stall of about
# blocks x timeout before it drops: many small blocks, not a few big ones (4 blocks of
# 4 MiB and 50 ms dropped frames at 5k frames/s whenever a worker paused for 0.2 s).
BLOCK_SIZE = 1 << 20
BLOCK_TIMEOUT_MS = 100

BLOCK_HEADER = struct.Struct("=IIIIIIQ")  # TPACKET_V3 block: version, offset_to_priv, status, num_pkts, first, len, seq
_TPSTATS = struct.Struct("=III")  # tp_packets, tp_drops, tp_freeze_q_cnt


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


Instruction = tuple[int, int, int, int]


def compile_bpf(expression: str, linktype: int = 1, snaplen: int = DEFAULT_SNAPLEN) -> list[Instruction]:
    """A tcpdump filter expression as classic BPF instructions (libpcap's compiler).

    An empty expression accepts everything; either way the accept value is `snaplen`.
    Raises CaptureError with libpcap's one-line message for an invalid expression.
    """
    if not expression.strip():
        return [(0x06, 0, 0, snaplen)]  # BPF_RET|BPF_K: accept `snaplen` bytes
    try:
        import pcapy
    except ImportError:
        raise CaptureError("--bpf needs the pcapy-ng package (pip install pcapy-ng)") from None
    try:
        program = pcapy.compile(linktype, snaplen, expression, 1, 0xFFFFFFFF)
    except pcapy.PcapError as exc:
        raise CaptureError(f"invalid BPF filter {expression!r}: {exc}") from None
    return [tuple(ins) for ins in program.get_bpf()]  # type: ignore[misc]


def interface_linktype(iface: str) -> int:
    """The link type a raw packet socket sees on `iface`; CaptureError if there is none."""
    try:
        with open(f"/sys/class/net/{iface}/type", encoding="ascii") as fh:
            arphrd = int(fh.read().strip())
    except FileNotFoundError:
        raise CaptureError(f"{iface}: no such interface") from None
    except (OSError, ValueError) as exc:
        raise CaptureError(f"{iface}: cannot read its type ({exc})") from None
    if arphrd not in _LINKTYPES:
        raise CaptureError(f"{iface}: unsupported hardware type {arphrd}")
    return _LINKTYPES[arphrd]


# Bytes a frame may carry beyond the MTU: link header (Ethernet 14, Linux cooked up to 20) and
# up to two VLAN tags the ring puts back.
FRAME_OVERHEAD = 32


def interface_mtu(iface: str) -> int | None:
    """The interface's MTU, or None when /sys does not tell."""
    try:
        with open(f"/sys/class/net/{iface}/mtu", encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


@dataclass(slots=True)
class LiveStats:
    """Kernel counters of one socket, summed since it opened (the kernel resets on read)."""

    received: int = 0  # frames that passed the filter (delivered or dropped)
    dropped: int = 0  # of those, dropped because the ring was full


class LiveCapture:
    """One AF_PACKET socket with a TPACKET_V3 ring on `iface`.

    Iterate `blocks()` for Chunks or `batches()` for lists of RawPackets.
    """

    def __init__(
        self,
        iface: str,
        *,
        bpf: str = "",
        snaplen: int = DEFAULT_SNAPLEN,
        promisc: bool = True,
        buffer_bytes: int = 64 << 20,
        fanout_group: int | None = None,
    ) -> None:
        if not 1 <= snaplen <= BLOCK_SIZE - 256:
            raise CaptureError(f"snap length must be between 1 and {BLOCK_SIZE - 256}, got {snaplen}")
        self.iface = iface
        self.snaplen = snaplen
        self.linktype = interface_linktype(iface)
        mtu = interface_mtu(iface)
        # A longer frame was never on the wire as one: the NIC or the kernel merged segments
        # (GRO/LRO) before the socket saw them.
        self.max_frame = mtu + FRAME_OVERHEAD if mtu else None
        program = compile_bpf(bpf, self.linktype, snaplen)
        self.stats = LiveStats()
        self._sock = None
        self._ring: mmap.mmap | None = None
        self._ring_array: np.ndarray | None = None  # the ring's bytes (a view of the mmap)
        try:
            # Protocol 0 first: no frame is queued before the ring and the filter are in place.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise CaptureError(f"{iface}: capturing needs root or CAP_NET_RAW") from None
        self._sock = sock
        try:
            ifindex = socket.if_nametoindex(iface)
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            self._attach(program)
            nblocks = max(2, buffer_bytes // BLOCK_SIZE)
            # tpacket_req3: block_size, block_nr, frame_size, frame_nr, retire_blk_tov, sizeof_priv, flags
            req = struct.pack("=IIIIIII", BLOCK_SIZE, nblocks, 2048, BLOCK_SIZE // 2048 * nblocks,
                              BLOCK_TIMEOUT_MS, 0, 0)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self._ring = mmap.mmap(sock.fileno(), BLOCK_SIZE * nblocks, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE)
            self._ring_array = np.frombuffer(self._ring, np.uint8)
            self._nblocks = nblocks
            self._block = 0
            sock.bind((iface, ETH_P_ALL))
            if promisc:
                # packet_mreq: ifindex, type, alen, address[8]
                mreq = struct.pack("=iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            if fanout_group is not None:
                mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG
                arg = struct.pack("=I", (fanout_group & 0xFFFF) | (mode << 16))
                sock.setsockopt(SOL_PACKET, PACKET_FANOUT, arg)
        except OSError as exc:
            self.close()
            raise CaptureError(f"{iface}: {exc.strerror or exc}") from None
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)
        self.index = 0
        # Frames stamped outside [start, end] are not delivered: a fanout worker's capture
        # runs from when every member had joined to when the first began to leave
        # (live.collector); outside that window the group spreads flows differently.
        self.start = 0.0
        self.end = math.inf
        self.passed_end = False  # a block held a frame stamped after `end`

    def _attach(self, program: Sequence[Instruction]) -> None:
        insns = (_SockFilter * len(program))(*(_SockFilter(*ins) for ins in program))
        fprog = _SockFprog(len(program), insns)
        assert self._sock is not None
        self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))  # type: ignore[arg-type]

    def blocks(self, timeout: float = 0.2) -> Iterator[Chunk | None]:
        """Forever: each block the kernel hands over, as a Chunk, in ring order; None when
        `timeout` passed with no traffic (so the caller can look at its clock, signals and
        counters)."""
        from pcapexfil.fast.ring import block_chunk

        ring = self._ring_array
        assert ring is not None
        ms = int(timeout * 1000)
        while True:
            off = self._block * BLOCK_SIZE
            _v, _p, status, num, first, _len, _seq = BLOCK_HEADER.unpack_from(ring.data, off)
            if not status & TP_STATUS_USER:
                if not self._poll.poll(ms):
                    yield None
                continue
            chunk = block_chunk(ring, off + first, num, BLOCK_SIZE, self.linktype, self.iface, self.index)
            self.index += num
            ring[off + 8 : off + 12] = 0  # block_status = TP_STATUS_KERNEL: give it back
            self._block = (self._block + 1) % self._nblocks
            if num and chunk.ts[-1] > self.end:
                self.passed_end = True
            chunk = chunk.within(self.start, self.end)
            yield chunk if len(chunk.ts) else None

    def pending_frames(self) -> int:
        """Frames in blocks the kernel has handed over and `blocks()` has not read yet."""
        ring = self._ring_array
        if ring is None:
            return 0
        pending = 0
        for k in range(self._nblocks):
            off = (self._block + k) % self._nblocks * BLOCK_SIZE
            _v, _p, status, num, _first, _len, _seq = BLOCK_HEADER.unpack_from(ring.data, off)
            if not status & TP_STATUS_USER:
                break
            pending += num
        return pending

    def batches(self, timeout: float = 0.2) -> Iterator[list[RawPacket]]:
        """`blocks()` as lists of RawPackets, the file sources' form (empty on a timeout)."""
        for chunk in self.blocks(timeout):
            yield [] if chunk is None else [chunk.raw(i) for i in range(len(chunk.ts))]

    def read_stats(self) -> LiveStats:
        """Fold the kernel's counters (reset by each read) into `stats` and return it."""
        if self._sock is not None:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPSTATS.size)
            packets, drops, _freeze = _TPSTATS.unpack(raw)
            self.stats.received += packets  # tp_packets counts dropped frames too
            self.stats.dropped += drops
        return self.stats

    def close(self) -> None:
        if self._sock is not None:
            self.read_stats()
        self._ring_array = None  # the mmap cannot close while a view of it exists
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PcapWriter:
    """A classic microsecond pcap file, written as frames are captured."""

    def __init__(self, path: str, linktype: int, snaplen: int = DEFAULT_SNAPLEN) -> None:
        self.path = path
        self._fh = open(path, "wb", buffering=1 << 20)
        self._fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))
        self._rec = struct.Struct("<IIII")

    def write(self, pkt: RawPacket) -> None:
        sec = int(pkt.ts)
        usec = round((pkt.ts - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        self._fh.write(self._rec.pack(sec, usec, len(pkt.data), pkt.wirelen))
        self._fh.write(pkt.data)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


__all__ = ["DEFAULT_SNAPLEN", "LiveCapture", "LiveStats", "PcapWriter", "compile_bpf", "interface_linktype"]
