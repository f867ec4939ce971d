"""Euclidean distance of (bytes, duration), robustly scaled, to the baseline's reference point."""

from __future__ import annotations

import math

from pcapexfil.detect.kernels import euclidean
from pcapexfil.detect.scores.base import WindowContext


class Euclidean:
    name = "euclidean"
    priority = 0
    column = "score.euclidean"

    def run(self, ctx: WindowContext) -> float | None:
        if not ctx.scorable or ctx.params is None:
            return None
        w = ctx.window
        raw = float(euclidean(float(w.orig_ip_bytes), float(w.duration), ctx.params))
        if math.isnan(raw):
            return None
        return ctx.norms[self.name].normalize(raw)
