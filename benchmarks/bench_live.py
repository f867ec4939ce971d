"""Packet rate each capturer keeps up with on a veth before the kernel drops frames.

Two namespaces joined by a veth (tests/netns.py); a sender in one replays a pcap (default:
a generated one, 2000 flows: TCP/443 midstream data and UDP/53 frames that are not DNS; for
realistic traffic, `--pcap` a capture of `benchmarks/bench_engine.py` with `--max-frames
500000`; frames cut by a snap length are sent padded to their wire length) through a raw
socket at a paced rate for a few seconds;
the capturer on the other end is stopped afterwards and reports its kernel drop counter. The
rate ladder doubles until drops exceed 0.1 % of the frames sent, then bisects between the
last rung kept up with and that one (`--refine` steps). Capturers, same ring size:

- `live`:        `pcapexfil live` (full pipeline: decode, flow table, identifiers, detector)
- `tcpdump`:     `tcpdump -w /dev/null` (the peer; installed with apt-get when missing)
- `tpacket-raw`: pcapexfil's TPACKET_V3 source alone (blocks copied into Chunks), then dropped
- `pcapy-raw`:   pcapy-ng (libpcap) `next_batch` alone, frames counted and dropped

Run as root: `python benchmarks/bench_live.py [--pcap FILE [--max-frames N]] [--seconds 3] [--buffer-mb 4]`.
The top rung is whatever the Python sender reaches; a capturer that never dropped is
reported as ">= that rate". Prints one line per run and a summary with ratios to tcpdump.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def make_pcap(path: str, frames: int = 20000) -> None:
    """Ethernet/IPv4 frames of 2000 flows (UDP and TCP with data), 60..600 bytes."""
    import random

    import dpkt

    rnd = random.Random(1)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(frames):
        flow = i % 2000
        src = bytes([10, 250, 77, 2 + flow % 200])
        dst = bytes([10, 250, 88, 1 + flow // 200])
        payload = b"x" * rnd.randrange(20, 560)
        if flow % 2:
            l4 = dpkt.udp.UDP(sport=20000 + flow, dport=53, data=payload)
            l4.ulen = len(l4)
            proto = dpkt.ip.IP_PROTO_UDP
        else:
            l4 = dpkt.tcp.TCP(sport=30000 + flow, dport=443, seq=1000 + i * 600, flags=dpkt.tcp.TH_ACK,
                              data=payload)
            proto = dpkt.ip.IP_PROTO_TCP
        ip = dpkt.ip.IP(src=src, dst=dst, p=proto, ttl=64, data=l4)
        ip.len = len(ip)
        eth = bytes(dpkt.ethernet.Ethernet(dst=b"\x02\0\0\0\0\x01", src=b"\x02\0\0\0\0\x02", type=0x0800, data=ip))
        out.append(struct.pack("<IIII", 1700000000 + i // 1000, (i % 1000) * 1000, len(eth), len(eth)) + eth)
    with open(path, "wb") as fh:
        fh.write(b"".join(out))


def read_frames(path: str, limit: int | None = None) -> list[bytes]:
    """The first `limit` frames as they were on the wire: a frame cut by the capture's snap
    length is padded with zeros to its wire length (sent cut, its IP length would exceed the
    frame)."""
    from itertools import islice

    from pcapexfil.source import open_capture
    from pcapexfil.weird import Weirds

    return [raw.data + bytes(max(0, raw.wirelen - len(raw.data)))
            for raw in islice(open_capture(path, Weirds()), limit)]


def send(iface: str, pcap: str, rate: float, seconds: float, limit: int | None) -> None:
    """(in the sender namespace) replay the frames in a loop at `rate` frames/s; print frames sent."""
    import socket

    frames = read_frames(pcap, limit)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 24)
    n, i, start = 0, 0, time.perf_counter()
    end = start + seconds
    chunk = max(1, int(rate / 1000))
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        due = int((now - start) * rate)
        if n >= due:
            time.sleep(min(0.0005, end - now))
            continue
        for _ in range(min(chunk, due - n)):
            try:
                sock.send(frames[i])
            except BlockingIOError:
                pass
            i = (i + 1) % len(frames)
            n += 1
    print(n, time.perf_counter() - start)


def consume(kind: str, iface: str, buffer_mb: int) -> None:
    """(in the capture namespace) count frames until SIGTERM; print 'recv drop'."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    if kind == "tpacket-raw":
        import numpy as np

        from pcapexfil.fast.ring import block_chunk
        from pcapexfil.source.live import LiveCapture

        cap = LiveCapture(iface, buffer_bytes=buffer_mb << 20)
        block_chunk(np.zeros(0, np.uint8), 0, 0, 0, 1, "", 0)  # load the kernel before frames come
        print("ready", flush=True)
        for _block in cap.blocks():
            if stop:
                break
        st = cap.read_stats()
        print(st.received, st.dropped, flush=True)
    else:
        import pcapy

        cap = pcapy.create(iface)
        cap.set_snaplen(262144)
        cap.set_promisc(True)
        cap.set_timeout(100)
        cap.set_buffer_size(buffer_mb << 20)
        cap.activate()
        cap.setnonblock(True)  # a blocking read would not return to Python for the signal
        print("ready", flush=True)
        while not stop:
            _pkts, meta = cap.next_batch(1024)
            if not meta:
                time.sleep(0.001)
        recv, drop, _ifdrop = cap.stats()
        print(recv + drop, drop, flush=True)  # pcap_stats' ps_recv excludes ring drops on Linux TPACKET_V3


def ensure_tcpdump() -> str:
    path = shutil.which("tcpdump")
    if path is None:
        print("bench_live: installing tcpdump with apt-get (the benchmark's peer)", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "tcpdump"], check=True, capture_output=True)
        path = shutil.which("tcpdump")
    assert path is not None
    return path


def one_run(pair, tool: str, rate: float, args: argparse.Namespace, tmp: str) -> tuple[int, int, int, float]:
    """(frames sent, received by capturer, dropped by kernel, seconds)."""
    ns = pair.ns_a
    out = os.path.join(tmp, f"out-{tool}-{int(rate)}")
    if tool == "live":
        argv = ["pcapexfil", "live", "-i", pair.if_a, "-o", out, "--buffer-size", str(args.buffer_mb),
                "--workers", str(args.live_workers)]
    elif tool == "tcpdump":
        argv = [args.tcpdump, "-i", pair.if_a, "-n", "-w", "/dev/null", "-B", str(args.buffer_mb * 1024)]
    else:
        argv = [sys.executable, __file__, "--consume", tool, "--iface", pair.if_a, "--buffer-mb", str(args.buffer_mb)]
    proc = subprocess.Popen(pair.cmd(ns, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Ready: the capturer's socket is open (live prints "listening", tcpdump "listening on", raw "ready").
    stream = proc.stdout if tool.endswith("-raw") else proc.stderr
    while True:
        line = stream.readline()
        if not line or "listening" in line or line.strip() == "ready":
            break
    sent_out = subprocess.run(pair.cmd(pair.ns_b, [sys.executable, __file__, "--send", "--iface", pair.if_b,
                                                   "--pcap", args.pcap, "--rate", str(rate),
                                                   "--max-frames", str(args.max_frames),
                                                   "--seconds", str(args.seconds)]),
                              capture_output=True, text=True, check=True).stdout.split()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT if tool == "tcpdump" else signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    sent, secs = int(sent_out[0]), float(sent_out[1])
    if tool == "live":
        m = re.search(r"(\d+) packets received, (\d+) dropped by the kernel", stderr)
    elif tool == "tcpdump":
        recv = re.search(r"(\d+) packets received by filter", stderr)
        drop = re.search(r"(\d+) packets dropped by kernel", stderr)
        assert recv and drop, stderr
        return sent, int(recv.group(1)), int(drop.group(1)), secs
    else:
        m = re.search(r"^(\d+) (\d+)$", stdout.strip().splitlines()[-1])
    assert m, (stdout, stderr)
    return sent, int(m.group(1)), int(m.group(2)), secs


def highest_rate(pair: object, tool: str, args: argparse.Namespace, tmp: str) -> tuple[float, bool]:
    """The highest rate `tool` keeps up with (frames/s sent) and whether that is the sender's
    ceiling: the rate doubles until drops exceed 0.1 % of the frames sent, then `--refine`
    steps of bisection (geometric) between the last rung kept up with and the first that
    dropped (doubling alone reports up to half the rate a capturer keeps up with)."""
    rate, good, kept = args.start_rate, 0.0, 0.0

    def dropped(target: float) -> bool:
        nonlocal kept
        sent, recv, drop, secs = one_run(pair, tool, target, args, tmp)
        achieved = sent / secs
        print(f"{tool:12s} target {target:9.0f}/s sent {achieved:9.0f}/s  received {recv:8d}  "
              f"kernel drops {drop:7d}", flush=True)
        if drop > 0.001 * sent:
            return True
        kept = max(kept, achieved)
        if achieved < 0.8 * target:
            raise _SenderCeiling
        return False

    try:
        while not dropped(rate):
            good, rate = rate, rate * 2
        for _ in range(args.refine if good else 0):
            mid = math.sqrt(good * rate)
            if dropped(mid):
                rate = mid
            else:
                good = mid
    except _SenderCeiling:  # no higher rung to try
        return kept, True
    return kept, False


class _SenderCeiling(Exception):
    """The sender could not reach the rate asked for."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pcap")
    ap.add_argument("--max-frames", type=int, default=0, help="replay only the first N frames (0: all)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--buffer-mb", type=int, default=4)
    ap.add_argument("--start-rate", type=float, default=5000)
    ap.add_argument("--refine", type=int, default=3, help="bisection steps after the first rung that dropped")
    ap.add_argument("--tools", default="live,tcpdump,tpacket-raw,pcapy-raw")
    ap.add_argument("--live-workers", type=int, default=1, help="pcapexfil live --workers (ring size is per worker)")
    ap.add_argument("--send", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--consume", help=argparse.SUPPRESS)
    ap.add_argument("--iface", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.send:
        send(args.iface, args.pcap, args.rate, args.seconds, args.max_frames or None)
        return
    if args.consume:
        consume(args.consume, args.iface, args.buffer_mb)
        return

    import netns

    reason = netns.available()
    if reason:
        sys.exit(f"bench_live: {reason}")
    tools = args.tools.split(",")
    if "tcpdump" in tools:
        args.tcpdump = ensure_tcpdump()
    with tempfile.TemporaryDirectory() as tmp, netns.veth_pair(subnet=77) as pair:
        if not args.pcap:
            args.pcap = os.path.join(tmp, "replay.pcap")
            make_pcap(args.pcap)
        best = {tool: highest_rate(pair, tool, args, tmp) for tool in tools}
        ref = best.get("tcpdump")
        print("\nhighest rate without kernel drops (frames/s, ratio to tcpdump):")
        for tool, (value, ceiling) in best.items():
            ratio = f"{value / ref[0]:.2f}" if ref and ref[0] else "-"
            print(f"  {tool:12s} {'>=' if ceiling else '  '}{value:9.0f}   x{ratio}"
                  + ("  (sender's ceiling)" if ceiling else ""))


if __name__ == "__main__":
    main()
