"""The DNS tunnel score of a closed window: its information against the history.

The quantity is `info` (window.py): estimated bytes carried by the window's distinct names.
It is judged on a log scale, like the robust volume score (the same `volume_score` mapping:
a robust z of `z_alert` reaches the notice threshold, and a soft floor keeps small absolute
amounts low however unusual they are):

Only earlier days count as history (the window's own day is left out of every reference).

- *established domain* (windows on at least `min_domain_days` earlier days, from any host): the
  window's info against the domain's daily maximum (median and MAD over days). An antivirus
  or reputation service that every host asks thousands of hashed names is judged against
  what it usually carries, so it stays quiet; a CDN's few names never come near the floor.
- *new domain*: the host's info for the domain summed over the last `cumulative_window`
  (so a slow tunnel adds up) against the host's usual daily maximum for any domain (at
  least `prior`), with the fixed unit `new_scale`.

So a new domain that receives thousands of unique high-entropy names from one host scores
high, and the same names under a domain with such a history do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median

from pcapexfil.detect.dnstunnel.history import History
from pcapexfil.detect.dnstunnel.window import DnsWindow
from pcapexfil.detect.scores.volume import MAD_TO_SIGMA, volume_score


@dataclass(frozen=True, slots=True)
class DnsTunnelParams:
    """Tunables (defaults tuned on synth seeds 1 and 2; docs/scoring.md)."""

    threshold: float = 0.8  # the notice threshold z_alert maps to
    z_alert: float = 2.5  # robust z (log scale) that reaches the threshold
    min_scale: float = 0.5  # smallest log-scale sigma of an established domain
    new_scale: float = 1.0  # log-scale unit for a new domain
    info_floor: float = 32 * 1024.0  # bytes of info above the reference for (1 - 1/e) of full weight
    prior: float = 4096.0  # smallest reference for a new domain (bytes of info)
    min_names: int = 8  # distinct names a window needs to be scored, logged and kept
    min_domain_days: int = 3  # days of history that make a domain established
    cumulative_window: float = 86400.0  # a new domain's info summed over this long


def _median_mad(values: list[float]) -> tuple[float, float]:
    """Median and MAD of one value per day: statistics.median computes np.median's value (the
    middle one, or the mean of the two middle ones) without an array per call."""
    med = median(values)
    return med, median([abs(v - med) for v in values])


@dataclass(frozen=True, slots=True)
class Judgement:
    score: float
    value: float  # bytes of info judged (the window's, or the new domain's recent sum)
    reference: float  # the bytes of info it was judged against (exp of the centre)
    established: bool


def judge(win: DnsWindow, day: str, now: float, history: History, p: DnsTunnelParams) -> Judgement:
    """Score `win`, closed at `now` on `day` and already in `history`, against earlier days."""
    domain_days = [v for d, v in history.domain_days(win.domain, now).items() if d != day]
    if len(domain_days) >= p.min_domain_days:
        centre, mad = _median_mad([math.log1p(v) for v in domain_days])
        value, scale, established = win.info, max(MAD_TO_SIGMA * mad, p.min_scale), True
    else:
        usual = [math.log1p(v) for d, v in history.host_days(win.orig_h, now).items() if d != day]
        centre = max(math.log1p(p.prior), _median_mad(usual)[0] if usual else 0.0)
        value = history.recent_info(win.orig_h, win.domain, now, p.cumulative_window)
        scale, established = p.new_scale, False
    score, _ = volume_score(value, centre, scale, p.z_alert, p.threshold, p.info_floor)
    return Judgement(0.0 if math.isnan(score) else float(score), value, math.expm1(centre), established)
