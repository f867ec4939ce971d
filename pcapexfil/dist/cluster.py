"""`analyze --cluster`: extraction tasks (fast engine: flow-hash shares of the whole capture,
merged by epochs; reference engine: one task per capture file, the sequential stitch and
replay), then one scoring task per partition of hosts and the ordered pass.

Dask (`dask[distributed]`) and pyarrow are optional (extra `pcapexfil[dist]`) and imported
only here and in the tasks. See docs/cluster.md for running on a real cluster.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from typing import Any

from pcapexfil.dist import ClusterError
from pcapexfil.dist.extract import ExtractOptions, FileResult, extract_file
from pcapexfil.hooks import AnalyzerContext, RecordSink
from pcapexfil.pipeline import RunOptions, RunSummary

# Dask settings of a `local:N` cluster (a real cluster's are its administrator's).
LOCAL_QUIET = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s"}


def parse_cluster(spec: str) -> tuple[str, Any]:
    """'local:N' → ('local', N); 'tcp://HOST:PORT' (or any Dask address) → ('address', spec)."""
    if spec.startswith("local:"):
        try:
            n = int(spec[6:])
        except ValueError:
            n = 0
        if n < 1:
            raise ClusterError(f"--cluster {spec!r}: want local:N with N ≥ 1 workers")
        return "local", n
    if "://" in spec:
        return "address", spec
    raise ClusterError(f"--cluster {spec!r}: want local:N or a scheduler address such as tcp://HOST:8786")


def require_dask() -> None:
    try:
        import distributed  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        raise ClusterError("--cluster needs Dask and pyarrow: pip install 'pcapexfil[dist]'") from None


def order_files(paths: Sequence[str]) -> list[str]:
    """Files in the order open_captures reads them: by first packet time, then as given."""
    from pcapexfil.source import open_capture
    from pcapexfil.weird import Weirds

    firsts = []
    for order, path in enumerate(paths):
        it = open_capture(path, Weirds())
        try:
            first = next(it, None)
        finally:
            it.close()  # type: ignore[attr-defined]
        firsts.append((first.ts if first is not None else float("inf"), order, path))
    return [p for _, _, p in sorted(firsts)]


def connect(spec: str) -> Any:
    """A dask.distributed Client for `spec` (a LocalCluster of processes for local:N)."""
    require_dask()
    from distributed import Client, LocalCluster

    kind, arg = parse_cluster(spec)
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        for name in ("distributed", "dask"):  # their INFO chatter only with -v
            logging.getLogger(name).setLevel(logging.WARNING)
    if kind == "local":
        import multiprocessing

        import dask

        # fork, as `--workers` does: a spawned worker starts a new interpreter and imports
        # Dask again (2 s of a 2-worker cluster's start and close on a 2-core machine, 0.4 s
        # forked) and then pcapexfil, which a forked one inherits.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        # Dask's diagnostics off: its sampling profiler (every 10 ms) and event-loop tick
        # (every 20 ms) took 0.12 s of CPU per worker and 0.08 s of the client's scheduler on
        # the real capture, which the extraction tasks share the cores with.
        with dask.config.set({"distributed.worker.multiprocessing-method": method, **LOCAL_QUIET}):
            cluster = LocalCluster(n_workers=arg, threads_per_worker=1, processes=True, dashboard_address=":0")
        return Client(cluster)
    try:
        return Client(arg, timeout=30)
    except OSError as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {arg}: {exc}") from None


def run_cluster(paths: Sequence[str], options: RunOptions, sinks: list[RecordSink], client: Any,
                work_dir: str, sensor: str | None = None, timings: dict[str, Any] | None = None,
                partitions: int | None = None) -> RunSummary:
    """What pipeline.run does, with extraction spread over `client`'s workers, and each
    Detector among `sinks` run partitioned by host on them too (`partitions` tasks, default
    twice the workers; pcapexfil.dist.score).

    Extraction with `options.engine` "fast" (the default): one task per worker thread, each
    reading the whole capture and keeping its flow-hash share of the connections (the
    `--workers` design, pcapexfil.workers), merged here; "reference": one task per file on
    the reference engine, with the stitch of file boundaries (pcapexfil.dist.stitch).

    `work_dir` must be reachable by every worker and by this process (shared storage on a
    real cluster): the tasks write their spools or provisional Parquet there; it is removed
    at the end.
    `timings`, if given, receives the wall seconds of the run (`wall`), the sequential pass's
    wall and CPU seconds (`finalize`, `finalize_cpu`; it overlaps the extraction, taking each
    file's result as soon as it is ready, and includes the wait for the scoring partitions),
    each task's CPU seconds (`task_cpu`) and the PartitionedDetector's timings (`scoring`).
    """
    from pcapexfil.detect.detector import Detector
    from pcapexfil.dist.score import PartitionedDetector, dask_runner
    from pcapexfil.dist.stitch import Finalizer

    if partitions is None:
        partitions = 2 * max(1, len(client.scheduler_info().get("workers", {})))
    files = order_files(paths)
    opts = ExtractOptions(verify_checksums=options.verify_checksums, local_nets=tuple(options.local_nets),
                          max_flows=options.max_flows, sensor=sensor, logs=options.out_dir is not None)
    run_dir = os.path.join(work_dir, f".pcapexfil-work-{uuid.uuid4().hex[:12]}")
    os.makedirs(run_dir, exist_ok=True)
    scorers = [PartitionedDetector(s, partitions, dask_runner(client), spool_dir=run_dir)
               for s in sinks if isinstance(s, Detector)]
    wrapped = iter(scorers)
    sinks = [next(wrapped) if isinstance(s, Detector) else s for s in sinks]
    t0 = time.perf_counter()
    busy = cpu = 0.0
    task_cpu: list[float] = []
    if options.engine == "fast":
        try:
            summary, busy, cpu = _run_shares(paths, options, sinks, client, run_dir, task_cpu)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        if timings is not None:
            timings.update(wall=time.perf_counter() - t0, finalize=busy, finalize_cpu=cpu, task_cpu=task_cpu,
                           scoring=scorers[0].timings if scorers else {})
        return summary
    logs = AnalyzerContext(out_dir=options.out_dir, use_json=options.use_json, ts_style=options.ts_style,
                           staging=options.staging)
    fin = Finalizer(opts, sinks, options.seed, logs)
    futures = [client.submit(extract_file, path, i, i == len(files) - 1, opts, run_dir, pure=False,
                             key=f"extract-{i}-{os.path.basename(run_dir)}")
               for i, path in enumerate(files)]
    try:
        # Results are taken in file order as they come; later files keep extracting meanwhile.
        for fut in futures:
            res: FileResult = fut.result()
            fut.release()
            task_cpu.append(res.cpu)
            t, c = time.perf_counter(), time.thread_time()
            fin.add(res)
            busy += time.perf_counter() - t
            cpu += time.thread_time() - c
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        t, c = time.perf_counter(), time.thread_time()
        try:
            fin.close()  # what was fed is kept (logs closed, state committed), as pipeline.run does
        finally:
            busy += time.perf_counter() - t
            cpu += time.thread_time() - c
            shutil.rmtree(run_dir, ignore_errors=True)
    if timings is not None:
        timings.update(wall=time.perf_counter() - t0, finalize=busy, finalize_cpu=cpu, task_cpu=task_cpu,
                       scoring=scorers[0].timings if scorers else {})
    return RunSummary(packets=fin.packets, records=fin.records, weirds=fin.weirds)


def _run_shares(paths: Sequence[str], options: RunOptions, sinks: list[RecordSink], client: Any, run_dir: str,
                task_cpu: list[float]) -> tuple[RunSummary, float, float]:
    """The fast engine's extraction: one task per worker thread, each the whole capture's
    share of connections by flow hash (pcapexfil.workers), and the epoch merge here, which
    follows their spools as they are written. Returns the summary and the merge's wall
    (extraction included) and CPU seconds."""
    from pcapexfil.pipeline import Progress
    from pcapexfil.workers import WorkerError, merge, sends, share_task, spooled, worker_options

    count = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()) or 1
    opts = worker_options(options)
    spools = [os.path.join(run_dir, f"share-{i:04d}.bin") for i in range(count)]
    send = sends(sinks, options)
    futures = [client.submit(share_task, list(paths), opts, i, count, send, path, pure=False,
                             key=f"share-{i}-{os.path.basename(run_dir)}") for i, path in enumerate(spools)]
    t, c = time.perf_counter(), time.thread_time()
    try:
        # The merge follows the spools as the tasks write them (as `--workers` reads its pipes).
        summary = merge(spooled(spools, [fut.done for fut in futures]), options, sinks, Progress(False, 0))
        task_cpu.extend(client.gather(futures))
    except BaseException as exc:
        errors = [fut.exception() for fut in futures if fut.status == "error"]
        client.cancel(futures)
        if isinstance(exc, WorkerError) and errors:
            raise errors[0] from exc  # the task's own error, rather than its spool's end
        raise
    return summary, time.perf_counter() - t, time.thread_time() - c


def run_on(spec: str, paths: Sequence[str], options: RunOptions, sinks: list[RecordSink], out_dir: str,
           sensor: str | None = None) -> RunSummary:
    """The CLI's entry: connect to `spec`, run, and also write the final records as Parquet
    (OUT/records/day=YYYY-MM-DD/); OUT is the shared work directory too."""
    from pcapexfil.logs.parquet import ParquetSink

    parse_cluster(spec)
    client = connect(spec)
    try:
        parquet = ParquetSink(os.path.join(out_dir, "records"), sensor=sensor)
        return run_cluster(paths, options, [*sinks, parquet], client, out_dir, sensor)
    finally:
        cluster = client.cluster if spec.startswith("local:") else None
        client.close()
        if cluster is not None:
            cluster.close()
