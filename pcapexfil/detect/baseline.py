"""The baseline: per (orig_h, resp_p/proto), per day, the elements of closed windows.

Changes are recorded as a delta (added elements, pruned days, dropped keys) so the state
store can commit exactly what changed since the last commit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

BaselineKey = tuple[str, int, str]  # (orig_h, resp_p, proto)


@dataclass(slots=True)
class Element:
    day: str  # YYYY-MM-DD of the window's closing time
    ts: float  # closing time
    identifier: str
    orig_ip_bytes: int
    resp_ip_bytes: int
    duration: float


class UtcDays:
    """UTC calendar day of a time, remembering the last day's bounds: windows close in time
    order, so nearly every call falls in the day before it and skips strftime. The bounds
    come from gmtime's own fields (it floors `ts` to a second), so the answer is gmtime's."""

    def __init__(self) -> None:
        # [start, end) and that day: one attribute, replaced whole, so a thread sharing the
        # object never reads the bounds of one day with the name of another.
        self.last: tuple[float, float, str] = (math.inf, -math.inf, "")

    def __call__(self, ts: float) -> str:
        start, end, day = self.last
        if start <= ts < end:
            return day
        tm = time.gmtime(ts)
        day = time.strftime("%Y-%m-%d", tm)
        start = math.floor(ts) - (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec)
        self.last = (start, start + 86400, day)
        return day


utc_day = UtcDays()


def day_of(ts: float, tz: ZoneInfo | None) -> str:
    """Calendar day of network time `ts`: UTC, or the given zone."""
    if tz is None:
        return utc_day(ts)
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d")


@dataclass(slots=True)
class BaselineDelta:
    added: list[tuple[BaselineKey, Element]] = field(default_factory=list)
    pruned: list[tuple[BaselineKey, str]] = field(default_factory=list)
    dropped: list[BaselineKey] = field(default_factory=list)


class Baseline:
    def __init__(self) -> None:
        self.days: dict[BaselineKey, dict[str, list[Element]]] = {}
        # The same days' orig_ip_bytes and duration, element for element, kept as the elements
        # join and go: `csr` copies these lists in C instead of reading each element's fields
        # (that read was a third of the detector's time on ticks).
        self.columns: dict[BaselineKey, dict[str, tuple[list[int], list[float]]]] = {}
        self.last_write: dict[BaselineKey, float] = {}
        self.by_host: dict[str, set[BaselineKey]] = {}
        self.dirty: set[BaselineKey] = set()  # changed since the last parameter recomputation
        self.delta = BaselineDelta()

    def __contains__(self, key: BaselineKey) -> bool:
        return key in self.days

    def day_count(self, key: BaselineKey) -> int:
        return len(self.days.get(key, ()))

    def host_days(self, orig_h: str) -> int:
        """Distinct days over all of a host's baselines (the reference's New_Protocol test)."""
        days: set[str] = set()
        for key in self.by_host.get(orig_h, ()):
            days.update(self.days[key])
        return len(days)

    def add(self, key: BaselineKey, elem: Element, record: bool = True) -> None:
        self.days.setdefault(key, {}).setdefault(elem.day, []).append(elem)
        day_bytes, day_durations = self.columns.setdefault(key, {}).setdefault(elem.day, ([], []))
        day_bytes.append(elem.orig_ip_bytes)
        day_durations.append(elem.duration)
        self.by_host.setdefault(key[0], set()).add(key)
        self.last_write[key] = max(self.last_write.get(key, elem.ts), elem.ts)
        self.dirty.add(key)
        if record:
            self.delta.added.append((key, elem))

    def prune(self, now: float, baseline_days: int, hold_time: float) -> None:
        """Drop baselines not written for `hold_time`, then the oldest days beyond `baseline_days`."""
        for key, last in list(self.last_write.items()):
            if last + hold_time <= now:
                self.drop(key)
        for key, days in self.days.items():
            if len(days) > baseline_days:
                columns = self.columns[key]
                for day in sorted(days)[: len(days) - baseline_days]:
                    del days[day]
                    del columns[day]
                    self.delta.pruned.append((key, day))
                self.dirty.add(key)

    def drop(self, key: BaselineKey) -> None:
        del self.days[key]
        del self.columns[key]
        del self.last_write[key]
        host = self.by_host[key[0]]
        host.discard(key)
        if not host:
            del self.by_host[key[0]]
        self.dirty.add(key)
        self.delta.dropped.append(key)

    def take_delta(self) -> BaselineDelta:
        delta, self.delta = self.delta, BaselineDelta()
        return delta

    def csr(self, keys: list[BaselineKey]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """orig_ip_bytes and duration of every element of `keys`, CSR layout (values, offsets)."""
        counts = [sum(len(v) for v in self.days.get(k, {}).values()) for k in keys]
        offsets = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        all_bytes: list[int] = []
        all_durations: list[float] = []
        for k in keys:
            for day_bytes, day_durations in self.columns.get(k, {}).values():
                all_bytes += day_bytes
                all_durations += day_durations
        return np.array(all_bytes, dtype=np.float64), np.array(all_durations, dtype=np.float64), offsets
