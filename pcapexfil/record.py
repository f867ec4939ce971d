"""The connection record: one conn.log row plus the application identifiers.

Everything downstream of the flow table (identifier logs, the detector, conn.log) reads
these records, whatever produced them: the flow table, or Zeek logs read back.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
