"""What a service recogniser is: a light, confirm-only check of a connection's first bytes.

Zeek adds an analyzer's name to conn.log's `service` when the analyzer confirms its
protocol (scripts/base/frameworks/analyzer/dpd.zeek, analyzer_confirmation_info). An analyzer
is attached by the responder's port (Analyzer::register_for_ports, `flow.ports.REGISTRATIONS`)
or, on any port, by a dpd.sig signature; it then parses and confirms. A recogniser does
the confirming part on the first bytes of each direction and then lets go.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from pcapexfil.flow.ports import REGISTRATIONS


class Verdict(Enum):
    CONFIRM = "confirm"  # the protocol is there: the service is added
    REJECT = "reject"  # not this protocol: stop looking
    MORE = "more"  # undecided: needs more bytes (or the other direction)


class Check(Protocol):
    def __call__(self, orig: bytes, resp: bytes) -> Verdict:
        """Decide from the first bytes seen per direction (b"": none yet)."""


@dataclass(frozen=True, slots=True)
class Recogniser:
    name: str  # the analyzer name conn.log writes
    transport: int  # IP protocol
    check: Check
    # True when the analyzer has a dpd.sig signature: Zeek tries it on any port.
    any_port: bool = False

    def ports(self) -> frozenset[tuple[int, int]]:
        return registered_ports(self.name)


@functools.cache
def registered_ports(analyzer: str) -> frozenset[tuple[int, int]]:
    """(port, protocol) pairs Zeek registers `analyzer` for (asked once per connection)."""
    return frozenset().union(*(r.ports for r in REGISTRATIONS if r.analyzer == analyzer))


def first_line(data: bytes) -> bytes | None:
    """The first CRLF/LF-terminated line, without its end; None if none is complete yet."""
    end = data.find(b"\n")
    if end < 0:
        return None
    return data[:end].rstrip(b"\r")
