"""Running normalisation of the unbounded scores (zscore, euclidean) into [0, 1).

Each score keeps one global running state (count, mean, M2) updated with Welford's algorithm,
then the modified tanh-estimator maps the new raw value. The reference's update treated the
previous standard deviation as a sum of squares and divided by zero on the first value; the
published helper result 0.503088 is that defect, so we do not reproduce it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pcapexfil.detect.kernels import tanh_estimator, welford_update


@dataclass(slots=True)
class RunningStats:
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @property
    def std(self) -> float:
        """Population standard deviation; 0 while fewer than two values."""
        return math.sqrt(self.m2 / self.n) if self.n >= 2 else 0.0

    def add(self, value: float) -> None:
        n, self.mean, self.m2 = welford_update(float(self.n), self.mean, self.m2, value)
        self.n = int(n)

    def normalize(self, value: float) -> float:
        """Add `value` to the running state (mean first), then return its tanh-estimate."""
        self.add(value)
        return float(tanh_estimator(value, self.mean, self.std))
