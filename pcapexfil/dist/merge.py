"""`pcapexfil baseline merge`: one state database from the states of several sensors.

What is combined, and how:
- baseline rows: the union (each sensor's connections are its own; sensors that see the
  same traffic would count it twice, so give each sensor its own part of the network);
- running normalisation states: combined exactly as if one stream had seen every value
  (Chan et al.'s pairwise update of count, mean and sum of squared deviations);
- sensor names (meta `sensors`): the union;
- the dns-tunnel rule's history: the union (its open windows are per-stream, as below);
- parameters: recomputed at the merged state's first recalculation (`recompute_all`).
Open windows, notice suppressions and watermarks are per-stream and not carried over: the
merged state starts a new stream.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

# The settings a baseline is built with (Detector._fixed_settings): inputs must agree.
FIXED = ("domain_mode", "tz")
SENSORS_KEY = "sensors"


class MergeError(ValueError):
    """Inputs that cannot be merged (different fixed settings, output exists)."""


@dataclass(slots=True)
class MergeSummary:
    rows: int
    sensors: list[str]
    dns_rows: int = 0


def sensors_of(meta: dict[str, str]) -> list[str]:
    return list(json.loads(meta.get(SENSORS_KEY, "[]")))


def note_sensor(store: object, name: str) -> None:
    """Record that sensor `name` fed this state (meta `sensors`, a JSON list)."""
    meta = store.meta()  # type: ignore[attr-defined]
    names = sensors_of(meta)
    if name not in names:
        store.set_meta({SENSORS_KEY: json.dumps(sorted([*names, name]))})  # type: ignore[attr-defined]


def combine_stats(a: tuple[int, float, float], b: tuple[int, float, float]) -> tuple[int, float, float]:
    """(n, mean, m2) of the union of two samples."""
    na, ma, m2a = a
    nb, mb, m2b = b
    n = na + nb
    if n == 0:
        return 0, 0.0, 0.0
    delta = mb - ma
    return n, ma + delta * nb / n, m2a + m2b + delta * delta * na * nb / n


def merge_states(inputs: Sequence[str], output: str, busy_timeout: float = 10.0) -> MergeSummary:
    from pcapexfil.detect.baseline import BaselineDelta
    from pcapexfil.detect.dnstunnel.history import Element as DnsElement
    from pcapexfil.detect.dnstunnel.rule import DnsCommit
    from pcapexfil.detect.state import Commit, StateStore

    if os.path.exists(output):
        raise MergeError(f"{output} exists; merge writes a new state database")
    for path in inputs:
        if not os.path.exists(path):
            raise MergeError(f"state database {path}: no such file")
    fixed: dict[str, str] = {}
    rows: list[dict] = []
    norms: dict[str, tuple[int, float, float]] = {}
    sensors: set[str] = set()
    dns: list[DnsElement] = []
    for path in inputs:
        store = StateStore(path, busy_timeout=busy_timeout)
        try:
            state = store.load()
            for name in FIXED:
                if name in state.meta and fixed.setdefault(name, state.meta[name]) != state.meta[name]:
                    raise MergeError(f"{path} was built with {name}={state.meta[name]}, "
                                     f"another input with {name}={fixed[name]}")
            rows.extend(store.baseline_rows())
            dns.extend(state.dns_history)
            for name, stats in state.norms.items():
                norms[name] = combine_stats(norms.get(name, (0, 0.0, 0.0)), stats)
            sensors.update(sensors_of(state.meta))
        finally:
            store.close()
    out = StateStore(output, busy_timeout=busy_timeout, writer=True)
    try:
        out.check_settings(fixed)
        dns.sort(key=lambda e: e.ts)
        out.commit(Commit(baseline=BaselineDelta(), params={}, norms=norms, windows=[], suppress={},
                          meta={SENSORS_KEY: json.dumps(sorted(sensors))},
                          dns=DnsCommit(added=dns, cutoff=-math.inf, windows=[])))
        count = out.import_rows(rows)
    finally:
        out.close()
    return MergeSummary(rows=count, sensors=sorted(sensors), dns_rows=len(dns))
