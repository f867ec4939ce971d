"""Capture readers: every pcap/pcapng variant, gzip, merging, and damaged input."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from helpers_pcap import ether, ipv4, udp, write_pcap, write_pcapng
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapexfil.source import CaptureError, CaptureStats, open_captures
from pcapexfil.source.inputs import GzipStream
from pcapexfil.weird import Weirds

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "bad"


def frames(n: int, t0: float = 1_600_000_000.0, step: float = 0.25) -> list[tuple[float, bytes]]:
    return [(t0 + i * step, ether(ipv4(udp(sport=1000 + i)))) for i in range(n)]


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("gz", [False, True])
def test_pcap_variants(tmp_path: Path, nano: bool, big: bool, gz: bool) -> None:
    src = frames(5, t0=1_600_000_000.123456)
    path = write_pcap(tmp_path / "x.cap", src, nano=nano, big_endian=big, compress=gz)
    w = Weirds()
    got = list(open_captures([str(path)], w))
    assert [p.data for p in got] == [d for _, d in src]
    assert [p.ts for p in got] == pytest.approx([t for t, _ in src], abs=1e-6)
    assert all(p.linktype == 1 and p.wirelen == len(p.data) for p in got)
    assert [p.index for p in got] == [1, 2, 3, 4, 5]
    assert w.total == 0


def test_nanosecond_resolution_kept(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "n.pcap", [(1.000000001, b"\x45" + b"\0" * 19)], linktype=101, nano=True)
    (pkt,) = open_captures([str(path)], Weirds())
    assert pkt.ts == pytest.approx(1.000000001, abs=1e-10)


@pytest.mark.parametrize("big", [False, True])
def test_pcapng_interfaces_keep_own_linktype_and_resolution(tmp_path: Path, big: bool) -> None:
    eth = ether(ipv4(udp()))
    raw = ipv4(udp(sport=7))
    path = write_pcapng(
        tmp_path / "m.pcapng",
        [(10.5, eth, 0), (10.75, raw, 1), (11.0, eth, 2)],
        interfaces=[(1, 6), (101, 9), (1, 0x80 | 10)],
        big_endian=big,
        compress=big,  # cover gzip with pcapng too
    )
    got = list(open_captures([str(path)], Weirds()))
    assert [(p.linktype, p.data) for p in got] == [(1, eth), (101, raw), (1, eth)]
    assert [p.ts for p in got] == pytest.approx([10.5, 10.75, 11.0], abs=1e-6)


def test_rotated_files_merge_in_time_order(tmp_path: Path) -> None:
    a = write_pcap(tmp_path / "a.pcap", frames(3, t0=100.0, step=1.0))  # 100, 101, 102
    b = write_pcap(tmp_path / "b.pcap", frames(3, t0=100.5, step=1.0), nano=True)  # 100.5 ...
    c = write_pcap(tmp_path / "c.pcap", frames(2, t0=200.0))
    stats = CaptureStats()
    got = list(open_captures([str(c), str(b), str(a)], Weirds(), stats))  # order of args irrelevant
    ts = [p.ts for p in got]
    assert ts == sorted(ts) and len(ts) == 8
    assert [Path(p.source).name for p in got[:4]] == ["a.pcap", "b.pcap", "a.pcap", "b.pcap"]
    assert stats.packets == 8 and stats.files[str(a)].packets == 3
    assert stats.bytes == sum(len(p.data) for p in got)


def test_missing_directory_and_non_capture_raise_before_any_packet(tmp_path: Path) -> None:
    good = write_pcap(tmp_path / "good.pcap", frames(2))
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a capture\n")
    for bad in (tmp_path / "nope.pcap", tmp_path, text, FIX / "empty.pcap", FIX / "garbage.bin"):
        with pytest.raises(CaptureError) as exc:
            open_captures([str(good), str(bad)], Weirds())
        msg = str(exc.value)
        assert str(bad) in msg and "\n" not in msg


def test_truncated_file_keeps_records_before_damage() -> None:
    w = Weirds()
    got = list(open_captures([str(FIX / "truncated-record.pcap")], w))
    assert len(got) == 3  # the script writes 4 records and cuts the 4th
    assert w.counts["truncated_capture_file"] == 1


@pytest.mark.parametrize("name", ["truncated.pcapng", "truncated.pcap.gz"])
def test_truncated_pcapng_and_gzip(name: str) -> None:
    w = Weirds()
    got = list(open_captures([str(FIX / name)], w))
    assert len(got) == 3
    assert w.counts["truncated_capture_file"] == 1


def test_corrupt_record_length_stops_file() -> None:
    w = Weirds()
    got = list(open_captures([str(FIX / "huge-caplen.pcap")], w))
    assert len(got) == 2
    assert w.counts["corrupt_capture_file"] == 1


def test_unknown_linktype_pcap_is_capture_error() -> None:
    with pytest.raises(CaptureError, match="unsupported link type 147"):
        open_captures([str(FIX / "unknown-linktype.pcap")], Weirds())


def test_truncated_file_header_is_capture_error() -> None:
    with pytest.raises(CaptureError, match="truncated"):
        open_captures([str(FIX / "short-header.pcap")], Weirds())


def test_pcapng_cut_inside_a_later_section_header(tmp_path: Path) -> None:
    eth = ether(ipv4(udp()))
    path = write_pcapng(tmp_path / "two.pcapng", [(10.0, eth, 0), (11.0, eth, 0)])
    blob = path.read_bytes()
    path.write_bytes(blob + blob[:10])  # a second section begins and the file ends 10 bytes in
    w = Weirds()
    got = list(open_captures([str(path)], w))
    assert len(got) == 2
    assert w.counts["corrupt_capture_file"] == 1


@given(members=st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=3),
       padding=st.integers(0, 8), cut=st.integers(0, 10_000), read=st.integers(1, 5000))
@settings(max_examples=200, deadline=None)
def test_gzip_stream_hands_out_what_gzip_does_and_reports_a_cut(members: list[bytes], padding: int, cut: int,
                                                                 read: int) -> None:
    """source.inputs.GzipStream (ISA-L's inflate) against the standard library's gzip:
    members one after another, zero padding between them skipped; a stream cut inside a
    member hands out a prefix of the data, then says it ended early."""
    data = b"".join(members)
    compressed = [gzip.compress(m, mtime=0) for m in members]

    def drain(raw: bytes) -> tuple[bytes, str | None]:
        stream, out = GzipStream(io.BytesIO(raw)), bytearray()
        try:
            while chunk := stream.read(read):
                out += chunk
        except EOFError as exc:
            return bytes(out), str(exc)
        return bytes(out), None

    padded = (b"\x00" * padding).join(compressed)
    assert gzip.decompress(padded) == data
    assert drain(padded) == (data, None)
    blob = b"".join(compressed)
    cut = min(cut, len(blob))
    got, error = drain(blob[:cut])
    assert data.startswith(got)
    ends = {sum(map(len, compressed[:k])) for k in range(len(compressed) + 1)}  # member boundaries
    assert error == (None if cut in ends else "compressed file ended before the end-of-stream marker was reached")
    if cut in ends:
        assert got == data[: len(b"".join(members[: sorted(ends).index(cut)]))]
