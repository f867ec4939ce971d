"""Fuzzing: capture readers, decoder, TLS/DNS/HTTP parsers get random and mutated input.

Every target takes bytes and must return without an uncaught exception (the only allowed
ones are the documented rejections: CaptureError for a file that is not a capture,
Malformed from the bare TLS/DNS parsers) and within `TIME_LIMIT`. The suite runs a few
hundred examples per target; `benchmarks/fuzz_long.py --minutes N` runs the same targets
(same `TARGETS`, same `mutate`) for longer and saves every crashing input under
tests/fuzz_regressions/<target>/, which `test_regressions` replays forever after.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import random
import shutil
import signal
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcapexfil.decode import Decoder
from pcapexfil.decode.link import SUPPORTED_LINKTYPES
from pcapexfil.flow import FlowConfig, FlowTable
from pcapexfil.hooks import AnalyzerContext
from pcapexfil.identifiers import dns, make_analyzers, tls
from pcapexfil.identifiers.http import unescape_uri
from pcapexfil.packet import RawPacket
from pcapexfil.source import CaptureError, open_captures
from pcapexfil.synth import apps
from pcapexfil.synth import tls as synth_tls
from pcapexfil.weird import Weirds

REGRESSION_DIR = Path(__file__).parent / "fuzz_regressions"
TIME_LIMIT = 5.0  # seconds per input; far above any honest input of these sizes
LINKTYPES = sorted(SUPPORTED_LINKTYPES)


class Hang(Exception):
    """An input took longer than TIME_LIMIT."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def on_alarm(signum, frame):
        raise Hang(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---- mutation ----------------------------------------------------------------------------

_INTERESTING = (0, 1, 2, 4, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF)


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """1-8 random edits of `seed`: bit flips, random or boundary-value bytes/words (lengths
    that lie), truncation, deleted/duplicated/inserted chunks."""
    buf = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(8)
        n = len(buf)
        if n == 0:
            buf += rng.randbytes(rng.randint(1, 16))
            continue
        i = rng.randrange(n)
        if op == 0:
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[i] = rng.randrange(256)
        elif op in (2, 3):
            width = rng.choice((1, 2, 4))
            value = rng.choice(_INTERESTING + (n, n - i, n + 1, max(n - 1, 0)))
            chunk = (value & ((1 << (8 * width)) - 1)).to_bytes(width, rng.choice(("big", "little")))
            buf[i : i + width] = chunk
        elif op == 4:
            del buf[i:]
        elif op == 5:
            del buf[i : i + rng.randint(1, 64)]
        elif op == 6:
            j = rng.randrange(n)
            buf[i:i] = buf[j : j + rng.randint(1, 64)]
        else:
            buf[i:i] = rng.randbytes(rng.randint(1, 32))
    return bytes(buf)


# ---- valid seeds -------------------------------------------------------------------------

def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ipv4(proto: int, l4: bytes, src: bytes = b"\x0a\0\0\x01", dst: bytes = b"\x0a\0\0\x02") -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 7, 0, 64, proto, 0, src, dst))
    struct.pack_into("!H", hdr, 10, _csum(bytes(hdr)))
    return bytes(hdr) + l4


def _tcp(sport: int, dport: int, flags: int, seq: int, ack: int, data: bytes = b"", opts: bytes = b"") -> bytes:
    off = (20 + len(opts)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, 8192, 0, 0) + opts + data


def _udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def _ether(payload: bytes, ethertype: int = 0x0800) -> bytes:
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01" + struct.pack("!H", ethertype) + payload


def _ipv6_udp(data: bytes) -> bytes:
    udp = _udp(5353, 53, data)
    return struct.pack("!IHBB", 0x60000000, len(udp), 17, 64) + b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01" \
        + b"\x20\x01\x0d\xb8" + bytes(11) + b"\x02" + udp


_RNG = np.random.default_rng(1)
CLIENT_HELLO_RECORD = synth_tls.client_hello(synth_tls.CLIENT_PROFILES[0], "www.example.com", _RNG)
SERVER_FLIGHT = synth_tls.server_flight(synth_tls.SERVER_PROFILES[0], 300, _RNG)
DNS_QUERY = apps.dns_query(0x1234, "mail.example.org")
DNS_RESPONSE = apps.dns_response(0x1234, "mail.example.org", ["192.0.2.1", "192.0.2.2"], 300)
# Compression pointer to itself at the first answer's owner name (a loop, if followed).
DNS_LOOP = DNS_RESPONSE[:12 + len(b"\x04mail\x07example\x03org\x00") + 4] + b"\xc0" + bytes(
    [12 + len(b"\x04mail\x07example\x03org\x00") + 4]) + DNS_RESPONSE[12 + len(b"\x04mail\x07example\x03org\x00") + 6:]
HTTP_REQUEST = apps.http_request("POST", "upload.example.net", "/a%20b?c=%41", apps.USER_AGENTS[0], 20) + b"x" * 20
HTTP_RESPONSE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5\r\nhello\r\n0\r\n\r\n"

_SYN = 0x02
_ACK = 0x10
_FIN = 0x01
_PSH = 0x08


def _frames() -> list[bytes]:
    """Ethernet frames covering the decoder's main paths (and their payloads for the analyzers)."""
    return [
        _ether(_ipv4(6, _tcp(40000, 443, _SYN, 1, 0, opts=b"\x02\x04\x05\xb4\x01\x03\x03\x07\x04\x02\x00\x00"))),
        _ether(_ipv4(6, _tcp(40000, 443, _ACK | _PSH, 2, 1, CLIENT_HELLO_RECORD))),
        _ether(_ipv4(17, _udp(5353, 53, DNS_QUERY))),
        _ether(_ipv4(1, b"\x08\x00\xf7\xff\x00\x01\x00\x01" + b"ping")),
        _ether(_ipv6_udp(DNS_RESPONSE), 0x86DD),
        _ether(struct.pack("!HH", 100, 0x0800) + _ipv4(6, _tcp(1, 80, _ACK, 5, 5, HTTP_REQUEST)), 0x8100),
        _ether(_ipv4(47, b"\x00\x00\x08\x00" + _ipv4(17, _udp(1, 53, DNS_QUERY)))),  # GRE
        _ether(_ipv4(17, _udp(40001, 4789, b"\x08\0\0\0\0\0\x01\0" + _ether(_ipv4(17, _udp(2, 53, DNS_QUERY)))))),
    ]


FRAMES = _frames()


def _pcap(frames: list[bytes], linktype: int = 1) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)]
    for i, f in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 1000 * i, len(f), len(f)) + f)
    return b"".join(out)


def _pcapng(frames: list[bytes]) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
           block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 1) + b"\x06\0\0\0" + bytes(4))]
    for i, f in enumerate(frames):
        t = (1_700_000_000 + i) * 10**6
        pad = (-len(f)) % 4
        out.append(block(6, struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(f), len(f)) + f + bytes(pad)))
    return b"".join(out)


# ---- targets -----------------------------------------------------------------------------

_TMP = Path(tempfile.mkdtemp(prefix="pcapexfil-fuzz-"))
atexit.register(shutil.rmtree, _TMP, True)


def _analyze(raws: Iterator[RawPacket] | list[RawPacket]) -> None:
    """Decoder -> flow table with every analyzer (no logs written) -> flush."""
    weirds = Weirds()
    ctx = AnalyzerContext(out_dir=None, weirds=weirds)
    analyzers = make_analyzers(ctx)
    decoder = Decoder(weirds)
    table = FlowTable(FlowConfig(seed=1, weirds=weirds, max_flows=64), lambda r: None, analyzers)
    now = 0.0
    for raw in raws:
        now = max(now, raw.ts)
        table.advance(now)
        pkts = decoder.decode(raw)
        if pkts:
            table.process_all(pkts)
    table.flush(now)
    for a in analyzers:
        a.close()


def target_capture(data: bytes) -> None:
    """A file of these bytes through open_captures and the whole analysis."""
    path = _TMP / "input.cap"
    path.write_bytes(data)
    try:
        packets = open_captures([str(path)], Weirds())
    except CaptureError:
        return
    _analyze(packets)


def target_capture_fast(data: bytes) -> None:
    """The same file through the pipeline's fast (numba) engine, writing JSON logs (whatever
    bytes the identifiers carry must be writable)."""
    from pcapexfil.pipeline import RunOptions, run

    path = _TMP / "input-fast.cap"
    path.write_bytes(data)
    logs = _TMP / "fast-logs"
    logs.mkdir(exist_ok=True)
    try:
        run([str(path)], RunOptions(out_dir=str(logs), use_json=True, seed=1, max_flows=64, engine="fast"), [])
    except CaptureError:
        return


def target_decode(data: bytes) -> None:
    """One frame: byte 0 picks the link type, byte 1 how much of the wire was not captured."""
    if len(data) < 2:
        return
    linktype = LINKTYPES[data[0] % len(LINKTYPES)]
    frame = data[2:]
    _analyze([RawPacket(1.0, linktype, frame, len(frame) + data[1] * 8, "fuzz", 1),
              RawPacket(2.0, linktype, frame, len(frame), "fuzz", 2)])


def target_tls_hello(data: bytes) -> None:
    """Bare handshake parsing: scanner over a record stream, then Client/ServerHello and JA3/JA3S."""
    scanner = tls.HandshakeScanner(tls.re.compile(rb"\x16\x03[\x00-\x04]"))
    for i in range(0, len(data), 97):
        for mtype, body in scanner.feed(data[i : i + 97]):
            try:
                if mtype == 1:
                    hello = tls.parse_client_hello(body)
                    hello.ja3()
                elif mtype == 2:
                    tls.parse_server_hello(body).ja3s()
            except tls.Malformed:
                pass


def target_dns_message(data: bytes) -> None:
    try:
        msg = dns.Message(data)
    except dns.Malformed:
        return
    for owner, rtype, ttl, text in msg.answers:
        assert isinstance(owner, str) and isinstance(ttl, int)


def target_http_uri(data: bytes) -> None:
    out, weird_names = unescape_uri(data)
    assert isinstance(out, bytes) and all(isinstance(w, str) for w in weird_names)


def _write_conn_log(data: bytes) -> Path:
    """A directory holding `data` as conn.log, or conn.log.gz when it is gzip."""
    logs = _TMP / "logs"
    logs.mkdir(exist_ok=True)
    for old in logs.iterdir():
        old.unlink()
    (logs / ("conn.log.gz" if data[:2] == b"\x1f\x8b" else "conn.log")).write_bytes(data)
    return logs


def target_zeek_log(data: bytes) -> None:
    """`pcapexfil detect` input: these bytes as a log directory's conn.log (TSV or JSON)."""
    from pcapexfil.zeekread import ZeekLogError, read_directory

    logs = _write_conn_log(data)
    try:
        for rec in read_directory(str(logs), Weirds()):
            assert rec.uid is not None
    except ZeekLogError:
        return


_ZEEK_TSV = (b"#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
             b"#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\t"
             b"orig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\t"
             b"orig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\n"
             b"#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\t"
             b"bool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\n"
             b"1700000000.000000\tC1\t10.0.0.1\t40000\t93.184.216.34\t443\ttcp\tssl\t1.5\t100\t2000\tSF\tT\tF\t0\t"
             b"ShADadFf\t10\t600\t12\t2600\t-\n")
_ZEEK_JSON = (b'{"ts":1700000000.0,"uid":"C2","id.orig_h":"10.0.0.1","id.orig_p":40001,"id.resp_h":"1.2.3.4",'
              b'"id.resp_p":80,"proto":"tcp","service":"http","duration":0.5,"orig_bytes":10,"resp_bytes":20,'
              b'"conn_state":"SF","orig_ip_bytes":100,"resp_ip_bytes":200}\n')


_LOG_FIELDS = [("ts", "time"), ("s", "string"), ("b", "string"), ("items", "set[string]")]


def target_log_writer(data: bytes) -> None:
    """Arbitrary bytes as string values (raw bytes, and the analyzers' surrogate-carrying str)
    through both log forms: every JSON line parses, and the TSV log reads back exactly."""
    import json

    from pcapexfil.logs.zeek import ZeekLogWriter
    from pcapexfil.zeekread import read_log

    parts = data.split(b"\n")
    row = {"ts": 1.0, "s": data.decode("utf-8", "surrogateescape"), "b": data,
           "items": [p.decode("utf-8", "surrogateescape") for p in parts]}
    with ZeekLogWriter(_TMP / "fuzz.json", "fuzz", _LOG_FIELDS, use_json=True) as writer:
        writer.write(row)
    (line,) = (_TMP / "fuzz.json").read_bytes().splitlines()
    assert json.loads(line)["ts"] == 1.0
    with ZeekLogWriter(_TMP / "fuzz.log", "fuzz", _LOG_FIELDS) as writer:
        writer.write(row)
    (back,) = read_log(str(_TMP / "fuzz.log"))
    assert back["s"] == row["s"] and back["b"] == row["s"]


def _session_frames(port: int, client: bytes, server: bytes, udp: bool) -> list[bytes]:
    if udp:
        return [_ether(_ipv4(17, _udp(40000, port, client))),
                _ether(_ipv4(17, _udp(port, 40000, server), src=b"\x0a\0\0\x02", dst=b"\x0a\0\0\x01"))]
    c, s = 1000, 9000
    out = [_ether(_ipv4(6, _tcp(40000, port, _SYN, c - 1, 0))),
           _ether(_ipv4(6, _tcp(port, 40000, _SYN | _ACK, s - 1, c), src=b"\x0a\0\0\x02", dst=b"\x0a\0\0\x01"))]
    for i in range(0, max(len(client), len(server)), 300):
        cpart, spart = client[i : i + 300], server[i : i + 300]
        if cpart:
            out.append(_ether(_ipv4(6, _tcp(40000, port, _ACK | _PSH, c, s, cpart))))
            c += len(cpart)
        if spart:
            out.append(_ether(_ipv4(6, _tcp(port, 40000, _ACK | _PSH, s, c, spart),
                                    src=b"\x0a\0\0\x02", dst=b"\x0a\0\0\x01")))
            s += len(spart)
    out.append(_ether(_ipv4(6, _tcp(40000, port, _FIN | _ACK, c, s))))
    out.append(_ether(_ipv4(6, _tcp(port, 40000, _FIN | _ACK, s, c + 1), src=b"\x0a\0\0\x02", dst=b"\x0a\0\0\x01")))
    return out


_SESSION_KINDS = ((443, False), (80, False), (53, True), (53, False), (8080, False))


def target_session(data: bytes) -> None:
    """A whole TCP/UDP conversation through decoder, flow table and the TLS/HTTP/DNS analyzers:
    byte 0 picks the service, bytes 1-2 where client bytes end and server bytes begin."""
    if len(data) < 3:
        return
    port, udp = _SESSION_KINDS[data[0] % len(_SESSION_KINDS)]
    body = data[3:]
    cut = int.from_bytes(data[1:3], "big") % (len(body) + 1)
    frames = _session_frames(port, body[:cut], body[cut:], udp)
    _analyze([RawPacket(1.0 + i * 0.01, 1, f, len(f), "fuzz", i + 1) for i, f in enumerate(frames)])


def _session_seed(kind: int, client: bytes, server: bytes) -> bytes:
    return bytes([kind]) + len(client).to_bytes(2, "big") + client + server


Target = tuple[Callable[[bytes], None], list[bytes]]

TARGETS: dict[str, Target] = {
    "capture": (target_capture, [_pcap(FRAMES), _pcapng(FRAMES), gzip.compress(_pcap(FRAMES[:3]), mtime=0),
                                 _pcap(FRAMES, linktype=101)[:24] + _pcap([f[14:] for f in FRAMES[:4]])[24:]]),
    "capture_fast": (target_capture_fast, [_pcap(FRAMES), _pcapng(FRAMES), gzip.compress(_pcap(FRAMES[:3]), mtime=0)]),
    "decode": (target_decode, [bytes([LINKTYPES.index(1), 0]) + f for f in FRAMES]
               + [bytes([LINKTYPES.index(101), 0]) + f[14:] for f in FRAMES[:4]]),
    "tls_hello": (target_tls_hello, [CLIENT_HELLO_RECORD, SERVER_FLIGHT]),
    "dns_message": (target_dns_message, [DNS_QUERY, DNS_RESPONSE, DNS_LOOP]),
    "zeek_log": (target_zeek_log, [_ZEEK_TSV, _ZEEK_JSON, gzip.compress(_ZEEK_TSV, mtime=0)]),
    "log_writer": (target_log_writer, [b"example.com", b"\\x41\\", b"a\\xffb\\x00\\ncaf\\xc3\\xa9", b"-", b"(empty)"]),
    "http_uri": (target_http_uri, [b"/a%20b/%zz/%%41/%u00e9?q=%", b"/plain/path?x=1&y=%2F"]),
    "session": (target_session, [_session_seed(0, CLIENT_HELLO_RECORD, SERVER_FLIGHT),
                                 _session_seed(1, HTTP_REQUEST, HTTP_RESPONSE),
                                 _session_seed(2, DNS_QUERY, DNS_RESPONSE),
                                 _session_seed(3, len(DNS_QUERY).to_bytes(2, "big") + DNS_QUERY,
                                               len(DNS_LOOP).to_bytes(2, "big") + DNS_LOOP),
                                 _session_seed(4, HTTP_REQUEST * 2, HTTP_RESPONSE * 2)]),
}


@functools.cache
def _kernels_compiled() -> None:
    """The fast engine's first use compiles its kernels (30-60 s on an empty numba cache):
    its seeds (pcap, pcapng, gzip) run once, before the first input's time limit starts."""
    target, seeds = TARGETS["capture_fast"]
    for seed in seeds:
        target(seed)


def run_target(name: str, data: bytes) -> None:
    """One input, under the time limit (Hang if exceeded)."""
    if name == "capture_fast":
        _kernels_compiled()
    with time_limit(TIME_LIMIT):
        TARGETS[name][0](data)


def inputs(name: str) -> st.SearchStrategy[bytes]:
    """Random bytes, the valid seeds, and seeds mutated by `mutate`."""
    seeds = TARGETS[name][1]
    return st.one_of(
        st.binary(max_size=1500),
        st.sampled_from(seeds),
        st.builds(lambda r, s: mutate(random.Random(r), s), st.integers(0, 2**63), st.sampled_from(seeds)),
    )


# ---- the tests ---------------------------------------------------------------------------

_SETTINGS = settings(max_examples=500, deadline=None, database=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_seeds_are_valid_and_exercise_the_parsers():
    """The seeds are real, parseable inputs (mutating garbage would test little)."""
    assert tls.parse_client_hello(CLIENT_HELLO_RECORD[9:]).server_name == "www.example.com"
    assert dns.Message(DNS_RESPONSE).answers[0][3] == "192.0.2.1"
    with pytest.raises(dns.Malformed):
        dns.Message(DNS_LOOP)  # the self-pointer is refused, not followed
    weirds = Weirds()
    path = _TMP / "seed.pcap"
    path.write_bytes(TARGETS["capture"][1][0])
    assert len(list(open_captures([str(path)], weirds))) == len(FRAMES) and not weirds.counts
    decoder = Decoder(weirds)
    decoded = [decoder.decode(RawPacket(1.0, 1, f, len(f))) for f in FRAMES]
    assert all(decoded) and not weirds.counts
    from pcapexfil.zeekread import read_directory

    for seed in TARGETS["zeek_log"][1]:
        seed_weirds = Weirds()
        assert len(list(read_directory(str(_write_conn_log(seed)), seed_weirds))) == 1 and not seed_weirds.counts


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz(name):
    @_SETTINGS
    @given(data=inputs(name))
    def check(data: bytes) -> None:
        run_target(name, data)

    check()


def test_mutate_is_deterministic_and_changes_input():
    seed = _pcap(FRAMES)
    a = [mutate(random.Random(i), seed) for i in range(50)]
    assert a == [mutate(random.Random(i), seed) for i in range(50)]
    assert sum(m != seed for m in a) >= 45


def test_time_limit_stops_a_hang():
    with pytest.raises(Hang), time_limit(0.2):
        while True:
            pass


def _saved() -> list[tuple[str, Path]]:
    return sorted((p.parent.name, p) for p in REGRESSION_DIR.glob("*/*.bin") if p.parent.name in TARGETS)


@pytest.mark.parametrize(("name", "path"), _saved(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_regressions(name, path):
    """Every input a fuzzer ever crashed on stays fixed."""
    run_target(name, path.read_bytes())


def test_many_tiny_out_of_order_segments_stay_bounded():
    """Thousands of 1-byte segments sent in reverse order used to be kept (64 KiB allowed)
    and then rescanned once per delivered segment: quadratic, minutes per connection. The
    direction now gives up past MAX_PENDING_SEGMENTS held segments, like past MAX_PENDING bytes."""
    from pcapexfil.identifiers.stream import MAX_PENDING_SEGMENTS, StreamDirection

    d = StreamDirection()
    d.add(999, 0x02, b"", 0)  # SYN: the stream starts at 1000
    with time_limit(TIME_LIMIT):
        for i in range(20_000, 0, -1):
            d.add(1000 + i, 0x10, b"x", 1)
            assert len(d.pending) <= MAX_PENDING_SEGMENTS
        assert d.broken and not d.pending
        assert d.add(1000, 0x10, b"y", 1) == b""
    # Within the bound, reverse order still reassembles.
    d = StreamDirection()
    d.add(999, 0x02, b"", 0)
    for i in range(MAX_PENDING_SEGMENTS, 0, -1):
        d.add(1000 + i, 0x10, bytes([65 + i % 26]), 1)
    assert d.add(1000, 0x10, b"@", 1) == b"@" + bytes(65 + i % 26 for i in range(1, MAX_PENDING_SEGMENTS + 1))


def _dns_pointer_chain(hops: int) -> bytes:
    """A 64 KiB DNS reply: a TXT record whose data is a chain of `hops` compression pointers
    (each to the previous one), then as many A records as fit, each owner pointing at the
    end of the chain."""
    rd_start = 12 + 1 + 10
    chain = bytearray(b"\x00")
    for i in range(hops):
        here = rd_start + len(chain)
        chain += struct.pack("!H", 0xC000 | (rd_start if i == 0 else here - 2))
    last = rd_start + len(chain) - 2
    records = [b"\x00" + struct.pack("!HHIH", 16, 1, 60, len(chain)) + bytes(chain)]
    size = 12 + len(records[0])
    while size + 16 < 65535:
        records.append(struct.pack("!HHHIH", 0xC000 | last, 1, 1, 60, 4) + b"\x01\x02\x03\x04")
        size += 16
    return struct.pack("!HHHHHH", 1, 0x8180, 0, len(records), 0, 0) + b"".join(records)


def test_dns_pointer_chains_are_bounded():
    """A chain of thousands of backward pointers is no loop, but walking it for each of
    thousands of owner names took seconds per message; names now follow at most
    MAX_POINTER_HOPS pointers."""
    with time_limit(TIME_LIMIT):
        with pytest.raises(dns.Malformed, match="too many compression pointers"):
            dns.Message(_dns_pointer_chain(8000))
        ok = dns.Message(_dns_pointer_chain(dns.MAX_POINTER_HOPS - 1))
    assert len(ok.answers) > 4000 and ok.answers[1][0] == ""  # the chain ends at the root name


def test_fragment_floods_stay_bounded():
    """Repeating one fragment used to keep every copy until the 60 s timeout (unbounded
    memory), and thousands of tiny fragments made each one re-check all the others
    (seconds per datagram). A datagram now holds at most MAX_FRAGMENTS pieces / MAX_HELD
    bytes; beyond that it is dropped as `fragment_limit_exceeded`."""
    from pcapexfil.decode.fragments import MAX_FRAGMENTS, MAX_HELD, Reassembler

    names: list[str] = []

    def weird(name: str, addl: str | None) -> None:
        names.append(name)

    r = Reassembler()
    with time_limit(TIME_LIMIT):
        for _ in range(10_000):  # the same first fragment, over and over
            r.add(("a",), 1.0, 0, True, b"x" * 1480, b"h" * 20, weird)
            p = r.pending.get(("a",))
            assert p is None or (len(p.pieces) <= MAX_FRAGMENTS and p.size <= MAX_HELD)
        n = 8000  # tiny fragments with holes, first and last present
        r.add(("b",), 1.0, 0, True, b"x" * 8, b"h" * 20, weird)
        r.add(("b",), 1.0, 8 * (n + 1), False, b"x" * 8, b"h" * 20, weird)
        for i in range(n, 0, -2):
            r.add(("b",), 1.0, 8 * i, True, b"x" * 8, b"h" * 20, weird)
            p = r.pending.get(("b",))
            assert p is None or len(p.pieces) <= MAX_FRAGMENTS
    assert "fragment_limit_exceeded" in names
    # An ordinary fragmented datagram (35 pieces of 1480 bytes) still reassembles.
    r = Reassembler()
    payload = bytes(range(256)) * 200
    out = None
    for off in range(0, len(payload), 1480):
        piece = payload[off : off + 1480]
        out = r.add(("c",), 2.0, off, off + 1480 < len(payload), piece, b"h" * 20, weird)
    assert out == (b"h" * 20, payload)


def test_dns_name_table_full_keeps_the_newest_without_rescanning(monkeypatch):
    """With the (client, address) -> name table full of unexpired answers, every further
    answer used to rescan the whole table (0.2 s each at the 1M default) and was then
    dropped. Now the oldest tenth goes, so new answers are kept and the rescan is rare."""
    from pcapexfil.hooks import AnalyzerContext

    monkeypatch.setattr(dns, "MAX_NAMES", 1000)
    analyzer = dns.DnsAnalyzer(AnalyzerContext(out_dir=None))
    rebuilds = 0
    with time_limit(TIME_LIMIT):
        for i in range(20_000):
            before = analyzer.table.names
            analyzer.remember("10.0.0.1", f"192.0.2.{i}", f"n{i}.example", 1e12, 1.0)
            rebuilds += analyzer.table.names is not before
            assert len(analyzer.table.names) <= 1000
    assert analyzer.name_for("10.0.0.1", "192.0.2.19999", 2.0) == "n19999.example"
    assert analyzer.name_for("10.0.0.1", "192.0.2.0", 2.0) is None  # the oldest went
    assert rebuilds <= 20_000 // 100 + 1  # one rescan per ~100 (a tenth of 1000) new answers
