"""A flow table that notes *where* in the packet stream everything happens.

Cluster mode runs one flow table per capture file (a task) plus one sequential stitch table,
then merges their outputs. To merge them in exactly the order one long run would have
produced, every event carries a position in the stream:

- a record emission: (file, m, phase, x, y, n) where m is the running maximum packet time
  at that point; phase 0 is a timer batch (x = the timer's due time, y = the position where
  the timer was scheduled: one table's heap breaks ties of due times by scheduling order),
  phase 1 the processing of frame x, phase 2 the end-of-input flush (x = the connection's
  start time, y = the position of its last packet: the flush's tie order is the table's
  least-recently-active order); n is the table's own counter;
- a uid asked for: (file, frame, sub, n), the sub-packet of the frame that created the
  connection (or tunnel), with the connection's identity; the real uids are derived
  afterwards in this order (flow.uid counts repeated identities in stream order);
- a DNS answer learned, and a DNS-name lookup at a connection's first packet:
  (file, frame, sub, kind, n) with lookup (kind 0) before learn (kind 1) within a packet.

The FlowTable and the analyzers are used unchanged: the recorder replaces the table's uid
source with placeholders and wraps its timer dispatch and the DNS analyzer's hooks on the instances.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pcapexfil.flow import FlowConfig, FlowTable
from pcapexfil.flow.table import IP_LEVEL_TUNNEL_PROTOS, Connection
from pcapexfil.hooks import AnalyzerContext
from pcapexfil.identifiers import make_analyzers
from pcapexfil.identifiers.dns import DnsAnalyzer
from pcapexfil.packet import Packet
from pcapexfil.record import ConnRecord

LOOKUP_KEY = "dist_lookup"  # conn.app: position and arguments of the DNS-name lookup
LAST_KEY = "dist_last"  # conn.app: position of the connection's latest packet


@dataclass(slots=True)
class Cursor:
    """Where the driver is in the stream; read by the hooks when something happens."""

    file: int = 0
    m: float = 0.0  # running maximum of packet times
    phase: int = 0
    when: float = 0.0  # due time of the timer being fired (phase 0)
    sched: tuple = ()  # where that timer was scheduled
    frame: int = 0
    sub: int = 0


@dataclass(slots=True)
class Emitted:
    rec: ConnRecord
    order: tuple  # (file, m, phase, x, y, n)
    key: str  # repr of the flow-table key
    lookup: tuple | None  # (file, frame, sub, n, orig_h, resp_h, start_ts) or None


@dataclass
class Recorder:
    """A flow table with analyzers whose every output is tagged with its stream position."""

    config: FlowConfig
    ctx: AnalyzerContext
    prefix: str  # placeholder uid prefix, unique per table
    cursor: Cursor = field(default_factory=Cursor)
    emitted: list[Emitted] = field(default_factory=list)
    # (file, frame, sub, n, placeholder, key repr or None, tunnel key repr or None,
    #  identity: ConnUids.conn's arguments, or None for a tunnel)
    creations: list[tuple] = field(default_factory=list)
    # (file, frame, sub, n, key repr, client, address, name, expiry)
    learns: list[tuple] = field(default_factory=list)
    # (file, frame, sub, n, orig_h, resp_h, start_ts, placeholder uid): DNS-name lookups
    lookups: list[tuple] = field(default_factory=list)
    capture_logs: bool = False  # keep the analyzers' log rows (ssl, http, dns) with positions
    # (log name, position (file, m, phase, x, y, n), key repr, row)
    rows: list[tuple] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.analyzers = make_analyzers(self.ctx)
        self.table = FlowTable(self.config, self._emit, self.analyzers)
        self._n = itertools.count()
        self._side: dict[str, tuple[str, tuple | None, tuple]] = {}
        self._pending_uids: list[tuple] = []
        self._pending_learns: list[tuple] = []
        self.table.uids = _Placeholders(self)  # type: ignore[assignment]
        # Timer heap entries are (when, seq, ...): seq becomes the scheduling position, which
        # orders like the single table's counter and compares across tables.
        self.table._timer_seq = self._schedule_positions()  # type: ignore[assignment]
        dns = next(a for a in self.analyzers if isinstance(a, DnsAnalyzer))
        on_new, on_remove, remember = dns.on_new, dns.on_remove, dns.remember
        c = self.cursor

        def dns_on_new(conn: Any) -> None:
            conn.app[LOOKUP_KEY] = lk = (c.file, c.frame, c.sub, next(self._n), conn.orig_h, conn.resp_h,
                                         conn.start_ts)
            self.lookups.append((*lk, conn.uid))
            on_new(conn)

        def dns_on_remove(conn: Any, rec: ConnRecord) -> None:
            on_remove(conn, rec)
            self._side[rec.uid] = (repr(conn.key), conn.app.get(LOOKUP_KEY), conn.app.get(LAST_KEY, ()))

        def dns_remember(client: str, address: str, name: str, expiry: float, now: float) -> None:
            self._pending_learns.append((c.file, c.frame, c.sub, next(self._n), client, address, name, expiry,
                                        now))
            remember(client, address, name, expiry, now)

        self.log_fields: dict[str, list] = {}
        self._pending_rows: list[tuple] = []
        if self.capture_logs:
            for analyzer in self.analyzers:
                out = getattr(analyzer, "log", None)
                if out is not None:
                    self.log_fields[out.name] = out.fields
                    analyzer.log = _Capture(out.name, self)  # type: ignore[attr-defined]
        dns.on_new = dns_on_new  # type: ignore[method-assign]
        dns.on_remove = dns_on_remove  # type: ignore[method-assign]
        dns.remember = dns_remember  # type: ignore[method-assign]

    # -- hooks ----------------------------------------------------------------------------
    def placeholder(self, ident: tuple | None) -> str:
        """A uid standing in for the real one, noted with where it was asked for."""
        c = self.cursor
        n = next(self._n)
        uid = f"~{self.prefix}{n}"
        self._pending_uids.append((c.file, c.frame, c.sub, n, uid, ident))
        return uid

    def _schedule_positions(self) -> Iterator[tuple]:
        c = self.cursor
        while True:
            yield (c.file, c.m, c.phase, c.when if c.phase == 0 else c.frame, next(self._n))

    def weird_writer(self) -> _Capture:
        """A weird.log writer for this table's Weirds: rows kept like the analyzers' rows
        (rows without a uid — decoder, capture file — belong to no connection)."""
        return _Capture("weird", self)

    def flush_rows(self, key: str | None = None) -> None:
        """Rows written outside a connection's packet or removal, placed where the cursor is."""
        if self._pending_rows:
            c = self.cursor
            y = c.sched if c.phase == 0 else ()
            x = c.when if c.phase == 0 else c.frame
            self.rows.extend((name, (c.file, c.m, c.phase, x, y, n), key, row) for name, n, row in self._pending_rows)
            self._pending_rows.clear()

    def _emit(self, rec: ConnRecord) -> None:
        c = self.cursor
        key, lookup, last = self._side.pop(rec.uid)
        if c.phase == 0:
            x, y = c.when, c.sched
        elif c.phase == 1:
            x, y = c.frame, ()
        else:
            x, y = rec.ts, last
        if self._pending_rows:  # written by on_remove: they precede the record, at its place
            self.rows.extend((name, (c.file, c.m, c.phase, x, y, n), key, row) for name, n, row in self._pending_rows)
            self._pending_rows.clear()
        self.emitted.append(Emitted(rec, (c.file, c.m, c.phase, x, y, next(self._n)), key, lookup))

    # -- driving ----------------------------------------------------------------------------
    def advance(self, m: float) -> None:
        """Network time reached a new maximum `m`: FlowTable.advance, noting each due timer's
        time and scheduling position for the records it emits. (The drivers call this before
        every packet that raises the maximum, so FlowTable.process never advances itself.)"""
        c = self.cursor
        c.m, c.phase = m, 0
        table = self.table
        if m > table.now:
            table.now = m
        timers = table._timers
        while timers and timers[0][0] <= m:
            when, sched, conn, kind, gen = heapq.heappop(timers)
            if conn.removed:
                continue
            c.when, c.sched = when, sched  # type: ignore[assignment]
            table._fire(when, conn, kind, gen)
            self.flush_rows(repr(conn.key))  # a timer's weird that removed nothing

    def process(self, frame: int, sub: int, pkt: Packet) -> Connection | None:
        """One packet of frame `frame` (`sub`: its index among the frame's packets)."""
        c = self.cursor
        c.phase, c.frame, c.sub = 1, frame, sub
        if c.m > self.table.now:  # the stitch table sees only some packets: keep its clock (weird ts)
            self.table.now = c.m
        conn = self.table.process(pkt)
        if conn is not None:
            conn.app[LAST_KEY] = (c.file, frame, sub)
        if self._pending_uids:
            tunnels = {uid: key for key, uid in self.table._tunnel_uids.items()}
            for f, fr, s, n, uid, ident in self._pending_uids:
                if conn is not None and uid == conn.uid:
                    self.creations.append((f, fr, s, n, uid, repr(conn.key), None, ident))
                else:
                    self.creations.append((f, fr, s, n, uid, None, repr(tunnels.get(uid)), None))
            self._pending_uids.clear()
        if self._pending_rows:  # written by on_packet
            key = repr(conn.key) if conn is not None else None
            self.rows.extend((name, (c.file, c.m, 1, frame, (), n), key, row) for name, n, row in self._pending_rows)
            self._pending_rows.clear()
        if self._pending_learns:
            key = repr(conn.key) if conn is not None else None
            self.learns.extend((*e[:4], key, *e[4:]) for e in self._pending_learns)
            self._pending_learns.clear()
        return conn

    def process_frame(self, frame: int, pkts: list[Packet]) -> list[tuple[int, Packet, Connection | None]]:
        """A decoded frame as FlowTable.process_all takes it: tunnel carriers only move time."""
        if len(pkts) == 1:
            return [(0, pkts[0], self.process(frame, 0, pkts[0]))]
        carriers = {id(p.outer) for p in pkts if p.outer is not None}
        out = []
        for sub, pkt in enumerate(pkts):
            if id(pkt) in carriers and pkt.proto in IP_LEVEL_TUNNEL_PROTOS:
                continue  # time already advanced to the frame's maximum
            out.append((sub, pkt, self.process(frame, sub, pkt)))
        return out

    def flush(self, now: float) -> None:
        self.cursor.phase = 2
        self.cursor.m = float("inf")
        self.table.flush(now)

    def close(self) -> None:
        for analyzer in self.analyzers:
            analyzer.close()


class _Placeholders:
    """Stands in for the table's ConnUids: placeholders, noted for the sequential pass."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def conn(self, proto: int, a_h: str, a_p: int, b_h: str, b_p: int, start_ts: float) -> str:
        return self.recorder.placeholder((proto, a_h, a_p, b_h, b_p, start_ts))

    def tunnel(self, key: tuple) -> str:
        return self.recorder.placeholder(None)

    def expire(self, now: float) -> None:
        pass


class _Capture:
    """Stands in for an analyzer's LogOut: rows are kept (with their order) for the merge."""

    enabled = True

    def __init__(self, name: str, recorder: Recorder) -> None:
        self.name = name
        self.recorder = recorder

    def write(self, row: Any) -> None:
        r = self.recorder
        r._pending_rows.append((self.name, next(r._n), dict(row)))

    def close(self) -> None:
        pass
