"""Kerberos: one whole KRB message (krb on UDP, krb_tcp on TCP).

Zeek's KRB analyzers (src/analyzer/protocol/krb/krb-analyzer.pac) call ProtocolConfirmation
in every message handler once binpac has parsed the message: proc_krb_kdc_req (AS-REQ,
TGS-REQ), proc_krb_kdc_rep (AS-REP, TGS-REP), proc_krb_ap_req/ap_rep, proc_krb_error_msg,
proc_krb_safe_msg, proc_krb_priv_msg, proc_krb_cred_msg. A KRB_PDU (krb-protocol.pac) is
an ASN.1 APPLICATION-tagged element whose tag names the message type; an unknown tag is
parsed as opaque bytes and confirms nothing. Over TCP (krb_TCP.pac, KRB_PDU_TCP) each
message is preceded by its 4-byte length (RFC 4120 7.2.2). Registered on 88/udp and 88/tcp
(krb/main.zeek). krb/dpd.sig's UDP signature (`\\x6c...\\x30...\\xa1\\x03\\x02\\x05`) is not
modelled: the recogniser runs on the registered ports only.

Here: the message's application tag is a known type, its content is a SEQUENCE, and the
whole message is present (a confirm-only check; Zeek parses the fields as well).
"""

from __future__ import annotations

from pcapexfil.packet import PROTO_TCP, PROTO_UDP
from pcapexfil.services import ber
from pcapexfil.services.base import Recogniser, parsed_in_either_direction

# RFC 4120 5.10: APPLICATION tags of the message types krb-protocol.pac parses.
AS_REQ, AS_REP, TGS_REQ, TGS_REP, AP_REQ, AP_REP = 10, 11, 12, 13, 14, 15
KRB_SAFE, KRB_PRIV, KRB_CRED, KRB_ERROR = 20, 21, 22, 30
MESSAGE_TYPES = frozenset({AS_REQ, AS_REP, TGS_REQ, TGS_REP, AP_REQ, AP_REP, KRB_SAFE, KRB_PRIV, KRB_CRED, KRB_ERROR})
APPLICATION_CONSTRUCTED = ber.APPLICATION | 0x20
TCP_LENGTH_BYTES = 4


def message(data: bytes, pos: int = 0) -> bool | None:
    """A whole KRB message at `pos`: True, False (not one), None (incomplete)."""
    try:
        outer = ber.header(data, pos)
        if outer is None:
            return None
        if outer.tag & ~ber.TAG_NUMBER_MASK != APPLICATION_CONSTRUCTED or outer.tag & ber.TAG_NUMBER_MASK not in MESSAGE_TYPES:
            return False
        inner = ber.header(data, outer.start)
    except ber.BerError:
        return False
    if inner is None:
        return None
    if inner.tag != ber.SEQUENCE or inner.end > outer.end:
        return False
    return True if len(data) >= outer.end else None


def _tcp(data: bytes) -> bool | None:
    if len(data) < TCP_LENGTH_BYTES:
        return None
    ok = message(data, TCP_LENGTH_BYTES)
    if not ok:
        return ok
    outer = ber.header(data, TCP_LENGTH_BYTES)
    size = int.from_bytes(data[:TCP_LENGTH_BYTES], "big")
    # The message must fit its record (KRB_PDU_TCP's &length=size+4).
    return outer is not None and outer.end - TCP_LENGTH_BYTES <= size


check_udp = parsed_in_either_direction(message)
check_tcp = parsed_in_either_direction(_tcp)
RECOGNISER = Recogniser("krb", PROTO_UDP, check_udp)
# skips_partial: krb/KRB_TCP.cc KRB_Analyzer::DeliverStream.
RECOGNISER_TCP = Recogniser("krb_tcp", PROTO_TCP, check_tcp, skips_partial=True)
