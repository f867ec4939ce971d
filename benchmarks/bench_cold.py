"""A capture that is not in the page cache: `pcapexfil conn`, the bare dpkt Reader loop and
nfstream (n_meters=1), each timed on the capture read cold from disk and warm, in one run.

    sudo python benchmarks/bench_cold.py /tmp/cap/real.pcap --repeat 2

An analyst's capture usually comes from disk, not from the page cache. Before each cold
run the page cache is emptied (`sync; echo 3 > /proc/sys/vm/drop_caches`, so root only),
then the command runs once on the capture's first frame, so that only the capture itself
is cold (the interpreter, the libraries and the kernel cache are read again). Whole
processes, best of `--repeat`; the ratios compare the tools' times of the same kind.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import DPKT_LOOP, NFSTREAM, PY, first_frame, installed_bytecode, timed  # noqa: E402

DROP_CACHES = "/proc/sys/vm/drop_caches"


def drop_page_cache() -> None:
    subprocess.run(["sync"], check=True)
    with open(DROP_CACHES, "w") as fh:
        fh.write("3\n")


def commands(cap: str, out: str) -> dict[str, list[str]]:
    return {
        "pcapexfil conn": ["pcapexfil", "conn", "-o", out, "--seed", "1", cap],
        "dpkt loop": [PY, "-c", DPKT_LOOP, cap],
        "nfstream": [PY, "-c", NFSTREAM, cap],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pcap")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    if not os.access(DROP_CACHES, os.W_OK):
        sys.exit(f"{DROP_CACHES} is not writable: run as root to empty the page cache")
    work = args.workdir or tempfile.mkdtemp(prefix="bench-cold-")
    os.makedirs(work, exist_ok=True)
    installed_bytecode()
    small = first_frame(args.pcap, os.path.join(work, "first-frame.pcap"))
    out = os.path.join(work, "out")
    cold: dict[str, float] = {}
    warm: dict[str, float] = {}
    for _ in range(args.repeat):
        for name in commands(args.pcap, out):
            drop_page_cache()
            subprocess.run(commands(small, out)[name], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            wall = timed(commands(args.pcap, out)[name])[0]
            cold[name] = min(cold.get(name, wall), wall)
            wall = timed(commands(args.pcap, out)[name])[0]  # the capture is cached now
            warm[name] = min(warm.get(name, wall), wall)
    print(f"{args.pcap} ({os.path.getsize(args.pcap) / 1e6:.0f} MB), best of {args.repeat}\n")
    print("| command | cold s | warm s | cold - warm s |")
    print("|---|---|---|---|")
    for name in cold:
        print(f"| {name} | {cold[name]:.2f} | {warm[name]:.2f} | {cold[name] - warm[name]:.2f} |")
    ours = "pcapexfil conn"
    for name in cold:
        if name != ours:
            print(f"\n{ours} / {name}: cold {cold[name] / cold[ours]:.2f}x, warm {warm[name] / warm[ours]:.2f}x")


if __name__ == "__main__":
    main()
