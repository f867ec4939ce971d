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

After the handshake the rest of the connection is a tunnel whose bytes a new PIA reads
(`tunnel`, the services analyzer's and TLS's hand-over): SOCKS.cc SOCKS_Analyzer::
DeliverStream, once both endpoints are done (EndpointDone: socks4_request / socks5_request
for the client, socks4_reply / socks5_reply for the server, whatever the reply's status),
adds a PIA_TCP and forwards it every later chunk of either direction, from the chunk after
the one that completed the handshake on; that chunk's rest, and a direction's chunks while
the other is not done yet, went to the SOCKS parser. Where that differs: Zeek's SOCKS flow
is a datagram one (socks.pac: each chunk parsed as one message from its first byte), while
pcapexfil reads each direction as a stream, as `check` does, so a message split over two
chunks or two in one chunk (a client that sends its request without waiting for the
method reply) are taken as the usual one-message chunks; a SOCKS5 method other than none
and username/password opens no tunnel (its sub-negotiation is not modelled).
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
V4_ADDR_AT = 4  # SOCKS4_Request: version, command, port, then the IPv4 address
V4_REQUEST_FIXED = 8  # ... up to the user
V4A_MAX_ADDR = 0xFF  # SOCKS4_Request's v4a: an address up to 0.0.0.255 is followed by a name
USERPASS_VERSION = 1  # SOCKS5_Auth_Request_UserPass: only version 1 is parsed (v1)
V5_COMMANDS = range(1, 4)  # socks5_request: a command of 0 or above 3 is a violation (SetSkip)


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
    return _v5_address_complete(data, pos + 3)  # after version, reply code, reserved


def _until_nul(data: bytes, pos: int) -> int | None:
    """Where a NUL-terminated field starting at `pos` ends (after its NUL), None while
    incomplete (binpac's `uint8[] &until($element == 0)`)."""
    nul = data.find(b"\x00", pos)
    return None if nul < 0 else nul + 1


def _v5_address_complete(data: bytes, pos: int) -> bool | None:
    """Whether a SOCKS5_Address at `pos` and the port after it are all there (None: not
    yet); False for an address type socks5_request / socks5_reply refuse (a violation, no
    EndpointDone)."""
    if len(data) <= pos:
        return None
    atyp = data[pos]
    if atyp == ADDR_NAME:
        if len(data) <= pos + 1:
            return None
        end = pos + 2 + data[pos + 1] + PORT_LEN
    elif atyp in ADDR_LEN:
        end = pos + 1 + ADDR_LEN[atyp] + PORT_LEN
    else:
        return False
    return True if len(data) >= end else None


def _request_done(orig: bytes, method: int) -> bool | None:
    """socks4_request / socks5_request on the client's stream (`method`: the one the
    server's negotiation reply chose, SOCKS5): True once the request is parsed and valid
    (EndpointDone(true)), False where it never will be, None while incomplete."""
    if orig[0] == V4:
        if len(orig) < V4_REQUEST_FIXED:
            return None
        end = _until_nul(orig, V4_REQUEST_FIXED)
        if end is not None and int.from_bytes(orig[V4_ADDR_AT:V4_REQUEST_FIXED], "big") <= V4A_MAX_ADDR:
            end = _until_nul(orig, end)
        return None if end is None else True
    if len(orig) < 2:
        return None
    pos = 2 + orig[1]  # the negotiation request: version, method count, methods
    if method == METHOD_USERPASS:
        if len(orig) <= pos:
            return None
        if orig[pos] != USERPASS_VERSION:
            return False  # an unsupported sub-negotiation, not modelled
        if len(orig) <= pos + 1:
            return None
        pos += 2 + orig[pos + 1]  # version, ulen, username
        if len(orig) <= pos:
            return None
        pos += 1 + orig[pos]  # plen, password
    if len(orig) < pos + 3:
        return None
    if orig[pos] != V5 or orig[pos + 2] != 0 or orig[pos + 1] not in V5_COMMANDS:
        return False  # another version, or socks5_request's violations on reserved and command
    return _v5_address_complete(orig, pos + 3)


def tunnel(orig: bytes, resp: bytes) -> bool | None:
    """Whether SOCKS.cc hands the rest of the connection to a new PIA on these first bytes
    of each direction: True from the chunk that completed both endpoints' handshakes (the
    tunnel is the chunks after it), False where it never will, None until then."""
    server = check(orig, resp)
    if server is Verdict.REJECT:
        return False
    if server is not Verdict.CONFIRM:
        return None  # the reply comes after the request: the client's is read with it
    client = _request_done(orig, resp[1])
    return None if client is None else client


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
# skips_partial: socks/SOCKS.cc SOCKS_Analyzer::DeliverStream ("punt on partial").
RECOGNISER = Recogniser("socks", PROTO_TCP, check, signature=signature, signature_pairs=_signature_pairs,
                        anchors=Anchors(orig=_ORIG_START), tunnel=tunnel, skips_partial=True)
