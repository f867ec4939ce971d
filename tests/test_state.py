"""The SQLite state store: consecutive runs equal one run, kills lose nothing committed,
and locked/corrupt/foreign files are refused with a one-line error, untouched."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from test_detect_support import data_lines, feed, run_detector, scenario, split_by_day

from pcapexfil.detect.detector import Detector, Settings
from pcapexfil.detect.state import Commit, StateError, StateStore

TESTS = Path(__file__).parent


def baseline_rows(db: Path) -> Counter[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return Counter(con.execute("SELECT orig_h, resp_p, proto, day, ts, identifier, orig_ip_bytes, "
                                   "resp_ip_bytes, duration FROM baseline").fetchall())
    finally:
        con.close()


@pytest.fixture(scope="module")
def one_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("one")
    run_detector(scenario(), base / "out", state=base / "state.db")
    return base


def test_sixteen_runs_equal_one_run(one_run: Path, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    days = split_by_day(scenario())
    assert len(days) == 16
    exfil: list[str] = []
    notice: list[str] = []
    for i, day in enumerate(days):
        run_detector(day, tmp_path / f"run{i}", state=db)
        lines = data_lines(tmp_path / f"run{i}" / "exfil_detection.log")
        exfil += lines if i == 0 else [ln for ln in lines if not ln.startswith("#")]
        lines = data_lines(tmp_path / f"run{i}" / "notice.log")
        notice += lines if i == 0 else [ln for ln in lines if not ln.startswith("#")]
    want_exfil = data_lines(one_run / "out" / "exfil_detection.log")
    assert len(want_exfil) > 100
    assert exfil == want_exfil
    assert notice == data_lines(one_run / "out" / "notice.log")
    assert baseline_rows(db) == baseline_rows(one_run / "state.db")


def test_each_commit_stores_exactly_the_open_windows(tmp_path: Path) -> None:
    # Commits write only the windows that changed and delete the closed ones: after every
    # one of them the stored windows must equal the detector's open windows.
    store = StateStore(str(tmp_path / "state.db"))
    det = Detector(Settings(), store=store)
    commits = 0

    def stored() -> list[tuple[object, ...]]:
        return [(w.seq, w.key, w.created, w.close_at, w.orig_ip_bytes, w.resp_ip_bytes, w.duration, w.uids)
                for w in store.load().windows]

    def check(c: Commit, watermark: float) -> None:
        nonlocal commits
        Detector.commit(det, c, watermark)
        commits += 1
        assert stored() == [(w.seq, w.key, w.created, w.close_at, w.orig_ip_bytes, w.resp_ip_bytes, w.duration,
                             w.uids) for w in sorted(det.windows.open.values(), key=lambda w: w.seq)]

    det.commit = check  # type: ignore[method-assign]
    feed(det, scenario(days=3), close=False)
    added = sum(len(w.uids) for w in det.windows.open.values())
    det.close(det.now or 0.0)
    store.close()
    assert commits > 48 and added > 0


def test_in_memory_run_closes_open_windows_at_end(one_run: Path, tmp_path: Path) -> None:
    # Without a state store the windows still open at end of input are scored at the end;
    # with one they are carried over instead (so the persistent run logs fewer lines).
    mem = run_detector(scenario(), tmp_path)
    persistent_lines = [ln for ln in data_lines(one_run / "out" / "exfil_detection.log") if not ln.startswith("#")]
    assert mem.stats.scored > len(persistent_lines)
    con = sqlite3.connect(one_run / "state.db")
    assert con.execute("SELECT COUNT(*) FROM windows").fetchone()[0] > 0
    con.close()


def test_sigkill_mid_run_then_rerun_loses_and_duplicates_nothing(one_run: Path, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    child = subprocess.Popen([sys.executable, str(TESTS / "test_detect_support.py"), str(db), "0.25"],
                             stdout=subprocess.PIPE, text=True, cwd=TESTS)
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("day 8"):
            break
    child.kill()  # SIGKILL
    child.wait()
    assert child.returncode == -9
    committed = baseline_rows(db)
    assert committed, "the killed run had committed part of the baseline"
    final = baseline_rows(one_run / "state.db")
    first_day: dict[tuple[object, ...], object] = {}
    for row in final:
        first_day[row[:3]] = min(first_day.get(row[:3], row[3]), row[3])  # type: ignore[type-var]
    # Every committed row is in the final baseline, unless its day was pruned by then.
    assert not [r for r in committed - final if r[3] >= first_day[r[:3]]]  # type: ignore[operator]
    assert committed != final  # ... and the run was really cut short
    # Run again on the whole input: what the state already holds is skipped, the rest is added.
    store = StateStore(str(db))
    det = Detector(Settings(), out_dir=None, store=store)
    from test_detect_support import feed

    feed(det, scenario())
    store.close()
    assert det.stats.skipped_before_watermark > 0
    assert baseline_rows(db) == final


def test_corrupt_and_foreign_files_refused_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "notes.txt"
    foreign.write_bytes(b"this is not a database\n" * 100)
    digest = hashlib.sha256(foreign.read_bytes()).hexdigest()
    with pytest.raises(StateError, match="not an SQLite database"):
        StateStore(str(foreign))
    assert hashlib.sha256(foreign.read_bytes()).hexdigest() == digest

    good = tmp_path / "good.db"
    run_detector(scenario()[:200], tmp_path / "o", state=good)
    data = bytearray(good.read_bytes())
    assert len(data) > 8192
    data[4096:8192] = b"\xa5" * 4096  # smash page 2 and beyond, keep the header
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(data))
    digest = hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(StateError) as info:
        StateStore(str(bad))
    assert "\n" not in str(info.value)
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == digest


def test_locked_database_gives_error_after_timeout(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    StateStore(str(db)).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StateError, match=r"locked by another process \(waited 0.2 s\)"):
            StateStore(str(db), busy_timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_refuses_to_mix_domain_modes(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    run_detector(scenario()[:50], tmp_path / "a", state=db)
    with pytest.raises(StateError, match="domain_mode=psl; refusing to mix with domain_mode=last2"):
        Detector(Settings(domain_mode="last2"), store=StateStore(str(db)))
    Detector(Settings(), store=StateStore(str(db)))  # same mode: fine


def test_newer_schema_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version=99")
    con.close()
    with pytest.raises(StateError, match="schema version 99"):
        StateStore(str(db))


def test_export_import_roundtrip(one_run: Path, tmp_path: Path) -> None:
    src = StateStore(str(one_run / "state.db"))
    rows = list(src.baseline_rows())
    src.close()
    dst = StateStore(str(tmp_path / "copy.db"))
    assert dst.import_rows(rows) == len(rows)
    dst.close()
    assert baseline_rows(tmp_path / "copy.db") == baseline_rows(one_run / "state.db")
    # An imported baseline gets its parameters at the first recomputation of the next run.
    det = Detector(Settings(), store=StateStore(str(tmp_path / "copy.db")))
    assert det._recompute_all


def test_lock_mid_run_keeps_last_snapshot_and_rerun_completes(one_run: Path, tmp_path: Path) -> None:
    from test_detect_support import feed

    db = tmp_path / "state.db"
    days = split_by_day(scenario())
    store = StateStore(str(db), busy_timeout=0.1)
    det = Detector(Settings(), store=store)
    for day in days[:8]:
        feed(det, day, close=False)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StateError, match="locked"):
            feed(det, days[8], close=False)
        det.close(0.0)  # a sink is closed even after a failure: it must not commit a partial state
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.close()
    before = baseline_rows(db)
    assert before
    store = StateStore(str(db))
    det = Detector(Settings(), store=store)
    feed(det, scenario())
    store.close()
    assert baseline_rows(db) == baseline_rows(one_run / "state.db")
