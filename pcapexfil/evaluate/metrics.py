"""Scores a detector run against labels: episode recall, window precision, false positives per host-day.

Definitions (also printed in report.md):
- A *window* is one exfil_detection.log row. Its time span is `[ts - aggregation_interval, ts]`
  (ts is the closing time; a window closed early at end of input still gets the full span).
  A window opens when its first connection is *logged*, which is after the connection's last
  packet (Zeek removes a closed TCP connection a few seconds later, an idle one after the
  5-minute inactivity timeout), so spans are compared with a label's end plus LOG_DELAY.
- A window *matches* a label when orig_h and resp_p are equal, the spans overlap, and the
  window holds the label's traffic: with conn.log in the results, one of the window's uids
  is a connection from orig_h to one of the label's resp_h on resp_p during the label, and a
  window named by a DNS name, when the label names a domain, is that domain or a parent of it
  (one host's windows on its resolver's port 53 are one per domain it looked up); without
  conn.log, the identifier is one of the label's resp_h, its domain or a parent of it, or a
  JA3S hash (which cannot be told apart, so it is given the benefit of the doubt).
- A *notice* matches a label when its host (src, else id.orig_h, else the "from host" in msg)
  and port (p, else id.resp_p, else the "protocol" in msg) are equal and its ts lies in
  `[start, end + aggregation_interval + LOG_DELAY]`, i.e. the span of a window closing then overlaps
  the label.
- An exfiltration episode is *found* when a notice or a window with exfiltration_score >=
  threshold matches it. A benign label is *flagged* the same way, counting only windows and
  notices that match no exfiltration episode (a window holding both is the episode's). A flagged window is a true positive when it matches an exfiltration
  episode, else a false positive (benign-labelled or not). False positives per host-day
  divide by the host-days under scoring: distinct (orig_h, UTC date of ts) over all windows.
- PR curve: for each threshold t, precision = TP/(TP+FP) among windows scoring >= t, recall =
  fraction of episodes matched by a window scoring >= t (notices excluded, so the curve
  depends on the score alone).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from pcapexfil.synth.labels import Label
from pcapexfil.weird import Weirds
from pcapexfil.zeekread import read_log

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_MSG_HOST = re.compile(r"from host (\S+)")
_MSG_PORT = re.compile(r"protocol (\d+)")
LOG_DELAY = 300.0  # latest a connection is logged after its last packet: Zeek's TCP inactivity timeout


class ResultsError(Exception):
    """A results directory without a readable exfil_detection.log."""


@dataclass(slots=True)
class Window:
    ts: float
    orig_h: str
    resp_p: int
    identifier: str
    score: float | None
    uids: list[str]
    orig_ip_bytes: int = 0
    resp_ip_bytes: int = 0


@dataclass(slots=True)
class Notice:
    ts: float
    note: str
    orig_h: str | None
    resp_p: int | None
    msg: str = ""


@dataclass(slots=True)
class Conn:
    ts: float
    orig_h: str
    resp_h: str
    resp_p: int


@dataclass
class Results:
    windows: list[Window]
    notices: list[Notice]
    conns: dict[str, Conn] | None  # None when the results have no conn.log
    skipped_lines: int = 0
    notes: list[str] = field(default_factory=list)


def _time(value: Any) -> float:
    """Zeek time in any of the writer's forms: epoch seconds, epoch millis, ISO 8601."""
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    number = float(value)
    return number / 1000.0 if isinstance(value, int) and number > 1e11 else number


def _find(directory: str, name: str) -> str | None:
    for candidate in (f"{name}.log", f"{name}.log.gz", f"{name}.json", f"{name}.json.gz"):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    return None


def load_results(directory: str) -> Results:
    """Read exfil_detection.log, notice.log and (if present) conn.log; TSV or JSON."""
    weirds = Weirds()
    path = _find(directory, "exfil_detection")
    if path is None:
        raise ResultsError(f"{directory}: no exfil_detection.log")
    windows: list[Window] = []
    for row in read_log(path, weirds):
        try:
            score = row.get("exfiltration_score")
            uids = row.get("uid") or []
            windows.append(Window(
                ts=_time(row["ts"]), orig_h=str(row["orig_h"]), resp_p=int(row["resp_p"]),
                identifier=str(row.get("identifier") or ""), score=None if score is None else float(score),
                uids=uids.split(",") if isinstance(uids, str) else list(uids),
                orig_ip_bytes=int(row.get("orig_ip_bytes") or 0), resp_ip_bytes=int(row.get("resp_ip_bytes") or 0),
            ))
        except (KeyError, TypeError, ValueError):
            weirds.report("evaluate_bad_window_row", addl=path)
    results = Results(windows, [], None)
    path = _find(directory, "notice")
    if path is None:
        results.notes.append("no notice.log: episodes can only be found by windows")
    else:
        for row in read_log(path, weirds):
            try:
                msg = str(row.get("msg") or "")
                host = row.get("src") or row.get("id.orig_h")
                port = row.get("p") if row.get("p") is not None else row.get("id.resp_p")
                if host is None and (m := _MSG_HOST.search(msg)):
                    host = m.group(1)
                if port is None and (m := _MSG_PORT.search(msg)):
                    port = int(m.group(1))
                results.notices.append(Notice(_time(row["ts"]), str(row.get("note") or ""),
                                              None if host is None else str(host),
                                              None if port is None else int(port), msg))
            except (KeyError, TypeError, ValueError):
                weirds.report("evaluate_bad_notice_row", addl=path)
    path = _find(directory, "conn")
    if path is None:
        results.notes.append("no conn.log: windows are matched to labels by identifier, not by uid")
    else:
        conns: dict[str, Conn] = {}
        for row in read_log(path, weirds):
            try:
                conns[str(row["uid"])] = Conn(_time(row["ts"]), str(row["id.orig_h"]), str(row["id.resp_h"]),
                                              int(row["id.resp_p"]))
            except (KeyError, TypeError, ValueError):
                weirds.report("evaluate_bad_conn_row", addl=path)
        results.conns = conns
    results.skipped_lines = weirds.total
    if weirds.total:
        results.notes.append(f"skipped damaged log lines: {weirds.summary()}")
    return results


# -- matching ---------------------------------------------------------------------------------------------
def _conn_in_label(c: Conn, lb: Label) -> bool:
    return (c.orig_h == lb.orig_h and c.resp_p == lb.resp_p and (not lb.resp_h or c.resp_h in lb.resp_h)
            and lb.start - 1.0 <= c.ts <= lb.end + 1.0)


def window_matches(w: Window, lb: Label, agg: float, conns: dict[str, Conn] | None) -> bool:
    if w.orig_h != lb.orig_h or w.resp_p != lb.resp_p or w.ts < lb.start or w.ts - agg > lb.end + LOG_DELAY:
        return False
    ident = w.identifier.lower()
    domain = lb.domain.lower().rstrip(".")
    if conns is not None:
        if domain and _is_name(ident) and not _in_domain(ident, domain):
            return False  # e.g. a DNS tunnel window of the same host and resolver, for another domain
        return any((c := conns.get(u)) is not None and _conn_in_label(c, lb) for u in w.uids)
    if not lb.resp_h and not lb.domain:
        return True
    if ident in lb.resp_h or _HEX32.match(ident):
        return True
    return bool(domain) and _in_domain(ident, domain)


def _in_domain(ident: str, domain: str) -> bool:
    """`ident` is `domain` or one of its parents."""
    return ident == domain or domain.endswith("." + ident)


def _is_name(ident: str) -> bool:
    """A window identifier that is a DNS name (not an address, not a JA3S hash)."""
    if _HEX32.match(ident):
        return False
    try:
        ipaddress.ip_address(ident)
    except ValueError:
        return True
    return False


def notice_matches(n: Notice, lb: Label, agg: float) -> bool:
    return n.orig_h == lb.orig_h and n.resp_p == lb.resp_p and lb.start <= n.ts <= lb.end + agg + LOG_DELAY


# -- metrics ----------------------------------------------------------------------------------------------
def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _host_days(windows: list[Window]) -> int:
    return len({(w.orig_h, dt.datetime.fromtimestamp(w.ts, tz=dt.timezone.utc).date()) for w in windows})


def _rank(w: Window) -> float:
    """A window's score for ordering; an unscored window ranks below every threshold."""
    return w.score if w.score is not None else -math.inf


def pr_curve(windows: list[Window], positive: list[bool], matched_episodes: list[set[int]], n_episodes: int,
             host_days: int, max_points: int = 200) -> list[dict[str, float | None]]:
    """Precision/recall/FP-per-host-day for thresholds at the distinct window scores (at most max_points)."""
    scores = sorted({w.score for w in windows if w.score is not None}, reverse=True)
    if len(scores) > max_points:
        step = (len(scores) - 1) / (max_points - 1)
        scores = [scores[round(i * step)] for i in range(max_points)]
    order = sorted(range(len(windows)), key=lambda i: -_rank(windows[i]))
    curve = []
    tp = fp = 0
    found: set[int] = set()
    k = 0
    for t in scores:
        while k < len(order) and _rank(windows[order[k]]) >= t:
            i = order[k]
            if positive[i]:
                tp += 1
            else:
                fp += 1
            found |= matched_episodes[i]
            k += 1
        curve.append({"threshold": t, "precision": _ratio(tp, tp + fp), "recall": _ratio(len(found), n_episodes),
                      "fp_per_host_day": _ratio(fp, host_days), "tp_windows": tp, "fp_windows": fp})
    return curve


def average_precision(curve: list[dict[str, float | None]]) -> float | None:
    """Step-wise area under the PR curve (sum of recall increments times precision), thresholds descending."""
    if not curve:
        return None
    ap, last_recall = 0.0, 0.0
    for point in curve:
        recall, precision = point["recall"] or 0.0, point["precision"] or 0.0
        ap += (recall - last_recall) * precision
        last_recall = recall
    return ap


def evaluate(results: Results, labels: list[Label], threshold: float = 0.8,
             aggregation_interval: float = 10800.0) -> dict[str, Any]:
    """All figures of the report, as a JSON-ready dict."""
    agg = aggregation_interval
    windows, notices, conns = results.windows, results.notices, results.conns
    episodes = [lb for lb in labels if not lb.benign]
    benign = [lb for lb in labels if lb.benign]
    by_host_port: dict[tuple[str, int], list[int]] = defaultdict(list)
    for j, lb in enumerate(labels):
        by_host_port[(lb.orig_h, lb.resp_p)].append(j)
    # Which labels each window / notice matches (indices into `labels`).
    win_labels: list[set[int]] = []
    for w in windows:
        win_labels.append({j for j in by_host_port.get((w.orig_h, w.resp_p), ())
                           if window_matches(w, labels[j], agg, conns)})
    notice_labels: list[set[int]] = []
    for n in notices:
        notice_labels.append({j for j in by_host_port.get((n.orig_h or "", n.resp_p or -1), ())
                              if notice_matches(n, labels[j], agg)})
    exfil_idx = {j for j, lb in enumerate(labels) if not lb.benign}
    flagged = [w.score is not None and w.score >= threshold for w in windows]
    positive = [bool(s & exfil_idx) for s in win_labels]

    episode_rows: list[dict[str, Any]] = []
    for j, lb in enumerate(labels):
        scores = [w.score for w, s in zip(windows, win_labels) if j in s and w.score is not None]
        # A benign label is flagged only by windows/notices that hold no exfiltration as well.
        notes = sorted({n.note for n, s in zip(notices, notice_labels)
                        if j in s and not (lb.benign and s & exfil_idx)})
        by_window = any(f and j in s and not (lb.benign and s & exfil_idx) for f, s in zip(flagged, win_labels))
        episode_rows.append({
            "id": lb.id, "kind": lb.kind, "orig_h": lb.orig_h, "resp_p": lb.resp_p, "domain": lb.domain,
            "start": lb.start, "end": lb.end, "bytes_sent": lb.bytes_sent,
            "windows": sum(1 for s in win_labels if j in s), "max_score": max(scores) if scores else None,
            "found_by_window": by_window, "notices": notes, "found": by_window or bool(notes),
        })

    kinds: dict[str, dict[str, Any]] = {}
    for row, lb in zip(episode_rows, labels):
        k = kinds.setdefault(lb.kind, {"kind": lb.kind, "benign": lb.benign, "episodes": 0, "found": 0,
                                       "found_by_window": 0, "found_by_notice": Counter()})
        k["episodes"] += 1
        k["found"] += row["found"]
        k["found_by_window"] += row["found_by_window"]
        for note in row["notices"]:
            k["found_by_notice"][note] += 1
    for k in kinds.values():
        k["found_by_notice"] = dict(sorted(k["found_by_notice"].items()))
        k["recall" if not k["benign"] else "flag_rate"] = _ratio(k["found"], k["episodes"])

    host_days = _host_days(windows)
    tp = sum(1 for f, p in zip(flagged, positive) if f and p)
    fp = sum(1 for f, p in zip(flagged, positive) if f and not p)
    benign_idx = {j for j, lb in enumerate(labels) if lb.benign}
    notice_summary: dict[str, dict[str, int]] = {}
    for n, s in zip(notices, notice_labels):
        entry = notice_summary.setdefault(n.note, {"total": 0, "match_exfil": 0, "match_benign": 0, "unlabelled": 0})
        entry["total"] += 1
        if s & exfil_idx:
            entry["match_exfil"] += 1
        elif s & benign_idx:
            entry["match_benign"] += 1
        else:
            entry["unlabelled"] += 1
    false_notices = sum(e["total"] - e["match_exfil"] for e in notice_summary.values())
    found = sum(1 for row, lb in zip(episode_rows, labels) if not lb.benign and row["found"])
    curve = pr_curve(windows, positive, [s & exfil_idx for s in win_labels], len(episodes), host_days)
    scored = [w for w in windows if w.score is not None]

    def hist(values: list[float]) -> list[int]:
        counts = [0] * 20
        for v in values:
            counts[min(int(v * 20), 19) if v >= 0 else 0] += 1
        return counts

    return {
        "settings": {"threshold": threshold, "aggregation_interval": agg,
                     "matching": "uid via conn.log" if conns is not None else "identifier (no conn.log)"},
        "notes": results.notes,
        "episodes": {"total": len(episodes), "found": found, "recall": _ratio(found, len(episodes)),
                     "benign_labels": len(benign),
                     "benign_flagged": sum(1 for row, lb in zip(episode_rows, labels) if lb.benign and row["found"])},
        "kinds": sorted(kinds.values(), key=lambda k: (k["benign"], k["kind"])),
        "windows": {"total": len(windows), "scored": len(scored), "flagged": tp + fp, "true_positive": tp,
                    "false_positive": fp, "precision": _ratio(tp, tp + fp),
                    "labelled_exfil": sum(positive),
                    "flagged_benign_labelled": sum(1 for f, s in zip(flagged, win_labels) if f and s & benign_idx
                                                   and not s & exfil_idx)},
        "host_days": host_days,
        "fp_windows_per_host_day": _ratio(fp, host_days),
        "notices": notice_summary,
        "false_notices_per_host_day": _ratio(false_notices, host_days),
        "pr_curve": curve,
        "average_precision": average_precision(curve),
        "score_histogram": {
            "bins": [i / 20 for i in range(21)],
            "exfil": hist([w.score for w, p in zip(windows, positive) if p and w.score is not None]),
            "benign_labelled": hist([w.score for w, s in zip(windows, win_labels)
                                     if s & benign_idx and not s & exfil_idx and w.score is not None]),
            "unlabelled": hist([w.score for w, s in zip(windows, win_labels) if not s and w.score is not None]),
        },
        "per_label": episode_rows,
    }
