"""What a service recogniser is: a light, confirm-only check of a connection's first bytes.

Zeek adds an analyzer's name to conn.log's `service` when the analyzer confirms its
protocol (scripts/base/frameworks/analyzer/dpd.zeek, analyzer_confirmation_info). An analyzer
is attached by the responder's port (Analyzer::register_for_ports, `flow.ports.REGISTRATIONS`)
or, on any port, by a dpd.sig signature; it then parses and confirms. A recogniser does
the confirming part on the first bytes of each direction and then lets go.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from pcapexfil.flow.ports import IGNORE_VIOLATIONS_AFTER, analyzer_ports

if TYPE_CHECKING:
    from pcapexfil.hooks import ConnView
    from pcapexfil.identifiers.stream import PiaBuffer


def analyzer_violation(service: list[str], name: str, size: int) -> bool:
    """dpd.zeek's handlers for a violation of analyzer `name` raised after `size` bytes of
    both directions: True if analyzer_violation_info disables the analyzer (it never
    confirms after that), and then analyzer_failed deletes its name from `service` if it
    had confirmed (DPD::track_removed_services_in_connection = F); False if ignored."""
    if size > IGNORE_VIOLATIONS_AFTER:
        return False
    if name in service:
        service.remove(name)
    return True


class Verdict(Enum):
    CONFIRM = "confirm"  # the protocol is there: the service is added
    REJECT = "reject"  # not this protocol: stop looking
    MORE = "more"  # undecided: needs more bytes (or the other direction)


class Check(Protocol):
    def __call__(self, orig: bytes, resp: bytes) -> Verdict:
        """Decide from the first bytes seen per direction (b"": none yet)."""


class Limit(Protocol):
    def __call__(self, orig: bytes, resp: bytes) -> str | None:
        """The weird of a limit the confirmed analyzer reached in these bytes
        (Analyzer::LimitReachedWeird), or None."""


# One dpd.sig signature and its reverse (`requires-reverse-signature`): the originator's
# and the responder's pattern verdicts (`signature_match`) on the PIA's windows.
PatternPair = tuple[bool | None, bool | None]
SignaturePairs = Callable[[bytes, bytes], tuple[PatternPair, ...]]
# An expected connection an analyzer announced: (the analyzer scheduled for it, orig_h, resp_h,
# resp_p) at the network time of the chunk being read (services.expected).
Announce = Callable[[str, str, str, int], None]


class StreamSession(Protocol):
    """What an attached analyzer reads of the whole stream, past the first bytes the
    recognisers decide on: the connections it announces (services.ftp_session's FTP data
    channels, services.irc_session's DCC transfers)."""

    def feed(self, is_orig: bool, data: bytes) -> bool:
        """Read a chunk of one direction; False once the session reads no more (FTP after
        STARTTLS: the stream is TLS's)."""


class Violation(Protocol):
    def __call__(self, orig: bytes, resp: bytes) -> bool:
        """Whether the analyzer would have reported a violation (AnalyzerViolation) on
        these bytes of each direction."""


@dataclass(frozen=True, slots=True)
class Marks:
    """What a window holds wherever some pattern matches it: a match of `start` at its
    first byte (a regex source, its flags inline, e.g. `(?s:...)`), or one of `contains`,
    or one of `line_words` (upper case, blank included) beginning a line after spaces, in
    any case (dpd.sig's `^(|.*[\r\n]) *WORD +`). Plain searches, not one regex over the
    window: a window holds none of them on nearly every connection."""

    start: bytes | None = None
    contains: tuple[bytes, ...] = ()
    line_words: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Anchors:
    """A necessary condition of a signature (or of a check): it confirms on windows
    (orig, resp) only where the originator's window holds `orig` or the responder's holds
    `resp` (None: nothing asked of that direction). A signature whose rejection is not
    final (rejected on a window, confirmed on a longer one) must not declare anchors: an
    `AnchorGate` defers asking it, not only its confirmation."""

    orig: Marks | None = None
    resp: Marks | None = None


@dataclass(frozen=True, slots=True)
class Recogniser:
    name: str  # the analyzer name conn.log writes
    transport: int  # IP protocol
    check: Check
    # True when the analyzer has a dpd.sig signature that `check` itself covers: Zeek
    # tries it on any port (ssh: its signature is the version line the check reads).
    any_port: bool = False
    # The analyzer's dpd.sig signature(s), when they differ from what `check` reads: on a
    # port the analyzer is not registered for, it is attached (and `check` consulted) only
    # once this confirms. It is given the bytes of each direction the PIA matched so far
    # (identifiers.stream.PiaBuffer); still undecided when matching stops, it never matches.
    signature: Check | None = None
    # UDP: confirmation needs the responder's datagram (SNMP, SIP), so the first datagram of
    # each direction is read on the registered ports (`services.REPLY_UDP_PORTS`).
    both_datagrams: bool = False
    # TCP: what the analyzer itself reports as a violation, read on, after confirmation
    # too, while dpd.zeek still acts on one (`IGNORE_VIOLATIONS_AFTER`): the
    # analyzer is then disabled and its name leaves `service` (analyzer_failed).
    violation: Violation | None = None
    # TCP, read alongside `violation`: a limit the confirmed analyzer reaches gives the
    # weird and the history's 'X' (ConnView.limit_reached), once.
    limit: Limit | None = None
    # Where `signature` is dpd.sig pairs that each need their reverse (`reverse_signatures`):
    # the pairs' pattern verdicts, from which the services analyzer also learns which
    # direction's bytes alone could still make it confirm (`confirmable_by`).
    signature_pairs: SignaturePairs | None = None
    # What the windows hold wherever the recogniser can confirm off its registered ports:
    # on `signature` (or on `check`, for one tried on any port). Lets the services analyzer
    # skip it on chunks whose windows hold none (`AnchorGate`).
    anchors: Anchors | None = None
    # Tried without a signature (any port, or its registered ports): `check` rejects once
    # the originator's bytes, holding none of `anchors`, are at least this long (None: it
    # may wait longer). Lets the kernel end the PIA's wait itself (`PiaWait`).
    rejects_unanchored_after: int | None = None
    # TCP: where the analyzer hands the rest of the connection to a new PIA after its
    # handshake (SOCKS.cc), on the first bytes of each direction: True from the chunk that
    # completed it (the chunks after it are the tunnel's), False where it never will,
    # None until then. Asked from the recogniser's confirmation on.
    tunnel: Callable[[bytes, bytes], bool | None] | None = None
    # TCP: the analyzer reads nothing while the connection is partial (its DeliverStream, or
    # the ContentLine analyzer it reads lines through, checks TCPSessionAdapter::IsPartial).
    skips_partial: bool = False
    # TCP: the analyzer's reading of the whole stream for as long as it is attached and not
    # disabled (by its ports at the connection's creation, or from its signature's match on,
    # the PIA's buffer replayed), whether or not it confirmed.
    session: Callable[[ConnView, Announce], StreamSession] | None = None

    def ports(self) -> frozenset[tuple[int, int]]:
        return analyzer_ports(self.name)


class WindowMarks:
    """Several `Marks` of one direction, asked together."""

    __slots__ = ("start", "contains", "line_words")

    def __init__(self, marks: list[Marks]) -> None:
        starts = [b"(?:" + m.start + b")" for m in marks if m.start is not None]
        self.start = re.compile(b"|".join(starts)) if starts else None
        self.contains = tuple(sorted({c for m in marks for c in m.contains}))
        self.line_words = tuple(sorted({w for m in marks for w in m.line_words}))

    def held(self, window: bytes) -> bool:
        if self.start is not None and self.start.match(window):
            return True
        for literal in self.contains:
            if literal in window:
                return True
        if self.line_words:
            upper = window.upper()
            for word in self.line_words:
                pos = upper.find(word)
                while pos >= 0:
                    begin = pos
                    while begin and upper[begin - 1] == 0x20:
                        begin -= 1
                    if begin == 0 or upper[begin - 1] in b"\r\n":
                        return True
                    pos = upper.find(word, pos + 1)
        return False


class AnchorGate:
    """The anchors of a set of signatures, asked together: where neither window holds any
    of them, none of the signatures confirms, so an analyzer waiting only on them need not
    ask them on that chunk. Asking once a window holds an anchor (or on the PIA's last
    chunk) gives what asking on every chunk gives: no confirmation was missed, and a
    rejection found later changes no log (it only lets a stream go later)."""

    __slots__ = ("orig", "resp")

    def __init__(self, anchors: list[Anchors]) -> None:
        self.orig = WindowMarks([a.orig for a in anchors if a.orig is not None])
        self.resp = WindowMarks([a.resp for a in anchors if a.resp is not None])

    def clean(self, pia: PiaBuffer) -> bool:
        """True where no signature of the set can confirm on the PIA's windows; each
        direction's window is searched once (a chunk grows one of them, and TLS's watch
        asks the services analyzer's gate too, settling)."""
        orig_len, orig_held, resp_len, resp_held = pia.clean_for.get(self, _NOT_SEARCHED)
        if orig_len != len(pia.orig):
            orig_len, orig_held = len(pia.orig), self.orig.held(pia.orig)
        if resp_len != len(pia.resp):
            resp_len, resp_held = len(pia.resp), self.resp.held(pia.resp)
        pia.clean_for[self] = (orig_len, orig_held, resp_len, resp_held)
        return not (orig_held or resp_held)


@dataclass(frozen=True, slots=True)
class PiaWait:
    """What an analyzer does on a TCP connection the HTTP lane reads, while the PIA matches
    (`AppAnalyzer.pia_gate`): only keep stream bytes while `gates` are clean (no output,
    nothing another analyzer reads); at the chunk that ends the PIA's matching with them
    still clean, be done with the connection (`AppAnalyzer.pia_released`) where the
    originator's window holds at least `done_after_orig` bytes (None: it may read on).
    `AppAnalyzer.pia_gate` answering None: it may act on any chunk."""

    gates: tuple[AnchorGate, ...] = ()
    done_after_orig: int | None = 0


def largest_need(needs: Iterable[int | None]) -> int | None:
    """The originator's bytes after which every one of several waits is over: the largest
    of their needs (0 without any), None where one of them may wait on."""
    found = list(needs)
    return None if any(n is None for n in found) else max((n for n in found if n is not None), default=0)


def joined_wait(waits: Iterable[PiaWait]) -> PiaWait:
    """Several analyzers' waits on one connection as one: every gate, done when all are."""
    found = list(waits)
    return PiaWait(tuple(g for w in found for g in w.gates), largest_need(w.done_after_orig for w in found))


# AnchorGate.clean's answers before any search: -1 is no window's length.
_NOT_SEARCHED = (-1, False, -1, False)


def anchor_gate(anchors: Iterable[Anchors | None]) -> AnchorGate | None:
    """The gate of these signatures' anchors; None if one of them has none (it may confirm
    anywhere, so no chunk can be skipped)."""
    found = list(anchors)
    if any(a is None for a in found):
        return None
    return AnchorGate([a for a in found if a is not None])


class SignaturePattern(Protocol):
    def match(self, window: bytes) -> object:
        """Truthy if the pattern matches at the window's first byte."""

    def __hash__(self) -> int:
        """Patterns key signature_match's cache."""


class AtLineStart:
    """A dpd.sig pattern of the form `^(|.*[\r\n])LINE` (Zeek's "LINE begins some line"):
    LINE tried at the first byte and after each CR or LF, only where the next byte is one
    that can begin it. The same answers as the regex, without its backtracking from the
    window's end (12 us per KiB of an HTTP response, once per connection)."""

    LINE_BREAK, CAN_BEGIN, OTHER = b"\n", b"\x01", b"\x00"

    def __init__(self, line: bytes, first_bytes: bytes, flags: int = 0) -> None:
        if b"\r" in first_bytes or b"\n" in first_bytes:
            raise ValueError("a line cannot begin with a line break")
        self.line = re.compile(line, flags)
        table = bytearray(self.OTHER * 256)
        for byte in first_bytes:
            table[byte] = self.CAN_BEGIN[0]
        for byte in b"\r\n":
            table[byte] = self.LINE_BREAK[0]
        self._marks = bytes(table)

    def match(self, window: bytes) -> bool:
        marks = window.translate(self._marks)
        if marks[:1] == self.CAN_BEGIN and self.line.match(window):
            return True
        start = self.LINE_BREAK + self.CAN_BEGIN
        pos = marks.find(start)
        while pos >= 0:
            if self.line.match(window, pos + 1):
                return True
            pos = marks.find(start, pos + 1)
        return False


# ContentLine_Analyzer's default CR_LF_as_EOL = CR_as_EOL | LF_as_EOL: CR, LF or CRLF ends a line.
_CONTENT_LINE_END = re.compile(rb"\r\n|\r|\n")


def content_lines(data: bytes) -> list[bytes]:
    """The complete lines of `data`, as Zeek's ContentLine analyzer delivers them by default
    (the part after the last line end is not a line yet)."""
    return _CONTENT_LINE_END.split(data)[:-1]


def first_line(data: bytes) -> bytes | None:
    """The first CRLF/LF-terminated line, without its end; None if none is complete yet."""
    end = data.find(b"\n")
    if end < 0:
        return None
    return data[:end].rstrip(b"\r")


@functools.lru_cache(maxsize=4096)
def signature_match(pattern: SignaturePattern, data: bytes, need: int | None = None) -> bool | None:
    """A dpd.sig payload pattern (anchored at the direction's first byte, as Zeek's are)
    against `data`, the direction's bytes the PIA matched: True on a match, False once
    `need` bytes were seen without one (the pattern cannot match further in), None while
    it still might. Cached: a recogniser asks again for the direction that got no new
    bytes whenever the other one does."""
    if pattern.match(data):
        return True
    return False if need is not None and len(data) >= need else None


@functools.lru_cache(maxsize=4096)
def signature_match_or_fail(pattern: SignaturePattern, undecided: re.Pattern[bytes], data: bytes) -> bool | None:
    """A dpd.sig payload pattern that the first bytes can rule out (a greeting's reply code)
    against `data`, the direction's bytes the PIA matched: True on a match, None while
    `undecided` matches the whole of `data` (a beginning of a match that more bytes may
    complete), False otherwise, and then on any longer window too. Cached as
    `signature_match` is."""
    if pattern.match(data):
        return True
    return None if undecided.fullmatch(data) else False


def both_directions(client: bool | None, server: bool | None) -> Verdict:
    """A signature pair (`requires-reverse-signature`) or a check that needs both sides."""
    if client is False or server is False:
        return Verdict.REJECT
    return Verdict.CONFIRM if client and server else Verdict.MORE


def pairs_verdict(pairs: tuple[PatternPair, ...]) -> Verdict:
    """Signature pairs that each need their reverse: confirmed once one pair matched both
    ways, rejected once every pair failed (`both_directions`)."""
    rejected = True
    for client, server in pairs:
        if client is False or server is False:  # this pair failed
            continue
        if client and server:
            return Verdict.CONFIRM
        rejected = False
    return Verdict.REJECT if rejected else Verdict.MORE


def confirmable_by(pairs: tuple[PatternPair, ...]) -> tuple[bool, bool]:
    """Whether more bytes of the originator alone, and of the responder alone (the other
    direction's fixed), could still make one of the pairs confirm: only where the other
    direction's pattern matched already and this one's did not fail."""
    by_orig = by_resp = False
    for client, server in pairs:
        by_orig = by_orig or (server is True and client is not False)
        by_resp = by_resp or (client is True and server is not False)
    return by_orig, by_resp


def reverse_signatures(pairs: SignaturePairs) -> Check:
    """The `Recogniser.signature` of dpd.sig signature pairs that each need their reverse
    (dpd.sig's `requires-reverse-signature`): `pairs_verdict` of their verdicts."""

    def signature(orig: bytes, resp: bytes) -> Verdict:
        return pairs_verdict(pairs(orig, resp))

    return signature


def either_direction(orig: bool | None, resp: bool | None) -> Verdict:
    """A check that confirms on a well-formed message in either direction; a malformed one
    (before any confirmation) is Zeek's analyzer violation."""
    if orig or resp:
        return Verdict.CONFIRM
    if orig is False or resp is False:
        return Verdict.REJECT
    return Verdict.MORE


def parsed_in_either_direction(parse: Callable[[bytes], bool | None]) -> Check:
    """A check that confirms on one message `parse` accepts (True) in either direction's
    first bytes: `either_direction` over the directions seen so far."""

    def check(orig: bytes, resp: bytes) -> Verdict:
        return either_direction(parse(orig) if orig else None, parse(resp) if resp else None)

    return check


def either_signature(orig: bool | None, resp: bool | None) -> Verdict:
    """Signatures each of which attaches the analyzer on its own, one per direction (their
    verdicts, None while undecided): confirmed once one matched, rejected once both failed."""
    if orig or resp:
        return Verdict.CONFIRM
    return Verdict.REJECT if orig is False and resp is False else Verdict.MORE


def matched_in_either_direction(pattern: SignaturePattern, need: int) -> Check:
    """A dpd.sig signature without `tcp-state`: either direction's first bytes may match."""

    def signature(orig: bytes, resp: bytes) -> Verdict:
        return either_signature(signature_match(pattern, orig, need) if orig else None,
                                signature_match(pattern, resp, need) if resp else None)

    return signature
