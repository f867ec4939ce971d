"""The NTP analyzer's role rule in the kernel: `flow.ntp_roles.roles_said` and
`watch_ends` on a datagram's bytes (tests/test_ntp_roles.py holds them to their oracle)."""

from __future__ import annotations

import numpy as np

from pcapexfil.fast.netorder import u16, u32
from pcapexfil.flow.ntp_roles import (
    CLIENT_MODE,
    CONTROL_COUNT_AT,
    CONTROL_HEAD,
    CONTROL_MODE,
    EXTENSION_HEAD,
    EXTENSION_LEN_AT,
    EXTENSION_VALUE_LEN_AT,
    EXTENSIONS_OVER,
    FIRST_STD_MODE,
    LAST_STD_MODE,
    MODE7,
    MODE7_AUTH_BIT,
    MODE7_DATA_LEN_AT,
    MODE7_DATA_LEN_MASK,
    MODE7_HEAD,
    MODE7_MAC_LEN,
    MODE_MASK,
    ROLES_FLIP,
    ROLES_KEEP,
    ROLES_VIOLATION,
    SERVER_MODE,
    SIG_LEN_SIZE,
    STD_LEN,
)
from pcapexfil.flow.ports import IGNORE_VIOLATIONS_AFTER
from pcapexfil.jit import njit


@njit(cache=True, _nrt=False)
def _std_parses(buf, off, cap):
    """flow.ntp_roles._std_parses for buf[off:off + cap]."""
    if cap < STD_LEN:
        return False
    end_of_data = off + cap
    at = off + STD_LEN
    while end_of_data - at > EXTENSIONS_OVER:
        sig_at = at + EXTENSION_HEAD + u32(buf, at + EXTENSION_VALUE_LEN_AT)
        if sig_at + SIG_LEN_SIZE > end_of_data:
            return False
        end = sig_at + SIG_LEN_SIZE + u32(buf, sig_at)
        if end > end_of_data:
            return False
        at = max(end, at + u16(buf, at + EXTENSION_LEN_AT))
    return True


@njit(cache=True, _nrt=False)
def _parses(buf, off, cap):
    """flow.ntp_roles.message_shape for a non-empty buf[off:off + cap]."""
    mode = np.int64(buf[off]) & MODE_MASK
    if FIRST_STD_MODE <= mode <= LAST_STD_MODE:
        return _std_parses(buf, off, cap)
    if mode == CONTROL_MODE:
        return cap >= CONTROL_HEAD and cap >= CONTROL_HEAD + u16(buf, off + CONTROL_COUNT_AT)
    if mode == MODE7:
        if cap < MODE7_HEAD:
            return False
        mac = MODE7_MAC_LEN if np.int64(buf[off + 1]) & MODE7_AUTH_BIT else 0
        return cap >= MODE7_HEAD + (u16(buf, off + MODE7_DATA_LEN_AT) & MODE7_DATA_LEN_MASK) + mac
    return True


@njit(cache=True, _nrt=False)
def ntp_said(buf, off, cap, from_orig):
    """roles_said for the datagram buf[off:off + cap], sent by the originator if `from_orig`."""
    if cap == 0:
        return ROLES_KEEP
    if not _parses(buf, off, cap):
        return ROLES_VIOLATION
    mode = np.int64(buf[off]) & MODE_MASK
    if mode == SERVER_MODE and from_orig or mode == CLIENT_MODE and not from_orig:
        return ROLES_FLIP
    return ROLES_KEEP


@njit(cache=True, _nrt=False)
def ntp_watch_ends(said, size):
    """flow.ntp_roles.watch_ends."""
    return said == ROLES_FLIP or said == ROLES_VIOLATION and size <= IGNORE_VIOLATIONS_AFTER
