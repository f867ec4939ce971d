"""`pcapexfil analyze`: captures → conn.log (and the identifier logs) → exfiltration detector."""

from __future__ import annotations

import sys
from typing import Any

import click

from pcapexfil.cli.conn import engine_option, filter_option, make_filter, max_flows_option, workers_option
from pcapexfil.cli.detect import (
    LAST_RUN,
    already_done,
    build_settings,
    detector_options,
    fail,
    io_error,
    make_detector,
    open_state,
    prepare_out_dir,
    report,
    run_key,
    start_staging,
)


@click.command("analyze")
@click.argument("pcaps", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for conn.log, exfil_detection.log, notice.log and the other logs.")
@click.option("--verify-checksums", is_flag=True, help="Drop packets with bad checksums, as Zeek without -C.")
@click.option("--seed", type=int, default=None, help="Seed for connection uids, for reproducible runs.")
@max_flows_option
@engine_option
@filter_option
@workers_option
@click.option("--cluster", default=None, metavar="local:N|tcp://HOST:8786",
              help="Run on a Dask cluster: record extraction (fast engine: one task per worker thread, each a "
              "flow-hash share of the capture; reference: one task per file), then scoring one task per "
              "partition of hosts and an ordered pass (docs/cluster.md); same output. "
              "Needs pcapexfil[dist]; OUT and the captures must be shared with the workers.")
@click.option("--sensor", default=None,
              help="Sensor name stored with the records (Parquet, with --cluster) and in --state.")
@detector_options
def analyze(pcaps: tuple[str, ...], out_dir: str, verify_checksums: bool, seed: int | None, max_flows: int,
            engine: str, capture_filter: str | None, workers: int, cluster: str | None, sensor: str | None,
            **kw: Any) -> None:
    """Find exfiltration in PCAP... (one time-ordered stream): writes OUT/conn.log,
    OUT/exfil_detection.log and OUT/notice.log. Scores need 10 days of baseline: keep one
    --state across daily runs; its open windows carry over, so consecutive captures give the
    same result as one long capture.

    Exit status: 0 clean; 1 the input was damaged (records before the damage were used);
    2 usage error, unreadable input, unusable state or a write error (nothing written: the
    previous logs and state are kept). The logs and the state change together, at the end of
    the run; a run killed before that left both as they were (docs/state.md).
    """
    from pcapexfil.detect.state import StateError
    from pcapexfil.dist import ClusterError
    from pcapexfil.pipeline import ConnLogSink, RunOptions, run
    from pcapexfil.source import CaptureError, open_captures
    from pcapexfil.weird import Weirds

    settings = build_settings(kw)
    flt = make_filter(capture_filter)
    if cluster and flt is not None:
        fail("-f/--filter is not supported with --cluster")
    if workers > 1 and (engine != "fast" or cluster or "-" in pcaps):
        fail("--workers needs the fast engine, capture files (not standard input) and no --cluster "
             "(whose workers are the cluster's)")
    if cluster:
        from pcapexfil.dist.cluster import parse_cluster, require_dask

        try:  # before any output: a bad --cluster or missing Dask leaves nothing behind
            parse_cluster(cluster)
            require_dask()
        except ClusterError as exc:
            fail(str(exc))
    prepare_out_dir(out_dir)
    try:
        open_captures(list(pcaps), Weirds()).close()  # validate every input before any output
    except CaptureError as exc:
        fail(str(exc))
    store = open_state(kw["state"], kw["busy_timeout"])
    key = run_key("analyze", pcaps, out_dir, click.get_current_context().params)
    if already_done(store, key, kw["state"], out_dir):
        return
    if store is not None and sensor:
        from pcapexfil.dist.merge import note_sensor

        try:
            note_sensor(store, sensor)
        except StateError as exc:
            fail(str(exc))
    staging = start_staging(out_dir)
    options = RunOptions(out_dir=out_dir, use_json=kw["use_json"], ts_style=kw["ts_style"],
                         verify_checksums=verify_checksums, local_nets=settings.local_nets, seed=seed,
                         max_flows=max_flows or None, engine=engine, staging=staging,  # type: ignore[arg-type]
                         capture_filter=flt, workers=workers)
    try:
        det = make_detector(settings, out_dir, store, kw["use_json"], kw["ts_style"], staging)
        det.extra_meta[LAST_RUN] = key
        conn_sink = ConnLogSink(out_dir, use_json=kw["use_json"], ts_style=kw["ts_style"], staging=staging)
        if cluster:
            from pcapexfil.dist.cluster import run_on
            from pcapexfil.logs.parquet import skip_pandas_probe

            skip_pandas_probe()  # the cluster run writes the records as Parquet too
            summary = run_on(cluster, pcaps, options, [conn_sink, det], out_dir, sensor)
        else:
            summary = run(pcaps, options, [conn_sink, det])
        staging.publish()
    except (CaptureError, ClusterError, StateError) as exc:
        staging.discard()
        fail(str(exc))
    except OSError as exc:
        staging.discard()
        fail(io_error(exc, out_dir))
    finally:
        if store is not None:
            store.close()
    evicted = summary.weirds.get("flow_table_full_evicted", 0)
    click.echo(f"pcapexfil: {summary.packets} packets, {summary.records} connections"
               + (f", {evicted} evicted early (flow_table_full_evicted, --max-flows {max_flows})" if evicted else ""),
               err=True)
    report(det)
    if summary.damaged:
        click.echo("pcapexfil: input was damaged; records before the damage were used", err=True)
        sys.exit(1)
