"""Labelled synthetic datasets: real pcaps of an enterprise-like network with injected exfiltration.

`generate(SynthConfig(...))` writes `day-YYYY-MM-DD.pcap` files and `labels.csv`
(see `labels` for the columns). Modules: `wire` (frames, checksums, pcap writing),
`tls` (handshake bytes), `apps` (DNS, HTTP), `network` (the traffic model).
"""

from pcapexfil.synth.labels import (
           BENIGN_KINDS,
           EXFIL_KINDS,
           Label,
           read_labels,
           write_labels,
)
from pcapexfil.synth.network import Summary, SynthConfig, generate

__all__ = ["BENIGN_KINDS", "EXFIL_KINDS", "Label", "Summary", "SynthConfig", "generate", "read_labels",
           "write_labels"]
