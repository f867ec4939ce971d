"""`pcapexfil synth`: write a labelled synthetic dataset (one pcap per day + labels.csv)."""

from __future__ import annotations

import datetime as dt

import click

from pcapexfil.netconf import PRIVATE_NETS, parse_nets


def _date(_ctx: click.Context, _param: click.Parameter, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


@click.command("synth")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--days", default=16, show_default=True, type=click.IntRange(min=1), help="Days of traffic.")
@click.option("--hosts", default=20, show_default=True, type=click.IntRange(min=1), help="Hosts in the network.")
@click.option("--seed", default=1, show_default=True, type=int, help="Random seed (same seed, same files).")
@click.option("--start", default="2024-03-04", show_default=True, callback=_date, help="First day (UTC).")
@click.option("--local-nets", default="10.0.0.0/8", show_default=True,
              help="Comma-separated CIDRs; hosts are placed in the first IPv4 one.")
@click.option("--scale", default=1.0, show_default=True, type=float,
              help="Multiplies benign activity (connections per host-day), for bigger benchmark datasets.")
@click.option("--episodes-per-kind", default=3, show_default=True, type=click.IntRange(min=0),
              help="Injected exfiltration episodes of each kind.")
@click.option("--baseline-days", default=10, show_default=True, type=click.IntRange(min=0),
              help="Days before the first episode.")
@click.option("--full-payload", is_flag=True,
              help="Capture every payload byte (default: data segments are snap-length truncated; counts are the same).")
def synth(out_dir: str, days: int, hosts: int, seed: int, start: dt.date, local_nets: str, scale: float,
          episodes_per_kind: int, baseline_days: int, full_payload: bool) -> None:
    """Write day-YYYY-MM-DD.pcap files of a simulated network, and labels.csv."""
    # Imported here: the traffic model (numba, dpkt) is not for every command's start-up.
    from pcapexfil.synth import SynthConfig, generate

    try:
        nets = [str(n) for n in parse_nets(local_nets)] or list(PRIVATE_NETS)
        cfg = SynthConfig(out_dir=out_dir, days=days, hosts=hosts, seed=seed, start=start, local_nets=nets,
                          scale=scale, episodes_per_kind=episodes_per_kind, baseline_days=baseline_days,
                          full_payload=full_payload)
        summary = generate(cfg)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    exfil = sum(1 for lb in summary.labels if not lb.benign)
    click.echo(f"wrote {len(summary.files)} pcaps ({summary.packets} packets, {summary.pcap_bytes / 1e6:.1f} MB), "
               f"{exfil} exfiltration episodes and {len(summary.labels) - exfil} benign heavy hitters "
               f"in labels.csv")
