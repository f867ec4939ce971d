"""The detector's commands: `analyze` (pcaps), `detect` (Zeek logs), `baseline`, and their errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from test_detect_support import (
    data_lines,
    read_log,
    run_detector,
    scenario,
    split_by_day,
)

from pcapexfil.cli import main
from pcapexfil.logs.conn import CONN_FIELDS, conn_row
from pcapexfil.logs.zeek import ZeekLogWriter
from pcapexfil.record import ConnRecord

SSL_FIELDS = [("ts", "time"), ("uid", "string"), ("server_name", "string")]


def rounded(recs: list[ConnRecord]) -> list[ConnRecord]:
    """Records as a Zeek log holds them (time and interval to 6 decimals)."""
    return [dataclasses.replace(r, ts=round(r.ts, 6), duration=None if r.duration is None else round(r.duration, 6))
            for r in recs]


def write_zeek_dir(directory: Path, recs: list[ConnRecord], use_json: bool = False) -> None:
    directory.mkdir(parents=True)
    with ZeekLogWriter(directory / "conn.log", "conn", CONN_FIELDS, use_json=use_json) as w:
        for rec in sorted(recs, key=lambda r: r.ts):  # conn.log is in start order
            w.write(conn_row(rec))
    with ZeekLogWriter(directory / "ssl.log", "ssl", SSL_FIELDS, use_json=use_json) as w:
        for rec in recs:
            if rec.server_name:
                w.write({"ts": rec.ts, "uid": rec.uid, "server_name": rec.server_name})


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_error(result: Result, status: int, text: str) -> None:
    assert result.exit_code == status, result.output
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pcapexfil: error: ") and text in err[0], result.stderr
    assert "Traceback" not in result.output


def test_detect_from_zeek_logs_equals_library_run_and_carries_over(tmp_path: Path) -> None:
    recs = rounded(scenario())
    days = split_by_day(recs)
    # Library reference: one run, persistent state.
    run_detector(recs, tmp_path / "ref", state=tmp_path / "ref.db")
    # CLI: 16 daily Zeek log directories (JSON for odd days), 16 runs sharing --state.
    lines: list[str] = []
    for i, day in enumerate(days):
        write_zeek_dir(tmp_path / f"zeek{i}", day, use_json=bool(i % 2))
        result = invoke("detect", str(tmp_path / f"zeek{i}"), "-o", str(tmp_path / f"out{i}"),
                        "--state", str(tmp_path / "cli.db"))
        assert result.exit_code == 0, result.output
        got = data_lines(tmp_path / f"out{i}" / "exfil_detection.log")
        lines += got if i == 0 else [ln for ln in got if not ln.startswith("#")]
    assert lines == data_lines(tmp_path / "ref" / "exfil_detection.log")
    assert any("example.com" in ln for ln in lines)  # the domain identifier came from ssl.log


def test_baseline_commands_roundtrip(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    run_detector(scenario(), tmp_path / "o", state=db)
    shown = invoke("baseline", "show", "--state", str(db))
    assert shown.exit_code == 0
    assert "10.0.0.1\t443/tcp\t14\t" in shown.output
    assert "domain_mode=psl" in shown.output
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"export.{fmt}"
        assert invoke("baseline", "export", "--state", str(db), "--format", fmt, "-o", str(out)).exit_code == 0
        copy = tmp_path / f"copy-{fmt}.db"
        result = invoke("baseline", "import", "--state", str(copy), str(out))
        assert result.exit_code == 0, result.output
        query = "SELECT orig_h, resp_p, proto, day, ts, identifier, orig_ip_bytes, resp_ip_bytes, duration FROM baseline"
        want = Counter(sqlite3.connect(db).execute(query).fetchall())
        assert Counter(sqlite3.connect(copy).execute(query).fetchall()) == want
    first = json.loads((tmp_path / "export.jsonl").read_text().splitlines()[0])
    assert set(first) >= {"orig_h", "resp_p", "day", "orig_ip_bytes"}
    assert_error(invoke("baseline", "reset", "--state", str(db)), 2, "--yes")
    assert invoke("baseline", "reset", "--state", str(db), "--yes").exit_code == 0
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM baseline").fetchone()[0] == 0


def test_bad_import_file_changes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"orig_h": "10.0.0.1", "resp_p": 443}\n')
    assert_error(invoke("baseline", "import", "--state", str(tmp_path / "s.db"), str(bad)), 2, "element 1")
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize(("args", "text"), [
    (["--baseline-days", "abc"], "--baseline-days"),
    (["--aggregation-interval", "3 weeks"], "--aggregation-interval"),
    (["--tz", "Mars/Olympus_Mons"], "unknown time zone"),
    (["--local-nets", "10.0.0.0/33"], "invalid network"),
    (["--enabled-identifier", "resp_h,mac"], "unknown identifier 'mac'"),
    (["--no-rule", "smtp-upload"], "unknown rule"),
    (["--threshold-raise-notice-at-high-score", "high"], "not a number"),
])
def test_bad_options(tmp_path: Path, args: list[str], text: str) -> None:
    write_zeek_dir(tmp_path / "z", scenario()[:5])
    assert_error(invoke("detect", str(tmp_path / "z"), "-o", str(tmp_path / "o"), *args), 2, text)


def test_missing_conn_log(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_error(invoke("detect", str(tmp_path / "empty"), "-o", str(tmp_path / "o")), 2, "no conn.log")


def test_corrupt_locked_and_mixed_state(tmp_path: Path) -> None:
    write_zeek_dir(tmp_path / "z", scenario()[:50])
    base = ["detect", str(tmp_path / "z"), "-o", str(tmp_path / "o")]
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00garbage" * 1000)
    digest = hashlib.sha256(junk.read_bytes()).hexdigest()
    assert_error(invoke(*base, "--state", str(junk)), 2, "not an SQLite database")
    assert hashlib.sha256(junk.read_bytes()).hexdigest() == digest

    db = tmp_path / "state.db"
    assert invoke(*base, "--state", str(db)).exit_code == 0
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert_error(invoke(*base, "--state", str(db), "--busy-timeout", "0.2"), 2, "locked by another process")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_error(invoke(*base, "--state", str(db), "--domain-mode", "last2"), 2, "refusing to mix")


def test_damaged_zeek_log_exit_1_keeps_the_rest(tmp_path: Path) -> None:
    write_zeek_dir(tmp_path / "z", scenario()[:40])
    conn = tmp_path / "z" / "conn.log"
    conn.write_text(conn.read_text().replace("\n", "\nbroken line\n", 9).replace("broken line\n", "", 8))
    result = invoke("detect", str(tmp_path / "z"), "-o", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert "zeek_log_bad_line=1" in result.stderr
    assert "39 connections" not in result.stderr and "40 connections" in result.stderr


def test_http_upload_rule(tmp_path: Path) -> None:
    up = ConnRecord(ts=1_700_000_000.0, uid="CUP", orig_h="10.0.0.5", orig_p=40000, resp_h="93.184.216.34",
                    resp_p=80, proto="tcp", duration=2.0, orig_bytes=5000, resp_bytes=300,
                    orig_ip_bytes=5400, resp_ip_bytes=600)
    down = dataclasses.replace(up, uid="CDOWN", orig_bytes=300, resp_bytes=5000)
    tls = dataclasses.replace(up, uid="CTLS", resp_p=443)
    write_zeek_dir(tmp_path / "z", [up, down, tls])
    assert invoke("detect", str(tmp_path / "z"), "-o", str(tmp_path / "on")).exit_code == 0
    notices = read_log(tmp_path / "on" / "notice.log")
    assert [(n["note"], n["uid"], n["id.resp_p"], n["proto"]) for n in notices] == [
        ("HTTP::Client_Upload", "CUP", "80", "tcp")]
    assert "5000 > 300" in notices[0]["msg"]
    assert invoke("detect", str(tmp_path / "z"), "-o", str(tmp_path / "off"), "--no-rule", "http-upload").exit_code == 0
    assert read_log(tmp_path / "off" / "notice.log") == []


def test_analyze_end_to_end_on_synthetic_pcaps(tmp_path: Path) -> None:
    """Through the real pipeline: every exfil_detection.log row sums conn.log rows of its uids."""
    from pcapexfil.synth.network import SynthConfig, generate

    summary = generate(SynthConfig(out_dir=str(tmp_path / "pcaps"), days=11, hosts=2, seed=3, scale=0.2,
                                   episodes_per_kind=1))
    out = tmp_path / "out"
    result = invoke("analyze", *summary.files, "-o", str(out), "--local-nets", "10.0.0.0/8",
                    "--baseline-min-days-for-score", "2", "--seed", "1")
    assert result.exit_code == 0, result.output
    conns = {r["uid"]: r for r in read_log(out / "conn.log")}
    rows = read_log(out / "exfil_detection.log")
    assert rows
    for row in rows:
        uids = row["uid"].split(",")
        assert all(conns[u]["id.orig_h"] == row["orig_h"] and conns[u]["id.resp_p"] == row["resp_p"] for u in uids)
        assert int(row["orig_ip_bytes"]) == sum(int(conns[u]["orig_ip_bytes"]) for u in uids)
        assert int(row["resp_ip_bytes"]) == sum(int(conns[u]["resp_ip_bytes"]) for u in uids)
        assert 0.0 <= float(row["exfiltration_score"]) <= 1.0
    idents = {row["identifier"] for row in rows}
    assert any(not i[0].isdigit() and ":" not in i and len(i) != 32 for i in idents)  # a domain
    notes = Counter(n["note"] for n in read_log(out / "notice.log"))
    assert notes["EXFIL_DETECTION::New_Protocol"] >= 1
