"""Scorings, registered in one place: which hooks score a closed window, and how their
sub-scores become the window's exfiltration_score.

- `reference`: the zeek-exfil-detect chain (pcr, zscore, euclidean with one running
  normalisation per score for all keys; final = sum of the set sub-scores / 3).
- `robust`: pcr and a per-key volume score (scores/volume.py): each key is judged against its
  own history on a log scale, with a tanh scale that maps a robust z of `z_alert` to the
  threshold and a volume floor; final = volume weighted by how upload-dominated the window is.

A scoring is built per detector (it may cache figures derived from the baseline). New
scoring: a class with the `Scoring` members and one entry in SCORINGS. docs/scoring.md has
the rationale and the benchmark. The hooks are imported when a scoring is built, so the CLI
can list SCORINGS without loading numba.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pcapexfil.detect.baseline import BaselineKey
    from pcapexfil.detect.scores import ScoreHook
    from pcapexfil.detect.scores.volume import VolumeParams


class Scoring(Protocol):
    name: str
    columns: list[str]  # sub-score columns of exfil_detection.log, in order

    def chain(self) -> list[ScoreHook]:
        """The hooks in the order they run."""

    def combine(self, scores: dict[str, float | None]) -> float:
        """exfiltration_score from the sub-scores (None = unset)."""

    def recomputed(self, keys: list[BaselineKey], when: float) -> None:
        """The detector recomputed the parameters of `keys` at network time `when`."""


def _ordered(hooks: list[ScoreHook]) -> list[ScoreHook]:
    return sorted(hooks, key=lambda h: -h.priority)


class ReferenceScoring:
    """zeek-exfil-detect's scores and finalize, exactly (see docs/reference-algorithm.md)."""

    name = "reference"

    def __init__(self) -> None:
        from pcapexfil.detect.scores import HOOKS

        self.hooks: list[ScoreHook] = list(HOOKS)
        self.columns = [h.column for h in self.hooks if h.column]

    def chain(self) -> list[ScoreHook]:
        return _ordered(self.hooks)

    def combine(self, scores: dict[str, float | None]) -> float:
        present = [v for v in scores.values() if v is not None]
        return sum(present) / len(self.columns) if self.columns else 0.0

    def recomputed(self, keys: list[BaselineKey], when: float) -> None:
        pass


def upload_weight(pcr: float | None) -> float:
    """1 for a window that sent at least three times what it received (pcr >= 0.5), down to 0.5
    for one that received at least as much as it sent (pcr 0 or unset)."""
    if pcr is None:
        return 0.5
    return 0.5 + 0.5 * min(1.0, 2.0 * pcr)


class RobustScoring:
    """Per-key robust volume score, weighted by upload dominance (docs/scoring.md)."""

    name = "robust"

    def __init__(self, params: VolumeParams | None = None) -> None:
        from pcapexfil.detect.scores import AddToBaseline
        from pcapexfil.detect.scores.new_proto import NewProtocol
        from pcapexfil.detect.scores.pcr import PCR
        from pcapexfil.detect.scores.volume import Volume, VolumeModel, VolumeParams

        self.params = params or VolumeParams()
        self.model = VolumeModel()
        self.hooks: list[ScoreHook] = [NewProtocol(), AddToBaseline(), PCR(), Volume(self.model, self.params)]
        self.columns = [h.column for h in self.hooks if h.column]

    def chain(self) -> list[ScoreHook]:
        return _ordered(self.hooks)

    def combine(self, scores: dict[str, float | None]) -> float:
        volume = scores.get("score.volume")
        if volume is None:
            return 0.0
        return volume * upload_weight(scores.get("score.pcr"))

    def recomputed(self, keys: list[BaselineKey], when: float) -> None:
        self.model.recomputed(keys, when)


SCORINGS: dict[str, Callable[[], Scoring]] = {"reference": ReferenceScoring, "robust": RobustScoring}
DEFAULT_SCORING = "reference"


def make_scoring(name: str) -> Scoring:
    """A fresh scoring by name; ValueError naming the known ones otherwise."""
    try:
        return SCORINGS[name]()
    except KeyError:
        raise ValueError(f"unknown scoring {name!r} (known: {', '.join(SCORINGS)})") from None
