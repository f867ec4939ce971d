"""Aggregation and scoring partitioned by host (pcapexfil.dist.score) against the Detector.

Unit level (no Dask): the same event stream fed to a Detector and to a PartitionedDetector
whose partitions run in-process, for both scorings, without and with a state store (two
consecutive runs, so the second one starts from the state the first one committed).
Cluster level: analyze on a LocalCluster of 2 worker processes over a rotated multi-day
capture, logs byte-identical to the single-process run, for both scorings.
"""

from __future__ import annotations

import glob
import os
import sqlite3
from pathlib import Path

import pytest
from test_detect_support import scenario

from pcapexfil.detect.detector import Detector, Settings
from pcapexfil.detect.state import StateStore
from pcapexfil.dist.score import (
    PartitionedDetector,
    PartitionResult,
    PartitionTask,
    partition_of,
    run_in_process,
)
from pcapexfil.pipeline import ConnLogSink, RunOptions, run
from pcapexfil.record import ConnRecord
from pcapexfil.synth import SynthConfig, generate

SEED = 5
Event = tuple[str, object]
DB_TABLES = (("baseline", "orig_h, resp_p, proto, day, ts, identifier, orig_ip_bytes, resp_ip_bytes, duration", "id"),
             ("params", "*", "orig_h, resp_p, proto"), ("norm", "*", "name"), ("windows", "*", "seq"),
             ("suppress", "*", "key"), ("meta", "*", "key"),
             ("dns_history", "orig_h, domain, day, ts, info, queries, names", "ts, orig_h, domain"),
             ("dns_windows", "*", "seq"))


class Events:
    """A sink that keeps what the pipeline feeds (records and ticks) to replay it later."""

    def __init__(self) -> None:
        self.items: list[Event] = []

    def on_record(self, rec: ConnRecord) -> None:
        self.items.append(("r", rec))

    def on_time(self, now: float) -> None:
        self.items.append(("t", now))

    def close(self, now: float) -> None:
        self.items.append(("t", now))


def _settings(scoring: str) -> Settings:
    # One baseline day and 20-minute windows so three days give scores; the reference's scores
    # stay small (its normalisation), so its notice threshold is lowered to raise High_Score too.
    return Settings(baseline_min_days_for_score=1, aggregation_interval=1200.0, scoring=scoring,
                    threshold_raise_notice_at_high_score=0.3 if scoring == "reference" else 0.8)


def _body(path: str) -> list[str]:
    with open(path) as f:
        return [line for line in f if not line.startswith(("#open", "#close"))]


def _db(path: str) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return [(t, *row) for t, cols, order in DB_TABLES for row in con.execute(f"SELECT {cols} FROM {t} ORDER BY {order}")]
    finally:
        con.close()


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dscore")
    generate(SynthConfig(out_dir=str(root / "days"), days=3, hosts=6, seed=3, baseline_days=1, episodes_per_kind=1))
    days = sorted(glob.glob(str(root / "days" / "*.pcap")))
    ev = Events()
    run(days, RunOptions(seed=SEED, max_flows=None, engine="reference"), [ev])
    return {"root": root, "days": days, "events": ev.items}


def _replay(sink: object, events: list[Event]) -> None:
    for kind, x in events:
        if kind == "r":
            sink.on_record(x)  # type: ignore[attr-defined]
        else:
            sink.on_time(x)  # type: ignore[attr-defined]
    last = events[-1][1]
    sink.close(last if isinstance(last, float) else last.ts)  # type: ignore[attr-defined,union-attr]


class Spy:
    """run_in_process that keeps the tasks and results (to check the partitioning is real)."""

    def __init__(self) -> None:
        self.tasks: list[PartitionTask] = []
        self.results: list[PartitionResult] = []

    def __call__(self, tasks: list[PartitionTask]) -> list[PartitionResult]:
        self.tasks += tasks
        out = run_in_process(tasks)
        self.results += out
        return out


def _both(events: list[Event], settings: Settings, out: Path, parts: int, state: bool, runs: int = 1,
          spool: bool = False) -> Spy:
    """Single run and partitioned run over `events` (cut into `runs` consecutive runs); with
    `spool`, the routed records go through files in chunks of 100."""
    spy = Spy()
    cut = [events[i * len(events) // runs:(i + 1) * len(events) // runs] for i in range(runs)]
    for mode in ("single", "parts"):
        d = out / mode
        d.mkdir(parents=True)
        for i, chunk in enumerate(cut):
            store = StateStore(str(d / "state.db")) if state else None
            run_dir = d / str(i)
            run_dir.mkdir()
            det = Detector(settings, out_dir=str(run_dir), store=store)
            spool_dir = str(out / "spool") if spool else None
            if spool_dir:
                os.makedirs(spool_dir, exist_ok=True)
            _replay(det if mode == "single" else PartitionedDetector(det, parts, spy, spool_dir, 100), chunk)
            if store is not None:
                store.close()
    for i in range(runs):
        for name in ("exfil_detection.log", "notice.log"):
            assert _body(str(out / "parts" / str(i) / name)) == _body(str(out / "single" / str(i) / name)), (i, name)
    if state:
        assert _db(str(out / "parts" / "state.db")) == _db(str(out / "single" / "state.db"))
    return spy


def _notes(path: Path) -> set[str]:
    lines = _body(str(path))
    col = next(line for line in lines if line.startswith("#fields")).rstrip("\n").split("\t")[1:].index("note")
    return {line.split("\t")[col] for line in lines if not line.startswith("#")}


@pytest.mark.parametrize("scoring", ["reference", "robust"])
def test_partitions_equal_the_detector(synth: dict, tmp_path: Path, scoring: str) -> None:
    spy = _both(synth["events"], _settings(scoring), tmp_path, 3, state=False)
    # The partitioning is real: every partition scored windows, and their closes interleave in
    # the global order (so the ordered pass, not a concatenation, gives the identical logs).
    assert all(r.closed for r in spy.results) and len(spy.results) == 3
    order = sorted((c.order, r.index) for r in spy.results for c in r.closed_windows())
    owners = [i for _, i in order]
    assert owners != sorted(owners)
    notes = _notes(tmp_path / "single" / "0" / "notice.log")
    assert {"EXFIL_DETECTION::High_Score", "EXFIL_DETECTION::New_Protocol", "HTTP::Client_Upload",
            "EXFIL_DETECTION::DNS_Tunnel"} <= notes
    assert len(_body(str(tmp_path / "single" / "0" / "exfil_detection.log"))) > 100


@pytest.mark.parametrize("scoring", ["reference", "robust"])
def test_partitions_with_a_state_store_equal_the_detector(synth: dict, tmp_path: Path, scoring: str) -> None:
    """Three consecutive runs on one state: logs of each run and the final state's content equal."""
    spy = _both(synth["events"], _settings(scoring), tmp_path, 3, state=True, runs=3, spool=True)
    later = [t for t in spy.tasks if t.baseline]  # runs 2 and 3 start from the committed state
    assert later and all(t.windows or t.baseline for t in later)
    assert sum(len(t.records.files) for t in spy.tasks) > len(spy.tasks) and sum(r.records for r in spy.results) > 500
    assert sum(len(r.closed.files) for r in spy.results) > len(spy.results)  # closed windows spooled back too


@pytest.mark.parametrize("parts", [1, 2, 5])
def test_scenario_with_pruning_and_dropped_keys(tmp_path: Path, parts: int) -> None:
    """16 days (older days pruned beyond a 5-day baseline, keys dropped after 1.5 days idle),
    default scoring thresholds, state across two runs."""
    settings = Settings(baseline_days=5, baseline_min_days_for_score=3, max_baseline_hold_time=1.5 * 86400)
    events: list[Event] = []
    for rec in scenario():
        events += [("t", rec.ts + (rec.duration or 0.0)), ("r", rec)]
    _both(events, settings, tmp_path, parts, state=True, runs=2)
    assert _db(str(tmp_path / "single" / "state.db"))


def test_drop_and_readd_across_grid_points_a_partition_skips(tmp_path: Path) -> None:
    """Host A goes idle for hours while host B (the other partition) keeps the grid running:
    A's key is dropped at a grid point A's partition never sees, then A comes back the same
    day. Run 1 ends while A's element is fresh (committed), so run 2's net commit must delete
    the stored rows of that day before inserting the new ones."""
    quiet, busy = "10.0.0.1", "10.0.0.4"
    assert partition_of(quiet, 2) != partition_of(busy, 2)
    day0 = 1_700_006_400.0

    def conn(n: int, host: str, at: float, size: int) -> ConnRecord:
        return ConnRecord(ts=day0 + at, uid=f"C{n}", orig_h=host, orig_p=40000 + n, resp_h="93.184.216.34",
                          resp_p=443, proto="tcp", duration=2.0, orig_ip_bytes=size, resp_ip_bytes=3 * size,
                          server_name="www.example.com")

    recs = [conn(i, busy, i * 900.0, 20_000 + 500 * i) for i in range(49)]  # every 15 min, 00:00-12:00
    recs += [conn(100, quiet, 600.0, 40_000), conn(101, quiet, 1800.0, 90_000),
             conn(102, quiet, 36000.0, 5_000_000), conn(103, quiet, 36300.0, 60_000)]
    recs.sort(key=lambda r: r.ts)
    events: list[Event] = []
    for rec in recs:
        events += [("t", rec.ts + 2.0), ("r", rec)]
    cut = next(i for i, (k, x) in enumerate(events) if k == "r" and x.ts >= day0 + 7200)  # type: ignore[union-attr]
    settings = Settings(baseline_min_days_for_score=1, aggregation_interval=1200.0, max_baseline_hold_time=7200.0,
                        new_calculation_window=600.0, scoring="robust")
    for mode in ("single", "parts"):
        store = str(tmp_path / f"{mode}.db")
        for i, chunk in enumerate((events[:cut], events[cut:])):
            out = tmp_path / f"{mode}-{i}"
            out.mkdir()
            st = StateStore(store)
            det = Detector(settings, out_dir=str(out), store=st)
            _replay(det if mode == "single" else PartitionedDetector(det, 2), chunk)
            st.close()
            if i == 0:  # the quiet host's rows are stored when run 2 starts
                assert any(row[0] == "baseline" and row[1] == quiet for row in _db(store))
    for i in range(2):
        for name in ("exfil_detection.log", "notice.log"):
            assert _body(str(tmp_path / f"parts-{i}" / name)) == _body(str(tmp_path / f"single-{i}" / name))
    final = _db(str(tmp_path / "single.db"))
    assert _db(str(tmp_path / "parts.db")) == final
    quiet_rows = [row for row in final if row[0] == "baseline" and row[1] == quiet]
    assert quiet_rows and all(row[5] >= day0 + 36000 for row in quiet_rows)  # only the rows after the drop


def test_hosts_of_one_key_stay_in_one_partition() -> None:
    assert partition_of("10.0.0.1", 7) == partition_of("10.0.0.1", 7)
    assert len({partition_of(f"10.0.{i // 256}.{i % 256}", 4) for i in range(100)}) == 4


def test_cluster_scoring_is_byte_identical(synth: dict, tmp_path: Path) -> None:
    """analyze's cluster path (extraction, stitch, partitioned scoring on 2 worker processes)
    over rotated files against one single-process run, for both scorings."""
    pytest.importorskip("distributed")
    pytest.importorskip("pyarrow")
    from distributed import Client, LocalCluster

    from pcapexfil.dist.cluster import run_cluster
    from pcapexfil.dist.split import split_captures

    files = split_captures(synth["days"], str(tmp_path / "rotated"), interval=6 * 3600.0)
    assert len(files) >= 10
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        for scoring in ("reference", "robust"):
            single, clustered = tmp_path / f"single-{scoring}", tmp_path / f"cluster-{scoring}"
            for d in (single, clustered):
                d.mkdir()
            run(files, RunOptions(out_dir=str(single), seed=SEED, max_flows=None, engine="reference"),
                [ConnLogSink(str(single)), Detector(_settings(scoring), out_dir=str(single))])
            timings: dict = {}
            run_cluster(files, RunOptions(out_dir=str(clustered), seed=SEED, max_flows=None),
                        [ConnLogSink(str(clustered)), Detector(_settings(scoring), out_dir=str(clustered))],
                        client, str(clustered), timings=timings, partitions=3)
            for name in ("conn.log", "exfil_detection.log", "notice.log"):
                assert _body(str(clustered / name)) == _body(str(single / name)), (scoring, name)
            assert len(timings["scoring"]["task_records"]) == 3 and min(timings["scoring"]["task_records"]) > 50
            assert {"EXFIL_DETECTION::High_Score", "EXFIL_DETECTION::New_Protocol",
                    "HTTP::Client_Upload"} <= _notes(single / "notice.log")
            assert not [p for p in os.listdir(clustered) if p.startswith(".pcapexfil-work")]
        # With a state store: two consecutive runs (the first files, then the rest) on one state.
        half = len(files) // 2
        for mode in ("single", "cluster"):
            store_path = str(tmp_path / f"{mode}.db")
            for i, part in enumerate((files[:half], files[half:])):
                d = tmp_path / f"{mode}-state-{i}"
                d.mkdir()
                store = StateStore(store_path)
                det = Detector(_settings("robust"), out_dir=str(d), store=store)
                if mode == "single":
                    run(part, RunOptions(out_dir=str(d), seed=SEED, max_flows=None, engine="reference"), [det])
                else:
                    run_cluster(part, RunOptions(out_dir=str(d), seed=SEED, max_flows=None), [det], client, str(d),
                                partitions=3)
                store.close()
        for i in range(2):
            for name in ("exfil_detection.log", "notice.log"):
                assert _body(str(tmp_path / f"cluster-state-{i}" / name)) == \
                    _body(str(tmp_path / f"single-state-{i}" / name)), (i, name)
        single_db = _db(str(tmp_path / "single.db"))
        assert _db(str(tmp_path / "cluster.db")) == single_db
        assert any(row[0] == "windows" for row in single_db) and any(row[0] == "baseline" for row in single_db)
