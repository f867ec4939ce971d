"""The kernel's NTP role rule (fast.ntp) against its readable oracle (flow.ntp_roles)."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pcapexfil.fast.ntp import ntp_said, ntp_watch_ends
from pcapexfil.flow.ntp_roles import ROLES_FLIP, ROLES_KEEP, ROLES_VIOLATION, roles_said, watch_ends
from pcapexfil.flow.ports import IGNORE_VIOLATIONS_AFTER

# A first byte that is every version and mode, then lengths around the shortest messages.
_PAYLOADS = st.builds(lambda first, n: bytes([first]) + bytes(n), st.integers(0, 255), st.integers(0, 60)) | st.binary()


@given(payload=_PAYLOADS, from_orig=st.booleans(), lead=st.integers(0, 8))
@settings(deadline=None)  # the first example loads (or compiles) the kernel
@example(payload=bytes([0x24]) + bytes(47), from_orig=True, lead=0)  # v4 server from the originator: flip
@example(payload=bytes([0x23]) + bytes(47), from_orig=False, lead=0)  # v4 client from the responder: flip
@example(payload=bytes([0x23]) + bytes(46), from_orig=False, lead=0)  # one byte short: violation
@example(payload=bytes([0x26]) + bytes(11), from_orig=True, lead=0)  # a control message's 12 bytes
def test_ntp_said_is_roles_said(payload: bytes, from_orig: bool, lead: int) -> None:
    buf = np.frombuffer(bytes(lead) + payload, np.uint8)
    assert ntp_said(buf, lead, len(payload), from_orig) == roles_said(payload, from_orig)


def test_ntp_watch_ends_is_watch_ends() -> None:
    for said in (ROLES_KEEP, ROLES_FLIP, ROLES_VIOLATION):
        for size in (0, IGNORE_VIOLATIONS_AFTER, IGNORE_VIOLATIONS_AFTER + 1):
            assert ntp_watch_ends(said, size) == watch_ends(said, size)
