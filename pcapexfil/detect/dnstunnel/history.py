"""The DNS tunnel rule's history: closed (host, domain) windows of the last `span` seconds,
indexed by domain (every host's windows) and by host (every domain's windows).

Reads take only elements within `span` before the time asked about, so when rows are
physically pruned (at commits) changes nothing a score sees: a run continued from the state
store scores as one uninterrupted run, and the cluster path (one commit at the end) leaves
the same rows as the single process (a commit per recomputation).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Element:
    """One closed window that had at least `min_names` distinct names."""

    orig_h: str
    domain: str
    day: str  # calendar day of ts (UTC or --tz), as the volume baseline's
    ts: float  # closing time
    info: float  # estimated bytes of information in its distinct names
    queries: int
    names: int  # distinct subdomains


ELEMENT_COLUMNS = ("orig_h", "domain", "day", "ts", "info", "queries", "names")


class History:
    def __init__(self, span: float) -> None:
        self.span = span
        self.by_domain: dict[str, list[Element]] = {}
        self.by_host: dict[str, list[Element]] = {}
        self.added: list[Element] = []  # since the last take_added

    def add(self, e: Element, record: bool = True) -> None:
        """Elements join in closing order (each list stays sorted by ts)."""
        self.by_domain.setdefault(e.domain, []).append(e)
        self.by_host.setdefault(e.orig_h, []).append(e)
        if record:
            self.added.append(e)

    def _recent(self, elems: list[Element], now: float) -> list[Element]:
        cutoff = now - self.span
        return [e for e in elems if cutoff < e.ts <= now]

    def daily_max(self, elems: list[Element], now: float) -> dict[str, float]:
        """Largest info per day among `elems` within the span before `now`."""
        out: dict[str, float] = {}
        for e in self._recent(elems, now):
            out[e.day] = max(out.get(e.day, 0.0), e.info)
        return out

    def domain_days(self, domain: str, now: float) -> dict[str, float]:
        """The domain's daily maximum window (any host)."""
        return self.daily_max(self.by_domain.get(domain, []), now)

    def host_days(self, orig_h: str, now: float) -> dict[str, float]:
        """The host's daily maximum window (any domain)."""
        return self.daily_max(self.by_host.get(orig_h, []), now)

    def recent_info(self, orig_h: str, domain: str, now: float, window: float) -> float:
        """Info of the host's windows for `domain` closed within `window` before `now`."""
        total = 0.0
        for e in reversed(self.by_host.get(orig_h, [])):
            if e.ts <= now - window:
                break
            if e.domain == domain and e.ts <= now:
                total += e.info
        return total

    def prune(self, now: float) -> float:
        """Drop elements older than the span; returns the cutoff (rows at or before it go)."""
        cutoff = now - self.span
        for index in (self.by_domain, self.by_host):
            for key in list(index):
                kept = [e for e in index[key] if e.ts > cutoff]
                if kept:
                    index[key] = kept
                else:
                    del index[key]
        return cutoff

    def take_added(self, cutoff: float) -> list[Element]:
        """Elements added since the last call that are still within the span."""
        added = [e for e in self.added if e.ts > cutoff]
        self.added = []
        return added
