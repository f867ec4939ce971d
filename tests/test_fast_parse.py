"""Fast reader + numba parser against the reference source and decoder.

Differential: every frame the kernel marks KIND_FAST must be exactly what the reference
`Decoder` makes of it (one packet, no weird, same columns and payload bytes); KIND_SKIP
frames must be ones the reference drops silently; KIND_SLOW frames go to the reference
anyway (their share is printed). The stream itself (order, timestamps, frame numbers,
capture weirds) must equal `source.open_captures`.
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import dpkt
import numpy as np
import pytest
from helpers_pcap import (
    ether,
    ipv4,
    ipv4_fragments,
    ipv6,
    ipv6_fragments,
    tcp,
    udp,
    vlan_tags,
    write_pcap,
    write_pcapng,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapexfil.decode import Decoder
from pcapexfil.fast.batch import (
    KIND_FAST,
    KIND_SKIP,
    KIND_SLOW,
    PACKET_DTYPE,
    packets_to_batch,
)
from pcapexfil.fast.reader import iter_batches, iter_chunks
from pcapexfil.source import CaptureError, CaptureStats, open_captures
from pcapexfil.weird import Weirds

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "fixtures" / "bad"
CORPUS = ROOT.parent / "shared" / "zeek-corpus"
COMPARED = [name for name in PACKET_DTYPE.names if name != "payload_off"]
# Reported by the fragment reassembler's expiry, which runs on whatever frame comes next.
_STATEFUL_WEIRDS = {"fragment_buffer_full"}


def corpus_traces() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.glob("*/*") if p.suffix != ".log" and p.is_file())


class WeirdRows:
    """A weird.log stand-in: keeps every row, to compare names, times and messages."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def write(self, row: dict) -> None:
        self.rows.append((row["name"], row["ts"], row["addl"]))


def differential(paths: list[str], chunk_bytes: int = 1 << 20, verify: bool = False) -> Counter[str]:
    """Check iter_batches against open_captures + Decoder frame by frame; kind counts."""
    fast_log, ref_log = WeirdRows(), WeirdRows()
    fast_w, ref_w = Weirds(fast_log), Weirds(ref_log)  # type: ignore[arg-type]
    ref = open_captures(paths, ref_w)
    dec_w = Weirds()
    dec = Decoder(dec_w, verify_checksums=verify)
    kinds: Counter[str] = Counter()
    for batch in iter_batches(paths, fast_w, chunk_bytes=chunk_bytes, verify_checksums=verify):
        slow = iter(batch.slow)
        for row in batch.packets:
            raw = next(ref)
            assert (row["ts"], int(row["frame"])) == (raw.ts, raw.index)
            before = dec_w.counts.copy()
            out = dec.decode(raw)
            new = {k for k, v in (dec_w.counts - before).items() if v} - _STATEFUL_WEIRDS
            kind = int(row["kind"])
            where = f"{raw.source}#{raw.index}"
            if kind == KIND_FAST:
                kinds["fast"] += 1
                assert len(out) == 1 and not new, (where, out, new)
                assert out[0].checksum_ok is not False, where
                want = packets_to_batch(out, frame=raw.index)[0]
                for col in COMPARED:
                    assert row[col] == want[col], (where, col, row[col], want[col])
                off, cap = int(row["payload_off"]), int(row["payload_cap"])
                assert batch.buf[off : off + cap].tobytes() == out[0].payload, where
            elif kind == KIND_SKIP:
                kinds["skip"] += 1
                assert out == [] and not new, (where, out, new)
            else:
                assert kind == KIND_SLOW
                kinds["slow"] += 1
                got = next(slow)
                assert (got.ts, got.linktype, got.data, got.wirelen, got.index) == (
                    raw.ts, raw.linktype, raw.data, raw.wirelen, raw.index,
                ), where
        assert next(slow, None) is None
    assert next(ref, None) is None
    assert fast_log.rows == ref_log.rows
    return kinds


@pytest.mark.skipif(not corpus_traces(), reason="shared zeek corpus not present")
@pytest.mark.parametrize("verify", [False, True])
def test_corpus_differential(verify: bool) -> None:
    total: Counter[str] = Counter()
    for trace in corpus_traces():
        total += differential([str(trace)], verify=verify)
    n = sum(total.values())
    print(f"\ncorpus (verify_checksums={verify}): {n} frames, fast {total['fast'] / n:.1%}, "
          f"slow {total['slow'] / n:.1%}, skip {total['skip'] / n:.1%}")
    assert total["fast"] > 0.5 * n  # the corpus is mostly plain TCP/UDP over Ethernet


@pytest.mark.parametrize("name", ["huge-caplen.pcap", "short-packets.pcap", "truncated-record.pcap",
                                  "truncated.pcap.gz", "truncated.pcapng"])
def test_bad_fixtures_differential(name: str) -> None:
    kinds = differential([str(BAD / name)], chunk_bytes=64)
    assert sum(kinds.values()) > 0


@pytest.mark.parametrize("name", ["empty.pcap", "garbage.bin", "short-header.pcap", "unknown-linktype.pcap"])
def test_bad_paths_raise_before_any_batch(name: str) -> None:
    with pytest.raises(CaptureError) as exc:
        iter_batches([str(BAD / name)], Weirds())
    assert name in str(exc.value)


# ---- handcrafted frames: each shape the kernel claims, and the ones it must hand over ----

V4_TCP = ipv4(tcp(sport=40000, dport=443, flags=0x18, seq=7, ack=9, data=b"hello"), src="192.0.2.1",
              dst="198.51.100.7", ttl=33)
V4_OPTS = ipv4(tcp(data=b"x" * 3), opts=b"\x01\x01\x01\x00")
V4_UDP = ipv4(udp(sport=5000, dport=53, data=b"q" * 12))
V4_ICMP = ipv4(dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(id=1, seq=2, data=b"ping")))
V4_OTHER = ipv4(b"\x00" * 12, p=132)  # SCTP: no ports, whole payload
V6_UDP = ipv6(udp(sport=5000, dport=53, data=b"q" * 12))
V6_TCP = ipv6(tcp(sport=1, dport=2, data=b"abc"))
HOP = struct.pack("!BB6x", 6, 0)  # hop-by-hop, next = TCP, 8 bytes
DST = struct.pack("!BB6x", 17, 0)
ROUTE_DONE = struct.pack("!BBBB4x", 6, 2, 0, 0) + b"\x00" * 16  # type 0, no segments left
V6_EXT = ipv6(tcp(sport=3, dport=4), ext=HOP, first_nxt=0, nxt=6)
V6_DST = ipv6(udp(sport=7, dport=8), ext=DST, first_nxt=60, nxt=17)
V6_ROUTE = ipv6(tcp(sport=3, dport=4), ext=ROUTE_DONE, first_nxt=43, nxt=6)
ROUTE_LIVE = struct.pack("!BBBB4x", 6, 2, 0, 1) + bytes(range(16))  # the reference rewrites dst
V6_ROUTE_LIVE = ipv6(tcp(sport=3, dport=4), ext=ROUTE_LIVE, first_nxt=43, nxt=6)
V6_NONEXT = ipv6(b"", nxt=59)
MPLS = struct.pack("!I", (100 << 12) | (1 << 8) | 64)
PPPOE = struct.pack("!BBHH", 0x11, 0, 1, len(V4_TCP) + 2) + b"\x00\x21"
ARP = b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20
VXLAN = ipv4(udp(sport=1111, dport=4789, data=b"\x08\x00\x00\x00\x00\x00\x01\x00" + ether(V4_TCP)))
GRE = ipv4(b"\x00\x00\x08\x00" + V4_TCP, p=47)
IPIP = ipv4(V4_TCP, p=4)
ESP = ipv4(b"\x00" * 16, p=50)


def _eth_frames() -> list[bytes]:
    et2, tagged2 = vlan_tags([10, 20], 0x0800, V4_TCP)
    et1, tagged1 = vlan_tags([30], 0x86DD, V6_TCP)
    frag1, frag2 = ipv4_fragments(ipv4(udp(data=b"z" * 64)), 40)
    v6f1, v6f2 = ipv6_fragments(ipv6(udp(data=b"z" * 64)), 40)
    bad_len = bytearray(V4_TCP)
    struct.pack_into("!H", bad_len, 2, 400)  # claims more than the wire holds
    zero_len = bytearray(V4_TCP)
    struct.pack_into("!H", zero_len, 2, 0)  # TSO
    bad_off = bytearray(V4_TCP)
    bad_off[20 + 12] = 0xF0  # TCP data offset beyond the segment
    udp_len = bytearray(V4_UDP)
    struct.pack_into("!H", udp_len, 24, 12)  # UDP length disagrees with IP
    llc = b"\x42\x42\x03" + b"\x00" * 40  # STP
    snap = b"\xaa\xaa\x03\x00\x00\x00\x08\x00" + V4_UDP
    return [
        ether(V4_TCP), ether(V4_OPTS), ether(V4_UDP), ether(V4_ICMP), ether(V4_OTHER),
        ether(V6_UDP), ether(V6_EXT), ether(V6_DST), ether(V6_ROUTE), ether(V6_ROUTE_LIVE), ether(V6_NONEXT),
        ether(tagged2, et2), ether(tagged1, et1), ether(MPLS + V4_UDP, 0x8847), ether(PPPOE + V4_TCP, 0x8864),
        ether(ARP, 0x0806), ether(VXLAN), ether(GRE), ether(IPIP), ether(ESP),
        ether(frag1), ether(frag2), ether(v6f1), ether(v6f2),
        ether(bytes(bad_len)), ether(bytes(zero_len)), ether(bytes(bad_off)), ether(bytes(udp_len)),
        ether(V4_TCP)[:30], ether(V4_TCP)[:10], struct.pack("!6s6sH", b"", b"", len(llc)) + llc,
        ether(b"", 0x0800), struct.pack("!6s6sH", b"a" * 6, b"b" * 6, len(snap)) + snap,
        ether(b"\x70" + V4_TCP[1:]),  # IP version 7
    ]


def _frames(frames: list[bytes], t0: float = 1_600_000_000.0) -> list[tuple[float, bytes]]:
    return [(t0 + i * 0.001234567, f) for i, f in enumerate(frames)]


def test_handcrafted_ethernet(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "eth.pcap", _frames(_eth_frames()))
    kinds = differential([str(path)], chunk_bytes=256)
    assert kinds["fast"] >= 13 and kinds["skip"] >= 3 and kinds["slow"] >= 10


def test_handcrafted_other_link_types(tmp_path: Path) -> None:
    ip_frames = [V4_TCP, V4_UDP, V6_UDP, V6_EXT, V4_ICMP]
    cases = {
        101: ip_frames,
        228: ip_frames[:2],
        229: [V6_UDP, V6_TCP],
        113: [struct.pack("!HHH8sH", 0, 1, 6, b"", 0x0800) + f for f in ip_frames[:2]]
        + [struct.pack("!HHH8sH", 0, 1, 6, b"", 0x0806) + ARP, b"\x00" * 10],
        276: [struct.pack("!HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, b"") + V6_UDP,
              struct.pack("!HHIHBB8s", 0x8100, 0, 2, 1, 0, 6, b"") + struct.pack("!HH", 5, 0x0800) + V4_TCP],
        0: [struct.pack("<I", 2) + V4_TCP, struct.pack("<I", 30) + V6_UDP, struct.pack("<I", 7) + V4_TCP],
        108: [struct.pack(">I", 2) + V4_UDP, struct.pack(">I", 24) + V6_TCP, b"\x00\x00"],
        9: [b"\xff\x03\x00\x21" + V4_TCP],  # PPP: not on the fast path
    }
    for linktype, frames in cases.items():
        path = write_pcap(tmp_path / f"lt{linktype}.pcap", _frames(frames), linktype=linktype)
        kinds = differential([str(path)])
        assert sum(kinds.values()) == len(frames)
        if linktype != 9:
            assert kinds["fast"] >= 2, linktype


def test_snap_truncated_frames_are_fast_with_claimed_lengths(tmp_path: Path) -> None:
    big = ether(ipv4(tcp(data=b"d" * 1000)))
    path = write_pcap(tmp_path / "snap.pcap", [(1.0, big[:96])], snaplen=96, wirelens=[len(big)])
    differential([str(path)])
    (batch,) = iter_batches([str(path)], Weirds())
    row = batch.packets[0]
    assert row["kind"] == KIND_FAST and row["payload_len"] == 1000 and row["payload_cap"] == 96 - 54


def _bad_sums() -> list[bytes]:
    """Frames whose IP, TCP, UDP, ICMP or ICMPv6 checksum is wrong, and ones that pass."""
    out = []
    for good, at in ((V4_TCP, 10), (V4_TCP, 20 + 16), (V4_UDP, 20 + 6), (V4_ICMP, 20 + 2), (V6_UDP, 40 + 6),
                     (V6_TCP, 40 + 16), (ipv6(dpkt.icmp6.ICMP6(type=128, code=0, data=b"\0" * 8)), 40 + 2)):
        bad = bytearray(good)
        bad[at] ^= 0x5A
        out += [ether(good), ether(bytes(bad))]
    zero = bytearray(V4_UDP)
    zero[26:28] = b"\0\0"  # no UDP checksum over IPv4: accepted
    odd = ipv4(udp(sport=9, dport=10, data=b"odd"))
    return [*out, ether(bytes(zero)), ether(odd), ether(V4_OPTS), ether(V4_OTHER)]


def test_verify_checksums(tmp_path: Path) -> None:
    frames = _bad_sums()
    path = write_pcap(tmp_path / "v.pcap", _frames(frames + _eth_frames()))
    kinds = differential([str(path)], verify=True)
    assert kinds["fast"] >= 11 + 13 and kinds["slow"] >= 7
    # snap-truncated: the transport sum cannot be checked, the packet is kept (FAST)
    big = ether(ipv4(tcp(data=b"d" * 1000)))
    snap = write_pcap(tmp_path / "snap.pcap", [(1.0, big[:96])], snaplen=96, wirelens=[len(big)])
    assert differential([str(snap)], verify=True)["fast"] == 1


# ---- reader: formats, chunk boundaries, damage, several files ---------------------------

def _tcp_frames(n: int, t0: float = 1_700_000_000.0, step: float = 0.000001237) -> list[tuple[float, bytes]]:
    return [(t0 + i * step, ether(ipv4(tcp(sport=1000 + i, seq=i, data=b"p" * (i % 97))))) for i in range(n)]


@pytest.mark.parametrize(("nano", "big"), [(True, True), (True, False), (False, True)])
def test_nanosecond_and_big_endian(tmp_path: Path, nano: bool, big: bool) -> None:
    frames = _tcp_frames(50)
    path = write_pcap(tmp_path / "x.pcap", frames, nano=nano, big_endian=big)
    kinds = differential([str(path)], chunk_bytes=300)
    assert kinds["fast"] == 50
    ts = np.concatenate([b.packets["ts"] for b in iter_batches([str(path)], Weirds())])
    # exact network time as the file stores it (nanoseconds survive in the float as the reference's)
    want = [round((t - int(t)) * (1e9 if nano else 1e6)) for t, _ in frames]
    got = [round((t - int(t)) * (1e9 if nano else 1e6)) for t in ts]
    assert got == want


@pytest.mark.parametrize("chunk_bytes", [17, 64, 1000, 1 << 20])
def test_gzip_records_straddle_chunks(tmp_path: Path, chunk_bytes: int) -> None:
    frames = _tcp_frames(300)
    plain = write_pcap(tmp_path / "p.pcap", frames)
    gz = write_pcap(tmp_path / "p.pcap.gz", frames, compress=True)
    kinds = differential([str(gz)], chunk_bytes=chunk_bytes)
    assert kinds["fast"] == 300
    a = np.concatenate([b.packets for b in iter_batches([str(plain)], Weirds(), chunk_bytes=chunk_bytes)])
    b = np.concatenate([b.packets for b in iter_batches([str(gz)], Weirds(), chunk_bytes=chunk_bytes)])
    assert (a[COMPARED] == b[COMPARED]).all()
    if chunk_bytes < 200:
        assert len(list(iter_chunks([str(gz)], Weirds(), chunk_bytes=chunk_bytes))) > 10


def test_damaged_gzip_stream(tmp_path: Path) -> None:
    # Incompressible payloads, so the damage lies well past the reference's 1 MiB read-ahead.
    rng = np.random.default_rng(1)
    frames = [(1.0 + i, ether(ipv4(tcp(seq=i, data=rng.bytes(1200))))) for i in range(2500)]
    blob = write_pcap(tmp_path / "t.pcap.gz", frames, compress=True).read_bytes()
    cut = tmp_path / "cut.pcap.gz"
    cut.write_bytes(blob[: len(blob) * 2 // 3])
    w = Weirds()
    n = sum(len(b.packets) for b in iter_batches([str(cut)], w, chunk_bytes=100_000))
    assert 0 < n < 2500 and w.counts["truncated_capture_file"] == 1
    for pos in (len(blob) // 2, len(blob) - 10):  # a flipped byte mid-stream; in the CRC trailer
        bad = bytearray(blob)
        bad[pos] ^= 0xFF
        flipped = tmp_path / "flipped.pcap.gz"
        flipped.write_bytes(bytes(bad))
        for path in (cut, flipped):
            for chunk_bytes in (100_000, 8 << 20):  # the same records kept whatever the window
                same_as_reference(str(path), chunk_bytes)


def test_truncated_and_corrupt_tails(tmp_path: Path) -> None:
    good = write_pcap(tmp_path / "g.pcap", _tcp_frames(10)).read_bytes()
    cases = {
        "mid-data.pcap": good[:-5],
        "mid-header.pcap": good + b"\x01\x02\x03",
        "corrupt.pcap": good + struct.pack("<IIII", 1, 0, 50_000_000, 60) + b"x" * 100,
    }
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        w = Weirds()
        rows = np.concatenate([b.packets for b in iter_batches([str(p)], w, chunk_bytes=100)])
        want = 9 if name == "mid-data.pcap" else 10
        assert len(rows) == want, name
        assert sum(w.counts.values()) == 1
        differential([str(p)], chunk_bytes=100)


def test_record_larger_than_chunk(tmp_path: Path) -> None:
    frames = [(1.0, ether(ipv4(tcp(data=b"j" * 8000)))), (2.0, ether(V4_UDP))]
    path = write_pcap(tmp_path / "jumbo.pcap", frames)
    kinds = differential([str(path)], chunk_bytes=64)
    assert kinds["fast"] == 2


def test_pcapng_interfaces(tmp_path: Path) -> None:
    frames = [(10.0 + i * 0.5, ether(V4_TCP) if i % 2 == 0 else V6_UDP, i % 2) for i in range(6)]
    path = write_pcapng(tmp_path / "m.pcapng", frames, interfaces=[(1, 9), (101, 6)])
    kinds = differential([str(path)], chunk_bytes=100)
    assert kinds["fast"] == 6
    gz = write_pcapng(tmp_path / "m.pcapng.gz", frames, interfaces=[(1, 0x80 | 20), (101, 6)], compress=True)
    assert differential([str(gz)])["fast"] == 6


@pytest.mark.parametrize("d_start", [150.0, 100.2, 200.0])  # apart, overlapping a pcap, tying b's start
def test_several_files_concatenated_and_merged(tmp_path: Path, d_start: float) -> None:
    a = write_pcap(tmp_path / "a.pcap", _tcp_frames(40, t0=100.0, step=0.01))
    b = write_pcap(tmp_path / "b.pcap.gz", _tcp_frames(40, t0=200.0, step=0.01), compress=True)
    c = write_pcap(tmp_path / "c.pcap", _tcp_frames(40, t0=200.205, step=0.01), nano=True)  # overlaps b
    d = write_pcapng(tmp_path / "d.pcapng", [(t, f, 0) for t, f in _tcp_frames(10, t0=d_start, step=0.05)])
    e = write_pcap(tmp_path / "e.pcap", [])
    paths = [str(p) for p in (c, e, b, d, a)]
    kinds = differential(paths, chunk_bytes=700)
    assert kinds["fast"] == 130
    stats = CaptureStats()
    n = sum(len(x.packets) for x in iter_batches(paths, Weirds(), stats, chunk_bytes=700))
    assert n == stats.packets == 130
    assert stats.files[str(a)].packets == 40 and stats.files[str(d)].packets == 10


def test_stats_match_reference(tmp_path: Path) -> None:
    frames = _tcp_frames(33)
    paths = [write_pcap(tmp_path / "s.pcap.gz", frames, compress=True), write_pcap(tmp_path / "s.pcap", frames),
             write_pcapng(tmp_path / "s.pcapng", [(t, f, 0) for t, f in frames])]
    for path in paths:
        fast, ref = CaptureStats(), CaptureStats()
        list(iter_batches([str(path)], Weirds(), fast, chunk_bytes=100))
        list(open_captures([str(path)], Weirds(), ref))
        assert (fast.packets, fast.bytes, fast.input_bytes) == (ref.packets, ref.bytes, ref.input_bytes), path
        assert fast.files == ref.files


# ---- mutated frames: the kernel's FAST/SKIP verdicts hold on damaged headers too --------

def _pool() -> list[tuple[int, bytes]]:
    sll = struct.pack("!HHH8sH", 0, 1, 6, b"", 0x0800)
    sll2 = struct.pack("!HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, b"")
    et, tagged = vlan_tags([10, 20], 0x86DD, V6_EXT)
    return (
        [(1, f) for f in _eth_frames()] + [(1, ether(tagged, et))]
        + [(101, f) for f in (V4_TCP, V4_OPTS, V6_ROUTE, V6_DST, V4_ICMP)]
        + [(113, sll + V4_UDP), (276, sll2 + V6_TCP), (0, struct.pack("<I", 2) + V4_TCP),
           (108, struct.pack(">I", 24) + V6_UDP)]
    )


def check_frames(frames: list[tuple[int, bytes, int]], verify: bool = False) -> Counter[str]:
    """parse_records on raw frames vs Decoder.decode of each (fresh decoder per frame)."""
    from pcapexfil.fast.parse import parse_records
    from pcapexfil.packet import RawPacket

    data = b"".join(f for _, f, _ in frames)
    lens = np.array([len(f) for _, f, _ in frames], np.uint32)
    offsets = np.concatenate([[0], np.cumsum(lens[:-1], dtype=np.int64)]).astype(np.int64)
    buf = np.frombuffer(data, np.uint8)
    n = len(frames)
    rows = parse_records(buf, offsets, lens, np.array([w for *_, w in frames], np.uint32),
                         np.array([lt for lt, _, _ in frames], np.int32), np.full(n, 5.0),
                         np.arange(1, n + 1, dtype=np.uint64), verify)
    kinds: Counter[str] = Counter()
    for (lt, f, wl), row in zip(frames, rows):
        w = Weirds()
        out = Decoder(w, verify_checksums=verify).decode(RawPacket(5.0, lt, f, wl))
        kind = int(row["kind"])
        if kind == KIND_FAST:
            assert len(out) == 1 and not w.counts, (lt, f.hex(), out, w.counts)
            assert out[0].checksum_ok is not False
            want = packets_to_batch(out)[0]
            for col in COMPARED:
                if col != "frame":
                    assert row[col] == want[col], (lt, f.hex(), col, row[col], want[col])
            off, cap = int(row["payload_off"]), int(row["payload_cap"])
            assert buf[off : off + cap].tobytes() == out[0].payload
        elif kind == KIND_SKIP:
            assert out == [] and not w.counts, (lt, f.hex(), w.counts)
        kinds[("fast", "slow", "skip")[kind]] += 1
    return kinds


POOL = _pool()


@given(
    st.lists(
        st.tuples(
            st.integers(0, len(POOL) - 1),
            st.lists(st.tuples(st.integers(0, 90), st.integers(0, 255)), max_size=4),
            st.integers(0, 400),  # cut the frame to this many bytes (400: keep it whole)
            st.integers(-30, 30),  # wire length minus captured length
        ),
        min_size=1, max_size=20,
    ),
    st.booleans(),
)
@settings(max_examples=500, deadline=None, database=None, derandomize=True)
def test_mutated_frames(cases: list, verify: bool) -> None:
    frames = []
    for idx, flips, cut, extra in cases:
        lt, f = POOL[idx]
        b = bytearray(f[:cut])
        for pos, val in flips:
            if pos < len(b):
                b[pos] = val
        frames.append((lt, bytes(b), max(len(b) + extra, 0)))
    check_frames(frames, verify)


@pytest.mark.parametrize("verify", [False, True])
def test_mutation_pool_is_mostly_fast(verify: bool) -> None:
    kinds = check_frames([(lt, f, len(f)) for lt, f in POOL], verify)
    assert kinds["fast"] >= 20


# ---- pcapng: sections, byte orders, block kinds, damage -------------------------------

def _blk(o: str, btype: int, body: bytes, length: int | None = None) -> bytes:
    n = 12 + len(body) if length is None else length
    return struct.pack(o + "II", btype, n) + body + struct.pack(o + "I", n)


def _shb(o: str) -> bytes:
    return _blk(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def _idb(o: str, linktype: int, res: int = 6, snaplen: int = 0, tsoffset: int = 0) -> bytes:
    opts = struct.pack(o + "HH", 9, 1) + bytes([res]) + b"\0\0\0"
    if tsoffset:
        opts += struct.pack(o + "HHq", 14, 8, tsoffset)
    return _blk(o, 1, struct.pack(o + "HHI", linktype, 0, snaplen) + opts + struct.pack(o + "HH", 0, 0))


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _epb(o: str, ifid: int, units: int, data: bytes, wirelen: int | None = None) -> bytes:
    wl = len(data) if wirelen is None else wirelen
    return _blk(o, 6, struct.pack(o + "IIIII", ifid, units >> 32, units & 0xFFFFFFFF, len(data), wl) + _pad(data))


def _opb(o: str, ifid: int, units: int, data: bytes) -> bytes:
    return _blk(o, 2, struct.pack(o + "HHIIII", ifid, 0, units >> 32, units & 0xFFFFFFFF, len(data), len(data))
                + _pad(data))


def _spb(o: str, data: bytes, wirelen: int | None = None) -> bytes:
    return _blk(o, 3, struct.pack(o + "I", len(data) if wirelen is None else wirelen) + _pad(data))


def _ng_stream() -> bytes:
    """Two sections (little then big endian), every packet block kind, odd resolutions."""
    a = ("<", ">")
    out = b""
    for k, o in enumerate(a):
        t = 1_700_000_000 + k
        out += _shb(o) + _idb(o, 1, 9) + _blk(o, 4, b"\0" * 8)  # a name-resolution block is skipped
        out += _epb(o, 0, t * 10**9 + 123_456_789, ether(V4_TCP))
        out += _idb(o, 101, 0x80 | 20, tsoffset=5) + _idb(o, 113, 3, snaplen=40)
        out += _epb(o, 1, (t << 20) + 12345, V6_UDP)
        out += _opb(o, 0, t * 10**9 + 999, ether(V4_UDP))
        out += _spb(o, ether(V4_ICMP))
        out += _spb(o, ether(V4_TCP)[:30], wirelen=len(ether(V4_TCP)))
        out += _epb(o, 2, t * 1000 + 7, struct.pack("!HHH8sH", 0, 1, 6, b"", 0x0800) + V4_UDP)
    return out


def test_pcapng_sections_blocks_and_byte_orders(tmp_path: Path) -> None:
    blob = _ng_stream()
    p = tmp_path / "s.pcapng"
    p.write_bytes(blob)
    for chunk_bytes in (40, 1 << 20):
        kinds = differential([str(p)], chunk_bytes=chunk_bytes)
        assert sum(kinds.values()) == 12 and kinds["fast"] >= 10
    gz = tmp_path / "s.pcapng.gz"
    gz.write_bytes(gzip.compress(blob))
    assert differential([str(gz)], chunk_bytes=100)["fast"] >= 10


def test_pcapng_damage_is_reported_like_the_reference(tmp_path: Path) -> None:
    o = "<"
    good = _shb(o) + _idb(o, 1) + _epb(o, 0, 10**6, ether(V4_TCP))
    pkt = _epb(o, 0, 2 * 10**6, ether(V4_UDP))
    cases = {
        "cut-block": good + pkt[:-6],
        "cut-head": good + pkt[:5],
        "bad-length": good + struct.pack(o + "II", 6, 13) + b"\0" * 40,
        "undeclared": good + _epb(o, 3, 10**6, ether(V4_UDP)) + pkt,
        "short-epb": good + _blk(o, 6, b"\0" * 12) + pkt,
        "too-long": good + _blk(o, 6, struct.pack(o + "IIIII", 0, 0, 1, 500, 500) + b"\0" * 16) + pkt,
        "spb-no-if": _shb(o) + _spb(o, ether(V4_TCP)),
        "short-idb": good + _blk(o, 1, b"\0" * 4) + pkt,
        "shb-bad-bom": good + _blk(o, 0x0A0D0D0A, b"\1\2\3\4" + b"\0" * 12) + pkt,
        "shb-bad-len": good + _blk(o, 0x0A0D0D0A, struct.pack(o + "I", 0x1A2B3C4D) + b"\0" * 12, length=30) + pkt,
        "shb-cut": good + _shb(">")[:20],
        "second-section-be": good + _shb(">") + _idb(">", 101) + _epb(">", 0, 3 * 10**6, V4_UDP),
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.pcapng"
        p.write_bytes(blob)
        for chunk_bytes in (16, 1 << 20):
            differential([str(p)], chunk_bytes=chunk_bytes)
        w = Weirds()
        list(iter_batches([str(p)], w))
        assert sum(w.counts.values()) == (0 if name == "second-section-be" else 1), name


def test_pcapng_event_after_skipped_blocks(tmp_path: Path) -> None:
    o = "<"
    skip = _blk(o, 4, b"\0" * 8)
    pkt = _epb(o, 0, 2 * 10**6, ether(V4_UDP))
    cases = {
        "idb-after-skip": _shb(o) + skip + _idb(o, 1) + skip + pkt,
        "bad-after-skip": _shb(o) + _idb(o, 1) + pkt + skip + skip + struct.pack(o + "II", 7, 2),
        "shb-after-skip": _shb(o) + _idb(o, 1) + skip + _shb(">") + _idb(">", 1) + _epb(">", 0, 5, ether(V4_TCP)),
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.pcapng"
        p.write_bytes(blob)
        for chunk_bytes in (16, 1 << 20):
            assert sum(differential([str(p)], chunk_bytes=chunk_bytes).values()) >= 1, name


FUZZ_CAPTURES = sorted((ROOT / "fixtures" / "malformed").glob("*.pcap")) + sorted(
    (ROOT / "tests" / "fuzz_regressions" / "capture").glob("*")
)


def same_as_reference(path: str, chunk_bytes: int) -> None:
    """differential(), or the same CaptureError when the reference refuses the file."""
    try:
        list(open_captures([path], Weirds()))
    except CaptureError as exc:
        with pytest.raises(CaptureError) as mine:
            list(iter_batches([path], Weirds(), chunk_bytes=chunk_bytes))
        assert str(mine.value) == str(exc)
        return
    differential([path], chunk_bytes=chunk_bytes)


@pytest.mark.parametrize("path", FUZZ_CAPTURES, ids=lambda p: p.name)
def test_malformed_and_fuzz_regression_captures(path: Path) -> None:
    for chunk_bytes in (16, 1 << 20):
        same_as_reference(str(path), chunk_bytes)


_SEED_FILES: list[bytes] = []


def _seed_files() -> list[bytes]:
    if not _SEED_FILES:
        frames = _frames([ether(V4_TCP), ether(V6_UDP), ether(V4_ICMP), ether(ARP, 0x0806)])
        with tempfile.TemporaryDirectory() as d:
            for nano, big in ((False, False), (True, True)):
                _SEED_FILES.append(write_pcap(Path(d) / "s.pcap", frames, nano=nano, big_endian=big).read_bytes())
        _SEED_FILES.append(_ng_stream())
    return _SEED_FILES


@given(
    st.integers(0, 2),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6),
    st.integers(0, 3000),
    st.booleans(),
    st.sampled_from([16, 100, 1 << 20]),
)
@settings(max_examples=300, deadline=None, database=None, derandomize=True)
def test_mutated_captures(seed: int, flips: list, cut: int, compress: bool, chunk_bytes: int) -> None:
    blob = bytearray(_seed_files()[seed][:cut])
    for pos, val in flips:
        if pos < len(blob):
            blob[pos] = val
    data = gzip.compress(bytes(blob)) if compress else bytes(blob)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.cap"
        p.write_bytes(data)
        same_as_reference(str(p), chunk_bytes)


def test_tunnel_ports_follow_the_reference_decoder() -> None:
    from pcapexfil.decode import tunnels
    from pcapexfil.fast.parse import TUNNEL_PORTS

    assert set(TUNNEL_PORTS) == set(tunnels._UDP_TUNNELS)


def test_unmappable_file_is_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pcapexfil.fast import reader

    def refuse(path: str) -> None:
        raise OSError("mmap not supported")

    monkeypatch.setattr(reader, "_MmapSource", refuse)
    path = write_pcap(tmp_path / "s.pcap", _tcp_frames(30))
    assert differential([str(path)], chunk_bytes=100)["fast"] == 30
    assert differential([str(BAD / "truncated.pcapng")], chunk_bytes=100)["fast"] == 3


_KERNEL_TYPES = """
import json, sys
from pcapexfil.fast.table import process_batch
from pcapexfil.pipeline import RunOptions, run
seen = []
for path in sys.argv[1:]:
    run([path], RunOptions(out_dir=None, seed=1), [])
    seen.append(len(process_batch.signatures))
print(json.dumps(seen))
"""


def test_a_gzip_capture_runs_on_the_kernels_a_mapped_one_loaded(tmp_path: Path) -> None:
    """numba compiles a kernel per argument type: a stream's windows are read-only like a
    mapped file's, so a gzip input after a plain one needs no other version of the walk, the
    parser or the flow table (a writable window compiled all three again on a first run,
    about 19 s; the flow table's kernel is the one checked). A fresh process: another test
    may have loaded other versions already."""
    frames = [(1.0 + i, ether(ipv4(tcp(seq=i, data=b"x" * 100)))) for i in range(50)]
    plain = write_pcap(tmp_path / "t.pcap", frames)
    gz = write_pcap(tmp_path / "t.pcap.gz", frames, compress=True)
    out = subprocess.run([sys.executable, "-c", _KERNEL_TYPES, str(plain), str(gz)], capture_output=True, text=True,
                         timeout=600, check=True)
    after_plain, after_gzip = json.loads(out.stdout)
    assert after_plain >= 1 and after_gzip == after_plain
