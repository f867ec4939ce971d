"""A capture worker: one socket (one fanout member) → decoder → its own flow table.

It reports everything through `send(message)`, so the same code runs inside the main
process (send = the collector's handler) or in a child process (send = a queue to it):

    ("fields", name, fields)      a log this worker writes rows to (sent once per log)
    ("log", name, row)            one row of an analyzer log or weird.log
    ("rec", record)               a connection ended (ConnRecord)
    ("tick", wid, now, counters)  network time and counters (each second of traffic, and idle)
    ("done", wid, now, counters)  stopped; every open connection has been flushed
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Any

from pcapexfil import collection
from pcapexfil.flow import FlowConfig, FlowTable
from pcapexfil.flow.table import DEFAULT_MAX_FLOWS
from pcapexfil.hooks import AnalyzerContext
from pcapexfil.identifiers import make_analyzers
from pcapexfil.identifiers.domain import suffix_list
from pcapexfil.identifiers.output import LogOut
from pcapexfil.logs.zeek import Field, TimestampStyle
from pcapexfil.netconf import PRIVATE_NETS
from pcapexfil.order import TICK_INTERVAL
from pcapexfil.record import ConnRecord
from pcapexfil.source.live import DEFAULT_SNAPLEN, LiveCapture, PcapWriter
from pcapexfil.weird import WEIRD_FIELDS, Weirds

START_POLL = 0.005  # s between a worker's looks at whether the capture started

if TYPE_CHECKING:
    from pcapexfil.fast.engine import FastFlow

Send = Callable[[tuple[Any, ...]], None]


@dataclass(slots=True)
class CaptureOptions:
    iface: str
    bpf: str = ""
    snaplen: int = DEFAULT_SNAPLEN
    promisc: bool = True
    buffer_bytes: int = 64 << 20
    fanout_group: int | None = None  # set when several workers share the interface


@dataclass(slots=True)
class AnalysisOptions:
    out_dir: str
    use_json: bool = False
    ts_style: TimestampStyle = "epoch"
    verify_checksums: bool = False
    local_nets: Sequence[str] = PRIVATE_NETS
    seed: int | None = None
    write_pcap: str | None = None
    max_flows: int | None = DEFAULT_MAX_FLOWS  # per worker; None: no cap
    engine: str = "fast"  # "fast": numba parser and flow table; "reference": dpkt/Python


@dataclass(slots=True)
class Counters:
    """One worker's counters; the collector sums them over workers."""

    received: int = 0  # frames the kernel accepted for this socket (incl. those it dropped)
    dropped_kernel: int = 0  # ring full
    dropped_pcapexfil: int = 0  # handed over by the kernel but not analysed (left in the ring at shutdown)
    analysed: int = 0  # frames given to the decoder
    flows_live: int = 0
    merged: int = 0  # frames longer than the interface's MTU allows: segments merged by GRO/LRO

    def as_tuple(self) -> tuple[int, ...]:
        return astuple(self)


class _SendRow:
    """A log writer stand-in: rows go to the collector, which owns the files."""

    def __init__(self, send: Send, name: str, fields: list[Field]) -> None:
        self.send = send
        self.name = name
        send(("fields", name, fields))

    def write(self, row: dict[str, Any]) -> None:
        self.send(("log", self.name, row))

    def close(self) -> None:
        """The collector closes the file."""


class CaptureWorker:
    """Reads one capture socket until `stop()` says so, then flushes its flow table."""

    def __init__(self, wid: int, capture: LiveCapture, options: AnalysisOptions, send: Send) -> None:
        from pcapexfil.decode import Decoder

        self.wid = wid
        self.capture = capture
        self.send = send
        self.counters = Counters()
        self.weirds = Weirds(_SendRow(send, "weird", WEIRD_FIELDS))  # type: ignore[arg-type]
        self.decoder = Decoder(self.weirds, verify_checksums=options.verify_checksums)
        ctx = AnalyzerContext(out_dir=options.out_dir, use_json=options.use_json, ts_style=options.ts_style,
                              weirds=self.weirds)
        self.analyzers = make_analyzers(ctx)
        for analyzer in self.analyzers:
            # Adapter: LogOut opens NAME.log in out_dir on its first row; handing it a
            # writer beforehand routes its rows to the collector (one file for all workers).
            out = getattr(analyzer, "log", None)
            if isinstance(out, LogOut):
                out.writer = _SendRow(send, out.name, out.fields)  # type: ignore[assignment]
        seed = None if options.seed is None else options.seed + wid
        config = FlowConfig(local_nets=options.local_nets, seed=seed, weirds=self.weirds, max_flows=options.max_flows)
        self.verify_checksums = options.verify_checksums
        self.flow: FastFlow | None = None
        self.table: FlowTable | None = None
        if options.engine == "fast":
            from pcapexfil.fast.engine import FastFlow, warm_up

            warm_up(options.verify_checksums)  # before the worker reports ready
            self.flow = FastFlow(config, self.analyzers, [_ToCollector(self)], self.weirds)
            collection.relax()  # the run's pace, for the worker process's life
        else:
            self.table = FlowTable(config, self._emit, self.analyzers)
        self.pcap = PcapWriter(options.write_pcap, capture.linktype, capture.snaplen) \
            if options.write_pcap else None
        self.now = 0.0
        _settle_heap()

    def _emit(self, rec: ConnRecord) -> None:
        self.send(("rec", rec))

    def _counters(self) -> tuple[int, ...]:
        stats = self.capture.read_stats()
        c = self.counters
        live = len(self.flow.table) if self.flow is not None else len(self.table)  # type: ignore[arg-type]
        c.received, c.dropped_kernel, c.flows_live = stats.received, stats.dropped, live
        return c.as_tuple()

    def run(self, stop: Callable[[], bool]) -> None:
        try:
            if self.flow is not None:
                self._run_fast(stop, self.flow)
            else:
                self._run_reference(stop, self.table)  # type: ignore[arg-type]
        finally:
            for analyzer in self.analyzers:
                analyzer.close()
            if self.pcap is not None:
                self.pcap.close()
            self.capture.close()
        c = self.counters  # close() folded in the kernel's last counts
        c.received, c.dropped_kernel = self.capture.stats.received, self.capture.stats.dropped
        self.send(("done", self.wid, self.now, c.as_tuple()))

    def _run_fast(self, stop: Callable[[], bool], flow: FastFlow) -> None:
        """Each ring block is one chunk for the numba parser and table; the table's own
        once-a-second ticks reach the collector through `_ToCollector`."""
        import numpy as np

        from pcapexfil.fast.reader import parse_chunk

        for chunk in self.capture.blocks():
            if chunk is None:
                self.send(("tick", self.wid, self.now, self._counters()))
            else:
                n = len(chunk.ts)
                self.now = max(self.now, float(chunk.ts.max()))
                if self.capture.max_frame is not None:
                    self.counters.merged += int(np.count_nonzero(chunk.wirelens > self.capture.max_frame))
                if self.pcap is not None:
                    for i in range(n):
                        self.pcap.write(chunk.raw(i))
                flow.feed_batch(parse_chunk(chunk, self.verify_checksums), self.decoder)
                self.counters.analysed += n
            if stop() and self._ended(chunk is None):
                break
        self._stopped()
        flow.flush(self.now)

    def _run_reference(self, stop: Callable[[], bool], table: FlowTable) -> None:
        decode, pcap, max_frame = self.decoder.decode, self.pcap, self.capture.max_frame
        next_tick = None
        for batch in self.capture.batches():
            for raw in batch:
                if raw.ts > self.now:
                    self.now = raw.ts
                if next_tick is None or self.now >= next_tick:
                    table.advance(self.now)
                    self.send(("tick", self.wid, self.now, self._counters()))
                    next_tick = self.now + TICK_INTERVAL
                if pcap is not None:
                    pcap.write(raw)
                if max_frame is not None and raw.wirelen > max_frame:
                    self.counters.merged += 1
                pkts = decode(raw)
                if pkts:
                    table.process_all(pkts)
            self.counters.analysed += len(batch)
            if not batch:
                self.send(("tick", self.wid, self.now, self._counters()))
            if stop() and self._ended(not batch):
                break
        self._stopped()
        table.flush(self.now)

    def _ended(self, idle: bool) -> bool:
        """Whether a stopping worker is done: at once without a common end (one worker); with
        one, once its ring held a frame stamped after it, or nothing came for a block
        timeout (the kernel had handed over every earlier frame)."""
        capture = self.capture
        return capture.end == math.inf or capture.passed_end or idle

    def _stopped(self) -> None:
        """Capture ends: the block in hand was analysed; frames the kernel had already handed
        over in later blocks are dropped by pcapexfil, unless they came after a common end."""
        if self.capture.end == math.inf:
            self.counters.dropped_pcapexfil += self.capture.pending_frames()
        self._counters()  # flows live when capture stopped


def _settle_heap() -> None:
    """Before the first frame: parse what is otherwise parsed on first use, then move every
    object made so far (numba's and llvmlite's among them, >100k) out of the cyclic garbage
    collector's reach. A full collection scanned them in 35-80 ms, longer than a small ring
    lasts at a high rate: the kernel dropped frames meanwhile."""
    suffix_list()
    gc.collect()
    gc.freeze()


class _ToCollector:
    """The fast engine's sink in a worker: records and ticks go to the collector."""

    def __init__(self, worker: CaptureWorker) -> None:
        self.worker = worker

    def on_record(self, rec: ConnRecord) -> None:
        self.worker.send(("rec", rec))

    def on_time(self, now: float) -> None:
        w = self.worker
        w.now = max(w.now, now)
        w.send(("tick", w.wid, now, w._counters()))

    def close(self, now: float) -> None:
        pass


def child_main(wid: int, copts: CaptureOptions, aopts: AnalysisOptions, queue: Any, stop_event: Any,
               start: Any, end: Any) -> None:
    """Entry point of a worker process: open its fanout socket, report ready, wait for the
    capture's start, run until told to stop, analysing what was stamped up to its end.
    `start` and `end` are shared doubles: the collector's clock when every member had
    joined, and when it told them to stop (LiveCapture.start, .end)."""
    import signal

    from pcapexfil.source.pcap import CaptureError

    # The collector owns shutdown and rotation; a terminal's Ctrl-C reaches the whole group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    terminated = []
    signal.signal(signal.SIGTERM, lambda _s, _f: terminated.append(True))
    parent = os.getppid()
    try:
        capture = LiveCapture(copts.iface, bpf=copts.bpf, snaplen=copts.snaplen, promisc=copts.promisc,
                              buffer_bytes=copts.buffer_bytes, fanout_group=copts.fanout_group)
    except CaptureError as exc:
        queue.put(("error", wid, str(exc)))
        return
    worker = CaptureWorker(wid, capture, aopts, queue.put)
    queue.put(("ready", wid))

    def stopping() -> bool:
        if stop_event.is_set() and end.value:
            capture.end = end.value
        return bool(terminated) or stop_event.is_set() or os.getppid() != parent

    while not start.value and not stopping():
        time.sleep(START_POLL)
    capture.start = start.value
    worker.run(stopping)
