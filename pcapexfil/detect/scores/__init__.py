"""The reference's calculate_score hook chain; scorings (pcapexfil.detect.scoring) pick their hooks.

HOOKS runs in descending priority (ties in list order); sub-score columns appear in
exfil_detection.log in list order, which is the reference's load order. A new score is one
module here, used by a scoring in pcapexfil.detect.scoring: its `run` sees one key's state
only; anything shared by all keys goes in its `finish` (scores/base.py).
"""

from __future__ import annotations

from pcapexfil.detect.baseline import Element
from pcapexfil.detect.scores.base import ScoreHook, WindowContext
from pcapexfil.detect.scores.euclidean import Euclidean
from pcapexfil.detect.scores.new_proto import NewProtocol
from pcapexfil.detect.scores.pcr import PCR
from pcapexfil.detect.scores.zscore import ZScore


class AddToBaseline:
    """Priority 5: the closed window joins its baseline (after New_Protocol, before scores)."""

    name = "baseline"
    priority = 5
    column = None

    def run(self, ctx: WindowContext) -> float | None:
        w = ctx.window
        ctx.baseline.add(
            ctx.bkey, Element(ctx.day, ctx.ts, w.identifier, w.orig_ip_bytes, w.resp_ip_bytes, w.duration)
        )
        return None


HOOKS: list[ScoreHook] = [NewProtocol(), AddToBaseline(), PCR(), ZScore(), Euclidean()]

# Sub-scores with a running normalisation state (persisted by the state store).
NORMALIZED = ("zscore", "euclidean")


__all__ = ["HOOKS", "NORMALIZED", "AddToBaseline", "ScoreHook", "WindowContext"]
