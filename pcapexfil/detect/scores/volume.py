"""The `robust` scoring's volume score: how unusual a window's upload is for its own key.

Every figure comes from the (orig_h, resp_p) baseline itself, so there is no running state
shared by all keys (the reference's global normalisation is what keeps its scores small):

- History. Upload sizes are compared on a log scale, ln(1 + orig_ip_bytes), because transfer
  sizes are heavy-tailed. A key's statistics are the median and MAD of that value over its
  baseline elements, per identifier and for the whole key.
- Reference. A window whose identifier is *established* (elements on at least
  `min_ident_days` days) is compared with that identifier's own history: a daily backup is
  judged against earlier backups, not against web browsing. Any other identifier (new or
  rare destination) is compared with the whole key's history, and its value is the sum of
  the identifier's uploads over the last `cumulative_window` (current window included), so
  an upload split over several windows (low and slow) adds up.
- Score. z = (value - median) / max(1.4826 * MAD, min_scale); the tanh-estimator's scale is
  chosen so that z = `z_alert` gives exactly the notice threshold; a soft volume floor
  (1 - exp(-excess / volume_floor), excess = bytes above the typical window) keeps small
  absolute amounts from scoring however unusual they are.

Statistics of a key use its elements closed before the last parameter recomputation (as the
reference's parameters do); they are derived from the baseline alone, so a restart from the
state store gives the same scores without any extra persisted state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from pcapexfil.detect.baseline import Baseline, BaselineKey
from pcapexfil.detect.scores.base import WindowContext

# Columns of the statistics rows returned by `group_stats`.
G_N, G_DAYS, G_MED, G_MAD = range(4)
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this = its standard deviation


@dataclass(frozen=True, slots=True)
class VolumeParams:
    """Tunables of the volume score (defaults tuned on synth seeds 1 and 2; see docs/scoring.md)."""

    threshold: float = 0.8  # the notice threshold that z_alert maps to
    z_alert: float = 4.0  # robust z-score (log scale) that reaches the threshold
    min_scale: float = 0.5  # smallest robust sigma on the log scale (0.5 = a factor of 1.65)
    volume_floor: float = 256 * 1024.0  # bytes above the typical window for (1 - 1/e) of full weight
    min_ident_days: int = 3  # days of history that make an identifier established
    min_key_elements: int = 20  # elements the whole key needs before new identifiers are scored
    cumulative_window: float = 86400.0  # uploads of a new identifier summed over this long

    @property
    def z_scale(self) -> float:
        return self.z_alert / math.atanh(self.threshold)


@njit(cache=True)
def _median_sorted(s: np.ndarray) -> float:
    n = s.shape[0]
    mid = n // 2
    if n % 2 == 1:
        return float(s[mid])
    return (float(s[mid - 1]) + float(s[mid])) / 2.0


@njit(cache=True)
def group_stats(values: np.ndarray, groups: np.ndarray, days: np.ndarray, ngroups: int) -> np.ndarray:
    """Per group g in [0, ngroups): element count, distinct days, median and MAD of `values`.

    Row `ngroups` holds the same figures over every element. Median and MAD are NaN for an
    empty group. `groups` and `days` are small non-negative integer codes.
    """
    out = np.zeros((ngroups + 1, 4))
    out[:, G_MED] = np.nan
    out[:, G_MAD] = np.nan
    n = values.shape[0]
    if n == 0:
        return out
    nday = 0
    for i in range(n):
        if days[i] + 1 > nday:
            nday = days[i] + 1
    order = np.argsort(groups * nday + days, kind="mergesort")
    lo = 0
    while lo < n:
        g = groups[order[lo]]
        hi = lo
        distinct = 0
        last_day = -1
        while hi < n and groups[order[hi]] == g:
            if days[order[hi]] != last_day:
                distinct += 1
                last_day = days[order[hi]]
            hi += 1
        seg = np.empty(hi - lo)
        for j in range(hi - lo):
            seg[j] = values[order[lo + j]]
        seg.sort()
        med = _median_sorted(seg)
        dev = np.abs(seg - med)
        dev.sort()
        out[g, G_N] = hi - lo
        out[g, G_DAYS] = distinct
        out[g, G_MED] = med
        out[g, G_MAD] = _median_sorted(dev)
        lo = hi
    allv = values.copy()
    allv.sort()
    med = _median_sorted(allv)
    dev = np.abs(allv - med)
    dev.sort()
    out[ngroups, G_N] = n
    distinct_days = np.unique(days)
    out[ngroups, G_DAYS] = distinct_days.shape[0]
    out[ngroups, G_MED] = med
    out[ngroups, G_MAD] = _median_sorted(dev)
    return out


@njit(cache=True)
def volume_score(value: float, med: float, mad: float, z_alert: float, threshold: float, min_scale: float,
                 volume_floor: float) -> tuple[float, float]:
    """(score in [0, 1), robust z) of `value` bytes against a log-scale median/MAD; (NaN, NaN) without history."""
    if math.isnan(med) or math.isnan(mad):
        return np.nan, np.nan
    scale = max(MAD_TO_SIGMA * mad, min_scale)
    z = (math.log1p(max(value, 0.0)) - med) / scale
    if z <= 0.0:
        return 0.0, z
    excess = max(value, 0.0) - math.expm1(med)
    gate = 1.0 - math.exp(-excess / volume_floor) if excess > 0.0 else 0.0
    return math.tanh(z * math.atanh(threshold) / z_alert) * gate, z


@dataclass(slots=True)
class KeyStats:
    """Statistics of one (orig_h, resp_p) baseline: whole key, and per identifier."""

    key: np.ndarray  # row of group_stats for every element
    idents: dict[str, np.ndarray] = field(default_factory=dict)


def key_stats(baseline: Baseline, bkey: BaselineKey, before: float) -> KeyStats | None:
    """Statistics of `bkey`'s elements closed before `before`; None when it has none."""
    days = baseline.days.get(bkey)
    if not days:
        return None
    values: list[float] = []
    groups: list[int] = []
    daycodes: list[int] = []
    codes: dict[str, int] = {}
    for d, (_, elems) in enumerate(sorted(days.items())):
        for e in elems:
            if e.ts < before:
                values.append(math.log1p(max(e.orig_ip_bytes, 0)))
                groups.append(codes.setdefault(e.identifier, len(codes)))
                daycodes.append(d)
    if not values:
        return None
    table = group_stats(np.asarray(values), np.asarray(groups, dtype=np.int64),
                        np.asarray(daycodes, dtype=np.int64), len(codes))
    return KeyStats(table[len(codes)], {ident: table[c] for ident, c in codes.items()})


class VolumeModel:
    """Lazily computed KeyStats, valid until the key's next parameter recomputation."""

    def __init__(self) -> None:
        self.asof: float | None = None  # time of the last recomputation
        self.cache: dict[BaselineKey, KeyStats | None] = {}

    def recomputed(self, keys: list[BaselineKey], when: float) -> None:
        """The detector recomputed parameters at `when` for `keys` (changed or dropped)."""
        self.asof = when
        for k in keys:
            self.cache.pop(k, None)

    def stats(self, baseline: Baseline, bkey: BaselineKey) -> KeyStats | None:
        if self.asof is None:
            return None
        if bkey not in self.cache:
            self.cache[bkey] = key_stats(baseline, bkey, self.asof)
        return self.cache[bkey]


def recent_upload(baseline: Baseline, bkey: BaselineKey, identifier: str, now: float, span: float) -> float:
    """orig_ip_bytes of `identifier`'s elements in `bkey` closed within `span` before `now` (inclusive)."""
    total = 0.0
    days = baseline.days.get(bkey, {})
    for day in sorted(days, reverse=True)[: int(span // 86400) + 2]:
        for e in days[day]:
            if e.identifier == identifier and now - span < e.ts <= now:
                total += e.orig_ip_bytes
    return total


class Volume:
    """Sub-score `score.volume` of the robust scoring (runs after the window joined the baseline)."""

    name = "volume"
    priority = 0
    column = "score.volume"

    def __init__(self, model: VolumeModel, params: VolumeParams) -> None:
        self.model = model
        self.params = params

    def run(self, ctx: WindowContext) -> float | None:
        if not ctx.scorable:
            return None
        st = self.model.stats(ctx.baseline, ctx.bkey)
        if st is None:
            return None
        p = self.params
        w = ctx.window
        ident = st.idents.get(w.identifier)
        if ident is not None and ident[G_DAYS] >= p.min_ident_days:
            value, med, mad = float(w.orig_ip_bytes), ident[G_MED], ident[G_MAD]
        elif st.key[G_N] >= p.min_key_elements:
            value = recent_upload(ctx.baseline, ctx.bkey, w.identifier, ctx.ts, p.cumulative_window)
            med, mad = st.key[G_MED], st.key[G_MAD]
        else:
            return None
        score, _ = volume_score(value, float(med), float(mad), p.z_alert, p.threshold, p.min_scale,
                                p.volume_floor)
        return None if math.isnan(score) else float(score)
