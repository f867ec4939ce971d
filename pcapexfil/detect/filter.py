"""Which connections the detector counts: outgoing ones (reference main.zeek)."""

from __future__ import annotations

from collections.abc import Iterable

from pcapexfil.netconf import MULTICAST_NETS, PRIVATE_NETS, NetSet, parse_nets
from pcapexfil.record import ConnRecord


class OutgoingFilter:
    """Originator inside the local nets, responder outside them and not multicast/broadcast."""

    def __init__(
        self, local_nets: Iterable[str] = PRIVATE_NETS, multicast_nets: Iterable[str] = MULTICAST_NETS
    ) -> None:
        self.local = NetSet(parse_nets(list(local_nets)))
        self.multicast = NetSet(parse_nets(list(multicast_nets)))

    def __call__(self, rec: ConnRecord) -> bool:
        try:
            return rec.orig_h in self.local and not (
                rec.resp_h in self.local or rec.resp_h in self.multicast
            )
        except ValueError:  # an address that is not one (damaged Zeek log): not counted
            return False
