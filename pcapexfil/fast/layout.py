"""The numba flow table's memory: row layouts, scalar slots and the records kernels take.

Every kernel of the table works on five named records of numpy arrays (numba passes a
NamedTuple of arrays like its arrays, by reference), written with one letter in kernel
signatures:

- `F`, `Flows`: the connections. `conns` holds one `CONN_DTYPE` row per slot (the TCP
  adapter's flags live there too); `endpoints` one `EP_DTYPE` row per endpoint, slot
  `2*c + phys`, where `conns[c].orig_ep` says which of the two is the originator now (a
  role flip swaps that bit, not the rows); `counters` the scaled-history counters per
  endpoint (count, threshold for each `CNT_*`); `blocks` the reassembler's blocks
  `[seq, upper)` per endpoint (sorted, disjoint; `EP_DTYPE.nblocks` used); `history`
  the history letters per connection (`CONN_DTYPE.hist_len` used); `hash_index` the open
  addressing hash index of slots; `free` the stack of free slots.
- `T`, `Timers`: a binary heap of timers ordered by (when, seq), one array per field.
- `O`, `Output`: what one kernel call hands back to Python: the ordered event stream
  (`EV_DTYPE`), finished records (`REC_DTYPE`) and their history letters.
- `S`, `Scalars`: the table's scalar state, `ints` (`G_*` slots) and `floats` (`GF_*`):
  numba kernels cannot rebind a caller's scalars, so they live in two small arrays.
- `P`, `Settings`: what the configuration fixes: timeouts (`CFG_*`), the port table
  (likely server ports, port inactivity timeouts) and the ICMP type pairs.

`process_batch` also takes `D`, `fast.dns.DnsParse`: the DNS messages one call parsed, `Q`,
`fast.dns_pairs.DnsPairs`: the DNS queries waiting for their replies, and `L`,
`fast.http_lane.HttpLane`: the HTTP connections it reads itself.

Python allocates them (`new_flows`, `new_timers`, `new_output`) and grows them between
kernel calls (`fast.table.FastFlowTable`), replacing an array with `_replace`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Flows(NamedTuple):
    conns: np.ndarray
    endpoints: np.ndarray
    counters: np.ndarray
    blocks: np.ndarray
    history: np.ndarray
    hash_index: np.ndarray
    free: np.ndarray


class Timers(NamedTuple):
    when: np.ndarray
    seq: np.ndarray
    conn: np.ndarray
    serial: np.ndarray
    kind: np.ndarray
    gen: np.ndarray


class Output(NamedTuple):
    events: np.ndarray
    records: np.ndarray
    record_history: np.ndarray


class Scalars(NamedTuple):
    ints: np.ndarray
    floats: np.ndarray


class Settings(NamedTuple):
    timeouts: np.ndarray
    ports: np.ndarray
    icmp4: np.ndarray
    icmp6: np.ndarray


# Relative sequence numbers are uint64 like the reference's `& M64` values; raw sequence
# numbers are int64 holding 32-bit values.
M32 = 0xFFFFFFFF
U64_1 = np.uint64(1)
U64_0 = np.uint64(0)

# Scaled-history counters (Flows.counters second index).
CNT_CHK, CNT_WIN0, CNT_RXMT, CNT_GAP = 0, 1, 2, 3
CNT_SIZE = 4

# Config slots (Settings.timeouts).
CFG_TCP_INACT, CFG_UDP_INACT, CFG_ICMP_INACT, CFG_UNKNOWN_INACT = 0, 1, 2, 3
CFG_ATTEMPT, CFG_CLOSE, CFG_SYN_TIMEOUT, CFG_SESSION, CFG_LINGER = 4, 5, 6, 7, 8
CFG_DNS_SESSION, CFG_PORT_INACT = 9, 10
CFG_SIZE = 11
# Settings.ports blocks: likely_server_ports TCP, UDP; then TCP ports in port_inactivity_timeouts;
# then the NTP analyzer's UDP ports (its role rule).
PORTS_UDP, PORTS_INACT, PORTS_NTP = 65536, 2 * 65536, 3 * 65536

# Scalar slots (Scalars.ints, Scalars.floats).
G_SERIAL, G_TOUCH, G_LIVE, G_TIMER_SEQ, G_HEAP_N, G_NFREE, G_EV_N, G_REC_N = 0, 1, 2, 3, 4, 5, 6, 7
G_MAX_FLOWS, G_HAVE_TICK, G_ANALYZERS = 8, 9, 10
G_LRU_HEAD, G_LRU_TAIL = 11, 12  # least / most recently active live connection (-1: none)
G_GROW = 13  # what the kernel asks Python to grow (GROW_* bits)
G_STAGE = 14  # how far the current row got (1: its tick is done): a call that returned early resumes there
G_CALL = 15  # kernel calls so far (per-call counts of analyzer packets)
G_SIZE = 16
GF_NOW, GF_PNOW, GF_NEXT_TICK = 0, 1, 2
GF_SIZE = 3

# Event kinds (the ordered stream the kernel hands back to Python).
EV_NEW, EV_PKT, EV_REC, EV_TICK, EV_WEIRD, EV_EVICT = 0, 1, 2, 3, 4, 5
# A segment the kernel counted ended what the analyzers offered (a body is complete): they
# take over the counts at its place in the stream, as at an EV_PKT, without the packet.
EV_COUNTED = 6
# A UDP datagram on a DNS port that the kernel parsed as a DNS message (`fast.dns`): the
# DNS analyzer gets its rows (`fast.dns_pairs`: a transaction, or the message), no analyzer
# the packet.
EV_DNS = 7
# A segment only the kernel's HTTP reading needed (`fast.http_lane`): the HTTP analyzer
# gets what it wrote (lane_lo .. lane_hi), no analyzer the packet.
EV_LANE = 8
# EV_PKT.code: the kernel left the connection's HTTP to Python at this segment (HE_LEFT).
CODE_LANE_LEFT = 1
# EV_PKT.code: a decoded frame (its bytes are Python's) that a UDP analyzer's role rule
# reads (the DNS analyzer's first message, identifiers.dns_header.first_message; the NTP
# analyzer's, flow.ntp_roles): Python applies it, and the kernel call ended after it.
CODE_UDP_ROLES = 2

# A connection's endpoints (originator first) as connection, event and record rows carry
# them; events.copy_endpoints copies them from one row to another.
ENDPOINT_FIELDS = [
    ("orig_hi", np.uint64),
    ("orig_lo", np.uint64),
    ("resp_hi", np.uint64),
    ("resp_lo", np.uint64),
    ("orig_p", np.int32),
    ("resp_p", np.int32),
]

EV_DTYPE = np.dtype(
    [
        ("kind", np.uint8),
        ("is_orig", np.uint8),
        ("code", np.uint8),
        ("partial", np.uint8),  # CONN_DTYPE.is_partial after the event's packet (EV_PKT, EV_COUNTED)
        ("serial", np.int64),
        ("conn", np.int64),  # slot (EV_PKT: to mark the connection's analyzers done)
        ("row", np.int64),  # EV_NEW, EV_PKT: batch row; EV_REC: record row
        ("ts", np.float64),
        ("start_ts", np.float64),
        *ENDPOINT_FIELDS,
        # EV_PKT, EV_COUNTED: stream bytes the kernel counted for the analyzers in each
        # direction since the connection's previous one (`dispatch.count_for_analyzers`).
        ("counted_orig", np.int64),
        ("counted_resp", np.int64),
        ("stream_start", np.int64),  # EV_PKT: its direction's EP_DTYPE.stream_start
        ("hist_len", np.int64),  # EV_PKT: the history's length after the packet (an analyzer's 'X' goes there)
        # The connection's fast.http_lane row (-1: none); EV_PKT, EV_LANE: the range of the
        # lane's events this segment wrote.
        ("lane", np.int64),
        ("lane_lo", np.int64),
        ("lane_hi", np.int64),
        # EV_PKT: the window buffer whose chunks the analyzers read before this packet
        # (`fast.pia_gate`; -1: none).
        ("window", np.int64),
        # EV_DNS, EV_PKT: the DNS analyzer's rows for it (`fast.dns_pairs.DnsPairs.out`).
        ("dns_lo", np.int64),
        ("dns_hi", np.int64),
    ]
)

EP_DTYPE = np.dtype(
    [
        ("state", np.int8),
        ("prev_state", np.int8),
        ("is_orig", np.bool_),
        ("did_close", np.bool_),
        ("start_seq", np.int64),
        ("last_seq", np.int64),
        ("ack_seq", np.int64),
        ("seq_wraps", np.int64),
        ("ack_wraps", np.int64),
        ("fin_cnt", np.int64),
        ("fin_seq", np.uint64),
        ("hist_last_syn", np.uint64),
        ("hist_last_fin", np.uint64),
        ("hist_last_rst", np.uint64),
        # Reassembler
        ("nblocks", np.int64),
        ("last_reassem_seq", np.uint64),
        ("trim_seq", np.uint64),
        ("data_upper", np.uint64),
        ("skip_deliveries", np.bool_),
        ("did_eof", np.bool_),
        # Body bytes the analyzers leave to the kernel to count (`dispatch.count_for_analyzers`):
        # the next in-order stream sequence, bytes still countable, bytes counted so far.
        ("sk_seq", np.int64),
        ("sk_left", np.int64),
        ("sk_used", np.int64),
        # Where the byte stream the analyzers read starts: SYN + 1, or the first payload's
        # sequence without a SYN (identifiers.stream.StreamDirection.add); -1 before either.
        ("stream_start", np.int64),
    ]
)

DNS_PAIRING_FIELDS = [
    ("dns_mode", np.uint8),
    ("dns_size", np.int64),
    ("dns_pq", np.int64),
    ("dns_head", np.int64),
]

CONN_DTYPE = np.dtype(
    [
        ("live", np.bool_),
        ("serial", np.int64),
        ("hslot", np.int64),
        ("hash", np.uint64),
        ("proto", np.uint8),
        ("oneway", np.uint8),
        ("k_ahi", np.uint64),
        ("k_alo", np.uint64),
        ("k_bhi", np.uint64),
        ("k_blo", np.uint64),
        ("k_ap", np.int32),
        ("k_bp", np.int32),
        *ENDPOINT_FIELDS,
        ("start_ts", np.float64),
        ("last_ts", np.float64),
        ("hist_len", np.int64),
        ("hist_seen", np.int64),
        ("orig_pkts", np.int64),
        ("orig_ip_bytes", np.int64),
        ("resp_pkts", np.int64),
        ("resp_ip_bytes", np.int64),
        ("missed_bytes", np.int64),
        ("orig_len", np.int64),
        ("resp_len", np.int64),
        ("inactivity_timeout", np.float64),
        ("timer_gen", np.int64),
        ("weirds_seen", np.int64),
        ("touch", np.int64),
        ("lru_prev", np.int64),  # neighbours in the activity list (eviction order)
        ("lru_next", np.int64),
        ("orig_ep", np.uint8),
        ("is_tcp", np.bool_),
        ("is_partial", np.bool_),
        ("first_packet_seen", np.int64),
        ("is_active", np.bool_),
        ("synack_first", np.bool_),
        ("close_deferred", np.bool_),
        ("established", np.bool_),  # connection_established raised, port timeout not yet applied
        ("app_mode", np.uint8),  # dispatch.APP_*: which packets the analyzers want
        ("app_call", np.int64),  # last kernel call that handed the analyzers a packet of it (app_sent counts TCP's)
        ("app_sent", np.int64),  # packets handed to the analyzers in that call
        ("app_dead", np.uint8),  # APP_EVERY, TCP: bit 1 / 2: the orig / resp byte stream ended for analyzers
        ("dns_expiry", np.bool_),  # DNS_Analyzer::ExpireTimer not cancelled (ConnView.cancel_dns_expiry)
        ("encap", np.uint64),  # the last packet's flow.table.encapsulation_key
        ("tunnel_changes", np.int64),  # tunnel_changed events raised (Connection::CheckEncapsulation)
        ("chk_orig_cnt", np.int64),
        ("chk_orig_thr", np.int64),
        ("chk_resp_cnt", np.int64),
        ("chk_resp_thr", np.int64),
        ("lane", np.int64),  # its fast.http_lane row, -1: none (HTTP, if any, is read in Python)
        # DNS paired in the kernel (fast.dns_pairs): who pairs its messages, their payload
        # bytes so far, the waiting query and the list of the others (pool slots).
        *DNS_PAIRING_FIELDS,
        ("dns_n", np.int64),  # queries in the dns_head list
        ("dns_first", np.bool_),  # a DNS analyzer is attached and has not had its first message
        ("ntp_roles", np.bool_),  # an NTP analyzer is attached and may still flip the roles
    ]
)

REC_DTYPE = np.dtype(
    [
        ("serial", np.int64),
        ("ts", np.float64),
        ("duration", np.float64),
        *ENDPOINT_FIELDS,
        ("proto", np.uint8),
        ("conn_state", np.uint8),
        ("orig_bytes", np.int64),
        ("resp_bytes", np.int64),
        ("missed_bytes", np.int64),
        ("orig_pkts", np.int64),
        ("orig_ip_bytes", np.int64),
        ("resp_pkts", np.int64),
        ("resp_ip_bytes", np.int64),
        ("hist_len", np.int64),
        ("counted_orig", np.int64),  # stream bytes the kernel counted for the analyzers since
        ("counted_resp", np.int64),  # the connection's last EV_PKT or EV_COUNTED
        *DNS_PAIRING_FIELDS,  # the DNS state the kernel held at the end (fast.dns_pairs)
    ]
)


def new_flows(cap: int, hist: int, blocks: int) -> Flows:
    """Room for `cap` connections with `hist` history letters and `blocks` reassembler
    blocks per endpoint; the index is kept at most half full."""
    return Flows(
        conns=np.zeros(cap, CONN_DTYPE),
        endpoints=np.zeros(2 * cap, EP_DTYPE),
        counters=np.zeros((2 * cap, CNT_SIZE, 2), np.int64),
        blocks=np.zeros((2 * cap, blocks, 2), np.uint64),
        history=np.zeros((cap, hist), np.uint8),
        hash_index=np.full(4 * cap, -1, np.int64),
        free=np.arange(cap - 1, -1, -1, dtype=np.int64),
    )


def new_timers(n: int) -> Timers:
    return Timers(when=np.zeros(n, np.float64), seq=np.zeros(n, np.int64), conn=np.zeros(n, np.int64),
                  serial=np.zeros(n, np.int64), kind=np.zeros(n, np.int8), gen=np.zeros(n, np.int64))


def new_output(events: int, hist: int) -> Output:
    """Room for `events` events and a quarter as many records (most events are no record)."""
    return Output(events=np.zeros(events, EV_DTYPE), records=np.zeros(events // 4, REC_DTYPE),
                  record_history=np.zeros((events // 4, hist), np.uint8))
