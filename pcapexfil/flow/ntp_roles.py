"""An NTP message's shape, and the roles it gives the connection.

Zeek's NTP analyzer (registered on 123/udp, ntp/main.zeek) parses each datagram
(src/analyzer/protocol/ntp/ntp-protocol.pac `NTP_PDU`) and, in
src/analyzer/protocol/ntp/ntp-analyzer.pac `proc_ntp_message`, confirms and, since Zeek 6
(PR 3016), flips the connection once (`flipped_`) at a SERVER-mode message from the
originator or a CLIENT-mode message from the responder. The service recogniser
(`services.ntp`) confirms with `message_shape`; both flow tables apply `roles_said`
(`flow.table.FlowTable._ntp_message`, the kernel's `fast.ntp.ntp_said`).
"""

from __future__ import annotations

from pcapexfil.flow.ports import IGNORE_VIOLATIONS_AFTER

HEADER_LEN = 48  # RFC 5905 fixed header
MIN_VERSION, MAX_VERSION = 1, 4
CONTROL_MODE = 6  # mode 6/7 messages (ntp-protocol.pac: control, mode 7) are shorter
MIN_CONTROL_LEN = 12
MODE_MASK, VERSION_SHIFT, VERSION_MASK = 0x7, 3, 0x7
CLIENT_MODE, SERVER_MODE = 3, 4  # RFC 5905's modes; ntp-analyzer.pac's CLIENT, SERVER

# roles_said's answers: the message keeps the roles, flips them, or is none (the analyzer's
# violation).
ROLES_KEEP, ROLES_FLIP, ROLES_VIOLATION = 0, 1, 2


def message_shape(data: bytes) -> bool | None:
    """Whether a datagram's payload is an NTP message (None: no payload)."""
    if not data:
        return None
    version, mode = (data[0] >> VERSION_SHIFT) & VERSION_MASK, data[0] & MODE_MASK
    if not MIN_VERSION <= version <= MAX_VERSION or mode == 0:
        return False
    return len(data) >= (MIN_CONTROL_LEN if mode >= CONTROL_MODE else HEADER_LEN)


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
