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


# -- traffic with known byte counts: `python tests/netns.py serve|client ...` in a namespace -----
TCP_PORT = 5001
DNS_PORT = 53


def _serve(addrs: list[str]) -> None:
    """TCP: read a 4-byte reply size then everything to EOF, answer that many bytes, close.
    UDP 53: answer each DNS query with one A record."""
    import socket
    import socketserver
    import struct
    import threading

    import dpkt

    class Tcp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data = b""
            while chunk := self.request.recv(65536):
                data += chunk
            (size,) = struct.unpack("!I", data[:4])
            self.request.sendall(b"r" * size)

    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            query = dpkt.dns.DNS(data)
            answer = dpkt.dns.DNS(id=query.id, qd=query.qd, op=dpkt.dns.DNS_RA, rcode=dpkt.dns.DNS_RCODE_NOERR)
            answer.qr = dpkt.dns.DNS_R
            rr = dpkt.dns.DNS.RR(name=query.qd[0].name, type=dpkt.dns.DNS_A, cls=dpkt.dns.DNS_IN, ttl=60,
                                 ip=socket.inet_aton("10.250.99.9"))
            answer.an = [rr]
            sock.sendto(bytes(answer), self.client_address)

    servers: list[socketserver.BaseServer] = []
    for addr in addrs:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        tcp_cls = type("T", (socketserver.ThreadingTCPServer,), {"address_family": family,
                                                                 "allow_reuse_address": True,
                                                                 "daemon_threads": True})
        udp_cls = type("U", (socketserver.UDPServer,), {"address_family": family})
        servers += [tcp_cls((addr, TCP_PORT), Tcp), udp_cls((addr, DNS_PORT), Udp)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def _client(plan_json: str) -> None:
    """Run the plan; print one JSON line per exchange with the bytes each side sent."""
    import json
    import random
    import socket
    import struct
    import time

    import dpkt

    for step in json.loads(plan_json):
        if step["kind"] == "sleep":
            time.sleep(step["seconds"])
            continue
        addr = step["addr"]
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        if step["kind"] == "tcp":
            with socket.create_connection((addr, TCP_PORT), timeout=10) as s:
                up = struct.pack("!I", step["down"]) + b"u" * (step["up"] - 4)
                s.sendall(up)
                s.shutdown(socket.SHUT_WR)
                got = 0
                while chunk := s.recv(65536):
                    got += len(chunk)
                sport = s.getsockname()[1]
            print(json.dumps({"proto": "tcp", "addr": addr, "sport": sport, "up": len(up), "down": got}),
                  flush=True)
        else:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                query = dpkt.dns.DNS(id=random.randrange(65536), qd=[dpkt.dns.DNS.Q(name=step["name"])])
                query.op = dpkt.dns.DNS_RD
                s.sendto(bytes(query), (addr, DNS_PORT))
                reply, _ = s.recvfrom(4096)
                sport = s.getsockname()[1]
            print(json.dumps({"proto": "udp", "addr": addr, "sport": sport, "up": len(bytes(query)),
                              "down": len(reply)}), flush=True)


def _stream(addr: str, flows: int, seconds: float) -> None:
    """UDP datagrams to `flows` ports of `addr`, one per port every millisecond or so, for
    `seconds`: traffic that is already flowing when a capture starts."""
    import socket
    import time

    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i, s in enumerate(sockets):
            s.sendto(b"s" * 32, (addr, 20000 + i))
        time.sleep(0.001)


if __name__ == "__main__":
    import sys

    if sys.argv[1] == "serve":
        _serve(sys.argv[2:])
    elif sys.argv[1] == "stream":
        _stream(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        _client(sys.argv[2])
