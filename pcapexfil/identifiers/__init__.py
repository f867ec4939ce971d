"""Application identifiers (TLS SNI/JA3/JA3S, HTTP Host, DNS names): flow-table analyzers."""

from __future__ import annotations

from pcapexfil.hooks import AnalyzerContext, AppAnalyzer


def make_analyzers(ctx: AnalyzerContext) -> list[AppAnalyzer]:
    """The registry: every analyzer the pipeline runs, in order."""
    return []
