"""Command line: a thin layer over the library. Each command lives in its own module and
is registered here, in one place."""

from __future__ import annotations

import logging
import os
import sys

import click

# No command uses BLAS, yet OpenBLAS (in numpy's wheels) starts a spinning thread per core
# when numpy is imported: ~0.1 s of CPU, a fifth of `pcapexfil conn`'s start-up, taken from
# a sensor's other work. A value the user set is kept.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pcapexfil")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """Find data exfiltration in network traffic, without Zeek."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format="pcapexfil: %(message)s",
        stream=sys.stderr,
    )


# Command registry: one import and one add_command per command module.
from pcapexfil.cli.conn import conn  # noqa: E402

main.add_command(conn)
from pcapexfil.cli.analyze import analyze  # noqa: E402
from pcapexfil.cli.baseline import baseline  # noqa: E402
from pcapexfil.cli.detect import detect  # noqa: E402

main.add_command(analyze)
main.add_command(detect)
main.add_command(baseline)
from pcapexfil.cli.synth import synth  # noqa: E402

main.add_command(synth)
from pcapexfil.cli.evaluate import evaluate_cmd  # noqa: E402

main.add_command(evaluate_cmd)
from pcapexfil.cli.live import live  # noqa: E402

main.add_command(live)
from pcapexfil.dist.cli import split  # noqa: E402

main.add_command(split)
from pcapexfil.cli.errors import one_line_errors  # noqa: E402

main.main = one_line_errors(main)  # type: ignore[method-assign]
