"""zeekread: Zeek logs (TSV/JSON, gzip) back into ConnRecords, joined with ssl/http by uid."""

from __future__ import annotations

import gzip
from pathlib import Path

from pcapexfil.logs.conn import CONN_FIELDS, conn_row
from pcapexfil.logs.zeek import ZeekLogWriter
from pcapexfil.record import ConnRecord
from pcapexfil.weird import Weirds
from pcapexfil.zeekread import read_directory

SSL_FIELDS = [("ts", "time"), ("uid", "string"), ("server_name", "string"), ("ja3s", "string")]
HTTP_FIELDS = [("ts", "time"), ("uid", "string"), ("host", "string")]


def records() -> list[ConnRecord]:
    return [
        ConnRecord(ts=1700000000.5, uid="CA", orig_h="10.0.0.1", orig_p=5000, resp_h="93.184.216.34", resp_p=443,
                   proto="tcp", service=["ssl"], duration=1.25, orig_bytes=10, resp_bytes=20, conn_state="SF",
                   history="ShADadFf", orig_pkts=5, orig_ip_bytes=300, resp_pkts=4, resp_ip_bytes=400),
        ConnRecord(ts=1700000001.0, uid="CB", orig_h="10.0.0.1", orig_p=5001, resp_h="93.184.216.35", resp_p=80,
                   proto="tcp", duration=None, orig_pkts=1, orig_ip_bytes=60),
        ConnRecord(ts=1700000002.0, uid="CC", orig_h="2001:db8::1", orig_p=53, resp_h="2606:4700::1", resp_p=53,
                   proto="udp", duration=0.01, orig_ip_bytes=80, resp_ip_bytes=120),
    ]


def write_dir(directory: Path, use_json: bool, gz: bool) -> None:
    directory.mkdir()
    with ZeekLogWriter(directory / "conn.log", "conn", CONN_FIELDS, use_json=use_json) as w:
        for rec in records():
            w.write(conn_row(rec))
    with ZeekLogWriter(directory / "ssl.log", "ssl", SSL_FIELDS, use_json=use_json) as w:
        w.write({"ts": 1700000000.6, "uid": "CA", "server_name": "www.Example.com", "ja3s": "a704460b"})
    with ZeekLogWriter(directory / "http.log", "http", HTTP_FIELDS, use_json=use_json) as w:
        w.write({"ts": 1700000001.1, "uid": "CB", "host": "files.example.org:8080"})
        w.write({"ts": 1700000001.2, "uid": "CB", "host": "second.example.org"})
    if gz:
        for name in ("conn.log", "ssl.log", "http.log"):
            data = (directory / name).read_bytes()
            (directory / name).unlink()
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))


def check(got: list[ConnRecord]) -> None:
    want = records()
    assert [r.uid for r in got] == [r.uid for r in want]
    for g, w in zip(got, want, strict=True):
        for name in ("ts", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "duration", "orig_bytes",
                     "resp_bytes", "orig_ip_bytes", "resp_ip_bytes", "orig_pkts", "service"):
            assert getattr(g, name) == getattr(w, name), name
    assert (got[0].server_name, got[0].ja3s, got[0].http_host) == ("www.Example.com", "a704460b", None)
    assert got[1].http_host == "files.example.org"  # first Host, :port stripped
    assert got[1].server_name is None


def test_tsv_json_and_gzip(tmp_path: Path) -> None:
    for i, (use_json, gz) in enumerate([(False, False), (True, False), (False, True), (True, True)]):
        write_dir(tmp_path / f"d{i}", use_json, gz)
        check(read_directory(str(tmp_path / f"d{i}")))


def test_damaged_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    write_dir(tmp_path / "d", False, False)
    conn = tmp_path / "d" / "conn.log"
    lines = conn.read_text().splitlines(keepends=True)
    lines.insert(9, "garbage\twith\ttoo few fields\n")
    lines.insert(10, "\t".join(["notatime"] + ["-"] * (len(CONN_FIELDS) - 1)) + "\n")
    conn.write_text("".join(lines))
    weirds = Weirds()
    got = read_directory(str(tmp_path / "d"), weirds)
    assert [r.uid for r in got] == ["CA", "CB", "CC"]
    assert weirds.counts["zeek_log_bad_line"] == 2


DNS_FIELDS = [("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("rtt", "interval"),
              ("query", "string"), ("answers", "vector[string]"), ("TTLs", "vector[interval]")]


def test_dns_derived_names_within_ttl(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write_dir(d, False, False)
    with ZeekLogWriter(d / "dns.log", "dns", DNS_FIELDS) as w:
        # CC (2606:4700::1 at 1700000002.0): an expired answer, then a valid one, then one too late.
        w.write({"ts": 1699999000.0, "uid": "D1", "id.orig_h": "2001:db8::1", "rtt": 0.01, "query": "old.example",
                 "answers": ["2606:4700::1"], "TTLs": [60.0]})
        w.write({"ts": 1699999990.0, "uid": "D2", "id.orig_h": "2001:db8::1", "rtt": 0.02,
                 "query": "files.example.net", "answers": ["cdn.example.net", "2606:4700::1"], "TTLs": [300.0, 300.0]})
        w.write({"ts": 1700000003.0, "uid": "D3", "id.orig_h": "2001:db8::1", "rtt": 0.01, "query": "later.example",
                 "answers": ["2606:4700::1"], "TTLs": [300.0]})
        # Another client's answer for CB's responder: not CB's name; CA has SNI and keeps it.
        w.write({"ts": 1699999999.0, "uid": "D4", "id.orig_h": "10.9.9.9", "rtt": 0.01, "query": "other.example",
                 "answers": ["93.184.216.35", "93.184.216.34"], "TTLs": [300.0, 300.0]})
    got = {r.uid: r for r in read_directory(str(d))}
    assert got["CC"].dns_name == "files.example.net"
    assert got["CB"].dns_name is None and got["CA"].dns_name is None
