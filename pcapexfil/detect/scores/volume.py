"""The `robust` scoring's volume score: how unusual a window's upload is for its own key.

Every figure comes from the (orig_h, resp_p) baseline itself, so there is no running state
shared by all keys (the reference's global normalisation is what keeps its scores small).
Upload sizes (orig_ip_bytes) are compared on a log scale, ln(1 + bytes), because transfer
sizes are heavy-tailed; statistics are medians and MADs, per identifier and for the key.

What a window is judged against:
- Established identifier (elements on at least `min_ident_days` days): the window's bytes
  against the identifier's *daily maximum* (median and MAD over days), so a daily backup
  or sync burst is judged against earlier days' biggest transfer to the same place.
- New domain or JA3S: the identifier's uploads summed over the last `cumulative_window`
  (current window included, so low-and-slow adds up) against the key's median window,
  with a fixed log-scale unit `new_scale` (the key's MAD mixes unrelated destinations).
- New address: the same sum against the key's daily maximum. Services rotate addresses, so
  a first-seen address of a known service is weak evidence; its name is judged above.

Score: z = (ln(1 + bytes) - centre) / scale; tanh maps z = `z_alert` to the notice threshold;
a soft volume floor, 1 - exp(-excess / volume_floor) with excess the bytes above the centre,
keeps small absolute amounts low however unusual they are.

A key's statistics use its elements closed before the last parameter recomputation (as the
reference's parameters do) and are derived from the baseline alone, so a run continued from
the state store scores exactly as one uninterrupted run, with no extra persisted state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pcapexfil.detect.baseline import Baseline, BaselineKey
from pcapexfil.detect.scores.base import WindowContext
from pcapexfil.identifiers.domain import is_ip_literal
from pcapexfil.jit import njit

# Columns of the statistics rows returned by `group_stats`.
G_N, G_DAYS, G_MED, G_MAD, G_DMAX_MED, G_DMAX_MAD = range(6)
N_STATS = 6
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this = its standard deviation


@dataclass(frozen=True, slots=True)
class VolumeParams:
    """Tunables of the volume score (defaults tuned on synth seeds 1 and 2; see docs/scoring.md)."""

    threshold: float = 0.8  # the notice threshold that z_alert maps to
    z_alert: float = 4.0  # robust z-score (log scale) that reaches the threshold
    min_scale: float = 0.5  # smallest robust sigma on the log scale (0.5 = a factor of 1.65)
    new_scale: float = 1.0  # log-scale unit for a new domain or fingerprint (z_alert 4: 55x the usual window)
    volume_floor: float = 1024 * 1024.0  # bytes above the typical window for (1 - 1/e) of full weight
    min_ident_days: int = 3  # days of history that make an identifier established
    min_key_elements: int = 20  # elements the whole key needs before new identifiers are scored
    cumulative_window: float = 86400.0  # uploads of a new identifier summed over this long


@njit(cache=True)
def _median_sorted(s: np.ndarray) -> float:
    n = s.shape[0]
    mid = n // 2
    if n % 2 == 1:
        return float(s[mid])
    return (float(s[mid - 1]) + float(s[mid])) / 2.0


@njit(cache=True)
def _median_mad(seg: np.ndarray) -> tuple[float, float]:
    """Median and MAD of `seg` (sorted in place)."""
    seg.sort()
    med = _median_sorted(seg)
    dev = np.abs(seg - med)
    dev.sort()
    return med, _median_sorted(dev)


@njit(cache=True)
def _segment_stats(values: np.ndarray, days: np.ndarray, order: np.ndarray, lo: int, hi: int,
                   row: np.ndarray) -> None:
    """Figures of the elements order[lo:hi] (sorted by day) into `row`."""
    seg = np.empty(hi - lo)
    daymax = np.empty(hi - lo)
    distinct = 0
    for j in range(hi - lo):
        i = order[lo + j]
        seg[j] = values[i]
        if j == 0 or days[i] != days[order[lo + j - 1]]:
            daymax[distinct] = values[i]
            distinct += 1
        elif values[i] > daymax[distinct - 1]:
            daymax[distinct - 1] = values[i]
    row[G_N] = hi - lo
    row[G_DAYS] = distinct
    row[G_MED], row[G_MAD] = _median_mad(seg)
    row[G_DMAX_MED], row[G_DMAX_MAD] = _median_mad(daymax[:distinct])


@njit(cache=True)
def group_stats(values: np.ndarray, groups: np.ndarray, days: np.ndarray, ngroups: int) -> np.ndarray:
    """Per group g in [0, ngroups): element count, distinct days, median and MAD of `values`,
    and median and MAD of the group's per-day maxima. Row `ngroups` holds the same figures over
    every element. Medians and MADs are NaN for an empty group; `groups` and `days` are small
    non-negative integer codes.
    """
    out = np.zeros((ngroups + 1, N_STATS))
    for c in range(G_MED, N_STATS):
        out[:, c] = np.nan
    n = values.shape[0]
    if n == 0:
        return out
    nday = np.max(days) + 1
    order = np.argsort(groups * nday + days, kind="mergesort")
    lo = 0
    while lo < n:
        hi = lo
        while hi < n and groups[order[hi]] == groups[order[lo]]:
            hi += 1
        _segment_stats(values, days, order, lo, hi, out[groups[order[lo]]])
        lo = hi
    _segment_stats(values, days, np.argsort(days, kind="mergesort"), 0, n, out[ngroups])
    return out


@njit(cache=True)
def volume_score(value: float, center: float, scale: float, z_alert: float, threshold: float,
                 volume_floor: float) -> tuple[float, float]:
    """(score in [0, 1), z) of `value` bytes against a log-scale centre and scale (> 0).

    z = (ln(1 + value) - center) / scale; the tanh maps z = z_alert to `threshold`, and the
    volume floor weighs the bytes above the centre: 1 - exp(-excess / volume_floor).
    (NaN, NaN) when the centre is unknown.
    """
    if math.isnan(center) or not (scale > 0.0):
        return np.nan, np.nan
    z = (math.log1p(max(value, 0.0)) - center) / scale
    if z <= 0.0:
        return 0.0, z
    excess = max(value, 0.0) - math.expm1(center)
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
    for day in sorted(days, reverse=True):
        elems = days[day]
        if elems and elems[-1].ts <= now - span:  # elements join in time order: older days are older still
            break
        for e in elems:
            if e.identifier == identifier and now - span < e.ts <= now:
                total += e.orig_ip_bytes
    return total


def is_address(identifier: str) -> bool:
    """A resp_h identifier (an IP address), as opposed to a domain or a JA3S hash."""
    return is_ip_literal(identifier)


class Volume:
    """Sub-score `score.volume` of the robust scoring (runs after the window joined the baseline)."""

    name = "volume"
    priority = 0
    column = "score.volume"

    def __init__(self, model: VolumeModel, params: VolumeParams) -> None:
        self.model = model
        self.params = params

    def reference(self, ctx: WindowContext) -> tuple[float, float, float] | None:
        """(bytes, log-scale centre, scale) the window is judged by; None without enough history."""
        st = self.model.stats(ctx.baseline, ctx.bkey)
        if st is None:
            return None
        p = self.params
        w = ctx.window
        ident = st.idents.get(w.identifier)
        if ident is not None and ident[G_DAYS] >= p.min_ident_days:
            return (float(w.orig_ip_bytes), float(ident[G_DMAX_MED]),
                    max(MAD_TO_SIGMA * float(ident[G_DMAX_MAD]), p.min_scale))
        if st.key[G_N] < p.min_key_elements:
            return None
        value = recent_upload(ctx.baseline, ctx.bkey, w.identifier, ctx.ts, p.cumulative_window)
        if is_address(w.identifier):
            return value, float(st.key[G_DMAX_MED]), max(MAD_TO_SIGMA * float(st.key[G_DMAX_MAD]), p.min_scale)
        return value, float(st.key[G_MED]), p.new_scale

    def run(self, ctx: WindowContext) -> float | None:
        if not ctx.scorable:
            return None
        ref = self.reference(ctx)
        if ref is None:
            return None
        p = self.params
        score, _ = volume_score(ref[0], ref[1], ref[2], p.z_alert, p.threshold, p.volume_floor)
        return None if math.isnan(score) else float(score)
