"""What the application analyzers cost on the fast engine, in-process (start-up excluded).

    python benchmarks/bench_analyzers.py CAPTURE [--repeat 3]

Runs `pipeline.run` on CAPTURE (e.g. the one `benchmarks/bench_engine.py` makes) with
conn.log as the sink, once with the TLS/HTTP/DNS analyzers (what `pcapexfil conn` does) and
once without any (flow table and conn.log only), after loading the kernels; prints the best
of N wall times of each, packets/s and the share of the time the analyzers take.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pcapexfil.pipeline as pipeline
from pcapexfil.fast.engine import warm_up
from pcapexfil.pipeline import ConnLogSink, RunOptions


def best_run(path: str, repeat: int, analyzers: bool) -> tuple[float, int]:
    """(best wall seconds, packets) of `repeat` runs."""
    make = pipeline.make_analyzers
    if not analyzers:
        pipeline.make_analyzers = lambda ctx: []  # type: ignore[assignment]
    try:
        best, packets = float("inf"), 0
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                summary = pipeline.run([path], RunOptions(out_dir=out, seed=1), [ConnLogSink(out)])
                best = min(best, time.perf_counter() - start)
                packets = summary.packets
        return best, packets
    finally:
        pipeline.make_analyzers = make


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    warm_up()
    with_s, packets = best_run(args.capture, args.repeat, analyzers=True)
    without_s, _ = best_run(args.capture, args.repeat, analyzers=False)
    print(f"{packets} packets")
    print(f"with analyzers    {with_s:6.2f} s  {packets / with_s:>12,.0f} packets/s")
    print(f"without analyzers {without_s:6.2f} s  {packets / without_s:>12,.0f} packets/s")
    print(f"the analyzers take {1 - without_s / with_s:.0%} of the time ({with_s / without_s:.2f}x)")


if __name__ == "__main__":
    main()
