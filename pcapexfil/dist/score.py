"""Aggregation and scoring partitioned by host, then one ordered pass (the cluster's detector).

PartitionedDetector is a RecordSink that behaves as the Detector it wraps. While records
arrive (in the stream order of one long run) it only does what is global: the effective
time line (watermark, monotonic time, the recalculation grid's anchor), the HTTP upload
rule (kept as notices to raise later), the DNS tunnel rule (its closed windows kept
likewise: pcapexfil.detect.dnstunnel.rule), the outgoing filter, and the routing of outgoing
records, with their effective time and position, to a partition by hash of orig_h. At the
end each partition runs as one task (`score_partition`, on Dask workers or in-process): the
per-key stage of pcapexfil.detect.stages — windows, baselines, the numba parameter
recomputation, each hook's per-key part (raw sub-scores, the New_Protocol test, the robust
volume score) — replayed on the global time line. The results come back to the ordered
stage, sorted into the single run's close order (close time, then creation order), with
the upload notices and the recalculation grid's suppression expiry interleaved: running
normalisation, combined score, exfil_detection.log, notice.log.

Partition key: a host's (orig_h, resp_p) keys all go to the same partition, because the
reference's New_Protocol test reads every baseline of the host.

Window numbers: a partition numbers a new window from its record's global position
(next_seq + len(IDENTIFIERS) * position + rank), which orders windows as one run's counter
does; the open windows saved to the state are renumbered to that counter at the end.

State store: loaded once and split by host; committed once at the end with the net change
(see docs/cluster.md: the content equals one run's, except for row ids and the crash
granularity: a killed cluster run keeps the previous snapshot, not the last grid point's).
"""

from __future__ import annotations

import heapq
import math
import os
import pickle
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from pcapexfil.detect.baseline import BaselineDelta, BaselineKey, Element
from pcapexfil.detect.detector import Detector, Settings
from pcapexfil.detect.dnstunnel.rule import DnsClosed, report
from pcapexfil.detect.notices import http_upload_rule
from pcapexfil.detect.stages import Closed, KeyStage
from pcapexfil.detect.state import Commit
from pcapexfil.detect.windows import IDENTIFIERS, Window
from pcapexfil.identifiers.domain import identifier_name
from pcapexfil.record import ConnRecord

# A closed window as a plain tuple: ts, scorable, the hooks' values, the Window's fields.
ClosedRow = tuple[float, bool, tuple[float | None, ...], tuple[Any, ...]]
_WINDOW_FIELDS = ("seq", "orig_h", "resp_p", "proto", "identifier", "created", "close_at", "orig_ip_bytes",
                  "resp_ip_bytes", "duration", "uids")


def _slim(rec: ConnRecord) -> tuple[Any, ...]:
    """What a partition needs of a record, as a plain tuple (pickles fast): uid, orig_h, resp_h,
    resp_p, proto, duration, orig_ip_bytes, resp_ip_bytes, the identifier name (HTTP Host, else
    SNI, else DNS name) and ja3s."""
    return (rec.uid, rec.orig_h, rec.resp_h, rec.resp_p, rec.proto, rec.duration, rec.orig_ip_bytes,
            rec.resp_ip_bytes, identifier_name(rec), rec.ja3s)


def _record(slim: tuple[Any, ...]) -> ConnRecord:
    """A record with what the windows read (the name as http_host: identifier_name picks it)."""
    uid, orig_h, resp_h, resp_p, proto, duration, ob, rb, name, ja3s = slim
    return ConnRecord(0.0, uid, orig_h, 0, resp_h, resp_p, proto, duration=duration, orig_ip_bytes=ob,
                      resp_ip_bytes=rb, http_host=name, ja3s=ja3s)


def _pack(c: Closed) -> ClosedRow:
    w = c.window
    return (c.ts, c.scorable, tuple(c.values), tuple(getattr(w, f) for f in _WINDOW_FIELDS))


def _unpack(row: ClosedRow) -> Closed:
    return Closed(row[0], Window(*row[3]), row[1], list(row[2]))


@dataclass(slots=True)
class PartitionTask:
    index: int
    settings: Settings
    records: _Spool  # the routed records in stream order: (effective time, outgoing position, _slim)
    next_seq: int  # the first window number of this run (one run's counter after loading)
    first_recalc: float | None  # the grid's anchor: as loaded, or set by the run's first event
    end: float  # effective time at the end of input
    drain: bool  # no state store: windows still open at the end close there
    loaded: bool = False  # from a state store (the fields below)
    loaded_recalc: float | None = None
    recompute_all: bool = False
    baseline: list[tuple[BaselineKey, Element]] = field(default_factory=list)
    params: dict[BaselineKey, list[float]] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)


@dataclass(slots=True)
class PartitionResult:
    index: int
    closed: _Spool  # ClosedRow of each closed window, in this partition's close order
    added: list[tuple[tuple[float, int], BaselineKey, Element]]  # new elements still held, with close order
    removed: list[tuple[BaselineKey, str]]  # loaded (key, day) rows no longer held
    params: dict[BaselineKey, list[float] | None]  # changed during the run (None: deleted)
    windows: list[Window]  # still open at the end
    records: int
    cpu: float

    def closed_windows(self) -> Iterator[Closed]:
        return (_unpack(row) for row in self.closed)


def score_partition(task: PartitionTask) -> PartitionResult:
    """The per-key stage for one partition of hosts, replayed on the global time line."""
    cpu = time.thread_time()
    s = task.settings
    keys = KeyStage(s, ZoneInfo(s.tz) if s.tz else None)
    for key, elem in task.baseline:
        keys.baseline.add(key, elem, record=False)
    keys.params = {k: np.asarray(v, dtype=np.float64) for k, v in task.params.items()}
    for win in task.windows:
        keys.windows.restore(win)
    if task.loaded:
        keys.next_recalc = task.loaded_recalc
        keys.recompute_all = task.recompute_all
        keys.loaded()
    if keys.next_recalc is None:
        keys.next_recalc = task.first_recalc
    out = _Output(_Spool(task.records.directory, f"{task.records.name}-closed", task.records.chunk), not task.drain)
    width = len(IDENTIFIERS)
    count = 0
    for t, pos, slim in task.records:
        keys.advance(t, out)
        keys.add(_record(slim), t, task.next_seq + width * pos)
        count += 1
    keys.advance(task.end, out)
    added: list[tuple[tuple[float, int], BaselineKey, Element]] = []
    removed: list[tuple[BaselineKey, str]] = []
    if task.drain:
        keys.drain(task.end, out)
    else:
        # Net change of the baseline: each closed window added one element (AddToBaseline).
        if len(keys.baseline.delta.added) != len(out.orders):
            raise RuntimeError("scoring chain without AddToBaseline: cannot track the baseline's changes")
        held = {id(e) for days in keys.baseline.days.values() for elems in days.values() for e in elems}
        added = [(order, key, e) for order, (key, e) in zip(out.orders, keys.baseline.delta.added, strict=True)
                 if id(e) in held]
        gone = dict.fromkeys((key, e.day) for key, e in task.baseline if id(e) not in held)
        removed = list(gone)
    out.rows.flush()
    return PartitionResult(task.index, out.rows, added, removed, keys.params_changed,
                           sorted(keys.windows.open.values(), key=lambda w: w.seq), count,
                           time.thread_time() - cpu)


class _Spool:
    """A sequence written once and read once: in memory, or (with a directory shared by the
    client and the workers) pickled in chunks of `chunk` items to files there, so the writer
    and the reader each hold one chunk (routed records client → task; closed windows back)."""

    def __init__(self, directory: str | None, name: str, chunk: int) -> None:
        self.directory = directory
        self.name = name
        self.chunk = chunk
        self.items: list[Any] = []
        self.files: list[str] = []
        self.count = 0

    def append(self, item: Any) -> None:
        self.items.append(item)
        self.count += 1
        if self.directory is not None and len(self.items) >= self.chunk:
            self.flush()

    def __iter__(self) -> Iterator[Any]:
        for path in self.files:
            with open(path, "rb") as fh:
                chunk: list[Any] = pickle.load(fh)
            yield from chunk
        yield from self.items

    def flush(self) -> None:
        if self.directory is None or not self.items:
            return
        path = os.path.join(self.directory, f"{self.name}-{len(self.files)}.pickle")
        with open(path, "wb") as fh:
            pickle.dump(self.items, fh, protocol=pickle.HIGHEST_PROTOCOL)
        self.files.append(path)
        self.items = []


class _Output:
    """StageOutput of a partition: the closed windows (packed) in its close order, and with
    `orders` each one's position in the global close order (to order the new baseline rows)."""

    def __init__(self, rows: _Spool, orders: bool) -> None:
        self.rows = rows
        self.orders: list[tuple[float, int]] = []
        self.keep_orders = orders

    def recalc(self, when: float) -> None:
        """Grid points change nothing outside the per-key stage here (expiry is the ordered pass's)."""

    def closed(self, c: Closed) -> None:
        self.rows.append(_pack(c))
        if self.keep_orders:
            self.orders.append(c.order)


def partition_of(orig_h: str, partitions: int) -> int:
    """A stable partition number for a host (the same in every process and run)."""
    return zlib.crc32(orig_h.encode()) % partitions


Runner = Callable[[list[PartitionTask]], Sequence[PartitionResult]]


def run_in_process(tasks: list[PartitionTask]) -> list[PartitionResult]:
    return [score_partition(t) for t in tasks]


def dask_runner(client: Any) -> Runner:
    """Run each partition as one task on `client`'s workers."""

    def run(tasks: list[PartitionTask]) -> Sequence[PartitionResult]:
        futures = client.map(score_partition, client.scatter(tasks), pure=False)
        try:
            return client.gather(futures)
        finally:
            client.cancel(futures)

    return run


class _Uploads:
    """Stands in for Notices while records arrive: the HTTP upload rule's notices, kept with
    their stream position to be raised in the ordered pass."""

    def __init__(self) -> None:
        self.kept: list[tuple[float, int, str, dict[str, Any]]] = []
        self.position = 0

    def raise_notice(self, note: str, **kw: Any) -> bool:
        self.kept.append((kw["ts"], self.position, note, kw))
        return True


class PartitionedDetector:
    """RecordSink: `det`'s output (logs, notices, state) with the per-key work in partitions.

    `partitions` tasks run through `runner` (in-process by default; `dask_runner(client)` on
    a cluster). With `spool_dir` (shared with the workers) the routed records, and the tasks'
    closed windows, go through files there in chunks of `spool_chunk`, so neither side holds
    them all. `timings` after close: wall seconds of the partitioned stage (`partitions`) and
    of the ordered pass (`ordered`), each task's CPU seconds (`task_cpu`) and records
    (`task_records`), the routed records (`routed`) and closed windows (`closed`).
    """

    def __init__(self, det: Detector, partitions: int, runner: Runner | None = None,
                 spool_dir: str | None = None, spool_chunk: int = 20000) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.det = det
        self.partitions = partitions
        self.runner = runner or run_in_process
        tag = uuid.uuid4().hex[:8]
        self.routed = [_Spool(spool_dir, f"routed-{tag}-{i}", spool_chunk) for i in range(partitions)]
        self.outgoing = 0
        self.uploads = _Uploads()
        self.dns_closed: list[DnsClosed] = []  # the DNS tunnel rule's closed windows, in close order
        self.loaded_recalc = det.next_recalc
        self.timings: dict[str, Any] = {}
        self._closed = False

    def on_time(self, now: float) -> None:
        t = self.det._event_time(now)
        if t is not None:
            self.det.now = t
            self._dns_advance(t)

    def _dns_advance(self, t: float) -> None:
        """The DNS tunnel rule's windows due by `t`, kept for the ordered pass (the rule runs
        here, in stream order, as in the Detector: its state does not depend on the volume
        windows)."""
        dns = self.det.dns
        if dns is not None:
            while (close := dns.next_close()) is not None and close <= t:
                self._dns_keep(dns.close_next(close))

    def _dns_keep(self, closed: DnsClosed | None) -> None:
        if closed is not None:
            self.dns_closed.append(closed)

    def on_record(self, rec: ConnRecord) -> None:
        det = self.det
        t = det._event_time(rec.ts + (rec.duration or 0.0))
        if t is None:
            det.stats.skipped_before_watermark += 1
            return
        det.now = t
        self._dns_advance(t)
        det.stats.records += 1
        if "http-upload" in det.settings.rules:
            http_upload_rule(rec, t, self.uploads)  # type: ignore[arg-type]
        if det.dns is not None:
            det.dns.add(rec, t)
        self.uploads.position += 1
        if det.filter(rec):
            det.stats.outgoing += 1
            self.routed[partition_of(rec.orig_h, self.partitions)].append((t, self.outgoing, _slim(rec)))
            self.outgoing += 1

    def close(self, now: float) -> None:
        if self._closed:
            return
        self._closed = True
        det = self.det
        try:
            self.on_time(now)
            end = det.now
            if end is not None and det.may_commit():
                if det.dns is not None and det.store is None:
                    while det.dns.next_close() is not None:
                        self._dns_keep(det.dns.close_next(end))
                results = self._run(self._tasks(end))
                self._ordered(results, end)
        finally:
            det.close_logs()
        det.warn_skipped()

    def _tasks(self, end: float) -> list[PartitionTask]:
        det = self.det
        keys = det.keys
        drain = det.store is None
        for spool in self.routed:
            spool.flush()
        tasks = [PartitionTask(i, det.settings, sp, keys.windows.next_seq, keys.next_recalc, end, drain,
                               loaded=not drain, loaded_recalc=self.loaded_recalc, recompute_all=keys.recompute_all)
                 for i, sp in enumerate(self.routed)]
        n = self.partitions
        for key, days in keys.baseline.days.items():
            task = tasks[partition_of(key[0], n)]
            task.baseline.extend((key, e) for elems in days.values() for e in elems)
        for key, row in keys.params.items():
            tasks[partition_of(key[0], n)].params[key] = row.tolist()
        for win in sorted(keys.windows.open.values(), key=lambda w: w.seq):
            tasks[partition_of(win.orig_h, n)].windows.append(win)
        self.routed = []
        return tasks

    def _run(self, tasks: list[PartitionTask]) -> list[PartitionResult]:
        t = time.perf_counter()
        results = sorted(self.runner(tasks), key=lambda r: r.index)
        self.timings.update(partitions=time.perf_counter() - t, task_cpu=[r.cpu for r in results],
                            routed=sum(r.records for r in results), task_records=[r.records for r in results],
                            closed=sum(r.closed.count for r in results))
        return results

    def _ordered(self, results: list[PartitionResult], end: float) -> None:
        """The ordered stage over every partition's closed windows and the upload notices."""
        t0 = time.perf_counter()
        det = self.det
        # Each partition's windows come in its close order, the uploads in stream order: merged,
        # they give the single run's order, one chunk per partition in memory at a time.
        # At equal times: volume windows, then the DNS tunnel rule's, then upload notices (the
        # Detector's order: windows due by a record's time close before its rules run).
        streams: list[Iterator[tuple[float, int, int, Any]]] = [
            ((c.window.close_at, 0, c.window.seq, c) for c in r.closed_windows()) for r in results]
        streams.append((c.window.close_at, 1, c.window.seq, c) for c in self.dns_closed)
        streams.append((ts, 2, pos, (note, kw)) for ts, pos, note, kw in self.uploads.kept)
        step = det.settings.new_calculation_window
        grid = det.next_recalc
        ran = False
        first = det.keys.windows.next_seq
        created: list[int] = []  # numbers of the windows this run created and closed (for the state)
        keep = det.store is not None
        for _, kind, _, item in chain(heapq.merge(*streams, key=lambda e: e[:3]), [(end, 3, 0, None)]):
            x = item.ts if kind < 2 else end if kind == 3 else item[1]["ts"]
            if grid is not None and grid <= x:  # the grid's last point up to here: suppressions expire
                point = grid + math.floor((x - grid) / step) * step
                det.notices.expire(point)
                grid, ran = point + step, True
            if kind == 0:
                det.ordered.window(item)
                if keep and item.window.seq >= first:
                    created.append(item.window.seq)
            elif kind == 1:
                report(item, det.ordered)
            elif kind == 2:
                det.notices.raise_notice(item[0], **item[1])
        self.timings["ordered"] = time.perf_counter() - t0
        if keep:
            det.keys.next_recalc = grid
            det.keys.recompute_all = det.keys.recompute_all and not ran
            det.commit(self._net_commit(results, created), end)

    def _net_commit(self, results: list[PartitionResult], created: list[int]) -> Commit:
        """The run's net change of the state (windows renumbered to one run's counter)."""
        first = self.det.keys.windows.next_seq
        created = sorted({*created, *(w.seq for r in results for w in r.windows if w.seq >= first)})
        number = {seq: first + i for i, seq in enumerate(created)}
        windows = []
        for r in results:
            for w in r.windows:
                w.seq = number.get(w.seq, w.seq)
                windows.append(w)
        added = sorted((a for r in results for a in r.added), key=lambda a: a[0])
        params: dict[BaselineKey, list[float] | None] = {}
        for r in results:
            params.update(r.params)
        delta = BaselineDelta(added=[(key, e) for _, key, e in added],
                              pruned=[kd for r in results for kd in r.removed])
        return Commit(baseline=delta, params=params, norms={}, windows=sorted(windows, key=lambda w: w.seq),
                      suppress={}, net=True)
