"""`pcapexfil detect`: the exfiltration detector fed from existing Zeek logs; also the
detector options shared with `pcapexfil analyze`."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from pcapexfil.cli.errors import fail, io_error
from pcapexfil.logs.staging import LogStaging

from pcapexfil.detect.scoring import DEFAULT_SCORING, SCORINGS
from pcapexfil.netconf import MULTICAST_NETS, PRIVATE_NETS, parse_nets

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h|hr|d|day|days)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0,
          "d": 86400.0, "day": 86400.0, "days": 86400.0}


def parse_duration(option: str, text: str) -> float:
    """'3h', '30d', '90m', '3600' (seconds)."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        fail(f"{option}: invalid duration {text!r} (examples: 3600, 90m, 3h, 30d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _parse_int(option: str, text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        fail(f"{option}: expected a positive whole number, got {text!r}")
    return int(text)


def detector_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every reference setting (same defaults) plus state, rules, zone and log form."""
    options = [
        click.option("--state", "state", type=click.Path(dir_okay=False),
                     help="SQLite state (baseline, parameters, open windows...). Without it everything is "
                     "in memory and open windows are closed at end of input; with it they carry over "
                     "into the next run."),
        click.option("--busy-timeout", default="10", show_default=True,
                     help="Seconds to wait for another process's lock on --state."),
        click.option("--local-nets", default=",".join(PRIVATE_NETS), show_default="Zeek's private ranges",
                     help="Comma-separated CIDRs that are local (Site::local_nets)."),
        click.option("--json", "use_json", is_flag=True, help="Write Zeek's JSON log form instead of TSV."),
        click.option("--json-timestamps", "ts_style", type=click.Choice(["epoch", "millis", "iso8601"]),
                     default="epoch", show_default=True, help="Timestamp form in JSON logs."),
        click.option("--tz", default=None, help="Zone (zoneinfo name) for day boundaries; default UTC."),
        click.option("--domain-mode", type=click.Choice(["psl", "last2"]), default="psl", show_default=True,
                     help="Parent domain: public-suffix list, or the reference's last two labels."),
        click.option("--rule", "rules_on", multiple=True, metavar="NAME",
                     help="Enable a rule (every rule is on by default): http-upload (port-80 client sent "
                     "more than server), dns-tunnel (DNS tunnels from the names hosts ask for; docs/scoring.md)."),
        click.option("--no-rule", "rules_off", multiple=True, metavar="NAME", help="Disable a simple rule."),
        click.option("--max-baseline-hold-time", default="30d", show_default=True,
                     help="Drop a baseline not written for this long."),
        click.option("--new-calculation-window", default="1h", show_default=True,
                     help="How often parameters are recomputed (network time)."),
        click.option("--aggregation-interval", default="3h", show_default=True,
                     help="Lifetime of an aggregation window, from its first connection."),
        click.option("--baseline-days", default="14", show_default=True, help="Days kept per baseline."),
        click.option("--baseline-min-days-for-score", default="10", show_default=True,
                     help="Distinct days a baseline needs before it is scored."),
        click.option("--enabled-identifier", default="resp_h,domain,ja3s", show_default=True,
                     help="Identifiers that aggregation keys are built from."),
        click.option("--multicast-address-range", default=",".join(MULTICAST_NETS), show_default=True,
                     help="Destinations ignored."),
        click.option("--threshold-raise-notice-at-high-score", "threshold", default="0.8", show_default=True,
                     help="exfiltration_score that raises a High_Score notice."),
        click.option("--scoring", type=click.Choice(list(SCORINGS)), default=DEFAULT_SCORING, show_default=True,
                     help="How windows are scored: the reference's chain, or robust per-key volume scores "
                     "(docs/scoring.md)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_settings(kw: dict[str, Any]) -> Any:
    """Settings from the detector options, or `pcapexfil: error:` and exit 2."""
    from pcapexfil.detect.detector import RULES, Settings

    try:
        local = tuple(str(n) for n in parse_nets(kw["local_nets"]))
        multicast = tuple(str(n) for n in parse_nets(kw["multicast_address_range"]))
    except ValueError as exc:
        fail(str(exc))
    try:
        threshold = float(kw["threshold"])
    except ValueError:
        fail(f"--threshold-raise-notice-at-high-score: not a number: {kw['threshold']!r}")
    for name in (*kw["rules_on"], *kw["rules_off"]):
        if name not in RULES:
            fail(f"unknown rule {name!r} (known: {', '.join(RULES)})")
    rules = [r for r in RULES if r not in kw["rules_off"]]  # every rule is on unless --no-rule
    settings = Settings(
        max_baseline_hold_time=parse_duration("--max-baseline-hold-time", kw["max_baseline_hold_time"]),
        new_calculation_window=parse_duration("--new-calculation-window", kw["new_calculation_window"]),
        aggregation_interval=parse_duration("--aggregation-interval", kw["aggregation_interval"]),
        baseline_days=_parse_int("--baseline-days", kw["baseline_days"]),
        baseline_min_days_for_score=_parse_int("--baseline-min-days-for-score", kw["baseline_min_days_for_score"]),
        enabled_identifier=tuple(x.strip() for x in kw["enabled_identifier"].split(",") if x.strip()),
        multicast_address_range=multicast,
        threshold_raise_notice_at_high_score=threshold,
        local_nets=local,
        domain_mode=kw["domain_mode"],
        tz=kw["tz"],
        rules=tuple(rules),
        scoring=kw["scoring"],
    )
    try:
        settings.validate()
    except ValueError as exc:
        fail(str(exc))
    return settings


def open_state(path: str | None, busy_timeout: str) -> Any:
    """The StateStore for --state (None without it), or a one-line error and exit 2."""
    from pcapexfil.detect.state import StateError, StateStore

    if path is None:
        return None
    try:
        timeout = float(busy_timeout)
    except ValueError:
        fail(f"--busy-timeout: not a number: {busy_timeout!r}")
    try:
        return StateStore(path, busy_timeout=timeout, writer=True)
    except StateError as exc:
        fail(str(exc))


def make_detector(settings: Any, out_dir: str | None, store: Any, use_json: bool, ts_style: str,
                  staging: LogStaging | None = None) -> Any:
    """The Detector (its StateError is the caller's: it may have logs to discard)."""
    from pcapexfil.detect.detector import Detector

    return Detector(settings, out_dir=out_dir, store=store, use_json=use_json, ts_style=ts_style,  # type: ignore[arg-type]
                    staging=staging)


# meta key: the key (`run_key`) of the last run committed to a state.
LAST_RUN = "last_run"


def run_key(command: str, inputs: Sequence[str], out_dir: str, params: dict[str, Any]) -> str:
    """What identifies a run over files: the command, each input file as it is on disk (path,
    size, mtime; a directory's files), the output directory and the options. Empty when an
    input is a stream (standard input, a pipe): such a run is never the same one again."""
    files = []
    for path in inputs:
        names = sorted(os.path.join(path, n) for n in os.listdir(path)) if os.path.isdir(path) else [path]
        for name in names:
            try:
                st = os.stat(name)
            except OSError:
                return ""
            if not stat.S_ISREG(st.st_mode):
                if name == path:
                    return ""
                continue
            files.append([os.path.realpath(name), st.st_size, st.st_mtime_ns])
    options = {k: v for k, v in sorted(params.items()) if k not in ("busy_timeout", "out_dir", "pcaps", "log_dirs")}
    return json.dumps({"command": command, "inputs": files, "out": os.path.realpath(out_dir), "options": options},
                      default=list)


def already_done(store: Any, key: str, state: str, out_dir: str) -> bool:
    """The state's last committed run was this very one (a rerun after a kill that came after
    its commit point, or a second identical run that waited for the first): its logs are in
    OUT already, and running again would only replace them with empty detection logs."""
    if store is None or not key or store.meta().get(LAST_RUN) != key:
        return False
    click.echo(f"pcapexfil: this run is already committed to {state} and its logs are in {out_dir}; "
               "nothing to do", err=True)
    store.close()
    return True


def start_staging(out_dir: str) -> LogStaging:
    """The run's logs, published together at its commit point (orphans of a killed run removed)."""
    staging = LogStaging(out_dir)
    try:
        staging.remove_orphans()
    except OSError as exc:
        fail(f"cannot write to {out_dir}: {exc.strerror or exc}")
    return staging


def prepare_out_dir(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".pcapexfil-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        fail(f"cannot write to {out_dir}: {exc.strerror or exc}")


def report(det: Any) -> None:
    st = det.stats
    click.echo(f"pcapexfil: detector: {st.records} connections, {st.outgoing} outgoing, "
               f"{st.windows_closed} windows closed, {st.scored} scored, {det.notices.raised} notices"
               + (f", {st.skipped_before_watermark} skipped (already in state)" if st.skipped_before_watermark
                  else ""), err=True)


@click.command("detect")
@click.argument("log_dirs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for exfil_detection.log and notice.log.")
@detector_options
def detect(log_dirs: tuple[str, ...], out_dir: str, **kw: Any) -> None:
    """Run the exfiltration detector over existing Zeek logs: each ZEEK_LOG_DIR holds conn.log
    (TSV or JSON, .gz too), joined by uid with ssl.log, http.log and dns.log when present
    (dns.log also feeds the dns-tunnel rule).

    Exit status: 0 clean; 1 some log lines were damaged and skipped; 2 usage error, unusable
    input or state, or a write error (nothing written: the previous logs and state are kept).
    The logs and the state change together, at the end of the run (docs/state.md).
    """
    from pcapexfil.detect.state import StateError
    from pcapexfil.weird import Weirds
    from pcapexfil.zeekread import ZeekLogError, read_directory

    settings = build_settings(kw)
    weirds = Weirds()
    records = []
    try:
        for directory in log_dirs:
            records.extend(read_directory(directory, weirds))
    except ZeekLogError as exc:
        fail(str(exc))
    # conn.log is ordered by start; the detector wants connections as they end.
    records.sort(key=lambda r: r.ts + (r.duration or 0.0))
    prepare_out_dir(out_dir)
    store = open_state(kw["state"], kw["busy_timeout"])
    key = run_key("detect", log_dirs, out_dir, click.get_current_context().params)
    if already_done(store, key, kw["state"], out_dir):
        return
    staging = start_staging(out_dir)
    now = 0.0
    try:
        det = make_detector(settings, out_dir, store, kw["use_json"], kw["ts_style"], staging)
        det.extra_meta[LAST_RUN] = key
        for rec in records:
            now = max(now, rec.ts + (rec.duration or 0.0))
            det.on_time(now)
            det.on_record(rec)
        det.close(now)
        staging.publish()
    except StateError as exc:
        staging.discard()
        fail(str(exc))
    except OSError as exc:
        staging.discard()
        fail(io_error(exc, out_dir))
    finally:
        if store is not None:
            store.close()
    report(det)
    if weirds.total:
        click.echo(f"pcapexfil: skipped damaged log input: {weirds.summary()}", err=True)
        sys.exit(1)
