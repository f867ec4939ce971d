"""`pcapexfil split`: cut captures into rotated slices (for --cluster, or a huge single file)."""

from __future__ import annotations

import click


@click.command("split")
@click.argument("pcaps", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), default=3600.0, show_default=True,
              help="Seconds of traffic per slice, from the first packet (like editcap -i).")
@click.option("--prefix", default="slice", show_default=True, help="File names: PREFIX-NNNNN.pcap.")
def split(pcaps: tuple[str, ...], out_dir: str, interval: float, prefix: str) -> None:
    """Cut PCAP... (one stream in time order) into OUT/PREFIX-NNNNN.pcap time slices. A
    large capture cut this way runs as one cluster task per slice, with the same result."""
    from pcapexfil.cli.errors import fail
    from pcapexfil.dist.split import split_captures
    from pcapexfil.source import CaptureError

    try:
        files = split_captures(list(pcaps), out_dir, interval=interval, prefix=prefix)
    except (CaptureError, ValueError, OSError) as exc:
        fail(str(exc))
    click.echo(f"pcapexfil: wrote {len(files)} slices to {out_dir}", err=True)
