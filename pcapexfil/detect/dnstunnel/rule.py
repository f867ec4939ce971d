"""The `dns-tunnel` rule: windows per (querying host, registered domain) over the DNS
transactions records carry (`ConnRecord.dns_queries`), scored when they close.

It sees every record, before the outgoing filter: a tunnel through the local resolver is a
connection between two local addresses, which the volume windows never count. Its state
(open windows, history) depends only on the records and the time line, not on the volume
windows, so the single-process Detector and the cluster path (pcapexfil.dist.score) run
this same object on the client, in stream order, and merge its closed windows into the
ordered pass at (close time, after the volume windows closing then).

Output per closed window with at least `min_names` distinct names: one exfil_detection.log
row (resp_p 53, identifier = the domain, `score.dns_tunnel` and exfiltration_score = the
score; uid, orig_ip_bytes and resp_ip_bytes those of the connections that carried the
queries, as for a volume window; duration the span from first to last query) and, at the notice threshold, a notice
EXFIL_DETECTION::DNS_Tunnel suppressed per (host, domain) for one aggregation interval.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from pcapexfil.detect.baseline import day_of
from pcapexfil.detect.dnstunnel.history import Element, History
from pcapexfil.detect.dnstunnel.score import DnsTunnelParams, Judgement, judge
from pcapexfil.detect.dnstunnel.window import DNS_PORT, DnsWindow, split_name
from pcapexfil.logs.zeek import format_double
from pcapexfil.netconf import NetSet
from pcapexfil.record import ConnRecord

if TYPE_CHECKING:
    from pcapexfil.detect.detector import Settings
    from pcapexfil.detect.stages import OrderedStage

RULE = "dns-tunnel"
COLUMN = "score.dns_tunnel"
NOTE = "EXFIL_DETECTION::DNS_Tunnel"
DAY = 86400.0


@dataclass(slots=True)
class DnsClosed:
    ts: float  # closing time (close_at, or the end of input)
    window: DnsWindow
    judgement: Judgement

    @property
    def order(self) -> tuple[float, int]:
        return (self.window.close_at, self.window.seq)


@dataclass(slots=True)
class DnsCommit:
    """The rule's part of a state commit."""

    added: list[Element]  # history elements closed since the previous commit
    cutoff: float  # stored elements with ts at or before it are deleted
    windows: list[DnsWindow]  # every open window (full replacement)


class DnsTunnelRule:
    def __init__(self, settings: Settings, tz: ZoneInfo | None, local: NetSet,
                 params: DnsTunnelParams | None = None) -> None:
        self.interval = settings.aggregation_interval
        self.mode = settings.domain_mode
        self.tz = tz
        self.local = local
        self.params = params or DnsTunnelParams()
        self.history = History(settings.baseline_days * DAY)
        self.open: dict[tuple[str, str], DnsWindow] = {}
        self._heap: list[tuple[float, int, tuple[str, str]]] = []
        self.next_seq = 0

    def add(self, rec: ConnRecord, t: float) -> None:
        """A record at effective time `t`: its port-53 queries from a local host join windows."""
        if not rec.dns_queries or rec.resp_p != DNS_PORT:
            return
        try:
            if rec.orig_h not in self.local:
                return
        except ValueError:  # not an address (damaged Zeek log)
            return
        touched: dict[int, DnsWindow] = {}
        for q in rec.dns_queries:
            parts = split_name(q.query, self.mode)
            if parts is None:
                continue
            key = (rec.orig_h, parts[0])
            win = self.open.get(key)
            if win is None:
                win = DnsWindow(self.next_seq, rec.orig_h, parts[0], t, t + self.interval)
                self.restore(win)
            win.add(q.ts, q.query, parts[1], q.qtype, q.answer_chars)
            touched[win.seq] = win
        for win in touched.values():
            win.add_conn(rec.uid, rec.orig_ip_bytes, rec.resp_ip_bytes)

    def restore(self, win: DnsWindow) -> None:
        """Open a window (new, or carried over from the state store)."""
        key = (win.orig_h, win.domain)
        self.open[key] = win
        heapq.heappush(self._heap, (win.close_at, win.seq, key))
        if win.seq >= self.next_seq:
            self.next_seq = win.seq + 1

    def next_close(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def close_next(self, ts: float) -> DnsClosed | None:
        """Close the window that closes first, at `ts`; its result, or None when it had too few
        distinct names to be judged (it is then forgotten)."""
        _, _, key = heapq.heappop(self._heap)
        win = self.open.pop(key)
        if len(win.names) < self.params.min_names:
            return None
        day = day_of(ts, self.tz)
        self.history.add(Element(win.orig_h, win.domain, day, ts, win.info, win.queries, len(win.names)))
        return DnsClosed(ts, win, judge(win, day, ts, self.history, self.params))

    # -- state store -------------------------------------------------------------------------
    def load(self, elements: list[Element], windows: list[DnsWindow]) -> None:
        for e in elements:
            self.history.add(e, record=False)
        for win in windows:
            self.restore(win)

    def take_commit(self, watermark: float) -> DnsCommit:
        cutoff = self.history.prune(watermark)
        windows = sorted(self.open.values(), key=lambda w: w.seq)
        return DnsCommit(self.history.take_added(cutoff), cutoff, windows)


def report(c: DnsClosed, stage: OrderedStage) -> None:
    """The exfil_detection.log row and, at the threshold, the notice of one closed window."""
    win, j = c.window, c.judgement
    if stage.exfil_log is not None:
        row: dict[str, Any] = {"ts": c.ts, "orig_h": win.orig_h, "resp_p": DNS_PORT, COLUMN: j.score,
                               "identifier": win.domain, "orig_ip_bytes": win.orig_ip_bytes,
                               "resp_ip_bytes": win.resp_ip_bytes, "duration": win.duration, "uid": win.uids,
                               "exfiltration_score": j.score}
        stage.exfil_log.write(row)
    if j.score < stage.settings.threshold_raise_notice_at_high_score:
        return
    text = format_double(j.score)
    stage.notices.raise_notice(
        NOTE, ts=c.ts,
        msg=f"possible DNS tunnel: host {win.orig_h} sent {win.queries} queries ({win.name_bytes} bytes of "
            f"names, {len(win.names)} distinct) under {win.domain}",
        sub=f"score {text}: {j.value:.0f} bytes of information in the names "
            f"({'known domain, usual' if j.established else 'new domain, host usual'} {j.reference:.0f}); "
            f"entropy {win.entropy:.2f} bits/char, longest label {win.max_label}, "
            f"{win.data_queries} TXT/NULL/CNAME/MX/AAAA queries, {win.answer_chars} answer characters",
        src=win.orig_h, p=DNS_PORT,
        suppress_key=(win.orig_h, win.domain),
        suppress_for=stage.settings.aggregation_interval,
    )
