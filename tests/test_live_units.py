"""Live-mode parts that need no capture: BPF compile errors, the pcap writer read back by the
file source, Zeek-style rotation names, the collector's network-time schedule and counters,
the worker's start-up heap kept out of the garbage collector, a chunk cut to the capture
window of fanout workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pcapexfil.cli import main
from pcapexfil.live.collector import Collector, LiveSettings, pcap_path
from pcapexfil.live.logs import LogSet, rotated_name
from pcapexfil.live.worker import AnalysisOptions, CaptureOptions
from pcapexfil.packet import RawPacket
from pcapexfil.record import ConnRecord
from pcapexfil.source import open_captures
from pcapexfil.source.live import PcapWriter, compile_bpf
from pcapexfil.source.pcap import CaptureError
from pcapexfil.weird import Weirds


def test_bpf_compiles_with_snaplen_and_rejects_garbage() -> None:
    prog = compile_bpf("udp port 53", 1, 1500)
    assert (0x06, 0, 0, 1500) in prog  # accept returns the snap length
    assert prog[-1] == (0x06, 0, 0, 0)  # reject
    assert compile_bpf("", 1, 96) == [(0x06, 0, 0, 96)]
    with pytest.raises(CaptureError, match="invalid BPF filter"):
        compile_bpf("udp prot 53")


def test_cli_bad_filter_and_interface_are_one_line_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["live", "-i", "lo", "-o", str(tmp_path / "o"), "--bpf", "tcp and and"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "invalid BPF filter" in res.output
    res = runner.invoke(main, ["live", "-i", "no-such-if0", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no such interface" in res.output
    assert not (tmp_path / "o").exists()  # nothing written
    res = runner.invoke(main, ["live", "-i", "lo", "-o", str(tmp_path / "o"), "--rotate", "soon"])
    assert res.exit_code == 2 and "--rotate" in res.output


def test_pcap_writer_reads_back_through_file_source(tmp_path: Path) -> None:
    path = str(tmp_path / "w.pcap")
    frames = [RawPacket(1700000000.123456, 1, b"\x01" * 60, 60), RawPacket(1700000000.999999, 1, b"\x02" * 40, 1514),
              RawPacket(1700000001.5, 1, b"\x03" * 14, 14)]
    writer = PcapWriter(path, 1, 262144)
    for f in frames:
        writer.write(f)
    writer.close()
    back = list(open_captures([path], Weirds()))
    assert [(p.ts, p.data, p.wirelen, p.linktype) for p in back] == [(f.ts, f.data, f.wirelen, 1) for f in frames]


def test_rotated_names_follow_zeek_and_never_overwrite(tmp_path: Path) -> None:
    opened = 1700000000.0
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(opened))
    first = rotated_name(str(tmp_path), "conn", opened)
    assert os.path.basename(first) == f"conn.{stamp}.log"
    Path(first).write_text("x")
    assert os.path.basename(rotated_name(str(tmp_path), "conn", opened)) == f"conn.{stamp}-1.log"
    assert pcap_path("/d/cap.pcap", 1, 2) == "/d/cap.w1.pcap" and pcap_path("/d/cap.pcap", 0, 1) == "/d/cap.pcap"


def _rec(ts: float, port: int) -> ConnRecord:
    return ConnRecord(ts=ts, uid=f"C{port}", orig_h="10.250.0.2", orig_p=port, resp_h="10.250.0.1", resp_p=80,
                      proto="tcp", duration=1.0, orig_bytes=1, resp_bytes=2)


def test_collector_rotates_on_network_time_and_sums_worker_counters(tmp_path: Path) -> None:
    logs = LogSet(str(tmp_path))
    settings = LiveSettings(CaptureOptions("x"), AnalysisOptions(str(tmp_path)), workers=2, rotate=3600.0,
                            stats_interval=600.0)
    coll = Collector(settings, logs, None)
    t0 = 1700000000.0 - 1700000000.0 % 3600 + 100  # 100 s into an hour
    coll.handle(("tick", 0, t0, (10, 1, 0, 9, 3)))
    coll.handle(("rec", _rec(t0, 1000)))
    coll.handle(("tick", 1, t0 + 700, (5, 0, 2, 3, 1)))  # a stats row is due
    coll.handle(("rec", _rec(t0 + 700, 1001)))
    assert sorted(os.listdir(tmp_path)) == ["conn.log", "stats.log"]
    coll.handle(("tick", 0, t0 + 3600, (20, 1, 0, 19, 0)))  # crossed the hour: rotate
    names = sorted(os.listdir(tmp_path))
    hour = t0 - 100
    opened = time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(t0))
    # the old files closed under their open time; the stats row due at this tick opens a new stats.log
    assert names == [f"conn.{opened}.log", f"stats.{opened}.log", "stats.log"]
    coll.handle(("rec", _rec(t0 + 3601, 1002)))
    coll.rotate_requested = True  # SIGHUP
    coll.handle(("tick", 1, t0 + 3602, (6, 0, 2, 4, 0)))
    second = time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(hour + 3600))
    assert f"conn.{second}.log" in os.listdir(tmp_path)
    summary = coll.finish()
    assert (summary.counters.received, summary.counters.dropped_kernel, summary.counters.dropped_pcapexfil,
            summary.counters.analysed) == (26, 1, 2, 23)
    assert summary.records == 3 and summary.rotations == 2
    rows = [line for p in os.listdir(tmp_path) if p.startswith("conn")
            for line in open(tmp_path / p) if not line.startswith("#")]
    assert len(rows) == 3


def test_worker_takes_the_start_up_heap_out_of_the_garbage_collector() -> None:
    """A full collection over numba's objects took 35-80 ms, longer than a 4 MiB ring lasts
    at 80k frames/s: the worker parses the suffix list and freezes the heap before capture.
    (In a subprocess: gc.freeze is process-wide.)"""
    code = (
        "import gc, types\n"
        "from pcapexfil.identifiers.domain import suffix_list\n"
        "from pcapexfil.live.worker import AnalysisOptions, CaptureWorker\n"
        "before = gc.get_freeze_count()\n"
        "CaptureWorker(0, types.SimpleNamespace(linktype=1, snaplen=65535), AnalysisOptions(out_dir=None), print)\n"
        "print(before, gc.get_freeze_count(), suffix_list.cache_info().currsize)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after, lists = (int(x) for x in out[-3:])
    assert before == 0 and after > 50_000 and lists == 1


@pytest.mark.parametrize("with_raws", [False, True])
def test_a_chunk_keeps_the_records_of_a_capture_window(with_raws: bool) -> None:
    """Chunk.within: the records stamped from start to end, each field and its data with it
    (a live worker's capture window; its raws too where a slower path made them)."""
    import numpy as np

    from pcapexfil.fast.reader import Chunk

    stamps = [9.0, 10.0, 10.5, 11.0, 11.5, 12.0]
    data = bytes(range(60))
    raws = [RawPacket(t, 1, data[10 * i : 10 * i + 10], 10 + i, "cap", i + 1) for i, t in enumerate(stamps)]
    chunk = Chunk(np.frombuffer(data, np.uint8), np.arange(0, 60, 10, dtype=np.int64), np.full(6, 10, np.uint32),
                  np.arange(10, 16, dtype=np.uint32), np.ones(6, np.int32), np.array(stamps),
                  np.arange(1, 7, dtype=np.uint64), "cap", raws if with_raws else None)
    kept = chunk.within(10.0, 11.5)
    assert [kept.raw(i) for i in range(len(kept.ts))] == raws[1:5]
    assert chunk.within(0.0, float("inf")) is chunk
    assert len(chunk.within(12.5, 13.0).ts) == 0
