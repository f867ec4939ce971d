"""Cluster-mode benchmark: single process vs a Dask LocalCluster with 1 and 2 workers.

    python benchmarks/bench_dist.py                        # 4 days, 12 hosts, 3-hour files
    python benchmarks/bench_dist.py --days 6 --hosts 20 --slice 2h --workdir /tmp/bd

The dataset is `pcapexfil synth` cut into rotated files (`--slice`), so connections cross
file boundaries and the stitch pass has work. Every mode runs conn.log + the detector on
the same files; the outputs are checked identical (except #open/#close) before the table
is printed. Times are wall seconds on this machine; cluster rows split the wall time into
the client's sequential finalize work (stitch, uids, DNS names, every log and the detection
pass; it runs file by file as results arrive) and the rest, spent waiting for the parallel
extraction ("extract"). Extrapolation to N machines: T(N) ≈ extract(1 worker) / N +
finalize + per-task overhead, as long as there are more files than workers.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile
import time

from pcapexfil.detect.detector import Detector, Settings
from pcapexfil.dist.cluster import run_cluster
from pcapexfil.dist.split import split_captures
from pcapexfil.pipeline import ConnLogSink, RunOptions, run
from pcapexfil.synth import SynthConfig, generate

LOGS = ("conn.log", "exfil_detection.log", "notice.log", "ssl.log", "http.log", "dns.log", "weird.log")


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def _body(path: str) -> list[str]:
    with open(path) as f:
        return [line for line in f if not line.startswith(("#open", "#close"))]


def _sinks(out: str) -> list:
    os.makedirs(out, exist_ok=True)
    return [ConnLogSink(out), Detector(Settings(baseline_min_days_for_score=1), out_dir=out)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--hosts", type=int, default=12)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--slice", default="3h", help="rotation interval of the cut files")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    work = args.workdir or tempfile.mkdtemp(prefix="bench-dist-")
    days_dir, rot = os.path.join(work, "days"), os.path.join(work, "rotated")
    if not glob.glob(os.path.join(rot, "*.pcap")):
        generate(SynthConfig(out_dir=days_dir, days=args.days, hosts=args.hosts, seed=9, scale=args.scale,
                             baseline_days=1, episodes_per_kind=1))
        split_captures(sorted(glob.glob(os.path.join(days_dir, "*.pcap"))), rot, interval=_duration(args.slice))
    files = sorted(glob.glob(os.path.join(rot, "*.pcap")))
    size = sum(os.path.getsize(f) for f in files)
    rows = []

    single_cpu = 0.0
    for engine in ("reference", "fast"):
        out = os.path.join(work, f"single-{engine}")
        shutil.rmtree(out, ignore_errors=True)
        c = time.thread_time()
        t = time.perf_counter()
        try:
            summary = run(files, RunOptions(out_dir=out, seed=1, engine=engine), _sinks(out))  # type: ignore[arg-type]
        except Exception as exc:  # the other engine is optional here: note it and go on
            print(f"note: single process with the {engine} engine failed: {exc!r}")
            continue
        wall = time.perf_counter() - t
        if engine == "reference":
            single_cpu = time.thread_time() - c
        rows.append((f"single process ({engine} engine)", wall, None, None, summary.records, summary.packets))
    ref = os.path.join(work, "single-reference")

    phases: dict = {}
    for n in args.workers:
        out = os.path.join(work, f"cluster-{n}")
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        with LocalCluster(n_workers=n, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            t_up = time.perf_counter()
            phases: dict[str, float] = {}
            summary = run_cluster(files, RunOptions(out_dir=out, seed=1), _sinks(out), client, out, timings=phases)
            wall = time.perf_counter() - t_up
            phases["extract"] = wall - phases["finalize"]
        for name in LOGS:
            assert _body(os.path.join(out, name)) == _body(os.path.join(ref, name)), f"{name} differs ({n} workers)"
        rows.append((f"cluster, {n} worker{'s' if n > 1 else ''} (startup {t_up - t:.1f} s not counted)", wall,
                     phases["extract"], phases["finalize"], summary.records, summary.packets))

    print(f"dataset: {len(files)} files, {size / 1e6:.1f} MB, {rows[0][5]} packets, {rows[0][4]} connections "
          f"({args.days} days, {args.hosts} hosts, scale {args.scale}, {args.slice} files); cores: {os.cpu_count()}, "
          f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"outputs identical to the single-process run: {', '.join(LOGS)}\n")
    print("| mode | wall s | extract s | finalize s | records/s | packets/s | vs single (reference) |")
    print("|---|---|---|---|---|---|---|")
    base = rows[0][1]
    for name, wall, ext, fin, recs, pkts in rows:
        e = f"{ext:.2f}" if ext is not None else "-"
        f = f"{fin:.2f}" if fin is not None else "-"
        print(f"| {name} | {wall:.2f} | {e} | {f} | {recs / wall:,.0f} | {pkts / wall:,.0f} | {base / wall:.2f}x |")
    if phases:
        _projection(phases["task_cpu"], phases["finalize_cpu"], single_cpu, rows[0][4])


def _makespan(tasks: list[float], n: int) -> float:
    """Longest-processing-time-first schedule of the tasks on n workers (Dask's is similar)."""
    loads = [0.0] * n
    for t in sorted(tasks, reverse=True):
        i = loads.index(min(loads))
        loads[i] += t
    return max(loads)


def _projection(task_cpu: list[float], finalize_cpu: float, single_cpu: float, records: int) -> None:
    """CPU seconds measured per task (not wall: robust to a busy machine) → time on N workers."""
    print(f"\nCPU seconds measured: tasks {sum(task_cpu):.2f} in total (longest {max(task_cpu):.2f}), "
          f"finalize {finalize_cpu:.2f}, single process (reference engine) {single_cpu:.2f}.")
    print("Projection, one worker process per core with the files shared out as Dask would: "
          "T(N) ≈ makespan(tasks, N) + finalize (the finalize overlaps the extraction, so this is an upper bound).\n")
    print("| workers N | T(N) s | records/s | vs single process (reference engine) |")
    print("|---|---|---|---|")
    for n in (1, 2, 4, 8, 16, 32, 64):
        t = _makespan(task_cpu, n) + finalize_cpu
        print(f"| {n} | {t:.2f} | {records / t:,.0f} | {single_cpu / t:.1f}x |")


if __name__ == "__main__":
    main()
