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
   generator (same --seed) is drawn in that order. Tunnel uids already drawn for the same
   tunnel in an earlier file are reused, as one long run's tunnel table does.
3. DNS-derived names. The answers learned by all tables are swept in stream order against
   the lookups made at each connection's first packet, so a name learned in an earlier
   file names a connection of a later one.
4. Analyzer logs (ssl, http, dns). Rows kept by the tables with their positions are merged
   the same way (rows the stitch table redid are taken from it) and written with real uids.
5. Replay. Records sorted by emission position, interleaved with the sinks' time ticks
   (once per second of network time, as pipeline.run), go to conn.log and the detector.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence

from pcapexfil.dist import ClusterError
from pcapexfil.dist.extract import Entry, ExtractOptions, FileResult, flow_config
from pcapexfil.dist.trace import Emitted, Recorder
from pcapexfil.flow.uid import UidGenerator
from pcapexfil.hooks import AnalyzerContext, RecordSink
from pcapexfil.logs.parquet import table_records
from pcapexfil.record import ConnRecord


class OverlapError(ClusterError):
    """The capture files' time ranges overlap: they are not one rotated capture."""


def check_order(results: Sequence[FileResult]) -> None:
    prev_max = float("-inf")
    prev = ""
    for res in results:
        if not res.skel_v:
            continue
        if res.skel_v[0] < prev_max:
            raise OverlapError(f"{res.path} starts before {prev} ends; cluster mode needs files that follow "
                               "each other in time (use the single-process path for overlapping captures)")
        prev_max, prev = res.skel_v[-1], res.path


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


def stitch_files(results: Sequence[FileResult], opts: ExtractOptions) -> tuple[Recorder, list[set[str]], set[str]]:
    """Step 1: the stitch table after all files, the keys whose task records are replaced
    (per file), and the placeholder uids of tail connections (redrawn by the stitch table)."""
    stitch = Recorder(flow_config(opts), AnalyzerContext(out_dir=None), prefix="s.", capture_logs=opts.logs)
    replaced: list[set[str]] = []
    redrawn: set[str] = set()
    for res in results:
        stitch.cursor.file = res.index
        carried = {repr(k) for k in stitch.table.conns}
        again = carried & res.head.keys()
        replaced.append(again)
        entries: list[Entry] = [e for key in again for e in res.head[key]]
        if not res.last:
            for key, (placeholder, packets) in res.tail.items():
                redrawn.add(placeholder)
                if key not in again:
                    entries.extend(packets)
        entries.sort(key=lambda e: (e[0], e[1]))
        _drive(stitch, res, entries)
    stitch.flush(max((r.skel_v[-1] for r in results if r.skel_v), default=0.0))
    stitch.close()
    return stitch, replaced, redrawn


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


def assign_uids(records: list[tuple[tuple, Emitted]], creations: list[tuple], seed: int | None) -> dict[str, str]:
    """Step 2: real uids drawn in stream order; placeholders replaced in uid and tunnel_parents."""
    gen = UidGenerator(seed)
    real: dict[str, str] = {}
    tunnels: dict[str, str] = {}
    for *_, placeholder, _key, tunnel in sorted(creations, key=lambda c: c[:5]):
        if tunnel is not None and tunnel in tunnels:
            real[placeholder] = tunnels[tunnel]
            continue
        real[placeholder] = uid = gen()
        if tunnel is not None:
            tunnels[tunnel] = uid
    for _, e in records:
        e.rec.uid = real[e.rec.uid]
        if e.rec.tunnel_parents:
            e.rec.tunnel_parents = [real.get(u, u) for u in e.rec.tunnel_parents]
    return real


def write_logs(results: Sequence[FileResult], replaced: list[set[str]], redrawn: set[str], stitch: Recorder,
               real: dict[str, str], ctx: AnalyzerContext) -> None:
    """ssl.log, http.log, dns.log: every table's rows in stream order, with the real uids.
    Task rows of replaced keys, and of connections the stitch table redid, are dropped."""
    from pcapexfil.identifiers.output import LogOut

    rows = []
    fields: dict[str, list] = dict(stitch.log_fields)
    for res, again in zip(results, replaced, strict=True):
        fields.update(res.log_fields)
        rows.extend(((*pos[:5], 0, pos[5]), name, row) for name, pos, key, row in res.rows
                    if key not in again and row.get("uid") not in redrawn)
    rows.extend(((*pos[:5], 1, pos[5]), name, row) for name, pos, _key, row in stitch.rows)
    rows.sort(key=lambda r: r[0])
    outs = {name: LogOut(ctx, name, f) for name, f in fields.items()}
    try:
        for _, name, row in rows:
            if "uid" in row:
                row["uid"] = real.get(row["uid"], row["uid"])
            outs[name].write(row)
    finally:
        for out in outs.values():
            out.close()


def assign_names(records: list[tuple[tuple, Emitted]], learns: list[tuple]) -> None:
    """Step 3: DNS-derived names as one DnsAnalyzer over the whole stream would give them."""
    events: list[tuple] = []
    for _, e in records:
        if e.lookup is not None and e.rec.server_name is None and e.rec.http_host is None:
            f, fr, sub, n, client, address, ts = e.lookup
            events.append(((f, fr, sub, 0, n), 0, client, address, ts, e.rec))
    for f, fr, sub, n, _key, client, address, name, expiry in learns:
        events.append(((f, fr, sub, 1, n), 1, client, address, name, expiry))
    names: dict[tuple[str, str], tuple[str, float]] = {}
    for ev in sorted(events, key=lambda ev: ev[0]):
        if ev[1] == 1:
            names[(ev[2], ev[3])] = (ev[4], ev[5])
        else:
            hit = names.get((ev[2], ev[3]))
            ev[5].dns_name = None if hit is None or ev[4] > hit[1] else hit[0]


def ticks(results: Sequence[FileResult]) -> list[tuple]:
    """pipeline.run's on_time calls: at the first time point ≥ the previous tick + 1 s."""
    out = []
    next_tick: float | None = None
    for res in results:
        for v in res.skel_v:
            if next_tick is None or v >= next_tick:
                out.append(((res.index, v, 0, float("inf"), (), 0, 0), v))
                next_tick = v + 1.0
    return out


def finalize(results: Sequence[FileResult], opts: ExtractOptions, sinks: list[RecordSink],
             seed: int | None, logs: AnalyzerContext | None = None) -> int:
    """Steps 1-5 over the tasks' results (in file order); returns the number of records.
    With `logs` (and tasks run with opts.logs), the analyzers' logs go to logs.out_dir."""
    results = sorted(results, key=lambda r: r.index)
    check_order(results)
    stitch, replaced, redrawn = stitch_files(results, opts)
    records: list[tuple[tuple, Emitted]] = []
    creations: list[tuple] = []
    learns: list[tuple] = []
    for res, again in zip(results, replaced):
        # Task 0 before the stitch table at equal positions: "0" sorts before "1".
        records.extend(((*e.order[:5], 0, e.order[5]), e) for e in _task_records(res, again))
        creations.extend((*c[:3], 0, *c[3:]) for c in res.creations
                         if c[4] not in redrawn and c[5] not in again)
        learns.extend((*ev[:3], 0, *ev[3:]) for ev in res.learns if ev[4] not in again)
    records.extend(((*e.order[:5], 1, e.order[5]), e) for e in stitch.emitted)
    creations.extend((*c[:3], 1, *c[3:]) for c in stitch.creations)
    learns.extend((*ev[:3], 1, *ev[3:]) for ev in stitch.learns)
    # Positions with the table rank folded into n, so the sorts above see 5-tuples.
    creations = [(*c[:3], (c[3], c[4]), *c[5:]) for c in creations]
    learns = [(*ev[:3], (ev[3], ev[4]), *ev[5:]) for ev in learns]
    records.sort(key=lambda r: r[0])
    real = assign_uids(records, creations, seed)
    assign_names(records, learns)
    if logs is not None and logs.out_dir is not None and opts.logs:
        write_logs(results, replaced, redrawn, stitch, real, logs)
    end = max((r.skel_v[-1] for r in results if r.skel_v), default=0.0)
    for item in heapq.merge(((k, e.rec) for k, e in records), ticks(results), key=lambda t: t[0]):
        if isinstance(item[1], ConnRecord):
            for sink in sinks:
                sink.on_record(item[1])
        else:
            for sink in sinks:
                sink.on_time(item[1])
    for sink in sinks:
        sink.on_time(end)
    for sink in sinks:
        sink.close(end)
    return len(records)


def result_weirds(results: Sequence[FileResult]) -> dict[str, int]:
    total: dict[str, int] = {}
    for res in results:
        for name, count in res.weirds.items():
            total[name] = total.get(name, 0) + count
    return total

