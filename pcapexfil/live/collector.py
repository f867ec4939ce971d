"""The live run: capture workers feed one collector, which owns every log, the rotation
schedule, the stats and the single detector (so the baseline stays one).

With one worker everything runs in this process; with N, the workers are child processes
in one PACKET_FANOUT group and their messages arrive over a queue. Time is network time:
the collector's clock is the latest packet time any worker reported.

Signals (installed for the duration of `run_live`): SIGINT/SIGTERM stop capturing, every
worker flushes its open connections (Zeek's behaviour at termination) and the detector
commits its state; SIGHUP rotates the logs.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import queue as queue_mod
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pcapexfil.live.logs import LogSet
from pcapexfil.live.worker import (
    AnalysisOptions,
    CaptureOptions,
    CaptureWorker,
    Counters,
    child_main,
)
from pcapexfil.logs.conn import CONN_FIELDS, conn_row
from pcapexfil.logs.zeek import Field
from pcapexfil.source.live import LiveCapture
from pcapexfil.source.pcap import CaptureError

log = logging.getLogger("pcapexfil.live")

STATS_FIELDS: list[Field] = [
    ("ts", "time"),
    ("peer", "string"),
    ("pkts_recv", "count"),
    ("pkts_dropped_kernel", "count"),
    ("pkts_dropped_pcapexfil", "count"),
    ("pkts_analysed", "count"),
    ("flows_live", "count"),
    ("records_written", "count"),
    ("pkts_merged", "count"),
]


@dataclass(slots=True)
class LiveSettings:
    capture: CaptureOptions
    analysis: AnalysisOptions
    workers: int = 1
    rotate: float | None = None  # seconds of network time between rotations
    stats_interval: float | None = 60.0  # seconds of network time between stats.log rows


@dataclass(slots=True)
class LiveSummary:
    counters: Counters = field(default_factory=Counters)
    records: int = 0
    rotations: int = 0
    now: float = 0.0
    lost_workers: int = 0


def attach_detector(det: Any, logs: LogSet) -> None:
    """Route the detector's two logs into `logs` (built with out_dir=None, it opened none)."""
    from pcapexfil.logs.exfil import exfil_fields
    from pcapexfil.logs.notice import NOTICE_FIELDS

    det.exfil_log = logs.proxy("exfil_detection", exfil_fields(det.columns))
    det.notice_log = logs.proxy("notice", NOTICE_FIELDS)
    det.notices.writer = det.notice_log


def pcap_path(path: str, wid: int, workers: int) -> str:
    """--write-pcap FILE: FILE itself, or FILE.wN.pcap per worker (each worker writes its share)."""
    if workers == 1:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}.w{wid}{ext or '.pcap'}"


class Collector:
    def __init__(self, settings: LiveSettings, logs: LogSet, detector: Any | None) -> None:
        self.settings = settings
        self.logs = logs
        self.detector = detector
        logs.declare("conn", CONN_FIELDS)
        logs.declare("stats", STATS_FIELDS)
        self.workers: dict[int, Counters] = {}
        self.summary = LiveSummary()
        self.now = 0.0
        self.next_rotate: float | None = None
        self.next_stats: float | None = None
        self.stopping = False
        self.rotate_requested = False

    # -- messages ----------------------------------------------------------------------------
    def handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "log":
            self.logs.write(msg[1], msg[2])
        elif kind == "rec":
            rec = msg[1]
            self.logs.write("conn", conn_row(rec))
            self.summary.records += 1
            if self.detector is not None:
                self.detector.on_record(rec)
        elif kind in ("tick", "done"):
            self.workers[msg[1]] = Counters(*msg[3])
            self._advance(msg[2])
        elif kind == "fields":
            self.logs.declare(msg[1], msg[2])

    def _advance(self, now: float) -> None:
        if now > self.now:
            self.now = self.logs.now = now
            if self.logs.generation_start is None:
                self.logs.generation_start = now
            if self.detector is not None:
                self.detector.on_time(now)
        if self.now <= 0.0:
            return  # no packet yet: nothing to rotate or report
        every = self.settings.rotate
        if every:
            if self.next_rotate is None:
                self.next_rotate = (math.floor(self.now / every) + 1) * every
            elif self.now >= self.next_rotate:
                self.rotate(self.next_rotate)
                self.next_rotate = (math.floor(self.now / every) + 1) * every
        if self.rotate_requested:
            self.rotate_requested = False
            self.rotate(self.now)
        interval = self.settings.stats_interval
        if interval:
            if self.next_stats is None:
                self.next_stats = self.now + interval
            elif self.now >= self.next_stats:
                self.write_stats()
                self.next_stats = self.now + interval

    def rotate(self, at: float) -> None:
        for path in self.logs.rotate(at):
            log.info("rotated %s", path)
        self.summary.rotations += 1

    def totals(self) -> Counters:
        total = Counters()
        for c in self.workers.values():
            total.received += c.received
            total.dropped_kernel += c.dropped_kernel
            total.dropped_pcapexfil += c.dropped_pcapexfil
            total.analysed += c.analysed
            total.flows_live += c.flows_live
            total.merged += c.merged
        return total

    def write_stats(self) -> None:
        t = self.totals()
        self.logs.write("stats", {
            "ts": self.now, "peer": "pcapexfil", "pkts_recv": t.received, "pkts_dropped_kernel": t.dropped_kernel,
            "pkts_dropped_pcapexfil": t.dropped_pcapexfil, "pkts_analysed": t.analysed,
            "flows_live": t.flows_live, "records_written": self.summary.records, "pkts_merged": t.merged,
        })
        self.logs.flush()

    # -- shutdown ----------------------------------------------------------------------------
    def finish(self) -> LiveSummary:
        """Every worker is done: the detector closes (commits state), a last stats row."""
        try:
            if self.detector is not None:
                self.detector.close(self.now)
        finally:
            self.write_stats()
            self.logs.close()
        self.summary.counters = self.totals()
        self.summary.now = self.now
        return self.summary


def run_live(settings: LiveSettings, detector: Any | None, on_ready: Callable[[], None] = lambda: None
             ) -> LiveSummary:
    """Capture until SIGINT/SIGTERM. CaptureError (nothing captured) when a socket cannot open."""
    logs = LogSet(settings.analysis.out_dir, settings.analysis.use_json, settings.analysis.ts_style)
    if detector is not None:
        from pcapexfil.detect.detector import warm_up

        warm_up(detector.settings)  # its kernels, before the ring fills (as the workers' table)
        attach_detector(detector, logs)
    coll = Collector(settings, logs, detector)

    def on_stop(_sig: int, _frame: Any) -> None:
        coll.stopping = True

    def on_hup(_sig: int, _frame: Any) -> None:
        coll.rotate_requested = True

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        if settings.workers == 1:
            _run_inline(settings, coll, on_ready)
        else:
            _run_children(settings, coll, on_ready)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return coll.finish()


def _run_inline(settings: LiveSettings, coll: Collector, on_ready: Callable[[], None]) -> None:
    c = settings.capture
    capture = LiveCapture(c.iface, bpf=c.bpf, snaplen=c.snaplen, promisc=c.promisc, buffer_bytes=c.buffer_bytes)
    worker = CaptureWorker(0, capture, settings.analysis, coll.handle)
    on_ready()
    worker.run(lambda: coll.stopping)


def _run_children(settings: LiveSettings, coll: Collector, on_ready: Callable[[], None]) -> None:
    n = settings.workers
    ctx = multiprocessing.get_context("fork")
    queue: Any = ctx.Queue(maxsize=1 << 16)
    stop = ctx.Event()
    start = ctx.Value("d", 0.0)  # the capture's start, once every member joined (child_main)
    end = ctx.Value("d", 0.0)  # its end, when the workers were told to stop
    copts = replace(settings.capture, fanout_group=os.getpid() & 0xFFFF)
    procs = {}
    for wid in range(n):
        aopts = replace(settings.analysis, write_pcap=pcap_path(settings.analysis.write_pcap, wid, n)
                        if settings.analysis.write_pcap else None)
        procs[wid] = ctx.Process(target=child_main, args=(wid, copts, aopts, queue, stop, start, end), daemon=True,
                                 name=f"pcapexfil-worker-{wid}")
        procs[wid].start()
    ready: set[int] = set()
    done: set[int] = set()
    try:
        # Every socket joins the fanout group before traffic counts: the kernel spreads flows by
        # hash modulo the group size, so a late member would split flows already seen.
        while len(ready) < n:
            msg = _get(queue, procs, done, coll)
            if msg is None:
                if len(done) == n or coll.stopping:
                    raise CaptureError("capture workers stopped before they were ready")
                continue
            if msg[0] == "error":
                raise CaptureError(msg[2])
            if msg[0] == "ready":
                ready.add(msg[1])
            else:
                coll.handle(msg)
        # Frames stamped from now on were spread by the whole group; each worker drops the
        # earlier ones (LiveCapture.start), which one socket took alone or every socket took.
        start.value = time.time()
        on_ready()
        while len(done) < n:
            if coll.stopping and not stop.is_set():
                end.value = time.time()  # before the first worker leaves the group
                stop.set()
            msg = _get(queue, procs, done, coll)
            if msg is None:
                continue
            coll.handle(msg)
            if msg[0] == "done":
                done.add(msg[1])
    finally:
        stop.set()
        for proc in procs.values():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _get(queue: Any, procs: dict[int, Any], done: set[int], coll: Collector) -> tuple[Any, ...] | None:
    """The next message, or None after a short wait; a worker that died counts as done (lost)."""
    try:
        return queue.get(timeout=0.2)  # type: ignore[no-any-return]
    except queue_mod.Empty:
        for wid, proc in procs.items():
            if wid not in done and not proc.is_alive() and proc.exitcode not in (None, 0):
                log.warning("capture worker %d died (exit %s); its open connections are lost", wid, proc.exitcode)
                coll.summary.lost_workers += 1
                done.add(wid)
        return None
