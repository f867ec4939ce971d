"""Captures as chunks of whole records, and the batches the fast flow table consumes.

Public entry point: `iter_batches(paths, weirds, stats)`. Input paths are validated exactly
as the reference source does (`pcapexfil.source.open_capture`: a `CaptureError` before any
batch), and damage inside a file is the same counted weird (`truncated_capture_file`,
`corrupt_capture_file`) with everything before it kept.

How each input is read:
- classic pcap (micro/nano, either byte order) and pcapng (every section and byte order,
  EPB/SPB/OPB, per-interface link type, timestamp resolution and offset): a plain file is
  memory-mapped and a numba kernel walks the record headers of a window of `chunk_bytes`;
  consumed pages are released with MADV_DONTNEED, so resident memory stays about one chunk
  whatever the file size. pcapng section and interface headers and damaged blocks stop the
  kernel and are handled in Python with the reference reader's rules and messages.
- gzip-compressed input, standard input (`-`) and pipes: streamed into a fresh buffer per
  chunk (the partial last record is carried over to the next one); the same kernels walk
  it. A stream is opened once (`pcapexfil.source.inputs` replays what validation read).
- several files: one stream in the reference merge order (`open_captures`). Files sorted
  by first timestamp are concatenated while each one ends before the next begins; from the
  first record that reaches the next file's start on, the rest is merged record by record
  exactly like the reference (documented slower path for overlapping files: RawPackets
  packed back into chunks).
"""

from __future__ import annotations

import heapq
import io
import mmap
import os
import struct
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import BinaryIO, NamedTuple, Protocol

import numpy as np

from pcapexfil.fast.batch import KIND_SLOW
from pcapexfil.fast.parse import parse_records
from pcapexfil.jit import njit
from pcapexfil.packet import RawPacket
from pcapexfil.source import CaptureStats, FileStats, open_capture
from pcapexfil.source.pcap import MAGICS, MAX_RECORD, STREAM_ERRORS
from pcapexfil.source.filter import CaptureFilter
from pcapexfil.source.inputs import GZIP_MAGIC, GzipStream, is_stream, open_input
from pcapexfil.source.pcapng import BYTE_ORDER_MAGIC, MAX_BLOCK, parse_interface_block
from pcapexfil.weird import Weirds

__all__ = ["DEFAULT_CHUNK_BYTES", "Batch", "Chunk", "iter_batches", "iter_chunks"]

DEFAULT_CHUNK_BYTES = 8 << 20
_PAGE = mmap.PAGESIZE
_RECORDS_PER_SLOW_CHUNK = 1 << 16
_STREAM_BUFFER = 1 << 20  # as the reference source's gzip reader
_STREAM_PIECE = 1 << 16  # below the stream's buffer size (see _StreamSource)

# _walk_pcap status
_WALK_MORE = 0  # stopped at the end of the window (possibly inside a record)
_WALK_CORRUPT = 1  # a record header claims more than MAX_RECORD bytes
_WALK_OVERLAP = 2  # a record reaches the next file's first timestamp


class Batch(NamedTuple):
    """One chunk of the stream, parsed.

    `packets` has one PACKET_DTYPE row per captured record, in stream (capture) order;
    FAST rows' `payload_off` index `buf`. `slow` holds the RawPacket of every KIND_SLOW row,
    in row order (the i-th SLOW row is `slow[i]`), for the reference decoder. `frame` is the
    1-based record number within its own file (for messages; files of a multi-file stream
    each start at 1).
    """

    buf: np.ndarray
    packets: np.ndarray
    slow: list[RawPacket]


@dataclass
class Chunk:
    """Whole records of one chunk: parallel arrays indexed by record, data in `buf`."""

    buf: np.ndarray  # uint8
    offsets: np.ndarray  # int64, start of each record's data in buf
    caplens: np.ndarray  # uint32
    wirelens: np.ndarray  # uint32
    linktypes: np.ndarray  # int32
    ts: np.ndarray  # float64
    frames: np.ndarray  # uint64, 1-based within the source
    source: str
    raws: list[RawPacket] | None = None  # set on the slower paths (records came as RawPackets)

    def within(self, start: float, end: float) -> Chunk:
        """The records stamped from `start` to `end` (a live worker's capture window)."""
        keep = (self.ts >= start) & (self.ts <= end)
        if keep.all():
            return self
        return replace(self, offsets=self.offsets[keep], caplens=self.caplens[keep], wirelens=self.wirelens[keep],
                       linktypes=self.linktypes[keep], ts=self.ts[keep], frames=self.frames[keep],
                       raws=None if self.raws is None else [r for r, k in zip(self.raws, keep.tolist()) if k])

    def raw(self, i: int) -> RawPacket:
        """Record i as the reference decoder takes it."""
        if self.raws is not None:
            return self.raws[i]
        o = int(self.offsets[i])
        return RawPacket(
            float(self.ts[i]), int(self.linktypes[i]), self.buf[o : o + int(self.caplens[i])].tobytes(),
            int(self.wirelens[i]), self.source, int(self.frames[i]),
        )


# Chunks of one file; the generator's return value is the rest of the file as RawPackets when
# a record reached the next file's first timestamp (the files overlap in time), else None.
FileChunks = Generator[Chunk, None, "Iterator[RawPacket] | None"]


@njit(cache=True, inline="always")
def _u32(buf, b, swap):
    if swap:
        return (np.int64(buf[b]) << 24) | (np.int64(buf[b + 1]) << 16) | (np.int64(buf[b + 2]) << 8) | buf[b + 3]
    return (np.int64(buf[b + 3]) << 24) | (np.int64(buf[b + 2]) << 16) | (np.int64(buf[b + 1]) << 8) | buf[b]


@njit(cache=True)
def _walk_pcap(buf, swap, divisor, max_record, stop_ts, offsets, caplens, wirelens, ts):
    """Walk pcap record headers from buf[0]; returns (records, bytes consumed, status)."""
    n = 0
    pos = 0
    size = buf.shape[0]
    while n < offsets.shape[0]:
        if pos + 16 > size:
            return n, pos, _WALK_MORE
        caplen = _u32(buf, pos + 8, swap)
        if caplen > max_record:
            return n, pos, _WALK_CORRUPT
        if pos + 16 + caplen > size:
            return n, pos, _WALK_MORE
        t = np.float64(_u32(buf, pos, swap)) + np.float64(_u32(buf, pos + 4, swap)) / divisor
        if t >= stop_ts:
            return n, pos, _WALK_OVERLAP
        offsets[n] = pos + 16
        caplens[n] = caplen
        wirelens[n] = _u32(buf, pos + 12, swap)
        ts[n] = t
        pos += 16 + caplen
        n += 1
    return n, pos, _WALK_MORE


# _walk_pcapng status: the block at the returned position needs Python
_NG_SHB = 3  # section header: new byte order, interfaces reset
_NG_IDB = 4  # interface description (complete in the window)
_NG_BAD_LENGTH = 5
_NG_SHORT_PACKET = 6
_NG_UNDECLARED = 7  # packet on an interface not declared (yet)
_NG_PACKET_TOO_LONG = 8
_NG_SPB_NO_IF = 9

_SHB, _IDB, _OPB, _SPB, _EPB = 0x0A0D0D0A, 1, 2, 3, 6


@njit(cache=True)
def _walk_pcapng(buf, swap, if_linktype, if_divisor, if_offset, if_snaplen, n_if, last_ts, stop_ts,
                 max_block, offsets, caplens, wirelens, linktypes, ts):
    """Walk pcapng packet blocks (EPB, SPB, OPB; others skipped) from buf[0] until a block
    that needs Python; returns (records, position, status, last timestamp)."""
    n = 0
    pos = 0
    size = buf.shape[0]
    while n < offsets.shape[0]:
        if pos + 8 > size:
            return n, pos, _WALK_MORE, last_ts
        btype = _u32(buf, pos, swap)
        if btype == _SHB:
            return n, pos, _NG_SHB, last_ts
        length = _u32(buf, pos + 4, swap)
        if length < 12 or length % 4 or length > max_block:
            return n, pos, _NG_BAD_LENGTH, last_ts
        if pos + length > size:
            return n, pos, _WALK_MORE, last_ts
        body = pos + 8
        blen = length - 12  # without the trailing length copy
        if btype == _EPB or btype == _OPB:
            if blen < 20:
                return n, pos, _NG_SHORT_PACKET, last_ts
            if btype == _EPB:
                ifid = _u32(buf, body, swap)
            elif swap:
                ifid = (np.int64(buf[body]) << 8) | buf[body + 1]
            else:
                ifid = (np.int64(buf[body + 1]) << 8) | buf[body]
            if ifid >= n_if:
                return n, pos, _NG_UNDECLARED, last_ts
            caplen = _u32(buf, body + 12, swap)
            if 20 + caplen > blen:
                return n, pos, _NG_PACKET_TOO_LONG, last_ts
            units = (np.uint64(_u32(buf, body + 4, swap)) << np.uint64(32)) | np.uint64(_u32(buf, body + 8, swap))
            t = np.float64(units) / if_divisor[ifid] + if_offset[ifid]
            if t >= stop_ts:
                return n, pos, _WALK_OVERLAP, last_ts
            last_ts = t
            offsets[n] = body + 20
            caplens[n] = caplen
            wirelens[n] = _u32(buf, body + 16, swap)
            linktypes[n] = if_linktype[ifid]
            ts[n] = t
            n += 1
        elif btype == _SPB:
            if n_if == 0 or blen < 4:
                return n, pos, _NG_SPB_NO_IF, last_ts
            if last_ts >= stop_ts:
                return n, pos, _WALK_OVERLAP, last_ts
            wirelen = _u32(buf, body, swap)
            caplen = min(wirelen, blen - 4)
            if if_snaplen[0]:
                caplen = min(caplen, if_snaplen[0])
            offsets[n] = body + 4
            caplens[n] = caplen
            wirelens[n] = wirelen
            linktypes[n] = if_linktype[0]
            ts[n] = last_ts
            n += 1
        elif btype == _IDB:
            return n, pos, _NG_IDB, last_ts
        pos += length
    return n, pos, _WALK_MORE, last_ts


class _Source(Protocol):
    """A window of bytes starting at a record boundary; `advance` drops what was consumed."""

    def window(self, size: int) -> tuple[np.ndarray, bool]: ...  # (bytes, reaches end of input)

    def advance(self, used: int) -> None: ...

    def close(self) -> None: ...


class _MmapSource:
    """A file read through a memory map. A page of a map is read from disk when it is first
    touched, synchronously and with little read-ahead, so a file that is not in the page
    cache would be read at the pace of its consumer's page faults: each window asks the
    kernel to read the window after it in the background (MADV_WILLNEED), as a sequential
    read() would (benchmarks/bench_cold.py)."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.arr = np.frombuffer(self.mm, dtype=np.uint8) if self.mm is not None else np.zeros(0, np.uint8)
        self.pos = 0
        self.released = 0  # pages below this were handed back to the kernel
        self.asked = 0  # bytes below this were asked for in advance

    def window(self, size: int) -> tuple[np.ndarray, bool]:
        end = min(self.pos + size, len(self.arr))
        self._read_ahead(min(end + size, len(self.arr)))
        return self.arr[self.pos : end], end == len(self.arr)

    def _read_ahead(self, upto: int) -> None:
        """Ask the kernel to read the file up to `upto` (this window and the next)."""
        start = (max(self.asked, self.pos) // _PAGE) * _PAGE  # madvise takes whole pages
        if self.mm is not None and upto > start and hasattr(mmap, "MADV_WILLNEED"):
            try:
                self.mm.madvise(mmap.MADV_WILLNEED, start, upto - start)
            except OSError:  # advice only: without it the pages are read as they are touched
                pass
            self.asked = upto

    def advance(self, used: int) -> None:
        self.pos += used
        upto = (self.pos // _PAGE) * _PAGE
        if self.mm is not None and upto > self.released and hasattr(mmap, "MADV_DONTNEED"):
            # File-backed pages: a later read of an old chunk simply faults them back in.
            self.mm.madvise(mmap.MADV_DONTNEED, self.released, upto - self.released)
            self.released = upto

    def close(self) -> None:
        self.arr = np.zeros(0, np.uint8)
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:  # a consumer still holds a chunk view: the GC closes it later
                pass


class _StreamSource:
    """gzip, standard input, a pipe: each window is a new array (carried tail + fresh
    bytes), so a consumer may keep an earlier chunk's buffer.

    Bytes come from pcapexfil.source.inputs as the reference source's do: every byte
    decompressed before a damaged or cut gzip stream is handed out, and the damage is
    raised when nothing more comes, so both engines keep the same records."""

    def __init__(self, f: BinaryIO, raw: BinaryIO) -> None:
        self.f = f
        self.raw = raw
        self.buf = np.zeros(0, np.uint8)
        self.eof = False
        self.error: str | None = None  # damaged stream, reported by the caller at its last_ts

    def window(self, size: int) -> tuple[np.ndarray, bool]:
        have = len(self.buf)
        if have >= size or self.eof:
            return self.buf, self.eof
        new = np.empty(size, np.uint8)
        new[:have] = self.buf
        view = new.data
        while have < size:
            try:
                got = self.f.readinto1(view[have : have + _STREAM_PIECE])  # type: ignore[attr-defined]
            except STREAM_ERRORS as exc:  # stream cut short or corrupt
                self.error = str(exc)
                got = 0
            if not got:
                self.eof = True
                break
            have += got
        # Read-only, as a mapped file's windows are: numba compiles a kernel per argument
        # type, and a writable buffer would make the first gzip or pipe input compile the
        # walk, the parser and the flow table again (about 19 s).
        new.flags.writeable = False
        self.buf = new[:have]
        return self.buf, self.eof

    def advance(self, used: int) -> None:
        self.buf = self.buf[used:]

    def close(self) -> None:
        self.f.close()
        self.raw.close()


def _file_stats(stats: CaptureStats | None, name: str) -> FileStats | None:
    return None if stats is None else stats.files.setdefault(name, FileStats())


def _count(stats: CaptureStats | None, fstats: FileStats | None, chunk: Chunk) -> None:
    if stats is None or fstats is None:
        return
    n, b = len(chunk.offsets), int(chunk.caplens.sum())
    fstats.packets += n
    fstats.bytes += b
    stats.packets += n
    stats.bytes += b


@dataclass
class _FileState:
    """Where the walk of one file stands (carried into the merge when files overlap)."""

    name: str
    pcapng: bool = False
    order: str = "<"  # byte order (pcapng: of the current section)
    divisor: float = 1e6  # pcap timestamp units per second
    linktype: int = 0  # pcap link type
    index: int = 0  # records read so far (frame numbers continue from here)
    last_ts: float = 0.0
    # pcapng interfaces of the current section
    if_linktype: list[int] = field(default_factory=list)
    if_divisor: list[float] = field(default_factory=list)
    if_offset: list[float] = field(default_factory=list)
    if_snaplen: list[int] = field(default_factory=list)

    def interfaces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        return (np.array(self.if_linktype + [0], np.int32), np.array(self.if_divisor + [1.0], np.float64),
                np.array(self.if_offset + [0.0], np.float64), np.array(self.if_snaplen + [0], np.int64),
                len(self.if_linktype))


def _records(buf: np.ndarray, minimum: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cap = len(buf) // minimum + 1
    return np.empty(cap, np.int64), np.empty(cap, np.uint32), np.empty(cap, np.uint32), np.empty(cap, np.float64)


def _end_of_input(src: _Source, st: _FileState, weirds: Weirds, left: int, header: int, cut: str) -> None:
    """The input ended `left` bytes into a record/block: report it as the reference does."""
    err = getattr(src, "error", None)
    if err is not None:
        weirds.report("truncated_capture_file", st.last_ts, f"{st.name}: {err}")
    elif 0 < left < header:
        partial = f"partial record header after frame {st.index}" if header == 16 else "partial block header"
        weirds.report("truncated_capture_file", st.last_ts, f"{st.name}: {partial}")
    elif left:
        weirds.report("truncated_capture_file", st.last_ts, f"{st.name}: {cut}")


def _pcap_chunks(
    src: _Source, st: _FileState, weirds: Weirds, stats: CaptureStats | None, chunk_bytes: int, stop_ts: float
) -> FileChunks:
    """Chunks of a classic pcap body. Returns (as the generator's value) an iterator of the
    remaining RawPackets when a record reaches `stop_ts`, else None."""
    fstats = _file_stats(stats, st.name)
    swap = st.order == ">"
    size = chunk_bytes
    handed_off = False
    try:
        while True:
            buf, at_end = src.window(size)
            offsets, caplens, wirelens, ts = _records(buf, 16)
            n, used, status = _walk_pcap(buf, swap, st.divisor, MAX_RECORD, stop_ts, offsets, caplens, wirelens, ts)
            if n:
                chunk = Chunk(
                    buf[:used], offsets[:n], caplens[:n], wirelens[:n], np.full(n, st.linktype, np.int32), ts[:n],
                    np.arange(st.index + 1, st.index + n + 1, dtype=np.uint64), st.name,
                )
                st.index += n
                st.last_ts = float(ts[n - 1])
                _count(stats, fstats, chunk)
                yield chunk
                src.advance(used)
                size = chunk_bytes
                continue  # whatever stopped the walk is met again at the start of the next window
            if status == _WALK_CORRUPT:
                claimed = struct.unpack_from(st.order + "I", bytes(buf[8:12]))[0]
                weirds.report(
                    "corrupt_capture_file", st.last_ts, f"{st.name}: record {st.index + 1} claims {claimed} bytes"
                )
                return None
            if status == _WALK_OVERLAP:
                handed_off = True
                return _rest_as_raw(src, st, weirds, stats, chunk_bytes)
            if not at_end:
                size *= 2  # a record larger than the window
                continue
            _end_of_input(src, st, weirds, len(buf), 16, f"record {st.index + 1} cut short")
            return None
    finally:
        if not handed_off:
            src.close()


def _pcapng_chunks(
    src: _Source, st: _FileState, weirds: Weirds, stats: CaptureStats | None, chunk_bytes: int, stop_ts: float
) -> FileChunks:
    """Chunks of a pcapng stream (from its first section header), with the reference
    reader's semantics (`source.pcapng`); the numba walk stops at every block it does not
    handle itself (section and interface headers, damage), which is handled here."""
    fstats = _file_stats(stats, st.name)
    size = chunk_bytes
    handed_off = False
    ifs = st.interfaces()
    name = st.name

    def corrupt(what: str) -> None:
        weirds.report("corrupt_capture_file", st.last_ts, f"{name}: {what}")

    try:
        while True:
            buf, at_end = src.window(size)
            offsets, caplens, wirelens, ts = _records(buf, 16)
            linktypes = np.empty(len(offsets), np.int32)
            n, used, status, last_ts = _walk_pcapng(
                buf, st.order == ">", *ifs, st.last_ts, stop_ts, MAX_BLOCK, offsets, caplens, wirelens, linktypes, ts
            )
            if n:
                chunk = Chunk(
                    buf[:used], offsets[:n], caplens[:n], wirelens[:n], linktypes[:n], ts[:n],
                    np.arange(st.index + 1, st.index + n + 1, dtype=np.uint64), name,
                )
                st.index += n
                st.last_ts = float(last_ts)
                _count(stats, fstats, chunk)
                yield chunk
            if used:  # records or skipped blocks consumed: meet the stop again at offset 0
                src.advance(used)
                size = chunk_bytes
                continue
            if status == _WALK_MORE:
                if not at_end:
                    size *= 2
                    continue
                _end_of_input(src, st, weirds, len(buf), 8, f"block cut short after frame {st.index}")
                return None
            if status == _WALK_OVERLAP:
                handed_off = True
                return _rest_as_raw(src, st, weirds, stats, chunk_bytes)
            if status == _NG_SHB:
                need = 12
                if len(buf) >= 12:
                    if struct.unpack_from("<I", buf.data, 8)[0] == BYTE_ORDER_MAGIC:
                        order = "<"
                    elif struct.unpack_from(">I", buf.data, 8)[0] == BYTE_ORDER_MAGIC:
                        order = ">"
                    else:
                        corrupt("bad pcapng byte-order magic")
                        return None
                    need = struct.unpack_from(order + "I", buf.data, 4)[0]
                    if need < 28 or need % 4 or need > MAX_BLOCK:
                        corrupt(f"bad pcapng section header length {need}")
                        return None
                if len(buf) < need:
                    if at_end:
                        corrupt("truncated pcapng section header")
                        return None
                    size = max(size * 2, need)
                    continue
                st.order = order
                st.if_linktype, st.if_divisor, st.if_offset, st.if_snaplen = [], [], [], []
                ifs = st.interfaces()
                src.advance(need)
                continue
            length = struct.unpack_from(st.order + "I", buf.data, 4)[0]
            if status == _NG_IDB:
                body = bytes(buf[8 : length - 4])
                if len(body) < 8:
                    corrupt("short interface block")
                    return None
                iface = parse_interface_block(body, st.order)
                st.if_linktype.append(iface.linktype)
                st.if_divisor.append(iface.divisor)
                st.if_offset.append(float(iface.offset))
                st.if_snaplen.append(iface.snaplen)
                ifs = st.interfaces()
                src.advance(length)
                continue
            if status == _NG_UNDECLARED:
                kind = struct.unpack_from(st.order + "I", buf.data)[0]
                ifid = struct.unpack_from(st.order + ("I" if kind == _EPB else "H"), buf.data, 8)[0]
                corrupt(f"packet on undeclared interface {ifid}")
                st.index += 1
                src.advance(length)
                continue
            corrupt({
                _NG_BAD_LENGTH: f"bad block length {length}",
                _NG_SHORT_PACKET: "short packet block",
                _NG_PACKET_TOO_LONG: "packet longer than its block",
                _NG_SPB_NO_IF: "simple packet without interface",
            }[status])
            return None
    finally:
        if not handed_off:
            src.close()


def _rest_as_raw(
    src: _Source, st: _FileState, weirds: Weirds, stats: CaptureStats | None, chunk_bytes: int
) -> Iterator[RawPacket]:
    """The rest of a file as RawPackets (for the record-by-record merge)."""
    walk = _pcapng_chunks if st.pcapng else _pcap_chunks
    for chunk in walk(src, st, weirds, stats, chunk_bytes, float("inf")):
        for i in range(len(chunk.offsets)):
            yield chunk.raw(i)


def _raw_chunks(packets: Iterator[RawPacket], chunk_bytes: int) -> Iterator[Chunk]:
    """Pack RawPackets (the merge of overlapping files) into chunk buffers: the slower path."""
    pending: list[RawPacket] = []
    size = 0
    for pkt in packets:
        pending.append(pkt)
        size += len(pkt.data)
        if size >= chunk_bytes or len(pending) >= _RECORDS_PER_SLOW_CHUNK:
            yield _pack(pending)
            pending, size = [], 0
    if pending:
        yield _pack(pending)


def _pack(raws: list[RawPacket]) -> Chunk:
    n = len(raws)
    caplens = np.fromiter((len(p.data) for p in raws), np.uint32, n)
    offsets = np.zeros(n, np.int64)
    if n > 1:
        np.cumsum(caplens[:-1], out=offsets[1:])
    buf = np.frombuffer(b"".join(p.data for p in raws), np.uint8)
    return Chunk(
        buf, offsets, caplens,
        np.fromiter((p.wirelen for p in raws), np.uint32, n),
        np.fromiter((p.linktype for p in raws), np.int32, n),
        np.fromiter((p.ts for p in raws), np.float64, n),
        np.fromiter((p.index for p in raws), np.uint64, n),
        raws[0].source, raws,
    )


def _file_chunks(
    path: str, weirds: Weirds, stats: CaptureStats | None, chunk_bytes: int, stop_ts: float
) -> FileChunks:
    """Chunks of one (validated) file; returns the remaining RawPackets if it reaches `stop_ts`."""
    raw = io.BufferedReader(open_input(path), _STREAM_BUFFER)
    src: _Source
    if raw.peek(2)[:2] == GZIP_MAGIC:
        src = _StreamSource(GzipStream(raw), raw)  # type: ignore[arg-type]
    elif is_stream(path):  # standard input, a pipe: read once, in order
        src = _StreamSource(raw, raw)
    else:
        try:
            src = _MmapSource(path)
            raw.close()
        except (OSError, ValueError):  # not mappable (some file systems): stream it instead
            src = _StreamSource(raw, raw)
    head, _ = src.window(24)
    word = struct.unpack_from("<I", head.data)[0]
    st = _FileState(path, pcapng=word not in MAGICS)
    if not st.pcapng:
        st.order, st.divisor = MAGICS[word]
        st.linktype = struct.unpack_from(st.order + "I", head.data, 20)[0] & 0xFFFF
        src.advance(24)
        return (yield from _pcap_chunks(src, st, weirds, stats, chunk_bytes, stop_ts))
    return (yield from _pcapng_chunks(src, st, weirds, stats, chunk_bytes, stop_ts))


def _merge_rest(
    current: Iterator[RawPacket], order: int, pending: list[tuple[float, int, str]], weirds: Weirds,
    stats: CaptureStats | None,
) -> Iterator[RawPacket]:
    """The reference merge (source._merge) resumed with one file already active."""
    pending = list(reversed(pending))
    heap: list[tuple[float, int, int, RawPacket, Iterator[RawPacket]]] = []
    seq = 0
    first = next(current, None)
    if first is not None:
        heap.append((first.ts, order, seq, first, current))
        seq += 1
    while heap or pending:
        while pending and (not heap or pending[-1][0] <= heap[0][0]):
            _, o, path = pending.pop()
            it = open_capture(path, weirds, stats)
            pkt = next(it, None)
            if pkt is not None:
                heapq.heappush(heap, (pkt.ts, o, seq, pkt, it))
                seq += 1
        if not heap:
            continue
        _, o, _, pkt, packets = heapq.heappop(heap)
        yield pkt
        nxt = next(packets, None)
        if nxt is not None:
            heapq.heappush(heap, (nxt.ts, o, seq, nxt, packets))
            seq += 1


def iter_chunks(
    paths: Sequence[str], weirds: Weirds, stats: CaptureStats | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[Chunk]:
    """Record chunks of all files as one stream, in the order `source.open_captures` yields.

    Every path is validated (and its first timestamp probed) before this returns, so a bad
    path raises `CaptureError` before any chunk.
    """
    paths = list(paths)
    if stats is not None:
        stats.input_bytes = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
    firsts: list[tuple[float, int, str]] = []
    for order, path in enumerate(paths):
        probe = open_capture(path, Weirds())  # header errors raise here
        try:
            first = next(probe, None)
        finally:
            probe.close()
        firsts.append((first.ts if first is not None else float("inf"), order, path))
    firsts.sort()
    return _chunks(firsts, weirds, stats, chunk_bytes)


def _chunks(
    firsts: list[tuple[float, int, str]], weirds: Weirds, stats: CaptureStats | None, chunk_bytes: int
) -> Iterator[Chunk]:
    for k, (_, order, path) in enumerate(firsts):
        stop_ts = firsts[k + 1][0] if k + 1 < len(firsts) else float("inf")
        rest = yield from _file_chunks(path, weirds, stats, chunk_bytes, stop_ts)
        if rest is not None:
            yield from _raw_chunks(_merge_rest(rest, order, firsts[k + 1 :], weirds, stats), chunk_bytes)
            return


def iter_batches(
    paths: Sequence[str],
    weirds: Weirds,
    stats: CaptureStats | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    verify_checksums: bool = False,
    capture_filter: CaptureFilter | None = None,
) -> Iterator[Batch]:
    """The capture(s) as parsed batches, in capture order (the reference stream order).

    Each `Batch` covers consecutive records: `packets` has one row per record (FAST: parsed
    by the kernel; SLOW: hand `slow[i]` to the reference `Decoder` at that position; SKIP:
    nothing to do). Capture damage is reported to `weirds` as the reference source does;
    `stats` is updated per chunk. A bad path raises `CaptureError` before the first batch.
    With `verify_checksums` (Zeek without -C) frames with a bad checksum are SLOW, so the
    reference decoder reports them; FAST rows then passed (or could not be checked).
    Records `capture_filter` rejects are left out of the batches (Zeek's -f).
    """
    chunks = iter_chunks(paths, weirds, stats, chunk_bytes)
    if capture_filter is not None:
        chunks = (_filtered(chunk, capture_filter) for chunk in chunks)
    return _batches(chunks, verify_checksums)


def _filtered(chunk: Chunk, flt: CaptureFilter) -> Chunk:
    """The chunk's records that `flt` accepts (frame numbers kept)."""
    keep = np.fromiter((flt.accepts(int(chunk.linktypes[i]), chunk.raw(i).data, chunk.source)
                        for i in range(len(chunk.offsets))), bool, len(chunk.offsets))
    raws = None if chunk.raws is None else [r for r, k in zip(chunk.raws, keep, strict=True) if k]
    return Chunk(chunk.buf, chunk.offsets[keep], chunk.caplens[keep], chunk.wirelens[keep], chunk.linktypes[keep],
                 chunk.ts[keep], chunk.frames[keep], chunk.source, raws)


def parse_frames(raws: list[RawPacket], verify_checksums: bool = False) -> Batch:
    """Frames that came from elsewhere as one parsed Batch."""
    return parse_chunk(_pack(raws), verify_checksums)


def parse_chunk(chunk: Chunk, verify_checksums: bool = False) -> Batch:
    """A chunk that came from elsewhere (a live capture ring block) as one parsed Batch."""
    return next(_batches(iter([chunk]), verify_checksums))


def _batches(chunks: Iterator[Chunk], verify_checksums: bool) -> Iterator[Batch]:
    for chunk in chunks:
        packets = parse_records(
            chunk.buf, chunk.offsets, chunk.caplens, chunk.wirelens, chunk.linktypes, chunk.ts, chunk.frames,
            verify_checksums,
        )
        slow = [chunk.raw(int(i)) for i in np.flatnonzero(packets["kind"] == KIND_SLOW)]
        yield Batch(chunk.buf, packets, slow)
