"""Flow table with Zeek's connection semantics (conn.log records from packets)."""

from pcapexfil.flow.table import Connection, FlowConfig, FlowTable
from pcapexfil.flow.uid import ConnUids

__all__ = ["ConnUids", "Connection", "FlowConfig", "FlowTable"]
