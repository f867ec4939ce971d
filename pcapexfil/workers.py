"""`--workers N`: N processes share one capture, each keeps the connections whose flow hash
falls in its share (as Zeek cluster workers, nfstream meters and AF_PACKET fanout split
traffic), and one process merges their outputs into exactly the single run's.

Every worker reads and parses the whole capture (memory-mapped; header parsing is cheap next
to the flow table and the analyzers). Before the numba table sees a batch, the rows of
connections another worker owns become KIND_FOREIGN: they still move network time exactly
as in one run, so every worker fires the same timers at the same times and makes the same
once-a-second ticks. Packets of SLOW frames (tunnels, fragments, odd link layers) every
worker processes in full, and only the owner writes what comes out of them: each worker
decodes every SLOW frame anyway (fragments are reassembled before their flow is known), and
a tunnel's inner connection names its carrier's uid, whose owner may be another worker.

DNS answers name *other* connections (`rec.dns_name`), which another worker may own. So a
worker does not resolve names itself: its DNS analyzer notes each answer learned and each
connection's lookup with its stream position (`_DeferredNames`), the epoch carries them, and
the merging process replays every worker's in stream order through one `NameTable` and names
the records, exactly as the single run's table would have.

Uids come from the connection's identity (flow.uid), so a worker names a connection as the
single run does. Each worker releases its records and rows one epoch at a time, sorted
(pcapexfil.order); the merging process takes epoch k of every worker and merges them by the
same keys, so the result is the single run's order byte for byte. Capture and decoder
weirds (no uid) are the same in every worker: worker 0 writes them.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import chain
from multiprocessing.connection import Connection
from operator import itemgetter
from typing import IO, Any, NamedTuple

import numpy as np

from pcapexfil import collection
from pcapexfil.fast.batch import KIND_FAST, KIND_FOREIGN, addr_to_halves
from pcapexfil.flow.uid import ConnUids, run_seed
from pcapexfil.hooks import RecordSink
from pcapexfil.identifiers.dns import NameTable
from pcapexfil.jit import njit
from pcapexfil.logs.conn import CONN_FIELDS, conn_values
from pcapexfil.logs.zeek import Field, ZeekLogWriter
from pcapexfil.order import Epochs, OrderedLog, RecordItem, RowItem
from pcapexfil.packet import PROTO_TCP, PROTO_UDP
from pcapexfil.pipeline import PROGRESS_MIN_BYTES, ConnLogSink, Progress, RunOptions, RunSummary
from pcapexfil.record import ConnRecord
from pcapexfil.services import SESSION_PORTS
from pcapexfil.weird import Weirds

SEND_ITEMS = 4096  # records and rows per message to the merging process (fewer, larger pickles)
FOLLOW_POLL = 0.005  # seconds between looks at a spool file its task is still writing
_M64 = (1 << 64) - 1
_C1, _C2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _mix(x: int) -> int:
    """splitmix64's finaliser, on Python ints (masked to 64 bits)."""
    x = ((x ^ (x >> 30)) * _C1) & _M64
    x = ((x ^ (x >> 27)) * _C2) & _M64
    return x ^ (x >> 31)


def _endpoint(hi: int, lo: int, port: int) -> int:
    return _mix(hi ^ _mix(lo ^ port))


@njit(cache=True, inline="always")
def _mix_u64(x):
    """`_mix` on a uint64 in a kernel (its arithmetic wraps at 64 bits)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(_C1)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(_C2)
    return x ^ (x >> np.uint64(31))


@njit(cache=True)
def _flow_hash_rows(proto, sport, dport, src_hi, src_lo, dst_hi, dst_lo, out):
    """`flow_hashes`' loop: one pass over the batch (every worker hashes every row of the
    capture, so this is part of what each one repeats)."""
    for i in range(out.shape[0]):
        p = np.uint64(proto[i])
        ported = proto[i] == PROTO_TCP or proto[i] == PROTO_UDP
        a_port = np.uint64(sport[i]) if ported else np.uint64(0)
        b_port = np.uint64(dport[i]) if ported else np.uint64(0)
        a = _mix_u64(np.uint64(src_hi[i]) ^ _mix_u64(np.uint64(src_lo[i]) ^ a_port))
        b = _mix_u64(np.uint64(dst_hi[i]) ^ _mix_u64(np.uint64(dst_lo[i]) ^ b_port))
        out[i] = _mix_u64(a + b + p)


def flow_hashes(rows: np.ndarray) -> np.ndarray:
    """The flow hash of each batch row: the same for both directions (the endpoints' hashes
    are added), ports only for TCP and UDP (ICMP types pair up differently per direction)."""
    out = np.empty(len(rows), np.uint64)
    _flow_hash_rows(rows["proto"], rows["sport"], rows["dport"], rows["src_hi"], rows["src_lo"], rows["dst_hi"],
                    rows["dst_lo"], out)
    return out


@lru_cache(maxsize=1 << 16)
def _halves(text: str) -> tuple[int, int]:
    return addr_to_halves(text)


def flow_hash(proto: int, a_h: str, a_p: int, b_h: str, b_p: int) -> int:
    """`flow_hashes` for one connection's identity (text addresses, either order)."""
    if proto not in (PROTO_TCP, PROTO_UDP):
        a_p = b_p = 0
    (ahi, alo), (bhi, blo) = _halves(a_h), _halves(b_h)
    return _mix((_endpoint(ahi, alo, a_p) + _endpoint(bhi, blo, b_p) + proto) & _M64)


class _Done(Progress):
    """A worker's progress: the bytes read, sent along with its output."""

    def __init__(self) -> None:
        super().__init__(False, 0)
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done


class Sends(NamedTuple):
    """What a worker sends for each of its records: its conn.log line (formatted in
    parallel, when the merge writes conn.log) and the record itself (only when a sink other
    than conn.log reads records: unpickling them is the merge's largest cost)."""

    conn_lines: bool
    records: bool


def _line_writer(sink: RecordSink, options: RunOptions) -> ZeekLogWriter | None:
    """A conn.log sink's writer when the sink is in the run's format: the workers' lines are
    its rows."""
    if isinstance(sink, ConnLogSink) and (sink.writer.use_json, sink.writer.ts_style) == (
            options.use_json, options.ts_style):
        return sink.writer
    return None


def sends(sinks: Sequence[RecordSink], options: RunOptions) -> Sends:
    """What the workers must send for `merge` to feed `sinks`."""
    lines = [_line_writer(sink, options) is not None for sink in sinks]
    return Sends(conn_lines=any(lines), records=not all(lines))


class Share:
    """Worker `index` of `count`: which rows it keeps, what it may write, what it sends."""

    def __init__(self, index: int, count: int, send: Sends) -> None:
        self.index = index
        self.count = count
        self.send = send
        self.foreign: set[str] = set()  # uids of live connections this worker runs but does not own
        self.progress = _Done()
        self.names = _DeferredNames(self.foreign)

    def mark(self, rows: np.ndarray) -> None:
        """Rows (one parsed batch) of connections another worker owns become KIND_FOREIGN, but
        those on the ports of an analyzer announcing other connections (FTP control, IRC:
        `services.SESSION_PORTS`), which every worker reads so that the announced one is named
        by whichever worker owns it; only their owner writes them, as for SLOW frames."""
        fast = rows["kind"] == KIND_FAST
        if not fast.any():
            return
        ours = (flow_hashes(rows) % np.uint64(self.count)) == self.index
        tcp = rows["proto"] == PROTO_TCP
        announcing = tcp & (SESSION_PORTS[rows["sport"]] | SESSION_PORTS[rows["dport"]])
        rows["kind"][fast & ~ours & ~announcing] = KIND_FOREIGN

    def owns(self, proto: int, a_h: str, a_p: int, b_h: str, b_p: int) -> bool:
        return flow_hash(proto, a_h, a_p, b_h, b_p) % self.count == self.index

    def uids(self, seed: int | None) -> ConnUids:
        return _ShareUids(seed, self)

    def weirds(self, writer: OrderedLog | None) -> Weirds:
        return _ShareWeirds(writer, self)


# A DNS name event: (stream position, uid of the looked-up connection or None for an
# answer, client, address, the lookup's start time or the answer's (name, expiry, now)).
NameEvent = tuple[tuple[int, int, int], str | None, str, str, Any]


class _DeferredNames:
    """A worker's DNS lookups and learned answers (identifiers.dns.NameEvents) with their
    stream positions: (row, 0 for a creation's lookup / 1 for an answer, order within the
    worker). A row is one connection's, owned by one worker, so positions never tie
    across workers. `row` is kept current by the fast engine (fast.engine.StreamPosition)."""

    def __init__(self, foreign: set[str]) -> None:
        self.foreign = foreign
        self.row = 0
        self.n = 0
        self.events: list[NameEvent] = []

    def lookup(self, conn: Any) -> None:
        if conn.uid not in self.foreign:
            self.n += 1
            self.events.append(((self.row, 0, self.n), conn.uid, conn.orig_h, conn.resp_h, conn.start_ts))

    def learn(self, conn: Any, address: str, name: str, expiry: float, now: float) -> None:
        if conn.uid not in self.foreign:
            self.n += 1
            self.events.append(((self.row, 1, self.n), None, conn.orig_h, address, (name, expiry, now)))

    def take(self) -> list[NameEvent]:
        events, self.events = self.events, []
        return events


class _ShareUids(ConnUids):
    def __init__(self, seed: int | None, share: Share) -> None:
        super().__init__(seed)
        self.share = share

    def conn(self, proto: int, a_h: str, a_p: int, b_h: str, b_p: int, start_ts: float) -> str:
        uid = super().conn(proto, a_h, a_p, b_h, b_p, start_ts)
        if not self.share.owns(proto, a_h, a_p, b_h, b_p):
            self.share.foreign.add(uid)
        return uid


class _ShareWeirds(Weirds):
    """Counts and writes the weirds this worker owns: its connections', and (worker 0) those
    without a connection."""

    def __init__(self, writer: OrderedLog | None, share: Share) -> None:
        super().__init__(writer)  # type: ignore[arg-type]
        self.share = share

    def report(self, name: str, ts: float | None = None, addl: str | None = None, *, uid: str | None = None,
               conn_id: tuple[str, int, str, int] | None = None, source: str | None = None) -> None:
        if uid is None:
            if self.share.index:
                return
        elif uid in self.share.foreign:
            return
        super().report(name, ts, addl, uid=uid, conn_id=conn_id, source=source)


# One epoch as sent: ((key, record, conn.log line) items, None where not sent (Sends)),
# [(log name, fields, (key, line) items)], tick time, end of input, DNS name events).
SentRecord = tuple[tuple[float, str], ConnRecord | None, str | None]
LineItem = tuple[tuple[float, str, int], str]
Epoch = tuple[list[SentRecord], list[tuple[str, list[Field], list[LineItem]]], float, bool, list[NameEvent]]


class _Spool(Epochs):
    """A worker's Epochs: each released epoch, less what other workers own, goes down the pipe."""

    def __init__(self, share: Share, pipe: Any, options: RunOptions) -> None:
        super().__init__([], limit=0)  # whole epochs only: the merge pairs them across workers
        self.share = share
        self.pipe = pipe
        self.options = options
        self.formats: dict[str, ZeekLogWriter] = {}  # rows become lines here, in parallel
        self.pending: list[Epoch] = []
        self.items = 0

    def _format(self, name: str, fields: list[Field]) -> ZeekLogWriter:
        fmt = self.formats.get(name)
        if fmt is None:
            fmt = self.formats[name] = ZeekLogWriter(os.devnull, name, fields, self.options.use_json,
                                                     self.options.ts_style)
        return fmt

    def deliver(self, records: list[RecordItem], rows: list[tuple[OrderedLog, list[RowItem]]], now: float | None,
                end: bool) -> None:
        assert now is not None  # no early release (limit 0)
        foreign, first = self.share.foreign, self.share.index == 0
        logs = []
        for log, items in rows:
            kept = [it for it in items if (it[0][1] not in foreign if it[0][1] else first)]
            if kept:
                line = self._format(log.name, log.fields).line
                logs.append((log.name, log.fields, [(key, line(row)) for key, row in kept]))
                self.items += len(kept)
        send = self.share.send
        conn_line = self._format("conn", CONN_FIELDS).line_of_values if send.conn_lines else None
        ours: list[SentRecord] = []
        for key, rec in records:
            if rec.uid in foreign:
                foreign.discard(rec.uid)
            else:
                ours.append((key, rec if send.records else None,
                             conn_line(conn_values(rec)) if conn_line is not None else None))
        self.items += len(ours)
        names = self.share.names.take()  # the merge needs the names only to name records
        self.pending.append((ours, logs, now, end, names if send.records else []))
        if end or self.items >= SEND_ITEMS:
            self.pipe.send_bytes(pickle.dumps(("epochs", self.pending, self.share.progress.done), protocol=5))
            self.pending, self.items = [], 0
        if end:
            for fmt in self.formats.values():
                fmt.close()


def _work(paths: list[str], options: RunOptions, share: Share, pipe: Any) -> None:
    """One worker: the fast engine over the whole capture, keeping its share; its epochs go
    to `pipe` (a Connection, or a `SpoolFile` for a cluster task)."""
    from pcapexfil.fast.engine import run_fast

    try:
        summary = run_fast(paths, options, [_Spool(share, pipe, options)], share)
        pipe.send_bytes(pickle.dumps(("done", summary.packets, summary.weirds)))
    except BaseException as exc:  # noqa: BLE001 (reported to the merging process, which raises)
        pipe.send_bytes(pickle.dumps(("error", f"worker {share.index}: {type(exc).__name__}: {exc}")))
    finally:
        pipe.close()


def _process(paths: list[str], options: RunOptions, share: Share, pipe: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the merging process's to handle
    _work(paths, options, share, pipe)


class SpoolFile:
    """A worker's messages in a file (length-prefixed), for workers on other machines.

    Read with `finished` (has the writing task ended?), the file is followed while its task
    still writes it, so the merge overlaps the extraction. Once the task has ended the file
    is reopened at the read position for the rest: on shared storage (NFS) only an open after
    the writer's close is sure to see all it wrote.
    """

    def __init__(self, path: str, mode: str, finished: Callable[[], bool] | None = None) -> None:
        self.path = path
        self.finished = finished
        self.final = finished is None  # nothing more will be written
        self.pos = 0
        self.f: IO[bytes] | None = None if finished is not None else open(path, mode)  # noqa: SIM115 (closed by close)

    def send_bytes(self, data: bytes) -> None:
        assert self.f is not None
        self.f.write(len(data).to_bytes(8, "little"))
        self.f.write(data)
        self.f.flush()  # the merge may be following the file

    def recv_bytes(self) -> bytes:
        return self._read(int.from_bytes(self._read(8), "little"))

    def _read(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.f.read(size - len(data)) if self.f is not None else b""
            if chunk:
                data += chunk
                self.pos += len(chunk)
            elif self.final:
                raise EOFError
            else:
                self.final = self.finished is None or self.finished()
                if not self.final:
                    time.sleep(FOLLOW_POLL)
                if self.final or self.f is None:
                    self._reopen()
        return bytes(data)

    def _reopen(self) -> None:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 (closed by close)
        except FileNotFoundError:
            if self.final:
                raise EOFError from None
            return  # the task has not started
        f.seek(self.pos)
        self.close()
        self.f = f

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def share_task(paths: list[str], options: RunOptions, index: int, count: int, send: Sends, path: str) -> float:
    """A cluster task: worker `index` of `count` over the whole capture, its output spooled
    to `path` (shared storage). Returns the CPU seconds it took."""
    cpu = time.thread_time()
    # "x": a task restarted after its worker died fails, rather than rewrite a spool the
    # merge is already reading.
    _work(paths, options, Share(index, count, send), SpoolFile(path, "xb"))
    return time.thread_time() - cpu


class WorkerError(RuntimeError):
    """A worker process failed or died."""


class _Feed:
    """The epochs one worker sent, one at a time."""

    def __init__(self, index: int, pipe: Any) -> None:
        self.index = index
        self.pipe = pipe
        self.epochs: deque[Epoch] = deque()
        self.done = 0  # bytes the worker has read
        self.final: tuple[int, dict[str, int]] | None = None

    def _receive(self) -> None:
        try:
            msg = pickle.loads(self.pipe.recv_bytes())
        except EOFError:
            raise WorkerError(f"worker {self.index} ended without a result") from None
        if msg[0] == "epochs":
            self.epochs.extend(msg[1])
            self.done = msg[2]
        elif msg[0] == "done":
            self.final = (msg[1], msg[2])
        else:
            raise WorkerError(msg[1])

    def next(self) -> Epoch:
        while not self.epochs:
            self._receive()
        return self.epochs.popleft()

    def result(self) -> tuple[int, dict[str, int]]:
        while self.final is None:
            self._receive()
        return self.final


class _Logs:
    """The merged analyzer and weird logs, each created on its first row (as LogOut does)."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.writers: dict[str, ZeekLogWriter] = {}

    def write(self, name: str, fields: list[Field], rows: list[LineItem]) -> None:
        out = self.writers.get(name)
        if out is None:
            assert self.options.out_dir is not None  # workers write rows only with an output directory
            path = os.path.join(self.options.out_dir, f"{name}.log")
            out = self.writers[name] = ZeekLogWriter(path, name, fields, self.options.use_json,
                                                     self.options.ts_style)
        out.write_lines([line for _, line in rows])

    def close(self) -> None:
        for out in self.writers.values():
            out.close()


_key = itemgetter(0)  # an item's place: the epoch order's key it was sent with


def _merged(parts: list[list[Any]]) -> list[Any]:
    """The workers' sorted lists of one epoch as one, by their items' keys: a sort of the
    runs (in C, merging them), stable like heapq.merge (an earlier worker's item first)."""
    filled = [part for part in parts if part]
    if len(filled) < 2:
        return filled[0] if filled else []
    return sorted(chain.from_iterable(filled), key=_key)


class _Names:
    """The single run's DNS name table, fed every worker's answers and lookups in stream order
    (identifiers.dns.DnsAnalyzer.on_new and on_remove, for records the workers left unnamed)."""

    def __init__(self) -> None:
        self.table = NameTable()
        self.found: dict[str, str] = {}  # uid → name, until its record comes

    def replay(self, events: Iterable[NameEvent]) -> None:
        table, found = self.table, self.found
        for _, uid, client, address, extra in events:
            if uid is None:
                table.remember(client, address, *extra)
            elif table.names:
                hit = table.name_for(client, address, extra)
                if hit is not None:
                    found[uid] = hit

    def name(self, rec: ConnRecord) -> None:
        hit = self.found.pop(rec.uid, None)
        if hit is not None and rec.server_name is None and rec.http_host is None:
            rec.dns_name = hit


def run_workers(paths: Sequence[str], options: RunOptions, sinks: list[RecordSink], workers: int,
                input_bytes: int = 0) -> RunSummary:
    """`pipeline.run` (fast engine) with `workers` processes sharing the connections; the
    same records, in the same order and with the same ticks, reach `sinks`, and the same
    logs are written. `input_bytes` sizes the progress bar. On Ctrl-C (or any error) what
    was merged is written and the sinks are closed, as a single run does."""
    opts = worker_options(options)
    send = sends(sinks, options)
    # fork: the workers start with the parent's imports (no second numba load); elsewhere spawn.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx: Any = multiprocessing.get_context(method)
    feeds: list[_Feed] = []
    procs = []
    show = options.progress
    if show is None:
        show = os.isatty(2) and input_bytes >= PROGRESS_MIN_BYTES
    if method == "fork":
        compile_before_fork(options.verify_checksums)
    try:
        for i in range(workers):
            recv, pipe = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_process, args=(list(paths), opts, Share(i, workers, send), pipe),
                               daemon=True, name=f"pcapexfil-worker-{i}")
            proc.start()
            pipe.close()
            procs.append(proc)
            feeds.append(_Feed(i, recv))
        return merge(feeds, options, sinks, Progress(show, input_bytes))
    except BaseException:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        raise
    finally:
        for proc in procs:
            proc.join()


def compile_before_fork(verify_checksums: bool) -> None:
    """On a first run (the flow table's kernel not in the cache) the kernels are compiled
    here, once, and the forked workers inherit them; each worker would compile its own."""
    from pcapexfil.fast.engine import warm_up
    from pcapexfil.fast.table import process_batch
    from pcapexfil.jit import kernel_cached

    if not kernel_cached(process_batch):
        warm_up(verify_checksums)


def worker_options(options: RunOptions) -> RunOptions:
    """What every worker runs with: one seed for all (uids), no bar of its own, and no log
    staging (the merging process writes and publishes the logs; a cluster task could not
    even be sent one, with its open files)."""
    return replace(options, seed=run_seed(options.seed), progress=False, workers=1, staging=None)


def spooled(paths: Sequence[str], finished: Sequence[Callable[[], bool]] | None = None) -> list[_Feed]:
    """The feeds of cluster tasks' spool files, in worker order; with `finished` (each
    task's), followed while the tasks write them."""
    return [_Feed(i, SpoolFile(path, "rb", finished[i] if finished is not None else None))
            for i, path in enumerate(paths)]


def merge(feeds: list[_Feed], options: RunOptions, sinks: list[RecordSink], progress: Progress) -> RunSummary:
    """Epoch k of every worker, merged by the epoch order's keys, to `sinks` and the logs;
    the sinks and logs are closed whatever happens (what was merged is kept). The workers
    sent what `sends(sinks, options)` asks for: conn.log sinks take their lines."""
    logs = _Logs(options)
    names = _Names()
    records = 0
    takes: list[tuple[bool, Callable[[Any], None]]] = []  # in sink order: (takes the line, take)
    line_sinks: list[Callable[[list[str]], None]] = []  # without records, all sinks take lines
    for sink in sinks:
        writer = _line_writer(sink, options)
        takes.append((True, writer.write_line) if writer is not None else (False, sink.on_record))
        if writer is not None:
            line_sinks.append(writer.write_lines)
    send = sends(sinks, options)
    now = 0.0
    pace = collection.relax()  # the single run's pace (its records and the detector's state are no cycles)
    try:
        while True:
            epochs = [feed.next() for feed in feeds]
            now, end = epochs[0][2], epochs[0][3]
            if any((e[2], e[3]) != (now, end) for e in epochs):
                raise WorkerError("workers disagree on network time (a bug)")
            names.replay(_merged([e[4] for e in epochs]))
            by_log: dict[str, tuple[list[Field], list[list[LineItem]]]] = {}
            for _, rows, _, _, _ in epochs:
                for name, fields, items in rows:
                    by_log.setdefault(name, (fields, []))[1].append(items)
            for name, (fields, parts) in by_log.items():
                logs.write(name, fields, _merged(parts))
            sent = _merged([e[0] for e in epochs])
            records += len(sent)
            if not send.records:
                for write_lines in line_sinks:
                    write_lines([line for _, _, line in sent])
            else:
                for _, rec, line in sent:
                    names.name(rec)
                    for by_line, take in takes:
                        take(line if by_line else rec)
            progress.update(min(feed.done for feed in feeds))
            if end:
                break
            for sink in sinks:
                sink.on_time(now)
        results = [feed.result() for feed in feeds]
    finally:
        progress.close()
        try:
            for sink in sinks:
                sink.close(now)
        finally:
            logs.close()
            for feed in feeds:
                feed.pipe.close()
            collection.restore(pace)
    weirds: Counter[str] = Counter()
    for _, counts in results:
        weirds.update(counts)
    return RunSummary(packets=results[0][0], records=records, weirds=dict(weirds))
