"""Application identifiers (TLS SNI/JA3/JA3S, HTTP Host, DNS names): flow-table analyzers."""

from __future__ import annotations

from pcapexfil.hooks import AnalyzerContext, AppAnalyzer


def make_analyzers(ctx: AnalyzerContext) -> list[AppAnalyzer]:
    """The registry: every analyzer the pipeline runs, in order.

    DNS comes last: its `on_remove` names only connections that TLS and HTTP left unnamed.
    """
    from pcapexfil.identifiers import dns, http, tls

    users = frozenset((tls.NAME, http.NAME, dns.NAME))  # analyzers that read TCP streams
    return [
        tls.TlsAnalyzer(ctx, users),
        http.HttpAnalyzer(ctx, users),
        dns.DnsAnalyzer(ctx, users),
    ]
