"""Counted, logged anomalies: damaged input is skipped and reported, never fatal.

Zeek writes such things to weird.log; pcapexfil does the same, and keeps a count per name
so a run can say at the end what it skipped and why.

weird.log is sampled as Zeek samples it (Reporter's PermitWeird with the default
Weird::sampling_threshold 25, sampling_rate 1000, sampling_duration 10 min): per
connection and name, the first 25 are written, then every 1000th, and after 10 minutes of
network time the count starts over; weirds without a connection share one such state per
name. A flood of garbage therefore cannot fill the disk with weird.log, and the counts
still hold every occurrence.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pcapexfil.logs.zeek import TS_UID_ID_FIELDS, Field, ZeekLogWriter

log = logging.getLogger("pcapexfil.weird")

WEIRD_FIELDS: list[Field] = [
    *TS_UID_ID_FIELDS,
    ("name", "string"),
    ("addl", "string"),
    ("notice", "bool"),
    ("peer", "string"),
    ("source", "string"),
]


SAMPLING_THRESHOLD = 25
SAMPLING_RATE = 1000
SAMPLING_DURATION = 600.0
# Sampling states kept for connections' weirds; beyond this the oldest half is dropped (a
# connection that shows the same weird again after that starts a fresh count).
MAX_SAMPLING_STATES = 100_000


@dataclass(slots=True)
class _Sampling:
    count: int = 0
    start: float = 0.0


def permit(state: _Sampling, now: float) -> bool:
    """Zeek's PermitWeird: whether this occurrence is written."""
    state.count += 1
    if state.count <= SAMPLING_THRESHOLD:
        return True
    if state.count == SAMPLING_THRESHOLD + 1:
        state.start = now
    elif now > state.start + SAMPLING_DURATION:
        state.start = 0.0
        state.count = 1
        return True
    return (state.count - SAMPLING_THRESHOLD) % SAMPLING_RATE == 0


class Weirds:
    """Collects anomalies: counts every one, writes Zeek's sample of them to weird.log when
    a writer is set."""

    def __init__(self, writer: ZeekLogWriter | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.writer = writer
        self.sampled_out = 0  # occurrences counted but not written
        self._conn_states: dict[tuple[str, str], _Sampling] = {}
        self._net_states: dict[str, _Sampling] = {}

    def report(
        self,
        name: str,
        ts: float | None = None,
        addl: str | None = None,
        *,
        uid: str | None = None,
        conn_id: tuple[str, int, str, int] | None = None,
        source: str | None = None,
    ) -> None:
        self.counts[name] += 1
        if self.counts[name] == 1:
            log.info("weird %s%s", name, f" ({addl})" if addl else "")
        if self.writer is None:
            return
        if not permit(self._state(name, uid), ts if ts is not None else 0.0):
            self.sampled_out += 1
            return
        row: dict[str, Any] = {
            "ts": ts if ts is not None else 0.0,
            "uid": uid,
            "name": name,
            "addl": addl or None,
            "notice": False,
            "peer": "pcapexfil",
            "source": source,
        }
        if conn_id is not None:
            row["id.orig_h"], row["id.orig_p"], row["id.resp_h"], row["id.resp_p"] = conn_id
        self.writer.write(row)

    def _state(self, name: str, uid: str | None) -> _Sampling:
        if uid is None:
            state = self._net_states.get(name)
            if state is None:
                state = self._net_states[name] = _Sampling()
            return state
        states = self._conn_states
        state = states.get((uid, name))
        if state is None:
            if len(states) >= MAX_SAMPLING_STATES:
                for key in list(states)[: MAX_SAMPLING_STATES // 2]:
                    del states[key]
            state = states[(uid, name)] = _Sampling()
        return state

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        return ", ".join(f"{name}={count}" for name, count in sorted(self.counts.items()))
