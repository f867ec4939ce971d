"""`pcapexfil live`: capture on an interface and run the analyze pipeline in network time."""

from __future__ import annotations

import sys
from typing import Any

import click

from pcapexfil.cli.conn import engine_option, max_flows_option
from pcapexfil.cli.detect import (
    build_settings,
    detector_options,
    fail,
    make_detector,
    open_state,
    parse_duration,
    prepare_out_dir,
    report,
)


@click.command("live")
@click.option("-i", "--interface", "iface", required=True, help="Interface to capture on (e.g. a span port).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for conn.log, the identifier logs, exfil_detection.log, notice.log, stats.log.")
@click.option("--bpf", default="", help="Capture filter (tcpdump syntax).")
@click.option("--snaplen", type=click.IntRange(64, 262144), default=262144, show_default=True,
              help="Bytes kept of each frame (byte counts come from the headers either way).")
@click.option("--no-promisc", is_flag=True, help="Do not put the interface into promiscuous mode.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Capture processes sharing the interface by flow hash (PACKET_FANOUT).")
@click.option("--buffer-size", "buffer_mb", type=click.IntRange(2, 4096), default=64, show_default=True,
              help="Kernel ring per worker, MiB.")
@click.option("--rotate", default=None, help="Rotate logs this often (network time), e.g. 1h; default never "
              "(SIGHUP always rotates).")
@click.option("--write-pcap", type=click.Path(dir_okay=False), default=None,
              help="Also write the captured frames to this pcap (with --workers N: one FILE.wK.pcap per worker).")
@click.option("--stats-interval", default="60", show_default=True,
              help="Seconds of network time between stats.log rows.")
@click.option("--verify-checksums", is_flag=True, help="Drop packets with bad checksums, as Zeek without -C.")
@click.option("--seed", type=int, default=None, help="Seed for connection uids, for reproducible runs.")
@max_flows_option
@engine_option
@detector_options
def live(iface: str, out_dir: str, bpf: str, snaplen: int, no_promisc: bool, workers: int, buffer_mb: int,
         rotate: str | None, write_pcap: str | None, stats_interval: str, verify_checksums: bool,
         seed: int | None, max_flows: int, engine: str, **kw: Any) -> None:
    """Capture on IFACE and write what `analyze` writes, continuously: logs rotate (SIGHUP or
    --rotate), the detector's --state is committed each recalculation and at exit, counters go
    to stats.log. SIGINT/SIGTERM stop: open connections are flushed, state committed, exit 0.

    Exit status: 0 stopped by a signal; 1 the state failed mid-run or a worker died;
    2 usage error, bad filter, interface or state (nothing written).
    """
    from pcapexfil.detect.state import StateError
    from pcapexfil.live import AnalysisOptions, CaptureOptions, LiveSettings, run_live
    from pcapexfil.source.live import compile_bpf, interface_linktype
    from pcapexfil.source.pcap import CaptureError

    settings = build_settings(kw)
    every = parse_duration("--rotate", rotate) if rotate is not None else None
    stats_every = parse_duration("--stats-interval", stats_interval)
    try:
        compile_bpf(bpf, interface_linktype(iface), snaplen)  # bad filter or interface: before any output
    except CaptureError as exc:
        fail(str(exc))
    prepare_out_dir(out_dir)
    store = open_state(kw["state"], kw["busy_timeout"])
    live_settings = LiveSettings(
        capture=CaptureOptions(iface=iface, bpf=bpf, snaplen=snaplen, promisc=not no_promisc,
                               buffer_bytes=buffer_mb << 20),
        analysis=AnalysisOptions(out_dir=out_dir, use_json=kw["use_json"], ts_style=kw["ts_style"],
                                 verify_checksums=verify_checksums, local_nets=settings.local_nets, seed=seed,
                                 write_pcap=write_pcap, max_flows=max_flows or None, engine=engine),
        workers=workers, rotate=every, stats_interval=stats_every,
    )

    def ready() -> None:
        click.echo(f"pcapexfil: listening on {iface} ({workers} worker{'s' if workers > 1 else ''})", err=True)

    status = 0
    try:
        det = make_detector(settings, None, store, kw["use_json"], kw["ts_style"])
    except StateError as exc:
        fail(str(exc))
    try:
        summary = run_live(live_settings, det, ready)
    except CaptureError as exc:
        fail(str(exc))
    except StateError as exc:
        fail(str(exc), status=1)
    except OSError as exc:
        fail(f"{exc.filename or out_dir}: {exc.strerror or exc}")
    finally:
        if store is not None:
            store.close()
    c = summary.counters
    click.echo(f"pcapexfil: {c.received} packets received, {c.dropped_kernel} dropped by the kernel, "
               f"{c.dropped_pcapexfil} dropped by pcapexfil, {c.flows_live} flows live at stop, "
               f"{summary.records} records written, {summary.rotations} rotations", err=True)
    if c.merged:
        click.echo(f"pcapexfil: warning: {c.merged} frames were longer than {iface}'s MTU allows: the NIC or "
                   "the kernel merged segments (GRO/LRO), so packet counts and history differ from the wire; "
                   f"turn it off with: ethtool -K {iface} gro off lro off", err=True)
    report(det)
    if summary.lost_workers:
        click.echo(f"pcapexfil: {summary.lost_workers} capture worker(s) died; their open connections were lost",
                   err=True)
        status = 1
    sys.exit(status)
