"""Robust z-score of the window's orig_ip_bytes against its (orig_h, resp_p) baseline."""

from __future__ import annotations

import math

from pcapexfil.detect.kernels import MAD_B, MED_B, zscore
from pcapexfil.detect.scores.base import WindowContext


class ZScore:
    name = "zscore"
    priority = 0
    column = "score.zscore"

    def run(self, ctx: WindowContext) -> float | None:
        if not ctx.scorable or ctx.params is None:
            return None
        raw = float(zscore(float(ctx.window.orig_ip_bytes), ctx.params[MED_B], ctx.params[MAD_B]))
        if math.isnan(raw):
            return None
        return ctx.norms[self.name].normalize(raw)
