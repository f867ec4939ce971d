"""What a scoring hook sees, and the protocol every hook implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from pcapexfil.detect.baseline import Baseline, BaselineKey
    from pcapexfil.detect.detector import Settings
    from pcapexfil.detect.normalize import RunningStats
    from pcapexfil.detect.notices import Notices
    from pcapexfil.detect.windows import Window


@dataclass(slots=True)
class WindowContext:
    """One closed window on its way through the chain."""

    ts: float  # closing time
    day: str
    window: Window
    baseline: Baseline
    params: np.ndarray | None  # the last recomputation's row for this (orig_h, resp_p), if any
    norms: dict[str, RunningStats]
    notices: Notices
    settings: Settings

    @property
    def bkey(self) -> BaselineKey:
        w = self.window
        return (w.orig_h, w.resp_p, w.proto)

    @property
    def scorable(self) -> bool:
        """The baseline holds enough distinct days for scores."""
        return self.baseline.day_count(self.bkey) >= self.settings.baseline_min_days_for_score


class ScoreHook(Protocol):
    name: str
    priority: int  # higher runs first, as Zeek hook priorities
    column: str | None  # exfil_detection.log column of a sub-score; None for side-effect hooks

    def run(self, ctx: WindowContext) -> float | None:
        """Return the sub-score (None = unset) or None for side-effect hooks."""
