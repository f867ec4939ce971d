"""Aggregation windows: connections summed per (orig_h, resp_p/proto, identifier).

A window opens with its first connection and closes `aggregation_interval` later
(creation-based expiry, as Zeek's &create_expire). One connection feeds one window per
enabled identifier it has. Windows close in (close time, creation order), so the result
does not depend on how the input is split into runs.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from pcapexfil.identifiers.domain import identifier_domain
from pcapexfil.record import ConnRecord

WindowKey = tuple[str, int, str, str]  # (orig_h, resp_p, proto, identifier)
IDENTIFIERS = ("resp_h", "domain", "ja3s")


@dataclass(slots=True)
class Window:
    seq: int  # creation order, global and persistent: the tie-break for equal close times
    orig_h: str
    resp_p: int
    proto: str
    identifier: str
    created: float
    close_at: float
    orig_ip_bytes: int = 0
    resp_ip_bytes: int = 0
    duration: float = 0.0
    uids: list[str] = field(default_factory=list)

    @property
    def key(self) -> WindowKey:
        return (self.orig_h, self.resp_p, self.proto, self.identifier)


class WindowTable:
    """Open windows, with a heap of close times.

    With `track_changes`, it also keeps what changed since the last `take_changes` (windows
    added to, windows closed), so a state store rewrites only those, not every open window.
    """

    def __init__(self, interval: float, identifiers: Sequence[str], domain_mode: str = "psl",
                 track_changes: bool = False) -> None:
        unknown = set(identifiers) - set(IDENTIFIERS)
        if unknown:
            raise ValueError(f"unknown identifier(s): {', '.join(sorted(unknown))}")
        self.interval = interval
        self.identifiers = tuple(identifiers)
        self.domain_mode = domain_mode
        self.open: dict[WindowKey, Window] = {}
        self._heap: list[tuple[float, int, WindowKey]] = []
        self.next_seq = 0
        self.track_changes = track_changes
        self._changed: dict[int, Window] = {}  # by seq
        self._closed: list[int] = []  # seqs

    def identifiers_of(self, rec: ConnRecord) -> list[str]:
        out: list[str] = []
        for name in self.identifiers:
            if name == "resp_h":
                out.append(rec.resp_h)
            elif name == "domain":
                value = identifier_domain(rec, self.domain_mode)  # type: ignore[arg-type]
                if value:
                    out.append(value)
            elif name == "ja3s" and rec.ja3s:
                out.append(rec.ja3s)
        return out

    def add(self, rec: ConnRecord, now: float, seq: int | None = None) -> None:
        """Add one outgoing connection that ended at network time `now`. New windows are numbered
        from `next_seq`, or from `seq` (a partition of the keys numbers them from the record's
        global position, which keeps their order: see pcapexfil.dist.score)."""
        duration = rec.duration or 0.0
        orig_h, resp_p, proto = rec.orig_h, rec.resp_p, rec.proto
        open_windows = self.open
        for ident in self.identifiers_of(rec):
            win = open_windows.get((orig_h, resp_p, proto, ident))
            if win is None:
                if seq is None:
                    number = self.next_seq
                else:
                    number, seq = seq, seq + 1
                win = Window(number, orig_h, resp_p, proto, ident, now, now + self.interval)
                self.restore(win)
            win.orig_ip_bytes += rec.orig_ip_bytes
            win.resp_ip_bytes += rec.resp_ip_bytes
            win.duration += duration
            win.uids.append(rec.uid)
            if self.track_changes:
                self._changed[win.seq] = win

    def restore(self, win: Window) -> None:
        """Insert a window (new, or carried over from the state store)."""
        key = win.key
        self.open[key] = win
        heapq.heappush(self._heap, (win.close_at, win.seq, key))
        if win.seq >= self.next_seq:
            self.next_seq = win.seq + 1

    def next_close(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_next(self) -> Window:
        """Remove and return the window that closes first."""
        _, _, key = heapq.heappop(self._heap)
        win = self.open.pop(key)
        if self.track_changes:
            self._changed.pop(win.seq, None)
            self._closed.append(win.seq)
        return win

    def take_changes(self) -> tuple[list[Window], list[int]]:
        """Windows added to since the last call (by creation order) and seqs of windows closed
        since then; starts the next round of tracking."""
        changed = [self._changed[seq] for seq in sorted(self._changed)]
        closed = self._closed
        self._changed, self._closed = {}, []
        return changed, closed
