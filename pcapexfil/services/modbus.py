"""Modbus/TCP: a PDU the grammar parses, with a Modbus protocol identifier.

src/analyzer/protocol/modbus/modbus-protocol.pac reads each direction's stream as
ModbusTCP_PDU records: a transport header (transaction, protocol, length, unit, function
code: 8 bytes) in a record of `length + 6` bytes, then the request's or response's body by
function code (the field checks are commented out; an unlisted code's body is the rest of
the record). modbus-analyzer.pac `deliver_ModbusTCP_PDU` calls AnalyzerConfirmation for a
PDU parsed; since zeek/zeek#3972 ("Prevent non-Modbus on port 502 to be reported as
Modbus", `ModbusTCP_Conn::IsValidHeader` guarding the callbacks) only for a header whose
protocol identifier is 0. A binpac exception (a record shorter than its header, a body
running past the record, an array that does not fit its `&length`) is an
AnalyzerViolation (Analyzer::NextStream). A record whose length field is larger than what
arrived is waited for: it neither confirms nor fails. Registered on 502/tcp
(modbus/main.zeek), no dpd.sig. Not modelled: IsValidHeader's other checks, which the
stored copies of the source do not show.
"""

from __future__ import annotations

from collections.abc import Callable

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import Recogniser, Verdict

PROTOCOL_AT = 2  # the header's protocol identifier: 0 for Modbus
LENGTH_AT = 4  # the header's length field counts the bytes after it
LENGTH_BASE = 6  # a PDU is `length + 6` bytes
HEADER_LEN = 8

Body = Callable[[bytes], bool]  # whether the body (what the record holds after the header) parses


def _fixed(n: int) -> Body:
    return lambda body: len(body) >= n


def _counted_bytes(at: int) -> Body:
    """A byte count at `at`, then that many bytes."""
    return lambda body: len(body) > at and len(body) >= at + 1 + body[at]


def _u16_array(count_at: int, bytes_at: int) -> Body:
    """A 16-bit count at `count_at`, a byte count at `bytes_at`, then `count` 16-bit values
    within that many bytes (`uint16[count] &length=byte_count`)."""
    def parses(body: bytes) -> bool:
        if len(body) <= bytes_at:
            return False
        count, nbytes = int.from_bytes(body[count_at : count_at + 2], "big"), body[bytes_at]
        return len(body) >= bytes_at + 1 + nbytes and 2 * count <= nbytes
    return parses


def _records(element: Callable[[bytes, int], int]) -> Body:
    """A byte count, then records filling exactly that many bytes (`T[] &length=byte_count`):
    `element(region, at)` is where one starting at `at` ends."""
    def parses(body: bytes) -> bool:
        if not body or len(body) < 1 + body[0]:
            return False
        region, at = body[1 : 1 + body[0]], 0
        while at < len(region):
            at = element(region, at)
        return at == len(region)
    return parses


def _file_record_request(region: bytes, at: int) -> int:
    return at + 7  # type, file, record, length


def _reference_with_data(region: bytes, at: int) -> int:
    """type, file, record, word count, then that many 16-bit values."""
    if at + 7 > len(region):
        return len(region) + 1
    return at + 7 + 2 * int.from_bytes(region[at + 5 : at + 7], "big")


def _file_record_response(region: bytes, at: int) -> int:
    """file length, type, then `file_len` bytes of 16-bit values."""
    if at + 2 > len(region):
        return len(region) + 1
    return at + 2 + region[at]


def _fifo_response(body: bytes) -> bool:
    return len(body) >= 4 and len(body) >= 4 + 2 * int.from_bytes(body[2:4], "big")


# ModbusTCP_Request / ModbusTCP_Response, by function code; an unlisted code parses.
_REQUESTS: dict[int, Body] = {
    1: _fixed(4), 2: _fixed(4), 3: _fixed(4), 4: _fixed(4), 5: _fixed(4), 6: _fixed(4),
    15: _counted_bytes(4), 16: _u16_array(2, 4), 20: _records(_file_record_request),
    21: _records(_reference_with_data), 22: _fixed(6), 23: _u16_array(6, 8), 24: _fixed(2),
}  # fmt: skip
_EXCEPTIONS = (0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x8F, 0x90, 0x94, 0x95, 0x96, 0x97, 0x98)
_RESPONSES: dict[int, Body] = {
    1: _counted_bytes(0), 2: _counted_bytes(0), 3: _counted_bytes(0), 4: _counted_bytes(0), 5: _fixed(4),
    6: _fixed(4), 15: _fixed(4), 16: _fixed(4), 20: _records(_file_record_response),
    21: _records(_reference_with_data), 22: _fixed(6), 23: _counted_bytes(0), 24: _fifo_response,
    **{code: _fixed(1) for code in _EXCEPTIONS},
}  # fmt: skip


def pdus(data: bytes, is_orig: bool) -> tuple[bool, bool]:
    """The direction's first bytes as ModbusTCP_PDU records: whether one with a Modbus
    protocol identifier parsed before any failed, and whether one failed (a record waited
    for is neither)."""
    bodies = _REQUESTS if is_orig else _RESPONSES
    confirmed = False
    pos = 0
    while len(data) - pos >= LENGTH_BASE:
        end = pos + LENGTH_BASE + int.from_bytes(data[pos + LENGTH_AT : pos + LENGTH_BASE], "big")
        if end > len(data):
            break  # waited for
        body = bodies.get(data[pos + HEADER_LEN - 1]) if end - pos >= HEADER_LEN else None
        if end - pos < HEADER_LEN or (body is not None and not body(data[pos + HEADER_LEN : end])):
            return confirmed, True
        confirmed = confirmed or data[pos + PROTOCOL_AT : pos + LENGTH_AT] == b"\0\0"
        pos = end
    return confirmed, False


def check(orig: bytes, resp: bytes) -> Verdict:
    """Confirmed by a PDU with a Modbus header parsed on either side."""
    return Verdict.CONFIRM if pdus(orig, True)[0] or pdus(resp, False)[0] else Verdict.MORE


def violation(orig: bytes, resp: bytes) -> bool:
    return pdus(orig, True)[1] or pdus(resp, False)[1]


RECOGNISER = Recogniser("modbus", PROTO_TCP, check, violation=violation)
