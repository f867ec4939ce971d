"""Inputs a hostile user or a shell gives (issue #21): bytes that are not UTF-8 in the
identifiers, backslashes, a cut gzip member, standard input and named pipes, a full disk,
an endless request line, binary files where text is expected. Each case once crashed,
hung, lost data or left torn files; these pin what happens now, on both engines."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import dpkt
import pytest
from click.testing import CliRunner
from helpers_pcap import ether, ipv4, tcp, udp, write_pcap
from test_identifiers_support import client_hello_record, dns_message

from pcapexfil.cli import main
from pcapexfil.zeekread import read_log

CLI = [sys.executable, "-c", "from pcapexfil.cli import main; main()"]
EXAMPLE = Path(__file__).resolve().parent.parent / "fixtures" / "example"
ENGINES = ("fast", "reference")
S, SA, A, PA, FA = dpkt.tcp.TH_SYN, 0x12, dpkt.tcp.TH_ACK, dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, 0x11
CLIENT = "10.0.0.1"


def _tcp_session(t: float, server: str, port: int, sport: int, request: bytes) -> list[tuple[float, bytes]]:
    """Handshake, the client's bytes in segments of 1400, FINs."""
    ci, si = 1000, 9000
    frames = [(t, ether(ipv4(tcp(sport, port, S, ci, 0), CLIENT, server))),
              (t + 0.01, ether(ipv4(tcp(port, sport, SA, si, ci + 1), server, CLIENT))),
              (t + 0.02, ether(ipv4(tcp(sport, port, A, ci + 1, si + 1), CLIENT, server)))]
    for off in range(0, len(request), 1400):
        t += 0.001
        frames.append((t + 0.03, ether(ipv4(tcp(sport, port, PA, ci + 1 + off, si + 1, request[off:off + 1400]),
                                            CLIENT, server))))
    end = ci + 1 + len(request)
    frames.append((t + 0.04, ether(ipv4(tcp(sport, port, FA, end, si + 1), CLIENT, server))))
    frames.append((t + 0.05, ether(ipv4(tcp(port, sport, FA, si + 1, end + 1), server, CLIENT))))
    return frames


def hostile_identifiers(path: Path) -> Path:
    """An SNI, an HTTP Host and a DNS query name holding 0xff (not UTF-8) and a backslash."""
    hello = client_hello_record("qq.xa1.example.com").replace(b"qq", b"\xff\\")  # same length, valid TLS
    query = dns_message(7, 0x0100, ("qq.example.org", 1)).replace(b"qq", b"\xff\\")
    frames = _tcp_session(1000.0, "192.0.2.1", 443, 40001, hello)
    frames += _tcp_session(1001.0, "192.0.2.2", 80, 40002, b"GET / HTTP/1.1\r\nHost: h\xff\\x41.example\r\n\r\n")
    frames.append((1002.0, ether(ipv4(udp(40003, 53, query), CLIENT, "10.0.0.53"))))
    return write_pcap(path, frames)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("command", ["conn", "analyze"])
def test_non_utf8_identifiers_with_json(tmp_path, engine, command):
    """Before: UnicodeEncodeError (surrogates not allowed), a traceback, 0-byte logs, and under
    --state a commit past the crash. Zeek's JSON writer keeps valid UTF-8 and writes each other
    byte as the text \\xHH (json_escape_utf8)."""
    pcap = hostile_identifiers(tmp_path / "h.pcap")
    out = tmp_path / "out"
    extra = ["--state", str(tmp_path / "s.db")] if command == "analyze" else []
    r = CliRunner().invoke(main, [command, str(pcap), "-o", str(out), "--json", "--engine", engine, *extra])
    assert r.exit_code == 0, r.output
    logs = {name: [json.loads(line) for line in (out / f"{name}.log").read_bytes().splitlines()]
            for name in ("conn", "ssl", "http", "dns")}
    assert len(logs["conn"]) == 3
    assert [row["server_name"] for row in logs["ssl"]] == ["\\xff\\.xa1.example.com"]
    assert [row["host"] for row in logs["http"]] == ["h\\xff\\x41.example"]
    assert [row["query"] for row in logs["dns"]] == ["\\xff\\.example.org"]


@pytest.mark.parametrize("engine", ENGINES)
def test_backslash_is_escaped_in_tsv(tmp_path, engine):
    """Before: an SNI holding the text \\x41 read back as A. Zeek writes the backslash as \\x5c."""
    pcap = hostile_identifiers(tmp_path / "h.pcap")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["conn", str(pcap), "-o", str(out), "--engine", engine])
    assert r.exit_code == 0, r.output
    raw = [ln.split("\t") for ln in (out / "http.log").read_text().splitlines() if not ln.startswith("#")]
    assert "h\\xff\\x5cx41.example" in raw[0]
    assert [row["host"] for row in read_log(str(out / "http.log"))] == ["h\udcff\\x41.example"]
    assert [row["server_name"] for row in read_log(str(out / "ssl.log"))] == ["\udcff\\.xa1.example.com"]


def _data_rows(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]


@pytest.mark.parametrize("engine", ENGINES)
def test_truncated_gzip_keeps_what_came_before(tmp_path, engine):
    """Before: `conn good.pcap.gz truncated.pcap.gz` exited 2 and wrote nothing (the first
    1 MiB refill of the cut stream failed during validation). Now rc 1, like a truncated
    pcap: every record of the good file and those of the cut one before the damage."""
    good = EXAMPLE / "day-2024-03-04.pcap.gz"
    cut = tmp_path / "cut.pcap.gz"
    whole = (EXAMPLE / "day-2024-03-05.pcap.gz").read_bytes()
    cut.write_bytes(whole[: len(whole) // 4])
    runs = {}
    for name, inputs in (("good", [good]), ("both", [good, cut]), ("cut", [cut])):
        out = tmp_path / name
        r = CliRunner().invoke(main, ["conn", *map(str, inputs), "-o", str(out), "--engine", engine, "--seed", "1"])
        runs[name] = r.exit_code, _data_rows(out / "conn.log")
        assert r.exit_code == (0 if name == "good" else 1), r.output
    assert len(runs["cut"][1]) > 0
    assert len(runs["both"][1]) > len(runs["good"][1])
    weird = (tmp_path / "both" / "weird.log").read_text()
    assert "truncated_capture_file" in weird and "cut.pcap.gz: compressed file ended" in weird


def test_standard_input_and_named_pipe(tmp_path):
    """Before: `-` was refused and a FIFO hung forever (opened twice). Both now stream, on both
    engines, to the same logs as the file."""
    day = EXAMPLE / "day-2024-03-04.pcap.gz"
    ref = tmp_path / "ref"
    assert CliRunner().invoke(main, ["conn", str(day), "-o", str(ref), "--seed", "1"]).exit_code == 0
    expected = _data_rows(ref / "conn.log")
    for engine in ENGINES:
        out = tmp_path / f"stdin-{engine}"
        with open(day, "rb") as fh:
            r = subprocess.run([*CLI, "conn", "-", "-o", str(out), "--seed", "1", "--engine", engine], stdin=fh,
                               capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert _data_rows(out / "conn.log") == expected
        fifo = tmp_path / f"fifo-{engine}"
        os.mkfifo(fifo)
        feeder = threading.Thread(target=lambda f=fifo: Path(f).write_bytes(day.read_bytes()))
        feeder.start()
        out = tmp_path / f"fifo-out-{engine}"
        r = subprocess.run([*CLI, "analyze", str(fifo), "-o", str(out), "--seed", "1", "--engine", engine],
                           capture_output=True, text=True, timeout=120)
        feeder.join(timeout=60)
        assert r.returncode == 0, r.stderr
        assert _data_rows(out / "conn.log") == expected


def test_endless_request_line_is_a_weird(tmp_path):
    """Before: a 1 MB request URI gave neither an http.log row nor a weird."""
    uri = b"/" + b"a" * (1 << 20)
    pcap = write_pcap(tmp_path / "u.pcap", _tcp_session(1000.0, "192.0.2.1", 80, 40001,
                                                         b"GET " + uri + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    for engine in ENGINES:
        out = tmp_path / engine
        r = CliRunner().invoke(main, ["conn", str(pcap), "-o", str(out), "--engine", engine])
        assert r.exit_code == 0, r.output
        assert [row["name"] for row in read_log(str(out / "weird.log"))] == ["contentline_size_exceeded"]


def test_binary_input_errors_name_the_file(tmp_path):
    """Before: `baseline import` and `evaluate` on binary input printed a decode error naming
    no file, and evaluate exited 1 for it."""
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 8)
    results = tmp_path / "results"
    results.mkdir()
    for argv in (["baseline", "import", "--state", str(tmp_path / "s.db"), str(junk)],
                 ["baseline", "import", "--state", str(tmp_path / "s.db"), "--format", "csv", str(junk)],
                 ["evaluate", str(results), "--labels", str(junk)]):
        r = CliRunner().invoke(main, argv)
        err = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(err) == 1 and err[0].startswith(f"pcapexfil: error: {junk}:"), r.stderr


_FULL_DISK = """
set -e
mount -t tmpfs -o size={size} tmpfs {disk}
{cli} analyze {small} -o {disk}/out --state {disk}/s.db --seed 1 2>/dev/null
cp -a {disk} {keep}/before
set +e
{cli} analyze {big} -o {disk}/out --state {disk}/s.db --seed 1 2>{keep}/err
echo $? > {keep}/rc
cp -a {disk} {keep}/after
"""


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare -m")
def test_full_disk_leaves_previous_logs_and_state(tmp_path):
    """Before: a full disk left torn logs (last line cut, no #close) and a state that had
    committed records the logs did not hold, yet rc 2 claimed nothing was written. Now the
    run stops with one line naming the file, rc 2, and the previous run's logs and state are
    there byte for byte, with no temporary file left (a tmpfs in a private mount namespace)."""
    disk, keep = tmp_path / "disk", tmp_path / "keep"
    disk.mkdir()
    keep.mkdir()
    days = sorted(EXAMPLE.glob("day-*.pcap.gz"))
    cli = " ".join(f"'{c}'" for c in CLI)
    script = _FULL_DISK.format(size="256k", disk=disk, keep=keep, cli=cli, small=days[0],
                               big=" ".join(map(str, days)))
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert r.returncode == 0, r.stderr
    assert (keep / "rc").read_text().strip() == "2"
    err = (keep / "err").read_text().strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pcapexfil: error: ") and "No space left on device" in err[0], err
    assert str(disk / "out") in err[0] or str(disk / "s.db") in err[0]
    before, after = keep / "before", keep / "after"
    assert not list(after.rglob("*.pcapexfil-tmp"))
    assert sorted(p.name for p in (after / "out").iterdir()) == sorted(p.name for p in (before / "out").iterdir())
    for log in (before / "out").iterdir():
        assert (after / "out" / log.name).read_bytes() == log.read_bytes(), log.name
    assert _dump(after / "s.db") == _dump(before / "s.db")  # (with its -wal, if any, beside it)
    assert any(line.startswith('INSERT INTO "baseline"') for line in _dump(before / "s.db"))


def _dump(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def test_capture_filter_on_files(tmp_path):
    """`-f BPF` reads only the records the filter accepts, as Zeek's -f: the logs hold exactly
    the unfiltered run's rows of those connections (here every DNS exchange), on both engines;
    an invalid expression is a one-line usage error."""
    day = str(EXAMPLE / "day-2024-03-04.pcap.gz")
    assert CliRunner().invoke(main, ["conn", day, "-o", str(tmp_path / "all")]).exit_code == 0
    dns = sorted(r[2:] for r in (ln.split("\t") for ln in _data_rows(tmp_path / "all" / "conn.log"))
                 if r[6] == "udp" and r[5] == "53")  # without ts and uid
    assert dns
    for engine in ENGINES:
        out = tmp_path / engine
        r = CliRunner().invoke(main, ["conn", day, "-o", str(out), "-f", "udp port 53", "--engine", engine])
        assert r.exit_code == 0, r.output
        assert sorted(ln.split("\t")[2:] for ln in _data_rows(out / "conn.log")) == dns
    r = CliRunner().invoke(main, ["analyze", day, "-o", str(tmp_path / "bad"), "--filter", "udp port port"])
    assert r.exit_code == 2 and r.stderr.startswith("pcapexfil: error: -f/--filter: invalid capture filter")
    assert not (tmp_path / "bad" / "conn.log").exists()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_failing_midway_commits_nothing(tmp_path, engine):
    """A run that fails after it began (here: the filter cannot be compiled for the second
    file's link type, raw IP) publishes no log and commits no state: before, closing the
    sinks in the pipeline's `finally` committed what had been fed, then the command said
    nothing was written."""
    day = str(EXAMPLE / "day-2024-03-04.pcap.gz")
    raw_ip = write_pcap(tmp_path / "rawip.pcap", [(2e9, ipv4(udp(1, 53), CLIENT, "10.0.0.53"))], linktype=101)
    db, out = tmp_path / "s.db", tmp_path / "out"
    r = subprocess.run([*CLI, "analyze", day, str(raw_ip), "-o", str(out), "--state", str(db), "--engine", engine,
                        "-f", "ether src 02:00:00:00:00:01"], capture_output=True, text=True, timeout=120)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and err[0].startswith(f"pcapexfil: error: {raw_ip}:"), r.stderr
    assert sorted(os.listdir(out)) == []
    con = sqlite3.connect(db)
    try:
        assert [con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("baseline", "windows", "norm")] \
            == [0, 0, 0]
        assert con.execute("SELECT value FROM meta WHERE key='watermark'").fetchone() is None
    finally:
        con.close()
