"""Producer-consumer ratio of the window's bytes (bounded, so no normalisation beyond the clip)."""

from __future__ import annotations

import math

from pcapexfil.detect.kernels import pcr
from pcapexfil.detect.scores.base import WindowContext


class PCR:
    name = "pcr"
    priority = 0
    column = "score.pcr"

    def run(self, ctx: WindowContext) -> float | None:
        if not ctx.scorable:
            return None
        value = float(pcr(float(ctx.window.orig_ip_bytes), float(ctx.window.resp_ip_bytes)))
        return None if math.isnan(value) else value
