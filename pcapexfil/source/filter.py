"""Zeek's `-f` for capture files: a tcpdump filter expression decides which records are read
at all (a record it rejects is never seen: no packet count, no network time, no weird).

libpcap compiles the expression (pcapy-ng, as the live capture's --bpf does) once per link
type met, and runs it on each record's captured bytes (the wire length is taken to be the
captured length, which only `len`/`greater`/`less` on snap-length cut records can tell).
"""

from __future__ import annotations

from typing import Any

from pcapexfil.source.pcap import CaptureError


class CaptureFilter:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self._programs: dict[int, Any] = {}

    def check(self, linktype: int = 1) -> None:
        """Compile for `linktype` now (CaptureError naming the expression if it is invalid)."""
        self._program(linktype, "")

    def _program(self, linktype: int, source: str) -> Any:
        program = self._programs.get(linktype)
        if program is None:
            import pcapy

            try:
                program = pcapy.compile(linktype, 262144, self.expression, 1, 0xFFFFFFFF)
            except pcapy.PcapError as exc:
                where = f"{source}: " if source else ""
                raise CaptureError(f"{where}invalid capture filter {self.expression!r} for link type "
                                   f"{linktype}: {exc}") from None
            self._programs[linktype] = program
        return program

    def accepts(self, linktype: int, data: bytes, source: str) -> bool:
        return bool(self._program(linktype, source).filter(data))
