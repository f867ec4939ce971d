"""The sequential pass after the tasks: stitch file boundaries, then replay everything in
the order of one long run.

1. Stitch. One flow table (the stitch table) is carried from file to file. At the start of
   file k it holds the connections still open at the end of file k-1. For each of their
   keys that file k's task saw near its start (`head`), the task's records of that key are
   dropped and the key's packets of file k are replayed into the stitch table instead; for
   each connection open at the end of file k (its `tail`), its packets are replayed so it
   can go on into file k+1. The stitch table's timers fire at the same stream points as in
   one long run (driven by file k's time skeleton), so its records land where they belong.
2. Uids. Each table drew placeholders; all draws are sorted by stream position and the real
   uids derived from the connections' identities in that order, with the single run's ticks
   in between (flow.uid counts repeated identities and forgets them at ticks). A tunnel's
   uid depends on its key only, as in one long run.
3. DNS-derived names. The answers learned by all tables are swept in stream order against
   the lookups made at each connection's first packet, so a name learned in an earlier
   file names a connection of a later one.
4. Analyzer logs (ssl, http, dns). Rows kept by the tables with their positions are merged
   the same way (rows the stitch table redid are taken from it) and written with real uids.
5. Replay. Records and rows sorted by emission position, interleaved with the sinks' time
   ticks (once per second of network time, as pipeline.run), go through the same epoch
   order as a single run (pcapexfil.order) to conn.log, the other logs and the detector.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Sequence
from typing import Any

from pcapexfil.dist import ClusterError
from pcapexfil.dist.extract import Entry, ExtractOptions, FileResult, flow_config
from pcapexfil.dist.trace import Emitted, Recorder
from pcapexfil.flow.table import EVICTED_WEIRD
from pcapexfil.flow.uid import ConnUids, tunnel_name
from pcapexfil.hooks import AnalyzerContext, RecordSink
from pcapexfil.identifiers.dns import NameTable
from pcapexfil.logs.parquet import table_records
from pcapexfil.order import TICK_INTERVAL, Epochs, OrderedLog
from pcapexfil.record import ConnRecord
from pcapexfil.weird import WEIRD_FIELDS, Weirds


class OverlapError(ClusterError):
    """The capture files' time ranges overlap: they are not one rotated capture."""


def _drive(stitch: Recorder, res: FileResult, entries: list[Entry]) -> None:
    """File `res` as the stitch table sees it: its own packets, and time from the skeleton."""
    table = stitch.table
    skel_v, skel_f = res.skel_v, res.skel_f
    j = 0  # next skeleton point not yet reached
    for frame, sub, m, pkt in entries:
        # Fire timers due before this packet, each at the first time point reaching it.
        k = bisect.bisect_right(skel_f, frame)  # skeleton points reached by this frame
        while table._timers and j < k:
            due = table._timers[0][0]
            j = max(j, bisect.bisect_left(skel_v, due, j, k))
            if j >= k:
                break
            stitch.advance(skel_v[j])
            j += 1
        stitch.cursor.m = m
        stitch.process(frame, sub, pkt)
    while table._timers and j < len(skel_v):
        j = bisect.bisect_left(skel_v, table._timers[0][0], j)
        if j >= len(skel_v):
            break
        stitch.advance(skel_v[j])
        j += 1


def _task_records(res: FileResult, replaced: set[str]) -> list[Emitted]:
    import pyarrow.parquet as pq

    out = []
    for path in res.parts:
        table = pq.read_table(path)
        recs = table_records(table)
        m, phase, x, y, n = (table.column(c).to_pylist() for c in ("_m", "_phase", "_x", "_y", "_n"))
        keys, lookups = table.column("_key").to_pylist(), table.column("_lookup").to_pylist()
        lk_o, lk_r = table.column("_lk_o").to_pylist(), table.column("_lk_r").to_pylist()
        for i, rec in enumerate(recs):
            if keys[i] in replaced:
                continue
            lk = lookups[i]
            lookup = None if lk is None else (int(lk[0]), int(lk[1]), int(lk[2]), int(lk[3]), lk_o[i], lk_r[i], lk[4])
            out.append(Emitted(rec, (res.index, m[i], phase[i], x[i], _position(y[i]), n[i]), keys[i], lookup))
    return out


def _position(values: list[float]) -> tuple:
    """A position tuple back from its Parquet list: counters are ints again."""
    if len(values) == 5:  # a scheduling position (file, m, phase, x, n)
        return (int(values[0]), values[1], int(values[2]), values[3], int(values[4]))
    return tuple(int(v) for v in values)  # () or a packet position (file, frame, sub)


class Finalizer:
    """The sequential pass, one file at a time in time order (memory: one file's records).

    `add` each task's result in file order, then `close`. Per file: stitch (step 1), draw the
    uids of the connections created in it (2), resolve the DNS lookups made in it (3), take
    the analyzer rows (4) and feed them and the records emitted in it, with the ticks (5).
    """

    def __init__(self, opts: ExtractOptions, sinks: list[RecordSink], seed: int | None,
                 logs: AnalyzerContext | None = None) -> None:
        self.opts = opts
        self.epochs = Epochs(sinks)  # the single run's order: pcapexfil.order
        weirds = Weirds()
        self.stitch = Recorder(flow_config(opts, weirds), AnalyzerContext(out_dir=None, weirds=weirds), prefix="s.",
                               capture_logs=opts.logs)
        if opts.logs:
            weirds.writer = self.stitch.weird_writer()  # type: ignore[assignment]
        self.uids = ConnUids(seed)
        self.real: dict[str, str] = {}  # the stitch table's placeholders (they outlive a file)
        self.names = NameTable()  # the single run's, bounded as it is (identifiers.dns.MAX_NAMES)
        self.stitch_names: dict[str, str | None] = {}  # stitch placeholder → looked-up name
        self.logs = logs if logs is not None and logs.out_dir is not None and opts.logs else None
        self.outs: dict[str, OrderedLog] = {}
        self.next_tick: float | None = None
        self.prev_max = float("-inf")
        self.prev_path = ""
        self.records = 0
        self.packets = 0
        self.task_weirds: dict[str, int] = {}  # the tasks' counts, summed
        self.logged_weirds: dict[str, int] = {}  # weird.log rows written, by name
        self._seen = {"emitted": 0, "creations": 0, "learns": 0, "lookups": 0, "rows": 0}

    def _new(self, name: str) -> list:
        items = getattr(self.stitch, name)
        out = items[self._seen[name]:]
        self._seen[name] = len(items)
        return out

    def add(self, res: FileResult) -> None:
        if res.skel_v:
            if res.skel_v[0] < self.prev_max:
                raise OverlapError(f"{res.path} starts before {self.prev_path} ends; cluster mode needs files "
                                   "that follow each other in time (use the single-process path for "
                                   "overlapping captures)")
            self.prev_max, self.prev_path = res.skel_v[-1], res.path
        self.packets += res.packets
        for name, count in res.weirds.items():
            self.task_weirds[name] = self.task_weirds.get(name, 0) + count
        # 1. Stitch.
        stitch = self.stitch
        stitch.cursor.file = res.index
        again = {repr(k) for k in stitch.table.conns} & res.head.keys()
        entries: list[Entry] = [e for key in again for e in res.head[key]]
        redrawn: set[str] = set()
        if not res.last:
            for key, (placeholder, packets) in res.tail.items():
                redrawn.add(placeholder)
                if key not in again:
                    entries.extend(packets)
        entries.sort(key=lambda e: (e[0], e[1]))
        _drive(stitch, res, entries)
        if res.last:
            stitch.flush(self.prev_max if self.prev_max > float("-inf") else 0.0)
        # 2. Uids, in the order of the positions where they were drawn. The table rank
        # (task 0, stitch 1) only separates equal positions.
        creations = [((*c[:3], 0, c[3]), *c[4:]) for c in res.creations if c[4] not in redrawn and c[5] not in again]
        creations += [((*c[:3], 1, c[3]), *c[4:]) for c in self._new("creations")]
        # The single run's once-a-second ticks in this file: (frame, time); a tick comes
        # before its frame's packets.
        ticks: list[tuple[int, float]] = []
        for v, f in zip(res.skel_v, res.skel_f):
            if self.next_tick is None or v >= self.next_tick:
                ticks.append((f, v))
                self.next_tick = v + TICK_INTERVAL
        real_here: dict[str, str] = {}
        t = 0
        for pos, placeholder, _key, tunnel, ident in sorted(creations, key=lambda c: c[0]):
            while t < len(ticks) and ticks[t][0] <= pos[1]:
                self.uids.expire(ticks[t][1])
                t += 1
            uid = self.uids.named(tunnel_name(tunnel)) if ident is None else self.uids.conn(*ident)
            (self.real if placeholder.startswith("~s.") else real_here)[placeholder] = uid
        for _, v in ticks[t:]:
            self.uids.expire(v)
        # 3. DNS names: answers and lookups of this file in stream order.
        records: list[tuple[tuple, Emitted]] = [((*e.order[:5], 0, e.order[5]), e) for e in _task_records(res, again)]
        records += [((*e.order[:5], 1, e.order[5]), e) for e in self._new("emitted")]
        events: list[tuple] = []
        for _, e in records:
            if e.lookup is not None and e.rec.uid[:3] != "~s." and e.rec.server_name is None \
                    and e.rec.http_host is None:
                f, fr, sub, n, client, address, ts = e.lookup
                events.append(((f, fr, sub, 0, 0, n), client, address, ts, e.rec))
        for f, fr, sub, n, client, address, ts, placeholder in self._new("lookups"):
            events.append(((f, fr, sub, 0, 1, n), client, address, ts, placeholder))
        for f, fr, sub, n, key, client, address, name, expiry, now in res.learns:
            if key not in again:
                events.append(((f, fr, sub, 1, 0, n), client, address, (name, expiry, now)))
        for f, fr, sub, n, _key, client, address, name, expiry, now in self._new("learns"):
            events.append(((f, fr, sub, 1, 1, n), client, address, (name, expiry, now)))
        for ev in sorted(events, key=lambda ev: ev[0]):
            if ev[0][3] == 1:
                self.names.remember(ev[1], ev[2], *ev[3])
                continue
            resolved = self.names.name_for(ev[1], ev[2], ev[3])
            if isinstance(ev[4], str):
                self.stitch_names[ev[4]] = resolved
            else:
                ev[4].dns_name = resolved
        # 4. Analyzer logs, with real uids.
        rows = self._rows(res, again, redrawn, real_here) if self.logs is not None else []
        # 5. Records and rows, with the ticks of this file, to the epochs (pcapexfil.order).
        records.sort(key=lambda r: r[0])
        tick_pos = [((res.index, v, 0, float("inf"), (), 0, 0), v) for _, v in ticks]
        epochs = self.epochs
        payload: Any  # a record, a tick's time or a (log name, row)
        for _, payload in heapq.merge(records, rows, tick_pos, key=lambda t: t[0]):
            if isinstance(payload, Emitted):
                epochs.on_record(self._finish(payload, real_here))
            elif isinstance(payload, float):  # a tick
                epochs.on_time(payload)
            else:
                self.outs[payload[0]].write(payload[1])
        self.records += len(records)

    def _finish(self, e: Emitted, real_here: dict[str, str]) -> ConnRecord:
        """Real uid (and tunnel parents), and for a stitch record its DNS name."""
        rec = e.rec
        placeholder = rec.uid
        if placeholder.startswith("~s."):
            name = self.stitch_names.pop(placeholder, None)
            if e.lookup is not None and rec.server_name is None and rec.http_host is None:
                rec.dns_name = name
            rec.uid = self.real.pop(placeholder)
        else:
            rec.uid = real_here[placeholder]
        if rec.tunnel_parents:
            rec.tunnel_parents = [real_here.get(u) or self.real.get(u, u) for u in rec.tunnel_parents]
        return rec

    def _rows(self, res: FileResult, again: set[str], redrawn: set[str],
              real_here: dict[str, str]) -> list[tuple[tuple, tuple[str, dict]]]:
        """The analyzer and weird rows of this file, in position order, with real uids."""
        from pcapexfil.identifiers.output import LogOut

        assert self.logs is not None
        rows = [((*pos[:5], 0, pos[5]), name, row) for name, pos, key, row in res.rows
                if key not in again and row.get("uid") not in redrawn]
        rows += [((*pos[:5], 1, pos[5]), name, row) for name, pos, _key, row in self._new("rows")]
        fields = {**self.stitch.log_fields, **res.log_fields, "weird": WEIRD_FIELDS}
        out = []
        for pos, name, row in sorted(rows, key=lambda r: r[0]):
            if name not in self.outs:
                self.outs[name] = self.epochs.log(name, LogOut(self.logs, name, fields[name]), fields[name])
            if name == "weird":
                self.logged_weirds[row["name"]] = self.logged_weirds.get(row["name"], 0) + 1
            uid = row.get("uid")
            if uid is not None:
                row["uid"] = real_here.get(uid) or self.real.get(uid, uid)
            out.append((pos, (name, row)))
        return out

    @property
    def weirds(self) -> dict[str, int]:
        """Weird counts as one long run counts them: from the rows written when weird.log is
        (evictions, mostly not logged, from the tasks), else the tasks' sums."""
        if self.logs is None:
            return dict(self.task_weirds)
        counts = {k: v for k, v in self.logged_weirds.items() if k != EVICTED_WEIRD}
        if self.task_weirds.get(EVICTED_WEIRD):
            counts[EVICTED_WEIRD] = self.task_weirds[EVICTED_WEIRD]
        return counts

    def close(self) -> None:
        end = self.prev_max if self.prev_max > float("-inf") else 0.0
        try:
            self.epochs.on_time(end)
        finally:
            try:
                self.epochs.close(end)  # the sinks and the logs
            finally:
                self.stitch.close()


def finalize(results: Iterable[FileResult], opts: ExtractOptions, sinks: list[RecordSink],
             seed: int | None, logs: AnalyzerContext | None = None) -> Finalizer:
    """The sequential pass over the tasks' results (any order for a list; an iterator must
    yield them in file order). With `logs` (and tasks run with opts.logs), the analyzers'
    logs go to logs.out_dir. Returns the Finalizer (records, packets, weirds)."""
    if isinstance(results, Sequence):
        results = sorted(results, key=lambda r: r.index)
    fin = Finalizer(opts, sinks, seed, logs)
    for res in results:
        fin.add(res)
    fin.close()
    return fin
