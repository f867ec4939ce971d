"""Fast reader + numba parser throughput against dpkt, measured in the same run.

    python benchmarks/bench_fast_parse.py                     # ~3M packets from the example dataset
    python benchmarks/bench_fast_parse.py --packets 10000000 --workdir /tmp/bench

Builds one large classic pcap by repeating the records of a sample (default: the bundled
synth example, fixtures/example/*.pcap.gz; `--sample` takes any captures, e.g. a Zeek corpus
trace), shifting timestamps per repetition so time keeps increasing. Then times, on that file:

- dpkt: a plain `dpkt.pcap.Reader` loop, and the same loop decoding `dpkt.ethernet.Ethernet`
  (the closest dpkt peer of the parser);
- the reference path the fast one replaces: `source.open_captures` + `decode.Decoder` (on the
  first `--reference-packets` records only: it is slow);
- fast, in process with the JIT cache already loaded: `iter_chunks` (record walk only) and
  `iter_batches` (walk + parse: PACKET_DTYPE rows and the SLOW RawPackets);
- fast, whole process: a fresh interpreter running `iter_batches` over the file (imports and
  numba cache load included), and the same on a one-packet file (the fixed start-up cost).

Prints packets/s, MB/s (file size), and the ratios to the dpkt loops. With `--formats
pcapng gzip` the same records are also written as pcapng (one EPB each) and as a gzip pcap,
and each is timed against dpkt reading that format (`dpkt.pcapng.Reader`; `dpkt.pcap.Reader`
over `gzip.open`).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import dpkt
import numpy as np

from pcapexfil.fast.reader import iter_batches, iter_chunks
from pcapexfil.source import open_captures
from pcapexfil.weird import Weirds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_capture(sample: list[str], packets: int, out: str) -> None:
    """Write `out`: the sample's records repeated until `packets`, time shifted per repetition."""
    raws = list(open_captures(sample, Weirds()))
    linktypes = {p.linktype for p in raws}
    if len(linktypes) != 1:
        raise SystemExit(f"sample mixes link types {sorted(linktypes)}: give captures of one link type")
    parts, hdr_at, pos = [], [], 0
    for p in raws:
        sec = int(p.ts)
        parts.append(struct.pack("<IIII", sec, round((p.ts - sec) * 1e6), len(p.data), p.wirelen) + p.data)
        hdr_at.append(pos)
        pos += 16 + len(p.data)
    block = np.frombuffer(b"".join(parts), np.uint8)
    at = np.array(hdr_at, np.int64)
    span = int(raws[-1].ts - raws[0].ts) + 1
    reps = max(1, -(-packets // len(raws)))
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktypes.pop()))
        for r in range(reps):
            rep = block.copy()
            if r:  # seconds fields are not 4-byte aligned: add r*span byte-wise
                old = sum(rep[at + k].astype(np.uint64) << np.uint64(8 * k) for k in range(4))
                new = old + np.uint64(r * span)
                for k in range(4):
                    rep[at + k] = ((new >> np.uint64(8 * k)) & np.uint64(0xFF)).astype(np.uint8)
            f.write(rep.tobytes())


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    t = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - t


def dpkt_loop(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        for _ts, _buf in dpkt.pcap.Reader(f):
            n += 1
    return n


def dpkt_ethernet(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            dpkt.ethernet.Ethernet(buf)
            n += 1
    return n


def fast_chunks(path: str) -> int:
    return sum(len(c.offsets) for c in iter_chunks([path], Weirds()))


def fast_batches(path: str) -> int:
    return sum(len(b.packets) for b in iter_batches([path], Weirds()))


def reference(path: str, limit: int) -> int:
    from pcapexfil.decode import Decoder

    weirds = Weirds()
    decoder = Decoder(weirds)
    n = 0
    for raw in open_captures([path], weirds):
        decoder.decode(raw)
        n += 1
        if n >= limit:
            break
    return n


def to_pcapng(src: str, out: str) -> None:
    """The records of a pcap as one little-endian pcapng section, µs resolution, EPBs."""
    with open(out, "wb") as f:
        f.write(struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
        chunks = iter_chunks([src], Weirds())
        first = next(chunks)
        f.write(struct.pack("<IIHHIHHBxxxHHI", 1, 32, int(first.linktypes[0]), 0, 65535, 9, 1, 6, 0, 0, 32))
        for c in (first, *chunks):
            parts = []
            buf = c.buf.tobytes()
            for o, cap, wl, t in zip(c.offsets.tolist(), c.caplens.tolist(), c.wirelens.tolist(), c.ts.tolist()):
                units = round(t * 1e6)
                pad = -cap % 4
                n = 32 + cap + pad
                parts.append(struct.pack("<IIIIIII", 6, n, 0, units >> 32, units & 0xFFFFFFFF, cap, wl))
                parts.append(buf[o : o + cap] + b"\0" * pad + struct.pack("<I", n))
            f.write(b"".join(parts))


def dpkt_pcapng_loop(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        for _ts, _buf in dpkt.pcapng.Reader(f):
            n += 1
    return n


def dpkt_gzip_loop(path: str) -> int:
    n = 0
    with gzip.open(path, "rb") as f:
        for _ts, _buf in dpkt.pcap.Reader(f):
            n += 1
    return n


def fresh_process(path: str) -> tuple[int, float, int]:
    """(packets, wall seconds, peak RSS KiB) of a new interpreter running iter_batches."""
    code = (
        "import sys\n"
        "from pcapexfil.fast.reader import iter_batches\n"
        "from pcapexfil.weird import Weirds\n"
        "n = sum(len(b.packets) for b in iter_batches([sys.argv[1]], Weirds()))\n"
        # VmHWM restarts at exec (ru_maxrss would carry this parent's peak over)
        "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(n, hwm)\n"
    )
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, path], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    n, rss = out.stdout.split()
    return int(n), wall, int(rss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=3_000_000)
    ap.add_argument("--sample", nargs="*", default=sorted(glob.glob(os.path.join(ROOT, "fixtures/example/*.pcap.gz"))))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--reference-packets", type=int, default=300_000)
    ap.add_argument("--formats", nargs="*", default=[], choices=["pcapng", "gzip"],
                    help="also time these encodings of the same records against dpkt")
    ap.add_argument("--rss-check", action="store_true",
                    help="also run a fresh process on a 4x larger capture and compare peak RSS")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="bench-fast-")
    os.makedirs(work, exist_ok=True)
    big = os.path.join(work, f"big-{args.packets}.pcap")
    if not os.path.exists(big):
        build_capture(args.sample, args.packets, big)
    tiny = os.path.join(work, "one.pcap")
    with open(big, "rb") as f, open(tiny, "wb") as g:  # the first record alone
        head = f.read(24 + 16)
        g.write(head + f.read(int.from_bytes(head[32:36], "little")))
    size_mb = os.path.getsize(big) / 1e6

    fast_batches(tiny)  # JIT cache load / compile, outside the in-process timings
    with open(big, "rb") as f:  # page cache warm for everyone
        while f.read(1 << 24):
            pass
    rows: list[tuple[str, int, float]] = []
    for name, fn in (("dpkt Reader loop", dpkt_loop), ("dpkt Reader + Ethernet decode", dpkt_ethernet),
                     ("fast iter_chunks (walk)", fast_chunks), ("fast iter_batches (walk+parse)", fast_batches)):
        n, dt = timed(lambda fn=fn: fn(big))
        rows.append((name, n, dt))
    n, dt = timed(lambda: reference(big, args.reference_packets))
    rows.insert(2, (f"reference open_captures + Decoder (first {n:,})", n, dt))
    n_cold, wall_cold, rss = fresh_process(big)
    _, wall_start, rss_start = fresh_process(tiny)
    rows.append(("fast iter_batches, fresh process (imports + JIT cache load)", n_cold, wall_cold))

    base = rows[0][1] / rows[0][2]
    base_eth = rows[1][1] / rows[1][2]
    print(f"\ncapture: {big}  {rows[0][1]:,} packets, {size_mb:.0f} MB")
    print(f"fresh process: start-up alone (one-packet file) {wall_start:.2f} s, peak RSS {rss_start / 1024:.0f} MiB; "
          f"on the capture peak RSS {rss / 1024:.0f} MiB")
    if args.rss_check:
        big4 = os.path.join(work, f"big-{4 * args.packets}.pcap")
        if not os.path.exists(big4):
            build_capture(args.sample, 4 * args.packets, big4)
        n4, wall4, rss4 = fresh_process(big4)
        print(f"4x capture ({n4:,} packets): {n4 / wall4:,.0f} packets/s whole process, peak RSS "
              f"{rss4 / 1024:.0f} MiB ({rss4 / rss - 1:+.1%} vs 1x)")
    print()
    base_ref = rows[2][1] / rows[2][2]
    print(f"| {'what':58} | {'packets/s':>11} | {'MB/s':>7} | {'x dpkt loop':>11} | {'x dpkt+eth':>10} "
          f"| {'x reference':>11} |")
    print(f"|{'-' * 60}|{'-' * 13}|{'-' * 9}|{'-' * 13}|{'-' * 12}|{'-' * 13}|")
    for name, n, dt in rows:
        pps = n / dt
        mbs = f"{size_mb / dt:7.0f}" if n == rows[0][1] else "       "
        print(f"| {name:58} | {pps:11,.0f} | {mbs} | {pps / base:11.2f} | {pps / base_eth:10.2f} "
              f"| {pps / base_ref:11.2f} |")
    if not args.formats:
        return
    print(f"\n| {'format':8} | {'dpkt loop packets/s':>19} | {'fast iter_batches packets/s':>27} | {'ratio':>6} |")
    print(f"|{'-' * 10}|{'-' * 21}|{'-' * 29}|{'-' * 8}|")
    for fmt in args.formats:
        path = big[: -len(".pcap")] + (".pcapng" if fmt == "pcapng" else ".pcap.gz")
        if not os.path.exists(path):
            if fmt == "pcapng":
                to_pcapng(big, path)
            else:
                with open(big, "rb") as f, gzip.open(path, "wb", compresslevel=6) as g:
                    while block := f.read(1 << 24):
                        g.write(block)
        n_d, dt_d = timed(lambda path=path, fmt=fmt: (dpkt_pcapng_loop if fmt == "pcapng" else dpkt_gzip_loop)(path))
        n_f, dt_f = timed(lambda path=path: fast_batches(path))
        assert n_d == n_f, (fmt, n_d, n_f)
        print(f"| {fmt:8} | {n_d / dt_d:19,.0f} | {n_f / dt_f:27,.0f} | {(n_f / dt_f) / (n_d / dt_d):6.2f} |")


if __name__ == "__main__":
    main()
