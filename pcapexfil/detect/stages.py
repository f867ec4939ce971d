"""The detector's two stages: per-key work and the ordered pass.

KeyStage holds what depends only on one host's outgoing connections and on the global
time line: windows, baselines, parameters (the numba recomputation) and each hook's `run`
(raw sub-scores, the New_Protocol test, the robust volume score). OrderedStage holds what
is shared by all keys and so must see the closed windows in the global close order: the
running normalisation (hooks' `finish`), the combined score, exfil_detection.log rows and
notices with their suppression.

The single-process Detector drives both in lockstep. The cluster path
(pcapexfil.dist.score) runs one KeyStage per partition of hosts on the workers and feeds
the merged results to one OrderedStage; both paths run this same code. A host's keys must
stay in one partition: the New_Protocol test reads all of the host's baselines.

Why a partition sees the same per-key state as one run: a key changes only when one of its
windows closes (an element joins) and at recomputation grid points (pruning). Before a
window closes at time c, both paths have run the last grid point G(c) <= c, and pruning is
monotone in time and idempotent, so grid points skipped by a partition that had no event
near them change nothing for its keys (tests/test_dist_scoring.py checks it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np

from pcapexfil.detect.baseline import Baseline, BaselineKey, day_of
from pcapexfil.detect.kernels import recompute_params
from pcapexfil.detect.normalize import RunningStats
from pcapexfil.detect.notices import Notices, RowWriter
from pcapexfil.detect.scores import NORMALIZED, WindowContext
from pcapexfil.detect.scoring import Scoring, make_scoring
from pcapexfil.detect.windows import Window, WindowTable
from pcapexfil.logs.zeek import format_double
from pcapexfil.record import ConnRecord

if TYPE_CHECKING:
    from pcapexfil.detect.detector import DetectorStats, Settings


@dataclass(slots=True)
class Closed:
    """A window closed by the per-key stage: what the ordered stage needs of it."""

    ts: float  # closing time (its close_at, or the end of input for a window closed there)
    window: Window
    scorable: bool
    values: list[float | None]  # each hook's `run` value, in chain order

    @property
    def order(self) -> tuple[float, int]:
        """Position in the global close order (close time, then creation order)."""
        return (self.window.close_at, self.window.seq)


class StageOutput(Protocol):
    def recalc(self, when: float) -> None:
        """A recomputation grid point ran at `when`."""

    def closed(self, c: Closed) -> None:
        """A window closed (in close order)."""


class KeyStage:
    """Windows, baselines, parameters and the per-key part of the hook chain."""

    def __init__(self, settings: Settings, tz: ZoneInfo | None = None, track_changes: bool = False) -> None:
        self.settings = s = settings
        self.tz = tz
        # track_changes: a state store commits the windows that changed (WindowTable.take_changes).
        self.windows = WindowTable(s.aggregation_interval, s.enabled_identifier, s.domain_mode, track_changes)
        self.baseline = Baseline()
        self.params: dict[BaselineKey, np.ndarray] = {}
        self.scoring: Scoring = make_scoring(s.scoring)
        self.chain = self.scoring.chain()
        self.next_recalc: float | None = None
        self.params_changed: dict[BaselineKey, list[float] | None] = {}  # since the last commit
        self.recompute_all = False

    def loaded(self) -> None:
        """State restored (baseline, params, windows, next_recalc): the parameters date from the
        last grid point."""
        self.baseline.dirty.clear()
        if self.recompute_all or any(k not in self.params for k in self.baseline.days):
            self.recompute_all = True  # rows imported or edited outside a run
        if self.next_recalc is not None:
            self.scoring.recomputed([], self.next_recalc - self.settings.new_calculation_window)

    def advance(self, t: float, out: StageOutput) -> None:
        """Run every grid point and window close due up to network time `t`, in time order
        (a grid point before a close at the same time; due grid points with no close between
        them collapse into the last one)."""
        step = self.settings.new_calculation_window
        while True:
            close = self.windows.next_close()
            recalc = self.next_recalc
            if recalc is not None and recalc <= t and (close is None or recalc <= close):
                limit = t if close is None else min(t, close)
                grid = recalc + math.floor((limit - recalc) / step) * step
                self.next_recalc = grid + step  # before out.recalc: a commit saves the schedule
                self.recalc(grid)
                out.recalc(grid)
                continue
            if close is not None and close <= t:
                win = self.windows.pop_next()
                out.closed(self.close(win, win.close_at))
                continue
            break

    def add(self, rec: ConnRecord, t: float, seq: int | None = None) -> None:
        """An outgoing connection at effective time `t` (after `advance(t)`)."""
        self.windows.add(rec, t, seq)

    def drain(self, end: float, out: StageOutput, upto: float | None = None) -> None:
        """End of input without a state store: close every open window at `end` (with `upto`,
        those whose close time is at most `upto`)."""
        windows = self.windows
        while (close := windows.next_close()) is not None and (upto is None or close <= upto):
            win = windows.pop_next()
            out.closed(self.close(win, end))

    # -- the reference's calculate_parameters event ----------------------------------------
    def recalc(self, when: float) -> None:
        s = self.settings
        self.baseline.prune(when, s.baseline_days, s.max_baseline_hold_time)
        dirty = self.baseline.dirty
        keys = sorted(set(self.baseline.days) | dirty) if self.recompute_all else sorted(dirty)
        self.recompute_all = False
        dirty.clear()
        present = [k for k in keys if k in self.baseline]
        for k in keys:
            if k not in self.baseline and self.params.pop(k, None) is not None:
                self.params_changed[k] = None
        if present:
            b, d, offsets = self.baseline.csr(present)
            table = recompute_params(b, d, offsets)
            for k, row in zip(present, table, strict=True):
                self.params[k] = row
                self.params_changed[k] = row.tolist()
        self.scoring.recomputed(keys, when)

    # -- the per-key half of the calculate_score hook chain ----------------------------------
    def close(self, win: Window, ts: float) -> Closed:
        bkey = (win.orig_h, win.resp_p, win.proto)
        ctx = WindowContext(ts, day_of(ts, self.tz), win, bkey, self.baseline, self.params.get(bkey), self.settings)
        values = [hook.run(ctx) for hook in self.chain]
        return Closed(ts, win, ctx.scorable, values)


class OrderedStage:
    """The running normalisation, the combined score, exfil_detection.log and notices, in the
    global close order."""

    def __init__(self, settings: Settings, scoring: Scoring, stats: DetectorStats,
                 exfil_log: RowWriter | None = None, notice_log: RowWriter | None = None) -> None:
        self.settings = settings
        self.scoring = scoring
        self.chain = scoring.chain()
        # Each hook's `finish` (None without one) and column, looked up once, not per window.
        self.finishers = [(getattr(hook, "finish", None), hook.column) for hook in self.chain]
        self.stats = stats
        self.exfil_log = exfil_log
        self.norms = {name: RunningStats() for name in NORMALIZED}
        self.notices = Notices(notice_log)

    def window(self, c: Closed) -> None:
        self.stats.windows_closed += 1
        win, ts = c.window, c.ts
        scores: dict[str, float | None] = {}
        for (finish, column), value in zip(self.finishers, c.values, strict=True):
            if finish is not None:
                value = finish(value, c, self)
            if column is not None:
                scores[column] = value
        if not c.scorable:
            return
        self.stats.scored += 1
        final = self.scoring.combine(scores)
        if self.exfil_log is not None:
            row: dict[str, Any] = {"ts": ts, "orig_h": win.orig_h, "resp_p": win.resp_p, **scores,
                                   "identifier": win.identifier, "orig_ip_bytes": win.orig_ip_bytes,
                                   "resp_ip_bytes": win.resp_ip_bytes, "duration": win.duration,
                                   "uid": win.uids, "exfiltration_score": final}
            self.exfil_log.write(row)
        if final >= self.settings.threshold_raise_notice_at_high_score:
            text = format_double(final)
            self.notices.raise_notice(
                "EXFIL_DETECTION::High_Score", ts=ts,
                msg=f"possible exfiltration detected: score {text} from host {win.orig_h} "
                    f"with protocol {win.resp_p}/{win.proto}",
                sub=text, src=win.orig_h, p=win.resp_p,
                suppress_key=(win.orig_h, win.resp_p, win.proto, win.identifier),
                suppress_for=self.settings.aggregation_interval,
            )
