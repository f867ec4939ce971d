"""Opening capture inputs: files, `-` (standard input), named pipes; gzip on any of them.

A stream can be read once only, yet a run looks at each input several times before reading
it (validation, the first timestamp for the merge order, then the reader). The first open of
a stream reads from its descriptor and keeps what it read; later opens replay those bytes,
then continue from the descriptor. So a pipe is opened once (a second open of a FIFO waits
for a writer that has already left) and no byte is read twice.

gzip is decompressed here rather than by `gzip.GzipFile` behind a buffered reader: a refill
that meets damage there raises and loses every byte of the refill, and the validation's first
1 MiB refill of a small truncated file lost it all (the file was refused, exit 2). Here every
byte decompressed before the damage is handed out, and the damage is raised (EOFError, one
of `STREAM_ERRORS`) only when a read asks for more than what came before it: the file ends
there like a truncated pcap. The inflating is ISA-L's (the `isal` package, zlib's API):
1.7x zlib's speed on this machine (real.pcap.gz, 584 MB: 2.3 s against 4.0 s).
"""

from __future__ import annotations

import errno
import io
import os
import stat
from typing import BinaryIO, cast

from isal import isal_zlib

STDIN = "-"
GZIP_MAGIC = b"\x1f\x8b"
# Bytes of a stream kept for replay: far more than validation reads (a header and the
# first record, at most pcap.MAX_RECORD / pcapng.MAX_BLOCK, through a 1 MiB buffer).
_REPLAY_LIMIT = 8 << 20
_PIECE = 1 << 16  # compressed bytes per decompression step
# What inflating damaged data raises (isal's stub types the class as an instance).
_INFLATE_ERROR = cast("type[Exception]", isal_zlib.error)


def is_stream(path: str) -> bool:
    """Standard input, a pipe or any other input that cannot be reopened or mapped."""
    if path == STDIN:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


class _Shared:
    """One stream's descriptor and the bytes read from it so far (while still kept)."""

    def __init__(self, f: io.RawIOBase) -> None:
        self.f = f
        self.head = bytearray()
        self.consumed = 0  # bytes read from the descriptor
        self.keeping = True


class _Replay(io.RawIOBase):
    """One open of a stream: its kept head, then the descriptor."""

    def __init__(self, shared: _Shared, name: str) -> None:
        self.shared = shared
        self.name = name
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        sh = self.shared
        if self.pos < sh.consumed:
            if not sh.keeping:
                raise OSError(errno.ESPIPE, f"{self.name}: a stream cannot be read twice")
            n = min(len(b), sh.consumed - self.pos)
            b[:n] = sh.head[self.pos : self.pos + n]
            self.pos += n
            return n
        data = sh.f.read(len(b))
        if not data:
            return 0
        n = len(data)
        b[:n] = data
        self.pos += n
        sh.consumed += n
        if sh.keeping:
            if sh.consumed <= _REPLAY_LIMIT:
                sh.head += data
            else:  # the real reading has begun: nothing goes back to the start any more
                sh.keeping = False
                sh.head = bytearray()
        return n


_streams: dict[str, _Shared] = {}


def open_input(path: str) -> io.RawIOBase:
    """The input's bytes from the start, unbuffered (OSError as open() raises it)."""
    if not is_stream(path):
        return io.FileIO(path, "rb")
    key = path if path == STDIN else os.path.realpath(path)
    shared = _streams.get(key)
    if shared is None:
        f = io.FileIO(0, "rb", closefd=False) if path == STDIN else io.FileIO(path, "rb")
        shared = _streams[key] = _Shared(f)
    return _Replay(shared, path)


class GzipStream:
    """Decompressed bytes of gzip members one after another (as gzip.open reads them)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self._z = isal_zlib.decompressobj(wbits=31)
        self._in_member = False  # bytes of the current member were fed
        self._unused = b""  # compressed bytes after a member's end
        self._buf = bytearray()
        self._pos = 0
        self._end = False
        self.damage: str | None = None

    def _more(self) -> bool:
        """Decompress until some bytes come out; False at the end of the input."""
        while not self._end:
            data = self._unused or self.raw.read(_PIECE)
            self._unused = b""
            if not data:  # the end of the input
                if self._in_member:
                    self.damage = "compressed file ended before the end-of-stream marker was reached"
                self._end = True
                break
            if not self._in_member:
                data = data.lstrip(b"\x00")  # zero padding after a member, as gzip.open skips it
                if not data:
                    continue
            try:
                out = self._z.decompress(data)
            except _INFLATE_ERROR as exc:
                self.damage = f"damaged gzip stream ({exc})"
                self._end = True
                break
            self._in_member = True
            if self._z.eof:  # another member may follow
                self._unused = self._z.unused_data
                self._z = isal_zlib.decompressobj(wbits=31)
                self._in_member = False
            if out:
                del self._buf[: self._pos]
                self._pos = 0
                self._buf += out
                return True
        return False

    def read(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n and self._more():
            pass
        if len(self._buf) - self._pos < n and self.damage is not None:
            raise EOFError(self.damage)
        out = bytes(self._buf[self._pos : self._pos + n])
        self._pos += len(out)
        return out

    def readinto1(self, view: memoryview) -> int:
        if self._pos == len(self._buf) and not self._more():
            if self.damage is not None:
                raise EOFError(self.damage)
            return 0
        n = min(len(view), len(self._buf) - self._pos)
        view[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self.raw.close()
