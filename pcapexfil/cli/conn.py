"""`pcapexfil conn`: write Zeek's conn.log for one or more captures."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from pcapexfil.cli.errors import fail, io_error
from pcapexfil.flow.table import DEFAULT_MAX_FLOWS
from pcapexfil.hooks import RecordSink
from pcapexfil.netconf import PRIVATE_NETS, parse_nets

if TYPE_CHECKING:
    from pcapexfil.source.filter import CaptureFilter

# Shared with `analyze`: the flow table cap against floods and scans.
max_flows_option = click.option(
    "--max-flows", type=click.IntRange(min=0), default=DEFAULT_MAX_FLOWS, show_default=True,
    help="Live connections kept at most; beyond it the least recently active one is ended early "
    "(record written, counted as weird flow_table_full_evicted). About 4.6 KB each; 0: no cap.")

# Shared with `analyze`: which engine builds the connections (same logs either way).
engine_option = click.option(
    "--engine", type=click.Choice(["fast", "reference"]), default="fast", show_default=True,
    help="fast: numba parser and flow table; reference: the readable dpkt/Python path.")


def _workers(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """`--workers`: a positive number, or `auto` (the cores this process may use)."""
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"{value!r}: want a number of workers ≥ 1, or auto")
    return int(value)


# Shared with `analyze`: processes that share the connections by flow hash.
workers_option = click.option(
    "--workers", default="1", show_default=True, callback=_workers, metavar="N|auto",
    help="Processes sharing the capture, each keeping the connections whose flow hash is its share "
    "(auto: one per core); same output as one. Fast engine only.")


# Shared with `analyze`: Zeek's -f on capture files.
filter_option = click.option(
    "-f", "--filter", "capture_filter", default=None, metavar="BPF",
    help="Read only the records this tcpdump filter expression accepts, as Zeek's -f does.")


def make_filter(expression: str | None) -> CaptureFilter | None:
    """The capture filter, checked now (a one-line error and exit 2 if it is invalid)."""
    from pcapexfil.source.filter import CaptureFilter
    from pcapexfil.source.pcap import CaptureError

    if expression is None:
        return None
    flt = CaptureFilter(expression)
    try:
        flt.check()
    except CaptureError as exc:
        fail(f"-f/--filter: {exc}")
    return flt


@click.command("conn")
@click.argument("pcaps", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for conn.log (and weird.log when the input had anomalies).")
@click.option("--json", "use_json", is_flag=True, help="Write Zeek's JSON log form instead of TSV.")
@click.option("--json-timestamps", "ts_style", type=click.Choice(["epoch", "millis", "iso8601"]),
              default="epoch", show_default=True, help="Timestamp form in JSON logs.")
@click.option("--verify-checksums", is_flag=True,
              help="Drop packets with bad checksums, as Zeek does without -C (off by default: "
              "host captures are full of offloaded checksums).")
@click.option("--local-nets", default=",".join(PRIVATE_NETS), show_default="private address ranges",
              help="Comma-separated CIDRs that count as local (local_orig/local_resp); empty: unset.")
@click.option("--seed", type=int, default=None, help="Seed for connection uids, for reproducible runs.")
@max_flows_option
@engine_option
@filter_option
@workers_option
@click.option("--format", "fmt", type=click.Choice(["zeek", "parquet"]), default="zeek", show_default=True,
              help="zeek: OUT/conn.log; parquet: OUT/records/day=YYYY-MM-DD/*.parquet (docs/parquet-schema.md, "
              "needs pcapexfil[dist]).")
@click.option("--sensor", default=None, help="Sensor name in every Parquet record (column `sensor`).")
def conn(pcaps: tuple[str, ...], out_dir: str, use_json: bool, ts_style: str, verify_checksums: bool,
         local_nets: str, seed: int | None, max_flows: int, engine: str, capture_filter: str | None, workers: int,
         fmt: str,
         sensor: str | None) -> None:
    """Write OUT/conn.log for PCAP... (pcap or pcapng, gzip too; several files are one
    stream in time order).

    Exit status: 0 clean; 1 the input was damaged (truncated or corrupt file, see
    weird.log) but the records learned before the damage were written; 2 usage error,
    unreadable input or a write error such as a full disk (nothing written: logs appear
    together at the end of the run, and the previous ones are kept until then).
    """
    from pcapexfil.cli.detect import start_staging
    from pcapexfil.pipeline import ConnLogSink, RunOptions, run
    from pcapexfil.source import CaptureError, open_captures
    from pcapexfil.weird import Weirds

    flt = make_filter(capture_filter)
    if workers > 1 and engine != "fast":
        fail("--workers needs the fast engine")
    if workers > 1 and "-" in pcaps:
        fail("--workers needs capture files: its workers share them (not standard input)")
    try:
        nets = [str(n) for n in parse_nets(local_nets)]
    except ValueError as exc:
        fail(f"--local-nets: {exc}")
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".pcapexfil-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        fail(f"cannot write to {out_dir}: {exc.strerror or exc}")
    try:
        # Validate every input before creating conn.log, so a bad path leaves nothing behind.
        open_captures(list(pcaps), Weirds()).close()
    except CaptureError as exc:
        fail(str(exc))
    staging = start_staging(out_dir)
    options = RunOptions(out_dir=out_dir, use_json=use_json, ts_style=ts_style,  # type: ignore[arg-type]
                         verify_checksums=verify_checksums, local_nets=nets, seed=seed, max_flows=max_flows or None,
                         engine=engine, staging=staging, capture_filter=flt, workers=workers)  # type: ignore[arg-type]
    try:
        sink: RecordSink
        if fmt == "parquet":
            from pcapexfil.logs.parquet import ParquetSink, skip_pandas_probe

            skip_pandas_probe()
            sink = ParquetSink(os.path.join(out_dir, "records"), sensor=sensor)
        else:
            sink = ConnLogSink(out_dir, use_json=use_json, ts_style=ts_style, staging=staging)
        summary = run(pcaps, options, [sink])
        staging.publish()
    except (CaptureError, ImportError) as exc:
        staging.discard()
        fail(str(exc))
    except OSError as exc:
        staging.discard()
        fail(io_error(exc, out_dir))
    note = ""
    if summary.weirds:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(summary.weirds.items()))
        note = f", {sum(summary.weirds.values())} weirds ({counts})"
    click.echo(f"pcapexfil: {summary.packets} packets, {summary.records} connections{note}", err=True)
    if summary.damaged:
        click.echo("pcapexfil: input was damaged; records before the damage were written", err=True)
        sys.exit(1)
