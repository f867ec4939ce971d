"""The kernel's NTP role rule (fast.ntp) against its readable oracle (flow.ntp_roles)."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pcapexfil.fast.ntp import ntp_said, ntp_watch_ends
from pcapexfil.flow.ntp_roles import (
    ROLES_FLIP,
    ROLES_KEEP,
    ROLES_VIOLATION,
    message_shape,
    roles_said,
    watch_ends,
)
from pcapexfil.flow.ports import IGNORE_VIOLATIONS_AFTER


def _extension(value: bytes, signature: bytes = b"", length: int = 0) -> bytes:
    """An RFC 5906 extension field as ntp-protocol.pac's Extension_Field reads it."""
    head = bytes([0x80, 2]) + length.to_bytes(2, "big") + bytes(10)
    return head + len(value).to_bytes(4, "big") + value + len(signature).to_bytes(4, "big") + signature


_STD = bytes([0x23]) + bytes(47)  # version 4, client
_MONLIST = bytes([0x17, 0x00, 0x03, 0x2A]) + bytes(4)  # mode 7 REQ_MON_GETLIST_1, as scanners send it

# A first byte that is every version and mode, then lengths around the shortest messages;
# standard messages with extension fields (some cut short); any bytes.
_PAYLOADS = (
    st.builds(lambda first, n: bytes([first]) + bytes(n), st.integers(0, 255), st.integers(0, 80))
    | st.builds(lambda fields, cut: (_STD + b"".join(fields))[: None if cut < 0 else 48 + cut],
                st.lists(st.builds(_extension, st.binary(max_size=30), st.binary(max_size=8), st.integers(0, 90)),
                         max_size=3), st.integers(-1, 120))
    | st.builds(lambda first, rest: bytes([first]) + rest, st.sampled_from([0x16, 0x17, 0x97]), st.binary(max_size=40))
    | st.binary()
)


def test_message_shape_follows_the_pac() -> None:
    """ntp-protocol.pac / ntp-mode7.pac as binpac parses them: no version check, mode 0's
    body is the rest of the data, a field past the end is a violation."""
    assert message_shape(b"") is None
    assert message_shape(bytes([0x00])) is True  # mode 0, version 0: `unknown` &restofdata
    assert message_shape(bytes([0x3B]) + bytes(47)) is True  # version 7, mode 3: no version check
    assert message_shape(_STD[:47]) is False  # NTP_std_msg one byte short
    assert message_shape(_STD + bytes(20)) is True  # the NTP_MAC (20 bytes left)
    assert message_shape(_STD + bytes(24)) is True  # 24 left: no extension field, NTP_MAC_ext
    assert message_shape(_STD + _extension(b"v" * 8, b"s" * 4)) is True  # 30 left: one field
    assert message_shape(_STD + _extension(b"v" * 8, b"s" * 4)[:-1]) is False  # its signature cut
    past = _STD + bytes(14) + (1000).to_bytes(4, "big") + bytes(20)
    assert message_shape(past) is False  # value_len past the end
    assert message_shape(_STD + _extension(b"v" * 8, length=4000)) is True  # padding past the end ends the array
    assert message_shape(_MONLIST) is True  # mode 7: 6 bytes through err_and_data_len, no data
    assert message_shape(_MONLIST[:5]) is False
    assert message_shape(bytes([0x17, 0x80, 3, 0x2A, 0, 0]) + bytes(19)) is False  # auth_bit: a 20-byte MAC
    assert message_shape(bytes([0x17, 0, 3, 0x2A, 0xF0, 0x08]) + bytes(8)) is True  # 8 data bytes (low 12 bits)
    assert message_shape(bytes([0x16]) + bytes(11)) is True  # mode 6, c = 0
    assert message_shape(bytes([0x16]) + bytes(9) + (4).to_bytes(2, "big") + bytes(3)) is False  # c past the end


@given(payload=_PAYLOADS, from_orig=st.booleans(), lead=st.integers(0, 8))
@settings(deadline=None)  # the first example loads (or compiles) the kernel
@example(payload=bytes([0x24]) + bytes(47), from_orig=True, lead=0)  # v4 server from the originator: flip
@example(payload=bytes([0x23]) + bytes(47), from_orig=False, lead=0)  # v4 client from the responder: flip
@example(payload=bytes([0x23]) + bytes(46), from_orig=False, lead=0)  # one byte short: violation
@example(payload=bytes([0x26]) + bytes(11), from_orig=True, lead=0)  # a control message's 12 bytes
@example(payload=_MONLIST, from_orig=True, lead=0)
@example(payload=bytes([0x24]) + bytes(47) + _extension(b"v" * 8, b"s" * 4), from_orig=True, lead=3)
@example(payload=bytes([0x24]) + bytes(47) + _extension(b"v" * 8, b"s" * 4)[:-1], from_orig=True, lead=3)
def test_ntp_said_is_roles_said(payload: bytes, from_orig: bool, lead: int) -> None:
    buf = np.frombuffer(bytes(lead) + payload, np.uint8)
    assert ntp_said(buf, lead, len(payload), from_orig) == roles_said(payload, from_orig)


def test_ntp_watch_ends_is_watch_ends() -> None:
    for said in (ROLES_KEEP, ROLES_FLIP, ROLES_VIOLATION):
        for size in (0, IGNORE_VIOLATIONS_AFTER, IGNORE_VIOLATIONS_AFTER + 1):
            assert ntp_watch_ends(said, size) == watch_ends(said, size)
