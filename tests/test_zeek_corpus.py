"""pcapexfil against real Zeek: every case of ../shared/zeek-corpus, field by field.

Run as a test (asserts the issue's agreement thresholds and prints the table), or as a
script to look at one case:

    python tests/test_zeek_corpus.py                  # the agreement table
    python tests/test_zeek_corpus.py --diff CASE      # every differing connection of CASE
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
from record_sink import RecordCollector
from zeek_logs import (  # tests/ is on sys.path under pytest and as a script
    KEY_FIELDS,
    ZeekLog,
    read_zeek_log,
)

from pcapexfil.pipeline import RunOptions, run
from pcapexfil.record import ConnRecord
from pcapexfil.identifiers.websocket import NAME as WEBSOCKET
from pcapexfil.services import RECOGNISERS
from pcapexfil.services.expected import FTP_DATA, IRC_DATA
from pcapexfil.source import CaptureError

CORPUS = os.environ.get(
    "PCAPEXFIL_ZEEK_CORPUS",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "zeek-corpus"),
)
MASKED_TS = "XXXXXXXXXX.XXXXXX"
EXACT_FIELDS = (
    "orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes",
    "orig_bytes", "resp_bytes", "missed_bytes", "conn_state", "history",
)  # fmt: skip
# Cases whose Zeek run did not see the whole trace: comparing would measure the filter.
EXCLUDED = {
    "core.pcap.dynamic-filter": "Zeek's script installed packet filters while reading the trace",
}
# Cases whose Zeek ran in bare mode (`zeek -b`, loading base/protocols/conn and no protocol
# script), read from the test's @TEST-EXEC line in zeek/zeek testing/btest: pcapexfil models
# them with RunOptions.zeek_bare_mode (empty likely_server_ports, no DNS analyzer timer), and
# their `service` column is not compared (no protocol analyzer was loaded to confirm one).
BARE_MODE = {
    "core.tunnels.gre-aruba-amsdu": "zeek -b -r $TRACES/tunnels/gre-aruba-amsdu.pcap %INPUT",
    "scripts.base.frameworks.logging.field-extension-complex": "bro -b -r $TRACES/wikipedia.trace %INPUT",
    "scripts.base.frameworks.logging.field-extension-optional": "zeek -b -r $TRACES/wikipedia.trace %INPUT",
    "scripts.base.frameworks.logging.field-name-map": "zeek -b -r $TRACES/wikipedia.pcap %INPUT",
    "scripts.base.frameworks.logging.scope_sep": "zeek -b -r $TRACES/wikipedia.pcap %INPUT",
}
# Cases that renamed the id columns (Log::field_name_map, a scope separator other than '.').
RENAMED_ID_COLUMNS = {
    "src": "id.orig_h", "src_ip": "id.orig_h", "id_orig_h": "id.orig_h",
    "src_port": "id.orig_p", "id_orig_p": "id.orig_p",
    "dst": "id.resp_h", "dst_ip": "id.resp_h", "id_resp_h": "id.resp_h",
    "dst_port": "id.resp_p", "id_resp_p": "id.resp_p",
}  # fmt: skip
# service is compared for the protocols pcapexfil recognises: the identifiers' ssl/http/dns,
# pcapexfil.services' recognisers, the FTP data channels and IRC DCC transfers they announce
# (services.expected), the WebSocket analyzer an HTTP upgrade attaches and
# the UDP tunnels a carrier names (flow.table.tunnel_parent_uid).
TUNNEL_SERVICES = frozenset({"vxlan", "geneve", "gtpv1", "teredo", "ayiya"})
KNOWN_SERVICES = (frozenset({"ssl", "http", "dns", FTP_DATA, IRC_DATA, WEBSOCKET})
                  | frozenset(r.name for r in RECOGNISERS) | TUNNEL_SERVICES)
THRESHOLDS = {
    "orig_pkts": 0.99, "resp_pkts": 0.99, "orig_ip_bytes": 0.99, "resp_ip_bytes": 0.99,
    "orig_bytes": 0.98, "resp_bytes": 0.98, "missed_bytes": 0.98,
    "conn_state": 0.95, "history": 0.95, "duration": 0.99,
}  # fmt: skip


def _ours(rec: ConnRecord, name: str) -> str:
    """Our value rendered the way Zeek's TSV writer would."""
    value = getattr(rec, name)
    if value is None:
        return "-"
    if name == "duration":
        return f"{value:.6f}"
    if name == "history":
        return value or "-"
    return str(value)


@dataclass
class CaseResult:
    name: str
    skipped: str | None = None
    zeek_conns: int = 0
    found: int = 0
    extra: int = 0
    agree: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    diffs: list[str] = field(default_factory=list)
    # Every difference as (connection 5-tuple, field): a field name, or "missing"/"extra".
    differing: set[tuple[tuple[str, ...], str]] = field(default_factory=set)


def cases() -> list[tuple[str, str, str]]:
    path = os.path.join(CORPUS, "MANIFEST.tsv")
    out = []
    with open(path, encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            case, trace, flags = parts[0], parts[1], parts[3] if len(parts) > 3 else ""
            out.append((case, os.path.basename(trace), flags))
    return out


def _restore_id_columns(log: ZeekLog) -> None:
    """Give renamed id columns back their standard names, so those cases are compared too."""
    log.fields = [RENAMED_ID_COLUMNS.get(name, name) for name in log.fields]
    log.rows = [{RENAMED_ID_COLUMNS.get(k, k): v for k, v in row.items()} for row in log.rows]


def run_case(case: str, trace: str, flags: str) -> CaseResult:
    result = CaseResult(case)
    if case in EXCLUDED:
        result.skipped = EXCLUDED[case]
        return result
    log = read_zeek_log(os.path.join(CORPUS, case, "conn.log"))
    if not log.has(KEY_FIELDS):
        _restore_id_columns(log)
    has_ids = log.has(KEY_FIELDS)
    by_count = not has_ids and "ts" not in log.fields  # one row, one record, or no pairing
    if by_count and len(log.rows) != 1:
        result.skipped = (
            "conn.log lacks the connection id columns and ts (a script's print-out) and has "
            f"{len(log.rows)} rows: nothing pairs them with connections"
        )
        return result
    sink = RecordCollector()
    opts = RunOptions(out_dir=None, verify_checksums="-C" not in flags.split(), local_nets=(), seed=0,
                      zeek_bare_mode=case in BARE_MODE)
    try:
        run([os.path.join(CORPUS, case, trace)], opts, [sink])
    except CaptureError as exc:  # counted: every Zeek connection of the case is then missing
        result.diffs.append(f"  unreadable: {exc}")

    # Rows are paired with records by 5-tuple (and ts); a print-out without the id columns
    # by ts alone, or, with one row and no ts, with the one record of the trace.
    ours: dict[tuple, list[ConnRecord]] = defaultdict(list)
    for rec in sorted(sink.records, key=lambda r: r.ts):
        ours[_key(rec) if has_ids else ()].append(rec)
    compared = [f for f in (*EXACT_FIELDS, "duration") if f in log.fields]
    result.zeek_conns = len(log.rows)
    for row in log.rows:
        key = (row["proto"], row["id.orig_h"], row["id.orig_p"], row["id.resp_h"], row["id.resp_p"]) if has_ids else ()
        candidates = ours.get(key, [])
        if by_count and len(candidates) > 1:
            candidates = []
        match = None
        if row.get("ts", MASKED_TS) == MASKED_TS:
            match = candidates[0] if candidates else None
        else:
            ts = float(row["ts"])
            match = next((c for c in candidates if abs(c.ts - ts) <= 0.001), None)
        if match is None:
            result.diffs.append(f"  missing  {' '.join(key) or '(no id columns)'}  zeek: {_summary(row)}")
            result.differing.add((key, "missing"))
            continue
        candidates.remove(match)
        result.found += 1
        delta = []
        for name in compared:
            zeek_value = row[name]
            ours_value = _ours(match, name)
            result.total[name] += 1
            if name == "duration":
                same = zeek_value == ours_value or (
                    zeek_value != "-" and ours_value != "-" and abs(float(zeek_value) - float(ours_value)) <= 2e-6
                )
            else:
                same = zeek_value == ours_value
            if same:
                result.agree[name] += 1
            else:
                delta.append(f"{name}: zeek={zeek_value} ours={ours_value}")
                result.differing.add((_key(match), name))
        if "service" in log.fields and case not in BARE_MODE:
            zeek_services = set(row["service"].split(",")) & KNOWN_SERVICES
            result.total["service"] += 1
            if zeek_services == set(match.service) & KNOWN_SERVICES:
                result.agree["service"] += 1
            else:
                delta.append(f"service: zeek={row['service']} ours={','.join(match.service) or '-'}")
                result.differing.add((_key(match), "service"))
        if delta:
            result.diffs.append(f"  differs  {' '.join(_key(match))}  " + "; ".join(delta))
    for left in ours.values():
        for rec in left:
            result.extra += 1
            result.differing.add((_key(rec), "extra"))
            result.diffs.append(
                f"  extra    {' '.join(_key(rec))}  ours: {rec.conn_state} {rec.history or '-'} "
                f"pkts={rec.orig_pkts}/{rec.resp_pkts}"
            )
    return result


def _key(rec: ConnRecord) -> tuple[str, ...]:
    return (rec.proto, rec.orig_h, str(rec.orig_p), rec.resp_h, str(rec.resp_p))


def _summary(row: dict[str, str]) -> str:
    return " ".join(f"{k}={row[k]}" for k in ("conn_state", "history", "orig_pkts", "resp_pkts") if k in row)


KNOWN_DIFFERENCES = os.path.join(os.path.dirname(__file__), "zeek_corpus_known_differences.tsv")


def known_differences() -> dict[tuple[str, tuple[str, ...], str], str]:
    """(case, 5-tuple, field) -> why, for every difference docs/corpus-differences.md explains."""
    out = {}
    with open(KNOWN_DIFFERENCES, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            case, proto, oh, op, rh, rp, name, why = line.rstrip("\n").split("\t")
            out[(case, (proto, oh, op, rh, rp), name)] = why
    return out


def run_corpus() -> list[CaseResult]:
    return [run_case(*c) for c in cases()]


def agreement_table(results: list[CaseResult]) -> tuple[str, dict[str, float], float, float]:
    compared = [r for r in results if r.skipped is None]
    zeek = sum(r.zeek_conns for r in compared)
    found = sum(r.found for r in compared)
    extra = sum(r.extra for r in compared)
    lines = [
        f"cases: {len(results)} ({len(compared)} compared, {len(results) - len(compared)} skipped)",
        f"Zeek connections: {zeek}; found {found} ({found / max(zeek, 1):.2%}); "
        f"extra {extra} ({extra / max(zeek, 1):.2%})",
        f"{'field':<15}{'agree':>8}{'of':>8}{'rate':>10}{'needed':>9}",
    ]
    rates: dict[str, float] = {}
    for name in (*EXACT_FIELDS, "duration"):
        agree = sum(r.agree[name] for r in compared)
        total = sum(r.total[name] for r in compared)
        rates[name] = agree / total if total else 1.0
        lines.append(f"{name:<15}{agree:>8}{total:>8}{rates[name]:>10.2%}{THRESHOLDS[name]:>9.0%}")
    agree = sum(r.agree["service"] for r in compared)
    total = sum(r.total["service"] for r in compared)
    lines.append(f"{'service*':<15}{agree:>8}{total:>8}{agree / max(total, 1):>10.2%}{'-':>9}")
    lines.append("* the recognised services (KNOWN_SERVICES); every difference is listed per case in "
                 "tests/zeek_corpus_known_differences.tsv")
    skipped = [r for r in results if r.skipped]
    if skipped:
        lines.append("skipped cases:")
        lines.extend(f"  {r.name}: {r.skipped}" for r in skipped)
    return "\n".join(lines), rates, found / max(zeek, 1), extra / max(zeek, 1)


@pytest.mark.corpus
def test_zeek_corpus_agreement(capsys: pytest.CaptureFixture[str]) -> None:
    if not os.path.isfile(os.path.join(CORPUS, "MANIFEST.tsv")):
        pytest.fail(f"Zeek corpus not found at {CORPUS} (set PCAPEXFIL_ZEEK_CORPUS)")
    results = run_corpus()
    table, rates, found, extra = agreement_table(results)
    with capsys.disabled():
        print("\n" + table)
    assert found >= 0.99, table
    assert extra <= 0.01, table
    for name, needed in THRESHOLDS.items():
        assert rates[name] >= needed, f"{name}: {rates[name]:.2%} < {needed:.0%}\n{table}"
    # Per case and field: a connection that agrees must keep agreeing (no aggregate rate
    # hides one regression), and a listed difference that went away leaves the list.
    got = {(r.name, key, name) for r in results for key, name in r.differing}
    known = set(known_differences())
    assert not got - known, "new differences:\n" + "\n".join(map(str, sorted(got - known)))
    assert not known - got, "listed differences that agree now:\n" + "\n".join(map(str, sorted(known - got)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diff", metavar="CASE", nargs="*", help="show the differing connections of CASE(s); "
                        "no CASE: of every case")
    args = parser.parse_args(argv)
    all_cases = cases()
    if args.diff is not None:
        wanted = set(args.diff)
        for case in all_cases:
            if wanted and case[0] not in wanted:
                continue
            r = run_case(*case)
            if r.skipped:
                print(f"{r.name}: skipped: {r.skipped}")
            elif r.diffs:
                print(f"{r.name}: {r.found}/{r.zeek_conns} found, {r.extra} extra")
                print("\n".join(r.diffs))
        return 0
    print(agreement_table(run_corpus())[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
