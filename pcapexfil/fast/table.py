"""The fast flow table: Zeek connection state in an open-addressing hash table, in numba.

Same semantics as the reference `pcapexfil.flow.table.FlowTable` (which stays the
readable implementation and the test oracle): connection identity and originator choice,
per-protocol counters, the TCP state machine (`fast.tcp`), timers on network time
(`fast.timers`), connection splitting on 5-tuple reuse, ICMP pairing, the LRU cap on live
connections, and the pipeline's once-a-second ticks.

`process_batch` walks a batch of `PACKET_DTYPE` rows in order and writes an ordered event
stream (`fast.events`): new connection (a uid is drawn), packet an application analyzer
needs (`fast.dispatch`), the end of bytes the analyzers left to the kernel to count,
finished record (a `REC_DTYPE` row), tick, weird, eviction. Python replays that stream
(`fast.engine`), so analyzers, uids and sinks see exactly the reference's order of calls.
Whenever an array would overflow the kernel returns early, Python drains or grows
(`FastFlowTable.feed`), and the kernel resumes at the same row.

The kernels take the table's state as the named records of `fast.layout` (F, T, O, S, P).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import typeof, types

from pcapexfil.fast.anchors import Gates
from pcapexfil.fast.batch import KIND_FOREIGN, KIND_SKIP, PACKET_DTYPE
from pcapexfil.fast.dispatch import (
    APP_EVERY,
    APP_FIRST,
    APP_NONE,
    APP_UDP,
    COUNTED_TO_END,
    DNS_UDP,
    TO_ANALYZERS,
    app_sent_pause,
    count_for_analyzers,
    hand_counts_to_analyzers,
)
from pcapexfil.fast.endpoint import ep_size, orig_phys
from pcapexfil.fast.events import (
    W_BAD_ICMP_CHK,
    W_BAD_TCP_CHK,
    W_BAD_UDP_CHK,
    check_encapsulation,
    conn_weird,
    copy_endpoints,
    ev_conn,
)
from pcapexfil.fast.hashtable import (
    addr_le,
    hash_delete,
    key_hash,
    lookup,
    lru_append,
    lru_unlink,
    rehash,
)
from pcapexfil.fast.history import (
    HIST_UDP_ORIG_DATA,
    HIST_UDP_RESP_DATA,
    HISTORY_SCALE,
    L_BAD_CHECKSUM,
    L_DATA,
    L_PARTIAL,
    conn_check_history,
    ep_scaled,
    hist_append,
    lower,
)
from pcapexfil.fast.dns import U_ANSWERS, U_ARENA, U_MSGS, DnsParse, new_dns_parse, parse_message
from pcapexfil.fast.dns_pairs import (
    DNS_UNSEEN,
    FIRST_FLIP,
    FIRST_NOT,
    NO_MSG,
    NO_SLOT,
    P_FREE,
    P_OUT,
    DnsPairs,
    dns_datagram,
    first_message_said,
    new_dns_pairs,
)
from pcapexfil.fast.http_lane import (
    HEAD_BUFFER,
    L_ARENA_N,
    L_CHUNK_HI,
    L_CHUNK_LO,
    L_CHUNK_SEQ,
    L_EV_N,
    L_HFREE,
    L_NFREE,
    LANE_EVENTS,
    LANE_LEFT,
    LANE_QUIET,
    NO_HEADS,
    NO_LANE,
    UNOPENED,
    HttpLane,
    lane_leave,
    lane_open,
    lane_room,
    lane_rows_free,
    lane_segment,
    lane_take,
    new_lane,
)
from pcapexfil.fast.layout import (
    CFG_ATTEMPT,
    CFG_CLOSE,
    CFG_DNS_SESSION,
    CFG_ICMP_INACT,
    CFG_LINGER,
    CFG_PORT_INACT,
    CFG_SESSION,
    CFG_SIZE,
    CFG_SYN_TIMEOUT,
    CFG_TCP_INACT,
    CFG_UDP_INACT,
    CFG_UNKNOWN_INACT,
    CNT_CHK,
    CODE_LANE_LEFT,
    CODE_UDP_ROLES,
    EV_COUNTED,
    EV_DNS,
    EV_EVICT,
    EV_LANE,
    EV_NEW,
    EV_PKT,
    EV_REC,
    EV_TICK,
    G_ANALYZERS,
    G_CALL,
    G_EV_N,
    G_GROW,
    G_HAVE_TICK,
    G_HEAP_N,
    G_LIVE,
    G_LRU_HEAD,
    G_LRU_TAIL,
    G_MAX_FLOWS,
    G_NFREE,
    G_REC_N,
    G_SERIAL,
    G_SIZE,
    G_STAGE,
    G_TOUCH,
    GF_NEXT_TICK,
    GF_NOW,
    GF_PNOW,
    GF_SIZE,
    M32,
    PORTS_INACT,
    PORTS_NTP,
    PORTS_UDP,
    Flows,
    Output,
    Scalars,
    Settings,
    Timers,
    new_flows,
    new_output,
    new_timers,
)
from pcapexfil.fast.ntp import ntp_said, ntp_watch_ends
from pcapexfil.fast.pia_gate import (
    G_GATED,
    G_WINDOW,
    GATE_KEPT,
    GATE_NONE,
    GATE_OVER,
    GATE_RELEASED,
    NO_WINDOW,
    W_FREE,
    gate_chunk,
    gate_end,
    window_release,
)
from pcapexfil.fast.roles import ORIG_BIT, RESP_BIT, flip_mid_packet, flip_roles, synack_sender_is_responder
from pcapexfil.fast.tcp import (
    CS_OTH,
    CS_S0,
    CS_SF,
    CS_SHR,
    EXPIRE_KEEP,
    EXPIRE_REMOVE,
    attempt_timer,
    expire_timer,
    is_reuse,
    tcp_conn_state,
    tcp_process,
)
from pcapexfil.fast.timers import (
    HEAP_SLACK,
    T_ATTEMPT,
    T_DELETE,
    T_DNS_EXPIRE,
    T_EXPIRE,
    T_INACTIVITY,
    heap_compact,
    heap_pop,
    schedule,
)
from pcapexfil.flow.ntp_roles import ROLES_FLIP
from pcapexfil.flow.ports import LIKELY_SERVER_PORTS
from pcapexfil.flow.table import (
    DNS_EXPIRE_SLACK,
    HIST_UNKNOWN_PKT,
    ICMP4_PAIRS,
    ICMP6_PAIRS,
    NTP_PORTS,
    PORT_INACTIVITY_PORTS,
    FlowConfig,
)
from pcapexfil.flow.tcp import INACTIVE
from pcapexfil.identifiers.dns_header import HEADER_LEN
from pcapexfil.jit import StableCall, njit
from pcapexfil.order import TICK_INTERVAL
from pcapexfil.packet import PROTO_ICMP, PROTO_ICMP6, PROTO_IGMP, PROTO_TCP, PROTO_UDP, TH_ACK, TH_RST, TH_SYN

# aux column (one byte per batch row, beside the batch): what the reference decoder said.
AUX_BAD_CHECKSUM = 1  # checksum_ok is False
AUX_NO_TICK = 2  # not the first packet of its frame: the pipeline's tick already ran
AUX_CARRIER = 4  # outer packet of an IP-level tunnel: advances time, is no connection
AUX_PARTIAL = 8  # Packet.analysis_partial: 'X' after the packet's letters
AUX_DECODED = 16  # a row the reference decoder made: its payload is in its Packet, not the chunk buffer
# Above the flag bits: flow.table.encapsulation_key of a decapsulated packet (0: none). A
# per-call array beside the batch (not a batch column: the parser's chunks stay as they are).
AUX_ENCAP_SHIFT = 8
AUX_DTYPE = np.uint64

# Kernel return status.
ST_DONE, ST_OUT_FULL, ST_GROW = 0, 1, 2
# What to grow (G_GROW bits).
GROW_CONNS, GROW_HASH, GROW_HEAP, GROW_HIST, GROW_BLOCKS, GROW_LANE = 1, 2, 4, 8, 16, 32

# Room the kernel wants before it starts on a packet (a packet emits at most a few events).
EV_ROOM = 24
REC_ROOM = 4
HEAP_ROOM = 8
HIST_ROOM = 8
BLOCK_ROOM = 2
_BCAST_LO = np.uint64((0xFFFF << 32) | 0xFFFFFFFF)  # 255.255.255.255, IPv4-mapped


@njit(cache=True, _nrt=False)
def _remove(F, O, S, c):
    """End connection `c`: its record row, an EV_REC event, its slot freed."""
    C, E, HI = F.conns, F.endpoints, F.history
    G = S.ints
    r = G[G_REC_N]
    G[G_REC_N] = r + 1
    rec = O.records[r]
    rec.serial = C[c].serial
    rec.ts = C[c].start_ts
    rec.duration = C[c].last_ts - C[c].start_ts
    copy_endpoints(rec, C[c])
    proto = C[c].proto
    rec.proto = proto
    if proto == PROTO_TCP:
        rec.conn_state = tcp_conn_state(F, c)
        o = orig_phys(C, c)
        rec.orig_bytes = np.int64(ep_size(E, o))
        rec.resp_bytes = np.int64(ep_size(E, o ^ 1))
    elif proto == PROTO_UDP:
        ob = C[c].orig_len >= 0
        rb = C[c].resp_len >= 0
        if ob:
            rec.conn_state = CS_SF if rb else CS_S0
        else:
            rec.conn_state = CS_SHR if rb else CS_OTH
        rec.orig_bytes = max(C[c].orig_len, 0)
        rec.resp_bytes = max(C[c].resp_len, 0)
    elif proto == PROTO_ICMP or proto == PROTO_ICMP6:
        rec.conn_state = CS_OTH
        rec.orig_bytes = max(C[c].orig_len, 0)
        rec.resp_bytes = max(C[c].resp_len, 0)
    else:
        rec.conn_state = CS_OTH
        rec.orig_bytes = 0
        rec.resp_bytes = 0
    rec.missed_bytes = C[c].missed_bytes
    rec.orig_pkts = C[c].orig_pkts
    rec.orig_ip_bytes = C[c].orig_ip_bytes
    rec.resp_pkts = C[c].resp_pkts
    rec.resp_ip_bytes = C[c].resp_ip_bytes
    if proto == PROTO_TCP:
        o = orig_phys(C, c)
        rec.counted_orig = E[o].sk_used
        rec.counted_resp = E[o ^ 1].sk_used
    else:
        rec.counted_orig = 0
        rec.counted_resp = 0
    n = C[c].hist_len
    rec.hist_len = n
    for k in range(n):
        O.record_history[r, k] = HI[c, k]
    rec.dns_mode = C[c].dns_mode  # Python writes the queries still waiting (fast.dns_pairs)
    rec.dns_size = C[c].dns_size
    rec.dns_pq = C[c].dns_pq
    rec.dns_head = C[c].dns_head
    ev = ev_conn(O, S, EV_REC, C, c, C[c].last_ts)
    O.events[ev].row = r
    C[c].lane = NO_LANE  # Python gives the row back once it has read it
    C[c].live = False
    lru_unlink(C, S, c)
    hash_delete(F, c)
    F.free[G[G_NFREE]] = c
    G[G_NFREE] += 1
    G[G_LIVE] -= 1


@njit(cache=True, _nrt=False)
def _advance(F, T, O, S, P, now):
    """Fire due timers (FlowTable.advance). False: output full, call again."""
    C = F.conns
    G = S.ints
    S.floats[GF_NOW] = max(S.floats[GF_NOW], now)
    while G[G_HEAP_N] > 0 and T.when[0] <= now:
        if (G[G_REC_N] + 1 > O.records.shape[0] or G[G_EV_N] + 2 > O.events.shape[0]
                or G[G_HEAP_N] + 2 > T.when.shape[0]):
            return False
        when = T.when[0]
        c = T.conn[0]
        serial = T.serial[0]
        kind = T.kind[0]
        gen = T.gen[0]
        if C[c].live and C[c].serial == serial and C[c].app_call == G[G_CALL] and (
                (kind == T_INACTIVITY and C[c].last_ts + C[c].inactivity_timeout <= when)
                or (kind == T_DNS_EXPIRE and C[c].dns_expiry
                    and when - C[c].last_ts >= P.timeouts[CFG_DNS_SESSION] - DNS_EXPIRE_SLACK)):
            # The analyzers have not seen this call's packets of the connection yet: one may
            # confirm SSH/FTP and lengthen its timeout, or disable DNS and so cancel its
            # expiry (FastFlow._events), before the timer removes the connection.
            return False
        heap_pop(T, S)
        if not C[c].live or C[c].serial != serial:
            continue
        if kind == T_INACTIVITY:
            due = C[c].last_ts + C[c].inactivity_timeout
            if due <= when:
                _remove(F, O, S, c)
            else:
                schedule(T, S, C, due, c, T_INACTIVITY)
            continue
        if kind == T_DNS_EXPIRE:
            if not C[c].dns_expiry:
                continue  # the DNS analyzer was disabled: its timers are cancelled
            if when - C[c].last_ts >= P.timeouts[CFG_DNS_SESSION] - DNS_EXPIRE_SLACK:
                _remove(F, O, S, c)
            else:
                schedule(T, S, C, when + P.timeouts[CFG_DNS_SESSION], c, T_DNS_EXPIRE)
            continue
        if gen != C[c].timer_gen:
            continue
        if kind == T_DELETE:
            _remove(F, O, S, c)
        elif kind == T_ATTEMPT:
            if attempt_timer(F, c):
                C[c].is_active = False
                _remove(F, O, S, c)
        elif kind == T_EXPIRE:
            verdict = expire_timer(F, P, c, when)
            if verdict == EXPIRE_REMOVE:
                _remove(F, O, S, c)
            elif verdict == EXPIRE_KEEP:
                schedule(T, S, C, when + P.timeouts[CFG_SESSION], c, T_EXPIRE)
    return True


@njit(cache=True, _nrt=False)
def _reset_endpoint(F, e, is_orig):
    ep = F.endpoints[e]
    ep.state = INACTIVE
    ep.prev_state = INACTIVE
    ep.is_orig = is_orig
    ep.did_close = False
    ep.start_seq = 0
    ep.last_seq = 0
    ep.ack_seq = 0
    ep.seq_wraps = 0
    ep.ack_wraps = 0
    ep.fin_cnt = 0
    ep.fin_seq = 0
    ep.hist_last_syn = 0
    ep.hist_last_fin = 0
    ep.hist_last_rst = 0
    ep.nblocks = 0
    ep.last_reassem_seq = 1
    ep.trim_seq = 1
    ep.data_upper = 0
    ep.skip_deliveries = False
    ep.did_eof = False
    ep.sk_seq = 0
    ep.sk_left = 0
    ep.sk_used = 0
    ep.stream_start = -1
    F.counters[e, :, :] = 0


@njit(cache=True, _nrt=False)
def _new_conn(F, T, O, S, P, L, b, i, slot_i, h, proto, oneway, ahi, alo, ap, bhi, blo, bp, sport, dport, encap):
    """FlowTable.process's new connection: slot, key, originator choice, EV_NEW, timers."""
    C = F.conns
    G = S.ints
    PORTS = P.ports
    ts = b[i].ts
    if proto == PROTO_TCP or proto == PROTO_UDP:
        timeout = P.timeouts[CFG_UDP_INACT]  # Zeek's TCP analyzer starts with the UDP one, too
    elif proto == PROTO_ICMP or proto == PROTO_ICMP6:
        timeout = P.timeouts[CFG_ICMP_INACT]
    else:
        timeout = P.timeouts[CFG_UNKNOWN_INACT]
    cap = G[G_MAX_FLOWS]
    if G[G_HEAP_N] > 4 * G[G_LIVE] + HEAP_SLACK:
        heap_compact(T, S, C)
    if cap > 0 and G[G_LIVE] >= cap:
        for _ in range(G[G_LIVE] - cap + 1):
            best = G[G_LRU_HEAD]  # least recently active first (the reference's OrderedDict order)
            ev_conn(O, S, EV_EVICT, C, best, S.floats[GF_NOW])
            _remove(F, O, S, best)
        # Deletions moved entries: find the insertion slot again.
        _, slot_i = lookup(F, h, proto, oneway, ahi, alo, ap, bhi, blo, bp)
    G[G_NFREE] -= 1
    c = F.free[G[G_NFREE]]
    G[G_SERIAL] += 1
    cc = C[c]
    cc.live = True
    cc.serial = G[G_SERIAL]
    cc.hash = h
    cc.hslot = slot_i
    F.hash_index[slot_i] = c
    cc.proto = proto
    cc.oneway = oneway
    cc.k_ahi = ahi
    cc.k_alo = alo
    cc.k_ap = ap
    cc.k_bhi = bhi
    cc.k_blo = blo
    cc.k_bp = bp
    cc.orig_hi = b[i].src_hi
    cc.orig_lo = b[i].src_lo
    cc.orig_p = sport
    cc.resp_hi = b[i].dst_hi
    cc.resp_lo = b[i].dst_lo
    cc.resp_p = dport
    cc.start_ts = ts
    cc.last_ts = ts
    cc.hist_len = 0
    cc.hist_seen = 0
    cc.encap = encap
    cc.tunnel_changes = 0
    cc.dns_expiry = True
    cc.orig_pkts = 0
    cc.orig_ip_bytes = 0
    cc.resp_pkts = 0
    cc.resp_ip_bytes = 0
    cc.missed_bytes = 0
    cc.orig_len = -1
    cc.resp_len = -1
    cc.inactivity_timeout = timeout
    cc.timer_gen = 0
    cc.weirds_seen = 0
    G[G_TOUCH] += 1
    cc.touch = G[G_TOUCH]
    lru_append(C, S, c)
    cc.orig_ep = 0
    cc.is_tcp = proto == PROTO_TCP
    cc.is_partial = False
    cc.first_packet_seen = 0
    cc.is_active = True
    cc.synack_first = False
    cc.close_deferred = False
    cc.established = False
    cc.chk_orig_cnt = 0
    cc.chk_orig_thr = 1
    cc.chk_resp_cnt = 0
    cc.chk_resp_thr = 1
    G[G_LIVE] += 1
    flip = False
    if proto == PROTO_TCP:
        _reset_endpoint(F, 2 * c, True)
        _reset_endpoint(F, 2 * c + 1, False)
        flags = b[i].flags
        if flags & TH_SYN and flags & TH_ACK:
            # TCPAnalyzer::WantConnection flips a SYN-ACK from a likely server port at once.
            flip = PORTS[sport] != 0 and PORTS[dport] == 0
            cc.synack_first = not flip
        elif not flags & TH_SYN:  # noqa: SIM102 (mirrors the reference)
            if PORTS[sport]:
                if PORTS[dport]:
                    flip = sport < dport
                else:
                    flip = True
    elif proto == PROTO_UDP:
        flip = PORTS[PORTS_UDP + sport] != 0 and PORTS[PORTS_UDP + dport] == 0
    if flip and not (b[i].dst_hi == 0 and b[i].dst_lo == _BCAST_LO):
        flip_roles(F, c, False)
    cc.lane = lane_open(L, cc.resp_p) if proto == PROTO_TCP else NO_LANE  # HTTP attaches by the port on_new sees
    cc.dns_mode = DNS_UNSEEN
    cc.dns_size = 0
    cc.dns_pq = NO_SLOT
    cc.dns_head = NO_SLOT
    cc.dns_n = 0
    cc.dns_first = False
    # proc_ntp_message may flip the roles of a connection the NTP analyzer is attached to.
    cc.ntp_roles = proto == PROTO_UDP and PORTS[PORTS_NTP + cc.resp_p] != 0
    k = ev_conn(O, S, EV_NEW, C, c, ts)  # the roles as the analyzers' on_new sees them
    O.events[k].code = proto
    O.events[k].row = i
    cc.app_dead = 0
    cc.app_call = 0
    cc.app_sent = 0
    if proto == PROTO_TCP or proto == PROTO_UDP and APP_UDP[cc.resp_p]:  # DNS ports, services.REPLY_UDP_PORTS
        cc.app_mode = APP_EVERY
    elif proto == PROTO_UDP:
        cc.app_mode = APP_FIRST
    else:
        cc.app_mode = APP_NONE  # analyzers read TCP and UDP payload only (hooks.AppAnalyzer)
    schedule(T, S, C, ts + timeout, c, T_INACTIVITY)
    if proto == PROTO_TCP:
        schedule(T, S, C, ts + P.timeouts[CFG_SYN_TIMEOUT], c, T_EXPIRE)
    elif proto == PROTO_UDP and P.timeouts[CFG_DNS_SESSION] > 0 and DNS_UDP[cc.resp_p]:
        schedule(T, S, C, ts + P.timeouts[CFG_DNS_SESSION], c, T_DNS_EXPIRE)
        cc.dns_first = True
    return c


@njit(cache=True, _nrt=False)
def _port_inactivity(F, P, c):
    """TCPAdapter._established: inactivity.zeek's port_inactivity_timeouts."""
    C = F.conns
    PORTS = P.ports
    port = C[c].resp_p
    if F.endpoints[orig_phys(C, c)].state == INACTIVE and not PORTS[port] and PORTS[C[c].orig_p]:
        port = C[c].orig_p
    if PORTS[PORTS_INACT + port]:
        C[c].inactivity_timeout = P.timeouts[CFG_PORT_INACT]


@njit(cache=True, _nrt=False)
def _udp_chk_scaled(F, c, is_orig):
    """A bad UDP checksum's scaled 'C' / 'c' (the connection's own counters: no endpoints)."""
    C = F.conns
    if is_orig:
        C[c].chk_orig_cnt += 1
        if C[c].chk_orig_cnt == C[c].chk_orig_thr:
            hist_append(F, c, L_BAD_CHECKSUM)
            C[c].chk_orig_thr *= HISTORY_SCALE
    else:
        C[c].chk_resp_cnt += 1
        if C[c].chk_resp_cnt == C[c].chk_resp_thr:
            hist_append(F, c, lower(L_BAD_CHECKSUM))
            C[c].chk_resp_thr *= HISTORY_SCALE


PROCESS_BATCH_STATE = 8  # process_batch's leading arguments: the table's state records (F .. L)


@njit(cache=True, _nrt=False)
def process_batch(F, T, O, S, P, D, Q, L, b, buf, aux, row_conn, start):
    """Rows `start`.. of batch `b` (payloads in `buf`) through the table. Returns (status,
    next row)."""
    C, E = F.conns, F.endpoints
    G, GF = S.ints, S.floats
    EV = O.events
    n = b.shape[0]
    for i in range(start, n):
        ts = b[i].ts
        a = aux[i]
        if G[G_STAGE] == 0:
            # The pipeline's tick: time advances and sinks hear of it once a second.
            if not a & AUX_NO_TICK:
                GF[GF_PNOW] = max(GF[GF_PNOW], ts)
                pnow = GF[GF_PNOW]
                if G[G_HAVE_TICK] == 0 or pnow >= GF[GF_NEXT_TICK]:
                    if G[G_EV_N] + 1 > EV.shape[0]:
                        return ST_OUT_FULL, i
                    if not _advance(F, T, O, S, P, pnow):
                        return ST_OUT_FULL, i
                    if G[G_EV_N] + 1 > EV.shape[0]:
                        return ST_OUT_FULL, i
                    k = G[G_EV_N]
                    EV[k].kind = EV_TICK
                    EV[k].ts = pnow
                    G[G_EV_N] = k + 1
                    GF[GF_NEXT_TICK] = pnow + TICK_INTERVAL
                    G[G_HAVE_TICK] = 1
            G[G_STAGE] = 1
        row_conn[i] = -1
        if b[i].kind == KIND_SKIP:
            G[G_STAGE] = 0
            continue
        if a & AUX_CARRIER:
            if not _advance(F, T, O, S, P, ts):
                return ST_OUT_FULL, i
            G[G_STAGE] = 0
            continue
        if ts > GF[GF_NOW]:  # noqa: SIM102 (mirrors the reference)
            if not _advance(F, T, O, S, P, ts):
                return ST_OUT_FULL, i
        if b[i].kind == KIND_FOREIGN or b[i].proto == PROTO_IGMP:  # IGMP: no session (FlowTable.process)
            G[G_STAGE] = 0
            continue
        if (G[G_EV_N] + EV_ROOM > EV.shape[0] or G[G_REC_N] + REC_ROOM > O.records.shape[0]
                or not lane_room(L, np.int64(b[i].payload_len))):
            return ST_OUT_FULL, i
        grow = 0
        if G[G_HEAP_N] + HEAP_ROOM > T.when.shape[0]:
            grow |= GROW_HEAP
        if G[G_NFREE] < 2:
            grow |= GROW_CONNS
        if 2 * (G[G_LIVE] + 1) > F.hash_index.shape[0]:
            grow |= GROW_HASH
        if not lane_rows_free(L):
            grow |= GROW_LANE  # a row, and a head buffer, for the packet's connection if it takes them
        if grow:
            G[G_GROW] = grow
            return ST_GROW, i

        pause = False
        # Connection identity (FlowTable.process).
        proto = b[i].proto
        sport = np.int32(b[i].sport)
        dport = np.int32(b[i].dport)
        oneway = 0
        if proto == PROTO_ICMP or proto == PROTO_ICMP6:
            t = b[i].sport
            cp = -1
            if t < P.icmp4.shape[0]:
                cp = P.icmp4[t] if proto == PROTO_ICMP else P.icmp6[t]
            if cp < 0:
                oneway = 1
            else:
                dport = np.int32(cp)
        elif proto != PROTO_TCP and proto != PROTO_UDP:
            sport = np.int32(0)
            dport = np.int32(0)
        shi, slo, dhi, dlo = b[i].src_hi, b[i].src_lo, b[i].dst_hi, b[i].dst_lo
        if oneway or addr_le(shi, slo, sport, dhi, dlo, dport):
            ahi, alo, ap, bhi, blo, bp = shi, slo, sport, dhi, dlo, dport
        else:
            ahi, alo, ap, bhi, blo, bp = dhi, dlo, dport, shi, slo, sport
        h = key_hash(proto, oneway, ahi, alo, ap, bhi, blo, bp)
        c, slot_i = lookup(F, h, proto, oneway, ahi, alo, ap, bhi, blo, bp)
        if c >= 0:
            if C[c].hist_len + HIST_ROOM > F.history.shape[1]:
                G[G_GROW] = GROW_HIST
                return ST_GROW, i
            if C[c].is_tcp and (E[2 * c].nblocks + BLOCK_ROOM > F.blocks.shape[1]
                                or E[2 * c + 1].nblocks + BLOCK_ROOM > F.blocks.shape[1]):
                G[G_GROW] = GROW_BLOCKS
                return ST_GROW, i
        flags = b[i].flags
        seq = np.int64(b[i].seq)
        encap = np.uint64(a) >> np.uint64(AUX_ENCAP_SHIFT)  # the packet's encapsulation (0: none)
        if c >= 0 and C[c].is_tcp and is_reuse(F, c, flags, seq):
            _remove(F, O, S, c)
            c, slot_i = lookup(F, h, proto, oneway, ahi, alo, ap, bhi, blo, bp)
        if c < 0:
            c = _new_conn(F, T, O, S, P, L, b, i, slot_i, h, proto, oneway, ahi, alo, ap, bhi, blo, bp,
                          sport, dport, encap)
        else:
            G[G_TOUCH] += 1
            C[c].touch = G[G_TOUCH]
            if G[G_LRU_TAIL] != c:
                lru_unlink(C, S, c)
                lru_append(C, S, c)
            if C[c].encap != encap:
                check_encapsulation(F, O, S, c, encap)
        if (
            C[c].is_tcp
            and C[c].synack_first
            and C[c].orig_pkts + C[c].resp_pkts >= 1
            and flags & (TH_SYN | TH_ACK) != TH_SYN | TH_ACK
        ):
            C[c].synack_first = False
            if not flags & (TH_SYN | TH_RST) and (flags & TH_ACK or b[i].payload_len > 0):
                flip_roles(F, c, True)
                synack_sender_is_responder(F, c)
        is_orig = shi == C[c].orig_hi and slo == C[c].orig_lo and sport == C[c].orig_p

        ok = not (a & AUX_BAD_CHECKSUM)
        if proto == PROTO_TCP:
            if not ok:
                conn_weird(F, O, S, c, W_BAD_TCP_CHK)
                o = orig_phys(C, c)
                ep_scaled(F, o if is_orig else o ^ 1, CNT_CHK, L_BAD_CHECKSUM)
            else:
                tcp_process(F, T, O, S, P, c, is_orig, ts, np.int64(flags), seq, np.int64(b[i].ack),
                            np.int64(b[i].window), np.int64(b[i].payload_len), np.int64(b[i].payload_cap))
                if C[c].established:
                    C[c].established = False
                    _port_inactivity(F, P, c)
        elif proto == PROTO_UDP:
            if not ok:
                conn_weird(F, O, S, c, W_BAD_UDP_CHK)
                _udp_chk_scaled(F, c, is_orig)
            else:
                C[c].last_ts = ts
                length = np.int64(b[i].payload_len)
                if is_orig:
                    conn_check_history(F, c, HIST_UDP_ORIG_DATA, L_DATA)
                    C[c].orig_len = length if C[c].orig_len < 0 else C[c].orig_len + length
                else:
                    conn_check_history(F, c, HIST_UDP_RESP_DATA, lower(L_DATA))
                    C[c].resp_len = length if C[c].resp_len < 0 else C[c].resp_len + length
                if a & AUX_PARTIAL:
                    conn_check_history(F, c, HIST_UNKNOWN_PKT, L_PARTIAL)
        elif proto == PROTO_ICMP or proto == PROTO_ICMP6:
            if not ok:
                conn_weird(F, O, S, c, W_BAD_ICMP_CHK)
            else:
                C[c].last_ts = ts
                length = np.int64(b[i].payload_len)
                if is_orig:
                    C[c].orig_len = length if C[c].orig_len < 0 else C[c].orig_len + length
                else:
                    C[c].resp_len = length if C[c].resp_len < 0 else C[c].resp_len + length
        else:
            C[c].last_ts = ts

        if ok:
            if is_orig:
                C[c].orig_pkts += 1
                C[c].orig_ip_bytes += np.int64(b[i].ip_len)
            else:
                C[c].resp_pkts += 1
                C[c].resp_ip_bytes += np.int64(b[i].ip_len)
            now_orig = shi == C[c].orig_hi and slo == C[c].orig_lo and sport == C[c].orig_p
            roles_python = False
            if C[c].dns_first:
                # The DNS analyzer's first message (FlowTable._dns_first_message).
                if b[i].payload_cap >= HEADER_LEN:
                    if a & AUX_DECODED:
                        roles_python = True  # its bytes are Python's: it decides, the call ends here
                    else:
                        said = first_message_said(C, c, buf, np.int64(b[i].payload_off), now_orig)
                        if said != FIRST_NOT:
                            C[c].dns_first = False
                            if said == FIRST_FLIP:
                                flip_mid_packet(F, c, now_orig, np.int64(b[i].ip_len))
                                now_orig = not now_orig
            elif C[c].ntp_roles:
                # The NTP analyzer's message (FlowTable._ntp_message).
                if a & AUX_DECODED:
                    roles_python = b[i].payload_cap > 0
                else:
                    said = ntp_said(buf, np.int64(b[i].payload_off), np.int64(b[i].payload_cap), now_orig)
                    if ntp_watch_ends(said, max(C[c].orig_len, 0) + max(C[c].resp_len, 0)):
                        C[c].ntp_roles = False
                    if said == ROLES_FLIP:
                        flip_mid_packet(F, c, now_orig, np.int64(b[i].ip_len))
                        now_orig = not now_orig
            e = -1
            if C[c].is_tcp:
                e = orig_phys(C, c) if now_orig else orig_phys(C, c) ^ 1
                if E[e].stream_start < 0 and (flags & TH_SYN or b[i].payload_len > 0):
                    E[e].stream_start = (seq + 1) & M32 if flags & TH_SYN else seq
            lane = C[c].lane
            lane_lo = L.ints[L_EV_N]
            lane_said = LANE_QUIET
            if lane == UNOPENED and b[i].payload_len > 0:
                lane = C[c].lane = lane_take(L, E[2 * c].stream_start, E[2 * c + 1].stream_start, C[c].resp_p,
                                             orig_phys(C, c))
            gate_said = GATE_NONE
            window = NO_WINDOW
            if lane >= 0:
                if C[c].is_partial and b[i].payload_len > 0:
                    # HTTP.cc HTTP_Analyzer::DeliverStream reads nothing of a partial
                    # connection: Python's analyzer takes it over and stops there.
                    lane_said = lane_leave(L, lane, e & 1, now_orig)
                else:
                    lane_said = lane_segment(L, lane, e & 1, now_orig, flags, seq, np.int64(b[i].payload_len),
                                             np.int64(b[i].payload_cap), buf, np.int64(b[i].payload_off),
                                             not a & AUX_DECODED)
                if L.gate.rows[lane, G_GATED]:
                    gate_said, window = _gate(L, lane, lane_said, now_orig, orig_phys(C, c), buf, ts)
                if lane_said == LANE_LEFT:
                    _lane_left(F, c)
            mode = C[c].app_mode
            want = G[G_ANALYZERS] != 0 and mode != APP_NONE
            if want and C[c].is_tcp:
                # TCP analyzers act only on stream bytes (fast.engine): a packet without
                # payload gives them none (a SYN's sequence reaches them as the next
                # EV_PKT's stream_start).
                want = b[i].payload_len > 0 and not (C[c].app_dead & (ORIG_BIT if now_orig else RESP_BIT))
                if want and E[e].sk_left > 0:
                    verdict = count_for_analyzers(E, e, flags, seq, np.int64(b[i].payload_len),
                                                  np.int64(b[i].payload_cap))
                    if verdict == COUNTED_TO_END:
                        k = ev_conn(O, S, EV_COUNTED, C, c, ts)
                        hand_counts_to_analyzers(F, O, k, c)
                        pause = app_sent_pause(C, S, c)
                    want = verdict == TO_ANALYZERS
            if gate_said == GATE_KEPT:
                want = False  # the analyzers read it from the window when the gate ends
            elif gate_said == GATE_RELEASED:
                want = False  # they are done with the connection (until the lane leaves it)
                C[c].app_mode = APP_NONE
            elif window != NO_WINDOW and not want:
                window_release(L.gate, window)  # unreachable: they wait for bytes while gated
                window = NO_WINDOW
            if roles_python:
                want = True
                pause = True
            dns_lo = Q.ints[P_OUT]
            if want and (not C[c].is_tcp and mode != APP_FIRST and D.ports[C[c].resp_p]
                         and b[i].payload_cap > 0):
                want = _dns_datagram(D, Q, C, c, b, i, buf, a, ts)
            if want:
                k = ev_conn(O, S, EV_PKT, C, c, ts)
                EV[k].window = window
                EV[k].row = i
                EV[k].is_orig = now_orig
                EV[k].hist_len = C[c].hist_len
                if e >= 0:
                    EV[k].stream_start = E[e].stream_start
                    hand_counts_to_analyzers(F, O, k, c)
                if lane_said != LANE_QUIET:
                    _lane_range(EV, k, L, lane, lane_lo)
                    if lane_said == LANE_LEFT:
                        EV[k].code = CODE_LANE_LEFT
                if roles_python:
                    EV[k].code = CODE_UDP_ROLES
                if mode == APP_FIRST:
                    C[c].app_mode = APP_NONE
                elif C[c].is_tcp:
                    pause = app_sent_pause(C, S, c)
                else:
                    # Python never stops a UDP flow's analyzers, so no pause; its timers
                    # still wait for them (_advance).
                    C[c].app_call = G[G_CALL]
                    EV[k].dns_lo = dns_lo
                    EV[k].dns_hi = Q.ints[P_OUT]
                    if not roles_python and dns_lo < EV[k].dns_hi and Q.out[EV[k].dns_hi - 1].msg != NO_MSG:
                        EV[k].kind = EV_DNS  # the message is the analyzer's, not the packet
            elif lane_said == LANE_EVENTS:
                k = ev_conn(O, S, EV_LANE, C, c, ts)
                EV[k].row = i
                EV[k].is_orig = now_orig
                _lane_range(EV, k, L, lane, lane_lo)
        row_conn[i] = C[c].serial
        G[G_STAGE] = 0
        if pause:
            # Let the analyzers look: they may be done with this connection.
            return ST_OUT_FULL, i + 1
    return ST_DONE, n


@njit(cache=True, _nrt=False)
def _dns_datagram(D, Q, C, c, b, i, buf, a, ts):
    """Row `i`, a datagram with payload on a DNS port of connection `c`: parsed here if it
    can be (not a frame the reference decoder made), then paired (`fast.dns_pairs`).
    False: the kernel keeps the message, no event (its parse is dropped from D)."""
    U = D.used
    msgs, answers, arena = U[U_MSGS], U[U_ANSWERS], U[U_ARENA]
    parsed = not a & AUX_DECODED and parse_message(D, buf, np.int64(b[i].payload_off), np.int64(b[i].payload_cap))
    if dns_datagram(Q, D, C, c, parsed, msgs, ts):
        return True
    U[U_MSGS], U[U_ANSWERS], U[U_ARENA] = msgs, answers, arena
    return False


# process_batch's two callees that take longest to compile (about a third of a first run's
# compile): what `fast.precompile`'s helper compiles.
COSTLY_CALLEES = (lane_segment, _dns_datagram)


def costly_callees(table: FastFlowTable) -> list[tuple[Any, tuple[Any, ...]]]:
    """COSTLY_CALLEES, each with the argument types process_batch passes it, as the calls
    above give them: `fast.precompile` has a helper process compile them while this one
    compiles the rest. The types follow the calls by hand; tests/test_precompile.py checks
    them against numba's type inference of process_batch."""
    b = np.zeros(1, PACKET_DTYPE)
    buf = np.zeros(0, np.uint8)
    buf.flags.writeable = False  # as files and ring blocks give it (fast.reader, fast.ring)
    conns = table.flows.conns
    i64, flag = types.int64, types.boolean
    lane = (typeof(table.lane), typeof(conns[0]["lane"]), i64, flag, typeof(b[0]["flags"]), i64, i64, i64,
            typeof(buf), i64, flag)
    dns = (typeof(table.dns), typeof(table.pairs), typeof(conns), i64, typeof(b), i64, typeof(buf),
           typeof(AUX_DTYPE(0)), typeof(b[0]["ts"]))
    return list(zip(COSTLY_CALLEES, (lane, dns), strict=True))


@njit(cache=True, _nrt=False)
def _lane_left(F, c):
    """The kernel stopped reading the connection's HTTP at this segment: it and every later
    one go to Python, uncounted, until the analyzers say what they want (fast.engine)."""
    C, E = F.conns, F.endpoints
    C[c].lane = NO_LANE
    C[c].app_mode = APP_EVERY
    C[c].app_dead = 0
    E[2 * c].sk_left = 0
    E[2 * c + 1].sk_left = 0


@njit(cache=True, _nrt=False)
def _gate(L, lane, lane_said, is_orig, orig_phys, buf, ts):
    """A segment of a gated lane row (`fast.pia_gate`): GATE_KEPT, GATE_RELEASED, or
    GATE_OVER with the window buffer the analyzers read first (NO_WINDOW: nothing kept)."""
    W = L.gate
    if lane_said != LANE_LEFT:
        lo, hi = L.ints[L_CHUNK_LO], L.ints[L_CHUNK_HI]
        if hi == lo:
            return GATE_KEPT, NO_WINDOW  # no new byte: nothing for the analyzers
        said = gate_chunk(W, lane, is_orig, orig_phys, buf, lo, hi, L.ints[L_CHUNK_SEQ], ts)
        if said == GATE_KEPT:
            return GATE_KEPT, NO_WINDOW
        if said == GATE_RELEASED:
            window = gate_end(W, lane, orig_phys)
            if window != NO_WINDOW:
                window_release(W, window)  # nobody reads the chunks kept
            return GATE_RELEASED, NO_WINDOW
    return GATE_OVER, gate_end(W, lane, orig_phys)


@njit(cache=True, _nrt=False)
def _lane_range(EV, k, L, lane, lo):
    """Event `k` carries the lane events its segment wrote (and the row they are of)."""
    EV[k].lane = lane
    EV[k].lane_lo = lo
    EV[k].lane_hi = L.ints[L_EV_N]


@njit(cache=True, _nrt=False)
def flush_conns(F, O, S, order):
    """End of input: remove the connections in `order` (start time, then least recent)."""
    for c in order:
        if F.conns[c].live:
            _remove(F, O, S, c)


def _port_table(ports: frozenset[tuple[int, int]] = LIKELY_SERVER_PORTS,
                inactivity: frozenset[int] = PORT_INACTIVITY_PORTS, ntp: frozenset[int] = NTP_PORTS) -> np.ndarray:
    """likely_server_ports as a lookup table: TCP ports, then UDP ports; then the TCP ports
    of port_inactivity_timeouts; then the NTP analyzer's UDP ports."""
    table = np.zeros(PORTS_NTP + 65536, np.uint8)
    for port in inactivity:
        table[PORTS_INACT + port] = 1
    for port, proto in ports:  # TCP and UDP ports only
        table[(PORTS_UDP if proto == PROTO_UDP else 0) + port] = 1
    for port in ntp:
        table[PORTS_NTP + port] = 1
    return table


def _icmp_table(pairs: dict[int, int]) -> np.ndarray:
    """ICMP type -> the type of its answer (-1: a one-way message)."""
    table = np.full(256, -1, np.int64)
    for k, v in pairs.items():
        table[k] = v
    return table


PORTS = _port_table()
ICMP4 = _icmp_table(ICMP4_PAIRS)
ICMP6 = _icmp_table(ICMP6_PAIRS)

EventHandler = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def _settings(config: FlowConfig) -> Settings:
    timeouts = np.zeros(CFG_SIZE, np.float64)
    timeouts[CFG_TCP_INACT] = config.tcp_inactivity_timeout
    timeouts[CFG_UDP_INACT] = config.udp_inactivity_timeout
    timeouts[CFG_ICMP_INACT] = config.icmp_inactivity_timeout
    timeouts[CFG_UNKNOWN_INACT] = config.unknown_inactivity_timeout
    timeouts[CFG_ATTEMPT] = config.tcp_attempt_delay
    timeouts[CFG_CLOSE] = config.tcp_close_delay
    timeouts[CFG_SYN_TIMEOUT] = config.tcp_syn_timeout
    timeouts[CFG_SESSION] = config.tcp_session_timer
    timeouts[CFG_LINGER] = config.tcp_connection_linger
    timeouts[CFG_DNS_SESSION] = config.dns_session_timeout
    timeouts[CFG_PORT_INACT] = config.port_inactivity_timeout
    default_ports = (config.likely_server_ports, config.port_inactivity_ports, config.ntp_ports) == (
        LIKELY_SERVER_PORTS, PORT_INACTIVITY_PORTS, NTP_PORTS)
    ports = PORTS if default_ports else _port_table(config.likely_server_ports, config.port_inactivity_ports,
                                                    config.ntp_ports)
    return Settings(timeouts=timeouts, ports=ports, icmp4=ICMP4, icmp6=ICMP6)


DNS_SLOTS = 8192  # DNS queries the kernel keeps waiting for their replies (fast.dns_pairs)


class FastFlowTable:
    """Owns the kernel's arrays; grows them and replays its events through `handler`.

    `handler(events, records, histories)` gets each slice of the ordered event stream
    (EV_DTYPE rows, with REC_DTYPE rows and history bytes that EV_REC events point at);
    it must consume them before returning: the arrays are reused.
    """

    def __init__(self, config: FlowConfig, analyzers: bool, handler: EventHandler,
                 cap: int = 1024, hist: int = 24, blocks: int = 4, heap: int = 4096,
                 out: int = 8192, dns_ports: np.ndarray | None = None, http_ports: np.ndarray | None = None,
                 gates: Gates | None = None) -> None:
        """`dns_ports`: UDP responder ports whose datagrams the kernel parses as DNS
        messages (`fast.dns`; EV_DNS events instead of EV_PKT); None: none. `http_ports`:
        TCP responder ports whose connections' HTTP the kernel reads (`fast.http_lane`)."""
        self.flows: Flows = new_flows(cap, hist, blocks)
        self.timers: Timers = new_timers(heap)
        self.out: Output = new_output(out, hist)
        # Room for as many messages as the first output has events (a kernel call takes at
        # most fast.engine.BATCH_ROWS packets); fixed: a message that does not fit goes to Python.
        self.dns: DnsParse = new_dns_parse(np.zeros(65536, np.bool_) if dns_ports is None else dns_ports, out)
        self.pairs: DnsPairs = new_dns_pairs(DNS_SLOTS, out)
        self.scalars = Scalars(ints=np.zeros(G_SIZE, np.int64), floats=np.zeros(GF_SIZE, np.float64))
        G = self.scalars.ints
        G[G_NFREE] = cap
        G[G_LRU_HEAD] = G[G_LRU_TAIL] = -1
        G[G_MAX_FLOWS] = config.max_flows or 0
        G[G_ANALYZERS] = 1 if analyzers else 0
        self.settings = _settings(config)
        self.lane: HttpLane = new_lane(cap, np.zeros(65536, np.bool_) if http_ports is None else http_ports,
                                       http_ports is not None, gates=gates)
        self.handler = handler
        self.row_conn = np.zeros(0, np.int64)
        self._process_batch = StableCall(process_batch, PROCESS_BATCH_STATE)

    def __len__(self) -> int:
        return int(self.scalars.ints[G_LIVE])

    def _drain(self) -> None:
        G, out = self.scalars.ints, self.out
        if G[G_EV_N]:
            self.handler(out.events[: G[G_EV_N]], out.records[: G[G_REC_N]], out.record_history)

    def lane_free(self, row: int) -> None:
        """Python has read lane row `row` (its connection ended, or its HTTP was left to
        Python): the kernel may give it, and its head buffer, to another connection."""
        lane = self.lane
        ints, stream = lane.ints, lane.stream
        buffer = stream[row, HEAD_BUFFER]
        if buffer != NO_HEADS:  # release_heads, without a kernel call per connection
            lane.head_free[ints[L_HFREE]] = buffer
            ints[L_HFREE] += 1
            stream[row, HEAD_BUFFER] = NO_HEADS
        lane.free[ints[L_NFREE]] = row
        ints[L_NFREE] += 1
        gate = lane.gate.rows[row]
        if gate[G_WINDOW] != NO_WINDOW:  # it ended gated
            self.window_free(int(gate[G_WINDOW]))
            gate[G_WINDOW] = NO_WINDOW

    def dns_free(self, slot: int) -> None:
        """Python has read a waiting query's slot (`fast.dns_pairs`): the kernel may reuse it."""
        ints = self.pairs.ints
        self.pairs.free[ints[P_FREE]] = slot
        ints[P_FREE] += 1

    def window_free(self, window: int) -> None:
        """Python has read a window buffer (`fast.pia_gate`), or its connection ended gated."""
        gate = self.lane.gate
        gate.free[gate.ints[W_FREE]] = window
        gate.ints[W_FREE] += 1

    def feed(self, batch: np.ndarray, aux: np.ndarray, buf: np.ndarray) -> np.ndarray:
        """Process `batch` (with its aux flags; payloads in `buf`); returns each row's
        connection serial (-1: none)."""
        G = self.scalars.ints
        if self.row_conn.shape[0] < batch.shape[0]:
            self.row_conn = np.zeros(batch.shape[0], np.int64)
        i = 0
        n = batch.shape[0]
        while True:
            lane = self.lane
            G[G_EV_N] = 0
            G[G_REC_N] = 0
            G[G_CALL] += 1
            self.dns.used.fill(0)
            self.pairs.ints[P_OUT] = 0
            lane.ints[L_EV_N] = lane.ints[L_ARENA_N] = 0
            status, i = self._process_batch(self.flows, self.timers, self.out, self.scalars, self.settings,
                                            self.dns, self.pairs, lane, batch, buf, aux, self.row_conn, i)
            self._drain()
            if status == ST_DONE:
                return self.row_conn[:n]
            if status == ST_GROW:
                self._grow(int(G[G_GROW]))
            elif G[G_EV_N] == 0 and i < n:
                self._grow_output()

    def flush(self, now: float) -> None:
        """End of input: every live connection ends, oldest first (FlowTable.flush)."""
        G, conns = self.scalars.ints, self.flows.conns
        self.scalars.floats[GF_NOW] = max(self.scalars.floats[GF_NOW], now)
        live = np.flatnonzero(conns["live"])
        order = live[np.lexsort((conns["touch"][live], conns["start_ts"][live]))]
        step = self.out.records.shape[0]
        while self.out.events.shape[0] < 2 * step:
            self._grow_output()
        for k in range(0, len(order), step):
            G[G_EV_N] = 0
            G[G_REC_N] = 0
            flush_conns(self.flows, self.out, self.scalars, order[k : k + step])
            self._drain()
        G[G_HEAP_N] = 0

    # -- growth (from Python, between kernel calls) ----------------------------------------
    def _grow_output(self) -> None:
        """A packet needs more room than an empty output has: the events, or the lane's."""
        self.out = new_output(2 * self.out.events.shape[0], self.flows.history.shape[1])
        self.pairs = self.pairs._replace(out=np.zeros(2 * self.out.events.shape[0], self.pairs.out.dtype))
        lane = self.lane
        self.lane = lane._replace(events=np.zeros((2 * lane.events.shape[0], lane.events.shape[1]), np.int64),
                                  arena=np.zeros(2 * lane.arena.shape[0], np.uint8))

    def _grow_lane(self) -> None:
        """Twice the rows, head buffers or window buffers, whichever ran out (the kernel
        asks before a packet when one has none free)."""
        lane, ints = self.lane, self.lane.ints
        if ints[L_NFREE] == 0:
            old = lane.free.shape[0]
            lane = lane._replace(state=_grown(lane.state, 2 * old), sides=_grown(lane.sides, 2 * old),
                                 pending=_grown(lane.pending, 2 * old), lines=_grown(lane.lines, 2 * old),
                                 stream=_grown(lane.stream, 2 * old), free=_doubled_stack(lane.free, 0))
            ints[L_NFREE] = old
        if ints[L_HFREE] == 0:
            old = lane.head_free.shape[0]
            lane = lane._replace(heads=_grown(lane.heads, 2 * old), head_free=_doubled_stack(lane.head_free, 0))
            ints[L_HFREE] = old
        gate = lane.gate
        if gate.rows.shape[0] < lane.state.shape[0]:
            gate = gate._replace(rows=_grown(gate.rows, lane.state.shape[0]))
        if gate.ints[W_FREE] == 0:
            old = gate.free.shape[0]
            gate = gate._replace(windows=_grown(gate.windows, 2 * old), chunks=_grown(gate.chunks, 2 * old),
                                 chunk_ts=_grown(gate.chunk_ts, 2 * old), meta=_grown(gate.meta, 2 * old),
                                 free=_doubled_stack(gate.free, 0))
            gate.ints[W_FREE] = old
        self.lane = lane._replace(gate=gate)

    def _grow(self, what: int) -> None:
        f, G = self.flows, self.scalars.ints
        if what & GROW_CONNS:
            old = f.conns.shape[0]
            new = 2 * old
            nfree = int(G[G_NFREE])
            free = np.zeros(new, np.int64)
            free[:nfree] = f.free[:nfree]
            added = np.arange(new - 1, old - 1, -1, dtype=np.int64)
            free[nfree : nfree + len(added)] = added
            f = f._replace(conns=_grown(f.conns, new), endpoints=_grown(f.endpoints, 2 * new),
                           counters=_grown(f.counters, 2 * new), blocks=_grown(f.blocks, 2 * new),
                           history=_grown(f.history, new), free=free)
            G[G_NFREE] = nfree + len(added)
        if what & GROW_HASH:
            f = f._replace(hash_index=np.full(2 * f.hash_index.shape[0], -1, np.int64))
            rehash(f)
        if what & GROW_HEAP:
            self.timers = Timers(*(_grown(a, 2 * a.shape[0]) for a in self.timers))
        if what & GROW_HIST:
            width = 2 * f.history.shape[1]
            hi = np.zeros((f.history.shape[0], width), np.uint8)
            hi[:, : f.history.shape[1]] = f.history
            f = f._replace(history=hi)
            self.out = self.out._replace(record_history=np.zeros((self.out.records.shape[0], width), np.uint8))
        if what & GROW_LANE:
            self._grow_lane()
        if what & GROW_BLOCKS:
            width = 2 * f.blocks.shape[1]
            bl = np.zeros((f.blocks.shape[0], width, 2), np.uint64)
            bl[:, : f.blocks.shape[1]] = f.blocks
            f = f._replace(blocks=bl)
        self.flows = f


def _doubled_stack(free: np.ndarray, height: int) -> np.ndarray:
    """A free stack of twice the slots: its `height` free ones, then the new ones."""
    old = free.shape[0]
    out = np.zeros(2 * old, np.int64)
    out[:height] = free[:height]
    out[height : height + old] = np.arange(2 * old - 1, old - 1, -1, dtype=np.int64)
    return out


def _grown(arr: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, *arr.shape[1:]), arr.dtype)
    out[: arr.shape[0]] = arr
    return out
