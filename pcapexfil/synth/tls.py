"""TLS handshake bytes: ClientHello and the server's first flight, built field by field.

Record header (type, version, length) -> handshake header (type, 24-bit length) -> body;
extensions are (type, length, data). Client profiles differ in cipher suites, extensions
and groups (so JA3 varies); server profiles in the chosen suite and extension order (so
JA3S varies). Keys, randoms and certificates are random or zero bytes: only structure and
the fields the fingerprints read are meaningful.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

GREASE = 0x0A0A


def _u8(v: int) -> bytes:
    return struct.pack("!B", v)


def _u16(v: int) -> bytes:
    return struct.pack("!H", v)


def _u24(v: int) -> bytes:
    return struct.pack("!I", v)[1:]


def _vec8(data: bytes) -> bytes:
    return _u8(len(data)) + data


def _vec16(data: bytes) -> bytes:
    return _u16(len(data)) + data


def _ext(kind: int, data: bytes) -> bytes:
    return _u16(kind) + _vec16(data)


def record(content_type: int, body: bytes, version: int = 0x0303) -> bytes:
    return _u8(content_type) + _u16(version) + _vec16(body)


def handshake(msg_type: int, body: bytes) -> bytes:
    return _u8(msg_type) + _u24(len(body)) + body


@dataclass(frozen=True, slots=True)
class ClientProfile:
    """A TLS client stack: what its ClientHello offers."""

    name: str
    ciphers: tuple[int, ...]
    extensions: tuple[int, ...]  # order on the wire; 0 = SNI is filled in per connection
    groups: tuple[int, ...]
    grease: bool = False
    tls13: bool = True


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """A TLS server stack: what its ServerHello answers."""

    name: str
    cipher: int
    extensions: tuple[int, ...]
    tls13: bool = False


CLIENT_PROFILES: tuple[ClientProfile, ...] = (
    ClientProfile("chromium", (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013,
                               0xC014, 0x009C, 0x009D, 0x002F, 0x0035),
                  (0, 23, 65281, 10, 11, 35, 16, 5, 13, 18, 51, 45, 43, 27, 17513), (0x001D, 0x0017, 0x0018),
                  grease=True),
    ClientProfile("firefox", (0x1301, 0x1303, 0x1302, 0xC02B, 0xC02F, 0xCCA9, 0xCCA8, 0xC02C, 0xC030, 0xC00A,
                              0xC009, 0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035),
                  (0, 23, 65281, 10, 11, 35, 16, 5, 34, 51, 43, 13, 45, 28), (0x001D, 0x0017, 0x0018, 0x0019, 0x0100)),
    ClientProfile("schannel", (0xC02C, 0xC02B, 0xC030, 0xC02F, 0xC024, 0xC023, 0xC028, 0xC027, 0xC00A, 0xC009,
                               0xC014, 0xC013, 0x009D, 0x009C, 0x003D, 0x003C, 0x0035, 0x002F, 0x000A),
                  (0, 5, 10, 11, 13, 35, 16, 23, 24, 65281), (0x001D, 0x0017, 0x0018), tls13=False),
    ClientProfile("curl-openssl", (0x1302, 0x1303, 0x1301, 0xC02C, 0xC030, 0x009F, 0xCCA9, 0xCCA8, 0xCCAA, 0xC02B,
                                   0xC02F, 0x009E, 0xC024, 0xC028, 0x006B, 0xC023, 0xC027, 0x0067, 0x00FF),
                  (0, 11, 10, 35, 22, 23, 13, 43, 45, 51), (0x001D, 0x0017, 0x001E, 0x0019, 0x0018)),
    ClientProfile("python-requests", (0x1302, 0x1303, 0x1301, 0xC02C, 0xC030, 0xC02B, 0xC02F, 0xCCA9, 0xCCA8,
                                      0x009F, 0x009E, 0x00FF),
                  (0, 11, 10, 35, 22, 23, 13, 43, 45, 51, 21), (0x001D, 0x0017, 0x001E, 0x0019, 0x0018)),
)

SERVER_PROFILES: tuple[ServerProfile, ...] = (
    ServerProfile("nginx-tls12", 0xC02F, (65281, 0, 11, 35)),
    ServerProfile("nginx-tls12-alpn", 0xC02F, (65281, 0, 11, 16)),
    ServerProfile("iis", 0xC030, (65281, 23)),
    ServerProfile("apache-ecdsa", 0xC02B, (0, 65281, 11, 35, 16)),
    ServerProfile("cdn-tls13-aes128", 0x1301, (51, 43), tls13=True),
    ServerProfile("cdn-tls13-aes256", 0x1302, (43, 51), tls13=True),
    ServerProfile("legacy-rsa", 0x002F, ()),
)

_SIG_ALGS = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)


def _client_ext(kind: int, profile: ClientProfile, sni: str, rng: np.random.Generator) -> bytes:
    if kind == 0:
        name = sni.encode("ascii")
        return _ext(0, _vec16(_u8(0) + _vec16(name)))
    if kind == 10:
        groups = ((GREASE,) if profile.grease else ()) + profile.groups
        return _ext(10, _vec16(b"".join(_u16(g) for g in groups)))
    if kind == 11:
        return _ext(11, _vec8(b"\x00"))
    if kind == 13:
        return _ext(13, _vec16(b"".join(_u16(a) for a in _SIG_ALGS)))
    if kind == 16:
        return _ext(16, _vec16(_vec8(b"h2") + _vec8(b"http/1.1")))
    if kind == 5:  # status_request (OCSP)
        return _ext(5, b"\x01\x00\x00\x00\x00")
    if kind == 43:
        versions = ((GREASE,) if profile.grease else ()) + ((0x0304,) if profile.tls13 else ()) + (0x0303,)
        return _ext(43, _vec8(b"".join(_u16(v) for v in versions)))
    if kind == 45:
        return _ext(45, _vec8(b"\x01"))
    if kind == 51:
        share = _u16(0x001D) + _vec16(rng.bytes(32))
        return _ext(51, _vec16(share))
    if kind == 27:  # compress_certificate (brotli)
        return _ext(27, _vec8(_u16(2)))
    if kind == 28:  # record_size_limit
        return _ext(28, _u16(0x4001))
    if kind == 34:  # delegated_credentials
        return _ext(34, _vec16(b"".join(_u16(a) for a in _SIG_ALGS[:4])))
    if kind == 21:  # padding
        return _ext(21, bytes(int(rng.integers(0, 200))))
    if kind == 17513:  # application_settings
        return _ext(17513, _vec16(_vec8(b"h2")))
    return _ext(kind, b"")  # 23, 35, 22, 24, 18, 65281 handled as empty / minimal


def client_hello(profile: ClientProfile, sni: str, rng: np.random.Generator) -> bytes:
    """A ClientHello record (one TLS record) offering `profile`'s parameters, with SNI `sni`."""
    ciphers = ((GREASE,) if profile.grease else ()) + profile.ciphers
    exts = []
    if profile.grease:
        exts.append(_ext(GREASE, b""))
    for kind in profile.extensions:
        exts.append(_ext(65281, b"\x00") if kind == 65281 else _client_ext(kind, profile, sni, rng))
    if profile.grease:
        exts.append(_ext(0x1A1A, b"\x00"))
    body = (
        _u16(0x0303)
        + rng.bytes(32)
        + _vec8(rng.bytes(32))
        + _vec16(b"".join(_u16(c) for c in ciphers))
        + _vec8(b"\x00")
        + _vec16(b"".join(exts))
    )
    return record(22, handshake(1, body), version=0x0301)


def _server_ext(kind: int, rng: np.random.Generator) -> bytes:
    if kind == 65281:
        return _ext(65281, b"\x00")
    if kind == 11:
        return _ext(11, _vec8(b"\x00"))
    if kind == 16:
        return _ext(16, _vec16(_vec8(b"h2")))
    if kind == 43:
        return _ext(43, _u16(0x0304))
    if kind == 51:
        return _ext(51, _u16(0x001D) + _vec16(rng.bytes(32)))
    return _ext(kind, b"")  # 0 (SNI ack), 23, 35: empty


def server_hello(profile: ServerProfile, rng: np.random.Generator) -> bytes:
    """The ServerHello handshake message (no record header)."""
    exts = b"".join(_server_ext(k, rng) for k in profile.extensions)
    body = _u16(0x0303) + rng.bytes(32) + _vec8(rng.bytes(32)) + _u16(profile.cipher) + b"\x00"
    if profile.extensions:
        body += _vec16(exts)
    return handshake(2, body)


def server_flight(profile: ServerProfile, cert_len: int, rng: np.random.Generator) -> bytes:
    """The server's first flight: ServerHello record, then certificate (TLS 1.2) or encrypted records (1.3)."""
    hello = record(22, server_hello(profile, rng))
    if profile.tls13:
        return hello + record(20, b"\x01") + record(23, bytes(cert_len))
    cert = handshake(11, _u24(cert_len + 3) + _u24(cert_len) + bytes(cert_len))
    return hello + record(22, cert + handshake(14, b""))


def client_finish(profile: ServerProfile) -> bytes:
    """The client's second flight: key exchange + ChangeCipherSpec + Finished (encrypted)."""
    if profile.tls13:
        return record(20, b"\x01") + record(23, bytes(53))
    return record(22, handshake(16, _vec8(bytes(32)))) + record(20, b"\x01") + record(22, bytes(40))


def ja3s_string(profile: ServerProfile) -> str:
    """The JA3S input string this profile's ServerHello produces (for tests and docs)."""
    return f"771,{profile.cipher},{'-'.join(str(e) for e in profile.extensions)}"
