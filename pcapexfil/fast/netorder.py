"""Big-endian (network order) integers read from a byte array, for the kernels that parse
protocol messages (`fast.dns`, `fast.ntp`)."""

from __future__ import annotations

import numpy as np

from pcapexfil.jit import njit


@njit(cache=True, _nrt=False)
def u16(buf, at):
    return (np.int64(buf[at]) << 8) | np.int64(buf[at + 1])


@njit(cache=True, _nrt=False)
def u32(buf, at):
    return (u16(buf, at) << 16) | u16(buf, at + 2)
