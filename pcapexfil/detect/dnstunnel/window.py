"""What the DNS tunnel rule measures: per (querying host, registered domain), per window.

A tunnel's payload is in the names it asks for, so what counts is the *unique* text under
the domain: a name asked twice carries nothing new. Each distinct subdomain adds its
characters (dots excluded) to the window's character histogram; the histogram's Shannon
entropy (bits per character) times those characters estimates the bytes of information
the names carried (`info`): base32 at 5 bits per character, hex at 4, base64 at 6 all give
back about the payload's size, whatever the encoding. Queries, name bytes, record types,
answer sizes and the longest label are kept for the log and the notice.

Names that cannot carry a tunnel to an outside server are not counted: mDNS and LLMNR (only
port 53 is read; their `.local` names are dropped too), reverse lookups (`.arpa`: the name
is an address), single labels and IP literals.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pcapexfil.detect.scores.volume import is_address
from pcapexfil.identifiers.domain import DomainMode, parent_domain

DNS_PORT = 53
IGNORED_SUFFIXES = (".local", ".arpa")
# Record types tunnels use to carry data (their answers bring data back as well).
DATA_QTYPES = frozenset((5, 10, 15, 16, 28))  # CNAME, NULL, MX, TXT, AAAA


def split_name(query: str, mode: DomainMode) -> tuple[str, str] | None:
    """(registered domain, subdomain) of a query name, or None when it is not counted."""
    if "." not in query or query.endswith(IGNORED_SUFFIXES) or is_address(query):
        return None
    domain = parent_domain(query, mode)
    if not domain:
        return None
    sub = query[: -len(domain) - 1] if len(query) > len(domain) else ""
    return domain, sub


def name_hash(sub: str) -> int:
    """A stable 63-bit hash of a subdomain (Python's hash() changes between processes, and
    distinct names are persisted with open windows)."""
    return int.from_bytes(hashlib.blake2b(sub.encode("utf-8", "surrogateescape"), digest_size=8).digest(),
                          "big") >> 1


def entropy(hist: dict[str, int]) -> float:
    """Shannon entropy (bits per character) of a character histogram; 0 when empty."""
    total = sum(hist.values())
    if total == 0:
        return 0.0
    return -sum(c / total * math.log2(c / total) for c in hist.values() if c)


@dataclass(slots=True)
class DnsWindow:
    """One (orig_h, domain) window: opened by its first query's connection, closed
    `aggregation_interval` later, as the volume windows are."""

    seq: int  # creation order: the tie-break of equal close times
    orig_h: str
    domain: str
    created: float
    close_at: float
    queries: int = 0
    name_bytes: int = 0  # sum of the query names' lengths
    unique_chars: int = 0  # characters (dots excluded) of the distinct subdomains
    max_label: int = 0
    answer_chars: int = 0
    first: float = math.inf
    last: float = -math.inf
    # Characters of the distinct subdomains: a Counter, whose update counts a name's characters
    # in C (dict order and counts as a plain dict's would be; stored as a JSON object).
    hist: Counter[str] = field(default_factory=Counter)
    names: set[int] = field(default_factory=set)  # name_hash of each distinct subdomain
    qtypes: dict[int, int] = field(default_factory=dict)
    uids: list[str] = field(default_factory=list)  # the connections that carried the queries
    orig_ip_bytes: int = 0  # their IP bytes, as a volume window sums its connections'
    resp_ip_bytes: int = 0

    def add_conn(self, uid: str, orig_ip_bytes: int, resp_ip_bytes: int) -> None:
        """A connection with queries in this window (once per connection)."""
        self.uids.append(uid)
        self.orig_ip_bytes += orig_ip_bytes
        self.resp_ip_bytes += resp_ip_bytes

    def add(self, ts: float, query: str, sub: str, qtype: int, answer_chars: int) -> None:
        """One query under the window's domain (`sub`: the part left of it)."""
        self.queries += 1
        self.name_bytes += len(query)
        self.answer_chars += answer_chars
        self.qtypes[qtype] = self.qtypes.get(qtype, 0) + 1
        if ts < self.first:  # as min()/max(), without their call per query
            self.first = ts
        if ts > self.last:
            self.last = ts
        if not sub:
            return
        h = name_hash(sub)
        names = self.names
        if h in names:
            return
        names.add(h)
        longest = max(map(len, sub.split(".")))
        if longest > self.max_label:
            self.max_label = longest
        text = sub.replace(".", "")
        self.unique_chars += len(text)
        self.hist.update(text)

    @property
    def entropy(self) -> float:
        return entropy(self.hist)

    @property
    def info(self) -> float:
        """Estimated bytes of information carried by the distinct names."""
        return self.unique_chars * self.entropy / 8.0

    @property
    def data_queries(self) -> int:
        return sum(n for t, n in self.qtypes.items() if t in DATA_QTYPES)

    @property
    def duration(self) -> float:
        return max(self.last - self.first, 0.0) if self.queries else 0.0

    def to_json(self) -> dict[str, Any]:
        """The accumulators (the state store keeps open windows as JSON)."""
        return {"queries": self.queries, "name_bytes": self.name_bytes, "unique_chars": self.unique_chars,
                "max_label": self.max_label, "answer_chars": self.answer_chars, "first": self.first,
                "last": self.last, "hist": self.hist, "names": sorted(self.names),
                "qtypes": {str(k): v for k, v in self.qtypes.items()}, "uids": self.uids,
                "orig_ip_bytes": self.orig_ip_bytes, "resp_ip_bytes": self.resp_ip_bytes}

    @classmethod
    def from_json(cls, seq: int, orig_h: str, domain: str, created: float, close_at: float,
                  data: dict[str, Any]) -> DnsWindow:
        return cls(seq, orig_h, domain, created, close_at, data["queries"], data["name_bytes"],
                   data["unique_chars"], data["max_label"], data["answer_chars"], float(data["first"]),
                   float(data["last"]), Counter(data["hist"]), set(data["names"]),
                   {int(k): v for k, v in data["qtypes"].items()}, list(data["uids"]), data["orig_ip_bytes"],
                   data["resp_ip_bytes"])
