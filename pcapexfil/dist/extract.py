"""One cluster task: one capture file → provisional connection records (Parquet, by day)
plus what the sequential stitch pass needs to make the result exact.

The task starts from an empty flow table, so it cannot know which connections were still
open at the end of the previous file. It keeps what the stitch pass needs to redo those:

- `head`: every packet (whole file) of each flow key whose first packet in this file comes
  within the longest inactivity timeout of the file's start: only such a key can continue
  a connection carried over from the previous file;
- `tail`: for each connection still open at the end of the file, its packets from its
  first one (not for the last file, whose table is flushed as one long run's would be);
- the skeleton of network time (each new maximum packet time and the frame reaching it),
  so the stitch table's timers fire at the same points of the stream;
- uid draws, DNS answers learned and DNS-name lookups, with their stream positions.

Memory: the packets of the connections open at a time are kept until they end (for the
`tail`), plus the `head` keys' packets.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from pcapexfil.dist.trace import Emitted, Recorder
from pcapexfil.flow import FlowConfig
from pcapexfil.hooks import AnalyzerContext
from pcapexfil.netconf import PRIVATE_NETS
from pcapexfil.packet import Packet

# A replayable packet: (frame, sub, m, packet).
Entry = tuple[int, int, float, Packet]


@dataclass(slots=True)
class ExtractOptions:
    verify_checksums: bool = False
    local_nets: tuple[str, ...] = tuple(PRIVATE_NETS)
    max_flows: int | None = None
    sensor: str | None = None
    logs: bool = False  # also ssl.log, http.log, dns.log rows


@dataclass
class FileResult:
    index: int
    path: str
    last: bool
    packets: int = 0
    parts: list[str] = field(default_factory=list)  # Parquet files written (one per day)
    skel_v: list[float] = field(default_factory=list)  # successive maxima of packet time
    skel_f: list[int] = field(default_factory=list)  # frame that reached each
    head: dict[str, list[Entry]] = field(default_factory=dict)
    tail: dict[str, tuple[str, list[Entry]]] = field(default_factory=dict)  # key → (placeholder uid, packets)
    creations: list[tuple] = field(default_factory=list)
    learns: list[tuple] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)  # analyzer log rows (Recorder.rows)
    log_fields: dict[str, list] = field(default_factory=dict)
    weirds: dict[str, int] = field(default_factory=dict)
    cpu: float = 0.0  # CPU seconds the task took (its thread), for capacity planning


def flow_config(opts: ExtractOptions, weirds: Any = None) -> FlowConfig:
    return FlowConfig(local_nets=list(opts.local_nets), weirds=weirds, max_flows=opts.max_flows)


def head_span(cfg: FlowConfig) -> float:
    """How long after a file's start a carried-over connection can still see its next packet."""
    return max(cfg.tcp_inactivity_timeout, cfg.udp_inactivity_timeout, cfg.icmp_inactivity_timeout,
               cfg.unknown_inactivity_timeout)


def extract_file(path: str, index: int, last: bool, opts: ExtractOptions, work_dir: str) -> FileResult:
    """The task: read `path` (the `index`-th file in time order) and write its records."""
    from pcapexfil.decode import Decoder
    from pcapexfil.source import open_capture
    from pcapexfil.weird import Weirds

    cpu0 = time.thread_time()
    weirds = Weirds()
    cfg = flow_config(opts, weirds)
    rec = Recorder(cfg, AnalyzerContext(out_dir=None, weirds=weirds), prefix=f"{index}.", capture_logs=opts.logs)
    if opts.logs:
        weirds.writer = rec.weird_writer()  # type: ignore[assignment]
    rec.cursor.file = index
    decoder = Decoder(weirds, verify_checksums=opts.verify_checksums)
    res = FileResult(index=index, path=path, last=last)
    span = head_span(cfg)
    seen: set[tuple] = set()
    head: dict[tuple, list[Entry]] = {}
    head_end: float | None = None
    live: dict[str, list[Entry]] = {}  # placeholder uid → packets (tail candidates)
    now = float("-inf")
    frame = 0
    done = 0  # records emitted so far whose tail packets were dropped
    for raw in open_capture(path, weirds):
        if raw.ts > now:
            now = raw.ts
            res.skel_v.append(now)
            res.skel_f.append(frame)
            rec.advance(now)
            if head_end is None:
                head_end = now + span
        rec.cursor.phase, rec.cursor.frame = 1, frame
        pkts = decoder.decode(raw)
        rec.flush_rows()  # the decoder's weirds (and a damaged file's, noticed when reading on)
        if pkts:
            for sub, pkt, conn in rec.process_frame(frame, pkts):
                if conn is None:
                    continue
                key = conn.key
                entry = (frame, sub, now, pkt)
                if key not in seen:
                    seen.add(key)
                    if pkt.ts <= head_end:  # type: ignore[operator]
                        head[key] = []
                if key in head:
                    head[key].append(entry)
                if not last:
                    live.setdefault(conn.uid, []).append(entry)
        if not last and len(rec.emitted) > done:
            for e in rec.emitted[done:]:
                live.pop(e.rec.uid, None)
            done = len(rec.emitted)
        frame += 1
    rec.flush_rows()
    res.packets = frame
    res.head = {repr(k): v for k, v in head.items()}
    if last:
        rec.flush(now)
    else:
        for conn in rec.table.conns.values():
            res.tail[repr(conn.key)] = (conn.uid, live.get(conn.uid, []))
    rec.close()
    res.parts = write_parts(rec.emitted, work_dir, index, opts.sensor)
    res.creations, res.learns, res.rows, res.log_fields = rec.creations, rec.learns, rec.rows, rec.log_fields
    res.weirds = dict(weirds.counts)
    res.cpu = time.thread_time() - cpu0
    return res


def write_parts(emitted: list[Emitted], work_dir: str, index: int, sensor: str | None) -> list[str]:
    """Provisional records, one Parquet file per day, with the stitch pass's columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pcapexfil.logs.parquet import day_of, records_table

    by_day: dict[str, list[Emitted]] = {}
    for e in emitted:
        by_day.setdefault(day_of(e.rec.ts), []).append(e)
    paths = []
    f64, i64, s = pa.float64(), pa.int64(), pa.string()
    for day, rows in sorted(by_day.items()):
        extra = [
            ("_m", f64, [e.order[1] for e in rows]), ("_phase", i64, [e.order[2] for e in rows]),
            ("_x", f64, [float(e.order[3]) for e in rows]),
            ("_y", pa.list_(f64), [[float(v) for v in e.order[4]] for e in rows]),
            ("_n", i64, [e.order[5] for e in rows]),
            ("_key", s, [e.key for e in rows]),
            ("_lookup", pa.list_(f64), [None if e.lookup is None else [float(v) for v in e.lookup[:4]] + [e.lookup[6]]
                                        for e in rows]),
            ("_lk_o", s, [None if e.lookup is None else e.lookup[4] for e in rows]),
            ("_lk_r", s, [None if e.lookup is None else e.lookup[5] for e in rows]),
        ]  # fmt: skip
        table = records_table([e.rec for e in rows], sensor, extra)
        path = os.path.join(work_dir, "parts", f"day={day}", f"file-{index:06d}.parquet")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(table, path)
        paths.append(path)
    return paths
