"""`pcapexfil evaluate`: score a run's logs against labels.csv; writes report.md/json and plots."""

from __future__ import annotations

import click

from pcapexfil.cli.detect import parse_duration
from pcapexfil.cli.errors import fail, io_error
from pcapexfil.evaluate import ResultsError, evaluate, load_results, write_report
from pcapexfil.synth.labels import read_labels


@click.command("evaluate")
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", "labels_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="labels.csv (as written by `pcapexfil synth`).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), help="Report directory [RESULTS_DIR].")
@click.option("--threshold", default=0.8, show_default=True, type=click.FloatRange(0, 1),
              help="exfiltration_score at which a window counts as flagged.")
@click.option("--aggregation-interval", default="3h", show_default=True,
              help="Window lifetime the run used: a window spans [ts - interval, ts].")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
def evaluate_cmd(results_dir: str, labels_path: str, out_dir: str | None, threshold: float,
                 aggregation_interval: str, no_plots: bool) -> None:
    """Per-kind recall, window precision, FP per host-day and the PR curve of RESULTS_DIR against labels."""
    agg = parse_duration("--aggregation-interval", aggregation_interval)
    try:
        labels = read_labels(labels_path)
        results = load_results(results_dir)
        ev = evaluate(results, labels, threshold=threshold, aggregation_interval=agg)
        files = write_report(ev, out_dir or results_dir, plots=not no_plots)
    except (ValueError, ResultsError) as exc:
        fail(str(exc))  # an unusable labels file or results directory: exit 2, as everywhere
    except OSError as exc:
        fail(io_error(exc, out_dir or results_dir))
    e, w = ev["episodes"], ev["windows"]
    precision = "n/a" if w["precision"] is None else f"{w['precision']:.3f}"
    fp_rate = "n/a" if ev["fp_windows_per_host_day"] is None else f"{ev['fp_windows_per_host_day']:.3f}"
    click.echo(f"recall {e['found']}/{e['total']}, window precision {precision}, FP windows/host-day {fp_rate}")
    for note in ev["notes"]:
        click.echo(note)
    click.echo("wrote " + ", ".join(files))
