"""labels.csv: the ground truth of a generated dataset (and the format users write for their own data).

Columns: id, kind, orig_h, resp_h, resp_p, domain, start, end, bytes_sent, bytes_received, conns.
`kind` starting with `benign_` marks a heavy hitter that must NOT be flagged; any other kind
is an exfiltration episode. `resp_h` may list several addresses separated by `;`. `start`
and `end` are ISO 8601 UTC (epoch seconds are accepted on reading). `bytes_sent` and
`bytes_received` are TCP payload bytes (application bytes, headers excluded) of the
episode's connections; `domain` may be empty.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from dataclasses import dataclass
from typing import IO

COLUMNS = ("id", "kind", "orig_h", "resp_h", "resp_p", "domain", "start", "end", "bytes_sent", "bytes_received",
           "conns")

EXFIL_KINDS = ("bulk_https_new_domain", "spread_many_small", "low_and_slow", "http_post_80", "new_port",
               "dns_tunnel")
# The DNS look-alikes (synth.dnstraffic) must not be flagged by the DNS tunnel rule.
DNS_LOOKALIKE_KINDS = ("benign_dns_reputation", "benign_dns_cdn", "benign_dns_txt", "benign_dns_ptr",
                       "benign_dns_mdns")
BENIGN_KINDS = ("benign_backup", "benign_cloud_sync", "benign_large_download", *DNS_LOOKALIKE_KINDS)


@dataclass(slots=True)
class Label:
    id: str
    kind: str
    orig_h: str
    resp_h: list[str]
    resp_p: int
    domain: str
    start: float  # epoch seconds (network time)
    end: float
    bytes_sent: int = 0
    bytes_received: int = 0
    conns: int = 0

    @property
    def benign(self) -> bool:
        return self.kind.startswith("benign_")


def format_ts(ts: float) -> str:
    moment = dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> float:
    """ISO 8601 (a trailing Z or offset; naive means UTC) or epoch seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def write_labels(path: str | os.PathLike[str], labels: list[Label]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for lb in labels:
            w.writerow([lb.id, lb.kind, lb.orig_h, ";".join(lb.resp_h), lb.resp_p, lb.domain, format_ts(lb.start),
                        format_ts(lb.end), lb.bytes_sent, lb.bytes_received, lb.conns])


def read_labels(path: str | os.PathLike[str]) -> list[Label]:
    """Read labels.csv; raises ValueError naming the line of a bad row."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return _read_labels(fh, os.fspath(path))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{os.fspath(path)}: not a labels.csv (not UTF-8 text: {exc.reason})") from None
    except csv.Error as exc:
        raise ValueError(f"{os.fspath(path)}: not a labels.csv ({exc})") from None


def _read_labels(fh: IO[str], path: str) -> list[Label]:
    labels: list[Label] = []
    reader = csv.DictReader(fh)
    missing = {"kind", "orig_h", "resp_p", "start", "end"} - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    for n, row in enumerate(reader, start=2):
        try:
            labels.append(Label(
                id=row.get("id") or f"L{n - 1}",
                kind=row["kind"].strip(),
                orig_h=row["orig_h"].strip(),
                resp_h=[a for a in (row.get("resp_h") or "").split(";") if a],
                resp_p=int(row["resp_p"]),
                domain=(row.get("domain") or "").strip(),
                start=parse_ts(row["start"]),
                end=parse_ts(row["end"]),
                bytes_sent=int(row.get("bytes_sent") or 0),
                bytes_received=int(row.get("bytes_received") or 0),
                conns=int(row.get("conns") or 0),
            ))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}:{n}: bad label row ({exc})") from None
    return labels
