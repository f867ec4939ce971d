"""Decode every case of the Zeek corpus; print frames, decoded packets and weirds per case.

Usage: python benchmarks/decode_corpus.py [CORPUS_DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pcapexfil.decode import Decoder
from pcapexfil.source import CaptureError, open_captures
from pcapexfil.weird import Weirds


def main(root: str = "../shared/zeek-corpus") -> None:
    total_frames = total_pkts = 0
    t0 = time.perf_counter()
    for case in sorted(Path(root).iterdir()):
        if not case.is_dir():
            continue
        traces = [str(f) for f in case.iterdir() if f.suffix in (".pcap", ".pcapng", ".gz")]
        weirds = Weirds()
        dec = Decoder(weirds)
        frames = pkts = tunneled = 0
        try:
            for raw in open_captures(traces, weirds):
                frames += 1
                out = dec.decode(raw)
                pkts += len(out)
                tunneled += sum(1 for p in out if p.outer is not None)
        except CaptureError as exc:
            print(f"{case.name}: ERROR {exc}")
            continue
        total_frames += frames
        total_pkts += pkts
        print(f"{case.name:70s} frames={frames:5d} packets={pkts:5d} inner={tunneled:4d} {weirds.summary()}")
    dt = time.perf_counter() - t0
    print(f"total frames={total_frames} packets={total_pkts} in {dt:.2f}s")


if __name__ == "__main__":
    main(*sys.argv[1:])
