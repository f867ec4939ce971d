"""Zeek's TCP state machine over the table's arrays: a line-by-line port of flow.tcp's
TCPAdapter (itself a port of Zeek's TCPSessionAdapter / TCP_Endpoint bookkeeping), the
same names and the same order of effects, so the two read side by side.
"""

from __future__ import annotations

import numpy as np

from pcapexfil.fast.endpoint import (
    ep_size,
    init_seqs,
    orig_phys,
    relative,
    seq_delta,
    set_state,
    update_ack_seq,
    update_last_seq_raw,
)
from pcapexfil.fast.events import (
    W_ACK_UNDERFLOW,
    W_SEQ_UNDERFLOW,
    W_SYN_INSIDE,
    W_SYN_SEQ_JUMP,
    W_TRUNCATED,
    conn_weird,
)
from pcapexfil.fast.history import (
    L_ACK,
    L_DATA,
    L_FIN,
    L_FIN_RST,
    L_FLIPPED,
    L_GAP,
    L_MULTI_FLAG,
    L_RETRANSMIT,
    L_RST,
    L_SYN,
    L_SYNACK,
    L_ZERO_WINDOW,
    ep_add_history,
    ep_check_history,
    ep_scaled,
)
from pcapexfil.fast.layout import (
    CFG_ATTEMPT,
    CFG_CLOSE,
    CFG_LINGER,
    CFG_SESSION,
    CNT_RXMT,
    CNT_WIN0,
    M32,
    U64_0,
    U64_1,
)
from pcapexfil.fast.reassembly import data_pending, data_sent, trim
from pcapexfil.fast.roles import ORIG_BIT, RESP_BIT, flip_roles
from pcapexfil.fast.timers import T_ATTEMPT, T_DELETE, T_EXPIRE, schedule
from pcapexfil.flow.tcp import (
    CLOSED,
    ESTABLISHED,
    HIST_ACK,
    HIST_DATA,
    HIST_FIN,
    HIST_FIN_RST,
    HIST_MULTI_FLAG,
    HIST_RST,
    HIST_SYN,
    INACTIVE,
    PARTIAL,
    RESET,
    SYN_ACK_SENT,
    SYN_SENT,
    TOO_LARGE_SEQ_DELTA,
)
from pcapexfil.jit import njit
from pcapexfil.packet import TH_ACK, TH_FIN, TH_RST, TH_SYN

# conn_state codes, in the order of CONN_STATES.
CONN_STATES = ("OTH", "S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR")
CS_OTH, CS_S0, CS_S1, CS_SF, CS_REJ, CS_S2, CS_S3, CS_RSTO, CS_RSTR, CS_RSTOS0, CS_RSTRH, CS_SH, CS_SHR = range(13)

# expire_timer's verdicts.
EXPIRE_IDLE, EXPIRE_KEEP, EXPIRE_REMOVE = -1, 0, 1


@njit(cache=True, _nrt=False)
def is_closed(E, c):
    return E[2 * c].did_close or E[2 * c + 1].did_close


@njit(cache=True, _nrt=False)
def is_reuse(F, c, flags, seq):
    """A SYN that starts a new connection on this 5-tuple (TCPAdapter.is_reuse)."""
    C, E = F.conns, F.endpoints
    if not flags & TH_SYN:
        return False
    o = orig_phys(C, c)
    conn_orig = o
    if flags & TH_ACK:
        if E[o].state != INACTIVE:
            return False
        conn_orig = o ^ 1
    if not is_closed(E, c):
        if seq == E[conn_orig].start_seq:
            return False
        if (
            not flags & TH_ACK
            and E[conn_orig].state == SYN_ACK_SENT
            and E[o ^ 1].state == INACTIVE
            and seq == E[o ^ 1].start_seq
        ):
            return False
    return True


@njit(cache=True, _nrt=False)
def _init_endpoint(F, O, S, e, syn, seq, seq_end):
    E = F.endpoints
    st = E[e].state
    if st == INACTIVE:
        if syn:
            E[e].start_seq = seq
            E[e].ack_seq = seq
            E[e].last_seq = seq_end
        else:
            E[e].start_seq = (seq - 1) & M32
            E[e].ack_seq = (seq - 1) & M32
            E[e].last_seq = seq
    elif st == SYN_SENT or st == SYN_ACK_SENT:
        if syn and seq != E[e].start_seq:
            conn_weird(F, O, S, e // 2, W_SYN_SEQ_JUMP)
            init_seqs(E, e, seq, seq_end)
    elif st == ESTABLISHED or st == PARTIAL:
        if syn:
            if ep_size(E, e) > U64_0:
                conn_weird(F, O, S, e // 2, W_SYN_INSIDE)
            init_seqs(E, e, seq, seq_end)
    elif st == RESET:  # noqa: SIM102 (mirrors the reference)
        if syn and E[e].prev_state == INACTIVE:
            init_seqs(E, e, seq, seq_end)


@njit(cache=True, _nrt=False)
def _update_history(F, e, flags, rel_seq, length):
    E = F.endpoints
    syn = flags & TH_SYN
    fin = flags & TH_FIN
    rst = flags & TH_RST
    bits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
    if bits > 1:
        if fin and rst:
            ep_check_history(F, e, HIST_FIN_RST, L_FIN_RST)
        else:
            ep_check_history(F, e, HIST_MULTI_FLAG, L_MULTI_FLAG)
    elif bits == 1:
        if syn:
            code = L_SYNACK if flags & TH_ACK else L_SYN
            if ep_check_history(F, e, HIST_SYN, code) and rel_seq != E[e].hist_last_syn:
                ep_add_history(F, e, code)
            E[e].hist_last_syn = rel_seq
        if fin:
            end = rel_seq + np.uint64(length)
            if ep_check_history(F, e, HIST_FIN, L_FIN) and end != E[e].hist_last_fin:
                ep_add_history(F, e, L_FIN)
            E[e].hist_last_fin = end
        if rst:
            if ep_check_history(F, e, HIST_RST, L_RST) and rel_seq != E[e].hist_last_rst:
                ep_add_history(F, e, L_RST)
            E[e].hist_last_rst = rel_seq
    elif length:
        ep_check_history(F, e, HIST_DATA, L_DATA)
    elif flags & TH_ACK:
        ep_check_history(F, e, HIST_ACK, L_ACK)


@njit(cache=True, _nrt=False)
def _update_last_seq(F, e, seq_end, flags, length):
    E = F.endpoints
    delta = seq_delta(seq_end, E[e].last_seq)
    if flags & (TH_SYN | TH_RST) and (delta > TOO_LARGE_SEQ_DELTA or delta < -TOO_LARGE_SEQ_DELTA):
        pass
    elif flags & TH_FIN and E[e].last_seq == ((E[e].start_seq + 1) & M32):
        update_last_seq_raw(E, e, seq_end)
    elif E[e].state == RESET:
        pass
    elif delta > 0:
        update_last_seq_raw(E, e, seq_end)
    elif length > 0:
        ep_scaled(F, e, CNT_RXMT, L_RETRANSMIT)


@njit(cache=True, _nrt=False)
def ack_received(F, T, S, P, e, seq):
    E = F.endpoints
    if E[e].fin_cnt > 0 and seq >= E[e].fin_seq:
        if E[e].fin_seq == U64_0:
            return  # reference: -1 <= trim_seq
        seq = E[e].fin_seq - U64_1
    if seq <= E[e].trim_seq:
        return
    trim(F, e, seq)
    check_eof(F, T, S, P, e)


@njit(cache=True, _nrt=False)
def check_eof(F, T, S, P, e):
    E = F.endpoints
    if (
        not E[e].did_eof
        and (E[e].fin_cnt > 0 or E[e].state == CLOSED or E[e].state == RESET)
        and not data_pending(E, e)
    ):
        E[e].did_eof = True
        c = e // 2
        if F.conns[c].close_deferred:
            connection_closed(F, T, S, P, e)
            F.conns[c].close_deferred = False


@njit(cache=True, _nrt=False)
def connection_closed(F, T, S, P, e):
    C, E = F.conns, F.endpoints
    c = e // 2
    p = e ^ 1
    if data_pending(E, e):
        C[c].close_deferred = True
        return
    C[c].close_deferred = False
    if E[e].did_close:
        return
    E[e].did_close = True
    if E[e].state == RESET or E[p].did_close or E[p].state == INACTIVE:
        C[c].is_active = False
        C[c].timer_gen += 1
        schedule(T, S, C, C[c].last_ts + P.timeouts[CFG_CLOSE], c, T_DELETE)
    elif E[e].prev_state != INACTIVE:
        schedule(T, S, C, C[c].last_ts + P.timeouts[CFG_SESSION], c, T_EXPIRE)


@njit(cache=True, _nrt=False)
def _state_machine(F, T, S, P, e, ts, seq, length, is_orig, flags):
    C, E = F.conns, F.endpoints
    syn = flags & TH_SYN
    fin = flags & TH_FIN
    rst = flags & TH_RST
    ackf = flags & TH_ACK
    c = e // 2
    p = e ^ 1
    do_close = False
    st = E[e].state
    if st == INACTIVE:
        if syn:
            if is_orig:
                set_state(F, P, e, SYN_ACK_SENT if ackf else SYN_SENT)
                schedule(T, S, C, ts + P.timeouts[CFG_ATTEMPT], c, T_ATTEMPT)
            else:
                if not ackf and E[p].state == SYN_ACK_SENT and seq == E[e].start_seq:
                    C[c].is_partial = False
                    flip_roles(F, c, False)
                    set_state(F, P, p, ESTABLISHED)
                    C[c].first_packet_seen = C[c].first_packet_seen | (ORIG_BIT if E[e].is_orig else RESP_BIT)
                if E[p].state == SYN_SENT:
                    set_state(F, P, p, ESTABLISHED)
                set_state(F, P, e, ESTABLISHED)
                if E[p].state != PARTIAL:
                    C[c].established = True  # TCPAdapter._established, applied by process_batch
        if fin:
            set_state(F, P, e, CLOSED)
            do_close = True
        if rst:
            set_state(F, P, e, RESET)
            do_close = True
        if E[e].state == INACTIVE:
            if not is_orig and length == 0 and E[orig_phys(C, c)].state == SYN_SENT:
                pass
            elif ackf and E[p].state == ESTABLISHED:
                set_state(F, P, e, ESTABLISHED)
                C[c].is_partial = False
                C[c].first_packet_seen = C[c].first_packet_seen | (ORIG_BIT if E[e].is_orig else RESP_BIT)
            else:
                set_state(F, P, e, PARTIAL)
    elif st == SYN_SENT or st == SYN_ACK_SENT:
        if fin:
            set_state(F, P, e, CLOSED)
            do_close = True
        if rst:
            set_state(F, P, e, RESET)
            C[c].is_active = False
            do_close = True
    elif st == ESTABLISHED or st == PARTIAL:
        if syn and st == PARTIAL and E[p].state == INACTIVE and not ackf:
            set_state(F, P, e, SYN_SENT)
        if fin and not rst:
            set_state(F, P, e, CLOSED)
            if E[p].state == RESET and E[p].prev_state == CLOSED:
                set_state(F, P, p, CLOSED)
            do_close = True
        if rst:
            set_state(F, P, e, RESET)
            do_close = True
            if E[p].state != RESET or E[p].prev_state != ESTABLISHED:
                C[c].is_active = False
    elif st == CLOSED:  # noqa: SIM102 (mirrors the reference)
        if rst and E[p].state != CLOSED:
            set_state(F, P, e, RESET)
            if not E[e].did_close:
                do_close = True
    return do_close


@njit(cache=True, _nrt=False)
def tcp_process(F, T, O, S, P, c, is_orig, ts, flags, seq, ack, window, length, caplen):
    """TCPAdapter.process."""
    C, E = F.conns, F.endpoints
    o = orig_phys(C, c)
    e = o if is_orig else o ^ 1
    p = e ^ 1
    syn = flags & TH_SYN
    fin = flags & TH_FIN
    rst = flags & TH_RST
    ackf = flags & TH_ACK

    fps = C[c].first_packet_seen
    if E[e].is_orig:
        if not fps & ORIG_BIT:
            C[c].is_partial = (not syn) or ackf != 0
    elif not fps & RESP_BIT and not C[c].is_partial:
        C[c].is_partial = not syn

    seg_len = length + (1 if syn else 0) + (1 if fin else 0)
    if rst:
        seg_len -= length
    seq_end = (seq + seg_len) & M32
    _init_endpoint(F, O, S, e, syn, seq, seq_end)

    rel_seq, seq_underflow = relative(E, e, seq, E[e].last_seq, E[e].seq_wraps)
    if seq_underflow and not rst:
        conn_weird(F, O, S, c, W_SEQ_UNDERFLOW)

    _update_history(F, e, flags, rel_seq, length)
    if window == 0 and not rst and E[p].state != CLOSED and E[e].state != RESET:
        ep_scaled(F, e, CNT_WIN0, L_ZERO_WINDOW)

    if not E[o].did_close or not E[o ^ 1].did_close:
        C[c].last_ts = ts

    if fin:
        E[e].fin_cnt += 1
        E[e].fin_seq = rel_seq + np.uint64(seg_len)

    rel_ack = U64_0
    if ackf:
        if E[p].state == INACTIVE:
            rel_ack = U64_1
            start = (ack - 1) & M32
            E[p].start_seq = start
            E[p].ack_seq = start
            E[p].last_seq = start
        else:
            rel_ack, ack_underflow = relative(E, p, ack, E[p].ack_seq, E[p].ack_wraps)
            if ack_underflow:
                rel_ack = U64_0
                conn_weird(F, O, S, c, W_ACK_UNDERFLOW)
            elif not rst:
                delta_ack = seq_delta(ack, E[p].ack_seq)
                if not (ack == 0 and delta_ack > TOO_LARGE_SEQ_DELTA) and delta_ack > 0:
                    update_ack_seq(E, p, ack)

    _update_last_seq(F, e, seq_end, flags, length)

    do_close = _state_machine(F, T, S, P, e, ts, seq, length, is_orig, flags)

    if ackf:
        ack_received(F, T, S, P, p, rel_ack)

    C[c].first_packet_seen = C[c].first_packet_seen | (ORIG_BIT if is_orig else RESP_BIT)

    rel_data_seq = rel_seq + U64_1 if syn else rel_seq
    if length > 0 and not rst and not seq_underflow and caplen >= length:
        data_sent(F, O, S, e, rel_data_seq, length)
    elif length > 0 and not rst and not seq_underflow:
        conn_weird(F, O, S, c, W_TRUNCATED)
    check_eof(F, T, S, P, e)

    if do_close:
        connection_closed(F, T, S, P, e)


@njit(cache=True, _nrt=False)
def attempt_timer(F, c):
    """The attempt timer removes a connection whose handshake got no answer."""
    C, E = F.conns, F.endpoints
    o = orig_phys(C, c)
    so = E[o].state
    return C[c].is_active and (so == SYN_SENT or so == SYN_ACK_SENT) and E[o ^ 1].state == INACTIVE


@njit(cache=True, _nrt=False)
def expire_timer(F, P, c, now):
    """The session expiry timer's verdict: EXPIRE_REMOVE, EXPIRE_KEEP (re-arm) or
    EXPIRE_IDLE (inactive, nothing to do)."""
    C, E = F.conns, F.endpoints
    if not C[c].is_active:
        return EXPIRE_IDLE
    o = orig_phys(C, c)
    r = o ^ 1
    if C[c].last_ts + P.timeouts[CFG_LINGER] < now:
        if E[o].did_close or E[r].did_close:  # noqa: SIM102 (mirrors the reference)
            if (
                (E[o].did_close and E[r].did_close)
                or E[o].state == RESET
                or E[r].state == RESET
                or E[o].state == INACTIVE
                or E[r].state == INACTIVE
            ):
                C[c].is_active = False
                return EXPIRE_REMOVE
        if E[r].state == INACTIVE and E[o].state == INACTIVE:
            return EXPIRE_REMOVE
    return EXPIRE_KEEP


@njit(cache=True, _nrt=False)
def _is_rstos0(F, c):
    """Zeek's /^?S[^HAFGIQ]*R.*/ against the whole history."""
    HI = F.history
    n = F.conns[c].hist_len
    k = 0
    if n > 0 and HI[c, 0] == L_FLIPPED:
        k = 1
    if k >= n or HI[c, k] != L_SYN:
        return False
    for j in range(k + 1, n):
        ch = HI[c, j]
        if ch == L_RST:
            return True
        if ch == L_SYNACK or ch == L_ACK or ch == L_FIN or ch == L_GAP or ch == L_FIN_RST or ch == L_MULTI_FLAG:
            return False
    return False


@njit(cache=True, _nrt=False)
def tcp_conn_state(F, c):
    C, E = F.conns, F.endpoints
    o = orig_phys(C, c)
    r = o ^ 1
    os_ = E[o].state
    rs = E[r].state
    o_inactive = os_ == INACTIVE or os_ == PARTIAL
    r_inactive = rs == INACTIVE or rs == PARTIAL
    if rs == RESET:
        if os_ == SYN_SENT or os_ == SYN_ACK_SENT or (
            os_ == RESET and ep_size(E, o) == U64_0 and ep_size(E, r) == U64_0
        ):
            return CS_REJ
        return CS_RSTRH if o_inactive else CS_RSTR
    if os_ == RESET:
        if r_inactive:
            return CS_RSTOS0 if _is_rstos0(F, c) else CS_OTH
        return CS_RSTO
    if rs == CLOSED and os_ == CLOSED:
        return CS_SF
    if os_ == CLOSED:
        return CS_SH if r_inactive else CS_S2
    if rs == CLOSED:
        return CS_SHR if o_inactive else CS_S3
    if os_ == SYN_SENT and rs == INACTIVE:
        return CS_S0
    if os_ == ESTABLISHED and rs == ESTABLISHED:
        return CS_S1
    return CS_OTH
