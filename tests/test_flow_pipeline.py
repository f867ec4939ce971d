"""pipeline.run: records stream out as connections end, sinks see network time advance."""

from __future__ import annotations

import socket

import dpkt

from pcapexfil.pipeline import RunOptions, run
from pcapexfil.record import ConnRecord


def _udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = 8 + len(payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=dpkt.ip.IP_PROTO_UDP, ttl=64, data=udp)
    ip.len = len(bytes(ip))
    return bytes(dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip))


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, float | ConnRecord]] = []
        self.closed_at: float | None = None

    def on_record(self, rec: ConnRecord) -> None:
        self.events.append(("record", rec))

    def on_time(self, now: float) -> None:
        self.events.append(("time", now))

    def close(self, now: float) -> None:
        self.closed_at = now


def test_records_are_emitted_when_connections_time_out_not_at_the_end(tmp_path):
    # One UDP exchange at t=0, then a packet every 10 s for 5 minutes on another flow:
    # the first flow's record must come out after its 1-minute inactivity timeout.
    path = tmp_path / "stream.pcap"
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh)
        w.writepkt(_udp_frame("10.0.0.1", "10.0.0.2", 5000, 9999, b"q" * 10), ts=0.0)
        w.writepkt(_udp_frame("10.0.0.2", "10.0.0.1", 9999, 5000, b"r" * 20), ts=0.5)
        for i in range(1, 31):
            w.writepkt(_udp_frame("10.0.0.3", "10.0.0.4", 6000, 7000, b"x"), ts=10.0 * i)
    sink = Recorder()
    summary = run([str(path)], RunOptions(seed=1), [sink])
    assert summary.packets == 32 and summary.records == 2 and not summary.damaged
    kinds = [k for k, _ in sink.events]
    first_record = kinds.index("record")
    times_before = [v for k, v in sink.events[:first_record] if k == "time"]
    assert 60.0 <= max(times_before) < 300.0  # emitted mid-stream, after the timeout
    rec = sink.events[first_record][1]
    assert isinstance(rec, ConnRecord)
    assert (rec.orig_p, rec.resp_p, rec.conn_state, rec.orig_bytes, rec.resp_bytes) == (5000, 9999, "SF", 10, 20)
    times = [v for k, v in sink.events if k == "time"]
    assert all(b - a <= 10.0 + 1e-9 for a, b in zip(times, times[1:]))  # every packet second is seen
    assert sink.closed_at == 300.0


def test_weird_log_only_when_weirds_occur(tmp_path):
    path = tmp_path / "ok.pcap"
    with open(path, "wb") as fh:
        dpkt.pcap.Writer(fh).writepkt(_udp_frame("10.0.0.1", "10.0.0.2", 1, 2, b"x"), ts=1.0)
    out = tmp_path / "out"
    out.mkdir()
    summary = run([str(path)], RunOptions(out_dir=str(out)), [])
    assert summary.records == 1 and summary.weirds == {}
    assert not (out / "weird.log").exists()
