"""NetBIOS names as Zeek decodes them for dns.log: a NetBIOS name service query on 137/udp
carries its name in the "first-level encoding" (each byte as two letters A-P), which
dns/main.zeek's `dns_request` turns back into the name with the BiF `decode_netbios_name`
(src/analyzer/protocol/netbios/functions.bif)."""

from __future__ import annotations

NETBIOS_NS_PORT = 137  # dns/main.zeek: `c$id$resp_p == 137/udp`
ENCODED_LENGTH = 32  # 16 bytes, two letters each
_A, _P = ord("A"), ord("P")
_SPACE = ord(" ")
# C's isalnum() and ispunct() in the "C" locale, which the BiF calls on each byte.
_C_ALNUM_OR_PUNCT = frozenset(range(0x21, 0x7F))


def _upper(c: int) -> int:
    """The BiF's netbios_toupper: ASCII only, whatever the locale."""
    return c - 32 if ord("a") <= c <= ord("z") else c


def decode_netbios_name(name: str) -> str:
    """functions.bif `decode_netbios_name`: "" unless `name` is 32 letters A-P (any case) up
    to the first byte that is not alphanumeric, punctuation, a space or below 3 (where
    decoding stops); the 16th byte (the name's type) is dropped, then trailing spaces and
    NULs."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) != ENCODED_LENGTH:
        return ""
    decoded = bytearray()
    for i in range(0, ENCODED_LENGTH, 2):
        c0, c1 = _upper(raw[i]), _upper(raw[i + 1])
        if not (_A <= c0 <= _P and _A <= c1 <= _P):
            return ""
        byte = ((c0 - _A) << 4) + (c1 - _A)
        if not (byte in _C_ALNUM_OR_PUNCT or byte == _SPACE or byte < 3):
            break
        decoded.append(byte)
    length = min(len(decoded), ENCODED_LENGTH // 2 - 1)
    while length and decoded[length - 1] in (_SPACE, 0):
        length -= 1
    return decoded[:length].decode("ascii")
