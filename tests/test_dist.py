"""Cluster mode (pcapexfil.dist) against the single-process pipeline on the same captures.

The dataset: 3 synthetic days (4 hosts) cut into rotated files at points chosen from the
single-process run itself: in the middle of the two longest connections (so they cross a
file boundary) and between a DNS answer and the connection that uses its name (so the
name must be carried from one file to the next), plus the day files' own boundaries.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

import pytest

pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

from click.testing import CliRunner

from pcapexfil.cli import main
from pcapexfil.detect.detector import Detector, Settings
from pcapexfil.dist import ClusterError
from pcapexfil.dist.cluster import connect, parse_cluster, run_cluster
from pcapexfil.dist.extract import ExtractOptions, extract_file
from pcapexfil.dist.split import split_captures
from pcapexfil.dist.stitch import finalize
from pcapexfil.logs.parquet import ParquetSink, read_records, table_records
from pcapexfil.pipeline import ConnLogSink, RunOptions, run
from pcapexfil.synth import SynthConfig, generate
from tests.record_sink import RecordCollector

SEED = 11
LOGS = ("conn.log", "exfil_detection.log", "notice.log")
ID_LOGS = ("ssl.log", "http.log", "dns.log", "weird.log")  # the analyzers' logs and weird.log, merged too


def _settings() -> Settings:
    # Short windows and a one-day baseline, so three days give scores and notices.
    return Settings(baseline_min_days_for_score=1, aggregation_interval=1200.0)


def _single(paths: list[str], out: str) -> tuple[list, dict]:
    os.makedirs(out, exist_ok=True)
    coll = RecordCollector()
    summary = run(paths, RunOptions(out_dir=out, seed=SEED, max_flows=None, engine="reference"),
        [ConnLogSink(out), Detector(_settings(), out_dir=out), coll])
    return coll.records, summary.weirds


def _body(path: str) -> list[str]:
    with open(path) as f:
        return [line for line in f if not line.startswith(("#open", "#close"))]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("dist")
    generate(SynthConfig(out_dir=str(root / "days"), days=3, hosts=4, seed=3, baseline_days=1,
                         episodes_per_kind=1))
    days = sorted(glob.glob(str(root / "days" / "*.pcap")))
    probe, _ = _single(days, str(root / "probe"))
    long = sorted((r for r in probe if r.duration), key=lambda r: -r.duration)[:2]
    cuts = [r.ts + r.duration / 2 for r in long]
    named = next(r for r in probe if r.dns_name and r.ts > probe[0].ts + 3600)
    cuts.append(named.ts - 1e-4)  # the answer came before: it is learned in the previous file
    files = split_captures(days, str(root / "rotated"), cuts=cuts)
    ref, weirds = _single(files, str(root / "single"))
    return {"root": root, "files": files, "ref": ref, "cuts": cuts, "named": named, "probe": probe, "weirds": weirds}


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_cluster_output_is_byte_identical(dataset: dict, engine: str) -> None:
    """fast: flow-hash shares of the whole capture; reference: one task per file, stitched."""
    from distributed import Client, LocalCluster

    root, files, ref = dataset["root"], dataset["files"], dataset["ref"]
    out = str(root / f"cluster-{engine}")
    os.makedirs(out)
    coll = RecordCollector()
    timings: dict = {}
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        summary = run_cluster(files, RunOptions(out_dir=out, seed=SEED, max_flows=None, engine=engine),  # type: ignore[arg-type]
                              [ConnLogSink(out), Detector(_settings(), out_dir=out), coll], client, out,
                              timings=timings)
    assert len(timings["task_cpu"]) == (2 if engine == "fast" else len(files))
    for name in (*LOGS, *ID_LOGS):
        assert _body(os.path.join(out, name)) == _body(os.path.join(root / "single", name)), name
    assert [dataclasses.asdict(r) for r in coll.records] == [dataclasses.asdict(r) for r in ref]
    assert summary.records == len(ref)
    assert summary.weirds == dataset["weirds"] and summary.weirds
    # The cases that need the stitch pass are really in the data.
    for cut in dataset["cuts"][:2]:
        assert any(r.ts < cut < r.ts + (r.duration or 0) for r in coll.records)
    named = dataset["named"]
    assert any(r.ts == named.ts and r.dns_name == named.dns_name for r in coll.records)
    assert len(_body(os.path.join(out, "exfil_detection.log"))) > 20  # windows were scored


def test_without_the_stitch_pass_the_boundaries_would_show(dataset: dict, tmp_path) -> None:
    """Control: records of independent per-file runs differ from one long run, so the
    identical output above is the stitch pass's doing."""
    naive = []
    for path in dataset["files"]:
        coll = RecordCollector()
        run([path], RunOptions(seed=SEED, max_flows=None), [coll])
        naive.extend(coll.records)
    key = [(r.ts, r.orig_h, r.orig_p, r.resp_h, r.resp_p, r.orig_pkts, r.resp_pkts, r.dns_name) for r in naive]
    ref = [(r.ts, r.orig_h, r.orig_p, r.resp_h, r.resp_p, r.orig_pkts, r.resp_pkts, r.dns_name)
           for r in dataset["ref"]]
    assert sorted(key, key=repr) != sorted(ref, key=repr)


def test_overlapping_files_are_refused(dataset: dict, tmp_path) -> None:
    files = dataset["files"][:2]
    opts = ExtractOptions(max_flows=None)
    # The second file given as the first: its time range lies after the first's start.
    results = [extract_file(files[1], 0, False, opts, str(tmp_path)),
               extract_file(files[0], 1, True, opts, str(tmp_path))]
    with pytest.raises(ClusterError, match="starts before"):
        finalize(results, opts, [], SEED)


def test_parse_cluster() -> None:
    assert parse_cluster("local:3") == ("local", 3)
    assert parse_cluster("tcp://10.1.2.3:8786") == ("address", "tcp://10.1.2.3:8786")
    for bad in ("local:0", "local:x", "somehost"):
        with pytest.raises(ClusterError):
            parse_cluster(bad)


def test_parquet_round_trip_keeps_every_field(dataset: dict, tmp_path) -> None:
    ref = dataset["ref"]
    sink = ParquetSink(str(tmp_path / "pq"), sensor="sensor-a")
    for rec in ref:
        sink.on_record(rec)
    sink.close(0.0)
    table = read_records(str(tmp_path / "pq"))
    assert set(table.column("sensor").to_pylist()) == {"sensor-a"}
    assert len(set(table.column("day").to_pylist())) == 3
    back = sorted(table_records(table), key=lambda r: r.uid)
    assert [dataclasses.asdict(r) for r in back] == [dataclasses.asdict(r) for r in sorted(ref, key=lambda r: r.uid)]


def test_parquet_converts_as_records_come_and_keeps_row_groups(dataset: dict, tmp_path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Records are converted a few at a time as they come; a day's row group still holds
    ROW_GROUP rows, and nothing is lost or reordered."""
    import pyarrow.parquet as pq

    from pcapexfil.logs import parquet

    monkeypatch.setattr(parquet, "CONVERT_ROWS", 7)
    monkeypatch.setattr(parquet, "ROW_GROUP", 21)
    converted: list[int] = []
    table = parquet.records_table

    def counted(rows: list, sensor: str | None) -> object:
        converted.append(len(rows))
        return table(rows, sensor)

    monkeypatch.setattr(parquet, "records_table", counted)
    ref = dataset["ref"]
    sink = ParquetSink(str(tmp_path / "pq"))
    for rec in ref:
        sink.on_record(rec)
    assert converted and max(converted) == 7  # converted in parts as the records came, not at close
    sink.close(0.0)
    groups = []
    for path in sorted(glob.glob(str(tmp_path / "pq" / "day=*" / "*.parquet"))):
        meta = pq.ParquetFile(path).metadata
        groups.append([meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
    assert all(g[:-1] == [21] * (len(g) - 1) and 0 < g[-1] <= 21 for g in groups), groups
    assert sum(map(sum, groups)) == len(ref) == sink.written
    back = table_records(read_records(str(tmp_path / "pq")))
    by_day = sorted(ref, key=lambda r: parquet.day_of(r.ts))  # days in order, each day's records as fed
    assert [dataclasses.asdict(r) for r in back] == [dataclasses.asdict(r) for r in by_day]


def test_conn_format_parquet_cli(dataset: dict, tmp_path) -> None:
    files = dataset["files"][:2]
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["conn", *files, "-o", str(out), "--format", "parquet", "--sensor", "edge-1",
                                    "--seed", str(SEED)])
    assert res.exit_code == 0, res.output
    assert not (out / "conn.log").exists()
    table = read_records(str(out / "records"))
    tsv = tmp_path / "tsv"
    assert CliRunner().invoke(main, ["conn", *files, "-o", str(tsv), "--seed", str(SEED)]).exit_code == 0
    uids = [line.split("\t")[1] for line in _body(str(tsv / "conn.log")) if not line.startswith("#")]
    assert sorted(table.column("uid").to_pylist()) == sorted(uids)
    assert set(table.column("sensor").to_pylist()) == {"edge-1"}


def test_parquet_output_does_not_import_pandas(dataset: dict, tmp_path) -> None:
    """pyarrow imports pandas at its first conversion if it can; the CLI's Parquet output
    keeps it from doing so (skip_pandas_probe). A stand-in pandas that notes its import
    shows both: imported by a plain conversion, not by `conn --format parquet`."""
    import subprocess
    import sys

    fake = tmp_path / "fake"
    (fake / "pandas").mkdir(parents=True)
    marker = tmp_path / "pandas-imported"
    (fake / "pandas" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'a').write('x')\nraise ImportError('stand-in')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), os.getcwd()])}
    plain = "import pyarrow; pyarrow.array([0])"
    subprocess.run([sys.executable, "-c", plain], env=env, check=True)
    assert marker.exists()  # the stand-in is what pyarrow finds
    marker.unlink()
    out = tmp_path / "out"
    cli = ("import sys; from pcapexfil.cli import main; "
           f"sys.argv = ['pcapexfil', 'conn', *{dataset['files'][:1]!r}, '-o', {str(out)!r}, '--format', 'parquet']; "
           "main()")
    subprocess.run([sys.executable, "-c", cli], env=env, check=True, capture_output=True)
    assert read_records(str(out / "records")).num_rows > 0
    assert not marker.exists()


def test_combine_stats_equals_one_pass_over_both_samples() -> None:
    import numpy as np

    from pcapexfil.detect.normalize import RunningStats
    from pcapexfil.dist.merge import combine_stats

    rng = np.random.default_rng(5)
    a, b = rng.normal(3, 2, 40), rng.normal(-1, 5, 70)
    sa, sb, both = RunningStats(), RunningStats(), RunningStats()
    for v in a:
        sa.add(v)
    for v in b:
        sb.add(v)
    for v in np.concatenate([a, b]):
        both.add(v)
    n, mean, m2 = combine_stats((sa.n, sa.mean, sa.m2), (sb.n, sb.mean, sb.m2))
    assert n == both.n
    assert mean == pytest.approx(both.mean, rel=1e-12)
    assert m2 == pytest.approx(both.m2, rel=1e-10)


def test_baseline_merge_cli(dataset: dict, tmp_path) -> None:
    from pcapexfil.detect.state import StateStore

    runner = CliRunner()
    dbs = []
    for name, path in zip(("east", "west"), dataset["files"][:2], strict=True):
        db = str(tmp_path / f"{name}.db")
        res = runner.invoke(main, ["analyze", path, "-o", str(tmp_path / name), "--state", db, "--sensor", name,
                                   "--engine", "reference"])
        assert res.exit_code == 0, res.output
        dbs.append(db)
    counts = []
    for db in dbs:
        store = StateStore(db)
        counts.append(len(list(store.baseline_rows())))
        store.close()
    assert counts[0] > 0
    out = str(tmp_path / "merged.db")
    res = runner.invoke(main, ["baseline", "merge", *dbs, "-o", out])
    assert res.exit_code == 0, res.output
    store = StateStore(out)
    try:
        assert len(list(store.baseline_rows())) == sum(counts)
        meta = store.meta()
        assert json.loads(meta["sensors"]) == ["east", "west"]
        assert meta["recompute_all"] == "1"
    finally:
        store.close()
    again = runner.invoke(main, ["baseline", "merge", *dbs, "-o", out])
    assert again.exit_code == 2 and "exists" in again.output


def test_split_files_are_the_same_stream(dataset: dict, tmp_path) -> None:
    """Cutting a capture (pcapexfil split) changes nothing: one run over the slices gives the
    records of one run over the original day files."""
    assert len(dataset["files"]) > 3
    assert [dataclasses.asdict(r) for r in dataset["ref"]] == [dataclasses.asdict(r) for r in dataset["probe"]]
    res = CliRunner().invoke(main, ["split", dataset["files"][0], "-o", str(tmp_path / "s"), "--interval", "0"])
    assert res.exit_code == 2


def test_analyze_cli_cluster_matches_and_refuses_bad_specs(dataset: dict, tmp_path) -> None:
    runner = CliRunner()
    # The options of _single(): its logs (from the library) are the reference.
    common = ["--seed", str(SEED), "--max-flows", "0", "--baseline-min-days-for-score", "1",
              "--aggregation-interval", "20m"]
    files = dataset["files"]
    single, clustered = dataset["root"] / "single", tmp_path / "cluster"
    res = runner.invoke(main, ["analyze", *files, "-o", str(clustered), *common, "--cluster", "local:2",
                               "--sensor", "lab"])
    assert res.exit_code == 0, res.output
    for name in LOGS:
        assert _body(str(clustered / name)) == _body(str(single / name)), name
    table = read_records(str(clustered / "records"))
    assert table.num_rows == len(dataset["ref"]) and set(table.column("sensor").to_pylist()) == {"lab"}
    assert sorted(table.column("uid").to_pylist()) == sorted(r.uid for r in dataset["ref"])  # real uids
    assert not [p for p in os.listdir(clustered) if p.startswith(".pcapexfil-work")]
    for bad in ("local:0", "nowhere"):
        res = runner.invoke(main, ["analyze", files[0], "-o", str(tmp_path / bad.replace(":", "")), "--cluster", bad])
        assert res.exit_code == 2 and "--cluster" in res.output
        assert not (tmp_path / bad.replace(":", "")).exists()


def test_local_cluster_runs_without_dask_diagnostics() -> None:
    """`local:N` workers neither sample their threads nor tick every 20 ms (CPU the
    extraction tasks would share the cores with)."""
    import dask

    client = connect("local:1")
    try:
        got = client.run(lambda: (dask.config.get("distributed.worker.profile.enabled"),
                                  dask.config.get("distributed.admin.tick.interval")))
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    assert list(got.values()) == [(False, "1s")]


def test_random_cuts_give_the_single_process_records(dataset: dict, tmp_path) -> None:
    """Many cuts (inside random connections and at random times), tasks run in-process:
    the stitched records equal one long run's, field by field and in order."""
    import random

    rng = random.Random(4)
    probe = dataset["probe"]
    spanning = [r for r in probe if r.duration and r.duration > 0.01]
    cuts = [r.ts + r.duration * rng.random() for r in rng.sample(spanning, 40)]
    cuts += [rng.uniform(probe[0].ts, probe[-1].ts) for _ in range(20)]
    days = sorted(glob.glob(str(dataset["root"] / "days" / "*.pcap")))
    files = split_captures(days, str(tmp_path / "rot"), cuts=cuts)
    single = RecordCollector()
    run(files, RunOptions(seed=SEED, max_flows=None, engine="reference"), [single])
    opts = ExtractOptions(max_flows=None)
    results = [extract_file(p, i, i == len(files) - 1, opts, str(tmp_path / "w")) for i, p in enumerate(files)]
    stitched = RecordCollector()
    finalize(results, opts, [stitched], SEED)
    assert len(files) > 40
    assert [dataclasses.asdict(r) for r in stitched.records] == [dataclasses.asdict(r) for r in single.records]


def test_exact_ties_across_the_boundary_keep_one_runs_order(tmp_path) -> None:
    """Equal due times and equal start times, one connection carried over (stitch table)
    and one of the file's own (task), emitted in the same epoch: one long run orders them
    by start time, then uid (pcapexfil.order); so must the merge."""
    from tests.helpers_pcap import ether, ipv4, udp, write_pcap

    def frame(sport: int, dst: str) -> bytes:
        return ether(ipv4(udp(sport, 9999, b"x"), src="10.0.0.1", dst=dst))

    a, b, c, d, e = (frame(40000 + i, f"10.9.0.{i}") for i in range(1, 6))
    f0 = write_pcap(tmp_path / "f0.pcap", [(100.0, a), (100.0, c)])
    # A (carried) and B (the file's own) both time out at 160.0, fired by E at 200.0;
    # C (carried, last packet 150) and D (own, last packet 155) start at 100.0 and are flushed.
    f1 = write_pcap(tmp_path / "f1.pcap", [(100.0, b), (100.0, d), (150.0, c), (155.0, d), (200.0, e)])
    files = [str(f0), str(f1)]
    single = RecordCollector()
    run(files, RunOptions(seed=SEED, max_flows=None, engine="reference"), [single])
    opts = ExtractOptions(max_flows=None)
    results = [extract_file(p, i, i == 1, opts, str(tmp_path / "w")) for i, p in enumerate(files)]
    stitched = RecordCollector()
    finalize(results, opts, [stitched], SEED)
    recs = single.records
    # A and B time out together (the tick at 200.0); C, D and E are flushed at the end.
    assert [{r.resp_h[-1] for r in recs[:2]}, {r.resp_h[-1] for r in recs[2:4]}, recs[4].resp_h] == [
        {"1", "2"}, {"3", "4"}, "10.9.0.5"]
    assert recs[0].uid < recs[1].uid and recs[2].uid < recs[3].uid  # equal start times: by uid
    assert [dataclasses.asdict(r) for r in stitched.records] == [dataclasses.asdict(r) for r in single.records]


def test_baseline_merge_refuses_mixed_settings(dataset: dict, tmp_path) -> None:
    from pcapexfil.dist.merge import MergeError, merge_states

    runner = CliRunner()
    dbs = []
    for mode in ("psl", "last2"):
        db = str(tmp_path / f"{mode}.db")
        res = runner.invoke(main, ["analyze", dataset["files"][0], "-o", str(tmp_path / mode), "--state", db,
                                   "--domain-mode", mode, "--engine", "reference"])
        assert res.exit_code == 0, res.output
        dbs.append(db)
    with pytest.raises(MergeError, match="domain_mode"):
        merge_states(dbs, str(tmp_path / "out.db"))
    assert not os.path.exists(tmp_path / "out.db")
