"""An NTP message's shape, and the roles it gives the connection.

Zeek's NTP analyzer (registered on 123/udp, ntp/main.zeek) parses each datagram
(src/analyzer/protocol/ntp/ntp-protocol.pac `NTP_PDU`, ntp-mode7.pac `NTP_mode7_msg`) and, in
src/analyzer/protocol/ntp/ntp-analyzer.pac `proc_ntp_message`, confirms and, since Zeek 6
(PR 3016), flips the connection once (`flipped_`) at a SERVER-mode message from the
originator or a CLIENT-mode message from the responder. A datagram binpac cannot parse
throws, which NTP.cc's `DeliverPacket` turns into a violation. The service recogniser
(`services.ntp`) confirms with `message_shape`; both flow tables apply `roles_said`
(`flow.table.FlowTable._ntp_message`, the kernel's `fast.ntp.ntp_said`).
"""

from __future__ import annotations

from pcapexfil.flow.ports import IGNORE_VIOLATIONS_AFTER

MODE_MASK = 0x7
CLIENT_MODE, SERVER_MODE = 3, 4  # RFC 5905's modes; ntp-analyzer.pac's CLIENT, SERVER
FIRST_STD_MODE, LAST_STD_MODE = 1, 5  # NTP_PDU's `standard_modes`: an NTP_std_msg
CONTROL_MODE, MODE7 = 6, 7  # NTP_PDU's `modes_6_7`: NTP_control_msg, NTP_mode7_msg
# Byte counts from the datagram's first byte (NTP_PDU's `first_byte`).
STD_LEN = 48  # through NTP_std_msg's transmit_ts
EXTENSIONS_OVER = 24  # NTP_std_msg's has_exts: more left after transmit_ts; the array's &until
EXTENSION_VALUE_LEN_AT, EXTENSION_HEAD = 14, 18  # Extension_Field's value_len, the fields through it
EXTENSION_LEN_AT = 2  # Extension_Field's `len`, which `pad` pads the field to
SIG_LEN_SIZE = 4
CONTROL_HEAD, CONTROL_COUNT_AT = 12, 10  # NTP_control_msg through `c`; where `c` is
MODE7_HEAD, MODE7_DATA_LEN_AT = 6, 4  # NTP_mode7_msg through err_and_data_len; where it is
MODE7_DATA_LEN_MASK, MODE7_AUTH_BIT, MODE7_MAC_LEN = 0x0FFF, 0x80, 20  # data_len, auth_bit, NTP_MAC

# roles_said's answers: the message keeps the roles, flips them, or is none (the analyzer's
# violation).
ROLES_KEEP, ROLES_FLIP, ROLES_VIOLATION = 0, 1, 2


def _u16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "big")


def _u32(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 4], "big")


def message_shape(data: bytes) -> bool | None:
    """Whether ntp-protocol.pac parses a datagram's payload as an NTP_PDU (None: no
    payload). No version is checked; mode 0 has an `unknown` body (&restofdata) and always
    parses; only a field past the datagram's end fails."""
    if not data:
        return None
    mode = data[0] & MODE_MASK
    if FIRST_STD_MODE <= mode <= LAST_STD_MODE:
        return _std_parses(data)
    if mode == CONTROL_MODE:  # `data: bytestring &length=c`; the MAC only where 12 bytes are left
        return len(data) >= CONTROL_HEAD and len(data) >= CONTROL_HEAD + _u16(data, CONTROL_COUNT_AT)
    if mode == MODE7:  # `data` of data_len bytes (the low 12 bits), an NTP_MAC if auth_bit
        if len(data) < MODE7_HEAD:
            return False
        mac = MODE7_MAC_LEN if data[1] & MODE7_AUTH_BIT else 0
        return len(data) >= MODE7_HEAD + (_u16(data, MODE7_DATA_LEN_AT) & MODE7_DATA_LEN_MASK) + mac
    return True


def _std_parses(data: bytes) -> bool:
    """NTP_std_msg: the fixed fields, then, while more than 24 bytes are left
    (&until($input.length() <= 24), checked before each), RFC 5906 extension fields: 18
    bytes through value_len, the value, sig_len, the signature, then `pad` to the field's
    `len` (none where `len` is shorter; binpac's padding to an offset already passed is
    empty). The MAC after them is parsed only where exactly 20 or 24 bytes are left, so
    it always fits; other bytes are left unparsed."""
    n = len(data)
    if n < STD_LEN:
        return False
    at = STD_LEN
    while n - at > EXTENSIONS_OVER:
        sig_at = at + EXTENSION_HEAD + _u32(data, at + EXTENSION_VALUE_LEN_AT)
        if sig_at + SIG_LEN_SIZE > n:
            return False
        end = sig_at + SIG_LEN_SIZE + _u32(data, sig_at)
        if end > n:
            return False
        at = max(end, at + _u16(data, at + EXTENSION_LEN_AT))
    return True


def roles_said(data: bytes, from_orig: bool) -> int:
    """What proc_ntp_message does with the roles for one datagram's payload, sent by the
    originator if `from_orig`: a SERVER-mode message from the originator or a CLIENT-mode
    one from the responder flips them (Connection::FlipRoles); a datagram that is no
    message is a violation instead; no payload, nothing."""
    shape = message_shape(data)
    if shape is None:
        return ROLES_KEEP
    if not shape:
        return ROLES_VIOLATION
    mode = data[0] & MODE_MASK
    if mode == SERVER_MODE and from_orig or mode == CLIENT_MODE and not from_orig:
        return ROLES_FLIP
    return ROLES_KEEP


def watch_ends(said: int, size: int) -> bool:
    """Whether the analyzer no longer flips the connection after a message `roles_said`
    answered `said` for, the two directions having carried `size` payload bytes: it
    flipped (`flipped_`), or a violation disabled it (dpd.zeek acts on violations up to
    IGNORE_VIOLATIONS_AFTER)."""
    return said == ROLES_FLIP or said == ROLES_VIOLATION and size <= IGNORE_VIOLATIONS_AFTER
