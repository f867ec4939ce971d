"""Builders shared by the detector tests (no tests here): a deterministic 16-day, multi-host
scenario made of ConnRecords, a feeder that drives a sink the way the pipeline does, and a
reader for the logs the detector writes."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from pcapexfil.detect.detector import Detector, Settings
from pcapexfil.detect.state import StateStore
from pcapexfil.record import ConnRecord

DAY = 86400.0
DAY0 = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC
SERVER = "93.184.216.34"
BULK_UID = "CBULK"
NEW_PORT_UID = "CNEWPORT"
HOSTS = {"10.0.0.1": 0, "10.0.0.2": 0, "10.0.0.3": 3}  # host -> first active day


def scenario(days: int = 16, seed: int = 7) -> list[ConnRecord]:
    """Ordinary HTTPS every ~2 h per host, one bulk upload (10.0.0.1, day 13) and one first-time
    port (10.0.0.2 → port 8022, day 14). Sorted by end time, as a flow table emits them."""
    rng = random.Random(seed)
    recs: list[ConnRecord] = []
    n = 0
    for day in range(days):
        for host, first in HOSTS.items():
            if day < first:
                continue
            for slot in range(12):
                ts = DAY0 + day * DAY + slot * 7200 + rng.uniform(0, 1800)
                n += 1
                recs.append(ConnRecord(
                    ts=ts, uid=f"C{n}", orig_h=host, orig_p=40000 + n % 20000, resp_h=SERVER, resp_p=443,
                    proto="tcp", duration=rng.uniform(1, 10), orig_bytes=10_000, resp_bytes=150_000,
                    orig_ip_bytes=int(rng.gauss(20_000, 3_000)), resp_ip_bytes=int(rng.gauss(200_000, 20_000)),
                    server_name="www.example.com"))
    recs.append(ConnRecord(
        ts=DAY0 + 13 * DAY + 10.2 * 3600, uid=BULK_UID, orig_h="10.0.0.1", orig_p=50000, resp_h=SERVER,
        resp_p=443, proto="tcp", duration=900.0, orig_bytes=499_000_000, resp_bytes=90_000,
        orig_ip_bytes=500_000_000, resp_ip_bytes=120_000, server_name="www.example.com"))
    recs.append(ConnRecord(
        ts=DAY0 + 14 * DAY + 5 * 3600, uid=NEW_PORT_UID, orig_h="10.0.0.2", orig_p=50001, resp_h="151.101.1.69",
        resp_p=8022, proto="tcp", duration=30.0, orig_bytes=5_000, resp_bytes=4_000,
        orig_ip_bytes=6_000, resp_ip_bytes=5_000))
    # Local and multicast destinations: never counted.
    recs.append(ConnRecord(ts=DAY0 + 3600, uid="CLOCAL", orig_h="10.0.0.1", orig_p=1, resp_h="10.9.9.9",
                           resp_p=443, proto="tcp", duration=1.0, orig_ip_bytes=10**9, resp_ip_bytes=10))
    recs.append(ConnRecord(ts=DAY0 + 3600, uid="CMCAST", orig_h="10.0.0.1", orig_p=5353, resp_h="224.0.0.251",
                           resp_p=5353, proto="udp", duration=1.0, orig_ip_bytes=10**9, resp_ip_bytes=10))
    recs.sort(key=lambda r: (r.ts + (r.duration or 0.0), r.uid))
    return recs


def end_time(rec: ConnRecord) -> float:
    return rec.ts + (rec.duration or 0.0)


def split_by_day(recs: list[ConnRecord]) -> list[list[ConnRecord]]:
    out: dict[int, list[ConnRecord]] = {}
    for r in recs:
        out.setdefault(int((end_time(r) - DAY0) // DAY), []).append(r)
    return [out[k] for k in sorted(out)]


def feed(det: Detector, recs: Iterable[ConnRecord], close: bool = True) -> float:
    """Drive a sink as the pipeline does: time advances, then the record; close at the end."""
    now = 0.0
    for r in recs:
        now = max(now, end_time(r))
        det.on_time(now)
        det.on_record(r)
    if close:
        det.close(now)
    return now


def run_detector(recs: list[ConnRecord], out_dir: Path, state: Path | None = None,
                 settings: Settings | None = None) -> Detector:
    out_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore(str(state)) if state is not None else None
    det = Detector(settings or Settings(), out_dir=str(out_dir), store=store)
    feed(det, recs)
    if store is not None:
        store.close()
    return det


def read_log(path: Path) -> list[dict[str, str]]:
    """Rows of a TSV Zeek log as dicts of raw strings."""
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


def data_lines(path: Path) -> list[str]:
    """Every line except #open/#close (they carry the wall clock)."""
    return [ln for ln in path.read_text().splitlines() if not ln.startswith(("#open", "#close"))]


def child_main(db: str, delay: float) -> None:
    """Subprocess body for the kill test: feed the scenario day by day, announcing each day."""
    store = StateStore(db)
    det = Detector(Settings(), out_dir=None, store=store)
    now = 0.0
    for i, day in enumerate(split_by_day(scenario())):
        now = feed(det, day, close=False)
        print(f"day {i}", flush=True)
        time.sleep(delay)
    det.close(now)
    print("done", flush=True)


if __name__ == "__main__":
    child_main(sys.argv[1], float(sys.argv[2]))
