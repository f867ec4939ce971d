"""Who is the originator: a connection's roles swapped (flow.table.Connection.flip_roles,
Zeek's Connection::FlipRoles and TCPSessionAdapter::FlipRoles)."""

from __future__ import annotations

import numpy as np

from pcapexfil.fast.history import L_FLIPPED, hist_append, swap_history_roles
from pcapexfil.flow.tcp import ESTABLISHED, INACTIVE, SYN_ACK_SENT
from pcapexfil.jit import njit

# CONN_DTYPE.first_packet_seen and .app_dead bits: the originator's, the responder's.
ORIG_BIT, RESP_BIT = 1, 2


@njit(cache=True, _nrt=False)
def _swap_bits(bits):
    return (ORIG_BIT if bits & RESP_BIT else 0) | (RESP_BIT if bits & ORIG_BIT else 0)


@njit(cache=True, _nrt=False)
def flip_endpoints(F, c):
    """TCPAdapter.flip_roles: the endpoints swap roles, not rows (`orig_ep` flips)."""
    C, E = F.conns, F.endpoints
    o = 2 * c + np.int64(C[c].orig_ep)
    C[c].orig_ep = 1 - C[c].orig_ep
    E[o].is_orig = False
    E[o ^ 1].is_orig = True
    C[c].first_packet_seen = _swap_bits(C[c].first_packet_seen)
    C[c].is_partial = False


@njit(cache=True, _nrt=False)
def flip_roles(F, c, recase):
    """Connection.flip_roles: swap originator and responder, note it with '^' (with
    `recase`, a late flip: the history so far is rewritten, `swap_history_roles`)."""
    C = F.conns
    if recase:
        swap_history_roles(F, c)
        _swap_addresses(C, c)
    else:
        flip_addresses(F, c)
    C[c].orig_pkts, C[c].resp_pkts = C[c].resp_pkts, C[c].orig_pkts
    C[c].orig_ip_bytes, C[c].resp_ip_bytes = C[c].resp_ip_bytes, C[c].orig_ip_bytes
    C[c].orig_len, C[c].resp_len = C[c].resp_len, C[c].orig_len
    C[c].app_dead = _swap_bits(C[c].app_dead)  # the stream each side's analyzers ended
    if C[c].is_tcp:
        flip_endpoints(F, c)


@njit(cache=True, _nrt=False)
def flip_addresses(F, c):
    """Connection.flip_addresses: Connection::FlipRoles' own part, addresses, ports and '^'."""
    hist_append(F, c, L_FLIPPED)
    _swap_addresses(F.conns, c)


@njit(cache=True, _nrt=False)
def flip_mid_packet(F, c, is_orig, ip_len):
    """Connection.flip_mid_packet: a UDP analyzer's FlipRoles (DNS, NTP) at a packet
    counted as the originator's if `is_orig`; ConnSize's earlier counts swap, the packet's
    stay on the side it came in, the payload lengths do not move."""
    C = F.conns
    moved = 1 if is_orig else -1
    C[c].orig_pkts, C[c].resp_pkts = C[c].resp_pkts + moved, C[c].orig_pkts - moved
    C[c].orig_ip_bytes, C[c].resp_ip_bytes = C[c].resp_ip_bytes + moved * ip_len, C[c].orig_ip_bytes - moved * ip_len
    flip_addresses(F, c)


@njit(cache=True, _nrt=False)
def _swap_addresses(C, c):
    C[c].orig_hi, C[c].resp_hi = C[c].resp_hi, C[c].orig_hi
    C[c].orig_lo, C[c].resp_lo = C[c].resp_lo, C[c].orig_lo
    C[c].orig_p, C[c].resp_p = C[c].resp_p, C[c].orig_p


@njit(cache=True, _nrt=False)
def synack_sender_is_responder(F, c):
    """A SYN-ACK-first connection's next packet came from the other side: the SYN-ACK's
    sender is the responder after all (TCPAdapter.synack_sender_is_responder)."""
    C, E = F.conns, F.endpoints
    r = 2 * c + 1 - np.int64(C[c].orig_ep)
    if E[r].state == SYN_ACK_SENT:
        E[r].prev_state = INACTIVE
        E[r].state = ESTABLISHED
    C[c].is_partial = False
    C[c].first_packet_seen = C[c].first_packet_seen | RESP_BIT
