"""The fast flow table: Zeek connection state in an open-addressing hash table, in numba.

Same semantics as the reference `pcapexfil.flow.table.FlowTable` (which stays the
readable implementation and the test oracle): connection identity and originator choice,
per-protocol counters, the TCP state machine of `fast.tcp`, timers on network time
(a binary heap ordered like the reference's heapq), connection splitting on 5-tuple reuse,
ICMP pairing, the LRU cap on live connections, and the pipeline's once-a-second ticks.

`process_batch` walks a batch of `PACKET_DTYPE` rows in order and writes an ordered event
stream (`EV_DTYPE`): new connection (a uid is drawn), packet an application analyzer needs,
finished record (a `REC_DTYPE` row), tick, weird, eviction. Python replays that stream
(`fast.engine`), so analyzers, uids and sinks see exactly the reference's order of calls.
Whenever an array would overflow the kernel returns early, Python drains or grows
(`FastFlowTable.feed`), and the kernel resumes at the same row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from pcapexfil.fast.batch import KIND_SKIP
from pcapexfil.fast.tcp import (
    CFG_ATTEMPT,
    CFG_CLOSE,
    CFG_ICMP_INACT,
    CFG_LINGER,
    CFG_SESSION,
    CFG_SIZE,
    CFG_SYN_TIMEOUT,
    CFG_TCP_INACT,
    CFG_UDP_INACT,
    CFG_UNKNOWN_INACT,
    EV_DTYPE,
    EV_EVICT,
    EV_NEW,
    EV_PKT,
    EV_REC,
    EV_TICK,
    G_ANALYZERS,
    G_EV_N,
    G_EVICTED,
    G_HAVE_TICK,
    G_HEAP_N,
    G_LAST_C,
    G_LAST_SERIAL,
    G_LIVE,
    G_MAX_FLOWS,
    G_NFREE,
    G_REC_N,
    G_SERIAL,
    G_SIZE,
    G_TICK_PENDING,
    G_TOUCH,
    GF_NEXT_TICK,
    GF_NOW,
    GF_PNOW,
    GF_SIZE,
    INACTIVE,
    T_ATTEMPT,
    T_DELETE,
    T_EXPIRE,
    T_INACTIVITY,
    TH_ACK,
    TH_RST,
    TH_SYN,
    W_BAD_ICMP_CHK,
    W_BAD_TCP_CHK,
    W_BAD_UDP_CHK,
    CNT_CHK,
    CS_OTH,
    CS_S0,
    CS_SF,
    CS_SHR,
    State,
    attempt_timer,
    conn_check_history,
    conn_weird,
    ep_scaled,
    ep_size,
    ev_conn,
    expire_timer,
    flip_roles,
    heap_pop,
    hist_append,
    is_reuse,
    orig_phys,
    schedule,
    synack_sender_is_responder,
    tcp_conn_state,
    tcp_process,
)
from pcapexfil.flow.ports import is_likely_server_port
from pcapexfil.flow.table import _ICMP4_PAIRS, _ICMP6_PAIRS, FlowConfig

PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMP6 = 1, 6, 17, 58

# aux column (one byte per batch row, beside the batch): what the reference decoder said.
AUX_BAD_CHECKSUM = 1  # checksum_ok is False
AUX_NO_TICK = 2  # not the first packet of its frame: the pipeline's tick already ran
AUX_CARRIER = 4  # outer packet of an IP-level tunnel: advances time, is no connection

# Kernel return status.
ST_DONE, ST_OUT_FULL, ST_GROW = 0, 1, 2
# What to grow (G[G_GROW] bits).
GROW_CONNS, GROW_HASH, GROW_HEAP, GROW_HIST, GROW_BLOCKS = 1, 2, 4, 8, 16
# Two table-only slots past the shared ones: what to grow, and how far row processing got
# (1: the row's tick is done) so a call that returned early resumes without repeating it.
G_GROW = G_SIZE
G_STAGE = G_SIZE + 1
G_CALL = G_SIZE + 2  # kernel calls so far (per-call counts of analyzer packets)
_EXTRA_G = 3
# A connection whose every packet goes to the analyzers ends the kernel call after this
# many of them, so Python can tell it to stop (analyzers are done after a handshake or two).
APP_PKTS_PER_CALL = 4
APP_FIRST_SENT = 4  # C.app_dead bit: the connection's first packet went to the analyzers

REC_DTYPE = np.dtype(
    [
        ("serial", np.int64),
        ("ts", np.float64),
        ("duration", np.float64),
        ("orig_hi", np.uint64),
        ("orig_lo", np.uint64),
        ("resp_hi", np.uint64),
        ("resp_lo", np.uint64),
        ("orig_p", np.int32),
        ("resp_p", np.int32),
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
    ]
)

# Room the kernel wants before it starts on a packet (a packet emits at most a few events).
EV_ROOM = 24
REC_ROOM = 4
HEAP_ROOM = 8
HIST_ROOM = 8
BLOCK_ROOM = 2
_BCAST_LO = np.uint64((0xFFFF << 32) | 0xFFFFFFFF)  # 255.255.255.255, IPv4-mapped
_DNS_UDP_PORTS = (53, 5353, 5355)  # identifiers.dns.UDP_PORTS: every packet goes to the analyzers

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)
_M4 = np.uint64(0x27D4EB2F165667C5)
_M5 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, _nrt=False)
def _hash(proto, oneway, ahi, alo, ap, bhi, blo, bp):
    h = ahi * _M1
    h ^= alo * _M2
    h ^= bhi * _M3
    h ^= blo * _M4
    h ^= ((np.uint64(ap) << np.uint64(24)) | (np.uint64(bp) << np.uint64(8)) | np.uint64(proto)
          | (np.uint64(oneway) << np.uint64(40))) * _M5
    h ^= h >> np.uint64(29)
    h *= _M2
    h ^= h >> np.uint64(32)
    return h


@njit(cache=True, _nrt=False)
def _addr_le(ahi, alo, ap, bhi, blo, bp):
    if ahi != bhi:
        return ahi < bhi
    if alo != blo:
        return alo < blo
    return ap <= bp


@njit(cache=True, _nrt=False)
def _lookup(C, hidx, h, proto, oneway, ahi, alo, ap, bhi, blo, bp):
    mask = hidx.shape[0] - 1
    i = np.int64(h & np.uint64(mask))
    while True:
        c = hidx[i]
        if c < 0:
            return -1, i
        if (
            C[c].hash == h and C[c].proto == proto and C[c].oneway == oneway
            and C[c].k_ahi == ahi and C[c].k_alo == alo and C[c].k_ap == ap
            and C[c].k_bhi == bhi and C[c].k_blo == blo and C[c].k_bp == bp
        ):
            return c, i
        i = (i + 1) & mask


@njit(cache=True, _nrt=False)
def _hash_delete(C, hidx, c):
    mask = hidx.shape[0] - 1
    i = C[c].hslot
    hidx[i] = -1
    j = i
    while True:
        j = (j + 1) & mask
        k = hidx[j]
        if k < 0:
            break
        home = np.int64(C[k].hash & np.uint64(mask))
        if j > i:
            stays = i < home <= j
        else:
            stays = home <= j or home > i
        if not stays:
            hidx[i] = k
            C[k].hslot = i
            hidx[j] = -1
            i = j


@njit(cache=True, _nrt=False)
def rehash(C, hidx):
    """Rebuild the index (after it was reallocated larger)."""
    hidx[:] = -1
    mask = hidx.shape[0] - 1
    for c in range(C.shape[0]):
        if C[c].live:
            i = np.int64(C[c].hash & np.uint64(mask))
            while hidx[i] >= 0:
                i = (i + 1) & mask
            hidx[i] = c
            C[c].hslot = i


@njit(cache=True, _nrt=False)
def _remove(C, E, HI, hidx, free, EV, REC, RH, G, c):
    """End connection `c`: its record row, an EV_REC event, its slot freed."""
    r = G[G_REC_N]
    G[G_REC_N] = r + 1
    rec = REC[r]
    rec.serial = C[c].serial
    rec.ts = C[c].start_ts
    duration = C[c].last_ts - C[c].start_ts
    rec.duration = duration
    rec.orig_hi = C[c].orig_hi
    rec.orig_lo = C[c].orig_lo
    rec.resp_hi = C[c].resp_hi
    rec.resp_lo = C[c].resp_lo
    rec.orig_p = C[c].orig_p
    rec.resp_p = C[c].resp_p
    proto = C[c].proto
    rec.proto = proto
    if proto == PROTO_TCP:
        rec.conn_state = tcp_conn_state(C, E, HI, c)
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
    n = C[c].hist_len
    rec.hist_len = n
    for k in range(n):
        RH[r, k] = HI[c, k]
    ev = ev_conn(EV, G, EV_REC, C, c, C[c].last_ts)
    EV[ev].row = r
    C[c].live = False
    _hash_delete(C, hidx, c)
    free[G[G_NFREE]] = c
    G[G_NFREE] += 1
    G[G_LIVE] -= 1


@njit(cache=True, _nrt=False)
def _advance(C, E, BL, HI, EC, hidx, free, EV, REC, RH, G, GF, CFG, T, now):
    """Fire due timers (FlowTable.advance). False: output full, call again."""
    if now > GF[GF_NOW]:
        GF[GF_NOW] = now
    hw, hs, hc, hser, hk, hg = T
    while G[G_HEAP_N] > 0 and hw[0] <= now:
        if G[G_REC_N] + 1 > REC.shape[0] or G[G_EV_N] + 2 > EV.shape[0] or G[G_HEAP_N] + 2 > hw.shape[0]:
            return False
        when = hw[0]
        c = hc[0]
        serial = hser[0]
        kind = hk[0]
        gen = hg[0]
        heap_pop(G, hw, hs, hc, hser, hk, hg)
        if not C[c].live or C[c].serial != serial:
            continue
        if kind == T_INACTIVITY:
            due = C[c].last_ts + C[c].inactivity_timeout
            if due <= when:
                _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)
            else:
                schedule(G, C, hw, hs, hc, hser, hk, hg, due, c, T_INACTIVITY)
            continue
        if gen != C[c].timer_gen:
            continue
        if kind == T_DELETE:
            _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)
        elif kind == T_ATTEMPT:
            if attempt_timer(C, E, c):
                C[c].is_active = False
                _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)
        elif kind == T_EXPIRE:
            verdict = expire_timer(C, E, CFG, c, when)
            if verdict == 1:
                _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)
            elif verdict == 0:
                schedule(G, C, hw, hs, hc, hser, hk, hg, when + CFG[CFG_SESSION], c, T_EXPIRE)
    return True


@njit(cache=True, _nrt=False)
def _reset_endpoint(E, EC, e, is_orig):
    ep = E[e]
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
    ep.rst_cnt = 0
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
    EC[e, :, :] = 0


@njit(cache=True, _nrt=False)
def _new_conn(C, E, BL, HI, EC, hidx, free, EV, REC, RH, G, GF, CFG, T, PORTS, b, i, slot_i, h,
              proto, oneway, ahi, alo, ap, bhi, blo, bp, sport, dport):
    ts = b[i].ts
    if proto == PROTO_TCP or proto == PROTO_UDP:
        timeout = CFG[CFG_UDP_INACT]  # Zeek's TCP analyzer starts with the UDP one, too
    elif proto == PROTO_ICMP or proto == PROTO_ICMP6:
        timeout = CFG[CFG_ICMP_INACT]
    else:
        timeout = CFG[CFG_UNKNOWN_INACT]
    cap = G[G_MAX_FLOWS]
    if cap > 0 and G[G_LIVE] >= cap:
        for _ in range(G[G_LIVE] - cap + 1):
            # Least recently active first (the reference's OrderedDict order).
            best = -1
            best_touch = np.int64(0)
            for k in range(C.shape[0]):
                if C[k].live and (best < 0 or C[k].touch < best_touch):
                    best = k
                    best_touch = C[k].touch
            G[G_EVICTED] += 1
            ev_conn(EV, G, EV_EVICT, C, best, GF[GF_NOW])
            _remove(C, E, HI, hidx, free, EV, REC, RH, G, best)
        # Deletions moved entries: find the insertion slot again.
        _, slot_i = _lookup(C, hidx, h, proto, oneway, ahi, alo, ap, bhi, blo, bp)
    G[G_NFREE] -= 1
    c = free[G[G_NFREE]]
    G[G_SERIAL] += 1
    cc = C[c]
    cc.live = True
    cc.serial = G[G_SERIAL]
    cc.hash = h
    cc.hslot = slot_i
    hidx[slot_i] = c
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
    cc.orig_ep = 0
    cc.is_tcp = proto == PROTO_TCP
    cc.is_partial = False
    cc.first_packet_seen = 0
    cc.is_active = True
    cc.synack_first = False
    cc.close_deferred = False
    cc.chk_orig_cnt = 0
    cc.chk_orig_thr = 1
    cc.chk_resp_cnt = 0
    cc.chk_resp_thr = 1
    G[G_LIVE] += 1
    k = ev_conn(EV, G, EV_NEW, C, c, ts)
    EV[k].code = proto
    flip = False
    if proto == PROTO_TCP:
        _reset_endpoint(E, EC, 2 * c, True)
        _reset_endpoint(E, EC, 2 * c + 1, False)
        flags = b[i].flags
        if flags & TH_SYN and flags & TH_ACK:
            cc.synack_first = True
        elif not flags & TH_SYN:
            if PORTS[sport]:
                if PORTS[dport]:
                    flip = sport < dport
                else:
                    flip = True
    elif proto == PROTO_UDP:
        flip = PORTS[65536 + sport] != 0 and PORTS[65536 + dport] == 0
    if flip and not (b[i].dst_hi == 0 and b[i].dst_lo == _BCAST_LO):
        flip_roles(C, E, HI, c, False)
    cc.app_dead = 0
    cc.app_call = 0
    cc.app_sent = 0
    if proto == PROTO_TCP:
        cc.app_mode = 1
    elif proto == PROTO_UDP and (cc.resp_p == 53 or cc.resp_p == 5353 or cc.resp_p == 5355):
        cc.app_mode = 1
    else:
        cc.app_mode = 0
    hw, hs, hc, hser, hk, hg = T
    schedule(G, C, hw, hs, hc, hser, hk, hg, ts + timeout, c, T_INACTIVITY)
    if proto == PROTO_TCP:
        schedule(G, C, hw, hs, hc, hser, hk, hg, ts + CFG[CFG_SYN_TIMEOUT], c, T_EXPIRE)
    return c


@njit(cache=True, _nrt=False)
def _udp_chk_scaled(C, HI, c, is_orig):
    if is_orig:
        C[c].chk_orig_cnt += 1
        if C[c].chk_orig_cnt == C[c].chk_orig_thr:
            hist_append(C, HI, c, 67)  # C
            C[c].chk_orig_thr *= 10
    else:
        C[c].chk_resp_cnt += 1
        if C[c].chk_resp_cnt == C[c].chk_resp_thr:
            hist_append(C, HI, c, 99)  # c
            C[c].chk_resp_thr *= 10


@njit(cache=True, _nrt=False)
def process_batch(C, E, BL, HI, EC, hidx, free, T, EV, REC, RH, G, GF, CFG, PORTS, ICMP4, ICMP6,
                  b, aux, row_conn, start):
    """Rows `start`.. of batch `b` through the table. Returns (status, next row)."""
    hw = T[0]
    n = b.shape[0]
    for i in range(start, n):
        ts = b[i].ts
        a = aux[i]
        if G[G_STAGE] == 0:
            # The pipeline's tick: time advances and sinks hear of it once a second.
            if not a & AUX_NO_TICK:
                if ts > GF[GF_PNOW]:
                    GF[GF_PNOW] = ts
                pnow = GF[GF_PNOW]
                if G[G_HAVE_TICK] == 0 or pnow >= GF[GF_NEXT_TICK]:
                    if G[G_EV_N] + 1 > EV.shape[0]:
                        return ST_OUT_FULL, i
                    if not _advance(C, E, BL, HI, EC, hidx, free, EV, REC, RH, G, GF, CFG, T, pnow):
                        return ST_OUT_FULL, i
                    if G[G_EV_N] + 1 > EV.shape[0]:
                        return ST_OUT_FULL, i
                    k = G[G_EV_N]
                    EV[k].kind = EV_TICK
                    EV[k].ts = pnow
                    G[G_EV_N] = k + 1
                    GF[GF_NEXT_TICK] = pnow + 1.0
                    G[G_HAVE_TICK] = 1
            G[G_STAGE] = 1
        row_conn[i] = -1
        if b[i].kind == KIND_SKIP:
            G[G_STAGE] = 0
            continue
        if a & AUX_CARRIER:
            if not _advance(C, E, BL, HI, EC, hidx, free, EV, REC, RH, G, GF, CFG, T, ts):
                return ST_OUT_FULL, i
            G[G_STAGE] = 0
            continue
        if ts > GF[GF_NOW]:
            if not _advance(C, E, BL, HI, EC, hidx, free, EV, REC, RH, G, GF, CFG, T, ts):
                return ST_OUT_FULL, i
        if G[G_EV_N] + EV_ROOM > EV.shape[0] or G[G_REC_N] + REC_ROOM > REC.shape[0]:
            return ST_OUT_FULL, i
        grow = 0
        if G[G_HEAP_N] + HEAP_ROOM > hw.shape[0]:
            grow |= GROW_HEAP
        if G[G_NFREE] < 2:
            grow |= GROW_CONNS
        if 2 * (G[G_LIVE] + 1) > hidx.shape[0]:
            grow |= GROW_HASH
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
            if t < 256:
                cp = ICMP4[t] if proto == PROTO_ICMP else ICMP6[t]
            if cp < 0:
                oneway = 1
            else:
                dport = np.int32(cp)
        elif proto != PROTO_TCP and proto != PROTO_UDP:
            sport = np.int32(0)
            dport = np.int32(0)
        shi, slo, dhi, dlo = b[i].src_hi, b[i].src_lo, b[i].dst_hi, b[i].dst_lo
        if oneway or _addr_le(shi, slo, sport, dhi, dlo, dport):
            ahi, alo, ap, bhi, blo, bp = shi, slo, sport, dhi, dlo, dport
        else:
            ahi, alo, ap, bhi, blo, bp = dhi, dlo, dport, shi, slo, sport
        h = _hash(proto, oneway, ahi, alo, ap, bhi, blo, bp)
        c, slot_i = _lookup(C, hidx, h, proto, oneway, ahi, alo, ap, bhi, blo, bp)
        if c >= 0:
            if C[c].hist_len + HIST_ROOM > HI.shape[1]:
                G[G_GROW] = GROW_HIST
                return ST_GROW, i
            if C[c].is_tcp and (E[2 * c].nblocks + BLOCK_ROOM > BL.shape[1]
                                or E[2 * c + 1].nblocks + BLOCK_ROOM > BL.shape[1]):
                G[G_GROW] = GROW_BLOCKS
                return ST_GROW, i
        flags = b[i].flags
        seq = np.int64(b[i].seq)
        if c >= 0 and C[c].is_tcp and is_reuse(C, E, c, flags, seq):
            _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)
            c, slot_i = _lookup(C, hidx, h, proto, oneway, ahi, alo, ap, bhi, blo, bp)
        if c < 0:
            c = _new_conn(C, E, BL, HI, EC, hidx, free, EV, REC, RH, G, GF, CFG, T, PORTS, b, i, slot_i, h,
                          proto, oneway, ahi, alo, ap, bhi, blo, bp, sport, dport)
        else:
            G[G_TOUCH] += 1
            C[c].touch = G[G_TOUCH]
        if (
            C[c].is_tcp
            and C[c].synack_first
            and C[c].orig_pkts + C[c].resp_pkts >= 1
            and flags & (TH_SYN | TH_ACK) != TH_SYN | TH_ACK
        ):
            C[c].synack_first = False
            if not flags & (TH_SYN | TH_RST) and (flags & TH_ACK or b[i].payload_len > 0):
                flip_roles(C, E, HI, c, True)
                synack_sender_is_responder(C, E, c)
        is_orig = shi == C[c].orig_hi and slo == C[c].orig_lo and sport == C[c].orig_p

        ok = not (a & AUX_BAD_CHECKSUM)
        if proto == PROTO_TCP:
            if not ok:
                conn_weird(C, EV, G, GF, c, W_BAD_TCP_CHK)
                o = orig_phys(C, c)
                ep_scaled(C, E, HI, EC, o if is_orig else o ^ 1, CNT_CHK, 67)
            else:
                tcp_process(C, E, BL, HI, EC, EV, G, GF, CFG, T, c, is_orig, ts, np.int64(flags), seq,
                            np.int64(b[i].ack), np.int64(b[i].window), np.int64(b[i].payload_len),
                            np.int64(b[i].payload_cap))
        elif proto == PROTO_UDP:
            if not ok:
                conn_weird(C, EV, G, GF, c, W_BAD_UDP_CHK)
                _udp_chk_scaled(C, HI, c, is_orig)
            else:
                C[c].last_ts = ts
                length = np.int64(b[i].payload_len)
                if is_orig:
                    conn_check_history(C, HI, c, 0x1, 68)
                    C[c].orig_len = length if C[c].orig_len < 0 else C[c].orig_len + length
                else:
                    conn_check_history(C, HI, c, 0x2, 100)
                    C[c].resp_len = length if C[c].resp_len < 0 else C[c].resp_len + length
        elif proto == PROTO_ICMP or proto == PROTO_ICMP6:
            if not ok:
                conn_weird(C, EV, G, GF, c, W_BAD_ICMP_CHK)
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
            mode = C[c].app_mode
            now_orig = shi == C[c].orig_hi and slo == C[c].orig_lo and sport == C[c].orig_p
            want = G[G_ANALYZERS] != 0 and mode != 2
            if want and C[c].is_tcp and C[c].app_dead & APP_FIRST_SENT:
                # After a TCP connection's first packet the analyzers only act on stream
                # bytes (fast.engine): a packet without payload and SYN gives them none.
                want = (b[i].payload_len > 0 or flags & TH_SYN != 0) and not (C[c].app_dead & (1 if now_orig else 2))
            if want:
                C[c].app_dead = C[c].app_dead | APP_FIRST_SENT
                k = ev_conn(EV, G, EV_PKT, C, c, ts)
                EV[k].row = i
                EV[k].is_orig = now_orig
                if mode == 0:
                    C[c].app_mode = 2
                else:
                    if C[c].app_call != G[G_CALL]:
                        C[c].app_call = G[G_CALL]
                        C[c].app_sent = 0
                    C[c].app_sent += 1
                    if C[c].app_sent >= APP_PKTS_PER_CALL:
                        pause = True
        row_conn[i] = C[c].serial
        G[G_LAST_C] = c
        G[G_LAST_SERIAL] = C[c].serial
        G[G_STAGE] = 0
        if pause:
            # Let the analyzers look: they may be done with this connection.
            return ST_OUT_FULL, i + 1
    return ST_DONE, n


@njit(cache=True, _nrt=False)
def flush_conns(C, E, HI, hidx, free, EV, REC, RH, G, order):
    """End of input: remove the connections in `order` (start time, then least recent)."""
    for c in order:
        if C[c].live:
            _remove(C, E, HI, hidx, free, EV, REC, RH, G, c)


def _port_table() -> np.ndarray:
    table = np.zeros(2 * 65536, np.uint8)
    for port in range(65536):
        table[port] = is_likely_server_port(port, PROTO_TCP)
        table[65536 + port] = is_likely_server_port(port, PROTO_UDP)
    return table


def _icmp_table(pairs: dict[int, int]) -> np.ndarray:
    table = np.full(256, -1, np.int64)
    for k, v in pairs.items():
        table[k] = v
    return table


PORTS = _port_table()
ICMP4 = _icmp_table(_ICMP4_PAIRS)
ICMP6 = _icmp_table(_ICMP6_PAIRS)

EventHandler = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


class FastFlowTable:
    """Owns the kernel's arrays; grows them and replays its events through `handler`.

    `handler(events, records, histories)` gets each slice of the ordered event stream
    (EV_DTYPE rows, with REC_DTYPE rows and history bytes that EV_REC events point at);
    it must consume them before returning: the arrays are reused.
    """

    def __init__(self, config: FlowConfig, analyzers: bool, handler: EventHandler,
                 cap: int = 1024, hist: int = 24, blocks: int = 4, heap: int = 4096,
                 out: int = 8192) -> None:
        self.s = State(cap, hist, blocks, heap)
        self.G = np.zeros(G_SIZE + _EXTRA_G, np.int64)
        self.G[G_NFREE] = cap
        self.G[G_MAX_FLOWS] = config.max_flows or 0
        self.G[G_ANALYZERS] = 1 if analyzers else 0
        self.GF = np.zeros(GF_SIZE, np.float64)
        cfg = np.zeros(CFG_SIZE, np.float64)
        cfg[CFG_TCP_INACT] = config.tcp_inactivity_timeout
        cfg[CFG_UDP_INACT] = config.udp_inactivity_timeout
        cfg[CFG_ICMP_INACT] = config.icmp_inactivity_timeout
        cfg[CFG_UNKNOWN_INACT] = config.unknown_inactivity_timeout
        cfg[CFG_ATTEMPT] = config.tcp_attempt_delay
        cfg[CFG_CLOSE] = config.tcp_close_delay
        cfg[CFG_SYN_TIMEOUT] = config.tcp_syn_timeout
        cfg[CFG_SESSION] = config.tcp_session_timer
        cfg[CFG_LINGER] = config.tcp_connection_linger
        self.CFG = cfg
        self.EV = np.zeros(out, EV_DTYPE)
        self.REC = np.zeros(out // 4, REC_DTYPE)
        self.RH = np.zeros((out // 4, hist), np.uint8)
        self.handler = handler
        self.row_conn = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.G[G_LIVE])

    @property
    def records(self) -> int:
        return int(self.G[G_SERIAL] - self.G[G_LIVE])

    @property
    def evicted(self) -> int:
        return int(self.G[G_EVICTED])

    @property
    def last_serial(self) -> int:
        return int(self.G[G_LAST_SERIAL])

    def feed(self, batch: np.ndarray, aux: np.ndarray) -> np.ndarray:
        """Process `batch` (with its aux flags); returns each row's connection serial (-1: none)."""
        s, G = self.s, self.G
        if self.row_conn.shape[0] < batch.shape[0]:
            self.row_conn = np.zeros(batch.shape[0], np.int64)
        i = 0
        n = batch.shape[0]
        while True:
            G[G_EV_N] = 0
            G[G_REC_N] = 0
            G[G_CALL] += 1
            T = (s.h_when, s.h_seq, s.h_conn, s.h_serial, s.h_kind, s.h_gen)
            status, i = process_batch(s.C, s.E, s.BL, s.HI, s.EC, s.hidx, s.free, T, self.EV, self.REC, self.RH,
                                      G, self.GF, self.CFG, PORTS, ICMP4, ICMP6, batch, aux, self.row_conn, i)
            if G[G_EV_N]:
                self.handler(self.EV[: G[G_EV_N]], self.REC[: G[G_REC_N]], self.RH)
            if status == ST_DONE:
                return self.row_conn[:n]
            if status == ST_GROW:
                self._grow(int(G[G_GROW]))
            elif G[G_EV_N] == 0 and i < n:
                self._grow_output()

    def flush(self, now: float) -> None:
        """End of input: every live connection ends, oldest first (FlowTable.flush)."""
        s, G = self.s, self.G
        if now > self.GF[GF_NOW]:
            self.GF[GF_NOW] = now
        live = np.flatnonzero(s.C["live"])
        order = live[np.lexsort((s.C["touch"][live], s.C["start_ts"][live]))]
        step = self.REC.shape[0]
        while self.EV.shape[0] < 2 * step:
            self._grow_output()
        for k in range(0, len(order), step):
            G[G_EV_N] = 0
            G[G_REC_N] = 0
            flush_conns(s.C, s.E, s.HI, s.hidx, s.free, self.EV, self.REC, self.RH, G, order[k : k + step])
            if G[G_EV_N]:
                self.handler(self.EV[: G[G_EV_N]], self.REC[: G[G_REC_N]], self.RH)
        G[G_HEAP_N] = 0

    # -- growth (from Python, between kernel calls) ----------------------------------------
    def _grow_output(self) -> None:
        self.EV = np.zeros(2 * self.EV.shape[0], EV_DTYPE)
        self.REC = np.zeros(2 * self.REC.shape[0], REC_DTYPE)
        self.RH = np.zeros((self.REC.shape[0], self.s.HI.shape[1]), np.uint8)

    def _grow(self, what: int) -> None:
        s, G = self.s, self.G
        if what & GROW_CONNS:
            old = s.C.shape[0]
            new = 2 * old
            s.C = _grown(s.C, new)
            s.E = _grown(s.E, 2 * new)
            s.EC = _grown(s.EC, 2 * new)
            s.BL = _grown(s.BL, 2 * new)
            s.HI = _grown(s.HI, new)
            nfree = int(G[G_NFREE])
            free = np.zeros(new, np.int64)
            free[:nfree] = s.free[:nfree]
            added = np.arange(new - 1, old - 1, -1, dtype=np.int64)
            free[nfree : nfree + len(added)] = added
            s.free = free
            G[G_NFREE] = nfree + len(added)
        if what & GROW_HASH:
            s.hidx = np.full(2 * s.hidx.shape[0], -1, np.int64)
            rehash(s.C, s.hidx)
        if what & GROW_HEAP:
            for name in ("h_when", "h_seq", "h_conn", "h_serial", "h_kind", "h_gen"):
                setattr(s, name, _grown(getattr(s, name), 2 * getattr(s, name).shape[0]))
        if what & GROW_HIST:
            width = 2 * s.HI.shape[1]
            hi = np.zeros((s.HI.shape[0], width), np.uint8)
            hi[:, : s.HI.shape[1]] = s.HI
            s.HI = hi
            self.RH = np.zeros((self.REC.shape[0], width), np.uint8)
        if what & GROW_BLOCKS:
            width = 2 * s.BL.shape[1]
            bl = np.zeros((s.BL.shape[0], width, 2), np.uint64)
            bl[:, : s.BL.shape[1]] = s.BL
            s.BL = bl


def _grown(arr: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, *arr.shape[1:]), arr.dtype)
    out[: arr.shape[0]] = arr
    return out
