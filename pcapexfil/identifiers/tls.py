"""TLS: SNI, JA3, JA3S, negotiated version and cipher, from the reassembled handshake.

The analyzer reads a connection only where Zeek attaches its SSL analyzer:
1. on ssl/main.zeek's ports (`SSL_PORTS`, analyzer::Manager::BuildInitialAnalyzerTree);
2. where the PIA matches one of ssl/dpd.sig's signatures on either direction's first bytes
   (`dpd_tls_client`, a ClientHello record; `dpd_tls_server`, a ServerHello record after an
   optional alert record; each enables "ssl" on its own, without `tcp-state` or
   `requires-reverse-signature`), with the PIA's buffer then replayed (PIA_TCP::
   ActivateAnalyzer, ReplayStreamBuffer), as identifiers/http.py does for HTTP;
3. after the STARTTLS hand-over of an analyzer attached to the connection (`STARTTLS`:
   SMTP, FTP, IMAP, POP3, XMPP, IRC, LDAP, MySQL, PostgreSQL, RDP, SOCKS's tunnel): the SSL
   analyzer gets the stream from the next chunk of each direction on;
4. in the CONNECT tunnel the HTTP analyzer opened (identifiers.http_tunnel, HTTP.cc's
   rule): from the server's bytes after the 200's head and the client's next chunk on.
The client's ClientHello must then start the stream the analyzer gets: plaintext before it
is what SSL's binpac rejects (ssl.pac, determine_ssl_record_layer: "Invalid version in
TLS connection" and SetSkip), so it is never searched for past a prefix.
Lengths are checked at every level: a message that lies about its length is reported as a
weird and parsing of that direction stops, without an exception.

JA3S after a TLS 1.3 HelloRetryRequest: Zeek's ja3s script appends the extensions of every
ServerHello of the connection and keeps the version/cipher of the last one. pcapexfil does
not copy that: it fingerprints the first ServerHello only (a HelloRetryRequest is itself a
ServerHello on the wire). The first hello is what every server of a given configuration
answers to the first flight, so the fingerprint stays stable whether or not the client had
to retry; hashing both hellos would give one server two fingerprints depending on the
client's key-share guess.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dpkt.ssl_ciphersuites

from pcapexfil.flow.ports import registered_ports
from pcapexfil.identifiers.http_tunnel import take_tunnel
from pcapexfil.identifiers.output import LogOut
from pcapexfil.identifiers.stream import PiaBuffer, streams, tcp_data
from pcapexfil.logs.ssl import SSL_FIELDS, ssl_row
from pcapexfil.packet import PROTO_TCP
from pcapexfil.services import (
    ftp, imap, irc, ldap, mysql, pop3, postgresql, rdp, settle_signatures, signature_verdicts, smtp,
    socks, xmpp,
)
from pcapexfil.services.base import (
    AnchorGate,
    Anchors,
    Check,
    Marks,
    PiaWait,
    Recogniser,
    Verdict,
    anchor_gate,
)

if TYPE_CHECKING:
    from pcapexfil.hooks import AnalyzerContext, ConnView
    from pcapexfil.packet import Packet
    from pcapexfil.record import ConnRecord

NAME = "tls"
MAX_BYTES = 16 * 1024  # first bytes of each direction searched for the hellos
_UNTIL_CLIENT_HELLO = 1 << 62  # server bytes we skip before a ClientHello: no limit
_SERVER_READS = frozenset((2, 12, 14))  # ServerHello, ServerKeyExchange, ServerHelloDone: what `_feed` reads

GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SUPPORTED_VERSIONS = 43
EXT_KEY_SHARE = 51

# A handshake record (type 22, version 3.0-3.4, length < 2^14 + 2048) whose first
# handshake message has the given type.
_CLIENT_HELLO_AT = re.compile(rb"\x16\x03[\x00-\x04][\x00-\x48][\x00-\xff]\x01", re.DOTALL)
_SERVER_HELLO_AT = re.compile(rb"\x16\x03[\x00-\x04][\x00-\x48][\x00-\xff]\x02", re.DOTALL)
_HELLO_HEADER_LEN = 6  # what those patterns read: the record header and the message type

SSL_PORTS = registered_ports("ssl", PROTO_TCP)

# ssl/dpd.sig (payloads anchored at the stream's first byte; a signature's `.` matches any
# byte). dpd_tls_client: a handshake record of version 3.0-3.3 holding a ClientHello of
# version 3.0-3.3. dpd_tls_server: the same for a ServerHello (version 3.0-3.4, or 0x7f
# and a TLS 1.3 draft number), after an optional alert record.
_DPD_TLS_CLIENT = re.compile(rb"\x16\x03[\x00-\x03]..\x01...\x03[\x00-\x03]", re.DOTALL)
_DPD_TLS_SERVER = re.compile(
    rb"(?:\x15\x03[\x00-\x03]....)?\x16\x03[\x00-\x03]..\x02...(?:\x03[\x00-\x04]|\x7f[\x00-\x50])", re.DOTALL
)
_DPD_TLS_NEED = 7 + 11  # bytes after which neither can match any more (the alert, the hello)
_DPD_TLS_FIRST_BYTES = b"\x15\x16"  # alert, handshake


def dpd_tls(data: bytes) -> bool | None:
    """Either of ssl/dpd.sig's TCP signatures on one direction's first bytes: None while
    they could still match."""
    if not data:
        return None
    if data[0] not in _DPD_TLS_FIRST_BYTES:
        return False  # neither can match (most streams: one test, no regex)
    if _DPD_TLS_CLIENT.match(data) or _DPD_TLS_SERVER.match(data):
        return True
    return None if len(data) < _DPD_TLS_NEED else False


_DPD_TLS_FIRST = Marks(start=rb"[\x15\x16]")
DPD_TLS_ANCHORS = Anchors(orig=_DPD_TLS_FIRST, resp=_DPD_TLS_FIRST)  # `dpd_tls` on either direction


@dataclass(frozen=True, slots=True)
class StartTls:
    """An analyzer that hands its stream to a child SSL analyzer (its StartTLS), where
    it is attached: on its registered ports, or where its dpd.sig `signature` matched."""

    analyzer: str
    ports: frozenset[int]
    # On the first bytes of each direction: True once StartTLS ran, False once it never
    # can (the analyzer skips, or was disabled by a violation), None until then.
    handed_over: Callable[[bytes, bytes], bool | None]
    signature: Check | None = None
    # Whose bytes complete the hand-over: the server's answer, but for MySQL's client flag.
    # `handed_over` is asked only on that side's chunks (the other side's cannot make it True).
    decided_by_orig: bool = False
    # The services recogniser whose ports and signature these are (`recognised`): where the
    # services analyzer runs, TLS reads that signature's verdict from it instead of asking.
    recogniser: Recogniser | None = None
    # What the first bytes hold wherever `signature` confirms (services.base.Anchors);
    # None: anywhere. The watch skips chunks whose windows hold none of its analyzers'
    # (`_TlsConn.gate`).
    signature_anchors: Anchors | None = None


def recognised(recogniser: Recogniser, handed_over: Callable[[bytes, bytes], bool | None]) -> StartTls:
    """The hand-over of an analyzer that is also a services recogniser: attached where the
    recogniser is, so on the same ports and by the same signature."""
    return StartTls(recogniser.name, registered_ports(recogniser.name, PROTO_TCP), handed_over, recogniser.signature,
                    recogniser=recogniser, signature_anchors=recogniser.anchors)


STARTTLS: tuple[StartTls, ...] = (
    recognised(smtp.RECOGNISER, smtp.starttls),  # SMTP.cc UpdateState
    recognised(ftp.RECOGNISER, ftp.starttls),  # FTP.cc DeliverStream, 234
    recognised(imap.RECOGNISER, imap.starttls),  # imap-analyzer.pac
    recognised(pop3.RECOGNISER, pop3.starttls),  # POP3.cc ProcessReply, STLS
    recognised(xmpp.RECOGNISER, xmpp.starttls),  # xmpp-analyzer.pac
    recognised(irc.RECOGNISER, irc.starttls),  # IRC.cc 670
    StartTls("mysql", registered_ports("mysql", PROTO_TCP), mysql.starttls,
             decided_by_orig=True),  # mysql-analyzer.pac
    recognised(postgresql.RECOGNISER, postgresql.starttls),  # postgresql_zeek.spicy, MaybeBackendSSL
    recognised(ldap.RECOGNISER_TCP, ldap.starttls),  # ldap.spicy ExtendedResponse, ldap_zeek.spicy TlsForward
    recognised(rdp.RECOGNISER, rdp.starttls),  # RDP.cc DeliverStream, encryption_method > 0
    recognised(socks.RECOGNISER, socks.tunnel),  # SOCKS.cc DeliverStream: both endpoints done, a new PIA
)


@functools.lru_cache(maxsize=4096)
def starttls_candidates(resp_p: int) -> tuple[tuple[StartTls, bool], ...]:
    """The hand-over analyzers Zeek may attach to a TCP connection to this port, each with
    whether it is attached already (by port) or waits for its signature."""
    return tuple((h, resp_p in h.ports) for h in STARTTLS if resp_p in h.ports or h.signature is not None)


@dataclass(frozen=True, slots=True)
class _Watch:
    """A port's hand-over candidates, as the watch holds them."""

    attached: tuple[StartTls, ...]  # by port: `handed_over` asked on the deciding side's chunks
    unmatched: tuple[StartTls, ...]  # waiting on a signature TLS asks itself
    awaiting: tuple[StartTls, ...]  # waiting on a signature whose verdict the services analyzer gives
    # While the PIA's windows hold no anchor of dpd.sig's TLS signatures or of `attached`'s
    # hand-overs and `unmatched`'s signatures, nothing is asked (the awaited verdicts
    # still are read); None where one of them has no anchors.
    gate: AnchorGate | None
    # The awaited signatures' anchors: where the PIA's last windows hold none, none of them
    # can have matched, so their verdicts need not be settled for the watch to end.
    awaiting_gate: AnchorGate | None


@functools.lru_cache(maxsize=4096)
def _watch(resp_p: int, services_run: bool) -> _Watch:
    """`starttls_candidates` sorted for the watch; a recogniser's signature is awaited from
    the services analyzer where it runs (`services.signature_verdicts`)."""
    candidates = starttls_candidates(resp_p)
    awaiting = tuple(h for h, attached in candidates if services_run and not attached and h.recogniser is not None)
    attached = tuple(h for h, is_attached in candidates if is_attached)
    unmatched = tuple(h for h, is_attached in candidates if not is_attached and h not in awaiting)
    # A hand-over attached by port may be decided on any chunk: no gate then.
    gate = None if attached else anchor_gate([DPD_TLS_ANCHORS, *(h.signature_anchors for h in unmatched)])
    return _Watch(attached, unmatched, awaiting, gate, anchor_gate(h.signature_anchors for h in awaiting))


VERSION_NAMES = {
    0x0300: "SSLv3",
    0x0301: "TLSv10",
    0x0302: "TLSv11",
    0x0303: "TLSv12",
    0x0304: "TLSv13",
    0xFEFF: "DTLSv10",
    0xFEFD: "DTLSv12",
}

CURVE_NAMES = {
    21: "secp224r1",
    23: "secp256r1",
    24: "secp384r1",
    25: "secp521r1",
    29: "x25519",
    30: "x448",
    256: "ffdhe2048",
    257: "ffdhe3072",
    258: "ffdhe4096",
    4588: "X25519MLKEM768",
}


class Malformed(ValueError):
    """A length field points past its container."""


_U16_PAIR = struct.Struct(">HH").unpack_from
_U32 = struct.Struct(">I").unpack_from
_RECORD_HEADER = struct.Struct(">BBxH").unpack_from  # content type, major version, length


def _need(n: int, pos: int, end: int) -> Malformed:
    return Malformed(f"need {n} bytes at {pos}, message ends at {end}")


# The parsers index the message directly (no reader object, no per-field calls: this runs
# for every hello). Offsets in errors count from the start of the enclosing vector (`base`).


def _vec8(buf: bytes, pos: int, end: int, base: int = 0) -> int:
    """Where the vector whose 1-byte length is at `pos` ends (its data starts at pos + 1)."""
    if pos >= end:
        raise _need(1, pos - base, end - base)
    stop = pos + 1 + buf[pos]
    if stop > end:
        raise _need(buf[pos], pos + 1 - base, end - base)
    return stop


def _vec16(buf: bytes, pos: int, end: int, base: int = 0) -> int:
    """Where the vector whose 2-byte length is at `pos` ends (its data starts at pos + 2)."""
    if pos + 2 > end:
        raise _need(2, pos - base, end - base)
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise _need(stop - pos - 2, pos + 2 - base, end - base)
    return stop


def _u16_list(buf: bytes, start: int, stop: int) -> list[int]:
    if (stop - start) % 2:
        raise Malformed("odd-length list of 16-bit values")
    return list(struct.unpack_from(f">{(stop - start) // 2}H", buf, start))


def _extensions(buf: bytes, pos: int) -> list[tuple[int, bytes]]:
    """The extensions block at `pos`, the rest of the message; absent (no bytes left) gives []."""
    if pos == len(buf):
        return []
    base = pos + 2
    end = _vec16(buf, pos, len(buf))
    out = []
    pos = base
    while pos + 4 <= end:
        etype, n = _U16_PAIR(buf, pos)
        stop = pos + 4 + n
        if stop > end:
            break
        out.append((etype, buf[pos + 4 : stop]))
        pos = stop
    if pos < end:  # the last extension is cut short: in its type, its length or its data
        if pos + 2 > end:
            raise _need(2, pos - base, end - base)
        _vec16(buf, pos + 2, end, base)  # raises, naming the length or the data
    return out


def _dashed(values: list[int]) -> str:
    """JA3's '-'-joined list, GREASE values left out."""
    return "-".join([str(v) for v in values if v not in GREASE])


# JA3 digests by the fields they hash: the clients of one TLS stack send the same hello, so
# most connections skip building and hashing the string. Cleared when full (bounded memory).
_JA3_CACHE: dict[tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]], str] = {}
_JA3_CACHE_MAX = 4096


@dataclass(slots=True)
class ClientHello:
    version: int
    ciphers: list[int]
    extensions: list[tuple[int, bytes]]
    session_id: bytes
    server_name: str | None = None
    curves: list[int] = field(default_factory=list)
    point_formats: list[int] = field(default_factory=list)

    def ja3_string(self) -> str:
        return ",".join(
            (
                str(self.version),
                _dashed(self.ciphers),
                _dashed([t for t, _ in self.extensions]),
                _dashed(self.curves),
                "-".join(map(str, self.point_formats)),
            )
        )

    def ja3(self) -> str:
        key = (
            self.version,
            tuple(self.ciphers),
            tuple([t for t, _ in self.extensions]),
            tuple(self.curves),
            tuple(self.point_formats),
        )
        digest = _JA3_CACHE.get(key)
        if digest is None:
            if len(_JA3_CACHE) >= _JA3_CACHE_MAX:
                _JA3_CACHE.clear()
            digest = _JA3_CACHE[key] = hashlib.md5(self.ja3_string().encode()).hexdigest()
        return digest


@dataclass(slots=True)
class ServerHello:
    version: int  # the 2-byte field of the ServerHello body
    cipher: int
    extensions: list[tuple[int, bytes]]
    session_id: bytes
    selected_version: int  # supported_versions when present, else `version`
    key_share_group: int | None = None

    def ja3s_string(self) -> str:
        exts = "-".join([str(t) for t, _ in self.extensions])  # GREASE kept
        return f"{self.version},{self.cipher},{exts}"

    def ja3s(self) -> str:
        return hashlib.md5(self.ja3s_string().encode()).hexdigest()


def _decode_sni(data: bytes) -> str | None:
    end = _vec16(data, 0, len(data))
    pos = 2
    while pos < end:
        stop = _vec16(data, pos + 1, end, 2)
        if data[pos] == 0:
            return data[pos + 3 : stop].decode("utf-8", "surrogateescape")
        pos = stop
    return None


def _hello_start(body: bytes) -> int:
    """Where the field after a hello's version, random and session id starts."""
    if len(body) < 34:
        raise _need(2, 0, len(body)) if len(body) < 2 else _need(32, 2, len(body))
    return _vec8(body, 34, len(body))


def parse_client_hello(body: bytes) -> ClientHello:
    """The body of a ClientHello handshake message (after its 4-byte header)."""
    end = len(body)
    pos = _hello_start(body)
    stop = _vec16(body, pos, end)
    ciphers = _u16_list(body, pos + 2, stop)
    exts = _extensions(body, _vec8(body, stop, end))  # after the compression methods
    server_name: str | None = None
    curves: list[int] = []
    point_formats: list[int] = []
    for etype, data in exts:
        if etype == EXT_SERVER_NAME and server_name is None and data:
            server_name = _decode_sni(data)
        elif etype == EXT_SUPPORTED_GROUPS:
            curves = _u16_list(data, 2, _vec16(data, 0, len(data)))
        elif etype == EXT_EC_POINT_FORMATS:
            point_formats = list(data[1 : _vec8(data, 0, len(data))])
    return ClientHello((body[0] << 8) | body[1], ciphers, exts, body[35:pos], server_name, curves, point_formats)


def parse_server_hello(body: bytes) -> ServerHello:
    """The body of a ServerHello handshake message (after its 4-byte header)."""
    end = len(body)
    pos = _hello_start(body)
    if pos + 3 > end:  # cipher suite, compression method
        raise _need(2, pos, end) if pos + 2 > end else _need(1, pos + 2, end)
    version = (body[0] << 8) | body[1]
    exts = _extensions(body, pos + 3)
    hello = ServerHello(version, (body[pos] << 8) | body[pos + 1], exts, body[35:pos], version)
    for etype, data in exts:
        if etype == EXT_SUPPORTED_VERSIONS and len(data) == 2:
            hello.selected_version = int.from_bytes(data, "big")
        elif etype == EXT_KEY_SHARE and len(data) >= 2:
            hello.key_share_group = int.from_bytes(data[:2], "big")
    return hello


class HandshakeScanner:
    """Finds the first handshake messages of one direction in its in-order byte stream.

    Walks TLS records from the first record header (`anchored`: the first bytes must match
    `pattern`; else it is searched for), joins handshake-record payloads (a message may span
    records) and yields complete handshake messages. Stops at the first non-handshake record
    that is not ChangeCipherSpec, or at `MAX_BYTES`.
    """

    __slots__ = ("buf", "start", "pos", "hs", "hs_pos", "pattern", "anchored", "done", "error")

    def __init__(self, pattern: re.Pattern[bytes], anchored: bool = False) -> None:
        self.buf = bytearray()
        self.start: int | None = None  # offset of the first record header
        self.pos = 0  # next record header
        self.hs = bytearray()  # concatenated handshake payloads
        self.hs_pos = 0  # next handshake message in hs
        self.pattern = pattern
        self.anchored = anchored
        self.done = False
        self.error: str | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add bytes; return the complete handshake messages (type, body) they finish."""
        if self.done or not data:
            return []
        buf = self.buf
        if self.start is None and self.anchored:
            buf += data[: MAX_BYTES - len(buf)]
            if len(buf) < _HELLO_HEADER_LEN:
                return []
            if self.pattern.match(buf) is None:
                self.done = True  # not TLS from the first byte: the SSL analyzer skips it
                return []
            self.start = 0
        elif self.start is None:
            # A header starting before the last 5 old bytes would have been found already.
            searched = max(len(buf) - 5, 0)
            buf += data[: MAX_BYTES - len(buf)]
            m = self.pattern.search(buf, searched)
            if m is None:
                if len(buf) >= MAX_BYTES:
                    self.done = True
                return []
            self.start = self.pos = m.start()
        else:
            buf += data[: MAX_BYTES - len(buf)]
        messages: list[tuple[int, bytes]] = []
        pos, end = self.pos, len(buf)
        while pos + 5 <= end:
            ctype, major, length = _RECORD_HEADER(buf, pos)
            if major != 3 or length > 16384 + 2048:
                self.error = "SSL_bad_record_header"
                self.done = True
                break
            if ctype != 22 and ctype != 20:
                # Anything but handshake and ChangeCipherSpec ends the plaintext handshake,
                # known from the header: the record itself is not waited for.
                self.done = True
                break
            stop = pos + 5 + length
            if stop > end:
                break
            if ctype == 22:
                self.hs += buf[pos + 5 : stop]
                self._messages(messages)
            pos = stop
        self.pos = pos
        if end >= MAX_BYTES:
            self.done = True
        return messages

    def skippable(self, read: frozenset[int]) -> int:
        """How many of the next bytes lie inside the handshake message being assembled, when
        its type is not one of `read`, and inside the record being assembled: they may go
        by unread (`skip`). 0 where that is not known yet."""
        buf, pos = self.buf, self.pos
        if self.done or self.start is None or pos + 5 > len(buf):
            return 0
        ctype, major, length = _RECORD_HEADER(buf, pos)
        have = len(buf) - pos - 5  # this record's payload so far
        if ctype != 22 or major != 3 or have >= length:
            return 0
        earlier = len(self.hs) - self.hs_pos  # the message's bytes in earlier records
        head = bytes(self.hs[self.hs_pos : self.hs_pos + 4]) + buf[pos + 5 : pos + 5 + max(0, 4 - earlier)]
        if len(head) < 4 or head[0] in read:
            return 0
        left_in_message = 4 + int.from_bytes(head[1:4], "big") - earlier - have
        return max(0, min(left_in_message, length - have))

    def skip(self, n: int) -> None:
        """`n` bytes `skippable` allowed went by unread: they stand in as zeros (inside a
        message nobody reads)."""
        self.feed(bytes(n))

    def _messages(self, out: list[tuple[int, bytes]]) -> None:
        """Append the complete messages of `hs` not returned yet to `out`."""
        hs, pos = self.hs, self.hs_pos
        while pos + 4 <= len(hs):
            header = _U32(hs, pos)[0]
            mlen = header & 0xFFFFFF
            if mlen > MAX_BYTES * 4:
                self.error = "SSL_bad_handshake_length"
                self.done = True
                break
            end = pos + 4 + mlen
            if end > len(hs):
                break
            out.append((header >> 24, bytes(hs[pos + 4 : end])))
            pos = end
        self.hs_pos = pos


class _TlsConn:
    __slots__ = ("ts", "client", "server", "hello", "shello", "curve", "weird", "attached", "handovers", "unmatched",
                 "awaiting", "verdicts", "verdicts_seen", "orig", "resp", "last_is_orig", "dpd_orig", "dpd_resp",
                 "gate", "awaiting_gate")

    def __init__(self, ts: float, resp_p: int, conn: ConnView) -> None:
        self.ts = ts
        self.client = HandshakeScanner(_CLIENT_HELLO_AT, anchored=True)
        self.server = HandshakeScanner(_SERVER_HELLO_AT)
        self.hello: ClientHello | None = None
        self.shello: ServerHello | None = None
        self.curve: int | None = None
        self.weird: str | None = None
        # Attached on ssl/main.zeek's ports at once; elsewhere None until a dpd.sig
        # signature or a hand-over attaches it, False once neither can.
        self.attached: bool | None = True if resp_p in SSL_PORTS else None
        # The hand-over analyzers still possible (`_Watch`).
        self.handovers: tuple[StartTls, ...] = ()
        self.unmatched: tuple[StartTls, ...] = ()
        self.awaiting: tuple[StartTls, ...] = ()
        self.verdicts: dict[str, bool] | None = None
        self.gate: AnchorGate | None = None  # `_Watch.gate`, until a chunk's windows hold an anchor
        self.awaiting_gate: AnchorGate | None = None  # `_Watch.awaiting_gate`
        if not self.attached:
            self.verdicts = signature_verdicts(conn)
            watch = _watch(resp_p, self.verdicts is not None)
            self.handovers, self.unmatched, self.awaiting = watch.attached, watch.unmatched, watch.awaiting
            self.gate, self.awaiting_gate = watch.gate, watch.awaiting_gate
        self.verdicts_seen = 0  # how many of `verdicts` the watch has read
        self.orig = b""  # the first bytes of each direction, what the hand-overs read
        self.resp = b""
        self.last_is_orig = False  # the direction of the last chunk they read
        self.dpd_orig: bool | None = None  # dpd_tls on each direction's PIA window
        self.dpd_resp: bool | None = None


class TlsAnalyzer:
    """AppAnalyzer for TLS; writes ssl.log when the context has an output directory."""

    name = NAME

    def __init__(self, ctx: AnalyzerContext, stream_users: frozenset[str] = frozenset({NAME})) -> None:
        self.ctx = ctx
        self.users = stream_users
        self.log = LogOut(ctx, "ssl", SSL_FIELDS)

    def reads_datagrams(self, resp_p: int) -> bool:
        return False  # TCP only

    def pia_gate(self, resp_p: int) -> PiaWait | None:
        """Off ssl/main.zeek's ports, while the watch's gate is clean and the PIA matches,
        `_attach` only keeps bytes (the services analyzer decides no awaited signature then:
        it is gated too). Where the PIA stops matching, the signatures are out. A port with
        a hand-over attached by port has no gate. Both watches, with and without the
        services analyzer."""
        if resp_p in SSL_PORTS:
            return None
        watches = (_watch(resp_p, True), _watch(resp_p, False))
        gates = [g for w in watches for g in (w.gate, w.awaiting_gate)]
        if any(g is None for g in gates):
            return None
        return PiaWait(tuple(g for g in gates if g is not None), done_after_orig=0)

    def pia_released(self, conn: ConnView) -> None:
        st = conn.app[NAME] = _TlsConn(0.0, conn.resp_p, conn)
        st.attached = False
        st.client.done = st.server.done = True

    def on_new(self, conn: ConnView) -> None:
        return

    def on_packet(self, conn: ConnView, is_orig: bool, pkt: Packet) -> None:
        if pkt.proto != PROTO_TCP:
            return
        st: _TlsConn | None = conn.app.get(NAME)
        if st is None:
            st = conn.app[NAME] = _TlsConn(pkt.ts, conn.resp_p, conn)
        rest = take_tunnel(conn, NAME)
        if rest is not None and st.attached is not True:
            self._start_in_tunnel(conn, st, rest, pkt.ts)
        if st.client.done and st.server.done:
            return
        data = tcp_data(conn, is_orig, pkt, self.users)
        if not data:
            return
        if st.attached:
            self._feed(conn, st, is_orig, data, pkt.ts)
        elif conn.is_partial:
            self._stop(conn, st)  # what attaches it (a signature, a hand-over) finds it partial: `_feed`
        else:
            self._attach(conn, st, is_orig, data, pkt.ts)

    def _attach(self, conn: ConnView, st: _TlsConn, is_orig: bool, data: bytes, ts: float) -> None:
        """Off its ports: a dpd.sig signature attaches the analyzer with the PIA's buffer
        replayed; a hand-over attaches it for the chunks after this one. When neither can
        any more, the connection is let go unread."""
        s = streams(conn)
        if s is None:
            return
        if st.gate is not None:
            unmatchable = st.gate.clean(s.pia)
            if unmatchable and s.pia.matching and (st.verdicts is None or len(st.verdicts) == st.verdicts_seen):
                self._keep_first_bytes(st, is_orig, data)
                return
            st.gate = None  # asked from this chunk on
            if unmatchable and not s.pia.matching:
                st.unmatched = ()  # their signatures cannot confirm on the PIA's last windows
                if st.awaiting_gate is not None and st.awaiting_gate.clean(s.pia):
                    st.awaiting = ()  # nor the awaited ones: nothing to settle
        if st.awaiting and st.verdicts is not None and len(st.verdicts) != st.verdicts_seen:
            self._take_verdicts(st)
            if st.attached:  # handed over on the last chunk
                self._feed(conn, st, is_orig, data, ts)
                return
        pia = s.pia
        # Decided for good once not None; only this side's window grew.
        if is_orig:
            if st.dpd_orig is None:
                st.dpd_orig = dpd_tls(pia.orig)
            dpd = st.dpd_orig
        else:
            if st.dpd_resp is None:
                st.dpd_resp = dpd_tls(pia.resp)
            dpd = st.dpd_resp
        if dpd:
            st.attached = True
            for chunk_is_orig, chunk in list(pia.chunks):
                if st.client.done and st.server.done:
                    break
                self._feed(conn, st, chunk_is_orig, chunk, ts)
            return
        if st.handovers or st.unmatched or st.awaiting:
            self._keep_first_bytes(st, is_orig, data)
            if st.awaiting and not pia.matching:
                self._settle(conn, st, is_orig)
            if st.unmatched:
                self._match_signatures(st, pia)
            if st.handovers and self._handed_over(st, is_orig):
                self._start_after_handover(st)
                return
        if pia.matching and (st.dpd_orig is not False or st.dpd_resp is not False):
            return  # a dpd.sig signature may still match
        if not (st.handovers or st.unmatched or st.awaiting) or len(st.orig) >= MAX_BYTES or len(st.resp) >= MAX_BYTES:
            st.attached = False
            self._stop(conn, st)

    def _start_in_tunnel(self, conn: ConnView, st: _TlsConn, rest: bytes, ts: float) -> None:
        """The HTTP analyzer opened a CONNECT tunnel on the last chunk (it runs after this
        analyzer on each chunk): SSL reads the tunnel from the server's bytes after the 200's
        head on, even where it had let the stream go; the watch is over."""
        st.client = HandshakeScanner(_CLIENT_HELLO_AT, anchored=True)
        st.server = HandshakeScanner(_SERVER_HELLO_AT)
        self._start_after_handover(st)
        s = streams(conn)
        if s is not None:
            s.want(NAME)
        if rest:
            self._feed(conn, st, False, rest, ts)

    # The watch of the hand-overs. An analyzer waiting on its signature is asked its
    # hand-over only from the chunk its signature matched on: that every hand-over refused
    # once stays refused on longer prefixes (they read the first bytes of each direction)
    # makes that what asking at every chunk would give.

    @staticmethod
    def _keep_first_bytes(st: _TlsConn, is_orig: bool, data: bytes) -> None:
        """Keep the first bytes the hand-overs read, and the side of the last chunk."""
        if st.handovers or st.unmatched or st.awaiting:
            if is_orig:
                st.orig += data[: MAX_BYTES - len(st.orig)]
            else:
                st.resp += data[: MAX_BYTES - len(st.resp)]
            st.last_is_orig = is_orig

    @staticmethod
    def _start_after_handover(st: _TlsConn) -> None:
        """An analyzer handed its stream over (StartTLS): SSL reads the chunks after this
        one, and the watch is over."""
        st.attached = True
        st.handovers = st.unmatched = st.awaiting = ()

    @classmethod
    def _take_verdicts(cls, st: _TlsConn) -> None:
        """The services analyzer's verdicts on the awaited signatures, as they stood after
        the last chunk (it reads each chunk after TLS). A failed one drops its analyzer. A
        matched one's analyzer is attached since that chunk: its hand-over is asked on the
        bytes up to it (if that chunk was from the side that decides it), as it would have
        been right after it; handed over, SSL reads from this chunk on."""
        verdicts = st.verdicts
        assert verdicts is not None
        st.verdicts_seen = len(verdicts)
        matched = []
        for handover in st.awaiting:
            if not verdicts.get(handover.analyzer):
                continue
            if st.last_is_orig == handover.decided_by_orig:
                done = handover.handed_over(st.orig, st.resp)
                if done:
                    cls._start_after_handover(st)
                    return
                if done is False:
                    continue
            matched.append(handover)
        st.handovers += tuple(matched)
        st.awaiting = tuple(h for h in st.awaiting if h.analyzer not in verdicts)

    @staticmethod
    def _settle(conn: ConnView, st: _TlsConn, chunk_is_orig: bool) -> None:
        """The PIA matched its last chunk: the awaited signatures are decided on this window,
        by the services analyzer for both of us, so that the connection can be let go on
        this chunk if none matched. One that did matched on this chunk."""
        settle_signatures(conn, [handover.analyzer for handover in st.awaiting], chunk_is_orig)
        verdicts = st.verdicts
        assert verdicts is not None
        st.verdicts_seen = len(verdicts)
        st.handovers += tuple(h for h in st.awaiting if verdicts.get(h.analyzer))
        st.awaiting = ()

    @staticmethod
    def _match_signatures(st: _TlsConn, pia: PiaBuffer) -> None:
        """The signatures TLS asks itself, on the PIA's window: a matched one's analyzer is
        attached from this chunk on; one that cannot match any more leaves."""
        verdicts = [(handover, handover.signature(pia.orig, pia.resp)) for handover in st.unmatched
                    if handover.signature is not None]
        if all(verdict is Verdict.MORE for _, verdict in verdicts) and pia.matching:
            return
        st.handovers += tuple(h for h, verdict in verdicts if verdict is Verdict.CONFIRM)
        st.unmatched = tuple(h for h, verdict in verdicts if verdict is Verdict.MORE and pia.matching)

    @staticmethod
    def _handed_over(st: _TlsConn, is_orig: bool) -> bool:
        """Ask the attached analyzers decided by this chunk's side whether they handed over;
        one that never will leaves."""
        refused = []
        for handover in st.handovers:
            if is_orig == handover.decided_by_orig:
                done = handover.handed_over(st.orig, st.resp)
                if done:
                    return True
                if done is False:
                    refused.append(handover)
        if refused:
            st.handovers = tuple(h for h in st.handovers if h not in refused)
        return False

    def _feed(self, conn: ConnView, st: _TlsConn, is_orig: bool, data: bytes, ts: float) -> None:
        """One chunk of a direction's stream, once the analyzer is attached."""
        if conn.is_partial:
            # src/analyzer/protocol/ssl/SSL.cc, SSL_Analyzer::DeliverStream returns at once
            # while the connection is partial (TCPSessionAdapter::IsPartial: it began without
            # its handshake), which only a flip of roles (at a SYN or SYN-ACK) clears later.
            self._stop(conn, st)
            return
        if is_orig:
            if not st.client.done:
                for mtype, body in st.client.feed(data):
                    if mtype == 1 and st.hello is None:
                        self._client_hello(conn, st, body, ts)
                if st.hello is not None:
                    st.client.done = True  # the ClientHello is all the client side gives us
                self._report(conn, st.client, ts)
        elif st.hello is not None and not st.server.done:
            # Server bytes only matter once a ClientHello was seen (server speaks second).
            for mtype, body in st.server.feed(data):
                if mtype == 2 and st.shello is None:
                    self._server_hello(conn, st, body, ts)
                elif mtype == 12 and st.shello is not None and len(body) >= 3 and body[0] == 3:
                    st.curve = int.from_bytes(body[1:3], "big")  # ECDHE named curve
                    st.server.done = True
                elif mtype == 14:  # ServerHelloDone
                    st.server.done = True
            if st.shello is not None and st.shello.selected_version == 0x0304:
                st.server.done = True  # everything after the hello is encrypted
            self._report(conn, st.server, ts)
        elif not is_orig and st.client.done and st.hello is None:
            st.server.done = True
        s = streams(conn)
        if s is None:
            return
        if st.client.done:
            if st.server.done:
                s.release(NAME)
            else:
                s.release_direction(NAME, True)  # the server's hello may still come
                # Inside a message it does not read (a Certificate), the fast engine may
                # count the server's bytes instead of handing them over.
                unread = st.server.skippable(_SERVER_READS) if st.hello is not None else 0
                if unread:
                    s.offer(NAME, False, unread, st.server.skip)
                else:
                    s.withdraw(NAME, False)
        else:
            # Server bytes matter only after a ClientHello (see above): until the client
            # sends one, the fast engine may count them instead of handing them to us.
            s.offer(NAME, False, _UNTIL_CLIENT_HELLO)

    @staticmethod
    def _stop(conn: ConnView, st: _TlsConn) -> None:
        """The analyzer reads no more of the connection (a hello it read is kept): the
        stream is let go."""
        st.client.done = st.server.done = True
        s = streams(conn)
        if s is not None:
            s.release(NAME)

    def _client_hello(self, conn: ConnView, st: _TlsConn, body: bytes, ts: float) -> None:
        try:
            st.hello = parse_client_hello(body)
        except Malformed as exc:
            st.weird = "SSL_malformed_client_hello"
            st.client.done = st.server.done = True
            self._weird(conn, st.weird, ts, str(exc))
            return
        st.ts = ts
        if "ssl" not in conn.service:
            conn.service.append("ssl")

    def _server_hello(self, conn: ConnView, st: _TlsConn, body: bytes, ts: float) -> None:
        try:
            st.shello = parse_server_hello(body)
        except Malformed as exc:
            st.server.done = True
            self._weird(conn, "SSL_malformed_server_hello", ts, str(exc))
            return
        if st.shello.key_share_group is not None:
            st.curve = st.shello.key_share_group

    def _report(self, conn: ConnView, scanner: HandshakeScanner, ts: float) -> None:
        if scanner.error:
            self._weird(conn, scanner.error, ts, None)
            scanner.error = None

    def _weird(self, conn: ConnView, name: str, ts: float, addl: str | None) -> None:
        if self.ctx.weirds is not None:
            self.ctx.weirds.report(
                name, ts, addl, uid=conn.uid, conn_id=(conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p)
            )

    def on_remove(self, conn: ConnView, rec: ConnRecord) -> None:
        st: _TlsConn | None = conn.app.get(NAME)
        if st is None or st.hello is None:
            return
        info = tls_info(st)  # the hashes once, for the record and for ssl.log
        rec.server_name = info["server_name"]
        rec.ja3 = info["ja3"]
        if "ja3s" in info:
            rec.ja3s = info["ja3s"]
        if self.log.enabled:
            self.log.write(ssl_row(conn, info))

    def close(self) -> None:
        self.log.close()


@functools.cache  # at most 2^16 codes
def cipher_name(code: int) -> str:
    suite = dpkt.ssl_ciphersuites.BY_CODE.get(code)
    return suite.name if suite is not None else f"unknown-{code}"


def tls_info(st: _TlsConn) -> dict[str, Any]:
    """The ssl.log fields pcapexfil knows for one connection."""
    assert st.hello is not None
    info: dict[str, Any] = {
        "ts": st.ts,
        "server_name": st.hello.server_name or None,
        "ja3": st.hello.ja3(),
        "resumed": False,
        "established": False,
    }
    sh = st.shello
    if sh is not None:
        info["version"] = VERSION_NAMES.get(sh.selected_version, f"unknown-{sh.selected_version}")
        info["cipher"] = cipher_name(sh.cipher)
        if st.curve is not None:
            info["curve"] = CURVE_NAMES.get(st.curve, f"unknown-{st.curve}")
        info["ja3s"] = sh.ja3s()
        # TLS 1.3 echoes the session id in compatibility mode: not a resumption there.
        info["resumed"] = (
            sh.selected_version < 0x0304 and bool(st.hello.session_id) and sh.session_id == st.hello.session_id
        )
        # Approximation: the handshake is not followed to its Finished messages.
        info["established"] = True
    return info
