"""DNS queries and replies paired in the kernel: Zeek's DNS::set_session (the DNS analyzer's
`_session`) for the UDP connections whose messages the kernel parses (`fast.dns`), so a
query costs Python nothing and a transaction reaches the analyzer once, when its reply
comes, as an `OUT_PAIR` row.

A connection's waiting queries are slots of a pool (`pairs`, their names in `names`): the
analyzer's `pending_query` is `CONN_DTYPE.dns_pq`, its `pending_queries` a list linked
through `PAIR_DTYPE.next` from `dns_head`, kept in the dict's order (grouped by transaction
id in the order the ids were first queued, each id's queries first come first), so the
rules below are `_session`'s, step for step. The kernel keeps a connection only while that
is all its state: a reply with no waiting query (the analyzer's `pending_replies`), a query
beyond `MAX_KERNEL_QUEUED` waiting ones (far below DNS::max_pending_query_ids and
max_pending_msgs, so the analyzer's flushes never apply here), a name longer than a slot,
an empty pool, or a datagram the kernel does not parse (malformed, not a standard query,
a decoded frame: the analyzer parses it, weirds and violations included) hand the
connection's state to Python (`OUT_HANDOVER`: its payload bytes so far and its waiting
queries), whose analyzer pairs its messages from then on (`DNS_PYTHON`). A connection on
NetBIOS's port or to a multicast responder, which the analyzer pairs by other rules, is its
from the first message. At the connection's end its record carries the same state
(`REC_DTYPE.dns_*`), whose waiting queries the analyzer writes as Zeek's finalize does.

Slots and rows: the kernel takes a slot for each query it keeps and gives it back when
the query is answered (its fields copied into the `OUT_PAIR` row, its name into the call's
message arena); the slots of a state handed over Python gives back (`FastFlowTable.dns_free`)
once it has read them, so they stay valid until then. `out` holds one kernel call's rows
for the analyzer, at most two per event (a handover, then the message); an event names its
range (`EV_DTYPE.dns_lo`, `dns_hi`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pcapexfil.fast.batch import V4_MAPPED_LO
from pcapexfil.fast.dns import NO_QUESTION, U_ARENA
from pcapexfil.fast.netorder import u16
from pcapexfil.identifiers.dns_header import (
    OPCODE_MASK,
    OPCODE_NOTIFY,
    OPCODE_QUERY,
    OPCODE_SHIFT,
    OPCODE_UPDATE,
    QR,
)
from pcapexfil.identifiers.netbios import NETBIOS_NS_PORT
from pcapexfil.jit import njit

# CONN_DTYPE.dns_mode / REC_DTYPE.dns_mode: no message parsed yet; the kernel pairs its
# messages; the analyzer in Python does (for the rest of the connection).
DNS_UNSEEN, DNS_KERNEL, DNS_PYTHON = 0, 1, 2
NO_SLOT = -1
MAX_KERNEL_QUEUED = 15  # waiting queries besides dns_pq (the analyzer flushes above 50 ids / 50 per id)
NAME_BYTES = 256  # a query name kept in a slot (a longer one hands the connection to Python)
V4_MAPPED = np.uint64(V4_MAPPED_LO >> 32)  # an IPv4 address's low half, above its 32 bits
NO_MSG = -1  # OUT_DTYPE.msg of a row without a message (OUT_HANDOVER)

PAIR_DTYPE = np.dtype(
    [
        ("ts", np.float64),  # the query's time: the transaction's ts
        ("tid", np.int64),
        ("flags", np.int64),  # the query's header flags (RD, TC, Z)
        ("q_len", np.int64),  # its question's name in `names` (NO_QUESTION: none)
        ("qtype", np.int64),
        ("qclass", np.int64),
        ("next", np.int64),  # the next waiting query of the connection's list (NO_SLOT: last)
    ]
)

# OUT_DTYPE.what: the rows the analyzer reads for one event, in order.
OUT_HANDOVER = 0  # the connection goes to Python: `size` bytes so far, waiting queries from `slot` and `head`
OUT_PAIR = 1  # a query (its fields copied here, its name into D's arena) and its reply, message row `msg`
OUT_MESSAGE = 2  # message row `msg` (of `size` bytes), for the analyzer to pair
OUT_DTYPE = np.dtype(
    [
        ("what", np.int64),
        ("size", np.int64),
        ("msg", np.int64),  # a row of `fast.dns.DnsParse.msgs`
        ("slot", np.int64),
        ("head", np.int64),
        *((f"q_{name}", dtype) for name, dtype in (("ts", np.float64), ("tid", np.int64), ("flags", np.int64),
                                                   ("off", np.int64), ("len", np.int64), ("qtype", np.int64),
                                                   ("qclass", np.int64))),
    ]
)

# `ints` slots: the free stack's height, this call's output rows.
P_FREE, P_OUT = 0, 1


class DnsPairs(NamedTuple):
    """`Q` in kernel signatures: the waiting queries' pool and one call's output rows."""

    pairs: np.ndarray  # PAIR_DTYPE [slots]
    names: np.ndarray  # uint8 [slots, NAME_BYTES]
    free: np.ndarray  # int64 [slots], a stack
    out: np.ndarray  # OUT_DTYPE
    ints: np.ndarray  # int64 [2]


def new_dns_pairs(slots: int, events: int) -> DnsPairs:
    """A pool of `slots` waiting queries (a fixed cost: an empty pool hands connections to
    Python) and room for two rows per event of a call with `events` events."""
    ints = np.zeros(2, np.int64)
    ints[P_FREE] = slots
    return DnsPairs(pairs=np.zeros(slots, PAIR_DTYPE), names=np.zeros((slots, NAME_BYTES), np.uint8),
                    free=np.arange(slots - 1, -1, -1, dtype=np.int64), out=np.zeros(2 * events, OUT_DTYPE),
                    ints=ints)


# pair_message's answers.
PAIR_KEPT = 0  # a query now waits in the kernel
PAIR_DONE = 1  # a reply found its query: an OUT_PAIR row
PAIR_LEFT = 2  # the connection goes to Python, this message with it


@njit(cache=True, _nrt=False)
def _unlink_first(Q, C, c, tid):
    """Remove the first waiting query (in list order) with transaction id `tid`, or the
    list's first one if `tid` < 0; returns its slot (NO_SLOT: none)."""
    P = Q.pairs
    prev = NO_SLOT
    s = C[c].dns_head
    while s != NO_SLOT:
        if tid < 0 or P[s].tid == tid:
            if prev == NO_SLOT:
                C[c].dns_head = P[s].next
            else:
                P[prev].next = P[s].next
            C[c].dns_n -= 1
            return s
        prev = s
        s = P[s].next
    return NO_SLOT


@njit(cache=True, _nrt=False)
def _queue(Q, C, c, slot):
    """`_enqueue` without its flushes: after the last waiting query of the same id (the
    dict's deque), else at the end (a new key goes last)."""
    P = Q.pairs
    tid = P[slot].tid
    P[slot].next = NO_SLOT
    C[c].dns_n += 1
    s = C[c].dns_head
    if s == NO_SLOT:
        C[c].dns_head = slot
        return
    after = NO_SLOT
    last = s
    while s != NO_SLOT:
        if P[s].tid == tid:
            after = s
        last = s
        s = P[s].next
    at = after if after != NO_SLOT else last
    P[slot].next = P[at].next
    P[at].next = slot


@njit(cache=True, _nrt=False)
def pair_message(Q, D, C, c, m, ts):
    """The DNS analyzer's `_parsed` + `_session` for message row `m` of D, which came at
    `ts`, on connection `c` (whose state the kernel holds). Returns (PAIR_KEPT / PAIR_DONE / PAIR_LEFT, the
    answered query's slot)."""
    msg = D.msgs[m]
    flags = msg.flags  # a standard query's (fast.dns.parse_message parses no other opcode)
    tid = msg.id
    if flags & QR == 0:
        if C[c].dns_pq != NO_SLOT and C[c].dns_n >= MAX_KERNEL_QUEUED:
            return PAIR_LEFT, NO_SLOT
        if Q.ints[P_FREE] == 0 or msg.q_len > NAME_BYTES:
            return PAIR_LEFT, NO_SLOT
        Q.ints[P_FREE] -= 1
        slot = Q.free[Q.ints[P_FREE]]
        p = Q.pairs[slot]
        p.ts = ts
        p.tid = tid
        p.flags = flags
        p.q_len = msg.q_len
        if msg.q_len != NO_QUESTION:
            p.qtype = msg.qtype
            p.qclass = msg.qclass
            for j in range(msg.q_len):
                Q.names[slot, j] = D.arena[msg.q_off + j]
        if C[c].dns_pq == NO_SLOT:
            C[c].dns_pq = slot  # no queries wait then (a reply that takes it refills it from them)
        else:
            _queue(Q, C, c, slot)
        return PAIR_KEPT, NO_SLOT
    pq = C[c].dns_pq
    if pq != NO_SLOT and Q.pairs[pq].tid == tid:
        nxt = _unlink_first(Q, C, c, tid)
        C[c].dns_pq = nxt if nxt != NO_SLOT else _unlink_first(Q, C, c, -1)
        return PAIR_DONE, pq
    s = _unlink_first(Q, C, c, tid)
    if s != NO_SLOT:
        return PAIR_DONE, s
    return PAIR_LEFT, NO_SLOT  # a reply before its query: the analyzer's pending_replies


@njit(cache=True, _nrt=False)
def out_row(Q, what, size, slot, head, msg):
    """Append an output row; returns its index."""
    k = Q.ints[P_OUT]
    r = Q.out[k]
    r.what = what
    r.size = size
    r.slot = slot
    r.head = head
    r.msg = msg
    Q.ints[P_OUT] = k + 1
    return k


@njit(cache=True, _nrt=False)
def _out_pair(Q, D, slot, m):
    """An OUT_PAIR row: the query's fields and name copied out (its name into D's arena,
    which has room: `dns_datagram`), so its slot goes back to the pool at once."""
    k = out_row(Q, OUT_PAIR, 0, NO_SLOT, NO_SLOT, m)
    r, p = Q.out[k], Q.pairs[slot]
    r.q_ts = p.ts
    r.q_tid = p.tid
    r.q_flags = p.flags
    r.q_len = p.q_len
    r.q_qtype = p.qtype
    r.q_qclass = p.qclass
    at = D.used[U_ARENA]
    r.q_off = at
    if p.q_len != NO_QUESTION:
        for j in range(p.q_len):
            D.arena[at + j] = Q.names[slot, j]
        D.used[U_ARENA] = at + p.q_len
    Q.free[Q.ints[P_FREE]] = slot
    Q.ints[P_FREE] += 1


@njit(cache=True, _nrt=False)
def hand_over(Q, C, c):
    """The connection's state goes to Python: an OUT_HANDOVER row (nothing if the kernel
    never parsed one of its messages); it is Python's from now on."""
    if C[c].dns_mode == DNS_KERNEL:
        out_row(Q, OUT_HANDOVER, C[c].dns_size, C[c].dns_pq, C[c].dns_head, NO_MSG)
    C[c].dns_mode = DNS_PYTHON
    C[c].dns_pq = NO_SLOT
    C[c].dns_head = NO_SLOT
    C[c].dns_n = 0


@njit(cache=True, _nrt=False)
def on_netbios_port(C, c):
    """DNS_Interpreter's `is_netbios`: either port is NetBIOS name service's."""
    return C[c].orig_p == NETBIOS_NS_PORT or C[c].resp_p == NETBIOS_NS_PORT


@njit(cache=True, _nrt=False)
def responder_multicast(C, c):
    """identifiers.dns_header.is_multicast of the responder: 224.0.0.0/4, ff00::/8."""
    hi, lo = C[c].resp_hi, C[c].resp_lo
    if hi == 0 and lo >> np.uint64(32) == V4_MAPPED:
        return (lo >> np.uint64(28)) & np.uint64(0xF) == np.uint64(0xE)
    return hi >> np.uint64(56) == np.uint64(0xFF)


@njit(cache=True, _nrt=False)
def _paired_in_python(C, c):
    """Connections whose messages the analyzer pairs by other rules (identifiers.dns):
    NetBIOS's port (its opcodes) and a multicast responder (each message its own row)."""
    return on_netbios_port(C, c) or responder_multicast(C, c)


# first_message_said's answers (identifiers.dns_header.first_message: None, False, True).
FIRST_NOT, FIRST_KEEP, FIRST_FLIP = 0, 1, 2


@njit(cache=True, _nrt=False)
def first_message_said(C, c, buf, off, from_orig):
    """identifiers.dns_header.first_message for the header at buf[off:]."""
    flags = u16(buf, off + 2)
    opcode = (flags >> OPCODE_SHIFT) & OPCODE_MASK
    if not (opcode == OPCODE_QUERY or opcode == OPCODE_NOTIFY or opcode == OPCODE_UPDATE or on_netbios_port(C, c)):
        return FIRST_NOT
    if flags & QR and from_orig and not responder_multicast(C, c):
        return FIRST_FLIP
    return FIRST_KEEP


@njit(cache=True, _nrt=False)
def dns_datagram(Q, D, C, c, parsed, m, ts):
    """A datagram with payload on a DNS port of connection `c`, at `ts`: `parsed` says
    whether the kernel parsed it as message row `m` of D. Writes the analyzer's rows; returns True if
    an event must carry them (or the packet), False if the kernel keeps the message."""
    if C[c].dns_mode == DNS_PYTHON:
        if parsed:
            out_row(Q, OUT_MESSAGE, D.msgs[m].size, NO_SLOT, NO_SLOT, m)
        return True
    if not parsed:
        hand_over(Q, C, c)  # the packet goes to the analyzers, which parse it
        return True
    if C[c].dns_mode == DNS_UNSEEN and _paired_in_python(C, c):
        C[c].dns_mode = DNS_PYTHON
        out_row(Q, OUT_MESSAGE, D.msgs[m].size, NO_SLOT, NO_SLOT, m)
        return True
    was = C[c].dns_mode
    size_before = C[c].dns_size
    C[c].dns_mode = DNS_KERNEL
    C[c].dns_size = size_before + D.msgs[m].size
    if D.msgs[m].flags & QR == 0 or D.used[U_ARENA] + NAME_BYTES <= D.arena.shape[0]:  # _out_pair's room
        said, slot = pair_message(Q, D, C, c, m, ts)
    else:
        said, slot = PAIR_LEFT, NO_SLOT
    if said == PAIR_KEPT:
        return False
    if said == PAIR_DONE:
        _out_pair(Q, D, slot, m)
        return True
    C[c].dns_mode = was  # nothing to hand over if this is its first message
    C[c].dns_size = size_before  # the analyzer counts this message itself
    hand_over(Q, C, c)
    out_row(Q, OUT_MESSAGE, D.msgs[m].size, NO_SLOT, NO_SLOT, m)
    return True
