"""Robust z-score of the window's orig_ip_bytes against its (orig_h, resp_p) baseline."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pcapexfil.detect.kernels import MAD_B, MED_B, zscore
from pcapexfil.detect.scores.base import WindowContext

if TYPE_CHECKING:
    from pcapexfil.detect.stages import Closed, OrderedStage


class ZScore:
    name = "zscore"
    priority = 0
    column = "score.zscore"

    def run(self, ctx: WindowContext) -> float | None:
        if not ctx.scorable or ctx.params is None:
            return None
        raw = float(zscore(float(ctx.window.orig_ip_bytes), ctx.params[MED_B], ctx.params[MAD_B]))
        return None if math.isnan(raw) else raw  # normalised in `finish`

    def finish(self, value: float | None, closed: Closed, stage: OrderedStage) -> float | None:
        """The running normalisation, one for all keys, in the global close order."""
        return None if value is None else stage.norms[self.name].normalize(value)
