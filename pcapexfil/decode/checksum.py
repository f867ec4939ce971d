"""RFC 1071 Internet checksum, used only with --verify-checksums."""

from __future__ import annotations

import socket

import numpy as np


def internet_checksum(data: bytes, initial: int = 0) -> int:
    """One's-complement sum folded and inverted: 0 when `data` includes a valid checksum."""
    if len(data) & 1:
        data = data + b"\x00"
    total = initial + int(np.frombuffer(data, dtype=">u2").sum(dtype=np.uint64))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def pseudo_header_sum(version: int, src: str, dst: str, proto: int, length: int) -> int:
    """Unfolded sum of the TCP/UDP/ICMPv6 pseudo header."""
    fam = socket.AF_INET if version == 4 else socket.AF_INET6
    raw = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst)
    words = np.frombuffer(raw, dtype=">u2").sum(dtype=np.uint64)
    return int(words) + proto + (length & 0xFFFF) + (length >> 16)
