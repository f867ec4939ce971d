"""The two extension points of the pipeline, as typed protocols.

- An `AppAnalyzer` rides on the flow table: it sees every packet of every connection
  (already oriented originator/responder) and fills the application identifiers into the
  record just before it is emitted. TLS, HTTP and DNS are analyzers; a new identifier is
  a new analyzer registered in `pcapexfil.identifiers.make_analyzers`.
- A `RecordSink` consumes emitted connection records and the advance of network time:
  conn.log is a sink, the exfiltration detector is a sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from pcapexfil.logs.staging import LogStaging
    from pcapexfil.packet import Packet
    from pcapexfil.record import ConnRecord
    from pcapexfil.services.base import PiaWait
    from pcapexfil.weird import Weirds


class ConnView(Protocol):
    """What an analyzer may read of a live connection (the flow table's object)."""

    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: int  # IP protocol number
    start_ts: float
    service: list[str]  # analyzers append the protocol names they recognised
    app: dict[str, Any]  # scratch space, one key per analyzer

    @property
    def is_partial(self) -> bool:
        """TCP: Zeek's TCPSessionAdapter::IsPartial as of the packet being analyzed (the
        connection began without its handshake); HTTP, SSL and some service analyzers read
        nothing while it is set (docs/zeek-semantics.md)."""

    def set_inactivity_timeout(self, seconds: float) -> None:
        """Zeek's set_inactivity_timeout, as conn/inactivity.zeek calls it on an analyzer's
        confirmation (flow.table.ANALYZER_INACTIVITY_TIMEOUTS)."""

    def limit_reached(self, weird: str, addl: str | None = None) -> None:
        """Zeek's Analyzer::LimitReachedWeird for the packet being analyzed: the weird (once
        per connection and name), and 'X' in the history (once) after that packet's letters."""

    def cancel_dns_expiry(self) -> None:
        """The DNS analyzer was disabled (a violation): Analyzer::Done cancels its timers
        (src/analyzer/Analyzer.cc CancelTimers), DNS_Analyzer::ExpireTimer among them, so
        only the inactivity timeout ends the connection from now on."""


class AppAnalyzer(Protocol):
    name: str  # its key in `ConnView.app`, and its name among the readers of TCP streams

    def on_new(self, conn: ConnView) -> None:
        """A connection was created (roles decided, no packet seen yet): Zeek attaches its
        analyzers here, by the responder port."""

    def on_packet(self, conn: ConnView, is_orig: bool, pkt: Packet) -> None:
        """Called for a connection's packets, after direction is decided.

        The reference engine calls it for every packet. The fast engine relies on a
        contract and calls it for fewer: the first packet of every UDP flow, every packet
        of a UDP flow on a DNS port (53, 137, 5353, 5355) or on `services.REPLY_UDP_PORTS`
        (161, 162, 5060) but the DNS messages its kernel parsed (`reads_datagrams`),
        and TCP packets carrying bytes of a
        stream direction some analyzer still wants (`identifiers.stream.tcp_data`;
        analyzers say they are done with `release` or `release_direction`). Bytes every
        reader of a direction offered to only count (`TcpStreams.offer`: HTTP bodies of
        known length, TLS server bytes before a ClientHello or inside a Certificate) stay in
        the kernel, which reports how many through the offers' callbacks. Packets of other
        protocols are not handed over. An analyzer that reads more must widen that filter (`fast.engine`;
        the differential test shows when logs drift).
        """

    def reads_datagrams(self, resp_p: int) -> bool:
        """Whether `on_packet` may act on a UDP datagram to responder port `resp_p`. The
        fast engine's kernel parses the DNS messages on a DNS port where only the DNS
        analyzer reads them, and hands them to `DnsAnalyzer.on_message` instead
        (`fast.engine.kernel_dns_ports`)."""

    def pia_gate(self, resp_p: int) -> PiaWait | None:
        """On a TCP connection to `resp_p` the HTTP lane reads: how `on_packet` waits for the
        PIA (services.base.PiaWait). None: it may act on any chunk, so the kernel hands
        every packet over (`fast.pia_gate`, `fast.engine.kernel_gates`)."""

    def pia_released(self, conn: ConnView) -> None:
        """The kernel saw the PIA's last chunk with the gates clean and the analyzer's
        `PiaWait` condition met: be done with the connection, as after reading that chunk
        (asked only where its packets go to Python later)."""

    def on_remove(self, conn: ConnView, rec: ConnRecord) -> None:
        """Called once when the connection's record is built, before it is emitted."""

    def close(self) -> None:
        """End of input: flush and close any logs the analyzer writes."""


class RecordSink(Protocol):
    def on_record(self, rec: ConnRecord) -> None:
        """A connection ended (Zeek's connection_state_remove)."""

    def on_time(self, now: float) -> None:
        """Network time advanced to `now` (called at least once per second of traffic)."""

    def close(self, now: float) -> None:
        """End of input at network time `now`."""


@dataclass(slots=True)
class AnalyzerContext:
    """What analyzers need to know to build themselves and their logs."""

    out_dir: str | None  # where ssl.log/http.log/dns.log go; None: write no logs
    use_json: bool = False
    ts_style: Literal["epoch", "millis", "iso8601"] = "epoch"
    domain_mode: Literal["psl", "last2"] = "psl"
    weirds: Weirds | None = None
    staging: LogStaging | None = None  # the run's commit point for its logs (logs.staging)
