"""SOCKS 4/5: the server's reply to a connection request.

Zeek's SOCKS analyzer (src/analyzer/protocol/socks/socks-analyzer.pac) confirms in
socks4_reply and socks5_reply only, i.e. once the server's reply to the client's request
parsed (socks-protocol.pac): SOCKS4 an 8-byte reply (null byte, status, port, address);
SOCKS5, after the method negotiation (client: 5, methods; server: 5, the chosen method)
and, for username/password (RFC 1929), its 2-byte sub-negotiation reply, a reply of
version 5, code, reserved, an address of type 1 (IPv4), 3 (name) or 4 (IPv6) and a port;
another address type is a violation, and so is a first byte other than 4 or 5
(version_error). Registered on 1080/tcp (socks/main.zeek); socks/dpd.sig attaches it on
any port for a SOCKS4 request answered by `\\x00[\\x5a-\\x5d]` or a SOCKS5 greeting answered by
`\\x05` and a method (`requires-reverse-signature`); modelled (the reversed SOCKS4 pair
too, for captures that saw the server first).
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import (
    Anchors,
    Marks,
    PatternPair,
    Recogniser,
    Verdict,
    reverse_signatures,
    signature_match,
)

V4, V5 = 4, 5
V4_REPLY_LEN = 8
V4_REPLY_VERSION = 0  # a SOCKS4 reply starts with a null byte
METHOD_NONE, METHOD_USERPASS = 0x00, 0x02
USERPASS_REPLY_LEN = 2
ADDR_IPV4, ADDR_NAME, ADDR_IPV6 = 1, 3, 4
ADDR_LEN = {ADDR_IPV4: 4, ADDR_IPV6: 16}
PORT_LEN = 2

_SIG_V4_CLIENT = re.compile(rb"\x04[\x01\x02].{0,32}\x00", re.DOTALL)
_SIG_V4_SERVER = re.compile(rb"\x00[\x5a\x5b\x5c\x5d]")
_SIG_V5_CLIENT = re.compile(rb"\x05.[\x00\x01\x02]", re.DOTALL)
_SIG_V5_SERVER = re.compile(rb"\x05(\x00|\x01[\x00\x01\x02])")
SIG_V4_NEED = 2 + 32 + 1
SIG_V5_NEED = 3


def _v5_reply(data: bytes) -> bool | None:
    """The SOCKS5 reply after the negotiation at the start of `data`."""
    if len(data) < 2:
        return None if not data or data[0] == V5 else False
    if data[0] != V5:
        return False
    if data[1] == METHOD_NONE:
        pos = 2
    elif data[1] == METHOD_USERPASS:
        pos = 2 + USERPASS_REPLY_LEN
    else:
        return False  # GSSAPI or no acceptable method: no reply Zeek parses
    if len(data) < pos + 4:
        return None
    if data[pos] != V5:
        return False
    atyp = data[pos + 3]
    if atyp == ADDR_NAME:
        if len(data) < pos + 5:
            return None
        need = pos + 5 + data[pos + 4] + PORT_LEN
    elif atyp in ADDR_LEN:
        need = pos + 4 + ADDR_LEN[atyp] + PORT_LEN
    else:
        return False
    return True if len(data) >= need else None


def check(orig: bytes, resp: bytes) -> Verdict:
    if not orig:
        return Verdict.MORE
    if orig[0] == V4:
        if resp and resp[0] != V4_REPLY_VERSION:
            return Verdict.REJECT
        return Verdict.CONFIRM if len(resp) >= V4_REPLY_LEN else Verdict.MORE
    if orig[0] != V5:
        return Verdict.REJECT
    ok = _v5_reply(resp)
    return Verdict.CONFIRM if ok else Verdict.REJECT if ok is False else Verdict.MORE


def _signature_pairs(orig: bytes, resp: bytes) -> tuple[PatternPair, ...]:
    def client(pattern: re.Pattern[bytes], need: int, data: bytes) -> bool | None:
        return signature_match(pattern, data, need) if data else None

    def server(pattern: re.Pattern[bytes], data: bytes) -> bool | None:
        return signature_match(pattern, data, 2) if data else None

    return (
        (client(_SIG_V4_CLIENT, SIG_V4_NEED, orig), server(_SIG_V4_SERVER, resp)),
        (server(_SIG_V4_SERVER, orig), client(_SIG_V4_CLIENT, SIG_V4_NEED, resp)),  # dpd_socks4_reverse_*
        (client(_SIG_V5_CLIENT, SIG_V5_NEED, orig), server(_SIG_V5_SERVER, resp)),
    )


signature = reverse_signatures(_signature_pairs)
# The originator's side of each pair: a SOCKS4 request, a SOCKS4 reply (the reverse pair),
# a SOCKS5 greeting.
_ORIG_START = Marks(start=rb"(?s:\x04[\x01\x02]|\x00[\x5a-\x5d]|\x05.[\x00-\x02])")
RECOGNISER = Recogniser("socks", PROTO_TCP, check, signature=signature, signature_pairs=_signature_pairs,
                        anchors=Anchors(orig=_ORIG_START))
