"""SYN flood / port scan with legitimate connections inside it: peak memory with the flow
table cap, and whether the legitimate connections come out as they do without the flood.

    python benchmarks/flood.py                      # 2 million packets, --max-flows 100000
    python benchmarks/flood.py --packets 500000 --peer          # and the same without a cap
    python benchmarks/flood.py --engine fast                    # the numba engine's table

The capture is written in bulk with numpy (one 70-byte record template, columns patched in),
not packet by packet. Half the flood is a SYN flood on 10.99.0.1:80 from random sources and
random source ports, half a port scan of 10.99.0.2 from one host with random source ports;
200k packets per second of network time, so every half-open flow is still inside Zeek's 5 s
SYN timeout when the next arrives (without a cap the table would hold them all).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FLOOD_RATE = 200_000  # packets per second of network time
T0 = 1_700_000_000.0


@dataclass(frozen=True)
class Legit:
    client: str
    sport: int
    server: str
    dport: int
    up: int  # payload bytes client -> server
    down: int  # payload bytes server -> client
    at: float  # start, as a fraction of the flood's duration


LEGIT = (
    Legit("192.168.1.10", 50001, "93.184.216.34", 443, 4000, 12000, 0.1),
    Legit("192.168.1.11", 50002, "93.184.216.35", 80, 600, 30000, 0.45),
    Legit("192.168.1.12", 50003, "198.51.100.7", 22, 9000, 2000, 0.8),
)


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _frame(src: str, dst: str, sport: int, dport: int, flags: int, seq: int, ack: int, data: bytes = b"") -> bytes:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + data
    tsum = _csum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", tsum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + tcp


def legit_packets(c: Legit, start: float) -> list[tuple[float, bytes]]:
    """A complete connection: handshake, data both ways in 1000-byte segments every 10 ms
    (active more often than the cap's eviction horizon), FIN both ways."""
    out: list[tuple[float, bytes]] = []
    t = start
    cs, ss = 1000, 5000
    fwd = lambda fl, data=b"": _frame(c.client, c.server, c.sport, c.dport, fl, cs, ss, data)  # noqa: E731
    out.append((t, _frame(c.client, c.server, c.sport, c.dport, 0x02, cs - 1, 0)))
    out.append((t + 0.001, _frame(c.server, c.client, c.dport, c.sport, 0x12, ss - 1, cs)))
    out.append((t + 0.002, fwd(0x10)))
    t += 0.01
    up, down = c.up, c.down
    while up or down:
        if up:
            n = min(1000, up)
            out.append((t, fwd(0x18, b"u" * n)))
            cs += n
            up -= n
        if down:
            n = min(1000, down)
            out.append((t + 0.001, _frame(c.server, c.client, c.dport, c.sport, 0x18, ss, cs, b"d" * n)))
            ss += n
            down -= n
        out.append((t + 0.002, fwd(0x10)))
        t += 0.01
    out.append((t, fwd(0x11)))
    out.append((t + 0.001, _frame(c.server, c.client, c.dport, c.sport, 0x11, ss, cs + 1)))
    out.append((t + 0.002, _frame(c.client, c.server, c.sport, c.dport, 0x10, cs + 1, ss + 1)))
    return out


def write_flood(path: str | os.PathLike[str], packets: int, seed: int = 7, legit: bool = True) -> Path:
    """A pcap of `packets` flood SYNs (+ the LEGIT connections when `legit`), in time order."""
    rng = np.random.default_rng(seed)
    n = packets
    template = np.frombuffer(struct.pack("<IIII", 0, 0, 54, 54) + _frame("10.66.0.1", "10.99.0.1", 1, 80, 0x02, 0, 0),
                             dtype=np.uint8)
    rec = np.tile(template, (n, 1))
    ts = T0 + np.arange(n, dtype=np.float64) / FLOOD_RATE
    sec = ts.astype(np.uint64)
    usec = np.round((ts - sec) * 1e6).astype(np.uint64)
    rec[:, 0:4] = sec.astype("<u4").view(np.uint8).reshape(n, 4)
    rec[:, 4:8] = usec.astype("<u4").view(np.uint8).reshape(n, 4)
    scan = rng.random(n) < 0.5
    src = np.where(scan, 0x0A420001, 0x0A420000 | rng.integers(2, 0xFFFF, n)).astype(">u4")
    dst = np.where(scan, 0x0A630002, 0x0A630001).astype(">u4")
    sport = rng.integers(1024, 65536, n).astype(">u2")
    dport = np.where(scan, rng.integers(1, 65536, n), 80).astype(">u2")
    seq = rng.integers(0, 2**32, n, dtype=np.uint64).astype(">u4")
    ip0, tcp0 = 16 + 14, 16 + 34
    rec[:, ip0 + 12 : ip0 + 16] = src.view(np.uint8).reshape(n, 4)
    rec[:, ip0 + 16 : ip0 + 20] = dst.view(np.uint8).reshape(n, 4)
    rec[:, ip0 + 10 : ip0 + 12] = 0  # checksums unset: not verified by default (as zeek -C)
    rec[:, tcp0 : tcp0 + 2] = sport.view(np.uint8).reshape(n, 2)
    rec[:, tcp0 + 2 : tcp0 + 4] = dport.view(np.uint8).reshape(n, 2)
    rec[:, tcp0 + 4 : tcp0 + 8] = seq.view(np.uint8).reshape(n, 4)
    rec[:, tcp0 + 16 : tcp0 + 18] = 0
    extra: list[tuple[float, bytes]] = []
    if legit:
        span = n / FLOOD_RATE
        for c in LEGIT:
            extra.extend(legit_packets(c, T0 + c.at * span))
        extra.sort(key=lambda p: p[0])
    p = Path(path)
    with open(p, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        at = np.searchsorted(ts, [e[0] for e in extra], side="right") if extra else np.array([], dtype=int)
        prev = 0
        for (t, frame), cut in zip(extra, at, strict=True):
            f.write(rec[prev:cut].tobytes())
            prev = int(cut)
            s = int(t)
            f.write(struct.pack("<IIII", s, round((t - s) * 1e6), len(frame), len(frame)) + frame)
        f.write(rec[prev:].tobytes())
    return p


def write_legit_only(path: str | os.PathLike[str], packets: int) -> Path:
    """The LEGIT connections at the same times, without the flood (the oracle run)."""
    span = packets / FLOOD_RATE
    pkts = sorted((p for c in LEGIT for p in legit_packets(c, T0 + c.at * span)), key=lambda p: p[0])
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for t, frame in pkts:
            s = int(t)
            f.write(struct.pack("<IIII", s, round((t - s) * 1e6), len(frame), len(frame)) + frame)
    return Path(path)


def read_conn_log(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows of a Zeek TSV conn.log as {field: text}."""
    rows, fields = [], []
    for line in Path(path).read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


_MEASURE = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "sys.stderr.write(p.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "sys.exit(p.returncode)")


def run_conn(pcap: str | os.PathLike[str], out: str | os.PathLike[str], max_flows: int,
             engine: str = "reference") -> tuple[int, str, int]:
    """`pcapexfil conn` in a child of a fresh measuring process: (exit status, stderr, peak RSS KiB).
    The measuring process is new, so RUSAGE_CHILDREN sees only this run."""
    cmd = [sys.executable, "-c", _MEASURE, sys.executable, "-c", "from pcapexfil.cli import main; main()",
           "conn", str(pcap), "-o", str(out), "--max-flows", str(max_flows), "--seed", "1", "--engine", engine]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    return p.returncode, p.stderr, int(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else 0


def legit_rows(rows: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    """The LEGIT connections' rows by (client, port), without the run-dependent uid."""
    want = {(c.client, str(c.sport)) for c in LEGIT}
    out = {}
    for r in rows:
        k = (r["id.orig_h"], r["id.orig_p"])
        if k in want:
            assert k not in out, f"{k} split into several records"
            out[k] = {f: v for f, v in r.items() if f != "uid"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--max-flows", type=int, default=100_000)
    ap.add_argument("--peer", action="store_true", help="also run without a cap (needs ~5 KB per flood packet)")
    ap.add_argument("--engine", choices=("reference", "fast"), default="reference")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        pcap = write_flood(Path(tmp) / "flood.pcap", args.packets)
        gen = time.perf_counter() - t
        oracle_pcap = write_legit_only(Path(tmp) / "legit.pcap", args.packets)
        status, err, base_rss = run_conn(oracle_pcap, Path(tmp) / "oracle", 0, args.engine)
        assert status == 0, err
        oracle = legit_rows(read_conn_log(Path(tmp) / "oracle" / "conn.log"))
        runs = [args.max_flows] + ([0] if args.peer else [])
        result = {"packets": args.packets, "engine": args.engine, "generate_s": round(gen, 2),
                  "pcap_mb": round(os.path.getsize(pcap) / 2**20, 1), "tiny_run_rss_mb": round(base_rss / 1024)}
        for cap in runs:
            t = time.perf_counter()
            status, err, rss = run_conn(pcap, Path(tmp) / f"out{cap}", cap, args.engine)
            took = time.perf_counter() - t
            got = legit_rows(read_conn_log(Path(tmp) / f"out{cap}" / "conn.log"))
            result[f"max_flows={cap or 'none'}"] = {
                "exit": status, "seconds": round(took, 1), "pkts_per_s": round(args.packets / took),
                "peak_rss_mb": round(rss / 1024), "legit_equal_to_oracle": got == oracle,
                "summary": err.strip().splitlines()[-1] if err.strip() else ""}
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
