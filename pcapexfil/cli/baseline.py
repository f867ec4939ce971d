"""`pcapexfil baseline show|export|import|reset --state DB`: inspect and move the baseline.

The dns-tunnel rule's history (table `dns_history`) is shown by `show`, kept by `merge` (the
union, as the volume baseline) and forgotten by `reset`; `export` and `import` move the volume
baseline only and say so when the state holds DNS history.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import click

from pcapexfil.cli.errors import fail


def _store(path: str, busy_timeout: float, must_exist: bool = True, writer: bool = False) -> Any:
    from pcapexfil.detect.state import StateError, StateStore

    if must_exist and not os.path.exists(path):
        fail(f"state database {path}: no such file")
    try:
        return StateStore(path, busy_timeout=busy_timeout, writer=writer)
    except StateError as exc:
        fail(str(exc))


_state_option = click.option("--state", required=True, type=click.Path(dir_okay=False), help="SQLite state.")
_timeout_option = click.option("--busy-timeout", type=float, default=10.0, show_default=True,
                               help="Seconds to wait for another process's lock.")


@click.group("baseline")
def baseline() -> None:
    """Inspect, export, import or reset the detector's baseline."""


@baseline.command("show")
@_state_option
@_timeout_option
def show(state: str, busy_timeout: float) -> None:
    """One line per (orig_h, resp_p/proto): distinct days, elements, last write (UTC); then the
    dns-tunnel rule's history, one line per host: distinct domains, windows, last write."""
    store = _store(state, busy_timeout)
    meta = store.meta()
    rows = store.summary()
    dns = store.dns_summary()
    store.close()
    click.echo(f"# domain_mode={meta.get('domain_mode', '-')} tz={meta.get('tz', '-')} "
               f"watermark={meta.get('watermark', '-')} keys={len(rows)}")
    click.echo("orig_h\tresp_p\tdays\telements\tlast_write")
    for orig_h, resp_p, proto, days, elements, last in rows:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last))
        click.echo(f"{orig_h}\t{resp_p}/{proto}\t{days}\t{elements}\t{when}")
    click.echo(f"# dns-tunnel history: hosts={len(dns)}")
    click.echo("orig_h\tdomains\twindows\tlast_write")
    for orig_h, domains, windows, last in dns:
        click.echo(f"{orig_h}\t{domains}\t{windows}\t{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(last))}")


@baseline.command("export")
@_state_option
@_timeout_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="-", help="File (default stdout).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
def export(state: str, busy_timeout: float, output: str, fmt: str) -> None:
    """Write every baseline element (JSON lines or CSV with a header). The dns-tunnel rule's
    history is not exported (a note on stderr says so when there is some)."""
    from pcapexfil.detect.state import BASELINE_COLUMNS

    store = _store(state, busy_timeout)
    if store.dns_summary():
        click.echo("pcapexfil: note: the dns-tunnel rule's history is not exported (baseline merge keeps it)",
                   err=True)
    out = sys.stdout if output == "-" else open(output, "w", encoding="utf-8", newline="")
    try:
        if fmt == "csv":
            writer = csv.DictWriter(out, fieldnames=list(BASELINE_COLUMNS))
            writer.writeheader()
            writer.writerows(store.baseline_rows())
        else:
            for row in store.baseline_rows():
                out.write(json.dumps(row) + "\n")
    finally:
        store.close()
        if out is not sys.stdout:
            out.close()


def _read_rows(path: str, fmt: str) -> Iterator[dict[str, Any]]:
    from pcapexfil.detect.state import BASELINE_COLUMNS

    types = {"resp_p": int, "orig_ip_bytes": int, "resp_ip_bytes": int, "ts": float, "duration": float}
    with open(path, encoding="utf-8", newline="") as fh:
        source: Iterator[Any] = csv.DictReader(fh) if fmt == "csv" else (ln for ln in fh if ln.strip())
        number = 0
        try:
            for number, item in enumerate(source, start=1):
                row: dict[str, Any] = json.loads(item) if isinstance(item, str) else item
                yield {c: types.get(c, str)(row[c]) for c in BASELINE_COLUMNS}
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not an exported baseline (not UTF-8 text: {exc.reason})") from None
        except csv.Error as exc:  # raised reading the next element
            raise ValueError(f"{path}: element {number + 1}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: element {number}: bad or missing field ({exc})") from None


@baseline.command("import")
@_state_option
@_timeout_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
              help="Default: from the file name (.csv, else JSON lines).")
def import_(state: str, busy_timeout: float, file: str, fmt: str | None) -> None:
    """Add exported elements to a baseline (all or nothing; parameters follow at the next run).
    Only the volume baseline: the dns-tunnel rule's history cannot be imported."""
    from pcapexfil.detect.state import StateError

    fmt = fmt or ("csv" if file.endswith(".csv") else "jsonl")
    try:
        rows = list(_read_rows(file, fmt))
    except ValueError as exc:
        fail(str(exc).splitlines()[0])
    store = _store(state, busy_timeout, must_exist=False, writer=True)
    try:
        count = store.import_rows(rows)
    except StateError as exc:
        fail(str(exc))
    finally:
        store.close()
    click.echo(f"pcapexfil: imported {count} baseline elements", err=True)


@baseline.command("reset")
@_state_option
@_timeout_option
@click.option("--yes", is_flag=True, help="Confirm: forget the whole baseline and all detector state.")
def reset(state: str, busy_timeout: float, yes: bool) -> None:
    """Forget everything the detector learned (the file stays, empty)."""
    from pcapexfil.detect.state import StateError

    if not yes:
        fail("reset forgets the whole baseline; add --yes to confirm")
    store = _store(state, busy_timeout, writer=True)
    try:
        store.reset()
    except StateError as exc:
        fail(str(exc))
    finally:
        store.close()


@baseline.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="New state database.")
@_timeout_option
def merge(inputs: tuple[str, ...], output: str, busy_timeout: float) -> None:
    """Combine the states of several sensors (A.db B.db ...) into a new OUT.db: baselines and
    dns-tunnel histories united, normalisation states combined, sensor names kept (see
    pcapexfil.dist.merge)."""
    from pcapexfil.detect.state import StateError
    from pcapexfil.dist.merge import MergeError, merge_states

    try:
        summary = merge_states(inputs, output, busy_timeout)
    except (MergeError, StateError) as exc:
        fail(str(exc))
    click.echo(f"pcapexfil: merged {len(inputs)} states: {summary.rows} baseline elements, "
               f"{summary.dns_rows} dns-tunnel history elements, "
               f"sensors {', '.join(summary.sensors) or '-'}", err=True)
