"""Two network namespaces joined by a veth pair, for capture tests and benchmarks.

Only addresses inside the namespaces are used (10.250.<n>.1/2 and fd00:250:<n>::1/2), and
everything is torn down on exit, even when the body raised. Needs root and `ip` (iproute2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


def available() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@dataclass(frozen=True)
class VethPair:
    """Server side `ns_a`/`if_a`/`addr_a`, client side `ns_b`/`if_b`/`addr_b`."""

    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    addr_a: str
    addr_b: str
    addr6_a: str
    addr6_b: str

    def cmd(self, ns: str, argv: Sequence[str]) -> list[str]:
        """`argv` run inside namespace `ns`."""
        return ["ip", "netns", "exec", ns, *argv]


@contextmanager
def veth_pair(subnet: int = 1) -> Iterator[VethPair]:
    """Create ns A and ns B, a veth between them with IPv4 and IPv6 addresses; yield; remove."""
    tag = uuid.uuid4().hex[:6]
    pair = VethPair(ns_a=f"pxa{tag}", ns_b=f"pxb{tag}", if_a="vpa", if_b="vpb",
                    addr_a=f"10.250.{subnet}.1", addr_b=f"10.250.{subnet}.2",
                    addr6_a=f"fd00:250:{subnet}::1", addr6_b=f"fd00:250:{subnet}::2")
    created: list[str] = []
    try:
        for ns in (pair.ns_a, pair.ns_b):
            _ip("netns", "add", ns)
            created.append(ns)
        _ip("link", "add", f"v{tag}a", "type", "veth", "peer", "name", f"v{tag}b")
        _ip("link", "set", f"v{tag}a", "netns", pair.ns_a, "name", pair.if_a)
        _ip("link", "set", f"v{tag}b", "netns", pair.ns_b, "name", pair.if_b)
        for ns, ifn, a4, a6 in ((pair.ns_a, pair.if_a, pair.addr_a, pair.addr6_a),
                                (pair.ns_b, pair.if_b, pair.addr_b, pair.addr6_b)):
            _ip("-n", ns, "addr", "add", f"{a4}/24", "dev", ifn)
            _ip("-n", ns, "addr", "add", f"{a6}/64", "dev", ifn, "nodad")
            _ip("-n", ns, "link", "set", ifn, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield pair
    finally:
        for ns in created:  # deleting a namespace deletes the veth end in it, and so the pair
            for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                      text=True).stdout.split():
                try:
                    os.kill(int(pid), 9)  # only processes inside our own namespace
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
