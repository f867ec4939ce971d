"""Differential test: the fast engine and the reference engine write the same logs.

Every Zeek corpus case (with the flags its Zeek run used) and every fixture capture runs
through `pipeline.run` twice, `engine="reference"` and `engine="fast"`; the connection
records (uids included, seeded) must be equal and in the same order, interleaved with the
sinks' time ticks in the same order, and conn.log,
ssl.log, http.log and dns.log identical line for line (headers aside). weird.log holds the
same rows, compared as a multiset: the fast engine reports the flow table's weirds when
it replays a batch, after the decoder's weirds of the same batch.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from record_sink import RecordCollector
from test_zeek_corpus import CORPUS, cases

from pcapexfil.pipeline import ConnLogSink, RunOptions, run
from pcapexfil.source import CaptureError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
ORDERED_LOGS = ("conn.log", "ssl.log", "http.log", "dns.log")


def _rows(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [line for line in fh if not line.startswith("#")]


class _Calls(RecordCollector):
    """Records and time ticks in the order a sink hears of them (the detector's view)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def on_record(self, rec) -> None:
        super().on_record(rec)
        self.calls.append(("record", rec.uid))

    def on_time(self, now: float) -> None:
        self.calls.append(("time", now))

    def close(self, now: float) -> None:
        self.calls.append(("close", now))


def _run(paths: list[str], out: str, engine: str, **kw) -> tuple[object, _Calls]:
    os.makedirs(out, exist_ok=True)
    sink = _Calls()
    opts = RunOptions(out_dir=out, seed=11, engine=engine, **kw)  # type: ignore[arg-type]
    summary = run(paths, opts, [sink, ConnLogSink(out)])
    return summary, sink


def assert_same(paths: list[str], tmp_path, **kw) -> int:
    ref_dir, fast_dir = str(tmp_path / "reference"), str(tmp_path / "fast")
    try:
        ref_summary, ref = _run(paths, ref_dir, "reference", **kw)
    except CaptureError as exc:
        with pytest.raises(CaptureError) as info:
            _run(paths, fast_dir, "fast", **kw)
        assert str(info.value) == str(exc)
        return 0
    fast_summary, got = _run(paths, fast_dir, "fast", **kw)
    assert got.records == ref.records
    assert got.calls == ref.calls
    assert fast_summary == ref_summary
    for name in ORDERED_LOGS:
        assert _rows(os.path.join(fast_dir, name)) == _rows(os.path.join(ref_dir, name)), name
    assert Counter(_rows(os.path.join(fast_dir, "weird.log"))) == Counter(_rows(os.path.join(ref_dir, "weird.log")))
    return len(ref.records)


CASES = cases()


@pytest.mark.parametrize("case,trace,flags", CASES, ids=[c[0] for c in CASES])
def test_corpus_case(case, trace, flags, tmp_path):
    assert_same([os.path.join(CORPUS, case, trace)], tmp_path, verify_checksums="-C" not in flags.split(),
                local_nets=())


def test_corpus_has_connections(tmp_path):
    """The comparison above is not vacuous: real Zeek logged 359 connections for the corpus."""
    total = 0
    for case, trace, flags in CASES:
        total += assert_same([os.path.join(CORPUS, case, trace)], tmp_path / case, local_nets=(),
                             verify_checksums="-C" not in flags.split())
    assert total > 300


EXAMPLE = sorted(os.listdir(os.path.join(FIXTURES, "example")))
DAYS = [os.path.join(FIXTURES, "example", f) for f in EXAMPLE if f.endswith(".pcap.gz")]


def test_example_days_with_identifiers(tmp_path):
    n = assert_same(DAYS[:3], tmp_path)
    assert n > 50
    for name in ("ssl.log", "http.log", "dns.log"):
        assert _rows(os.path.join(tmp_path, "fast", name)), f"{name} empty: identifiers not exercised"


def test_example_day_checksums_and_small_table(tmp_path):
    """Everything through the reference decoder (checksums), and evictions at a small cap."""
    assert_same(DAYS[3:4], tmp_path / "chk", verify_checksums=True)
    assert_same(DAYS[4:5], tmp_path / "cap", max_flows=5)


BAD = sorted(os.listdir(os.path.join(FIXTURES, "bad")))


@pytest.mark.parametrize("name", [b for b in BAD if not b.endswith((".md", ".py"))])
def test_bad_fixtures(name, tmp_path):
    assert_same([os.path.join(FIXTURES, "bad", name)], tmp_path)
