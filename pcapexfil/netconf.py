"""Address classification shared by the flow table and the detector."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Zeek's Site::private_address_space (scripts/base/utils/site.zeek), the default of
# --local-nets: IANA special-purpose IPv4/IPv6 blocks and their 6to4 forms.
PRIVATE_NETS = (
    "0.0.0.0/8", "2002::/24",
    "10.0.0.0/8", "2002:a00::/24",
    "100.64.0.0/10", "2002:6440::/26",
    "127.0.0.0/8", "2002:7f00::/24",
    "169.254.0.0/16", "2002:a9fe::/32",
    "172.16.0.0/12", "2002:ac10::/28",
    "192.0.0.0/24", "2002:c000::/40",
    "192.0.2.0/24", "2002:c000:200::/40",
    "192.168.0.0/16", "2002:c0a8::/32",
    "198.18.0.0/15", "2002:c612::/31",
    "198.51.100.0/24", "2002:c633:6400::/40",
    "203.0.113.0/24", "2002:cb00:7100::/40",
    "240.0.0.0/4", "2002:f000::/20",
    "255.255.255.255/32", "2002:ffff:ffff::/48",
    "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:2::/48",
    "2001:db8::/32", "fc00::/7", "fe80::/10",
)  # fmt: skip

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
