"""Reads existing Zeek logs (TSV or JSON, plain or gzip) back into ConnRecords.

conn.log rows are joined by uid with ssl.log (server_name, ja3, ja3s) and http.log (the
first Host), and a connection with neither gets its DNS-derived name from dns.log (the name
the client asked for whose A/AAAA answer was the responder, within the answer's TTL, as
pcapexfil.identifiers.dns does live), so the detector sees the same identifiers as from a
pcap run; each connection also gets its dns.log rows as `dns_queries` (the DNS tunnel
rule's input, pcapexfil.detect.dnstunnel). Damaged lines are skipped and counted (Weirds), never fatal.
"""

from __future__ import annotations

import bisect
import glob
import gzip
import ipaddress
import json
import os
import re
import zlib
from collections.abc import Iterator
from typing import IO, Any

from pcapexfil.record import ConnRecord, DnsQuery, dns_query
from pcapexfil.weird import Weirds


class ZeekLogError(Exception):
    """A directory without a usable conn.log, or an unreadable file."""


def _open(path: str) -> IO[str]:
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape")
    return open(path, encoding="utf-8", errors="surrogateescape")


_HEX_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def _unescape(text: str) -> str:
    """Undo LogAscii's \\xHH byte escapes (and nothing else)."""
    if "\\x" not in text:
        return text
    raw = _HEX_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def _tsv_value(raw: str, type_: str, unset: str, empty: str, set_sep: str) -> Any:
    if raw == unset:
        return None
    if type_.startswith(("set[", "vector[")):
        return [] if raw == empty else [_unescape(x) for x in raw.split(set_sep)]
    if raw == empty and type_ == "string":
        return ""
    if type_ in ("time", "interval", "double"):
        return float(raw)
    if type_ in ("count", "int", "port"):
        return int(raw)
    if type_ == "bool":
        return raw == "T"
    return _unescape(raw)


def read_log(path: str, weirds: Weirds | None = None) -> Iterator[dict[str, Any]]:
    """Rows of one Zeek log as dicts (dotted keys); TSV or JSON, detected from the first byte."""
    weirds = weirds or Weirds()
    try:
        with _open(path) as fh:
            first = fh.readline()
            if first.startswith("{"):
                yield from _read_json(first, fh, path, weirds)
            else:
                yield from _read_tsv(first, fh, path, weirds)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:  # zlib.error: a damaged gzip body
        weirds.report("zeek_log_unreadable", addl=f"{path}: {exc}")


def _read_json(first: str, fh: IO[str], path: str, weirds: Weirds) -> Iterator[dict[str, Any]]:
    line = first
    while line:
        if line.strip():
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
                yield row
            except ValueError:
                weirds.report("zeek_log_bad_line", addl=path)
        line = fh.readline()


def _read_tsv(first: str, fh: IO[str], path: str, weirds: Weirds) -> Iterator[dict[str, Any]]:
    sep, set_sep, empty, unset = "\t", ",", "(empty)", "-"
    fields: list[str] = []
    types: list[str] = []
    line = first
    while line:
        line = line.rstrip("\n")
        if line.startswith("#"):
            key, _, value = line.partition(" " if line.startswith("#separator") else sep)
            if key == "#separator":
                if _unescape(value):
                    sep = _unescape(value)
                else:  # an empty separator cannot split anything: keep the previous one
                    weirds.report("zeek_log_bad_line", addl=path)
            elif key == "#set_separator":
                set_sep = value
            elif key == "#empty_field":
                empty = value
            elif key == "#unset_field":
                unset = value
            elif key == "#fields":
                fields = value.split(sep)
            elif key == "#types":
                types = value.split(sep)
        elif line:
            parts = line.split(sep)
            if not fields or len(parts) != len(fields) or len(types) != len(fields):
                weirds.report("zeek_log_bad_line", addl=path)
            else:
                try:
                    yield {f: _tsv_value(v, t, unset, empty, set_sep) for f, t, v in zip(fields, types, parts)}
                except ValueError:
                    weirds.report("zeek_log_bad_line", addl=path)
        line = fh.readline()


def _logs(directory: str, name: str) -> list[str]:
    """`name`.log plus rotated/archived forms (name.HH:MM:SS-HH:MM:SS.log), gzip too."""
    found: set[str] = set()
    for pattern in (f"{name}.log", f"{name}.log.gz", f"{name}.*.log", f"{name}.*.log.gz"):
        found.update(glob.glob(os.path.join(glob.escape(directory), pattern)))
    return sorted(found)


def _strip_port(host: str) -> str:
    host = host.strip()
    if host.startswith("["):
        return host[1:host.index("]")] if "]" in host else host
    return host.split(":", 1)[0] if host.count(":") == 1 else host


def read_directory(directory: str, weirds: Weirds | None = None) -> list[ConnRecord]:
    """Every connection of a Zeek log directory, identifiers joined by uid."""
    weirds = weirds or Weirds()
    if not os.path.isdir(directory):
        raise ZeekLogError(f"{directory}: not a directory")
    conn_logs = _logs(directory, "conn")
    if not conn_logs:
        raise ZeekLogError(f"{directory}: no conn.log (plain or .gz)")
    ssl: dict[str, dict[str, Any]] = {}
    for path in _logs(directory, "ssl"):
        for row in read_log(path, weirds):
            if isinstance(row.get("uid"), str):
                ssl.setdefault(row["uid"], row)
    http_host: dict[str, str] = {}
    for path in _logs(directory, "http"):
        for row in read_log(path, weirds):
            uid, host = row.get("uid"), row.get("host")
            if isinstance(uid, str) and isinstance(host, str) and host and uid not in http_host:
                http_host[uid] = _strip_port(host)
    names, queries = _dns_rows(directory, weirds)
    records = []
    for path in conn_logs:
        for row in read_log(path, weirds):
            rec = _conn_record(row)
            if rec is None:
                weirds.report("zeek_log_bad_line", addl=f"{path}: conn row without id/uid/ts")
                continue
            tls = ssl.get(rec.uid)
            if tls is not None:
                rec.server_name = tls.get("server_name") or None
                rec.ja3 = tls.get("ja3") or None
                rec.ja3s = tls.get("ja3s") or None
            rec.http_host = http_host.get(rec.uid)
            if not rec.server_name and not rec.http_host:
                rec.dns_name = _lookup(names, rec)
            rec.dns_queries = queries.get(rec.uid, [])
            records.append(rec)
    return records


DnsNames = dict[tuple[str, str], list[tuple[float, float, str]]]  # (client, addr) -> [(answered, expires, name)]


def _dns_rows(directory: str, weirds: Weirds) -> tuple[DnsNames, dict[str, list[DnsQuery]]]:
    """The names table, and each connection's DNS transactions by uid (in log order)."""
    names: DnsNames = {}
    queries: dict[str, list[DnsQuery]] = {}
    for path in _logs(directory, "dns"):
        for row in read_log(path, weirds):
            uid, query = row.get("uid"), dns_query(row)
            if isinstance(uid, str) and query is not None:
                queries.setdefault(uid, []).append(query)
            query, answers, ttls = row.get("query"), row.get("answers"), row.get("TTLs")
            if not isinstance(query, str) or not query or not answers or not ttls:
                continue
            try:
                answered = float(row["ts"]) + float(row.get("rtt") or 0.0)
                client = str(row["id.orig_h"])
            except (KeyError, TypeError, ValueError):
                continue
            for answer, ttl in zip(answers, ttls):
                try:
                    addr = str(ipaddress.ip_address(answer))
                    names.setdefault((client, addr), []).append((answered, answered + float(ttl), query))
                except (TypeError, ValueError):
                    continue  # a CNAME/TXT/... answer, not an address
    for entries in names.values():
        entries.sort()
    return names, queries


def _lookup(names: DnsNames, rec: ConnRecord) -> str | None:
    """The latest answer for (client, responder) given before the connection, if not expired."""
    entries = names.get((rec.orig_h, rec.resp_h))
    if not entries:
        return None
    i = bisect.bisect_right(entries, (rec.ts, float("inf"), "")) - 1
    if i >= 0 and rec.ts < entries[i][1]:
        return entries[i][2]
    return None


def _conn_record(row: dict[str, Any]) -> ConnRecord | None:
    try:
        service = row.get("service")
        return ConnRecord(
            ts=float(row["ts"]), uid=str(row["uid"]),
            orig_h=str(row["id.orig_h"]), orig_p=int(row["id.orig_p"]),
            resp_h=str(row["id.resp_h"]), resp_p=int(row["id.resp_p"]),
            proto=str(row.get("proto") or "unknown_transport"),
            service=service.split(",") if isinstance(service, str) else list(service or []),
            duration=None if row.get("duration") is None else float(row["duration"]),
            orig_bytes=row.get("orig_bytes"), resp_bytes=row.get("resp_bytes"),
            conn_state=row.get("conn_state") or "OTH",
            local_orig=row.get("local_orig"), local_resp=row.get("local_resp"),
            missed_bytes=int(row.get("missed_bytes") or 0), history=row.get("history") or "",
            orig_pkts=int(row.get("orig_pkts") or 0), orig_ip_bytes=int(row.get("orig_ip_bytes") or 0),
            resp_pkts=int(row.get("resp_pkts") or 0), resp_ip_bytes=int(row.get("resp_ip_bytes") or 0),
        )
    except (KeyError, TypeError, ValueError):
        return None
