"""HTTP read inside the flow table (pcapexfil/fast/http_lane.py): the fast engine writes
what the reference engine (HTTP read in Python) writes, on conversations the kernel reads
alone and on those it gives back to Python midway: at a gap, a snap-length cut, a segment
only the reference decoder made (IP fragments), a head longer than it keeps, a header
Python must read; and it does read them itself (the analyzer's byte reading is not called
where it should not be, and is where it should)."""

from __future__ import annotations

import os

import pytest
from helpers_pcap import ether, ipv4, ipv4_fragments, tcp, write_pcap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fast_engine import assert_same
from test_http_machine import conversation

from pcapexfil.fast.http_lane import HEAD_CAPACITY
from pcapexfil.identifiers.http import HttpAnalyzer
from pcapexfil.pipeline import RunOptions, run

MOD = 1 << 32
CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
Segment = tuple[bool, int, bytes]  # from the client?, offset in its stream, bytes
HEADERS = 14 + 20 + 20  # Ethernet, IPv4, TCP: what a snap-length cut here always keeps


def _frames(segments: list[Segment], port: int = 80, handshake: str = "full", fragment: int | None = None,
            t0: float = 1000.0) -> list[tuple[float, bytes]]:
    """A TCP session carrying `segments` in the order given (offsets relative to each
    side's first byte), closed with FINs; `fragment`: the index of a segment sent as IP
    fragments."""
    isn = {True: 1000, False: 5000}
    frames: list[tuple[float, bytes]] = []

    def send(is_client: bool, flags: int, seq: int, ack: int, data: bytes = b"", split: bool = False) -> None:
        seg = tcp(40000 if is_client else port, port if is_client else 40000, flags, seq % MOD, ack % MOD, data)
        packet = ipv4(seg, CLIENT, SERVER) if is_client else ipv4(seg, SERVER, CLIENT)
        for piece in ipv4_fragments(packet, 16) if split else [packet]:
            frames.append((t0 + 0.001 * len(frames), ether(piece)))

    if handshake == "full":
        send(True, 0x02, isn[True], 0)
        send(False, 0x12, isn[False], isn[True] + 1)
        send(True, 0x10, isn[True] + 1, isn[False] + 1)
    elif handshake == "synack-first":
        send(False, 0x12, isn[False], isn[True] + 1)
        send(True, 0x10, isn[True] + 1, isn[False] + 1)
    sent = {True: 0, False: 0}
    for k, (is_client, offset, data) in enumerate(segments):
        send(is_client, 0x18, isn[is_client] + 1 + offset, isn[not is_client] + 1 + sent[not is_client], data,
             split=k == fragment)
        sent[is_client] = max(sent[is_client], offset + len(data))
    send(True, 0x11, isn[True] + 1 + sent[True], isn[False] + 1 + sent[False])
    send(False, 0x11, isn[False] + 1 + sent[False], isn[True] + 2 + sent[True])
    send(True, 0x10, isn[True] + 2 + sent[True], isn[False] + 2 + sent[False])
    return frames


def _in_order(talk: list[tuple[bool, bytes]]) -> list[Segment]:
    offsets = {True: 0, False: 0}
    out = []
    for is_client, data in talk:
        out.append((is_client, offsets[is_client], data))
        offsets[is_client] += len(data)
    return out


def _python_reads(monkeypatch: pytest.MonkeyPatch, path: str, out: str) -> int:
    """How many chunks the HTTP analyzer read itself in a fast-engine run of `path`."""
    calls = []
    feed = HttpAnalyzer._feed

    def counted(self, conn, st, is_orig, data, ts):  # type: ignore[no-untyped-def]
        calls.append(len(data))
        return feed(self, conn, st, is_orig, data, ts)

    monkeypatch.setattr(HttpAnalyzer, "_feed", counted)
    os.makedirs(out, exist_ok=True)
    run([path], RunOptions(out_dir=out, seed=11, engine="fast"), [])
    monkeypatch.undo()
    return len(calls)


GET = b"GET /a HTTP/1.1\r\nHost: h.example\r\nUser-Agent: ua\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"


def _check(tmp_path, monkeypatch: pytest.MonkeyPatch, frames: list[tuple[float, bytes]], python_reads: bool,
           **pcap) -> None:  # type: ignore[no-untyped-def]
    path = str(write_pcap(tmp_path / "t.pcap", frames, **pcap))
    assert assert_same([path], tmp_path) > 0
    reads = _python_reads(monkeypatch, path, str(tmp_path / "count"))
    assert (reads > 0) == python_reads


def test_a_plain_conversation_is_read_in_the_kernel(tmp_path, monkeypatch) -> None:
    talk = [(True, GET), (False, OK[:20]), (False, OK[20:]), (True, GET), (False, CHUNKED)]
    _check(tmp_path, monkeypatch, _frames(_in_order(talk)), python_reads=False)


def test_retransmissions_and_overlaps_stay_in_the_kernel(tmp_path, monkeypatch) -> None:
    segments = [(True, 0, GET), (True, 0, GET[:10]), (False, 0, OK[:30]), (False, 20, OK[20:]), (False, 0, OK)]
    _check(tmp_path, monkeypatch, _frames(segments), python_reads=False)


def test_a_gap_gives_the_connection_to_python(tmp_path, monkeypatch) -> None:
    segments = [(True, 0, GET), (False, 30, OK[30:]), (False, 0, OK[:30]), (True, len(GET), GET)]
    _check(tmp_path, monkeypatch, _frames(segments), python_reads=True)


def test_a_head_longer_than_the_kernel_keeps_goes_to_python(tmp_path, monkeypatch) -> None:
    long_get = b"GET /b HTTP/1.1\r\nHost: h\r\nCookie: " + b"c" * HEAD_CAPACITY + b"\r\n\r\n"
    talk = [(True, GET), (False, OK), (True, long_get[:100]), (True, long_get[100:]), (False, OK)]
    _check(tmp_path, monkeypatch, _frames(_in_order(talk)), python_reads=True)


def test_a_head_split_across_segments_is_kept_in_the_kernel(tmp_path, monkeypatch) -> None:
    talk = [(True, GET[:7]), (True, GET[7:30]), (True, GET[30:]), (False, OK[:5]), (False, OK[5:])]
    _check(tmp_path, monkeypatch, _frames(_in_order(talk)), python_reads=False)


def test_a_folded_header_goes_to_python(tmp_path, monkeypatch) -> None:
    folded = b"GET /c HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n b\r\n\r\n"
    talk = [(True, GET), (False, OK), (True, folded), (False, OK)]
    _check(tmp_path, monkeypatch, _frames(_in_order(talk)), python_reads=True)


def test_a_fragmented_segment_goes_to_python(tmp_path, monkeypatch) -> None:
    talk = [(True, GET), (False, OK), (True, GET), (False, OK)]
    _check(tmp_path, monkeypatch, _frames(_in_order(talk), fragment=2), python_reads=True)


def test_a_cut_segment_ends_its_direction_in_the_kernel(tmp_path, monkeypatch) -> None:
    """A snap-length cut: what was captured is read, then nothing more of that direction
    (StreamDirection.broken), as Python reads it; the other direction goes on."""
    frames = _frames(_in_order([(True, GET), (False, OK[:45]), (False, OK[45:]), (True, GET), (False, OK)]))
    wirelens = [len(f) for _, f in frames]
    cut = [(ts, f[:-30]) if k == 4 else (ts, f) for k, (ts, f) in enumerate(frames)]  # into the first response
    _check(tmp_path, monkeypatch, cut, python_reads=False, wirelens=wirelens)


def test_a_first_segment_with_no_byte_captured_gives_http_no_chunk(tmp_path, monkeypatch) -> None:
    """The server's segment comes first and the snap length kept none of its bytes: its
    direction ends with nothing delivered (tcp_data's b""), so HTTP does not see the server
    speak first; the client's request is read (hypothesis found the kernel handing HTTP an
    empty chunk, which gave up on the connection). After a handshake: without one the
    connection is partial, and HTTP reads none of it (test_zeek_rules)."""
    frames = _frames(_in_order([(False, b"x"), (True, GET), (False, OK)]))
    wirelens = [len(f) for _, f in frames]
    first_data = 3  # after the SYN, SYN-ACK and ACK
    cut = [(ts, f[:HEADERS]) if k == first_data else (ts, f) for k, (ts, f) in enumerate(frames)]
    _check(tmp_path, monkeypatch, cut, python_reads=False, wirelens=wirelens)
    rows = [line for line in open(tmp_path / "fast" / "http.log") if not line.startswith("#")]
    assert [row.split("\t")[7:9] for row in rows] == [["GET", "h.example"]]


def test_a_cut_segment_then_a_gap_goes_to_python_with_its_direction_ended(tmp_path, monkeypatch) -> None:
    segments = [(True, 0, GET), (False, 0, OK[:45]), (True, len(GET) + 10, GET[10:]), (True, len(GET), GET[:10]),
                (False, 45, OK[45:])]
    frames = _frames(segments)
    wirelens = [len(f) for _, f in frames]
    cut = [(ts, f[:-30]) if k == 4 else (ts, f) for k, (ts, f) in enumerate(frames)]
    _check(tmp_path, monkeypatch, cut, python_reads=True, wirelens=wirelens)


def test_a_syn_ack_first_session_is_read_in_the_kernel(tmp_path, monkeypatch) -> None:
    talk = [(True, GET), (False, OK)]
    _check(tmp_path, monkeypatch, _frames(_in_order(talk), handshake="synack-first"), python_reads=False)


@st.composite
def _sessions(draw: st.DrawFn) -> tuple[list[tuple[float, bytes]], list[int]]:
    """http_machine's generated conversations as TCP sessions on HTTP's ports, segments
    now and then reordered, repeated in part or lost, a frame now and then cut short by the
    snap length, with or without a handshake; the frames and their lengths on the wire."""
    talk = draw(conversation())
    segments = _in_order(talk)
    if len(segments) > 1 and draw(st.booleans()):
        i = draw(st.integers(0, len(segments) - 2))
        segments[i], segments[i + 1] = segments[i + 1], segments[i]
    if segments and draw(st.booleans()):
        is_client, offset, data = draw(st.sampled_from(segments))
        cut = draw(st.integers(0, len(data)))
        segments.insert(draw(st.integers(0, len(segments))), (is_client, offset + cut // 2, data[cut // 2 : cut]))
    if len(segments) > 2 and draw(st.integers(0, 5)) == 0:
        del segments[draw(st.integers(0, len(segments) - 1))]
    segments = [s for s in segments if s[2]]
    frames = _frames(segments, port=draw(st.sampled_from([80, 8080])),
                     handshake=draw(st.sampled_from(["full", "full", "none", "synack-first"])))
    wirelens = [len(frame) for _, frame in frames]
    if draw(st.integers(0, 3)) == 0:  # a snap-length cut
        k = draw(st.integers(0, len(frames) - 1))
        ts, frame = frames[k]
        frames[k] = (ts, frame[: max(HEADERS, len(frame) - draw(st.integers(1, 40)))])
    return frames, wirelens


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_sessions())
def test_generated_sessions_give_the_same_logs(tmp_path_factory, session) -> None:
    frames, wirelens = session
    tmp = tmp_path_factory.mktemp("lane")
    assert_same([str(write_pcap(tmp / "s.pcap", frames, wirelens=wirelens))], tmp)
