"""The generator's pcaps, parsed back with dpkt, match labels.csv and are well-formed."""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import struct
from collections import defaultdict
from pathlib import Path

import dpkt
import numpy as np
import pytest
from click.testing import CliRunner

from pcapexfil.cli import main
from pcapexfil.synth import EXFIL_KINDS, SynthConfig, generate, read_labels, tls
from pcapexfil.synth.labels import DNS_LOOKALIKE_KINDS
from pcapexfil.synth.wire import FrameSink, Message, TcpFlow, halves, mac_for

CONFIG = dict(days=11, hosts=3, seed=7, scale=0.3, episodes_per_kind=1)
UDP_KINDS = ("dns_tunnel", *DNS_LOOKALIKE_KINDS)


def _read(path: Path) -> list[tuple[float, int, int, bytes]]:
    """(ts, caplen, wirelen, frame) of every record, read with dpkt."""
    out = []
    with open(path, "rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        for ts, buf in reader:
            out.append((ts, len(buf), 0, buf))
    # dpkt's Reader hides the wire length; read it from the record headers ourselves.
    raw = path.read_bytes()
    pos, i = 24, 0
    while pos < len(raw):
        _, _, caplen, wirelen = struct.unpack_from("<IIII", raw, pos)
        ts, cap, _, buf = out[i]
        out[i] = (ts, cap, wirelen, buf)
        pos += 16 + caplen
        i += 1
    assert i == len(out)
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = generate(SynthConfig(str(out), **CONFIG))
    packets = []
    for f in summary.files:
        packets += _read(Path(f))
    return out, summary, packets


def _tcp_packets(packets, with_raw=False):
    for ts, caplen, wirelen, buf in packets:
        eth = dpkt.ethernet.Ethernet(buf)
        ip = eth.data
        if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
            yield (ts, caplen, wirelen, ip, ip.data) + ((buf[14:],) if with_raw else ())


def test_one_file_per_day_and_episodes_after_baseline(dataset):
    out, summary, _ = dataset
    names = sorted(p.name for p in out.glob("*.pcap"))
    start = SynthConfig("x").start
    assert names == [f"day-{start + dt.timedelta(days=d)}.pcap" for d in range(CONFIG["days"])]
    labels = read_labels(out / "labels.csv")
    assert sorted(lb.kind for lb in labels if not lb.benign) == sorted(EXFIL_KINDS)
    baseline_end = dt.datetime(start.year, start.month, start.day, tzinfo=dt.timezone.utc).timestamp() + 10 * 86400
    assert all(lb.start >= baseline_end for lb in labels)
    # Every file holds only its own day's packets (the last one may run past midnight).
    for path in sorted(out.glob("*.pcap"))[:-1]:
        day = dt.datetime.fromisoformat(path.stem[4:]).replace(tzinfo=dt.timezone.utc).timestamp()
        ts = [p[0] for p in _read(path)]
        assert day <= min(ts) and max(ts) < day + 86400
        assert ts == sorted(ts)


def test_labels_match_payload_bytes_within_header_overhead(dataset):
    out, _, packets = dataset
    labels = [lb for lb in read_labels(out / "labels.csv") if lb.kind not in UDP_KINDS]
    sent = defaultdict(int)
    received = defaultdict(int)
    ip_bytes = defaultdict(int)
    pkts = defaultdict(int)
    for ts, _, wirelen, ip, tcp in _tcp_packets(packets):
        src, dst = socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst)
        # The IP total length, not the captured bytes, is what the wire carried.
        assert wirelen == 14 + ip.len
        payload = ip.len - ip.hl * 4 - tcp.off * 4
        for lb in labels:
            if lb.start - 1e-6 <= ts <= lb.end + 1e-6:
                if src == lb.orig_h and dst in lb.resp_h and tcp.dport == lb.resp_p:
                    sent[lb.id] += payload
                    ip_bytes[lb.id] += ip.len
                    pkts[lb.id] += 1
                elif dst == lb.orig_h and src in lb.resp_h and tcp.sport == lb.resp_p:
                    received[lb.id] += payload
    for lb in labels:
        assert sent[lb.id] == lb.bytes_sent, lb
        assert received[lb.id] == lb.bytes_received, lb
        # Header overhead: 20 bytes IP + 32 bytes TCP (timestamps) per packet, 40 on the SYN.
        overhead = ip_bytes[lb.id] - lb.bytes_sent
        assert overhead == pkts[lb.id] * 52 + lb.conns * 8, lb
        # At least one full-MSS data segment per 1448 bytes sent, plus SYN/ACK/FIN/ACK per conn.
        assert pkts[lb.id] >= lb.bytes_sent // 1448 + 3 * lb.conns


def test_checksums_and_tcp_state_machine(dataset):
    _, _, packets = dataset
    seen: dict[tuple, list[int]] = defaultdict(list)
    next_seq: dict[tuple, int] = {}
    for _, _, _, ip, tcp, raw in _tcp_packets(packets, with_raw=True):
        assert dpkt.in_cksum(raw[: ip.hl * 4]) == 0
        # Uncaptured filler is zeros, which add nothing to the sum: the captured part decides.
        segment = raw[ip.hl * 4 :]
        pseudo = ip.src + ip.dst + struct.pack("!BBH", 0, 6, ip.len - ip.hl * 4)
        if len(segment) & 1:
            segment += b"\0"
        assert dpkt.in_cksum(pseudo + segment) == 0
        key = (ip.src, tcp.sport, ip.dst, tcp.dport)
        seen[key].append(tcp.flags)
        if key in next_seq:
            assert tcp.seq == next_seq[key]  # in-order, gap-free sequence space per direction
        payload = ip.len - ip.hl * 4 - tcp.off * 4
        next_seq[key] = (tcp.seq + payload + (1 if tcp.flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)) % 2**32
    conns = 0
    for (src, sport, dst, dport), flags in seen.items():
        if flags[0] == dpkt.tcp.TH_SYN:
            conns += 1
            back = seen[(dst, dport, src, sport)]
            assert back[0] == dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK
            assert flags[1] == dpkt.tcp.TH_ACK
            assert any(f & dpkt.tcp.TH_FIN for f in flags) and any(f & dpkt.tcp.TH_FIN for f in back)
    assert conns > 100


def test_application_layer_parses(dataset):
    out, _, packets = dataset
    labels = {lb.kind: lb for lb in read_labels(out / "labels.csv")}
    bulk, post = labels["bulk_https_new_domain"], labels["http_post_80"]
    snis, ja3s, posted, answers = set(), set(), defaultdict(int), defaultdict(set)
    for ts, _, _, buf in packets:
        ip = dpkt.ethernet.Ethernet(buf).data
        l4 = ip.data
        if isinstance(l4, dpkt.udp.UDP) and l4.sport == 53:
            msg = dpkt.dns.DNS(l4.data)
            for rr in msg.an:
                if rr.type == dpkt.dns.DNS_A:
                    assert rr.ttl > 0
                    answers[rr.name].add(socket.inet_ntoa(rr.rdata))
        if not isinstance(l4, dpkt.tcp.TCP) or not l4.data:
            continue
        data = bytes(l4.data)
        if data[:1] == b"\x16" and data[5:6] == b"\x01":
            hello = dpkt.ssl.TLSRecord(data)
            ch = dpkt.ssl.TLSHandshake(hello.data).data
            sni = [ext for ext in ch.extensions if ext[0] == 0]
            snis.add(sni[0][1][5:].decode())
        elif data[:1] == b"\x16" and data[5:6] == b"\x02":
            sh = dpkt.ssl.TLSHandshake(dpkt.ssl.TLSRecord(data).data).data
            exts = "-".join(str(e[0]) for e in getattr(sh, "extensions", []))
            ja3s.add(f"{sh.version},{sh.ciphersuite.code},{exts}")
        elif data.startswith(b"POST "):
            head = data.index(b"\r\n\r\n") + 4
            lines = data[:head].decode("ascii").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
            assert lines[0].endswith(" HTTP/1.1")
            posted[headers["host"]] += head + int(headers["content-length"])
    assert bulk.domain in snis
    assert set(bulk.resp_h) <= answers[bulk.domain]
    # The ServerHellos are the profiles' (their JA3S strings), and several of them occur.
    assert ja3s <= {tls.ja3s_string(p) for p in tls.SERVER_PROFILES}
    assert len(ja3s) >= 3
    # Request heads plus their Content-Length bodies are exactly what the label says was sent.
    assert posted[post.domain] == post.bytes_sent


def test_dns_labels_match_their_udp_messages(dataset):
    """DNS labels (tunnel and look-alikes): bytes_sent and conns are the UDP payload and the
    number of their queries (told apart by name, type and port); the tunnel's names carry long
    encoded labels of one record type."""
    out, _, packets = dataset
    labels = [lb for lb in read_labels(out / "labels.csv") if lb.kind in UDP_KINDS]
    assert {lb.kind for lb in labels} == set(UDP_KINDS)

    def belongs(lb, name: str, qtype: int, dport: int) -> bool:
        if lb.kind == "benign_dns_mdns":
            return dport in (5353, 5355)
        if lb.kind == "benign_dns_txt":
            return qtype == dpkt.dns.DNS_TXT
        return dport == 53 and name.endswith("." + lb.domain)

    sent: dict[str, int] = defaultdict(int)
    queries: dict[str, int] = defaultdict(int)
    tunnel_types, longest = set(), 0
    for ts, _, _, buf in packets:
        ip = dpkt.ethernet.Ethernet(buf).data
        if not isinstance(ip.data, dpkt.udp.UDP) or ip.data.sport in (53,):
            continue
        udp, src, dst = ip.data, socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst)
        question = dpkt.dns.DNS(udp.data).qd[0]
        for lb in labels:
            if src == lb.orig_h and dst in lb.resp_h and lb.start - 1e-6 <= ts <= lb.end \
                    and belongs(lb, question.name, question.type, udp.dport):
                sent[lb.id] += len(udp.data)
                queries[lb.id] += 1
                if lb.kind == "dns_tunnel":
                    tunnel_types.add(question.type)
                    longest = max(longest, *(len(x) for x in question.name.split(".")))
    for lb in labels:
        assert sent[lb.id] == lb.bytes_sent, lb
        if lb.kind != "dns_tunnel":  # a tunnel's conns are its sockets
            assert queries[lb.id] == lb.conns, lb
    tunnel = next(lb for lb in labels if lb.kind == "dns_tunnel")
    assert tunnel.bytes_sent >= 200_000 and len(tunnel_types) == 1 and longest == 60


def test_ja3s_known_value():
    profile = tls.ServerProfile("doc-example", 49199, (65281, 0, 11))
    assert hashlib.md5(tls.ja3s_string(profile).encode()).hexdigest() == "a704460bd0a887c62e4f462bf1bba96b"
    raw = tls.server_hello(profile, np.random.default_rng(0))
    sh = dpkt.ssl.TLSHandshake(raw).data
    assert sh.ciphersuite.code == 49199 and [e[0] for e in sh.extensions] == [65281, 0, 11]


def test_full_payload_frames_match_truncated_counts():
    def run(full: bool):
        sink = FrameSink(full)
        c, s = halves(b"\x0a\x00\x00\x05", mac_for(5), b"\x5d\xb8\xd8\x22", 50000, 443, 6, 128, 52, 1, 2)
        flow = TcpFlow(sink, c, s, 1_700_000_000_000_000, 20_000, 50e6, 1000, 2000)
        flow.handshake()
        flow.send(True, Message(b"", 10_000, records=True))
        flow.send(False, Message(b"HTTP/1.1 200 OK\r\n\r\n", 5_000))
        flow.close()
        return sink.frames, flow

    trunc, flow_t = run(False)
    full, flow_f = run(True)
    assert flow_t.client_bytes == flow_f.client_bytes == 10_000
    assert flow_t.server_bytes == 5_000
    assert [f.wirelen for f in trunc] == [f.wirelen for f in full]
    assert all(len(f.data) == f.wirelen for f in full)
    assert any(len(f.data) < f.wirelen for f in trunc)
    for t, f in zip(trunc, full):
        assert f.data.startswith(t.data) and not f.data[len(t.data):].strip(b"\0")
    # TLS filler: every data segment of the client message is one application_data record.
    for f in full:
        ip = dpkt.ethernet.Ethernet(f.data).data
        if ip.src == b"\x0a\x00\x00\x05" and ip.data.data:
            rec = dpkt.ssl.TLSRecord(bytes(ip.data.data))
            assert rec.type == 23 and rec.length == len(ip.data.data) - 5


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = dict(days=11, hosts=1, scale=0.1, episodes_per_kind=1)
    a, b, c = (generate(SynthConfig(str(tmp_path / n), seed=s, **cfg)) for n, s in (("a", 3), ("b", 3), ("c", 4)))
    for fa, fb in zip(a.files, b.files):
        assert Path(fa).read_bytes() == Path(fb).read_bytes()
    assert (tmp_path / "a/labels.csv").read_bytes() == (tmp_path / "b/labels.csv").read_bytes()
    assert Path(a.files[0]).read_bytes() != Path(c.files[0]).read_bytes()


def test_cli_synth_and_bad_options(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["synth", "-o", str(tmp_path / "d"), "--days", "11", "--hosts", "1", "--seed", "2",
                               "--scale", "0.1", "--episodes-per-kind", "1", "--start", "2024-01-01"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "d/day-2024-01-11.pcap").exists() and (tmp_path / "d/labels.csv").exists()
    for bad in (["--days", "5"], ["--local-nets", "nonsense"], ["--start", "yesterday"], ["--scale", "0"]):
        res = runner.invoke(main, ["synth", "-o", str(tmp_path / "e"), *bad])
        assert res.exit_code != 0
        assert "Traceback" not in res.output and res.output.strip().count("\n") <= 3, res.output
