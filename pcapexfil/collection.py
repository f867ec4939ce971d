"""The cyclic garbage collector's pace during a run.

A run holds thousands of live connections, each a handful of small container objects
(its view, analyzer states, its record while its epoch is open) that live seconds of
network time and are freed by reference counting. At CPython's default pace (a young
collection every 700 new containers) the young collections promote them, and the full
collections this triggers scan every live object again and again: measured, 45% of a
SYN-flood run's time and 20% of `conn` on the real-traffic capture
(`benchmarks/flood.py --engine fast`, `benchmarks/bench_engine.py --real`). Collecting
every `RUN_YOUNG_THRESHOLD` new containers instead lets them die young (each young
collection scans the connections still open, so fewer of them cost less: on the
real-traffic capture the collector took 0.31-0.38 s at 100 000, 0.13-0.16 s at 300 000 and
0.05-0.07 s at 1 000 000, with the same peak RSS; the threshold also bounds the cyclic
garbage a run may hold). The fast engine
and the live workers run at this pace: a finished connection leaves no reference cycle
behind there (`fast.engine.FastFlow._record`), so the garbage waiting for a collection
stays small. The reference engine's connections are cycles (Connection and its
TCPAdapter) freed only by the collector; it keeps CPython's pace.
"""

from __future__ import annotations

import gc

RUN_YOUNG_THRESHOLD = 300_000  # new containers between young collections (CPython: 700)


def relax() -> tuple[int, int, int]:
    """Set the run's pace; returns the thresholds to `restore` afterwards."""
    saved = gc.get_threshold()
    gc.set_threshold(RUN_YOUNG_THRESHOLD, saved[1], saved[2])
    return saved


def restore(saved: tuple[int, int, int]) -> None:
    gc.set_threshold(*saved)
