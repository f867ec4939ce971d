"""The PIA gate (pcapexfil/fast/anchors.py, fast/pia_gate.py): on HTTP's ports the kernel keeps
a connection's first chunks while the PIA's windows hold no anchor of the signatures the
services analyzer and TLS wait on, and hands them over, kept chunks first, where one appears.

- the automata hold a mark exactly where `WindowMarks.held` does, for every gated port;
- the fast engine writes what the reference engine writes, on conversations where an
  anchor comes in the first chunk, in a later one (kept chunks replayed), never, past the
  PIA's limits, after more chunks than a window keeps, and where the HTTP lane leaves;
- the kernel's gate ends at the chunk, and in the way, the PIA's buffer and the analyzers'
  gates and release conditions give; each analyzer's release condition holds of the
  analyzer itself (fed those chunks, it lets the stream go);
- the analyzers are not called for a plain conversation, inside the PIA or past it, and
  are where its windows hold an anchor or the PIA's end leaves them reading.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers_pcap import write_pcap
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fast_engine import assert_same
from test_http_lane import GET, OK, _frames, _in_order
from test_identifiers_support import client_hello_record

from pcapexfil.fast.anchors import HELD, NO_GATE, NO_RELEASE, walk
from pcapexfil.fast.engine import kernel_gates
from pcapexfil.fast.pia_gate import GATE_KEPT, GATE_OVER, GATE_RELEASED, KEPT_CHUNKS, gate_chunk, gate_open, new_gate
from pcapexfil.hooks import AnalyzerContext
from pcapexfil.identifiers import make_analyzers
from pcapexfil.identifiers.http import HTTP_PORTS
from pcapexfil.identifiers.stream import DPD_BUFFER_SIZE, PiaBuffer
from pcapexfil.pipeline import RunOptions, run
from pcapexfil.services import ServiceAnalyzer

ANALYZERS = make_analyzers(AnalyzerContext(out_dir=None))
GATES = kernel_gates(ANALYZERS)
PORT_GATES = {port: [g for a in ANALYZERS if a.name != "http" for g in getattr(a.pia_gate(port), "gates", ())]
              for port in sorted(HTTP_PORTS)}
GATED_PORTS = sorted(p for p in HTTP_PORTS if GATES is not None and GATES.start[p, 0] != NO_GATE)
# Bytes that make up the anchors, and others around them.
MATERIAL = (b"SSH-", b"ssh-", b"NICK ", b"user ", b"SERVER ", b"\r\n", b" ", b"\x15", b"\x16\x03\x01", b"\x05",
            b"\x30", b"\x00\x00\x00\x08", b"\x00\x03\x00", b"\xfe", b"\xff", b"220 ", b"220-", b"120 ", b"+OK",
            b"CONNECT ", b"Cookie: mstshash=", b"Duca", b"GET / HTTP/1.1", b"HTTP/1.1 200 OK", b"x", b"\t", b"2")


def test_http_ports_are_gated() -> None:
    assert GATES is not None
    assert all(GATES.start[port, 0] != NO_GATE for port in (80, 8080, 3128))


@settings(max_examples=400, deadline=None)
@given(port=st.sampled_from(GATED_PORTS), pieces=st.lists(st.sampled_from(MATERIAL), max_size=8),
       is_orig=st.booleans())
def test_the_automaton_holds_a_mark_exactly_where_the_gates_do(port: int, pieces: list[bytes], is_orig: bool) -> None:
    assert GATES is not None
    role = 0 if is_orig else 1
    window = b"".join(pieces)
    held = any((g.orig if is_orig else g.resp).held(window) for g in PORT_GATES[port])
    walked = walk(GATES.table, GATES.accept, GATES.dead, np.int64(GATES.start[port, role]),
                  np.frombuffer(window, np.uint8), 0, len(window))
    assert (walked == HELD) == held


def _services_calls(monkeypatch: pytest.MonkeyPatch, path: str, out: str) -> int:
    """How many packets the services analyzer was given in a fast-engine run of `path`."""
    calls = []
    on_packet = ServiceAnalyzer.on_packet

    def counted(self, conn, is_orig, pkt):  # type: ignore[no-untyped-def]
        calls.append(pkt)
        return on_packet(self, conn, is_orig, pkt)

    monkeypatch.setattr(ServiceAnalyzer, "on_packet", counted)
    os.makedirs(out, exist_ok=True)
    run([path], RunOptions(out_dir=out, seed=11, engine="fast"), [])
    monkeypatch.undo()
    return len(calls)


def _check(tmp_path, monkeypatch, segments, port: int = 80, analyzers_called: bool | None = None) -> None:  # type: ignore[no-untyped-def]
    path = str(write_pcap(tmp_path / "t.pcap", _frames(segments, port=port)))
    assert assert_same([path], tmp_path) > 0
    if analyzers_called is not None:
        assert (_services_calls(monkeypatch, path, str(tmp_path / "count")) > 0) == analyzers_called


SMALL_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BIG_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + b"b" * 3000


def test_a_conversation_inside_the_pia_never_reaches_the_analyzers(tmp_path, monkeypatch) -> None:
    _check(tmp_path, monkeypatch, _in_order([(True, GET), (False, SMALL_OK)]), analyzers_called=False)


def test_a_reply_past_the_pia_ends_the_analyzers_wait_in_the_kernel(tmp_path, monkeypatch) -> None:
    talk = [(True, GET), (False, BIG_OK[:1400]), (False, BIG_OK[1400:2800]), (False, BIG_OK[2800:])]
    _check(tmp_path, monkeypatch, _in_order(talk), analyzers_called=False)


@pytest.mark.parametrize("talk", [
    # A client's first bytes shorter than ssh's check reads (tried without a signature on
    # any port): it cannot refuse them yet. (A CONNECT's tunnel is the HTTP analyzer's,
    # which the kernel runs on port 80: no watch waits for it.)
    [(True, b"SS"), (False, b"x" * 1400)],
], ids=["short-client"])
def test_a_pia_end_the_analyzers_may_read_past_is_handed_over(tmp_path, monkeypatch, talk) -> None:
    _check(tmp_path, monkeypatch, _in_order(talk), analyzers_called=True)


def test_the_lane_leaving_after_the_analyzers_wait_ended_keeps_them_done(tmp_path, monkeypatch) -> None:
    first = len(GET) + 0
    segments = [(True, 0, GET), (False, 0, BIG_OK[:1400]), (False, 1400, BIG_OK[1400:2800]),
                (False, 2800, BIG_OK[2800:]), (True, first + 40, GET[40:]), (True, first, GET[:40]),
                (False, len(BIG_OK), SMALL_OK)]
    _check(tmp_path, monkeypatch, segments)


@pytest.mark.parametrize("talk", [
    # ssh's check, tried on any port: a version line from both sides.
    [(True, b"SSH-2.0-client\r\n"), (False, b"SSH-2.0-server\r\n")],
    # dpd_tls: a ClientHello on port 80 attaches SSL.
    [(True, client_hello_record("gate.example"))],
    # An IRC registration after a first chunk the gate kept (the signature's line words).
    [(True, b"PASS x\r\n"), (True, b"NICK a\r\nUSER a 0 * :a\r\n"), (False, b":srv 001 a :hi\r\n")],
    # A server greeting (smtp's and ftp's signatures) after a kept request.
    [(True, b"HELP\r\n"), (False, b"220 mail ready\r\n"), (True, b"EHLO x\r\n"), (False, b"250 ok\r\n")],
    # rdp's cookie inside the second chunk of a request.
    [(True, GET[:10]), (True, GET[10:] + b"Cookie: mstshash=a\r\n"), (False, SMALL_OK)],
    # An HTTP CONNECT tunnel handed to TLS.
    [(True, b"CONNECT h.example:443 HTTP/1.1\r\nHost: h.example\r\n\r\n"),
     (False, b"HTTP/1.1 200 Connection established\r\n\r\n"), (True, client_hello_record("tunnel.example"))],
], ids=["ssh", "tls", "irc-later-chunk", "greeting", "rdp-cookie", "connect"])
def test_an_anchor_hands_the_kept_chunks_over(tmp_path, monkeypatch, talk) -> None:
    _check(tmp_path, monkeypatch, _in_order(talk), analyzers_called=True)


def test_more_chunks_than_a_window_keeps_are_handed_over(tmp_path, monkeypatch) -> None:
    pieces = [GET[k : k + 2] for k in range(0, 2 * (KEPT_CHUNKS + 4), 2)]
    rest = GET[2 * (KEPT_CHUNKS + 4) :]
    talk = [(True, p) for p in pieces] + [(True, rest), (False, SMALL_OK)]
    _check(tmp_path, monkeypatch, _in_order(talk), analyzers_called=True)


def test_a_window_filled_to_the_pia_limit_ends_the_gate_at_the_next_byte(tmp_path, monkeypatch) -> None:
    body = b"p" * (DPD_BUFFER_SIZE - len(GET) - 1)
    post = GET.replace(b"GET", b"PUT").replace(b"\r\n\r\n", b"\r\nContent-Length: %d\r\n\r\n" % (len(body) + 2))
    talk = [(True, post), (True, body[: len(body) - len(post)]), (True, b"qq"), (False, SMALL_OK)]
    _check(tmp_path, monkeypatch, _in_order(talk))


def test_the_lane_leaving_a_gated_connection_hands_its_chunks_over(tmp_path, monkeypatch) -> None:
    # The client's second request arrives before a hole in the server's stream is filled.
    segments = [(True, 0, GET), (False, 30, OK[30:]), (False, 0, OK[:30]), (True, len(GET), GET)]
    _check(tmp_path, monkeypatch, segments, analyzers_called=True)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_generated_conversations_write_what_the_reference_writes(tmp_path_factory, data) -> None:
    talk = []
    for _ in range(data.draw(st.integers(1, 6))):
        is_client = data.draw(st.booleans())
        pieces = data.draw(st.lists(st.sampled_from(MATERIAL + (GET, SMALL_OK, BIG_OK[:900])), min_size=1,
                                    max_size=4))
        talk.append((is_client, b"".join(pieces)))
    port = data.draw(st.sampled_from([80, 8080, 3128]))
    tmp_path = tmp_path_factory.mktemp("gen")
    path = str(write_pcap(tmp_path / "t.pcap", _frames(_in_order(talk), port=port)))
    assert_same([path], tmp_path)


def _oracle(port: int, chunks: list[tuple[bool, bytes]]) -> tuple[int, int]:
    """Where (chunk index) and how the gate of a connection to `port` ends, read off the
    PIA's own buffer and the analyzers' gates: (len(chunks), GATE_KEPT) if it does not."""
    pia = PiaBuffer()
    assert GATES is not None
    done_after_orig = int(GATES.release[port])
    for k, (is_orig, data) in enumerate(chunks):
        pia.add(is_orig, data)
        if not all(g.clean(pia) for g in PORT_GATES[port]):
            return k, GATE_OVER
        if not pia.matching:
            released = done_after_orig != NO_RELEASE and len(pia.orig) >= done_after_orig
            return k, GATE_RELEASED if released else GATE_OVER
        if k + 1 > KEPT_CHUNKS:
            return k, GATE_OVER
    return len(chunks), GATE_KEPT


@settings(max_examples=300, deadline=None)
@given(port=st.sampled_from([80, 3128]),
       chunks=st.lists(st.tuples(st.booleans(), st.lists(st.sampled_from(MATERIAL + (b"y" * 300, BIG_OK[:700])),
                                                         min_size=1, max_size=3).map(b"".join)),
                       min_size=1, max_size=20))
def test_the_kernel_gate_ends_where_the_pia_and_the_gates_say(port: int, chunks: list[tuple[bool, bytes]]) -> None:
    gate = new_gate(1, GATES)
    gate_open(gate, 0, port, 0)
    got = (len(chunks), GATE_KEPT)
    for k, (is_orig, data) in enumerate(chunks):
        said = gate_chunk(gate, 0, is_orig, 0, np.frombuffer(data, np.uint8), 0, len(data), 0, 0.0)
        if said != GATE_KEPT:
            got = (k, said)
            break
    assert got == _oracle(port, chunks)


def test_the_automata_are_kept_beside_the_kernels_and_rebuilt_when_unreadable(tmp_path, monkeypatch) -> None:
    import pcapexfil.fast.anchors as anchors

    monkeypatch.setattr(anchors, "CACHE_DIR", str(tmp_path))
    built = kernel_gates(ANALYZERS)
    [saved] = list(tmp_path.glob("gates-*.npz"))
    built_at = saved.stat().st_mtime_ns
    loaded = kernel_gates(ANALYZERS)
    assert saved.stat().st_mtime_ns == built_at  # read, not written again
    saved.write_bytes(b"not an npz")
    rebuilt = kernel_gates(ANALYZERS)
    assert built is not None and loaded is not None and rebuilt is not None
    for name in built._fields:
        assert np.array_equal(getattr(loaded, name), getattr(built, name)), name
        assert np.array_equal(getattr(rebuilt, name), getattr(built, name)), name


# Bytes close to the anchors that are not theirs, and first client chunks around the
# analyzers' release conditions (ssh's 4 bytes, "CONNECT "'s 8).
NEAR_MATERIAL = (b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"SS", b"NIC", b"CONNEC", b"22", b"+O", b"x", b"\r\n",
                 b" ", b"y" * 300)
FIRST_CLIENT_CHUNKS = (b"", b"C", b"ss", b"SSx", b"GET", b"CONNEC", b"CONNECT", b"CONNEX", b"GET / HTTP/1.1\r\n",
                       b"connec", b"Co", b"CONNECTS")  # HTTP.cc's strncasecmp: any case, prefixes


@settings(max_examples=300, deadline=None)
@given(port=st.sampled_from([80, 3128]), first=st.sampled_from(FIRST_CLIENT_CHUNKS),
       chunks=st.lists(st.tuples(st.booleans(), st.lists(st.sampled_from(NEAR_MATERIAL), min_size=1,
                                                         max_size=3).map(b"".join)), max_size=6),
       last_from_client=st.booleans())
def test_each_analyzer_is_done_where_its_pia_wait_says(port: int, first: bytes, chunks: list[tuple[bool, bytes]],
                                                        last_from_client: bool) -> None:
    """The analyzers' `PiaWait` conditions, checked on the analyzers themselves: fed the
    chunks up to the one that ends the PIA's matching with every gate clean, each analyzer
    whose own condition holds there wants no more of the stream (`release`), and none
    named a service."""
    from hypothesis import assume

    from pcapexfil.fast.engine import FastConn
    from pcapexfil.identifiers.stream import open_streams
    from pcapexfil.packet import PROTO_TCP, TH_ACK, Packet

    talk = ([(True, first)] if first else []) + chunks + [(last_from_client, b"z" * (DPD_BUFFER_SIZE + 1))]
    pia = PiaBuffer()
    end = None
    for k, (is_orig, data) in enumerate(talk):
        pia.add(is_orig, data)
        if not all(g.clean(pia) for g in PORT_GATES[port]):
            break
        if not pia.matching:
            end = k
            break
    assume(end is not None)
    conn = FastConn("Ctest", PROTO_TCP, 1.0)
    conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p = "10.0.0.1", 40000, "10.0.0.2", port
    others = [a for a in make_analyzers(AnalyzerContext(out_dir=None)) if a.name != "http"]
    for analyzer in others:
        analyzer.on_new(conn)
    streams = open_streams(conn, frozenset(a.name for a in others))
    seq = {True: 1000, False: 5000}
    for is_orig, data in talk[: end + 1]:
        pkt = Packet(1.0, "", "", PROTO_TCP, 0, flags=TH_ACK, seq=seq[is_orig], payload_len=len(data), payload=data)
        seq[is_orig] += len(data)
        for analyzer in others:
            analyzer.on_packet(conn, is_orig, pkt)
    for analyzer in others:
        wait = analyzer.pia_gate(port)
        assert wait is not None
        if wait.done_after_orig is not None and len(pia.orig) >= wait.done_after_orig:
            assert analyzer.name not in streams.orig_wanted | streams.resp_wanted, analyzer.name
    assert conn.service == [] and not conn.limit_weirds


def test_the_services_analyzer_alone_takes_the_http_analyzers_connect_tunnel(tmp_path, monkeypatch) -> None:
    """Without TLS, the services analyzer's tunnel PIA starts where the HTTP analyzer opened
    the CONNECT tunnel (identifiers.http_tunnel), though its own wait ended at the PIA's
    end: the SMTP in the tunnel is named by both engines."""
    import pcapexfil.pipeline
    from record_sink import RecordCollector

    monkeypatch.setattr(pcapexfil.pipeline, "make_analyzers",
                        lambda ctx: make_analyzers(ctx, only={"http", ServiceAnalyzer.name}))
    talk = [(True, b"CONNECT mx.example:25 HTTP/1.1\r\n\r\n"), (False, b"HTTP/1.1 200 Connection established\r\n\r\n"),
            (False, b"220 mx.example ESMTP\r\n"), (True, b"EHLO client\r\n"), (False, b"250 mx.example\r\n"),
            (False, b"y" * DPD_BUFFER_SIZE)]
    path = str(write_pcap(tmp_path / "t.pcap", _frames(_in_order(talk), port=3128)))
    assert assert_same([path], tmp_path) > 0
    sink = RecordCollector()
    run([path], RunOptions(out_dir=None, seed=1, engine="fast"), [sink])
    assert [r.service for r in sink.records] == [["http", "smtp"]]
