"""XMPP: Zeek's XMPP analyzer confirms on the client's `stream:stream`; its STARTTLS hands the
stream to SSL.

src/analyzer/protocol/xmpp/xmpp-protocol.pac reads `<NAME REST>` tokens (NAME:
`/?[?:[:alnum:]]+`, REST: `[^<>]*`); xmpp-analyzer.pac, proc_xmpp_token: a client
`starttls` token, then a server `proceed` token calls XMPP_Analyzer::StartTLS; a
`success`, `message`, `db:result`, `db:verify` or `presence` token first means the
handshake is past STARTTLS (SetSkip). Registered on 5222/tcp and 5269/tcp (xmpp/main.zeek),
no dpd.sig. proc_xmpp_token calls AnalyzerConfirmation on a client `stream:stream` token
(read before a token that makes it skip). XMPP_Analyzer::DeliverStream reads nothing of a
partial connection.
"""

from __future__ import annotations

import re

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.base import Recogniser, Verdict

_TOKEN = re.compile(rb"<(/?[?:A-Za-z0-9]+)[^<>]*>")
_STARTTLS, _PROCEED, _STREAM = b"starttls", b"proceed", b"stream:stream"
_PAST_STARTTLS = frozenset((b"success", b"message", b"db:result", b"db:verify", b"presence"))


def starttls(orig: bytes, resp: bytes) -> bool | None:
    """Whether StartTLS ran on these first bytes; False once the analyzer skips."""
    requested = False
    for m in _TOKEN.finditer(orig):
        if m.group(1) in _PAST_STARTTLS:
            return False
        requested = requested or m.group(1) == _STARTTLS
    for m in _TOKEN.finditer(resp):
        if m.group(1) in _PAST_STARTTLS:
            return False
        if requested and m.group(1) == _PROCEED:
            return True
    return None


def check(orig: bytes, resp: bytes) -> Verdict:
    """proc_xmpp_token's AnalyzerConfirmation: a client `stream:stream` token."""
    for m in _TOKEN.finditer(orig):
        if m.group(1) in _PAST_STARTTLS:
            return Verdict.MORE  # skipping: no token is read any more
        if m.group(1) == _STREAM:
            return Verdict.CONFIRM
    return Verdict.MORE


RECOGNISER = Recogniser("xmpp", PROTO_TCP, check, skips_partial=True)
