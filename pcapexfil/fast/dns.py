"""DNS messages parsed in the kernel: a UDP datagram's DNS message into fixed columns and
a byte arena, so the DNS analyzer gets it without a Packet or a parse in Python.

The flow table calls `parse_message` for each datagram of a connection on a port of
`DnsParse.ports` (DNS ports where no other analyzer reads datagrams, `fast.engine`); a
parsed message is paired in the kernel (`fast.dns_pairs`) or reaches the analyzer as an
EV_DNS instead of the packet's EV_PKT. It reads what
`identifiers.dns.Message` reads (header, every question, the last one kept, the answer
section) with the same rules; names are lowercased and their labels joined with dots,
the text of an NS, CNAME, PTR, SOA, MX or SRV answer is its name, and every other answer
keeps its record data for `identifiers.dns.answer_text`. A message it cannot parse as
`Message` would (malformed, more than `MAX_QUERIES` questions, an RRSIG, NSEC or NAPTR
answer, whose text holds a name, a LOC answer, whose text depends on the bytes after it), one whose opcode is not a standard query's, or one that does not
fit the arrays is left to Python: the packet
goes to the analyzers as before and `Message` parses it, weirds included. So both paths
give the analyzer the same message, and `Message` is the oracle (tests/test_fast_dns.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pcapexfil.fast.netorder import u16
from pcapexfil.identifiers.dns import (
    HEADER_LEN,
    MAX_NAME_LENGTH,
    MAX_POINTER_HOPS,
    MAX_QUERIES,
    OPCODE_QUERY,
    RRSIG_SIGNER_AT,
    TYPE_CNAME,
    TYPE_LOC,
    TYPE_MX,
    TYPE_NAPTR,
    TYPE_NS,
    TYPE_NSEC,
    TYPE_PTR,
    TYPE_RRSIG,
    TYPE_SOA,
    TYPE_SRV,
    Message,
    answer_text,
)
from pcapexfil.identifiers.dns_header import OPCODE_MASK, OPCODE_SHIFT
from pcapexfil.jit import njit

# ANS_DTYPE.text: how an answer's text is made.
TEXT_NAME, TEXT_RDATA, TEXT_NONE = 0, 1, 2
# ANS_DTYPE.owner_len: the owner is the (one) question's name (a pointer to offset 12).
OWNER_IS_QUESTION = -1
# MSG_DTYPE.q_len: the message has no question.
NO_QUESTION = -1

MSG_DTYPE = np.dtype(
    [
        ("size", np.int64),  # captured payload bytes (the analyzer's c$orig$size + c$resp$size)
        ("id", np.int64),
        ("flags", np.int64),
        ("qdcount", np.int64),
        ("ancount", np.int64),
        ("nscount", np.int64),
        ("arcount", np.int64),
        ("q_off", np.int64),  # the last question's name in the arena
        ("q_len", np.int64),
        ("qtype", np.int64),
        ("qclass", np.int64),
        ("ans_start", np.int64),  # its answers: rows of `DnsParse.answers`
        ("ans_n", np.int64),
    ]
)
ANS_DTYPE = np.dtype(
    [
        ("owner_off", np.int64),
        ("owner_len", np.int64),
        ("rtype", np.int64),
        ("ttl", np.int64),
        ("text", np.int64),
        ("off", np.int64),  # TEXT_NAME: the name, TEXT_RDATA: the record data, in the arena
        ("len", np.int64),
    ]
)
# DnsParse.used slots.
U_MSGS, U_ANSWERS, U_ARENA = 0, 1, 2


class DnsParse(NamedTuple):
    """`D` in kernel signatures: which responder ports to parse, and one kernel call's
    parsed messages (`used`: rows and arena bytes filled, reset before each call)."""

    ports: np.ndarray  # bool [65536]
    msgs: np.ndarray  # MSG_DTYPE
    answers: np.ndarray  # ANS_DTYPE
    arena: np.ndarray  # uint8
    used: np.ndarray  # int64 [3]


def new_dns_parse(ports: np.ndarray, msgs: int) -> DnsParse:
    """Room for `msgs` messages per kernel call (one per event at most), 8 answers and
    512 arena bytes each on average; a message that does not fit is left to Python."""
    return DnsParse(ports=ports, msgs=np.zeros(msgs, MSG_DTYPE), answers=np.zeros(8 * msgs, ANS_DTYPE),
                    arena=np.zeros(512 * msgs, np.uint8), used=np.zeros(3, np.int64))


# read_name's failures (negative end positions).
MALFORMED, ARENA_FULL = -1, -2


@njit(cache=True, _nrt=False)
def read_name(buf, start, size, pos, arena, apos):
    """identifiers.dns.read_name over the message at buf[start:start+size], from message
    offset `pos`: the lowercased name goes to arena[apos:]. Returns (the message offset
    after the name, the arena position after it), or (MALFORMED or ARENA_FULL, apos)."""
    end = -1
    limit = pos
    total = 0
    hops = 0
    first = True
    out = apos
    while True:
        if pos >= size:
            return MALFORMED, apos
        n = np.int64(buf[start + pos])
        if n == 0:
            pos += 1
            break
        if n & 0xC0 == 0xC0:
            if pos + 1 >= size:
                return MALFORMED, apos
            target = ((n & 0x3F) << 8) | np.int64(buf[start + pos + 1])
            if end < 0:
                end = pos + 2
            if target >= limit:
                return MALFORMED, apos
            hops += 1
            if hops > MAX_POINTER_HOPS:
                return MALFORMED, apos
            pos = target
            limit = target
            continue
        if n > 63:
            return MALFORMED, apos
        label_end = pos + 1 + n
        if label_end > size:
            return MALFORMED, apos
        total += n + 1
        if total > MAX_NAME_LENGTH:
            return MALFORMED, apos
        if out + n + 1 > arena.shape[0]:
            return ARENA_FULL, apos
        if not first:
            arena[out] = 46  # "."
            out += 1
        first = False
        for j in range(pos + 1, label_end):
            ch = buf[start + j]
            arena[out] = ch + 32 if 65 <= ch <= 90 else ch  # bytes.lower(): ASCII only
            out += 1
        pos = label_end
    return (end if end >= 0 else pos), out


@njit(cache=True, _nrt=False)
def parse_message(D, buf, start, size):
    """Parse the message at buf[start:start+size] into the next row of D.msgs; True if
    it was parsed, False if it is left to Python (nothing of it is kept then)."""
    U = D.used
    m, a0, apos = U[U_MSGS], U[U_ANSWERS], U[U_ARENA]
    if m >= D.msgs.shape[0] or size < HEADER_LEN:
        return False
    flags = u16(buf, start + 2)
    if (flags >> OPCODE_SHIFT) & OPCODE_MASK != OPCODE_QUERY:
        return False  # DnsAnalyzer._message's opcode rules, and its pairing's
    qd = u16(buf, start + 4)
    an = u16(buf, start + 6)
    if qd > MAX_QUERIES:
        return False  # DnsAnalyzer._message: a violation, before any parse
    if a0 + an > D.answers.shape[0]:
        return False
    row = D.msgs[m]
    row.size = size
    row.id = u16(buf, start)
    row.flags = flags
    row.qdcount = qd
    row.ancount = an
    row.nscount = u16(buf, start + 8)
    row.arcount = u16(buf, start + 10)
    row.q_len = NO_QUESTION
    pos = HEADER_LEN
    for q in range(qd):
        pos, after = read_name(buf, start, size, pos, D.arena, apos)
        if pos < 0 or pos + 4 > size:
            return False
        if q == qd - 1:  # the last question is the row's (Message.__init__)
            row.q_off = apos
            row.q_len = after - apos
            row.qtype = u16(buf, start + pos)
            row.qclass = u16(buf, start + pos + 2)
            apos = after  # the others' names are read, not kept
        pos += 4
    row.ans_start = a0
    row.ans_n = an
    for k in range(an):
        r = D.answers[a0 + k]
        if qd == 1 and pos + 2 <= size and buf[start + pos] == 0xC0 and buf[start + pos + 1] == HEADER_LEN:
            r.owner_off = 0
            r.owner_len = OWNER_IS_QUESTION
            pos += 2
        else:
            r.owner_off = apos
            pos, after = read_name(buf, start, size, pos, D.arena, apos)
            if pos < 0:
                return False
            r.owner_len = after - apos
            apos = after
        if pos + 10 > size:
            return False
        rtype = u16(buf, start + pos)
        rdlen = u16(buf, start + pos + 8)
        r.rtype = rtype
        r.ttl = (u16(buf, start + pos + 4) << 16) | u16(buf, start + pos + 6)
        pos += 10
        if pos + rdlen > size:
            return False
        name_at = -1
        if rtype == TYPE_NS or rtype == TYPE_CNAME or rtype == TYPE_PTR or rtype == TYPE_SOA:
            name_at = pos
        elif rtype == TYPE_MX:
            name_at = pos + 2
        elif rtype == TYPE_SRV:
            name_at = pos + 6
        elif (rtype == TYPE_NSEC or rtype == TYPE_NAPTR or rtype == TYPE_LOC
              or rtype == TYPE_RRSIG and rdlen >= RRSIG_SIGNER_AT):
            return False
        if name_at >= 0:
            end, after = read_name(buf, start, size, name_at, D.arena, apos)
            if end == ARENA_FULL:
                return False
            if end == MALFORMED:
                r.text = TEXT_NONE  # answer_text's None: the name does not read
            else:
                r.text = TEXT_NAME
                r.off = apos
                r.len = after - apos
                apos = after
        else:
            if apos + rdlen > D.arena.shape[0]:
                return False
            r.text = TEXT_RDATA
            r.off = apos
            r.len = rdlen
            for j in range(rdlen):
                D.arena[apos + j] = buf[start + pos + j]
            apos += rdlen
        pos += rdlen
    U[U_MSGS] = m + 1
    U[U_ANSWERS] = a0 + an
    U[U_ARENA] = apos
    return True


class ParsedMessages:
    """The messages one kernel call parsed, each read as an `identifiers.dns.Message` when
    Python asks for its row (most are queries the kernel paired itself: `fast.dns_pairs`)."""

    def __init__(self, D: DnsParse) -> None:
        self.rows = D.msgs[: D.used[U_MSGS]].tolist()
        self.answers = D.answers[: D.used[U_ANSWERS]].tolist()
        self.arena = D.arena[: D.used[U_ARENA]].tobytes()

    def message(self, m: int) -> Message:
        """Row `m`, as `Message` would have parsed its datagram."""
        arena = self.arena
        _, tid, flags, qd, an, ns, ar, q_off, q_len, qtype, qclass, a0, n_ans = self.rows[m]
        qname = None
        question = None
        if q_len != NO_QUESTION:
            qname = arena[q_off : q_off + q_len].decode("utf-8", "surrogateescape")
            question = (qname, qtype, qclass)
        parsed: list[tuple[str, int, int, str | None]] = []
        for owner_off, owner_len, rtype, ttl, how, off, length in self.answers[a0 : a0 + n_ans]:
            if owner_len == OWNER_IS_QUESTION:
                assert qname is not None
                owner = qname
            else:
                owner = arena[owner_off : owner_off + owner_len].decode("utf-8", "surrogateescape")
            text: str | None = None
            if how == TEXT_NAME:
                text = arena[off : off + length].decode("utf-8", "surrogateescape")
            elif how == TEXT_RDATA:
                text = answer_text(arena[off : off + length], rtype, 0, length, owner)
            parsed.append((owner, rtype, ttl, text))
        return Message.from_parts(tid, flags, (qd, an, ns, ar), question, parsed)
