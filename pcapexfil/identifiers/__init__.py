"""Application identifiers (TLS SNI/JA3/JA3S, HTTP Host, DNS names): flow-table analyzers."""

from __future__ import annotations

from collections.abc import Callable, Collection

from pcapexfil.hooks import AnalyzerContext, AppAnalyzer


def make_analyzers(ctx: AnalyzerContext, only: Collection[str] | None = None) -> list[AppAnalyzer]:
    """The registry: every analyzer the pipeline runs, in order (`only`: those of these
    names, e.g. to measure what one costs).

    DNS comes last: its `on_remove` names only connections that TLS and HTTP left unnamed.
    """
    from pcapexfil import services
    from pcapexfil.identifiers import dns, http, tls

    kinds: list[tuple[str, Callable[[AnalyzerContext, frozenset[str]], AppAnalyzer]]] = [
        (tls.NAME, tls.TlsAnalyzer), (http.NAME, http.HttpAnalyzer), (services.NAME, services.ServiceAnalyzer),
        (dns.NAME, dns.DnsAnalyzer)
    ]
    if only is not None:
        kinds = [(name, kind) for name, kind in kinds if name in only]
    users = frozenset(name for name, _ in kinds)  # analyzers that read TCP streams
    return [kind(ctx, users) for _, kind in kinds]
