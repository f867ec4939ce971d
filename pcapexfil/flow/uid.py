"""Zeek-style connection uids: "C" followed by base62 of 96 bits.

A uid is a keyed hash of the connection's identity: the run's seed (`--seed`, or 64 random
bits per run), the protocol, the two endpoints in a canonical order, the start time, and how
many connections with exactly that identity came before it in the run. It depends on
nothing else, so the workers of `--workers N` (each one sees only its share of the
connections) and the cluster's tasks name a connection as one process does, and both
engines agree. Occurrences are counted among the connections created since the last of
the pipeline's once-a-second ticks: two connections of one 5-tuple that start in the same
microsecond (a port reused within the microsecond, a capture with constant timestamps) are
created between the same two ticks when packets come in time order (a tick never falls
between two packets of one timestamp), so they are told apart. The memory is one small
entry per connection created since the last tick (a flood's second, not its day).
"""

from __future__ import annotations

import random
from hashlib import blake2b

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

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
        # The keyed hash every uid is taken from, copied per uid: a keyed blake2b compresses
        # its key as a block of its own at every construction.
        self._hash = blake2b(digest_size=12, key=str(run_seed(seed)).encode()[:64])
        # Identities (their 64-bit hash(); equal for equal texts within this process, which
        # is all a count needs) created since the last tick (a flood's second of them is
        # held), and the few that repeated → their last count.
        self._recent: set[int] = set()
        self._repeats: dict[int, int] = {}

    def conn(self, proto: int, a_h: str, a_p: int, b_h: str, b_p: int, start_ts: float) -> str:
        """A new connection between (a_h, a_p) and (b_h, b_p) whose first packet came at `start_ts`."""
        if (b_h, b_p) < (a_h, a_p):
            a_h, a_p, b_h, b_p = b_h, b_p, a_h, a_p
        ident = f"{proto} {a_h} {a_p} {b_h} {b_p} {float(start_ts)!r}"
        key = hash(ident)
        if key in self._recent:
            n = self._repeats[key] = self._repeats.get(key, 0) + 1
        else:
            n = 0
        self._recent.add(key)
        return self.named(f"{ident} {n}")

    def tunnel(self, key: tuple) -> str:
        return self.named(tunnel_name(repr(key)))

    def named(self, text: str) -> str:
        digest = self._hash.copy()
        digest.update(text.encode())
        return "C" + base62(int.from_bytes(digest.digest(), "big"))

    def expire(self, now: float) -> None:
        """A tick (at network time `now`): the last epoch's identities are forgotten."""
        self._recent, self._repeats = set(), {}
