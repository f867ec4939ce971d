"""IPv4 and IPv6 fragment reassembly with bounded memory.

Fragments are keyed like Zeek's (source, destination, identification). A datagram is
returned, rebuilt as one unfragmented IP packet, when its pieces cover it from offset 0 to
the last fragment's end. Buffers are limited in count and size and expire after
`timeout` seconds of network time; overlaps are reported (with differing content as
`fragment_inconsistency`) and resolved in favour of the data seen first, as Zeek does.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable

MAX_DATAGRAM = 65535
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_PENDING = 10000
# Per datagram: pieces kept and bytes held (duplicates included). A 64 KiB datagram over a
# 576-byte MTU is ~120 fragments; thousands of tiny or repeated fragments are an attack on
# the reassembler (quadratic overlap/coverage checks, memory until the timeout).
MAX_FRAGMENTS = 256
MAX_HELD = 2 * MAX_DATAGRAM

WeirdFn = Callable[[str, str | None], None]


class _Pending:
    __slots__ = ("header", "pieces", "total", "size", "last_ts")

    def __init__(self, ts: float) -> None:
        self.last_ts = ts
        self.header: bytes | None = None  # unfragmentable part, from the offset-0 fragment
        self.pieces: list[tuple[int, bytes]] = []
        self.total: int | None = None  # payload length once the last fragment was seen
        self.size = 0


class Reassembler:
    """Collects fragments; `add` returns the whole datagram once it is complete."""

    def __init__(
        self, timeout: float = DEFAULT_TIMEOUT, max_pending: int = DEFAULT_MAX_PENDING
    ) -> None:
        self.timeout = timeout
        self.max_pending = max_pending
        self.pending: OrderedDict[tuple, _Pending] = OrderedDict()

    def expire(self, now: float, weird: WeirdFn) -> None:
        """Drop datagrams idle longer than the timeout, and the oldest beyond the cap."""
        while self.pending:
            key, p = next(iter(self.pending.items()))
            stale = now - p.last_ts > self.timeout
            if not stale and len(self.pending) <= self.max_pending:
                break
            del self.pending[key]
            if not stale:
                weird("fragment_buffer_full", None)

    def add(
        self,
        key: tuple,
        ts: float,
        offset: int,
        more: bool,
        payload: bytes,
        header: bytes,
        weird: WeirdFn,
    ) -> tuple[bytes, bytes] | None:
        """Add one fragment (offset in bytes); return (first header, payload) when complete.

        `header` is this fragment's unfragmentable part; the one of the offset-0 fragment is
        kept for the rebuilt datagram.
        """
        end = offset + len(payload)
        if end + len(header) > MAX_DATAGRAM:
            weird("excessively_large_fragment", None)
            self.pending.pop(key, None)
            return None
        p = self.pending.get(key)
        if p is None:
            p = self.pending[key] = _Pending(ts)
            self.expire(ts, weird)
        else:
            self.pending.move_to_end(key)
        p.last_ts = ts
        if more and len(payload) % 8:
            weird("fragment_size_inconsistency", None)
        if not more:
            if p.total is not None and p.total != end:
                weird("fragment_inconsistency", None)
            p.total = end
        if offset == 0 and p.header is None:
            p.header = header
        if len(p.pieces) >= MAX_FRAGMENTS or p.size + len(payload) > MAX_HELD:
            weird("fragment_limit_exceeded", f"more than {MAX_FRAGMENTS} fragments or {MAX_HELD} bytes")
            del self.pending[key]
            return None
        # Overlap check against what we already hold: keep the older bytes.
        for o, d in p.pieces:
            lo, hi = max(o, offset), min(o + len(d), end)
            if lo < hi:
                if d[lo - o : hi - o] != payload[lo - offset : hi - offset]:
                    weird("fragment_inconsistency", None)
                else:
                    weird("fragment_overlap", None)
                break
        p.pieces.append((offset, payload))
        p.size += len(payload)
        if p.total is None or p.header is None or p.size < p.total:
            return None
        # Complete when the pieces cover [0, total) without holes.
        covered = 0
        for lo, hi in sorted((o, o + len(d)) for o, d in p.pieces):
            if lo > covered:
                return None
            covered = max(covered, hi)
        if covered < p.total:
            return None
        buf = bytearray(p.total)
        # Write later pieces first so the earliest-seen bytes win on overlap.
        for o, d in reversed(p.pieces):
            if o < p.total:
                buf[o : min(o + len(d), p.total)] = d[: p.total - o]
        del self.pending[key]
        return p.header, bytes(buf)


def rebuild_ipv4(header: bytes, payload: bytes) -> bytes:
    """An unfragmented IPv4 datagram: first fragment's header, flags/offset cleared."""
    h = bytearray(header)
    struct.pack_into("!H", h, 2, len(h) + len(payload))
    struct.pack_into("!H", h, 6, 0)
    struct.pack_into("!H", h, 10, 0)
    return bytes(h) + payload


def rebuild_ipv6(unfrag: bytes, next_off: int, next_header: int, payload: bytes) -> bytes:
    """An unfragmented IPv6 datagram: the unfragmentable part with the fragment header
    removed (its next-header written into the header that pointed at it)."""
    h = bytearray(unfrag)
    h[next_off] = next_header
    struct.pack_into("!H", h, 4, len(h) - 40 + len(payload))
    return bytes(h) + payload
