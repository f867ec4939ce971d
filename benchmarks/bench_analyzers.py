"""What the application analyzers cost on the fast engine, in-process (start-up excluded).

    python benchmarks/bench_analyzers.py CAPTURE [--repeat 3]

Runs `pipeline.run` on CAPTURE (e.g. the one `benchmarks/bench_engine.py` makes) with
conn.log as the sink, once with the TLS/HTTP/DNS analyzers (what `pcapexfil conn` does), once
without any (flow table and conn.log only) and once without each one in turn (the others
kept), after loading the kernels; prints the best of N wall times of each, packets/s, the
share of the time the analyzers take and what each one adds to the other two.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Collection

from pcapexfil import pipeline
from pcapexfil.fast.engine import warm_up
from pcapexfil.hooks import AnalyzerContext, AppAnalyzer
from pcapexfil.identifiers import make_analyzers
from pcapexfil.pipeline import ConnLogSink, RunOptions

NAMES = ("tls", "http", "dns")


def best_run(path: str, repeat: int, only: Collection[str]) -> tuple[float, int]:
    """(best wall seconds, packets) of `repeat` runs with the analyzers named in `only`."""

    def analyzers(ctx: AnalyzerContext) -> list[AppAnalyzer]:
        return make_analyzers(ctx, only)

    make = pipeline.make_analyzers
    pipeline.make_analyzers = analyzers  # type: ignore[assignment]
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
    with_s, packets = best_run(args.capture, args.repeat, NAMES)
    without_s, _ = best_run(args.capture, args.repeat, ())
    print(f"{packets} packets")
    print(f"with analyzers    {with_s:6.2f} s  {packets / with_s:>12,.0f} packets/s")
    print(f"without analyzers {without_s:6.2f} s  {packets / without_s:>12,.0f} packets/s")
    print(f"the analyzers take {1 - without_s / with_s:.0%} of the time ({with_s / without_s:.2f}x)")
    for name in NAMES:
        others_s, _ = best_run(args.capture, args.repeat, [n for n in NAMES if n != name])
        print(f"without {name:<9} {others_s:6.2f} s  ({name} adds {with_s - others_s:+.2f} s to the other two)")


if __name__ == "__main__":
    main()
