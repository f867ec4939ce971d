"""The kernel's ordered event stream (`layout.EV_DTYPE` rows in `Output.events`) and the
connection weirds it carries.

Python replays the stream (`fast.engine`), so analyzers, uids and sinks see the calls in
the reference's order. Room is checked per packet (`fast.table.EV_ROOM`), so appending
never overflows.
"""

from __future__ import annotations

import numpy as np

from pcapexfil.fast.history import L_PARTIAL, conn_check_history
from pcapexfil.fast.layout import EV_WEIRD, G_EV_N, GF_NOW
from pcapexfil.flow.table import HIST_UNKNOWN_PKT, TUNNEL_CHANGES_WEIRD, TUNNEL_MAX_CHANGES_PER_CONNECTION
from pcapexfil.jit import njit

# Connection weirds, by bit (CONN_DTYPE.weirds_seen) and code; names in WEIRD_NAMES.
W_SYN_SEQ_JUMP = 0
W_SYN_INSIDE = 1
W_SEQ_UNDERFLOW = 2
W_ACK_UNDERFLOW = 3
W_TRUNCATED = 4
W_ABOVE_HOLE = 5
W_EXCESSIVE = 6
W_BAD_TCP_CHK = 7
W_BAD_UDP_CHK = 8
W_BAD_ICMP_CHK = 9
W_TUNNEL_CHANGES = 10
WEIRD_NAMES = (
    "SYN_seq_jump",
    "SYN_inside_connection",
    "TCP_seq_underflow_or_misorder",
    "TCP_ack_underflow_or_misorder",
    "truncated_tcp_payload",
    "above_hole_data_without_any_acks",
    "excessive_data_without_further_acks",
    "bad_TCP_checksum",
    "bad_UDP_checksum",
    "bad_ICMP_checksum",
    TUNNEL_CHANGES_WEIRD,
)


@njit(cache=True, _nrt=False)
def copy_endpoints(row, conn):
    """`conn`'s endpoints (layout.ENDPOINT_FIELDS) into an event or record row."""
    row.orig_hi = conn.orig_hi
    row.orig_lo = conn.orig_lo
    row.resp_hi = conn.resp_hi
    row.resp_lo = conn.resp_lo
    row.orig_p = conn.orig_p
    row.resp_p = conn.resp_p


@njit(cache=True, _nrt=False)
def ev_conn(O, S, kind, C, c, ts):
    """Append an event naming connection slot `c` as it is now; returns its row."""
    G = S.ints
    n = G[G_EV_N]
    ev = O.events[n]
    ev.kind = kind
    ev.code = 0
    ev.partial = C[c].is_partial
    ev.serial = C[c].serial
    ev.conn = c
    ev.ts = ts
    ev.start_ts = C[c].start_ts
    copy_endpoints(ev, C[c])
    ev.counted_orig = 0
    ev.counted_resp = 0
    ev.stream_start = -1
    ev.lane = C[c].lane
    ev.lane_lo = 0
    ev.lane_hi = 0
    ev.window = -1
    ev.dns_lo = 0
    ev.dns_hi = 0
    G[G_EV_N] = n + 1
    return n


@njit(cache=True, _nrt=False)
def conn_weird(F, O, S, c, code):
    """Once per connection and name (Zeek's weird_ignore), at the table's network time."""
    C = F.conns
    bit = np.int64(1) << code
    if C[c].weirds_seen & bit:
        return
    C[c].weirds_seen = C[c].weirds_seen | bit
    if S.ints[G_EV_N] >= O.events.shape[0]:
        return  # cannot happen (room is checked per packet); numba checks no bounds
    n = ev_conn(O, S, EV_WEIRD, C, c, S.floats[GF_NOW])
    O.events[n].code = code


@njit(cache=True, _nrt=False)
def check_encapsulation(F, O, S, c, key):
    """Connection.check_encapsulation (Zeek's Connection::CheckEncapsulation): a packet of
    an existing connection came with another encapsulation."""
    C = F.conns
    if C[c].tunnel_changes >= TUNNEL_MAX_CHANGES_PER_CONNECTION:
        conn_weird(F, O, S, c, W_TUNNEL_CHANGES)
        conn_check_history(F, c, HIST_UNKNOWN_PKT, L_PARTIAL)
    else:
        C[c].tunnel_changes += 1
    C[c].encap = key
