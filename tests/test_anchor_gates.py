"""The anchors of the dpd.sig signatures (services.base.Anchors) and the gates built on them:
each declared anchor holds wherever its signature (or check, or hand-over) confirms, a
declared signature's rejection is final, and the services analyzer and TLS's watch, which
skip the chunks whose windows hold no anchor, write the records they write when they ask
on every chunk."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from record_sink import RecordCollector
from test_service_recognisers import IRC_CLIENT, IRC_WELCOME, dcerpc_bind, tcp_exchange

from helpers_pcap import write_pcap
from pcapexfil.identifiers import tls
from pcapexfil.identifiers.stream import PiaBuffer
from pcapexfil.packet import PROTO_TCP
from pcapexfil.pipeline import RunOptions, run
from pcapexfil.record import ConnRecord
from pcapexfil.services import RECOGNISERS, candidates
from pcapexfil.services.base import AnchorGate, Anchors, Verdict

CLIENT_HELLO = bytes.fromhex("16030100" "2f" "0100002b" "0303") + bytes(32) + bytes.fromhex("000002002f0100")
SERVER_HELLO = bytes.fromhex("16030300" "2a" "02000026" "0303") + bytes(32) + bytes.fromhex("00002f00")

# Pieces of what the anchored signatures, checks and hand-overs match, and of traffic that
# is not theirs, for windows that confirm, fail or stay undecided.
PIECES = [
    b"NICK alice\r\n", b"USER alice 0 * :Alice\r\n", b"  nick bob\r\n", b"SERVER hub 1 :Hub\r\n",
    b":irc.example.net 001 alice :Welcome\r\n", b"670 :STARTTLS\r\n", b"Cookie: mstshash=bob\r\n", b"Duca",
    b"rdpdr", b"McDn", b"\x03\x00\x00\x13\x0e\xd0", b"\x30\x0c\x02\x01\x01\x60\x07\x02\x01\x03\x04\x00\x80\x00",
    b"\x30", b"\x00\x00\x00\x08\x04\xd2\x16\x2f", b"S", b"\x00\x00\x00\x10\x00\x03\x00\x00user\x00bob\x00\x00",
    b"R\x00\x00\x00\x08", b"\x04\x01\x00\x50\x0a\x00\x00\x01\x00", b"\x00\x5a", b"\x05\x01\x00", b"\x05\x00",
    b"SSH-2.0-x\r\n", b"ssh-1.99-y\n", b"\x00\x00\x00\x2f\xffSMB", b"\x00\x00\x00\x2f\xfeSMB", dcerpc_bind()[:24],
    b"+OK ready\r\n", b"STLS\r\n", b"CAPA\r\n", b"CONNECT example.net:443 HTTP/1.1\r\n\r\n",
    b"HTTP/1.1 200 Connection established\r\n\r\n", CLIENT_HELLO, SERVER_HELLO, b"\x15\x03\x01\x00\x02\x02\x28",
    b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"User-Agent: x\r\n", b"\r\n", b"\n", b" ", b"\t", b"x" * 40,
    b"220 mx ESMTP\r\n", b"220-", b"22", b"EHLO client\r\n", b"\x0bhelo", b"250 STARTTLS\r\n", b"STARTTLS\r\n",
    b"220 go ahead\r\n", b"USER anonymous\r\n", b"331 password\r\n", b"230 in\r\n", b"120 soon\r\n", b"AUTH TLS\r\n",
    b"234 AUTH TLS OK\r\n", b"connect example.net:443 HTTP/1.1\r\n\r\n", b"Con\t", b"\x05\x01\x00\x03\x04host\x00\x50",
    b"\x05\x00\x00\x01\x0a\x00\x00\x02\x00\x50",
]
_window = st.lists(st.sampled_from(PIECES), max_size=4).map(b"".join)


def _held(anchors: Anchors, orig: bytes, resp: bytes) -> bool:
    pia = PiaBuffer()
    pia.orig, pia.resp, pia.size = orig, resp, len(orig) + len(resp)
    return not AnchorGate([anchors]).clean(pia)


def _anchored_recognisers() -> list:
    return [r for r in RECOGNISERS if r.transport == PROTO_TCP and r.anchors is not None]


def test_the_candidates_off_their_ports_declare_anchors() -> None:
    """Every TCP recogniser Zeek tries by signature (or on any port) has anchors, so the
    services analyzer skips chunks on a port like 80 (and a new one without them would
    switch the skipping off there, not make it wrong)."""
    on_80 = candidates(PROTO_TCP, 80)
    assert on_80 and all(r.anchors is not None for r, _ in on_80)
    assert {r.name for r in _anchored_recognisers()} >= {"ssh", "smb", "dce_rpc", "irc", "rdp", "socks", "postgresql",
                                                           "ldap_tcp", "smtp", "ftp"}


@settings(max_examples=3000, deadline=None)
@given(recogniser=st.sampled_from(_anchored_recognisers()), orig=_window, resp=_window,
       more=_window, grows_orig=st.booleans())
@example(recogniser=next(r for r in RECOGNISERS if r.name == "irc"), orig=IRC_CLIENT, resp=IRC_WELCOME, more=b"",
         grows_orig=True)
@example(recogniser=next(r for r in RECOGNISERS if r.name == "rdp"), orig=b"Ducardpdr", resp=b"McDn", more=b"",
         grows_orig=True)
@example(recogniser=next(r for r in RECOGNISERS if r.name == "smtp"), orig=b"x\n\x0bhelo",
         resp=b"220 mx ESMTP\r\n", more=b"", grows_orig=True)
@example(recogniser=next(r for r in RECOGNISERS if r.name == "smtp"), orig=b"EHLO client\r\n", resp=b"22",
         more=b"x", grows_orig=False)
@example(recogniser=next(r for r in RECOGNISERS if r.name == "ftp"), orig=b"USER anonymous\r\n",
         resp=b"120 soon\r\n230 in\r\n", more=b"", grows_orig=True)
def test_a_recogniser_confirms_only_where_its_anchors_hold(recogniser, orig, resp, more, grows_orig) -> None:
    """Off its ports a recogniser confirms through its signature (any_port: its check):
    only on windows holding one of its anchors; and once rejected, more bytes of either
    direction never make it confirm (the gate may ask it later than every chunk)."""
    decide = recogniser.check if recogniser.signature is None else recogniser.signature
    verdict = decide(orig, resp)
    if verdict is Verdict.CONFIRM:
        assert _held(recogniser.anchors, orig, resp)
    if verdict is Verdict.REJECT:
        grown = decide(orig + more, resp) if grows_orig else decide(orig, resp + more)
        assert grown is not Verdict.CONFIRM


_SIGNATURES = [h for h in tls.STARTTLS if h.signature_anchors is not None and h.signature is not None]


@settings(max_examples=1000, deadline=None)
@given(window=_window)
@example(window=CLIENT_HELLO)
@example(window=b"\x15\x03\x01\x00\x02\x02\x28" + SERVER_HELLO)
def test_tls_signatures_match_only_where_anchors_hold(window) -> None:
    """dpd.sig's TLS signatures (either direction) attach SSL only where the anchor holds."""
    if tls.dpd_tls(window):
        assert _held(tls.DPD_TLS_ANCHORS, window, b"") and _held(tls.DPD_TLS_ANCHORS, b"", window)


@pytest.mark.parametrize("signed", _SIGNATURES, ids=lambda h: h.analyzer)
@settings(max_examples=1000, deadline=None)
@given(orig=_window, resp=_window, more=_window, grows_orig=st.booleans())
@example(orig=b"CAPA\r\n", resp=b"+OK ready\r\n", more=b"", grows_orig=True)
@example(orig=b"GET / HTTP/1.1\r\n", resp=b"", more=b"", grows_orig=True)
@example(orig=IRC_CLIENT, resp=IRC_WELCOME, more=b"", grows_orig=True)
def test_tls_asked_signatures_confirm_only_where_anchors_hold(signed, orig, resp, more, grows_orig) -> None:
    """The signatures TLS's watch asks itself (or awaits) confirm only where their anchors
    hold, and their rejections are final."""
    verdict = signed.signature(orig, resp)
    if verdict is Verdict.CONFIRM:
        assert _held(signed.signature_anchors, orig, resp)
    if verdict is Verdict.REJECT:
        grown = signed.signature(orig + more, resp) if grows_orig else signed.signature(orig, resp + more)
        assert grown is not Verdict.CONFIRM


def test_the_watch_on_port_80_has_a_gate() -> None:
    assert tls._watch(80, True).gate is not None and tls._watch(80, False).gate is not None


@settings(max_examples=200, deadline=None)
@given(turns=st.lists(st.tuples(st.booleans(), _window.filter(bool)), min_size=1, max_size=6),
       port=st.sampled_from([80, 7000, 443, 8080, 995]))
@example(turns=[(True, b"GET / HTTP/1.1\r\n\r\n"), (False, b"HTTP/1.1 200 OK\r\n\r\n"), (True, IRC_CLIENT),
                (False, IRC_WELCOME)], port=80)
@example(turns=[(True, b"CONNECT example.net:443 HTTP/1.1\r\n\r\n"),
                (False, b"HTTP/1.1 200 Connection established\r\n\r\n"), (True, CLIENT_HELLO),
                (False, SERVER_HELLO)], port=8080)
@example(turns=[(False, b"+OK ready\r\n"), (True, b"STLS\r\n"), (False, b"+OK go\r\n"), (True, CLIENT_HELLO)],
         port=7000)
@example(turns=[(True, b"SSH-2.0-x\r\n"), (False, b"SSH-2.0-y\r\n")], port=7000)
@example(turns=[(True, b"x" * 40), (True, CLIENT_HELLO)], port=7000)
@example(turns=[(False, b"220 mx ESMTP\r\n"), (True, b"EHLO client\r\n"), (True, b"STARTTLS\r\n"),
                (False, b"220 go ahead\r\n"), (True, CLIENT_HELLO)], port=80)
@example(turns=[(False, b"220 ready\r\n"), (True, b"USER anonymous\r\n"), (False, b"331 password\r\n"),
                (True, b"AUTH TLS\r\n"), (False, b"234 AUTH TLS OK\r\n"), (True, CLIENT_HELLO)], port=7000)
def test_skipping_unanchored_chunks_changes_no_record(tmp_path_factory, turns, port) -> None:
    """The services analyzer and TLS's watch skip chunks whose windows hold no anchor
    (`AnchorGate`). With every gate open (each signature asked on every chunk, the
    oracle) the records are the same: services, SSL hand-overs and their identifiers."""
    frames = tcp_exchange(port, turns)
    path = str(write_pcap(tmp_path_factory.mktemp("gate") / "t.pcap", frames))

    def records() -> list[ConnRecord]:
        sink = RecordCollector()
        run([path], RunOptions(out_dir=None, seed=1, local_nets=()), [sink])
        return sink.records

    gated = records()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AnchorGate, "clean", lambda self, pia: False)
        assert records() == gated
