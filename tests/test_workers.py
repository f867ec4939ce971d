"""`--workers N`: N processes sharing the connections by flow hash write exactly the logs,
records and ticks of one process (uids included under a seed)."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import numpy as np
import pytest
from helpers_pcap import ether, ipv4, tcp, udp, write_pcap
from test_fast_engine import DAYS, FIXTURES, _Calls, _rows
from test_identifiers_support import a_answer, dns_message
from test_zeek_corpus import CORPUS, cases

from pcapexfil.fast.batch import KIND_FAST, KIND_FOREIGN, PACKET_DTYPE, addr_to_halves
from pcapexfil.fast.reader import iter_batches
from pcapexfil.pipeline import ConnLogSink, RunOptions, run
from pcapexfil.source import CaptureError
from pcapexfil.weird import Weirds
from pcapexfil.workers import (Sends, Share, SpoolFile, compile_before_fork, flow_hash, flow_hashes, sends,
                               share_task, spooled, worker_options)

LOGS = ("conn.log", "ssl.log", "http.log", "dns.log", "weird.log")


def _run(paths: list[str], out: str, workers: int, **kw) -> tuple[object, _Calls]:
    os.makedirs(out, exist_ok=True)
    sink = _Calls()
    summary = run(paths, RunOptions(out_dir=out, seed=5, workers=workers, **kw), [sink, ConnLogSink(out)])
    return summary, sink


def assert_same(paths: list[str], tmp_path, workers: int = 2, **kw) -> int:
    try:
        one_summary, one = _run(paths, str(tmp_path / "one"), 1, **kw)
    except CaptureError as exc:
        with pytest.raises(CaptureError) as info:
            _run(paths, str(tmp_path / "many"), workers, **kw)
        assert str(info.value) == str(exc)
        return 0
    many_summary, many = _run(paths, str(tmp_path / "many"), workers, **kw)
    assert many.calls == one.calls  # records (uids) and ticks, in order
    assert many.records == one.records
    assert [r.dns_name for r in many.records] == [r.dns_name for r in one.records]
    assert many_summary == one_summary
    for name in LOGS:
        assert _rows(str(tmp_path / "many" / name)) == _rows(str(tmp_path / "one" / name)), name
    return len(one.records)


CASES = cases()


def test_corpus_cases(tmp_path):
    """Tunnels (carrier and inner connection owned by different workers), fragments, odd
    link layers, damaged frames: every corpus trace, 2 and 3 workers."""
    total = 0
    for case, trace, flags in CASES:
        path = os.path.join(CORPUS, case, trace)
        for n in (2, 3):
            total += assert_same([path], tmp_path / case / str(n), workers=n, local_nets=(),
                                 verify_checksums="-C" not in flags.split())
    assert total > 600


def test_example_days_with_identifiers(tmp_path):
    n = assert_same(DAYS[:4], tmp_path, workers=3)
    assert n > 100
    for name in ("ssl.log", "http.log", "dns.log"):
        assert _rows(str(tmp_path / "many" / name)), f"{name} empty: identifiers not exercised"


def test_dns_answers_name_connections_other_workers_own(tmp_path):
    """One DNS flow answers for ten servers; the connections to them (no SNI, no Host) are
    named from those answers whichever worker owns them."""
    frames = []
    t = 1_700_000_000.0
    names = [(f"host{k}.example", f"198.51.100.{k + 1}") for k in range(10)]
    for k, (name, addr) in enumerate(names):
        query = dns_message(k, 0x0100, (name, 1))
        reply = dns_message(k, 0x8180, (name, 1), [a_answer(name, addr, 300)])
        frames.append((t, ether(ipv4(udp(5000, 53, query), "10.0.0.5", "192.0.2.53"))))
        frames.append((t + 0.01, ether(ipv4(udp(53, 5000, reply), "192.0.2.53", "10.0.0.5"))))
        t += 0.1
    for k, (_, addr) in enumerate(names):
        frames.append((t, ether(ipv4(tcp(40000 + k, 22), "10.0.0.5", addr))))
        frames.append((t + 0.01, ether(ipv4(udp(6000 + k, 9999, b"x"), "10.0.0.5", addr))))
        t += 0.1
    path = str(write_pcap(tmp_path / "names.pcap", frames))
    assert_same([path], tmp_path / "cmp", workers=3)
    _, one = _run([path], str(tmp_path / "again"), 1)
    named = {(r.resp_h, r.dns_name) for r in one.records if r.dns_name}
    assert named == {(addr, name) for name, addr in names}
    dns_owner = flow_hash(17, "10.0.0.5", 5000, "192.0.2.53", 53) % 3
    owners = {flow_hash(6, "10.0.0.5", 40000 + k, addr, 22) % 3 for k, (_, addr) in enumerate(names)}
    assert owners - {dns_owner}, "every named connection on the DNS flow's worker: nothing tested"


def test_answers_and_lookups_of_one_second_replay_in_stream_order(tmp_path):
    """Within one epoch, answers from DNS flows of different workers re-resolve one address
    between connection starts: each connection gets the name the stream had given it then."""
    frames = []
    t = 1_700_000_000.0
    expected = []
    for k in range(12):
        name = f"v{k}.example"
        query = dns_message(k, 0x0100, (name, 1))
        reply = dns_message(k, 0x8180, (name, 1), [a_answer(name, "198.51.100.7", 300)])
        frames.append((t, ether(ipv4(udp(5000 + k, 53, query), "10.0.0.5", "192.0.2.53"))))
        frames.append((t + 0.001, ether(ipv4(udp(53, 5000 + k, reply), "192.0.2.53", "10.0.0.5"))))
        frames.append((t + 0.002, ether(ipv4(tcp(41000 + k, 22), "10.0.0.5", "198.51.100.7"))))
        expected.append((41000 + k, name))
        t += 0.005
    path = str(write_pcap(tmp_path / "renamed.pcap", frames))
    assert_same([path], tmp_path / "cmp", workers=3)
    _, many = _run([path], str(tmp_path / "many3"), 3)
    assert sorted((r.orig_p, r.dns_name) for r in many.records if r.resp_p == 22) == expected
    dns_owners = {flow_hash(17, "10.0.0.5", 5000 + k, "192.0.2.53", 53) % 3 for k in range(12)}
    assert len(dns_owners) > 1, "one worker owned every DNS flow: nothing tested"


def test_bad_fixtures_and_damaged_input(tmp_path):
    bad = sorted(f for f in os.listdir(os.path.join(FIXTURES, "bad")) if not f.endswith((".md", ".py")))
    for name in bad:
        assert_same([os.path.join(FIXTURES, "bad", name)], tmp_path / name)


def test_flow_hash_is_symmetric_and_the_same_for_rows_and_identities():
    rows = np.zeros(4, PACKET_DTYPE)
    pairs = [(6, "10.0.0.1", 1234, "93.184.216.34", 443), (17, "fe80::1", 53, "fe80::2", 5353),
             (1, "10.0.0.1", 8, "10.0.0.2", 0), (47, "10.1.1.1", 0, "10.2.2.2", 0)]
    for row, (proto, a, ap, b, bp) in zip(rows, pairs):
        row["proto"], row["sport"], row["dport"] = proto, ap, bp
        row["src_hi"], row["src_lo"] = addr_to_halves(a)
        row["dst_hi"], row["dst_lo"] = addr_to_halves(b)
    flipped = rows.copy()
    for src, dst in (("src_hi", "dst_hi"), ("src_lo", "dst_lo"), ("sport", "dport")):
        flipped[src], flipped[dst] = rows[dst], rows[src]
    assert (flow_hashes(rows) == flow_hashes(flipped)).all()
    expected = [flow_hash(*p) for p in pairs]
    assert [int(h) for h in flow_hashes(rows)] == expected
    assert flow_hash(1, "10.0.0.1", 0, "10.0.0.2", 8) == expected[2]  # ICMP: addresses only
    assert len(set(expected)) == 4


def test_shares_split_the_connections_dns_included():
    """Each parsed row is kept by exactly one worker, DNS rows too (the merging process
    replays the DNS answers, `test_dns_answers_name_connections_other_workers_own`)."""
    batch = next(iter_batches(DAYS[:1], Weirds()))
    fast = batch.packets["kind"] == KIND_FAST
    kept = []
    for i in range(3):
        rows = batch.packets.copy()
        Share(i, 3, Sends(conn_lines=True, records=True)).mark(rows)
        kept.append(rows["kind"] != KIND_FOREIGN)
    dns = np.isin(batch.packets["sport"], (53, 5353, 5355)) | np.isin(batch.packets["dport"], (53, 5353, 5355))
    assert dns.any()
    assert (np.logical_and.reduce(kept) == ~fast).all()  # only rows the table does not parse: all
    assert (sum(k.astype(int) for k in kept)[fast] == 1).all()
    assert all(k[fast & dns].any() and k[fast & ~dns].any() for k in kept)  # each worker owns a share


def test_cli_conn_and_analyze_workers(tmp_path):
    """The CLI: `--workers 2` and `--workers auto` write what one worker writes."""
    def cli(*args):
        return subprocess.run(["pcapexfil", *args], capture_output=True, text=True,
                              timeout=300)

    for cmd in ("conn", "analyze"):
        outs = []
        for workers in ("1", "2", "auto"):
            out = tmp_path / f"{cmd}-{workers}"
            res = cli(cmd, *DAYS[:3], "-o", str(out), "--seed", "9", "--workers", workers)
            assert res.returncode == 0, res.stderr
            outs.append(out)
        logs = sorted(f for f in os.listdir(outs[0]) if f.endswith(".log"))
        assert "conn.log" in logs and (cmd == "conn" or "exfil_detection.log" in logs)
        for out in outs[1:]:
            assert sorted(f for f in os.listdir(out) if f.endswith(".log")) == logs
            for name in logs:
                assert _rows(str(out / name)) == _rows(str(outs[0] / name)), (cmd, name)
    bad = cli("conn", DAYS[0], "-o", str(tmp_path / "bad"), "--workers", "0")
    assert bad.returncode == 2 and "--workers" in bad.stderr
    ref = cli("conn", DAYS[0], "-o", str(tmp_path / "ref"), "--workers", "2", "--engine", "reference")
    assert ref.returncode == 2 and "fast engine" in ref.stderr


def _sent(path: str, send: Sends, out: str) -> list:
    """The (key, record, conn.log line) items worker 0 of 2 sends over `path`."""
    spool = os.path.join(out, f"share-{send.conn_lines}-{send.records}.bin")
    share_task([path], worker_options(RunOptions(out_dir=out, seed=5)), 0, 2, send, spool)
    feed, items, end = spooled([spool])[0], [], False
    while not end:
        epoch = feed.next()
        items.extend(epoch[0])
        end = epoch[3]
    return items


def test_workers_send_only_what_the_sinks_read(tmp_path):
    """conn.log alone takes the workers' lines, and no record crosses the pipe; a sink that
    reads records gets them too; a conn.log in another format than the run's takes records
    (and formats them itself). Each gives the single run's output."""
    opts = RunOptions(out_dir=str(tmp_path), seed=5)
    os.makedirs(tmp_path / "json")
    conn, other = ConnLogSink(str(tmp_path)), ConnLogSink(str(tmp_path / "json"), use_json=True)
    assert sends([conn], opts) == Sends(conn_lines=True, records=False)
    assert sends([_Calls(), conn], opts) == Sends(conn_lines=True, records=True)
    assert sends([other], opts) == Sends(conn_lines=False, records=True)
    for sink in (conn, other):
        sink.close(0.0)
    lines = _sent(DAYS[0], Sends(conn_lines=True, records=False), str(tmp_path))
    assert lines and all(rec is None and line.count("\t") == 21 for _, rec, line in lines)
    both = _sent(DAYS[0], Sends(conn_lines=True, records=True), str(tmp_path))
    assert [(k, line) for k, _, line in both] == [(k, line) for k, _, line in lines]
    assert all(rec.uid == k[1] for k, rec, _ in both)
    for use_json in (False, True):
        outs = []
        for workers in (1, 2):
            out = tmp_path / f"run-{use_json}-{workers}"
            os.makedirs(out)
            summary = run(DAYS[:2], RunOptions(out_dir=str(out), seed=5, workers=workers),
                          [ConnLogSink(str(out), use_json=use_json)])
            outs.append((summary, _rows(str(out / "conn.log"))))
        assert outs[0] == outs[1] and outs[0][1]


def test_a_spool_is_followed_while_its_task_writes_it(tmp_path):
    """The cluster's merge reads a task's spool as it grows (from before the file exists),
    and ends it when the task has ended: an unfinished message there is the end too."""
    path = str(tmp_path / "share.bin")
    messages = [bytes([k]) * (k * 10_000) for k in range(6)]
    finished = threading.Event()

    def task() -> None:
        time.sleep(0.05)
        out = SpoolFile(path, "xb")
        for msg in messages:
            out.send_bytes(msg)
            time.sleep(0.01)
        out.close()
        finished.set()

    writer = threading.Thread(target=task)
    writer.start()
    follow = SpoolFile(path, "rb", finished.is_set)
    assert [follow.recv_bytes() for _ in messages] == messages
    with pytest.raises(EOFError):
        follow.recv_bytes()
    writer.join()
    with open(path, "ab") as fh:
        fh.write((100).to_bytes(8, "little") + b"cut short")
    cut = SpoolFile(path, "rb", lambda: True)
    assert [cut.recv_bytes() for _ in messages] == messages
    with pytest.raises(EOFError):
        cut.recv_bytes()
    with pytest.raises(FileExistsError):
        SpoolFile(path, "xb")  # a restarted task does not rewrite a spool being merged


class _Interrupt(_Calls):
    """A sink that stops the run (as Ctrl-C would) after `limit` records."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def on_record(self, rec) -> None:
        super().on_record(rec)
        if len(self.records) == self.limit:
            raise KeyboardInterrupt


def test_interrupted_run_keeps_what_was_merged(tmp_path):
    _, full = _run(DAYS[:2], str(tmp_path / "full"), 1)
    out = tmp_path / "cut"
    os.makedirs(out)
    sink = _Interrupt(40)
    with pytest.raises(KeyboardInterrupt):
        run(DAYS[:2], RunOptions(out_dir=str(out), seed=5, workers=2), [sink, ConnLogSink(str(out))])
    # The sinks were closed, conn.log is complete up to the interruption (its #close line
    # written) and is the uninterrupted run's first rows.
    assert sink.calls[-1][0] == "close"
    assert [r.uid for r in sink.records] == [r.uid for r in full.records[:40]]
    with open(out / "conn.log", encoding="utf-8") as fh:
        text = fh.read()
    assert text.splitlines()[-1].startswith("#close")
    assert _rows(str(out / "conn.log")) == _rows(str(tmp_path / "full" / "conn.log"))[:39]


def test_records_cross_the_pipe_whole() -> None:
    """ConnRecord pickles as its field values (ConnRecord.__reduce__): every field comes back."""
    import dataclasses
    import pickle

    from pcapexfil.record import ConnRecord, DnsQuery

    rec = ConnRecord(ts=1.5, uid="Cx", orig_h="10.0.0.1", orig_p=1, resp_h="10.0.0.2", resp_p=53, proto="udp",
                     service=["dns"], duration=0.25, orig_bytes=3, resp_bytes=4, conn_state="SF", local_orig=True,
                     local_resp=False, missed_bytes=5, history="Dd", orig_pkts=6, orig_ip_bytes=7, resp_pkts=8,
                     resp_ip_bytes=9, tunnel_parents=["Ct"], ip_proto=17, server_name="s", http_host="h",
                     dns_name="n", ja3="j", ja3s="k", dns_queries=[DnsQuery(1.5, "x.example", 16, 12)])
    default = ConnRecord(ts=0.0, uid="", orig_h="", orig_p=0, resp_h="", resp_p=0, proto="")
    assert all(getattr(rec, f.name) != getattr(default, f.name) for f in dataclasses.fields(ConnRecord))
    assert pickle.loads(pickle.dumps(rec, protocol=5)) == rec


@pytest.mark.parametrize("cached", [False, True])
def test_a_first_run_compiles_once_before_the_workers_fork(monkeypatch, cached) -> None:
    """With no flow-table kernel in the cache the parent compiles (warm_up) before forking,
    so the workers inherit the kernels instead of each compiling them; with one, nothing."""
    import pcapexfil.fast.engine
    import pcapexfil.jit

    warmed: list[bool] = []
    monkeypatch.setattr(pcapexfil.jit, "kernel_cached", lambda kernel: cached)
    monkeypatch.setattr(pcapexfil.fast.engine, "warm_up", lambda verify_checksums: warmed.append(verify_checksums))
    compile_before_fork(True)
    assert warmed == ([] if cached else [True])
