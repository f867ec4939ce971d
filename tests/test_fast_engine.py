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


REAL_CUT = os.path.join(FIXTURES, "real-cut", "real-cut.pcap.gz")


def test_real_traffic_cut(tmp_path):
    """Real programs (nginx, curl, dnsmasq; fixtures/make_real_cut.py): plain HTTP, TLS
    1.2 and 1.3 and DNS as they really come, bodies the kernel counts included."""
    n = assert_same([REAL_CUT], tmp_path)
    assert n > 400
    for name in ("ssl.log", "http.log", "dns.log"):
        assert len(_rows(os.path.join(tmp_path, "fast", name))) > 50, name


BAD = sorted(os.listdir(os.path.join(FIXTURES, "bad")))


@pytest.mark.parametrize("name", [b for b in BAD if not b.endswith((".md", ".py"))])
def test_bad_fixtures(name, tmp_path):
    assert_same([os.path.join(FIXTURES, "bad", name)], tmp_path)


def test_multiple_files_out_of_order_and_overlapping(tmp_path):
    assert_same([DAYS[1], DAYS[0]], tmp_path / "order")
    assert_same([DAYS[0], DAYS[0]], tmp_path / "overlap")


def _interleaved_capture(path) -> None:
    """Thousands of concurrent TCP flows (handshake, request, close) interleaved packet by
    packet, DNS over UDP, and fragmented datagrams in between (reference-decoder frames)."""
    import random

    from helpers_pcap import ether, ipv4, ipv4_fragments, tcp, udp, write_pcap

    rng = random.Random(5)
    frames: list[tuple[float, bytes]] = []
    t = 1_700_000_000.0
    flows = 3000
    steps = []
    for k in range(flows):
        c, s = f"10.1.{k // 250}.{k % 250 + 1}", f"192.0.2.{k % 7 + 1}"
        cp, isn, ssn = 20000 + k, rng.randrange(1 << 32), rng.randrange(1 << 32)
        req = b"GET / HTTP/1.1\r\nHost: h%d.example\r\n\r\n" % k
        steps.append([
            ipv4(tcp(cp, 80, 0x02, isn), c, s),
            ipv4(tcp(80, cp, 0x12, ssn, isn + 1), s, c),
            ipv4(tcp(cp, 80, 0x10, isn + 1, ssn + 1), c, s),
            ipv4(tcp(cp, 80, 0x18, isn + 1, ssn + 1, req), c, s),
            ipv4(tcp(80, cp, 0x18, ssn + 1, isn + 1 + len(req), b"HTTP/1.1 200 OK\r\n\r\n"), s, c),
            ipv4(tcp(cp, 80, 0x11, isn + 1 + len(req), ssn + 20), c, s),
            ipv4(tcp(80, cp, 0x11, ssn + 20, isn + 2 + len(req)), s, c),
        ])
    live = list(range(flows))
    while live:
        k = rng.choice(live)
        frames.append((t, ether(steps[k].pop(0))))
        if not steps[k]:
            live.remove(k)
        t += rng.choice([0.0001, 0.001, 0.01])
        if rng.random() < 0.01:
            q = udp(40000 + len(frames) % 1000, 53, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01")
            frames.append((t, ether(ipv4(q, "10.1.0.9", "192.0.2.53"))))
        if rng.random() < 0.002:
            big = ipv4(udp(5000, 6000, b"z" * 3000), "10.1.0.7", "192.0.2.9", ident=len(frames) % 65536)
            frames.extend((t, ether(f)) for f in ipv4_fragments(big, 1480))
    write_pcap(path, frames)


def test_interleaved_flows_fragments_and_evictions(tmp_path):
    cap = tmp_path / "interleaved.pcap"
    _interleaved_capture(cap)
    n = assert_same([str(cap)], tmp_path / "all")
    assert n >= 3000
    assert_same([str(cap)], tmp_path / "cap", max_flows=200)
    summary, _ = _run([str(cap)], str(tmp_path / "cap-fast"), "fast", max_flows=200)
    assert summary.weirds.get("flow_table_full_evicted", 0) > 0  # the cap was reached
    assert _rows(str(tmp_path / "all" / "fast" / "http.log"))  # the analyzers saw the requests
