"""A record sink that keeps every connection record, for tests that inspect them."""

from __future__ import annotations

from pcapexfil.record import ConnRecord


class RecordCollector:
    def __init__(self) -> None:
        self.records: list[ConnRecord] = []

    def on_record(self, rec: ConnRecord) -> None:
        self.records.append(rec)

    def on_time(self, now: float) -> None:
        pass

    def close(self, now: float) -> None:
        pass
