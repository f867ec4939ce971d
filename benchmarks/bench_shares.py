"""What each flow-hash share of `--workers N` (and of a cluster's fast-engine tasks) holds:
packets, packets with payload (what the analyzers read), flows, DNS messages (parsed one by
one in Python, several times a TCP packet's cost), and the heaviest flows. It tells an
unlucky hash (packets or flows uneven) from heavy connections (one flow carrying a
share's surplus), which no split by flow can spread.

    python benchmarks/bench_shares.py /tmp/cap/real.pcap --workers 2
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from pcapexfil.fast.batch import KIND_FAST
from pcapexfil.fast.reader import iter_batches
from pcapexfil.packet import PROTO_UDP
from pcapexfil.source import CaptureStats
from pcapexfil.weird import Weirds
from pcapexfil.workers import flow_hashes

DNS_PORT = 53


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pcaps", nargs="+")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--top", type=int, default=5, help="heaviest flows listed")
    args = ap.parse_args()
    n = args.workers
    packets, payload, dns = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    flow_packets: Counter[int] = Counter()
    flow_dns: Counter[int] = Counter()
    other = 0  # frames every worker processes whole (SLOW) or none (SKIP)
    for batch in iter_batches(args.pcaps, Weirds(), CaptureStats()):
        rows = batch.packets
        fast = rows[rows["kind"] == KIND_FAST]
        other += rows.shape[0] - fast.shape[0]
        if not fast.shape[0]:
            continue
        hashes = flow_hashes(fast)
        share = (hashes % np.uint64(n)).astype(np.int64)
        has = fast["payload_cap"] > 0
        is_dns = has & (fast["proto"] == PROTO_UDP) & ((fast["sport"] == DNS_PORT) | (fast["dport"] == DNS_PORT))
        packets += np.bincount(share, minlength=n)
        payload += np.bincount(share[has], minlength=n)
        dns += np.bincount(share[is_dns], minlength=n)
        keys, counts = np.unique(hashes, return_counts=True)
        flow_packets.update(dict(zip(keys.tolist(), counts.tolist())))
        keys, counts = np.unique(hashes[is_dns], return_counts=True)
        flow_dns.update(dict(zip(keys.tolist(), counts.tolist())))
    flows = np.bincount([h % n for h in flow_packets], minlength=n)
    print(f"frames not split by flow (SLOW, SKIP): {other}\n")
    print("| share | packets | with payload | flows (5-tuples) | DNS messages |")
    print("|---|---|---|---|---|")
    for i in range(n):
        print(f"| {i} | {packets[i]} | {payload[i]} | {flows[i]} | {dns[i]} |")
    print("\nheaviest flows (packets, DNS messages, share): "
          + ", ".join(f"({c}, {flow_dns[h]}, {h % n})" for h, c in flow_packets.most_common(args.top)))


if __name__ == "__main__":
    main()
