"""`pcapexfil live` on a veth between two namespaces this test creates, against `pcapexfil
conn` over the frames it wrote with --write-pcap, and against the byte counts the traffic
generator itself reports. Needs root and iproute2 (`ip`)."""

from __future__ import annotations

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pcapexfil.source.live import FRAME_OVERHEAD

sys.path.insert(0, os.path.dirname(__file__))
import netns  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REASON = netns.available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"live capture test {REASON}")

VETH_MTU = 1500  # a new veth's default; netns.veth_pair leaves it
KEY = ("id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto")
COMPARED = ("ts", "duration", "service", "orig_bytes", "resp_bytes", "conn_state", "history", "orig_pkts",
            "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "missed_bytes", "local_orig", "local_resp")


def read_conn(paths: list[str]) -> dict[tuple[str, ...], dict[str, str]]:
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            lines = [line for line in fh if not line.startswith("#") or line.startswith("#fields")]
        header = lines[0].rstrip("\n").split("\t")[1:]
        for rec in csv.DictReader(lines[1:], fieldnames=header, delimiter="\t", quoting=csv.QUOTE_NONE):
            key = tuple(rec[k] for k in KEY)
            assert key not in rows, f"connection {key} logged twice (split across workers or rotations?)"
            rows[key] = rec
    return rows


def plan(pair: netns.VethPair) -> list[dict]:
    a4, a6 = pair.addr_a, pair.addr6_a
    return [
        {"kind": "tcp", "addr": a4, "up": 100, "down": 2000},
        {"kind": "tcp", "addr": a4, "up": 5000, "down": 300},
        {"kind": "sleep", "seconds": 1.2},  # network time passes a stats interval before SIGHUP
        {"kind": "udp", "addr": a4, "name": "one.example.test"},
        {"kind": "tcp", "addr": a6, "up": 3000, "down": 40000},
        {"kind": "tcp", "addr": a4, "up": 250000, "down": 1234},
        {"kind": "udp", "addr": a4, "name": "two.example.test"},
        {"kind": "udp", "addr": a6, "name": "three.example.test"},
        {"kind": "tcp", "addr": a4, "up": 4, "down": 0},
    ]


def run_client(pair: netns.VethPair, steps: list[dict]) -> list[dict]:
    out = subprocess.run(pair.cmd(pair.ns_b, [sys.executable, os.path.join(HERE, "netns.py"), "client",
                                              json.dumps(steps)]),
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def wait_for_line(proc: subprocess.Popen, word: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        if word in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"{word!r} never printed (exit {proc.poll()})")


def stop(live: subprocess.Popen) -> str:
    """SIGTERM to `pcapexfil live`: it must exit cleanly; returns what it wrote on stderr."""
    live.send_signal(signal.SIGTERM)
    _, err = live.communicate(timeout=60)
    assert live.returncode == 0, err
    return err


def live_vs_pcap(tmp_path: Path, workers: int, engine: str = "fast") -> None:
    out = tmp_path / "live"
    with netns.veth_pair(subnet=workers) as pair:
        server = subprocess.Popen(pair.cmd(pair.ns_a, [sys.executable, os.path.join(HERE, "netns.py"), "serve",
                                                       pair.addr_a, pair.addr6_a]),
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
            live = subprocess.Popen(
                pair.cmd(pair.ns_a, ["pcapexfil",
                                     "live", "-i", pair.if_a, "-o", str(out), "--workers", str(workers),
                                     "--write-pcap", str(tmp_path / "cap.pcap"), "--stats-interval", "1",
                                     "--state", str(tmp_path / "state.db"), "--seed", "7", "--max-flows", "100000", "--engine", engine,
                                     "--buffer-size", "16"]),
                stderr=subprocess.PIPE, text=True)
            wait_for_line(live, "listening on")
            steps = plan(pair)
            done = run_client(pair, steps[:5])
            # The collector has written a stats row (so a log is open) before it is told to rotate.
            deadline = time.monotonic() + 30
            while not (out / "stats.log").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            live.send_signal(signal.SIGHUP)  # rotate between the two halves
            time.sleep(0.6)
            done += run_client(pair, steps[5:])
            time.sleep(0.5)  # let the last frames reach the ring
            err = stop(live)
        finally:
            server.kill()
            server.wait()

    pcaps = sorted(glob.glob(str(tmp_path / "cap*.pcap")))
    assert len(pcaps) == workers
    ref = tmp_path / "ref"
    subprocess.run(["pcapexfil", "conn", *pcaps, "-o", str(ref), "--seed", "7"], check=True,
                   capture_output=True, timeout=120)

    conn_logs = sorted(glob.glob(str(out / "conn*.log")))
    live_rows = read_conn(conn_logs)
    ref_rows = read_conn([str(ref / "conn.log")])
    assert set(live_rows) == set(ref_rows)
    for key, row in ref_rows.items():
        assert {k: live_rows[key][k] for k in COMPARED} == {k: row[k] for k in COMPARED}, key

    # What the generator itself sent and received, connection by connection.
    assert len(done) == 8
    for ex in done:
        key = (pair.addr_b if ":" not in ex["addr"] else pair.addr6_b, str(ex["sport"]), ex["addr"],
               str(netns.TCP_PORT if ex["proto"] == "tcp" else netns.DNS_PORT), ex["proto"])
        row = live_rows[key]
        assert (int(row["orig_bytes"]), int(row["resp_bytes"])) == (ex["up"], ex["down"]), key
        if ex["proto"] == "tcp":
            assert row["conn_state"] == "SF", row
        else:
            assert row["service"] == "dns" and (row["orig_pkts"], row["resp_pkts"]) == ("1", "1")

    # SIGHUP rotated: closed files carry Zeek's open-time stamp; the current ones stay NAME.log.
    rotated = [p for p in glob.glob(str(out / "*.*.log"))]
    assert rotated and all(len(os.path.basename(p).split(".")[1]) == 19 for p in rotated), rotated
    assert any(os.path.basename(p).startswith("stats.") for p in rotated)
    # dns.log came from the workers' analyzers through the collector: one file set, 3 queries.
    dns_rows = sum(1 for p in glob.glob(str(out / "dns*.log")) for line in open(p) if not line.startswith("#"))
    assert dns_rows == 3

    stats = read_stats(out)
    last = stats[-1]
    frames = sum(count_frames(p) for p in pcaps)
    assert int(last["pkts_analysed"]) == frames
    # veth hands bulk TCP over as TSO super-frames (up to 64 KiB): counted and warned about.
    merged = sum(count_frames(p, longer_than=VETH_MTU + FRAME_OVERHEAD) for p in pcaps)
    assert merged > 0 and int(last["pkts_merged"]) == merged
    assert f"warning: {merged} frames were longer than {pair.if_a}'s MTU allows" in err
    assert int(last["pkts_dropped_kernel"]) == 0 and int(last["pkts_dropped_pcapexfil"]) == 0
    assert int(last["pkts_recv"]) >= frames
    assert int(last["records_written"]) == len(live_rows)
    assert "records written" in err and f"{len(live_rows)} records written" in err
    assert os.path.getsize(tmp_path / "state.db") > 0


def read_stats(out: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted(glob.glob(str(out / "stats*.log")), key=os.path.getmtime):
        with open(path, encoding="utf-8") as fh:
            lines = [line for line in fh if not line.startswith("#") or line.startswith("#fields")]
        header = lines[0].rstrip("\n").split("\t")[1:]
        rows += list(csv.DictReader(lines[1:], fieldnames=header, delimiter="\t"))
    return rows


def count_frames(path: str, longer_than: int = -1) -> int:
    import dpkt

    with open(path, "rb") as fh:
        return sum(1 for _ts, buf in dpkt.pcap.Reader(fh) if len(buf) > longer_than)


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_live_matches_conn_on_written_pcap(tmp_path: Path, engine: str) -> None:
    live_vs_pcap(tmp_path, workers=1, engine=engine)


def test_live_two_workers_fanout(tmp_path: Path) -> None:
    live_vs_pcap(tmp_path, workers=2)


def test_flows_already_running_when_workers_join_are_logged_once(tmp_path: Path) -> None:
    """Traffic that flows while the fanout workers open their sockets and while they close
    them: each socket takes every frame until it joins the group, the first member takes
    the group's frames until the others join, and a closing member leaves its flows to the
    others. Each worker analyses only the window all of them share (LiveCapture.start,
    .end): every flow is logged by one worker, once, as `conn` logs what they wrote."""
    out = tmp_path / "live"
    flows = 16
    with netns.veth_pair(subnet=3) as pair:
        sender = subprocess.Popen(pair.cmd(pair.ns_b, [sys.executable, os.path.join(HERE, "netns.py"), "stream",
                                                       pair.addr_a, str(flows), "6"]))
        try:
            live = subprocess.Popen(
                pair.cmd(pair.ns_a, ["pcapexfil", "live", "-i", pair.if_a, "-o", str(out), "--workers", "2",
                                     "--write-pcap", str(tmp_path / "cap.pcap"), "--seed", "7"]),
                stderr=subprocess.PIPE, text=True)
            wait_for_line(live, "listening on")
            time.sleep(1.0)
            stop(live)
        finally:
            sender.kill()
            sender.wait()
    live_rows = read_conn(sorted(glob.glob(str(out / "conn*.log"))))  # asserts each key once
    streamed = {key for key in live_rows if key[4] == "udp" and key[2] == pair.addr_a}
    assert len(streamed) == flows
    ref = tmp_path / "ref"
    subprocess.run(["pcapexfil", "conn", *sorted(glob.glob(str(tmp_path / "cap*.pcap"))), "-o", str(ref),
                    "--seed", "7"], check=True, capture_output=True, timeout=120)
    ref_rows = read_conn([str(ref / "conn.log")])
    assert set(live_rows) == set(ref_rows)
    for key in streamed:
        assert live_rows[key]["orig_pkts"] == ref_rows[key]["orig_pkts"], key
