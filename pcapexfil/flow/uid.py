"""Zeek-style connection uids: "C" followed by base62 of 96 bits.

A uid is a keyed hash of the connection's identity: the run's seed (`--seed`, or 64 random
bits per run), the protocol, the two endpoints in a canonical order, the start time, and how
many connections with exactly that identity came before it in the run. It depends on
nothing else, so the workers of `--workers N` (each one sees only its share of the
connections) and the cluster's tasks name a connection as one process does, and both
engines agree. Occurrences are counted for connections that started at most
`UID_HORIZON` seconds of network time before the last tick: two connections of one 5-tuple
that start in the same microsecond are told apart unless a packet arrives that much late.
"""

from __future__ import annotations

import heapq
import random
from hashlib import blake2b

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Occurrence counts are kept this long after a connection's start (network seconds).
UID_HORIZON = 60.0


_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # two digits per division: half the steps


def base62(value: int) -> str:
    if value < 62:
        return _ALPHABET[value]
    digits = []
    while value >= 3844:
        value, rem = divmod(value, 3844)
        digits.append(_PAIRS[rem])
    digits.append(_PAIRS[value] if value >= 62 else _ALPHABET[value])  # no leading zero
    return "".join(reversed(digits))


def tunnel_name(key_repr: str) -> str:
    """What a tunnel's uid is derived from (`key_repr`: repr of its (a, b, type) key)."""
    return "tunnel " + key_repr


def run_seed(seed: int | None) -> int:
    """The seed a run derives uids from: the user's, or 64 random bits (shared by its workers)."""
    return seed if seed is not None else random.SystemRandom().getrandbits(64)


class ConnUids:
    """The uids of one run. `conn` for a new connection, `tunnel` for an IP-level tunnel,
    `expire` at every once-a-second tick (both engines call it at the same ticks)."""

    def __init__(self, seed: int | None = None) -> None:
        self._key = str(run_seed(seed)).encode()[:64]
        self._seen: dict[tuple, int] = {}
        self._starts: list[tuple[float, tuple]] = []  # heap: start time, identity

    def conn(self, proto: int, a_h: str, a_p: int, b_h: str, b_p: int, start_ts: float) -> str:
        """A new connection between (a_h, a_p) and (b_h, b_p) whose first packet came at `start_ts`."""
        if (b_h, b_p) < (a_h, a_p):
            a_h, a_p, b_h, b_p = b_h, b_p, a_h, a_p
        ident = (proto, a_h, a_p, b_h, b_p, start_ts)
        n = self._seen.get(ident)
        if n is None:
            n = 0
            heapq.heappush(self._starts, (start_ts, ident))
        else:
            n += 1
        self._seen[ident] = n
        return self.named(f"{proto} {a_h} {a_p} {b_h} {b_p} {start_ts!r} {n}")

    def tunnel(self, key: tuple) -> str:
        return self.named(tunnel_name(repr(key)))

    def named(self, text: str) -> str:
        return "C" + base62(int.from_bytes(blake2b(text.encode(), digest_size=12, key=self._key).digest(), "big"))

    def expire(self, now: float) -> None:
        starts, seen = self._starts, self._seen
        while starts and starts[0][0] < now - UID_HORIZON:
            del seen[heapq.heappop(starts)[1]]
