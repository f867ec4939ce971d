"""Cluster-mode benchmark: single process vs a Dask LocalCluster with 1 and 2 workers.

    python benchmarks/bench_dist.py                        # 4 days, 12 hosts, 3-hour files
    python benchmarks/bench_dist.py --days 6 --hosts 20 --slice 2h --workdir /tmp/bd
    python benchmarks/bench_dist.py --only scoring --score-hosts 200 --score-days 6

Two parts. "pcap": the whole analyze path on pcaps (below). "scoring": the partitioned
aggregation and scoring alone (pcapexfil.dist.score) on a larger stream of generated
connection records, against the single-process Detector on the same records, per scoring;
logs checked identical. Its columns: "route" is the client's pass over the records (time
line, filter, upload rule, routing), "partitions" the wall time of the per-key stage (the
tasks: windows, baselines, numba parameters, raw scores), "ordered" the final ordered pass
(normalisation, logs, notices); records/s of the partitioned stage = records / partitions.

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
import logging
import os
import random
import shutil
import tempfile
import time

from pcapexfil.detect.detector import Detector, Settings
from pcapexfil.dist.cluster import run_cluster
from pcapexfil.dist.score import PartitionedDetector, dask_runner
from pcapexfil.dist.split import split_captures
from pcapexfil.pipeline import ConnLogSink, RunOptions, run
from pcapexfil.record import ConnRecord
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
    logging.getLogger("distributed").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--hosts", type=int, default=12)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--slice", default="3h", help="rotation interval of the cut files")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--only", choices=("pcap", "scoring"), default=None, help="run one part only")
    ap.add_argument("--score-hosts", type=int, default=200)
    ap.add_argument("--score-days", type=int, default=6)
    ap.add_argument("--score-per-day", type=int, default=60, help="connections per host and day")
    ap.add_argument("--scorings", nargs="+", default=["reference", "robust"])
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="bench-dist-")
    if args.only != "scoring":
        _bench_pcap(args, work)
    if args.only != "pcap":
        _bench_scoring(args, work)


def _bench_pcap(args: argparse.Namespace, work: str) -> None:
    from distributed import Client, LocalCluster

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
            # The per-file tasks and their stitch (benchmarks/bench_scale.py times the fast engine's).
            opts = RunOptions(out_dir=out, seed=1, engine="reference")
            summary = run_cluster(files, opts, _sinks(out), client, out, timings=phases)
            wall = time.perf_counter() - t_up
            phases["extract"] = wall - phases["finalize"]
        for name in LOGS:
            assert _body(os.path.join(out, name)) == _body(os.path.join(ref, name)), f"{name} differs ({n} workers)"
        rows.append((f"cluster, {n} worker{'s' if n > 1 else ''} (startup {t_up - t:.1f} s not counted)", wall,
                     phases["extract"], phases["finalize"], summary.records, summary.packets))
        sc = phases["scoring"]
        print(f"cluster, {n} worker(s): partitioned scoring {sc['partitions']:.2f} s for {sc['routed']} outgoing "
              f"records ({len(sc['task_cpu'])} tasks, CPU {sum(sc['task_cpu']):.2f} s), ordered pass {sc['ordered']:.2f} s")

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


def score_records(hosts: int, days: int, per_day: int, seed: int = 1) -> list[ConnRecord]:
    """Outgoing connections of `hosts` hosts over `days` days: a few ports, a pool of addresses
    and names, log-normal sizes; sorted by end time, as a flow table emits them."""
    rng = random.Random(seed)
    day0 = 1_700_006_400.0
    ports = (443, 443, 443, 80, 22, 8443)
    out = []
    for h in range(hosts):
        host = f"10.{h // 250}.{h % 250}.10"
        for d in range(days):
            for _ in range(per_day):
                port = rng.choice(ports)
                out.append(ConnRecord(
                    ts=day0 + d * 86400 + rng.uniform(0, 86400), uid=f"C{len(out)}", orig_h=host,
                    orig_p=40000 + len(out) % 20000, resp_h=f"93.184.{rng.randrange(4)}.{rng.randrange(1, 50)}",
                    resp_p=port, proto="tcp", duration=rng.expovariate(0.2), orig_bytes=1000, resp_bytes=5000,
                    orig_ip_bytes=int(rng.lognormvariate(9, 1.5)), resp_ip_bytes=int(rng.lognormvariate(11, 1)),
                    server_name=f"s{rng.randrange(30)}.example{rng.randrange(5)}.com" if port == 443 else None))
    out.sort(key=lambda r: (r.ts + (r.duration or 0.0), r.uid))
    return out


def _feed(sink: object, recs: list[ConnRecord]) -> None:
    """As pipeline.run: time advances to each record's end, then the record; close at the end."""
    now = 0.0
    for r in recs:
        now = max(now, r.ts + (r.duration or 0.0))
        sink.on_time(now)  # type: ignore[attr-defined]
        sink.on_record(r)  # type: ignore[attr-defined]
    sink.close(now)  # type: ignore[attr-defined]


def _bench_scoring(args: argparse.Namespace, work: str) -> None:
    from distributed import Client, LocalCluster

    recs = score_records(args.score_hosts, args.score_days, args.score_per_day)
    print(f"\nscoring: {len(recs)} outgoing connection records ({args.score_hosts} hosts, {args.score_days} days, "
          f"{args.score_per_day} per host and day; baseline_min_days_for_score 1, 3-hour windows); "
          f"cores: {os.cpu_count()}")
    clusters = {n: LocalCluster(n_workers=n, processes=True, threads_per_worker=1, dashboard_address=":0")
                for n in args.workers}
    try:
        for n, cluster in clusters.items():  # warm-up, not timed: imports and numba cache loads in the workers
            with Client(cluster) as client:
                for scoring in args.scorings:
                    _feed(PartitionedDetector(Detector(Settings(baseline_min_days_for_score=1, scoring=scoring)),
                                              2 * n, dask_runner(client)), recs[: len(recs) // 10])
        for scoring in args.scorings:
            settings = Settings(baseline_min_days_for_score=1, scoring=scoring)
            rows = []
            out = os.path.join(work, f"score-{scoring}-single")
            os.makedirs(out, exist_ok=True)
            t = time.perf_counter()
            det = Detector(settings, out_dir=out)
            _feed(det, recs)
            single = time.perf_counter() - t
            rows.append(("single process (Detector)", single, None, None, None, None, det.stats.windows_closed))
            modes: list[tuple[str, int, object]] = [("in-process partitions (no Dask)", 2, None)]
            modes += [(f"Dask, {n} worker{'s' if n > 1 else ''}", 2 * n, n) for n in args.workers]
            for name, parts, n in modes:
                out = os.path.join(work, f"score-{scoring}-{parts}-{n}")
                os.makedirs(out, exist_ok=True)
                client = Client(clusters[n]) if n else None  # type: ignore[index]
                try:
                    runner = dask_runner(client) if client is not None else None
                    spool = os.path.join(out, "spool") if client is not None else None  # as run_cluster does
                    if spool:
                        os.makedirs(spool, exist_ok=True)
                    t = time.perf_counter()
                    pd = PartitionedDetector(Detector(settings, out_dir=out), parts, runner, spool_dir=spool)
                    _feed(pd, recs)
                    wall = time.perf_counter() - t
                finally:
                    if client is not None:
                        client.close()
                    if spool:
                        shutil.rmtree(spool, ignore_errors=True)
                for log in ("exfil_detection.log", "notice.log"):
                    same = _body(os.path.join(out, log)) == _body(os.path.join(work, f"score-{scoring}-single", log))
                    assert same, f"{log} differs ({name}, {scoring})"
                tm = pd.timings
                route = wall - tm["partitions"] - tm["ordered"]
                rows.append((f"{name}, {parts} partitions", wall, route, tm["partitions"], tm["ordered"],
                             tm["task_cpu"], pd.det.stats.windows_closed))
            print(f"\n{scoring} scoring: exfil_detection.log and notice.log identical in every mode\n")
            print("| mode | wall s | route s | partitions s | ordered s | partitioned stage records/s | "
                  "task CPU s (sum / max) | vs single |")
            print("|---|---|---|---|---|---|---|---|")
            for name, wall, route, parts_s, ordered, cpu, _ in rows:
                if route is None:
                    print(f"| {name} | {wall:.2f} | - | - | - | {len(recs) / wall:,.0f} (whole detector) | - | 1.00x |")
                    continue
                print(f"| {name} | {wall:.2f} | {route:.2f} | {parts_s:.2f} | {ordered:.2f} | "
                      f"{len(recs) / parts_s:,.0f} | {sum(cpu):.2f} / {max(cpu):.2f} | {single / wall:.2f}x |")
    finally:
        for c in clusters.values():
            c.close()


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
