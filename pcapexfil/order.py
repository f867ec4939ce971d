"""The order a run writes its records and log rows in, defined so that workers' outputs
merge into it exactly.

A flow table emits records in the order its timers fire, which depends on every connection
in the table; a worker that holds only its share of them (`--workers N`, pcapexfil.workers)
fires the same timers at different points. What all of them agree on is the pipeline's
once-a-second ticks (every worker sees every frame's time) and what each connection does.
So between two ticks (an *epoch*) records and log rows are held, then released sorted:

- records by (start time, uid);
- each log's rows by (ts, uid, their order among that uid's rows in the epoch); rows
  without a uid (capture and decoder weirds) come from one worker only, in their order.

Every epoch's content is the same in every run (a record is emitted no earlier than in one
long run and no later than the tick after it), so sorting each epoch gives one order for
the single run, both engines, the workers' merge and the cluster (docs/cluster.md).

Memory: an epoch holds one second of network time's records. A flood that ends more than
`EPOCH_RECORDS` connections within one second has them released early, sorted as far as
they go; a worker does not (its merge needs whole epochs), so beyond that rate the order of
`--workers N` output may differ from one process's within that second.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any, Protocol

from pcapexfil.hooks import RecordSink
from pcapexfil.logs.zeek import Field
from pcapexfil.record import ConnRecord

RecordItem = tuple[tuple[float, str], ConnRecord]
TICK_INTERVAL = 1.0  # network seconds between the pipeline's ticks (an epoch at most)
EPOCH_RECORDS = 5_000  # records held at most before an early release (0: no limit)
RowItem = tuple[tuple[float, str, int], dict[str, Any]]
_sort_key = itemgetter(0)  # an item's place: its (ts, uid) or (ts, uid, k)


class LogTarget(Protocol):
    def write(self, row: Any) -> None: ...

    def close(self) -> None: ...


class OrderedLog:
    """Stands in for one log writer (an analyzer's LogOut, weird.log): rows wait for the tick,
    as they were given (not copied: a writer hands over a new dict per row)."""

    def __init__(self, name: str, target: LogTarget, fields: list[Field]) -> None:
        self.name = name
        self.target = target
        self.fields = fields
        self.enabled = getattr(target, "enabled", True)
        self.rows: list[RowItem] = []
        self._counts: dict[str, int] = {}

    def write(self, row: Any) -> None:
        uid = row.get("uid") or ""
        k = self._counts.get(uid, 0)
        self._counts[uid] = k + 1
        ts = row.get("ts")
        self.rows.append(((ts if ts is not None else 0.0, uid, k), row))

    def take(self) -> list[RowItem]:
        """The epoch's rows, sorted; the log starts a new epoch."""
        rows = self.rows
        rows.sort(key=_sort_key)
        self.rows = []
        self._counts.clear()
        return rows

    def close(self) -> None:
        pass  # the Epochs closes the target after the last release


class Epochs:
    """A RecordSink in front of the run's sinks and logs that releases each epoch sorted.

    `log` wraps a writer; `deliver` and `finish` say where a released epoch goes (here:
    the wrapped writers and sinks; a worker spools it to the merging process instead).
    """

    def __init__(self, sinks: Sequence[RecordSink], limit: int = EPOCH_RECORDS) -> None:
        self.sinks = list(sinks)
        self.limit = limit
        self.logs: list[OrderedLog] = []
        self.records: list[RecordItem] = []

    def log(self, name: str, target: LogTarget, fields: list[Field]) -> OrderedLog:
        out = OrderedLog(name, target, fields)
        self.logs.append(out)
        return out

    def on_record(self, rec: ConnRecord) -> None:
        self.records.append(((rec.ts, rec.uid), rec))
        if len(self.records) == self.limit:
            self._release(None, end=False)

    def on_time(self, now: float) -> None:
        self._release(now, end=False)

    def close(self, now: float) -> None:
        self._release(now, end=True)

    def _release(self, now: float | None, end: bool) -> None:
        records = self.records
        records.sort(key=_sort_key)
        self.records = []
        self.deliver(records, [(log, log.take()) for log in self.logs], now, end)

    def deliver(self, records: list[RecordItem], rows: list[tuple[OrderedLog, list[RowItem]]], now: float | None,
                end: bool) -> None:
        """One sorted epoch, ended by a tick at `now` (or the end of input when `end`; an
        early release when `now` is None)."""
        for log, items in rows:
            write = log.target.write
            for _, row in items:
                write(row)
        for _, rec in records:
            for sink in self.sinks:
                sink.on_record(rec)
        if now is None:
            return
        for sink in self.sinks:
            if end:
                sink.close(now)
            else:
                sink.on_time(now)
        if end:
            for log in self.logs:
                log.target.close()
