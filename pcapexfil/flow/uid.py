"""Zeek-style connection uids: "C" followed by base62 of 96 random bits."""

from __future__ import annotations

import random

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


class UidGenerator:
    """Seeded for reproducible runs (`--seed`); unseeded runs seed from the OS once. Uids
    name connections, they are no secret: a system call per uid (SystemRandom) cost 7 µs
    per connection."""

    def __init__(self, seed: int | None = None, prefix: str = "C") -> None:
        self._rng = random.Random(seed)  # seed None: os.urandom
        self.prefix = prefix

    def __call__(self) -> str:
        return self.prefix + base62(self._rng.getrandbits(96))
