"""weird.log sampling: Zeek's PermitWeird, checked with the scenario of Zeek's own
weird-sampling btest (threshold 10, rate 10, duration 5 s; 30 weirds at 0 s, 2 s and 7 s
give 12 + 3 + 12 logged), and what pcapexfil adds around it."""

from __future__ import annotations

from typing import Any

import pytest

from pcapexfil import weird
from pcapexfil.weird import Weirds


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)


@pytest.fixture
def zeek_btest_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weird, "SAMPLING_THRESHOLD", 10)
    monkeypatch.setattr(weird, "SAMPLING_RATE", 10)
    monkeypatch.setattr(weird, "SAMPLING_DURATION", 5.0)


def burst(w: Weirds, ts: float, uid: str | None, name: str = "my_weird", n: int = 30) -> None:
    for _ in range(n):
        w.report(name, ts, uid=uid, conn_id=("10.0.0.1", 1, "10.0.0.2", 2) if uid else None)


@pytest.mark.parametrize("uid", ["Cconn1", None], ids=["conn weird", "net weird"])
def test_zeek_btest_scenario(zeek_btest_settings: None, uid: str | None) -> None:
    rows = Rows()
    w = Weirds(rows)  # type: ignore[arg-type]
    logged = []
    for ts in (0.0, 2.0, 7.0):
        before = len(rows.rows)
        burst(w, ts, uid)
        logged.append(len(rows.rows) - before)
    assert logged == [12, 3, 12]
    assert w.counts["my_weird"] == 90 and w.sampled_out == 90 - 27


def test_each_connection_and_name_is_sampled_on_its_own(zeek_btest_settings: None) -> None:
    rows = Rows()
    w = Weirds(rows)  # type: ignore[arg-type]
    burst(w, 0.0, "Ca")
    burst(w, 0.0, "Cb")
    burst(w, 0.0, "Ca", name="other")
    assert len(rows.rows) == 3 * 12
    assert {(r["uid"], r["name"]) for r in rows.rows} == {("Ca", "my_weird"), ("Cb", "my_weird"), ("Ca", "other")}


def test_default_settings_are_zeeks() -> None:
    rows = Rows()
    w = Weirds(rows)  # type: ignore[arg-type]
    burst(w, 0.0, "Cflood", n=5000)
    # 25, then every 1000th beyond them: occurrences 1025, 2025, 3025, 4025.
    assert len(rows.rows) == 25 + 4
    burst(w, 601.0, "Cflood", n=1)  # more than 10 minutes after sampling began: a fresh count
    assert len(rows.rows) == 30


def test_sampling_states_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weird, "MAX_SAMPLING_STATES", 10)
    w = Weirds(Rows())  # type: ignore[arg-type]
    for k in range(1000):
        w.report("w", 0.0, uid=f"C{k}")
    assert len(w._conn_states) <= 10
    assert w.counts["w"] == 1000
