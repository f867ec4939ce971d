"""The NTP analyzer's role rule in the kernel: `flow.ntp_roles.roles_said` and
`watch_ends` on a datagram's bytes (tests/test_ntp_roles.py holds them to their oracle)."""

from __future__ import annotations

import numpy as np

from pcapexfil.flow.ntp_roles import (
    CLIENT_MODE,
    CONTROL_MODE,
    HEADER_LEN,
    MAX_VERSION,
    MIN_CONTROL_LEN,
    MIN_VERSION,
    MODE_MASK,
    ROLES_FLIP,
    ROLES_KEEP,
    ROLES_VIOLATION,
    SERVER_MODE,
    VERSION_MASK,
    VERSION_SHIFT,
)
from pcapexfil.flow.ports import IGNORE_VIOLATIONS_AFTER
from pcapexfil.jit import njit


@njit(cache=True, _nrt=False)
def ntp_said(buf, off, cap, from_orig):
    """roles_said for the datagram buf[off:off + cap], sent by the originator if `from_orig`."""
    if cap == 0:
        return ROLES_KEEP
    first = np.int64(buf[off])
    version, mode = (first >> VERSION_SHIFT) & VERSION_MASK, first & MODE_MASK
    if version < MIN_VERSION or version > MAX_VERSION or mode == 0:
        return ROLES_VIOLATION
    if cap < (MIN_CONTROL_LEN if mode >= CONTROL_MODE else HEADER_LEN):
        return ROLES_VIOLATION
    if mode == SERVER_MODE and from_orig or mode == CLIENT_MODE and not from_orig:
        return ROLES_FLIP
    return ROLES_KEEP


@njit(cache=True, _nrt=False)
def ntp_watch_ends(said, size):
    """flow.ntp_roles.watch_ends."""
    return said == ROLES_FLIP or said == ROLES_VIOLATION and size <= IGNORE_VIOLATIONS_AFTER
