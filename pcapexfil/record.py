"""The connection record: one conn.log row plus the application identifiers.

Everything downstream of the flow table (identifier logs, the detector, conn.log) reads
these records, whatever produced them: the flow table, or Zeek logs read back.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class DnsQuery:
    """One DNS transaction of a connection, as its dns.log row has it: what the DNS tunnel
    rule (pcapexfil.detect.dnstunnel) reads. Built from the row by `dns_query`, whether the
    row came from pcapexfil's analyzer or from a real Zeek's dns.log, so both give the same."""

    ts: float
    query: str  # lowercase, no trailing dot; "" when the question was not seen
    qtype: int  # 0 when unknown
    answer_chars: int  # characters of the answers as dns.log renders them (TXT text included)

    def __reduce__(self) -> tuple[type[DnsQuery], tuple[float, str, int, int]]:
        """Pickled as its field values, as ConnRecord is: a frozen slotted dataclass's default
        state is rebuilt through dataclasses.fields, a third of the records' unpickling time
        under `--workers` on DNS-heavy traffic."""
        return (DnsQuery, (self.ts, self.query, self.qtype, self.answer_chars))


@dataclass(slots=True)
class ConnRecord:
    ts: float
    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: str  # "tcp", "udp", "icmp" or "unknown_transport"
    service: list[str] = field(default_factory=list)
    duration: float | None = None
    orig_bytes: int | None = None
    resp_bytes: int | None = None
    conn_state: str = "OTH"
    local_orig: bool | None = None
    local_resp: bool | None = None
    missed_bytes: int = 0
    history: str = ""
    orig_pkts: int = 0
    orig_ip_bytes: int = 0
    resp_pkts: int = 0
    resp_ip_bytes: int = 0
    tunnel_parents: list[str] = field(default_factory=list)
    ip_proto: int | None = None
    # Application identifiers (filled by pcapexfil.identifiers, or joined from Zeek logs).
    server_name: str | None = None  # TLS SNI
    http_host: str | None = None  # first HTTP Host header, without :port
    dns_name: str | None = None  # name the client resolved to resp_h, still within TTL
    ja3: str | None = None
    ja3s: str | None = None
    # The connection's DNS transactions (empty for non-DNS connections).
    dns_queries: list[DnsQuery] = field(default_factory=list)

    def __reduce__(self) -> tuple[type[ConnRecord], tuple[Any, ...]]:
        """Pickled as its field values in order: records cross process pipes under
        `--workers`, and a slotted dataclass's default state (a dict per record, rebuilt
        through dataclasses.fields) took twice the bytes and half again the time."""
        return (ConnRecord, _RECORD_VALUES(self))


_RECORD_VALUES = operator.attrgetter(*(f.name for f in fields(ConnRecord)))


def dns_query(row: Mapping[str, Any]) -> DnsQuery | None:
    """The DnsQuery of one dns.log row (dotted keys, Zeek's types); None without a usable ts."""
    try:
        ts = float(row["ts"])
    except (KeyError, TypeError, ValueError):
        return None
    query, qtype, answers = row.get("query"), row.get("qtype"), row.get("answers")
    return DnsQuery(
        ts,
        query.lower().rstrip(".") if isinstance(query, str) else "",
        qtype if isinstance(qtype, int) else 0,
        _answer_chars(answers) if isinstance(answers, list) else 0,
    )


def _answer_chars(answers: list[Any]) -> int:
    """The characters of the answers that are strings."""
    try:
        return len("".join(answers))  # all of them, usually: one C call
    except TypeError:
        return sum(len(a) for a in answers if isinstance(a, str))
