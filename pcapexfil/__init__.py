"""pcapexfil: Zeek-equivalent connection records and exfiltration detection from pcaps.

Data flow, one package per stage:
source (capture files, live) -> decode (link..transport, tunnels) -> flow (Zeek flow table)
-> ConnRecord -> identifiers (TLS/HTTP/DNS) -> detect (windows, baseline, scores) -> logs.
"""

__version__ = "0.1.0"
