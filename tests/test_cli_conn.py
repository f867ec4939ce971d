"""`pcapexfil conn` (and `split`, whose slices it reads): output formats, errors and exit status."""

from __future__ import annotations

import json
import socket

import dpkt
import pytest
from click.testing import CliRunner

from pcapexfil.cli import main

CLIENT, SERVER = "10.1.1.1", "192.0.2.10"


def _frame(src: str, dst: str, sport: int, dport: int, flags: int, seq: int, ack: int, data: bytes = b"") -> bytes:
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=65535, data=data)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=tcp)
    ip.len = len(bytes(ip))
    eth = dpkt.ethernet.Ethernet(src=b"\x00\x01\x02\x03\x04\x05", dst=b"\x00\x01\x02\x03\x04\x06",
                                 type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
    return bytes(eth)


def _session(t0: float, sport: int) -> list[tuple[float, bytes]]:
    """A complete HTTP-like TCP session: 20 bytes up, 50 bytes down."""
    c, s = CLIENT, SERVER
    syn, ack, psh, fin = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_FIN
    return [
        (t0, _frame(c, s, sport, 80, syn, 100, 0)),
        (t0 + 0.01, _frame(s, c, 80, sport, syn | ack, 900, 101)),
        (t0 + 0.02, _frame(c, s, sport, 80, ack, 101, 901)),
        (t0 + 0.03, _frame(c, s, sport, 80, psh | ack, 101, 901, b"G" * 20)),
        (t0 + 0.04, _frame(s, c, 80, sport, psh | ack, 901, 121, b"H" * 50)),
        (t0 + 0.05, _frame(c, s, sport, 80, fin | ack, 121, 951)),
        (t0 + 0.06, _frame(s, c, 80, sport, fin | ack, 951, 122)),
        (t0 + 0.07, _frame(c, s, sport, 80, ack, 122, 952)),
    ]


def _write_pcap(path: str, frames: list[tuple[float, bytes]]) -> None:
    with open(path, "wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB)
        for ts, frame in frames:
            writer.writepkt(frame, ts=ts)


@pytest.fixture()
def capture(tmp_path) -> str:
    path = str(tmp_path / "two.pcap")
    _write_pcap(path, _session(1000.0, 40001) + _session(1010.0, 40002))
    return path


def _rows(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\n").split("\t") for line in fh if not line.startswith("#")]


def _invoke(*args: str):
    return CliRunner().invoke(main, ["conn", *args])


def test_conn_writes_zeek_tsv(capture, tmp_path):
    out = tmp_path / "out"
    result = _invoke(capture, "-o", str(out), "--seed", "1")
    assert result.exit_code == 0, result.output
    text = (out / "conn.log").read_text()
    assert text.startswith("#separator \\x09\n")
    fields = next(line for line in text.splitlines() if line.startswith("#fields")).split("\t")[1:]
    rows = [dict(zip(fields, r)) for r in _rows(str(out / "conn.log"))]
    assert [r["id.orig_p"] for r in rows] == ["40001", "40002"]
    first = rows[0]
    assert (first["id.orig_h"], first["id.resp_h"], first["id.resp_p"], first["proto"]) == (CLIENT, SERVER, "80", "tcp")
    assert (first["conn_state"], first["history"]) == ("SF", "ShADdFf")
    assert (first["orig_bytes"], first["resp_bytes"]) == ("20", "50")
    assert (first["orig_pkts"], first["resp_pkts"]) == ("5", "3")
    assert first["duration"] == "0.060000"
    assert (first["local_orig"], first["local_resp"]) == ("T", "T")  # 192.0.2.0/24 is TEST-NET-1
    assert not (out / "weird.log").exists()


def test_conn_json_and_seeded_uids_are_reproducible(capture, tmp_path):
    uids = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = _invoke(capture, "-o", str(out), "--json", "--json-timestamps", "iso8601", "--seed", "7")
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in (out / "conn.log").read_text().splitlines()]
        assert lines[0]["ts"].endswith("Z") and lines[0]["id.resp_p"] == 80
        assert lines[0]["conn_state"] == "SF"
        uids.append([line["uid"] for line in lines])
    assert uids[0] == uids[1] and len(set(uids[0])) == 2


def test_local_nets_option(capture, tmp_path):
    out = tmp_path / "out"
    assert _invoke(capture, "-o", str(out), "--local-nets", "10.0.0.0/8").exit_code == 0
    row = _rows(str(out / "conn.log"))[0]
    assert row[12:14] == ["T", "F"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/x.pcap"], "no such file"),
        (["--local-nets", "10.0.0.0/33"], "--local-nets"),
    ],
)
def test_errors_are_one_line_and_exit_2(capture, tmp_path, args, message):
    if args[0].startswith("/"):
        argv = [*args, "-o", str(tmp_path / "out")]
    else:
        argv = [capture, "-o", str(tmp_path / "out"), *args]
    result = _invoke(*argv)
    assert result.exit_code == 2
    assert result.stderr.startswith("pcapexfil: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_not_a_capture_exits_2_and_writes_nothing(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a packet capture\n" * 10)
    out = tmp_path / "out"
    result = _invoke(str(bogus), "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.startswith("pcapexfil: error: ")
    assert not (out / "conn.log").exists()


def test_unwritable_output_directory_exits_2(capture, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _invoke(capture, "-o", str(blocker / "sub"))
    assert result.exit_code == 2
    assert result.stderr.startswith("pcapexfil: error: cannot write")


def test_truncated_capture_keeps_records_and_exits_1(capture, tmp_path):
    data = open(capture, "rb").read()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 30])  # the last frame is cut short
    out = tmp_path / "out"
    result = _invoke(str(cut), "-o", str(out))
    assert result.exit_code == 1, result.output
    rows = _rows(str(out / "conn.log"))
    assert len(rows) == 2  # both connections, the second without its last ACK
    assert (out / "weird.log").exists()
    assert "truncated" in (out / "weird.log").read_text()


def test_packet_shorter_than_its_headers_is_a_counted_skip(tmp_path):
    frames = _session(1000.0, 40001)
    ts, frame = frames[3]
    frames[3] = (ts, frame[:14 + 20 + 10])  # IP header intact, TCP header cut
    path = str(tmp_path / "short.pcap")
    _write_pcap(path, frames)
    out = tmp_path / "out"
    result = _invoke(path, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert len(_rows(str(out / "conn.log"))) == 1
    assert (out / "weird.log").exists()


def test_help_documents_exit_status():
    result = CliRunner().invoke(main, ["conn", "--help"])
    assert result.exit_code == 0
    assert "Exit status" in result.output and "damaged" in result.output


def test_split_slices_are_the_same_stream_as_the_capture(tmp_path):
    """`pcapexfil split` cuts a capture into time slices; `conn` over the slices writes the
    records of `conn` over the capture. (Connections across a cut: tests/test_dist.py.)"""
    import glob
    import pathlib

    day = str(pathlib.Path(__file__).parent.parent / "fixtures" / "example" / "day-2024-03-04.pcap.gz")
    runner = CliRunner()
    res = runner.invoke(main, ["split", day, "-o", str(tmp_path / "slices"), "--interval", "7200"])
    assert res.exit_code == 0, res.output
    slices = sorted(glob.glob(str(tmp_path / "slices" / "slice-*.pcap")))
    assert len(slices) > 3 and f"wrote {len(slices)} slices" in res.output

    def rows(args: list[str], out: str) -> list[str]:
        res = runner.invoke(main, ["conn", *args, "-o", str(tmp_path / out), "--seed", "3"])
        assert res.exit_code == 0, res.output
        return [line for line in (tmp_path / out / "conn.log").read_text().splitlines() if not line.startswith("#")]

    whole = rows([day], "whole")
    assert len(whole) > 20 and rows(slices, "sliced") == whole

    missing = runner.invoke(main, ["split", str(tmp_path / "nope.pcap"), "-o", str(tmp_path / "x")])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1 and "no such file" in missing.output
