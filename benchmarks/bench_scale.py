"""Scale-out in one run: `analyze --workers 1`, `--workers 2` and `--cluster local:2` on the
real-traffic capture and on a synth capture, with the speed-up ratios, then the projection
to N machines from the measured per-task CPU times.

    python benchmarks/bench_scale.py                                  # /tmp/cap/real.pcap + synth
    python benchmarks/bench_scale.py --real PCAP --workdir /tmp/bs --repeat 3

The real-traffic capture comes from `../shared/bench/make-real-capture.sh` (a missing one
is skipped, with a note); the synth one is made as benchmarks/bench_engine.py makes it.
Every command runs as a subprocess (start-up, imports, JIT cache load, process and cluster
start, log writing included), best of `--repeat`; all outputs are checked identical to the
one-worker run before any ratio is printed. `conn` is timed the same way.

Projection: each extraction task reads and parses the whole capture and replays the DNS
and SLOW-frame packets (the part every task repeats, measured as a task that owns almost
no connection), plus its share of the rest; the merge (log rows, records to the detector)
is sequential. Measured in-process per capture byte, extrapolated to a 100 GB day:
T(N) = size * (repeated + rest / N + merge).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import installed_bytecode, synth, timed  # noqa: E402

PY = sys.executable
DAY_BYTES = 100e9
LOGS = ("conn.log", "ssl.log", "http.log", "dns.log", "weird.log", "exfil_detection.log", "notice.log")
# In-process CPU seconds of single tasks (cluster tasks, `share_task`) and of the merge.
TASKS = """
import json, os, sys, time
from pcapexfil.detect.detector import Detector
from pcapexfil.pipeline import ConnLogSink, Progress, RunOptions
from pcapexfil.workers import Sends, merge, share_task, spooled, worker_options
cap, out = sys.argv[1], sys.argv[2]
opts = worker_options(RunOptions(out_dir=out, seed=1))
analyze = Sends(conn_lines=True, records=True)
share_task([cap], opts, 0, 1, analyze, os.path.join(out, "warm.bin"))  # JIT cache load, page cache
res = {}
for index, count in ((0, 1), (0, 2), (1, 2), (999, 1000)):
    res[f"{index}/{count}"] = share_task([cap], opts, index, count, analyze,
                                         os.path.join(out, f"{index}-{count}.bin"))
for name, sinks in (("merge conn", [ConnLogSink(out)]), ("merge", [ConnLogSink(out), Detector(out_dir=out)])):
    spools = [os.path.join(out, f"{i}-2.bin") for i in range(2)]
    if name == "merge conn":  # what `conn` sends: lines only
        spools = [os.path.join(out, f"conn-{i}.bin") for i in range(2)]
        for i, path in enumerate(spools):
            share_task([cap], opts, i, 2, Sends(conn_lines=True, records=False), path)
    t = time.process_time()
    merge(spooled(spools), opts, sinks, Progress(False, 0))
    res[name] = time.process_time() - t
print(json.dumps(res))
"""

def rows(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [line for line in fh if not line.startswith(("#open", "#close"))]


def bench(name: str, cap: str, workdir: str, repeat: int) -> None:
    size = os.path.getsize(cap)
    print(f"\n## {name}: {cap}, {size / 1e6:.0f} MB; cores: {os.cpu_count()}, "
          f"load average: {os.getloadavg()[0]:.1f}")
    modes = [("analyze --workers 1", ["analyze", "--workers", "1"]),
             ("analyze --workers 2", ["analyze", "--workers", "2"]),
             ("analyze --cluster local:2", ["analyze", "--cluster", "local:2"]),
             ("conn --workers 1", ["conn", "--workers", "1"]),
             ("conn --workers 2", ["conn", "--workers", "2"])]
    best: dict[str, tuple[float, float, int]] = {}
    dirs: dict[str, str] = {}
    for label, args in modes:
        out = os.path.join(workdir, name, label.replace(" ", "_").replace(":", ""))
        dirs[label] = out
        for _ in range(repeat):
            shutil.rmtree(out, ignore_errors=True)
            got = timed(["pcapexfil", args[0], cap, "-o", out, "--seed", "1", *args[1:]])
            if label not in best or got[0] < best[label][0]:
                best[label] = got
    for label, ref in (("analyze --workers 2", "analyze --workers 1"), ("analyze --cluster local:2",
                       "analyze --workers 1"), ("conn --workers 2", "conn --workers 1")):
        for log in LOGS:
            assert rows(os.path.join(dirs[label], log)) == rows(os.path.join(dirs[ref], log)), (label, log)
    print("outputs identical to one worker's: " + ", ".join(
        log for log in LOGS if os.path.exists(os.path.join(dirs["analyze --workers 1"], log))))
    print("\n| mode | wall s | CPU s (all processes) | peak RSS MB (largest process) | vs 1 worker |")
    print("|---|---|---|---|---|")
    for label, _ in modes:
        wall, cpu, rss = best[label]
        base = best["conn --workers 1" if label.startswith("conn") else "analyze --workers 1"][0]
        print(f"| `{label}` | {wall:.2f} | {cpu:.2f} | {rss / 1024:.0f} | {base / wall:.2f}x |")
    # Per-task CPU, for the projection.
    tdir = os.path.join(workdir, name, "tasks")
    shutil.rmtree(tdir, ignore_errors=True)
    os.makedirs(tdir)
    res = json.loads(subprocess.run([PY, "-c", TASKS, cap, tdir], check=True, capture_output=True,
                                    text=True).stdout.splitlines()[-1])
    whole, repeated, merge = res["0/1"], res["999/1000"], res["merge"]
    rest = whole - repeated
    print(f"\ntask CPU s: whole capture {whole:.2f}; shares of 2: {res['0/2']:.2f}, {res['1/2']:.2f}; "
          f"a share of 1/1000 (what every task repeats: read, parse, DNS and SLOW frames) {repeated:.2f}; "
          f"merge of 2 shares: `conn` (lines) {res['merge conn']:.2f}, `analyze` (lines, records, the detector) "
          f"{merge:.2f}")
    scale = DAY_BYTES / size
    print(f"\nprojection for a 100 GB day ({scale:.0f}x this capture), one task per machine:\n")
    print("| machines | repeated s | share s | merge s (sequential) | T(N) s | vs 1 |")
    print("|---|---|---|---|---|---|")
    t1 = scale * (whole + merge)
    for n in (1, 4, 16, 64):
        t = scale * (repeated + rest / n + merge)
        print(f"| {n} | {scale * repeated:.0f} | {scale * rest / n:.0f} | {scale * merge:.0f} | {t:.0f} | "
              f"{t1 / t:.1f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", default="/tmp/cap/real.pcap", help="the real-traffic capture")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "pcapexfil-bench-scale"))
    ap.add_argument("--days", type=int, default=2, help="synth capture: days (bench_engine's defaults)")
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs per command")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    installed_bytecode()
    if os.path.exists(args.real):
        bench("real", args.real, args.workdir, args.repeat)
    else:
        print(f"{args.real}: missing, skipped (make it with ../shared/bench/make-real-capture.sh)")
    bench("synth", synth(args.workdir, args.days, 20, 1, args.scale), args.workdir, args.repeat)


if __name__ == "__main__":
    main()
