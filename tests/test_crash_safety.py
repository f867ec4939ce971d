"""Crash safety of `pcapexfil analyze --state` as a process: SIGKILL at seeded random moments
of several consecutive runs, then a complete run, leaves the same baseline as one
uninterrupted run; a state file locked by another process or corrupt gives a one-line
error and a non-zero exit, and is left byte for byte as it was.

(tests/test_state.py covers the store and the detector in-process: one kill of a feeder
script, a lock taken mid-run, corrupt/foreign files via the library. This file drives the
real CLI over pcaps.)
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "from pcapexfil.cli import main; main()"]
KILL_SEED = 2024
KILLS = 5


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def _table(db: Path, table: str, columns: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return sorted(con.execute(f"SELECT {columns} FROM {table}").fetchall(), key=repr)
    finally:
        con.close()


BASELINE = "orig_h, resp_p, proto, day, ts, identifier, orig_ip_bytes, resp_ip_bytes, duration"
PARAMS = "orig_h, resp_p, proto, median_bytes, mad_bytes, median_duration, mad_duration, ref_bytes, ref_duration"


def _digest(*paths: Path) -> list[str | None]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path, float]:
    """A small synth capture set and the state of one uninterrupted analyze run over it."""
    base = tmp_path_factory.mktemp("crash")
    r = _cli("synth", "-o", str(base / "pcaps"), "--days", "3", "--hosts", "4", "--scale", "0.2",
             "--episodes-per-kind", "0", "--baseline-days", "2", "--seed", "3")
    assert r.returncode == 0, r.stderr
    pcaps = sorted(str(p) for p in (base / "pcaps").glob("day-*.pcap"))
    t = time.monotonic()
    r = _cli("analyze", *pcaps, "-o", str(base / "ref"), "--state", str(base / "ref.db"), "--seed", "1")
    took = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    assert len(_table(base / "ref.db", "baseline", BASELINE)) > 50
    return pcaps, base / "ref.db", took


def test_sigkill_at_random_points_then_rerun_equals_uninterrupted(dataset, tmp_path):
    pcaps, ref, took = dataset
    db = tmp_path / "state.db"
    rng = random.Random(KILL_SEED)
    kills = attempts = 0
    while kills < KILLS and attempts < 4 * KILLS:
        attempts += 1
        started = time.monotonic()
        child = subprocess.Popen([*CLI, "analyze", *pcaps, "-o", str(tmp_path / f"run{attempts}"), "--state",
                                  str(db), "--seed", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        delay = rng.uniform(0.1, 0.75) * took  # of an uninterrupted run
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            child.kill()  # SIGKILL: no cleanup runs
        _, err = child.communicate()
        assert child.returncode in (0, -9), err
        if child.returncode == 0:
            took = time.monotonic() - started  # finished first: re-calibrate under the current load
        elif db.exists():
            kills += 1
            rows = _table(db, "baseline", BASELINE)  # readable after the kill (last committed snapshot)
            assert len(rows) <= len(_table(ref, "baseline", BASELINE))
    assert kills == KILLS, f"only {kills} of {attempts} runs were killed after creating the state"
    r = _cli("analyze", *pcaps, "-o", str(tmp_path / "final"), "--state", str(db), "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert _table(db, "baseline", BASELINE) == _table(ref, "baseline", BASELINE)
    assert _table(db, "params", PARAMS) == _table(ref, "params", PARAMS)
    assert _table(db, "windows", "orig_h, resp_p, proto, identifier, created, close_at, orig_ip_bytes, "
                  "resp_ip_bytes, duration") == _table(ref, "windows", "orig_h, resp_p, proto, identifier, "
                                                      "created, close_at, orig_ip_bytes, resp_ip_bytes, duration")


_HOLDER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
con.execute("ROLLBACK")
"""


def _one_line_error(r: subprocess.CompletedProcess[str], must_contain: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pcapexfil: error:"), r.stderr
    assert must_contain in lines[0], lines[0]


def test_locked_by_another_process_one_line_error_file_untouched(dataset, tmp_path):
    pcaps, ref, _ = dataset
    db = tmp_path / "state.db"
    db.write_bytes(ref.read_bytes())
    files = (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = _digest(*files)
        r = _cli("analyze", pcaps[0], "-o", str(tmp_path / "out"), "--state", str(db), "--busy-timeout", "0.3")
        _one_line_error(r, "locked")
        assert r.returncode == 2
        r = _cli("detect", str(ref.parent / "ref"), "-o", str(tmp_path / "out2"), "--state", str(db),
                 "--busy-timeout", "0.3")
        _one_line_error(r, "locked")
        for sub in (("reset", "--yes"), ("show",)):  # a locked reset must not wipe anything
            r = _cli("baseline", *sub, "--state", str(db), "--busy-timeout", "0.3")
            _one_line_error(r, "locked")
        assert _digest(*files) == before
    finally:
        holder.communicate("", timeout=30)
    assert _table(db, "baseline", BASELINE) == _table(ref, "baseline", BASELINE)


@pytest.mark.parametrize("damage", ["smashed-pages", "cut-in-half", "zeroed-header"])
def test_corrupt_state_one_line_error_file_untouched(dataset, tmp_path, damage):
    pcaps, ref, _ = dataset
    data = bytearray(ref.read_bytes())
    assert len(data) > 16384
    if damage == "smashed-pages":
        data[4096:12288] = b"\xa5" * 8192
    elif damage == "cut-in-half":
        data = data[: len(data) // 2]
    else:
        data[:100] = bytes(100)
    db = tmp_path / "state.db"
    db.write_bytes(bytes(data))
    before = _digest(db, Path(f"{db}-wal"))
    r = _cli("analyze", pcaps[0], "-o", str(tmp_path / "out"), "--state", str(db))
    _one_line_error(r, str(db))
    assert r.returncode == 2
    assert not (tmp_path / "out" / "conn.log").exists()  # refused before any output
    for args in (("detect", str(ref.parent / "ref"), "-o", str(tmp_path / "out2")), ("baseline", "reset", "--yes"),
                 ("baseline", "show")):
        r = _cli(*args, "--state", str(db))
        _one_line_error(r, str(db))
    assert _digest(db, Path(f"{db}-wal")) == before
