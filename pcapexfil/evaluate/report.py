"""Writes an evaluation as report.json, report.md and PNG plots (plots need matplotlib: extra `plots`)."""

from __future__ import annotations

import json
import os
from typing import Any

from pcapexfil.evaluate import metrics
from pcapexfil.synth.labels import format_ts


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_plots(ev: dict[str, Any], out_dir: str) -> tuple[list[str], str | None]:
    """pr_curve.png and score_distribution.png; returns (files, note when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "plots skipped: matplotlib is not installed (pip install 'pcapexfil[plots]')"
    files = []
    curve = [p for p in ev["pr_curve"] if p["precision"] is not None]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if curve:
        ax.step([p["recall"] for p in curve], [p["precision"] for p in curve], where="post")
        at = [p for p in curve if p["threshold"] >= ev["settings"]["threshold"]]
        if at:
            ax.plot([at[-1]["recall"]], [at[-1]["precision"]], "o", label=f"threshold {ev['settings']['threshold']}")
            ax.legend(loc="lower left")
    ax.set_xlabel("episode recall (windows only)")
    ax.set_ylabel("window precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"PR curve (AP {_num(ev['average_precision'])})")
    fig.tight_layout()
    path = os.path.join(out_dir, "pr_curve.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    files.append(path)

    hist = ev["score_histogram"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    centers = [(a + b) / 2 for a, b in zip(hist["bins"][:-1], hist["bins"][1:])]
    width = 0.05 / 3
    for offset, key, label in ((-width, "unlabelled", "unlabelled"), (0.0, "benign_labelled", "benign heavy hitters"),
                               (width, "exfil", "exfiltration")):
        total = sum(hist[key]) or 1
        ax.bar([c + offset for c in centers], [n / total for n in hist[key]], width=width,
               label=f"{label} (n={sum(hist[key])})")
    ax.axvline(ev["settings"]["threshold"], color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("exfiltration_score")
    ax.set_ylabel("fraction of windows in group")
    ax.set_title("Score distribution of windows")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(out_dir, "score_distribution.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    files.append(path)
    return files, None


def render_markdown(ev: dict[str, Any], plots: list[str]) -> str:
    s = ev["settings"]
    lines = [
        "# Detection evaluation",
        "",
        f"Threshold {s['threshold']}, aggregation interval {s['aggregation_interval']:g} s, "
        f"windows matched to labels by {s['matching']}.",
        "",
        "## Summary",
        "",
        f"- Exfiltration episodes found: **{ev['episodes']['found']} / {ev['episodes']['total']}** "
        f"(recall {_pct(ev['episodes']['recall'])})",
        f"- Window precision at the threshold: **{_pct(ev['windows']['precision'])}** "
        f"({ev['windows']['true_positive']} true, {ev['windows']['false_positive']} false of "
        f"{ev['windows']['flagged']} flagged; {ev['windows']['scored']} windows scored)",
        f"- False-positive windows per host-day: **{_num(ev['fp_windows_per_host_day'])}** "
        f"({ev['host_days']} host-days under scoring)",
        f"- Notices not matching an exfiltration episode, per host-day: {_num(ev['false_notices_per_host_day'])}",
        f"- Benign heavy hitters flagged: {ev['episodes']['benign_flagged']} / {ev['episodes']['benign_labels']}",
        f"- Average precision (area under the PR curve, windows only): {_num(ev['average_precision'])}",
        "",
    ]
    lines += [f"> {note}" for note in ev["notes"]]
    lines += ["", "## Per kind", "",
              "| kind | labels | found | recall / flag rate | by window | by notice |",
              "|---|---:|---:|---:|---:|---|"]
    for k in ev["kinds"]:
        rate = k.get("recall", k.get("flag_rate"))
        by_notice = ", ".join(f"{n}: {c}" for n, c in k["found_by_notice"].items()) or "-"
        lines.append(f"| {k['kind']} | {k['episodes']} | {k['found']} | {_pct(rate)} | {k['found_by_window']} | "
                     f"{by_notice} |")
    lines += ["", "For `benign_*` kinds, *found* means flagged: lower is better.", "",
              "## Notices", "", "| note | total | match exfiltration | match benign label | unlabelled |",
              "|---|---:|---:|---:|---:|"]
    for note, e in sorted(ev["notices"].items()):
        lines.append(f"| {note} | {e['total']} | {e['match_exfil']} | {e['match_benign']} | {e['unlabelled']} |")
    lines += ["", "## Labels", "", "| id | kind | orig_h | resp_p | domain | start (UTC) | bytes sent | windows | "
              "max score | found by |", "|---|---|---|---:|---|---|---:|---:|---:|---|"]
    for row in ev["per_label"]:
        how = (["window"] if row["found_by_window"] else []) + row["notices"]
        lines.append(f"| {row['id']} | {row['kind']} | {row['orig_h']} | {row['resp_p']} | {row['domain'] or '-'} | "
                     f"{format_ts(row['start'])[:19]} | {row['bytes_sent']} | {row['windows']} | "
                     f"{_num(row['max_score'])} | {', '.join(how) or '-'} |")
    lines += ["", "## Precision-recall over thresholds", "",
              "| threshold | precision | recall | FP windows / host-day |", "|---:|---:|---:|---:|"]
    curve = ev["pr_curve"]
    picks = curve if len(curve) <= 12 else [curve[round(i * (len(curve) - 1) / 11)] for i in range(12)]
    for p in picks:
        lines.append(f"| {p['threshold']:.4f} | {_pct(p['precision'])} | {_pct(p['recall'])} | "
                     f"{_num(p['fp_per_host_day'])} |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    lines += ["", "## Definitions", "", metrics.__doc__.split("Definitions (also printed in report.md):\n", 1)[1]
              .strip(), ""]
    return "\n".join(lines)


def write_report(ev: dict[str, Any], out_dir: str, plots: bool = True) -> list[str]:
    """Write report.json, report.md and (when possible) the plots; returns the files written."""
    os.makedirs(out_dir, exist_ok=True)
    files: list[str] = []
    plot_files: list[str] = []
    if plots:
        plot_files, note = write_plots(ev, out_dir)
        if note:
            ev["notes"].append(note)
    path = os.path.join(out_dir, "report.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(ev, fh, indent=1, sort_keys=False)
    files.append(path)
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render_markdown(ev, plot_files))
    files.append(path)
    return files + plot_files
