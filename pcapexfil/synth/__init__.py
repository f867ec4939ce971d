"""Labelled synthetic datasets: real pcaps of an enterprise-like network with injected exfiltration.

`generate(SynthConfig(...))` writes `day-YYYY-MM-DD.pcap` files and `labels.csv`
(see `labels` for the columns). Modules: `wire` (frames, checksums, pcap writing),
`tls` (handshake bytes), `apps` (DNS, HTTP), `network` (the traffic model).
"""

from typing import Any

from pcapexfil.synth.labels import (
    BENIGN_KINDS,
    EXFIL_KINDS,
    Label,
    read_labels,
    write_labels,
)

__all__ = ["BENIGN_KINDS", "EXFIL_KINDS", "Label", "Summary", "SynthConfig", "generate", "read_labels",
           "write_labels"]


def __getattr__(name: str) -> Any:
    """The traffic model (numpy, numba, dpkt: ~0.1 s) is imported on first use, so that reading
    labels (`pcapexfil evaluate`) and every command's start-up stay light."""
    if name in ("Summary", "SynthConfig", "generate"):
        from pcapexfil.synth import network

        return getattr(network, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
