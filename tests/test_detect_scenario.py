"""The 16-day multi-host scenario, in one in-memory run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_detect_support import (
    BULK_UID,
    DAY,
    DAY0,
    HOSTS,
    NEW_PORT_UID,
    read_log,
    run_detector,
    scenario,
)

from pcapexfil.detect.detector import Detector, Settings


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Detector, Path]:
    out = tmp_path_factory.mktemp("scenario")
    return run_detector(scenario(), out), out


def day_index(ts: str) -> int:
    return int((float(ts) - DAY0) // DAY)


def test_no_scores_before_ten_days_then_scores(result: tuple[Detector, Path]) -> None:
    _, out = result
    rows = read_log(out / "exfil_detection.log")
    for host, first in HOSTS.items():
        days = sorted({day_index(r["ts"]) for r in rows if r["orig_h"] == host and r["resp_p"] == "443"})
        # Every day has windows closing on it, so the 10th distinct day is first + 9.
        assert days[0] == first + 9, host
        assert days == list(range(first + 9, 16)), host
    assert all(r["resp_p"] == "443" for r in rows)  # port 8022 never reached 10 days
    scored = [r for r in rows if r["score.zscore"] != "-" and r["score.euclidean"] != "-"]
    assert scored, "sub-scores are set once parameters exist"


def test_bulk_upload_scores_above_ordinary_windows(result: tuple[Detector, Path]) -> None:
    _, out = result
    rows = [r for r in read_log(out / "exfil_detection.log") if r["orig_h"] == "10.0.0.1"]
    for ident in ("93.184.216.34", "example.com"):
        mine = [r for r in rows if r["identifier"] == ident]
        bulk = [r for r in mine if BULK_UID in r["uid"].split(",")]
        assert len(bulk) == 1
        others = [float(r["exfiltration_score"]) for r in mine if r is not bulk[0]]
        assert float(bulk[0]["exfiltration_score"]) > max(others)
        assert float(bulk[0]["score.pcr"]) > 0.99
        assert float(bulk[0]["score.zscore"]) > max(float(r["score.zscore"]) for r in mine if r is not bulk[0])


def test_new_protocol_notice(result: tuple[Detector, Path]) -> None:
    _, out = result
    notices = [n for n in read_log(out / "notice.log") if n["note"] == "EXFIL_DETECTION::New_Protocol"]
    assert len(notices) == 1  # one per new (host, port), not one per identifier
    n = notices[0]
    assert n["msg"] == "new protocol detected: protocol 8022/tcp from host 10.0.0.2"
    assert n["sub"] == f"protocol was found in following uids: [{NEW_PORT_UID}]"
    assert (n["src"], n["p"], n["suppress_for"], n["actions"]) == ("10.0.0.2", "8022", "10800.000000",
                                                                  "Notice::ACTION_LOG")
    assert day_index(n["ts"]) == 14


def test_pruning_to_fourteen_days(result: tuple[Detector, Path]) -> None:
    det, _ = result
    days = det.baseline.days[("10.0.0.1", 443, "tcp")]
    assert len(days) == 14
    first_kept = time.strftime("%Y-%m-%d", time.gmtime(DAY0 + 2 * DAY))
    assert min(days) == first_kept  # days 0 and 1 were pruned, oldest first
    assert len(det.baseline.days[("10.0.0.3", 443, "tcp")]) == 13  # active from day 3: nothing pruned


def test_local_and_multicast_not_counted(result: tuple[Detector, Path]) -> None:
    det, _ = result
    assert all(k[0] != "10.0.0.1" or k[1] == 443 for k in det.baseline.days)
    assert det.stats.outgoing == det.stats.records - 2


def test_high_score_notice_with_lower_threshold(tmp_path: Path) -> None:
    det = run_detector(scenario(), tmp_path, settings=Settings(threshold_raise_notice_at_high_score=0.35))
    rows = read_log(tmp_path / "exfil_detection.log")
    high = [r for r in rows if float(r["exfiltration_score"]) >= 0.35]
    notices = [n for n in read_log(tmp_path / "notice.log") if n["note"] == "EXFIL_DETECTION::High_Score"]
    assert len(notices) == len(high) >= 1
    for n in notices:
        assert n["msg"].startswith("possible exfiltration detected: score ")
        assert n["msg"].endswith(f"from host {n['src']} with protocol {n['p']}/tcp")
        assert float(n["sub"]) >= 0.35
    assert det.stats.scored == len(rows)


def test_tz_moves_day_boundaries(tmp_path: Path) -> None:
    utc = run_detector(scenario(), tmp_path / "utc")
    tokyo = run_detector(scenario(), tmp_path / "tokyo", settings=Settings(tz="Asia/Tokyo"))
    assert set(utc.baseline.days[("10.0.0.1", 443, "tcp")]) != set(tokyo.baseline.days[("10.0.0.1", 443, "tcp")])
