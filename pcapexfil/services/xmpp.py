"""XMPP's STARTTLS hand-over (the analyzer itself confirms nothing pcapexfil reports).

src/analyzer/protocol/xmpp/xmpp-protocol.pac reads `<NAME REST>` tokens (NAME:
`/?[?:[:alnum:]]+`, REST: `[^<>]*`); xmpp-analyzer.pac, proc_xmpp_token: a client
`starttls` token, then a server `proceed` token calls XMPP_Analyzer::StartTLS; a
`success`, `message`, `db:result`, `db:verify` or `presence` token first means the
handshake is past STARTTLS (SetSkip). Registered on 5222/tcp and 5269/tcp (xmpp/main.zeek).
"""

from __future__ import annotations

import re

_TOKEN = re.compile(rb"<(/?[?:A-Za-z0-9]+)[^<>]*>")
_STARTTLS, _PROCEED = b"starttls", b"proceed"
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
