"""Detector pieces in isolation: filter, windows, schedule, hold time, notices, normalisation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from test_detect_support import DAY, DAY0, feed, read_log

from pcapexfil.detect.baseline import Baseline, Element
from pcapexfil.detect.detector import Detector, Settings
from pcapexfil.detect.filter import OutgoingFilter
from pcapexfil.detect.notices import Notices
from pcapexfil.detect.windows import WindowTable
from pcapexfil.record import ConnRecord

BASE = ConnRecord(ts=DAY0, uid="C0", orig_h="10.0.0.1", orig_p=40000, resp_h="93.184.216.34", resp_p=443,
                  proto="tcp", duration=1.0, orig_ip_bytes=100, resp_ip_bytes=1000)


def conn(uid: str, ts: float, **kw: object) -> ConnRecord:
    return dataclasses.replace(BASE, uid=uid, ts=ts, **kw)  # type: ignore[arg-type]


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def write(self, row: dict[str, object]) -> None:
        self.rows.append(row)

    def close(self) -> None:
        pass


def test_outgoing_filter() -> None:
    f = OutgoingFilter(["10.0.0.0/8", "fd00::/8"])
    assert f(BASE)
    assert not f(conn("a", DAY0, orig_h="93.184.216.34", resp_h="10.0.0.1"))  # incoming
    assert not f(conn("b", DAY0, resp_h="10.2.3.4"))  # internal
    assert not f(conn("c", DAY0, resp_h="239.1.2.3"))  # multicast
    assert not f(conn("d", DAY0, resp_h="255.255.255.255"))  # broadcast
    assert not f(conn("e", DAY0, orig_h="fd00::1", resp_h="ff02::fb"))
    assert f(conn("f", DAY0, orig_h="fd00::1", resp_h="2606:4700::1111"))
    assert not f(conn("g", DAY0, resp_h="not-an-address"))


def test_windows_expire_from_creation_not_sliding() -> None:
    table = WindowTable(3 * 3600, ["resp_h"])
    table.add(conn("C1", DAY0), DAY0)
    table.add(conn("C2", DAY0 + 7200), DAY0 + 7200)  # same key: joins, expiry unchanged
    assert table.next_close() == DAY0 + 3 * 3600
    first = table.pop_next()
    assert (first.uids, first.orig_ip_bytes, first.duration) == (["C1", "C2"], 200, 2.0)
    table.add(conn("C3", DAY0 + 4 * 3600, duration=None), DAY0 + 4 * 3600)  # no duration counts as 0
    second = table.pop_next()
    assert second.uids == ["C3"] and second.duration == 0.0 and second.close_at == DAY0 + 7 * 3600


def test_one_window_per_identifier() -> None:
    table = WindowTable(3 * 3600, ["resp_h", "domain", "ja3s"], "psl")
    table.add(conn("C1", DAY0, server_name="a.b.example.co.uk", ja3s="f" * 32), DAY0)
    table.add(conn("C2", DAY0, http_host="www.example.co.uk:8080", resp_h="93.184.216.35"), DAY0)
    keys = sorted(k[3] for k in table.open)
    assert keys == ["93.184.216.34", "93.184.216.35", "example.co.uk", "f" * 32]
    assert table.open[("10.0.0.1", 443, "tcp", "example.co.uk")].uids == ["C1", "C2"]
    last2 = WindowTable(3 * 3600, ["domain"], "last2")
    last2.add(conn("C1", DAY0, server_name="a.b.example.co.uk"), DAY0)
    assert list(last2.open)[0][3] == "co.uk"  # the reference's rule, kept for parity


def test_scores_use_last_recomputation(tmp_path: Path) -> None:
    # One day suffices here; the first recomputation (1 h after the first packet) sees an empty
    # baseline, so the first window (closing at 3 h) has pcr but no zscore/euclidean yet.
    settings = Settings(baseline_min_days_for_score=1, enabled_identifier=("resp_h",))
    det = Detector(settings, out_dir=str(tmp_path))
    recs = [conn(f"C{i}", DAY0 + i * 4 * 3600, orig_ip_bytes=100 + 10 * i, duration=1.0 + i) for i in range(5)]
    feed(det, recs)
    rows = read_log(tmp_path / "exfil_detection.log")
    assert len(rows) == 5  # the last window is closed at end of input (no state store)
    assert rows[0]["score.pcr"] == "0.0" and rows[0]["score.zscore"] == "-"
    assert rows[1]["score.zscore"] == "-"  # one element so far: MAD 0
    assert rows[3]["score.zscore"] != "-" and rows[3]["score.euclidean"] != "-"
    assert rows[-1]["ts"] == f"{DAY0 + 16 * 3600 + 5.0:.6f}"  # end of input, not close time
    # The exfiltration score divides by the three sub-scores, set or not.
    for row in rows:
        subs = [float(row[c]) for c in ("score.pcr", "score.zscore", "score.euclidean") if row[c] != "-"]
        assert abs(float(row["exfiltration_score"]) - sum(subs) / 3) < 1e-6


def test_recomputation_grid_and_hold_time() -> None:
    settings = Settings(max_baseline_hold_time=2 * DAY, enabled_identifier=("resp_h",))
    det = Detector(settings)
    det.on_record(conn("C1", DAY0, duration=0.0))
    assert det.next_recalc == DAY0 + 3600
    det.on_time(DAY0 + 5 * 3600 + 30)
    assert det.next_recalc == DAY0 + 6 * 3600  # grid anchored at the first packet, collapsed jumps
    assert ("10.0.0.1", 443, "tcp") in det.baseline and ("10.0.0.1", 443, "tcp") in det.params
    det.on_time(DAY0 + 3 * 3600 + 2 * DAY)  # not written for 2 days: dropped with its parameters
    assert ("10.0.0.1", 443, "tcp") not in det.baseline and not det.params


def test_baseline_prunes_oldest_days() -> None:
    b = Baseline()
    key = ("10.0.0.1", 443, "tcp")
    for day in range(5):
        b.add(key, Element(f"2024-01-0{day + 1}", DAY0 + day * DAY, "x", 1, 1, 1.0))
    b.prune(DAY0 + 5 * DAY, baseline_days=3, hold_time=30 * DAY)
    assert sorted(b.days[key]) == ["2024-01-03", "2024-01-04", "2024-01-05"]
    assert b.take_delta().pruned == [(key, "2024-01-01"), (key, "2024-01-02")]


def test_notice_suppression_per_key_and_note() -> None:
    rows = Rows()
    notices = Notices(rows)
    key = ("10.0.0.1", 443, "tcp", "example.com")
    assert notices.raise_notice("N::A", ts=0.0, msg="m", suppress_key=key, suppress_for=10800)
    assert not notices.raise_notice("N::A", ts=10799.0, msg="m", suppress_key=key, suppress_for=10800)
    assert notices.raise_notice("N::B", ts=1.0, msg="m", suppress_key=key, suppress_for=10800)
    assert notices.raise_notice("N::A", ts=2.0, msg="m", suppress_key=(*key[:3], "other"), suppress_for=10800)
    assert notices.raise_notice("N::A", ts=10800.0, msg="m", suppress_key=key, suppress_for=10800)
    assert len(rows.rows) == 4
    assert rows.rows[0]["actions"] == ["Notice::ACTION_LOG"] and rows.rows[0]["suppress_for"] == 10800
