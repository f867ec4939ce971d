"""Euclidean distance of (bytes, duration), robustly scaled, to the baseline's reference point."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pcapexfil.detect.kernels import euclidean
from pcapexfil.detect.scores.base import WindowContext

if TYPE_CHECKING:
    from pcapexfil.detect.stages import Closed, OrderedStage


class Euclidean:
    name = "euclidean"
    priority = 0
    column = "score.euclidean"

    def run(self, ctx: WindowContext) -> float | None:
        if not ctx.scorable or ctx.params is None:
            return None
        w = ctx.window
        raw = float(euclidean(float(w.orig_ip_bytes), float(w.duration), ctx.params))
        return None if math.isnan(raw) else raw  # normalised in `finish`

    def finish(self, value: float | None, closed: Closed, stage: OrderedStage) -> float | None:
        """The running normalisation, one for all keys, in the global close order."""
        return None if value is None else stage.norms[self.name].normalize(value)
