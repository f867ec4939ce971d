"""Address classification shared by the flow table and the detector."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Zeek's Site::private_address_space, the default of --local-nets.
PRIVATE_NETS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
)

MULTICAST_NETS = ("224.0.0.0/4", "ff00::/8", "255.255.255.255/32")


def parse_nets(spec: str | Iterable[str]) -> list[IPNetwork]:
    """Parse 'CIDR,CIDR,...' (or an iterable of CIDRs); raises ValueError naming the bad one."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    nets: list[IPNetwork] = []
    for item in items:
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"invalid network {item!r}: expected CIDR such as 10.0.0.0/8") from None
    return nets


class NetSet:
    """Membership test for a set of networks, memoised per address (sensors see few hosts)."""

    def __init__(self, nets: Iterable[IPNetwork]) -> None:
        self.nets = list(nets)
        self._cache: dict[str, bool] = {}

    def __contains__(self, addr: str) -> bool:
        hit = self._cache.get(addr)
        if hit is None:
            ip = ipaddress.ip_address(addr)
            hit = any(ip.version == n.version and ip in n for n in self.nets)
            if len(self._cache) < 1_000_000:
                self._cache[addr] = hit
        return hit
