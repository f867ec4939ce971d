"""The main job: capture files → decoder → flow table (+ application analyzers) → sinks.

Records stream through as connections end, so memory follows the number of live
connections, not the size of the input. Sinks also see network time advance (at least
once per second of traffic), which is how time-windowed consumers such as the detector
close their windows without a wall clock.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pcapexfil.flow import FlowConfig, FlowTable
from pcapexfil.flow.table import DEFAULT_MAX_FLOWS, bare_mode
from pcapexfil.hooks import AnalyzerContext, RecordSink
from pcapexfil.identifiers import make_analyzers
from pcapexfil.logs.conn import CONN_FIELDS, conn_values
from pcapexfil.logs.staging import LogStaging
from pcapexfil.logs.zeek import Field, ZeekLogWriter
from pcapexfil.netconf import PRIVATE_NETS
from pcapexfil.order import TICK_INTERVAL, Epochs
from pcapexfil.record import ConnRecord
from pcapexfil.source import CaptureStats, open_captures
from pcapexfil.source.filter import CaptureFilter
from pcapexfil.weird import WEIRD_FIELDS, Weirds

if TYPE_CHECKING:
    from pcapexfil.workers import Share

# Weirds that mean the input itself was damaged (exit status 1 in the CLI).
DAMAGE_WEIRDS = ("truncated_capture_file", "corrupt_capture_file")
# Below this input size a progress bar is more noise than help.
PROGRESS_MIN_BYTES = 20 * 1024 * 1024


@dataclass(slots=True)
class RunOptions:
    out_dir: str | None = None  # where analyzer logs and weird.log go; None: no logs
    use_json: bool = False
    ts_style: Literal["epoch", "millis", "iso8601"] = "epoch"
    verify_checksums: bool = False
    local_nets: Sequence[str] = PRIVATE_NETS
    seed: int | None = None
    progress: bool | None = None  # None: when stderr is a terminal and the input is big
    max_flows: int | None = DEFAULT_MAX_FLOWS  # flow table cap (see flow.table); None: no cap
    # "fast": numba parser and flow table (pcapexfil.fast); "reference": the readable
    # dpkt/Python path. Both give identical logs (tests/test_fast_engine.py).
    engine: Literal["fast", "reference"] = "fast"
    # Logs are published together at the run's commit point (pcapexfil.logs.staging); None:
    # each log is written in place.
    staging: LogStaging | None = None
    # Zeek's -f: records the filter rejects are not read at all (pcapexfil.source.filter).
    capture_filter: CaptureFilter | None = None
    # Model a bare Zeek run (`zeek -b` loading base/protocols/conn only): see flow.table.bare_mode.
    zeek_bare_mode: bool = False
    # Processes sharing the connections by flow hash (pcapexfil.workers; fast engine only).
    workers: int = 1


@dataclass(slots=True)
class RunSummary:
    packets: int = 0
    records: int = 0
    weirds: dict[str, int] = field(default_factory=dict)

    @property
    def damaged(self) -> bool:
        """The input was cut short or corrupt (records learned before it were kept)."""
        return any(self.weirds.get(name) for name in DAMAGE_WEIRDS)


class LazyLogWriter:
    """A ZeekLogWriter created on the first row, so a clean run writes no weird.log."""

    def __init__(self, path: str, log_path: str, fields: list[Field], use_json: bool, ts_style: Any,
                 staging: LogStaging | None) -> None:
        self._args = (path, log_path, fields, use_json, ts_style, staging)
        self._writer: ZeekLogWriter | None = None

    def write(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            path, log_path, fields, use_json, ts_style, staging = self._args
            self._writer = ZeekLogWriter(path, log_path, fields, use_json=use_json, ts_style=ts_style,
                                         staging=staging)
        self._writer.write(row)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class ConnLogSink:
    """Writes DIR/conn.log (Zeek TSV, or Zeek's JSON form)."""

    def __init__(self, out_dir: str, use_json: bool = False, ts_style: Any = "epoch",
                 staging: LogStaging | None = None) -> None:
        self.writer = ZeekLogWriter(
            os.path.join(out_dir, "conn.log"), "conn", CONN_FIELDS, use_json=use_json, ts_style=ts_style,
            staging=staging,
        )

    def on_record(self, rec: ConnRecord) -> None:
        self.writer.write_values(conn_values(rec))

    def on_time(self, now: float) -> None:
        pass

    def close(self, now: float) -> None:
        self.writer.close()


class Progress:
    """tqdm bar over input bytes on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, leave=False)

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RunScaffold:
    """What every engine sets up around its packet loop (weirds, analyzers, progress bar,
    the epoch order of its outputs) and tears down after it, whatever happened in between.

    `sinks` are put behind an `Epochs` (pcapexfil.order), unless the only sink is one: a
    worker's spool. With `share` the run is one worker's (pcapexfil.workers).
    """

    def __init__(self, options: RunOptions, sinks: Sequence[RecordSink], share: Share | None = None) -> None:
        self.options = options
        only = sinks[0] if len(sinks) == 1 else None
        self.epochs = only if isinstance(only, Epochs) else Epochs(sinks)
        self.sinks: list[RecordSink] = [self.epochs]
        weird_log = None
        if options.out_dir is not None:
            lazy = LazyLogWriter(os.path.join(options.out_dir, "weird.log"), "weird", WEIRD_FIELDS,
                                 options.use_json, options.ts_style, options.staging)
            weird_log = self.epochs.log("weird", lazy, WEIRD_FIELDS)
        self.share = share
        self.weirds = Weirds(weird_log) if share is None else share.weirds(weird_log)  # type: ignore[arg-type]
        ctx = AnalyzerContext(out_dir=options.out_dir, use_json=options.use_json, ts_style=options.ts_style,
                              weirds=self.weirds, staging=options.staging)
        self.analyzers = make_analyzers(ctx)  # their logs are created on their first row
        for analyzer in self.analyzers:
            out = getattr(analyzer, "log", None)
            if out is not None:
                setattr(analyzer, "log", self.epochs.log(out.name, out, out.fields))
        self.progress = Progress(False, 0)

    def start_progress(self, stats: CaptureStats) -> Progress:
        """A bar when asked for, or by default when stderr is a terminal and the input big."""
        if self.share is not None:
            self.progress = self.share.progress  # the merging process shows the bar
            return self.progress
        show = self.options.progress
        if show is None:
            show = sys.stderr.isatty() and stats.input_bytes >= PROGRESS_MIN_BYTES
        self.progress = Progress(show, stats.input_bytes)
        return self.progress

    def close(self, now: float) -> None:
        """Analyzers first, then the epochs: the last one, then the sinks (the detector may
        commit the run, which publishes every log of it) and the logs are closed."""
        self.progress.close()
        for analyzer in self.analyzers:
            analyzer.close()
        self.epochs.close(now)


def run(
    paths: Sequence[str],
    options: RunOptions,
    sinks: list[RecordSink],
) -> RunSummary:
    """Read `paths` as one time-ordered stream and feed every record to `sinks`.

    Raises CaptureError (before any output) when a path is not a readable capture.
    """
    if options.workers > 1:
        if options.engine != "fast":
            raise ValueError("workers share connections on the fast engine only")
        from pcapexfil.workers import run_workers

        open_captures(list(paths), Weirds()).close()  # CaptureError here, before any worker starts
        return run_workers(paths, options, sinks, options.workers,
                           sum(os.path.getsize(p) for p in paths if os.path.isfile(p)))
    if options.engine == "fast":
        from pcapexfil.fast.engine import run_fast

        return run_fast(paths, options, sinks)
    from pcapexfil.decode import Decoder

    scaffold = RunScaffold(options, sinks)
    weirds, analyzers, sinks = scaffold.weirds, scaffold.analyzers, scaffold.sinks
    stats = CaptureStats()
    packets = open_captures(list(paths), weirds, stats)  # CaptureError here, before any output
    decoder = Decoder(weirds, verify_checksums=options.verify_checksums)

    def emit(rec: ConnRecord) -> None:
        for sink in sinks:
            sink.on_record(rec)

    table = FlowTable(
        FlowConfig(local_nets=options.local_nets, seed=options.seed, weirds=weirds, max_flows=options.max_flows,
                   **bare_mode(options.zeek_bare_mode)),
        emit, analyzers,
    )
    progress = scaffold.start_progress(stats)
    count = 0
    next_tick = None  # network time of the next on_time call
    now = 0.0
    flt = options.capture_filter
    try:
        for raw in packets:
            if flt is not None and not flt.accepts(raw.linktype, raw.data, raw.source):
                continue
            count += 1
            if raw.ts > now:
                now = raw.ts
            if next_tick is None or now >= next_tick:
                table.advance(now)
                table.uids.expire(now)
                for sink in sinks:
                    sink.on_time(now)
                next_tick = now + TICK_INTERVAL
            if count & 0x3FF == 0:
                progress.update(stats.bytes)
            pkts = decoder.decode(raw)
            if pkts:
                table.process_all(pkts)
        table.flush(now)
        for sink in sinks:
            sink.on_time(now)
    finally:
        scaffold.close(now)
    return RunSummary(packets=count, records=table.records, weirds=dict(weirds.counts))
