"""Connections an analyzer announced before they began: Zeek's scheduled analyzers and the
FTP data channels and IRC DCC transfers they name.

An FTP control connection tells which data connection comes next (PORT, EPRT, PASV, EPSV:
`services.ftp_session`), an IRC connection which DCC transfer (a PRIVMSG's `DCC SEND`:
`services.irc_session`). ftp/main.zeek's `add_expected_data_channel` and irc/dcc-send.zeek's
`irc_dcc_message` handler then do two things, modelled here as Zeek has them:

- `Analyzer::schedule_analyzer(orig_h, resp_h, resp_p, ANALYZER_FTP_DATA, 5mins)`:
  src/analyzer/Manager.cc `ScheduleAnalyzer` keeps an entry keyed by (orig, resp, resp_p,
  transport; an IPv4 0.0.0.0 originator is the wildcard ::, `ConnIndex`), first expiring the
  entries whose timeout has passed (`ExpireScheduledAnalyzers`, only there); `GetScheduled`
  finds, for a new connection, the entries of its exact key whatever their timeout, and
  those of the wildcard originator (::) only before it. When
  one applies (`IPBasedAnalyzer::BuildSessionAnalyzerTree`), the analyzers registered for
  the responder port are not attached ("we only take the scheduled ones"), and the event
  `scheduled_analyzer_applied` is raised.
- `ftp_data_expected[resp_h, resp_p] = s` (`dcc_expected_transfers[address, p]`), tables
  with `&read_expire=5mins`: the `scheduled_analyzer_applied` handlers (which do not look at
  which analyzer applied) add "ftp-data" ("irc-dcc-data") to the connection's service when its
  (resp_h, resp_p) is in their table, and register `finalize_ftp_data` (`finalize_irc_data`),
  which deletes the entry when that connection is removed.

Not modelled: the table's expiry runs in Zeek's table-expiration passes (every
`table_expire_interval`), here an entry counts for exactly 5 minutes after it was written;
`connection_reused` (an entry kept for a reused data connection); dcc-send.zeek's deletion
of a transfer's entry when its file is first sniffed (the removal deletes it too); the port analyzers of
TLS, HTTP and DNS, which still attach on a scheduled connection here (only the services
analyzer's recognisers give way).
"""

from __future__ import annotations

import heapq
from itertools import count

from pcapexfil.hooks import ConnView
from pcapexfil.packet import PROTO_TCP

FTP_DATA = "ftp-data"  # Analyzer::ANALYZER_FTP_DATA, and the service its script adds
IRC_DATA = "irc-dcc-data"  # Analyzer::ANALYZER_IRC_DATA, and the service dcc-send.zeek adds
EXPECT_TIMEOUT = 300.0  # schedule_analyzer(..., 5mins) and the tables' &read_expire=5mins, both scripts
WILDCARD_ORIG = "::"  # IPAddr::v6_unspecified: any originator
_IPV4_UNSPECIFIED = "0.0.0.0"  # ConnIndex makes it the wildcard


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
        key = (_index_orig(orig), resp, resp_p, proto)
        entry = (now + timeout, analyzer)
        self._by_key.setdefault(key, []).append(entry)
        heapq.heappush(self._by_timeout, (entry[0], next(self._order), key, entry))

    def scheduled(self, orig: str, resp: str, resp_p: int, proto: int, now: float) -> set[str]:
        """Manager::GetScheduled for a connection created at `now`."""
        if not self._by_key:
            return set()  # the usual case: nothing scheduled
        found = {analyzer for _, analyzer in self._by_key.get((_index_orig(orig), resp, resp_p, proto), ())}
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


def _index_orig(orig: str) -> str:
    return WILDCARD_ORIG if orig == _IPV4_UNSPECIFIED else orig


class ExpectedConnections:
    """One run's scheduled analyzers and the scripts' tables of expected connections
    (`ftp_data_expected`, `dcc_expected_transfers`), by analyzer."""

    def __init__(self) -> None:
        self.scheduled = ScheduledAnalyzers()
        # analyzer → (resp_h, resp_p) → when the entry expires
        self._tables: dict[str, dict[tuple[str, int], float]] = {FTP_DATA: {}, IRC_DATA: {}}

    def announce(self, analyzer: str, orig_h: str, resp_h: str, resp_p: int, now: float) -> None:
        """ftp/main.zeek `add_expected_data_channel`, irc/dcc-send.zeek `irc_dcc_message`."""
        self._tables[analyzer][(resp_h, resp_p)] = now + EXPECT_TIMEOUT
        self.scheduled.schedule(orig_h, resp_h, resp_p, PROTO_TCP, analyzer, now, EXPECT_TIMEOUT)

    def applied(self, conn: ConnView, now: float) -> bool:
        """A new connection: whether a scheduled analyzer applies to it (its port analyzers
        are then not attached); then each script whose table holds its (resp_h, resp_p)
        names it."""
        if not self.scheduled.scheduled(conn.orig_h, conn.resp_h, conn.resp_p, conn.proto, now):
            return False
        key = (conn.resp_h, conn.resp_p)
        for service, table in self._tables.items():
            expires = table.get(key)
            if expires is not None and expires <= now:
                del table[key]
            elif expires is not None and service not in conn.service:
                conn.service.append(service)
        return True

    def finalize(self, conn: ConnView) -> None:
        """A connection is removed: `finalize_ftp_data` and `finalize_irc_data`, which the
        scripts register for a connection they named."""
        for service, table in self._tables.items():
            if service in conn.service:
                table.pop((conn.resp_h, conn.resp_p), None)
