"""Capture sources: pcap / pcapng files, optionally gzip-compressed, merged in time order.

`open_captures` validates every file before yielding anything, so a path that is not a
capture fails with a one-line `CaptureError` and no partial output. Damage inside a file
(a truncated tail, a corrupt record) is a counted weird: what came before is kept.

Unknown link types: a pcap file whose header names a link type the decoder cannot read is
a `CaptureError` (nothing in it could be decoded); in pcapng, where each interface has its
own link type, packets on such an interface are yielded and the decoder counts them as
`unknown_link_type` weirds.
"""

from __future__ import annotations

import heapq
import io
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from pcapexfil.decode.link import SUPPORTED_LINKTYPES
from pcapexfil.packet import RawPacket
from pcapexfil.source.pcap import MAGICS, STREAM_ERRORS, CaptureError, PcapReader
from pcapexfil.source.inputs import GZIP_MAGIC, STDIN, GzipStream, open_input
from pcapexfil.source.pcapng import SHB, PcapngReader
from pcapexfil.weird import Weirds

__all__ = ["CaptureError", "CaptureStats", "open_capture", "open_captures"]

_BUFSIZE = 1 << 20


@dataclass
class FileStats:
    packets: int = 0
    bytes: int = 0  # captured bytes


@dataclass
class CaptureStats:
    """Running totals, e.g. for a progress bar (`input_bytes` is the on-disk size)."""

    packets: int = 0
    bytes: int = 0
    input_bytes: int = 0
    files: dict[str, FileStats] = field(default_factory=dict)


Reader = PcapReader | PcapngReader


# A stream of frames; a generator, so that a reader stopped early can be closed.
Packets = Generator[RawPacket, None, None]


def _open_file(path: str) -> Reader:
    """Open one capture and read its file header; CaptureError if it is not a capture."""
    if path != STDIN and not os.path.exists(path):
        raise CaptureError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CaptureError(f"{path}: is a directory")
    try:
        raw = io.BufferedReader(open_input(path), _BUFSIZE)
    except OSError as exc:
        raise CaptureError(f"{path}: {exc.strerror or exc}") from None
    f: BinaryIO = raw
    try:
        if raw.peek(2)[:2] == GZIP_MAGIC:
            f = GzipStream(raw)  # type: ignore[assignment]
        try:
            magic = f.read(4)
        except STREAM_ERRORS as exc:
            raise CaptureError(f"{path}: damaged gzip stream ({exc})") from None
        if len(magic) < 4:
            raise CaptureError(f"{path}: empty or too short to be a capture")
        word = int.from_bytes(magic, "little")
        if word in MAGICS:
            reader: Reader = PcapReader(f, magic, path)
            if reader.linktype not in SUPPORTED_LINKTYPES:
                raise CaptureError(f"{path}: unsupported link type {reader.linktype}")
            return reader
        if word == SHB:
            return PcapngReader(f, magic, path)
        raise CaptureError(f"{path}: not a pcap or pcapng file")
    except CaptureError:
        f.close()
        raise
    except STREAM_ERRORS as exc:
        f.close()
        raise CaptureError(f"{path}: {exc}") from None


def _packets(reader: Reader, weirds: Weirds, stats: CaptureStats | None) -> Packets:
    try:
        if stats is None:
            yield from reader.packets(weirds)
            return
        fstats = stats.files.setdefault(reader.name, FileStats())
        for pkt in reader.packets(weirds):
            n = len(pkt.data)
            fstats.packets += 1
            fstats.bytes += n
            stats.packets += 1
            stats.bytes += n
            yield pkt
    finally:
        reader.f.close()


def open_capture(path: str, weirds: Weirds, stats: CaptureStats | None = None) -> Packets:
    """One file: validated now (CaptureError), packets streamed lazily."""
    return _packets(_open_file(path), weirds, stats)


def open_captures(
    paths: Sequence[str], weirds: Weirds, stats: CaptureStats | None = None
) -> Packets:
    """All files as one stream in timestamp order (a rotated capture).

    Every file is opened and its header checked before this returns, so a bad path raises
    `CaptureError` before any packet is produced. Files are read concurrently only while
    their time ranges overlap: a file is (re)opened when the merge reaches its first
    timestamp, so a long rotation set never holds more than a few files open.
    """
    if stats is not None:
        stats.input_bytes = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
    firsts: list[tuple[float, int, str]] = []
    for order, path in enumerate(paths):
        probe = _packets(_open_file(path), Weirds(), None)  # header errors raise here
        try:
            first = next(probe, None)
        finally:
            probe.close()
        firsts.append((first.ts if first is not None else float("inf"), order, path))
    if len(paths) == 1:
        return open_capture(paths[0], weirds, stats)
    firsts.sort()
    return _merge(firsts, weirds, stats)


def _merge(firsts: list[tuple[float, int, str]], weirds: Weirds, stats: CaptureStats | None) -> Packets:
    pending = list(reversed(firsts))  # pop() gives the earliest-starting file
    heap: list[tuple[float, int, int, RawPacket, Packets]] = []
    seq = 0  # tie-breaker keeps file order and within-file order stable

    def activate() -> None:
        nonlocal seq
        _, order, path = pending.pop()
        it = open_capture(path, weirds, stats)
        pkt = next(it, None)
        if pkt is not None:
            heapq.heappush(heap, (pkt.ts, order, seq, pkt, it))
            seq += 1

    try:
        while heap or pending:
            while pending and (not heap or pending[-1][0] <= heap[0][0]):
                activate()
            if not heap:
                continue
            _, order, _, pkt, it = heapq.heappop(heap)
            yield pkt
            nxt = next(it, None)
            if nxt is not None:
                heapq.heappush(heap, (nxt.ts, order, seq, nxt, it))
                seq += 1
    finally:
        for entry in heap:
            entry[4].close()  # type: ignore[attr-defined]
