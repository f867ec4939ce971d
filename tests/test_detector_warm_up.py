"""`detect.detector.warm_up`: live capture compiles or loads the detector's kernels before
the ring fills, so none is compiled an hour into the capture (at the first recalculation
or score). Checked in a fresh process, where numba has compiled nothing yet: after the
warm-up, the detector run over the example days (whose windows are scored) needs no
kernel signature the warm-up did not already make."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from pcapexfil.detect.scoring import SCORINGS

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = sorted(glob.glob(os.path.join(HERE, "..", "fixtures", "example", "*.pcap.gz")))

PROGRAM = """
import json, pkgutil, importlib, sys
from numba.core.dispatcher import Dispatcher
import pcapexfil.detect
from pcapexfil.detect.detector import Detector, Settings, warm_up
from pcapexfil.pipeline import RunOptions, run

def compiled():
    out = {}
    for info in pkgutil.walk_packages(pcapexfil.detect.__path__, "pcapexfil.detect."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, Dispatcher) and value.__module__ == info.name:
                out[f"{info.name}.{name}"] = len(value.overloads)
    return out

class Events:
    def __init__(self):
        self.items = []
    def on_record(self, rec):
        self.items.append((0, rec))
    def on_time(self, now):
        self.items.append((1, now))
    def close(self, now):
        self.items.append((2, now))

scoring, paths = sys.argv[1], sys.argv[2:]
events = Events()
run(paths, RunOptions(out_dir=None, seed=1), [events])
warm = compiled() if scoring == "none" else None
if scoring != "none":
    warm_up(Settings(scoring=scoring))
    warm = compiled()
det = Detector(Settings(scoring=scoring if scoring != "none" else Settings().scoring))
for kind, item in events.items:
    (det.on_record if kind == 0 else det.on_time if kind == 1 else det.close)(item)
after = compiled()
print(json.dumps({"new": {k: v for k, v in after.items() if v != warm.get(k)}, "scored": det.stats.scored}))
"""


def _run(scoring: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(HERE, ".."), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", PROGRAM, scoring, *EXAMPLE], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("scoring", sorted(SCORINGS))
def test_after_the_warm_up_scoring_the_example_compiles_no_kernel(scoring: str) -> None:
    result = _run(scoring)
    assert result["scored"] > 0  # windows were scored: the scoring chain ran
    assert result["new"] == {}


def test_without_the_warm_up_the_example_compiles_detector_kernels() -> None:
    """The check above can fail: the same run without the warm-up compiles kernels."""
    result = _run("none")
    assert result["scored"] > 0
    assert result["new"]
