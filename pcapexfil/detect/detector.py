"""The detector as a RecordSink: the same object is fed by a pcap run or by Zeek logs.

Time model (network time only). Every record has an event time: the later of the last
`on_time` and the record's end (ts + duration). Before a record is used, every due event
up to its event time runs in time order: window closes at creation + aggregation_interval,
and parameter recomputations on a fixed grid (first one `new_calculation_window` after the
first packet ever seen by the state, then every window; several due grid points with no
window closing between them collapse into the last one, which gives the same result).
At equal times a recomputation runs before a window close.

End of input. With a state store, open windows are saved and carried over into the next
run, and the watermark (the end-of-input time) is saved too, so consecutive runs over
consecutive captures equal one run over all of them. Without a state store, open windows
are closed at end of input with ts = the end-of-input time.

Stages. The work is split in pcapexfil.detect.stages: a per-key stage (windows, baseline,
parameters, raw sub-scores) and an ordered stage (running normalisation, combined score,
logs, notices). This class drives both in lockstep; the cluster path runs the per-key stage
partitioned by host on the workers and the ordered stage once (pcapexfil.dist.score).

Commits. With a state store, every recomputation commits a snapshot (watermark = its grid
time) and so does close(). After a kill, a new run may be given the same input again:
records and ticks whose event time lies before the watermark are already in the snapshot
and are skipped (counted), so nothing committed is lost or counted twice. With a log
staging (the CLI's runs over files and logs) the run commits once, at close(), together with
every log of the run (pcapexfil.logs.staging, docs/state.md): state and logs never disagree.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from pcapexfil.detect.baseline import Baseline, BaselineKey
from pcapexfil.detect.dnstunnel.rule import COLUMN as DNS_COLUMN
from pcapexfil.detect.dnstunnel.rule import RULE as DNS_RULE
from pcapexfil.detect.dnstunnel.rule import DnsClosed, DnsTunnelRule, report
from pcapexfil.detect.filter import OutgoingFilter
from pcapexfil.detect.normalize import RunningStats
from pcapexfil.detect.notices import Notices, RowWriter, http_upload_rule
from pcapexfil.detect.scoring import DEFAULT_SCORING, SCORINGS, Scoring
from pcapexfil.detect.stages import Closed, KeyStage, OrderedStage
from pcapexfil.detect.state import Commit, StateError, StateStore
from pcapexfil.detect.windows import IDENTIFIERS, WindowTable
from pcapexfil.logs.exfil import exfil_fields
from pcapexfil.logs.notice import NOTICE_FIELDS
from pcapexfil.logs.staging import LogStaging
from pcapexfil.logs.zeek import ZeekLogWriter
from pcapexfil.netconf import MULTICAST_NETS, PRIVATE_NETS
from pcapexfil.record import ConnRecord

log = logging.getLogger("pcapexfil.detect")

DAY = 86400.0
RULES = ("http-upload", DNS_RULE)


@dataclass(slots=True)
class Settings:
    """Every setting of the reference, with its default, plus pcapexfil's own."""

    max_baseline_hold_time: float = 30 * DAY
    new_calculation_window: float = 3600.0
    aggregation_interval: float = 3 * 3600.0
    baseline_days: int = 14
    baseline_min_days_for_score: int = 10
    enabled_identifier: tuple[str, ...] = IDENTIFIERS
    multicast_address_range: tuple[str, ...] = MULTICAST_NETS
    threshold_raise_notice_at_high_score: float = 0.8
    local_nets: tuple[str, ...] = PRIVATE_NETS
    domain_mode: Literal["psl", "last2"] = "psl"
    tz: str | None = None  # zoneinfo name for day boundaries; None: UTC
    rules: tuple[str, ...] = RULES  # every rule is on by default
    scoring: str = DEFAULT_SCORING  # see pcapexfil.detect.scoring

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        for name in ("max_baseline_hold_time", "new_calculation_window", "aggregation_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.baseline_days < 1 or self.baseline_min_days_for_score < 1:
            raise ValueError("baseline_days and baseline_min_days_for_score must be at least 1")
        unknown = set(self.enabled_identifier) - set(IDENTIFIERS)
        if unknown:
            raise ValueError(f"unknown identifier {sorted(unknown)[0]!r} (known: {', '.join(IDENTIFIERS)})")
        unknown = set(self.rules) - set(RULES)
        if unknown:
            raise ValueError(f"unknown rule {sorted(unknown)[0]!r} (known: {', '.join(RULES)})")
        if self.scoring not in SCORINGS:
            raise ValueError(f"unknown scoring {self.scoring!r} (known: {', '.join(SCORINGS)})")
        if self.domain_mode not in ("psl", "last2"):
            raise ValueError(f"unknown domain mode {self.domain_mode!r}")
        if self.tz is not None:
            try:
                ZoneInfo(self.tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.tz!r}") from None


@dataclass(slots=True)
class DetectorStats:
    records: int = 0
    outgoing: int = 0
    windows_closed: int = 0
    scored: int = 0
    skipped_before_watermark: int = 0


class Detector:
    """RecordSink: outgoing filter → windows → scoring chain → exfil_detection.log / notice.log."""

    def __init__(
        self,
        settings: Settings | None = None,
        out_dir: str | None = None,
        store: StateStore | None = None,
        use_json: bool = False,
        ts_style: Literal["epoch", "millis", "iso8601"] = "epoch",
        staging: LogStaging | None = None,
    ) -> None:
        self.settings = s = settings or Settings()
        s.validate()
        self.tz = ZoneInfo(s.tz) if s.tz else None
        self.filter = OutgoingFilter(s.local_nets, s.multicast_address_range)
        self.keys = KeyStage(s, self.tz, track_changes=store is not None)
        self.stats = DetectorStats()
        self.ordered = OrderedStage(s, self.keys.scoring, self.stats)
        self.dns = DnsTunnelRule(s, self.tz, self.filter.local) if DNS_RULE in s.rules else None
        self.columns = self.keys.scoring.columns + ([DNS_COLUMN] if self.dns is not None else [])
        self.store = store
        self.staging = staging
        # Metadata the run's commits store besides the detector's own (the CLI's run key).
        self.extra_meta: dict[str, str] = {}
        self.notice_log: RowWriter | None = None
        if out_dir is not None:
            self.exfil_log = ZeekLogWriter(os.path.join(out_dir, "exfil_detection.log"), "exfil_detection",
                                           exfil_fields(self.columns), use_json=use_json, ts_style=ts_style,
                                           staging=staging)
            self.notice_log = ZeekLogWriter(os.path.join(out_dir, "notice.log"), "notice", NOTICE_FIELDS,
                                            use_json=use_json, ts_style=ts_style, staging=staging)
            self.notices.writer = self.notice_log
        self.now: float | None = None  # effective network time (monotonic)
        self.input_now: float | None = None  # latest time seen in this run's input
        self.watermark: float | None = None
        self._closed = False
        self._store_failed = False  # after a failed commit nothing more is committed
        if store is not None:
            self._load(store)
            self.keys.loaded()

    # -- the stages' state, as attributes of the detector ----------------------------------
    @property
    def windows(self) -> WindowTable:
        return self.keys.windows

    @property
    def baseline(self) -> Baseline:
        return self.keys.baseline

    @property
    def params(self) -> dict[BaselineKey, np.ndarray]:
        return self.keys.params

    @property
    def scoring(self) -> Scoring:
        return self.keys.scoring

    @property
    def next_recalc(self) -> float | None:
        return self.keys.next_recalc

    @next_recalc.setter
    def next_recalc(self, value: float | None) -> None:
        self.keys.next_recalc = value

    @property
    def _recompute_all(self) -> bool:
        return self.keys.recompute_all

    @property
    def norms(self) -> dict[str, RunningStats]:
        return self.ordered.norms

    @property
    def notices(self) -> Notices:
        return self.ordered.notices

    @property
    def exfil_log(self) -> RowWriter | None:
        return self.ordered.exfil_log

    @exfil_log.setter
    def exfil_log(self, writer: RowWriter | None) -> None:
        self.ordered.exfil_log = writer

    # -- RecordSink --------------------------------------------------------------------------
    def on_time(self, now: float) -> None:
        t = self._event_time(now)
        if t is not None:
            self._advance(t)

    def on_record(self, rec: ConnRecord) -> None:
        t = self._event_time(rec.ts + (rec.duration or 0.0))
        if t is None:
            self.stats.skipped_before_watermark += 1
            return
        self._advance(t)
        self.stats.records += 1
        if "http-upload" in self.settings.rules:
            http_upload_rule(rec, t, self.notices)
        if self.dns is not None:
            self.dns.add(rec, t)
        if self.filter(rec):
            self.stats.outgoing += 1
            self.keys.add(rec, t)

    def close(self, now: float) -> None:
        """End of input: carry open windows over (state store) or close them (in memory)."""
        if self._closed:
            return
        self._closed = True
        try:
            t = self._event_time(now)
            if t is not None:
                self._advance(t)
            end = self.now
            if self.store is None:
                if end is not None:
                    self._drain(end)
            elif end is not None and self.may_commit():
                self._commit(end)
        finally:
            self.close_logs()
        self.warn_skipped()

    def may_commit(self) -> bool:
        """False after a failed commit, and when a staged run is being closed because it failed
        (called from a `finally` while an exception propagates): such a run commits nothing,
        neither state nor logs."""
        return not self._store_failed and not (self.staging is not None and sys.exc_info()[0] is not None)

    def close_logs(self) -> None:
        for writer in (self.exfil_log, self.notice_log):
            if writer is not None:
                writer.close()  # type: ignore[attr-defined]

    def warn_skipped(self) -> None:
        if self.stats.skipped_before_watermark:
            log.warning("%d records older than the state's watermark were skipped (already in the state)",
                        self.stats.skipped_before_watermark)

    # -- time --------------------------------------------------------------------------------
    def _event_time(self, ts: float) -> float | None:
        """The effective time of an input event, or None if the state already holds it."""
        if not math.isfinite(ts):
            return None if self.now is None else self.now
        # max() spelled as comparisons (same result): this runs for every record and tick.
        latest = self.input_now
        if latest is None or ts > latest:
            self.input_now = latest = ts
        if self.watermark is not None and latest < self.watermark:
            return None
        now = self.now
        t = latest if now is None or latest > now else now
        keys = self.keys
        if keys.next_recalc is None:
            keys.next_recalc = t + self.settings.new_calculation_window
        return t

    def _advance(self, t: float) -> None:
        """Everything due up to `t` in time order: the DNS tunnel rule's windows close after
        the volume windows (and grid points) due at the same time."""
        dns = self.dns
        if dns is not None:
            while (close := dns.next_close()) is not None and close <= t:
                self.keys.advance(close, self)
                self._report(dns.close_next(close))
        self.keys.advance(t, self)
        self.now = t

    def _drain(self, end: float) -> None:
        """End of input without a state store: every open window closes at `end`, in the order
        of their close times (as `_advance`)."""
        dns = self.dns
        if dns is not None:
            while (close := dns.next_close()) is not None:
                self.keys.drain(end, self, upto=close)
                self._report(dns.close_next(end))
        self.keys.drain(end, self)

    def _report(self, closed: DnsClosed | None) -> None:
        if closed is not None:
            report(closed, self.ordered)

    # -- StageOutput: the per-key stage's events, straight into the ordered stage -----------
    def recalc(self, when: float) -> None:
        self.notices.expire(when)
        if self.store is not None and self.staging is None:
            self._commit(when)

    def closed(self, c: Closed) -> None:
        self.ordered.window(c)

    # -- persistence -------------------------------------------------------------------------
    def _fixed_settings(self) -> dict[str, str]:
        return {"domain_mode": self.settings.domain_mode, "tz": self.settings.tz or "UTC"}

    def _load(self, store: StateStore) -> None:
        store.check_settings(self._fixed_settings())
        state = store.load()
        keys = self.keys
        for key, elem in state.baseline:
            keys.baseline.add(key, elem, record=False)
        keys.params = {k: np.asarray(v, dtype=np.float64) for k, v in state.params.items()}
        for name, (n, mean, m2) in state.norms.items():
            if name in self.norms:
                self.norms[name] = RunningStats(n, mean, m2)
        for win in state.windows:
            keys.windows.restore(win)
        self.notices.suppressed = dict(state.suppress)
        if self.dns is not None:
            self.dns.load(state.dns_history, state.dns_windows)
        meta = state.meta
        if "watermark" in meta:
            self.watermark = float(meta["watermark"])
            self.now = self.watermark
        if "next_recalc" in meta:
            keys.next_recalc = float(meta["next_recalc"])
        keys.recompute_all = meta.get("recompute_all") == "1"

    def _commit(self, watermark: float) -> None:
        keys = self.keys
        changed, closed = keys.windows.take_changes()
        self.commit(Commit(
            baseline=keys.baseline.delta,
            params=keys.params_changed,
            norms={},
            windows=changed,
            suppress={},
            windows_closed=closed,
        ), watermark)
        keys.baseline.take_delta()
        keys.params_changed = {}

    def commit(self, c: Commit, watermark: float) -> None:
        """Commit `c` with the ordered stage's state (norms, suppressions) and the run's metadata."""
        assert self.store is not None
        c.norms = {name: (st.n, st.mean, st.m2) for name, st in self.norms.items()}
        c.suppress = dict(self.notices.suppressed)
        c.meta = {"watermark": repr(watermark), "recompute_all": "1" if self.keys.recompute_all else "0",
                  **self.extra_meta}
        if self.dns is not None:
            c.dns = self.dns.take_commit(watermark)
        if self.next_recalc is not None:
            c.meta["next_recalc"] = repr(self.next_recalc)
        try:
            self.store.commit(c, self.staging)
        except StateError:
            # The state keeps its last snapshot; a rerun on the same input continues from there.
            self._store_failed = True
            raise


# Where the warm-up's connections go: a.root-servers.net's addresses, outside every range a
# local network list names by default.
_WARM_UP_RESPONDERS = ("198.41.0.4", "2001:503:ba3e::2:30")
_WARM_UP_PER_DAY = 8  # connections a day: windows of every aggregation interval close


def _warm_up_record(orig: str, resp: str, ts: float, day: int, k: int) -> ConnRecord:
    """A connection whose sizes vary by day and hour (a spread baseline: every score is set)."""
    sent = 1000 * (k + day + 1)
    return ConnRecord(ts, f"Cwarm{day}x{k}", orig, 40000 + k, resp, 443, "tcp", service=["ssl"], duration=1.5 + k,
                      orig_bytes=sent, resp_bytes=5000 + k, conn_state="SF", orig_pkts=10 + k,
                      orig_ip_bytes=sent + 400 + 40 * k, resp_pkts=8 + day, resp_ip_bytes=5400 + 40 * day,
                      server_name="warm-up.example")


def warm_up(settings: Settings) -> None:
    """Compile (first run) or load the detector's kernels before a live capture starts.

    They are otherwise first needed at the first recalculation or window score, an hour or
    more into the capture, and a compile then stalls the process that reads the ring
    (0.8 s for the first on a 2-core machine: the ring overflows). A throwaway in-memory
    Detector with the same settings is fed one outgoing key's connections over enough
    days to be scored, so every kernel its scoring chain calls runs with the types real
    records give it."""
    det = Detector(settings)
    nets = [ipaddress.ip_network(n, strict=False) for n in settings.local_nets]
    pair = next(((str(n[1]), resp) for n in nets if n.num_addresses > 1 for resp in _WARM_UP_RESPONDERS
                 if det.filter(_warm_up_record(str(n[1]), resp, 0.0, 0, 0))), None)
    if pair is None:
        return  # no outgoing connection can be made up: none is ever counted either
    step = DAY / _WARM_UP_PER_DAY
    for day in range(settings.baseline_min_days_for_score + 2):
        for k in range(_WARM_UP_PER_DAY):
            ts = day * DAY + k * step
            det.on_record(_warm_up_record(*pair, ts, day, k))
            det.on_time(ts + 1.0)
    det.close((settings.baseline_min_days_for_score + 3) * DAY)
