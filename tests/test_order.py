"""pcapexfil.order: what a run releases at each tick, and in which order."""

from __future__ import annotations

from record_sink import RecordCollector

from pcapexfil.order import Epochs
from pcapexfil.record import ConnRecord


class _Log:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.closed = False

    def write(self, row) -> None:
        self.rows.append(row)

    def close(self) -> None:
        self.closed = True


class _Ticks(RecordCollector):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []

    def on_record(self, rec: ConnRecord) -> None:
        super().on_record(rec)
        self.calls.append(rec.uid)

    def on_time(self, now: float) -> None:
        self.calls.append(("time", now))

    def close(self, now: float) -> None:
        self.calls.append(("close", now))


def _rec(ts: float, uid: str) -> ConnRecord:
    return ConnRecord(ts=ts, uid=uid, orig_h="10.0.0.1", orig_p=1, resp_h="10.0.0.2", resp_p=2, proto="tcp")


def test_each_epoch_is_released_sorted_at_its_tick():
    sink, target = _Ticks(), _Log()
    epochs = Epochs([sink])
    log = epochs.log("ssl", target, [])
    for ts, uid in ((5.0, "Cb"), (3.0, "Cz"), (5.0, "Ca")):
        epochs.on_record(_rec(ts, uid))
    log.write({"ts": 2.0, "uid": "Cz", "n": 1})
    log.write({"ts": 1.0, "uid": "Cb", "n": 2})
    log.write({"ts": 2.0, "uid": "Cz", "n": 3})
    assert sink.calls == [] and target.rows == []  # held until the tick
    epochs.on_time(6.0)
    assert sink.calls == ["Cz", "Ca", "Cb", ("time", 6.0)]  # start time, then uid
    assert [r["n"] for r in target.rows] == [2, 1, 3]  # ts, uid, then their own order
    epochs.on_record(_rec(1.0, "Cy"))
    epochs.close(7.0)
    assert sink.calls[-2:] == ["Cy", ("close", 7.0)] and target.closed


def test_a_flood_is_released_early_without_a_tick():
    sink = _Ticks()
    epochs = Epochs([sink], limit=3)
    for k in range(7):
        epochs.on_record(_rec(10.0 - k, f"C{k}"))
    assert sink.calls == ["C2", "C1", "C0", "C5", "C4", "C3"]  # two releases of three, each sorted
    epochs.on_time(11.0)
    assert sink.calls[-2:] == ["C6", ("time", 11.0)]
