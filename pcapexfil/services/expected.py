"""Connections an analyzer announced before they began: Zeek's scheduled analyzers and the
FTP data channels they name.

An FTP control connection tells which data connection comes next (PORT, EPRT, PASV, EPSV:
`services.ftp_session`). ftp/main.zeek's `add_expected_data_channel` then does two things,
modelled here as Zeek has them:

- `Analyzer::schedule_analyzer(orig_h, resp_h, resp_p, ANALYZER_FTP_DATA, 5mins)`:
  src/analyzer/Manager.cc `ScheduleAnalyzer` keeps an entry keyed by (orig, resp, resp_p,
  transport), first expiring the entries whose timeout has passed (`ExpireScheduledAnalyzers`,
  only there); `GetScheduled` finds, for a new connection, the entries of its exact key
  whatever their timeout, and those of the wildcard originator (::) only before it. When
  one applies (`IPBasedAnalyzer::BuildSessionAnalyzerTree`), the analyzers registered for
  the responder port are not attached ("we only take the scheduled ones"), and the event
  `scheduled_analyzer_applied` is raised.
- `ftp_data_expected[resp_h, resp_p] = s`, a table with `&read_expire=5mins`: the
  `scheduled_analyzer_applied` handler adds "ftp-data" to the connection's service when its
  (resp_h, resp_p) is there, and registers `finalize_ftp_data`, which deletes the entry when
  that connection is removed.

Not modelled: the table's expiry runs in Zeek's table-expiration passes (every
`table_expire_interval`), here an entry counts for exactly 5 minutes after it was written;
`connection_reused` (an entry kept for a reused data connection); the port analyzers of
TLS, HTTP and DNS, which still attach on a scheduled connection here (only the services
analyzer's recognisers give way).
"""

from __future__ import annotations

import heapq
from itertools import count

from pcapexfil.hooks import ConnView
from pcapexfil.packet import PROTO_TCP

FTP_DATA = "ftp-data"  # the analyzer's service name, and the Analyzer::Tag scheduled here
EXPECT_TIMEOUT = 300.0  # ftp/main.zeek: schedule_analyzer(..., 5mins), &read_expire=5mins
WILDCARD_ORIG = "::"  # IPAddr::v6_unspecified: any originator


class ScheduledAnalyzers:
    """src/analyzer/Manager.cc's `conns` and `conns_by_timeout`."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, int, int], list[tuple[float, str]]] = {}
        self._by_timeout: list[tuple[float, int, tuple[str, str, int, int], tuple[float, str]]] = []
        self._order = count()

    def schedule(self, orig: str, resp: str, resp_p: int, proto: int, analyzer: str, now: float,
                 timeout: float) -> None:
        """Manager::ScheduleAnalyzer at network time `now`."""
        self._expire(now)
        key = (orig, resp, resp_p, proto)
        entry = (now + timeout, analyzer)
        self._by_key.setdefault(key, []).append(entry)
        heapq.heappush(self._by_timeout, (entry[0], next(self._order), key, entry))

    def scheduled(self, orig: str, resp: str, resp_p: int, proto: int, now: float) -> set[str]:
        """Manager::GetScheduled for a connection created at `now`."""
        found = {analyzer for _, analyzer in self._by_key.get((orig, resp, resp_p, proto), ())}
        found.update(analyzer for timeout, analyzer in self._by_key.get((WILDCARD_ORIG, resp, resp_p, proto), ())
                     if timeout > now)
        return found

    def _expire(self, now: float) -> None:
        """Manager::ExpireScheduledAnalyzers: the entries whose timeout passed, oldest first."""
        heap = self._by_timeout
        while heap and heap[0][0] <= now:
            _, _, key, entry = heapq.heappop(heap)
            entries = self._by_key[key]
            entries.remove(entry)
            if not entries:
                del self._by_key[key]


class ExpectedConnections:
    """One run's scheduled analyzers and ftp/main.zeek's `ftp_data_expected`."""

    def __init__(self) -> None:
        self.scheduled = ScheduledAnalyzers()
        self._ftp_data: dict[tuple[str, int], float] = {}  # (resp_h, resp_p) → when it expires

    def ftp_data_channel(self, orig_h: str, resp_h: str, resp_p: int, now: float) -> None:
        """ftp/main.zeek `add_expected_data_channel`."""
        self._ftp_data[(resp_h, resp_p)] = now + EXPECT_TIMEOUT
        self.scheduled.schedule(orig_h, resp_h, resp_p, PROTO_TCP, FTP_DATA, now, EXPECT_TIMEOUT)

    def applied(self, conn: ConnView, now: float) -> bool:
        """A new connection: whether a scheduled analyzer applies to it (its port analyzers
        are then not attached); an FTP data channel's gets "ftp-data" in its service."""
        found = self.scheduled.scheduled(conn.orig_h, conn.resp_h, conn.resp_p, conn.proto, now)
        if FTP_DATA in found:
            key = (conn.resp_h, conn.resp_p)
            expires = self._ftp_data.get(key)
            if expires is not None and expires <= now:
                del self._ftp_data[key]
            elif expires is not None and FTP_DATA not in conn.service:
                conn.service.append(FTP_DATA)
        return bool(found)

    def finalize(self, conn: ConnView) -> None:
        """ftp/main.zeek `finalize_ftp_data`, for a connection named ftp-data."""
        if FTP_DATA in conn.service:
            self._ftp_data.pop((conn.resp_h, conn.resp_p), None)
