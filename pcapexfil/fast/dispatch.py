"""Which packets leave the kernel for the Python analyzers (`fast.engine` replays them).

TCP analyzers read stream bytes only, so only payload goes to them, and only while a
direction's stream is still wanted (`CONN_DTYPE.app_dead`). Bodies they have offered to
the kernel (`identifiers.stream.TcpStreams.offer`) are counted here instead
(`count_for_analyzers`). UDP analyzers see a flow's first datagram, or every datagram on
the DNS ports and the ports where a service recogniser needs the responder's reply.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pcapexfil.fast.endpoint import SEQ_SIGN, orig_phys
from pcapexfil.fast.layout import G_CALL, M32
from pcapexfil.flow.ports import registered_ports
from pcapexfil.jit import njit
from pcapexfil.packet import PROTO_UDP, TH_SYN
from pcapexfil.services import REPLY_UDP_PORTS

# CONN_DTYPE.app_mode: the analyzers want the first (UDP) packet, every packet (TCP payload
# while a direction is wanted; UDP on APP_UDP ports), or none.
APP_FIRST, APP_EVERY, APP_NONE = 0, 1, 2
# A connection whose every packet goes to the analyzers ends the kernel call after this
# many of them, so Python can tell it to stop (analyzers are done after a handshake or two).
APP_PKTS_PER_CALL = 4


def _port_set(ports: Iterable[int]) -> np.ndarray:
    """A lookup table over the 65 536 port numbers, True at `ports`."""
    table = np.zeros(65536, np.bool_)
    table[list(ports)] = True
    return table


# UDP responder ports the DNS analyzer is registered for (its expiry timer, T_DNS_EXPIRE).
DNS_UDP = _port_set(registered_ports("dns", PROTO_UDP))
# UDP responder ports whose every datagram goes to the analyzers: DNS's, and those where a
# service recogniser needs the responder's first datagram (services.REPLY_UDP_PORTS).
APP_UDP = DNS_UDP | _port_set(REPLY_UDP_PORTS)

# count_for_analyzers' verdicts.
TO_ANALYZERS, COUNTED, COUNTED_TO_END = 0, 1, 2


@njit(cache=True, _nrt=False)
def app_sent_pause(C, S, c):
    """Count one more packet handed to the analyzers in this kernel call; True when the call
    should end here so they can say they are done with the connection (APP_PKTS_PER_CALL)."""
    call = S.ints[G_CALL]
    if C[c].app_call != call:
        C[c].app_call = call
        C[c].app_sent = 0
    C[c].app_sent += 1
    return C[c].app_sent >= APP_PKTS_PER_CALL


@njit(cache=True, _nrt=False)
def count_for_analyzers(E, e, flags, seq, length, caplen):
    """Whether endpoint `e`'s segment needs the analyzers: COUNTED if its bytes lie inside
    what they left to the kernel to count (`identifiers.stream.TcpStreams.offer`) right
    after the bytes counted so far, or if they had them all already (a retransmission);
    COUNTED_TO_END if it ends exactly there (a body is complete: they must hear of it at
    this place). Anything else (a gap, an overlap, bytes past the offer, a snap-length
    cut, a SYN) is TO_ANALYZERS, and the analyzers take the count back from there."""
    if flags & TH_SYN or caplen < length:
        return TO_ANALYZERS
    ahead = (seq - E[e].sk_seq) & M32
    if ahead == 0:
        if length <= E[e].sk_left:
            E[e].sk_seq = (E[e].sk_seq + length) & M32
            E[e].sk_left -= length
            E[e].sk_used += length
            return COUNTED if E[e].sk_left else COUNTED_TO_END
        return TO_ANALYZERS
    # A retransmission wholly before the next byte: StreamDirection drops it unread.
    if ahead >= SEQ_SIGN and ((E[e].sk_seq - seq) & M32) >= length:
        return COUNTED
    return TO_ANALYZERS


@njit(cache=True, _nrt=False)
def hand_counts_to_analyzers(F, O, k, c):
    """Event `k` hands both directions' counts to the analyzers; the kernel counts no more
    until they say again what it may (fast.engine, between kernel calls)."""
    E = F.endpoints
    o = orig_phys(F.conns, c)
    O.events[k].counted_orig = E[o].sk_used
    O.events[k].counted_resp = E[o ^ 1].sk_used
    for d in (o, o ^ 1):
        E[d].sk_used = 0
        E[d].sk_left = 0
