"""What a scoring hook sees, and the protocol every hook implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from pcapexfil.detect.baseline import Baseline, BaselineKey
    from pcapexfil.detect.detector import Settings
    from pcapexfil.detect.stages import Closed, OrderedStage
    from pcapexfil.detect.windows import Window


@dataclass(slots=True)
class WindowContext:
    """One closed window in the per-key stage: everything here belongs to its host's keys."""

    ts: float  # closing time
    day: str
    window: Window
    bkey: BaselineKey  # the window's (orig_h, resp_p, proto), built once for every hook
    baseline: Baseline
    params: np.ndarray | None  # the last recomputation's row for this (orig_h, resp_p), if any
    settings: Settings

    @property
    def scorable(self) -> bool:
        """The baseline holds enough distinct days for scores."""
        return self.baseline.day_count(self.bkey) >= self.settings.baseline_min_days_for_score


class ScoreHook(Protocol):
    """A hook runs in two stages (pcapexfil.detect.stages). `run` is the per-key part: it may read
    and change only its host's baseline. A hook whose result depends on state shared by all keys
    (a running normalisation, notices) also has `finish(value, closed, stage)`, run in the global
    close order on `run`'s value; without it the value is the sub-score as it is."""

    name: str
    priority: int  # higher runs first, as Zeek hook priorities

    @property
    def column(self) -> str | None:
        """exfil_detection.log column of a sub-score; None for side-effect hooks (read-only, so
        a hook declares it as a plain class attribute)."""

    def run(self, ctx: WindowContext) -> float | None:
        """Return the (raw) sub-score (None = unset), or a value for `finish`, or None."""


class OrderedHook(ScoreHook, Protocol):
    def finish(self, value: float | None, closed: Closed, stage: OrderedStage) -> float | None:
        """The sub-score from `run`'s value, in the global close order (None = unset)."""
