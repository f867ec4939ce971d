"""RDP: the client's MCS Connect-Initial carrying its core data.

Zeek's RDP analyzer (src/analyzer/protocol/rdp/rdp-analyzer.pac) calls
ProtocolConfirmation in proc_rdp_client_core_data, proc_rdp_gcc_server_create_response and
proc_rdp_server_security: only once the GCC conference data (MS-RDPBCGR 2.2.1.3 / 2.2.1.4)
parsed. The X.224 Connection Request/Confirm before it (TPKT `\\x03\\x00`, rdp-protocol.pac)
confirm nothing. When the negotiation selects TLS or CredSSP the GCC data travels inside
TLS and the RDP analyzer never sees it (RDP.cc hands the stream to the SSL analyzer).
Registered on 3389/tcp (rdp/main.zeek); rdp/dpd.sig attaches it on any port for a client
`Cookie: mstshash=` (or a `Duca` block naming a virtual channel) answered by an X.224
Connection Confirm (`.{5}\\xd0`) or `McDn`; modelled.

Here: after the client's X.224 Connection Request TPKT, a complete TPKT carrying X.224
data and an MCS Connect-Initial (BER tag `\\x7f\\x65`) that holds a CS_CORE block.
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import (
    Anchors,
    Marks,
    PatternPair,
    Recogniser,
    Verdict,
    reverse_signatures,
    signature_match,
)

TPKT = b"\x03\x00"
TPKT_HEADER_LEN = 4
X224_CONNECTION_REQUEST = 0xE0  # upper nibble of the X.224 TPDU code
X224_DATA = b"\x02\xf0\x80"
MCS_CONNECT_INITIAL = b"\x7f\x65"
CS_CORE = b"\x01\xc0"  # TS_UD_HEADER type 0xC001, little-endian

_SIG_CLIENT = re.compile(rb".*(Cookie: mstshash=|Duca.*(rdpdr|rdpsnd|drdynvc|cliprdr))", re.DOTALL)
_SIG_SERVER = re.compile(rb"(.{5}\xd0|.*McDn)", re.DOTALL)


def _tpkts(data: bytes) -> list[bytes] | None:
    """The complete TPKTs at the start of `data`; None when it is not TPKT framing."""
    out, pos = [], 0
    while pos + TPKT_HEADER_LEN <= len(data):
        if data[pos : pos + 2] != TPKT:
            return None
        end = pos + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end <= pos + TPKT_HEADER_LEN or end > len(data):
            break
        out.append(data[pos + TPKT_HEADER_LEN : end])
        pos = end
    return out


def check(orig: bytes, resp: bytes) -> Verdict:
    tpkts = _tpkts(orig)
    if tpkts is None:
        return Verdict.REJECT
    if not tpkts:
        return Verdict.MORE
    first = tpkts[0]
    if len(first) < 2 or first[1] & 0xF0 != X224_CONNECTION_REQUEST:
        return Verdict.REJECT
    if len(tpkts) < 2:
        return Verdict.MORE
    second = tpkts[1]
    ok = second.startswith(X224_DATA + MCS_CONNECT_INITIAL) and CS_CORE in second
    return Verdict.CONFIRM if ok else Verdict.REJECT


# The server's X.224 Connection Confirm (rdp-protocol.pac, Connect_Confirm): TPKT header,
# COTP length and PDU code, references and flags, then, when the COTP length leaves room,
# an RDP_NEG_RSP (type 2) whose selected_protocol follows its flags and length.
X224_CONNECTION_CONFIRM = 0xD0
COTP_LEN_AT, PDU_AT, NEG_TYPE_AT, SELECTED_AT = 4, 5, 11, 15
COTP_WITHOUT_NEGOTIATION = 6  # the COTP length when nothing follows the flags
RDP_NEG_RSP = 0x02
CONFIRM_WITH_NEGOTIATION_LEN = SELECTED_AT + 4


def starttls(orig: bytes, resp: bytes) -> bool | None:
    """Whether RDP_Analyzer::DeliverStream hands the rest of the stream to a new PIA (where
    ssl/dpd.sig attaches SSL): the server's Connection Confirm carries an RDP_NEG_RSP whose
    selected_protocol is above 0 (TLS, CredSSP; rdp-protocol.pac go_encrypted), once its
    TPKT is whole. False for a Confirm without one or choosing standard RDP security (its
    `go_encrypted(0)` later forwards nothing), or for a first server TPKT that is no Confirm."""
    if len(resp) < TPKT_HEADER_LEN:
        return None
    tpkt_end = int.from_bytes(resp[2:4], "big")
    if len(resp) < max(tpkt_end, PDU_AT + 1):
        return None
    if resp[PDU_AT] != X224_CONNECTION_CONFIRM or resp[COTP_LEN_AT] == COTP_WITHOUT_NEGOTIATION:
        return False
    if tpkt_end < CONFIRM_WITH_NEGOTIATION_LEN or len(resp) < CONFIRM_WITH_NEGOTIATION_LEN:
        return False  # binpac cannot read the record its COTP length announces
    if resp[NEG_TYPE_AT] != RDP_NEG_RSP:
        return False
    return int.from_bytes(resp[SELECTED_AT:CONFIRM_WITH_NEGOTIATION_LEN], "little") > 0


def _signature_pairs(orig: bytes, resp: bytes) -> tuple[PatternPair, ...]:
    return ((signature_match(_SIG_CLIENT, orig) if orig else None,
             signature_match(_SIG_SERVER, resp) if resp else None),)


signature = reverse_signatures(_signature_pairs)
# skips_partial: rdp/RDP.cc RDP_Analyzer::DeliverStream.
RECOGNISER = Recogniser("rdp", PROTO_TCP, check, signature=signature, signature_pairs=_signature_pairs,
                        # _SIG_CLIENT's two branches
                        anchors=Anchors(orig=Marks(contains=(b"Cookie: mstshash=", b"Duca"))), skips_partial=True)
