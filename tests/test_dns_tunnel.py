"""The dns-tunnel rule: what it measures, each benign look-alike family staying quiet, tunnels
(through the local resolver and direct) found under both scorings, --no-rule, the state
store, and `detect` over dns.log giving what `analyze` gives."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from pcapexfil.cli import main
from pcapexfil.detect.detector import RULES, Detector, Settings
from pcapexfil.detect.dnstunnel.history import Element, History
from pcapexfil.detect.dnstunnel.rule import COLUMN, NOTE
from pcapexfil.detect.dnstunnel.score import DnsTunnelParams, judge
from pcapexfil.detect.dnstunnel.window import DnsWindow, split_name
from pcapexfil.detect.state import StateStore
from pcapexfil.record import ConnRecord, DnsQuery
from pcapexfil.synth import SynthConfig, generate, read_labels
from pcapexfil.zeekread import read_log

HOST, OTHERS, RESOLVER = "10.0.0.5", ("10.0.0.6", "10.0.0.7", "10.0.0.8"), "10.0.0.1"
DAY = 86400.0
T0 = 1_699_920_000.0  # 2023-11-14 00:00 UTC
A, CNAME, PTR, TXT = 1, 5, 12, 16
DAYS = 11  # ten days of history, then the day under test


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def lookups(orig_h: str, names: list[str], start: float, span: float, qtype: int = A, answer: int = 16,
            resp_h: str = RESOLVER, resp_p: int = 53) -> list[ConnRecord]:
    """One UDP connection per lookup, evenly spread over `span` seconds."""
    step = span / max(len(names), 1)
    return [ConnRecord(start + i * step, f"C{orig_h}-{start + i * step:.6f}-{i}", orig_h, 40000 + i % 9000, resp_h,
                       resp_p, "udp", duration=0.02, orig_ip_bytes=40 + len(name), resp_ip_bytes=60 + answer,
                       dns_queries=[DnsQuery(start + i * step, name, qtype, answer)])
            for i, name in enumerate(names)]


def tunnel(orig_h: str, domain: str, size: int, queries: int, start: float, span: float,
           resp_h: str = RESOLVER, seed: int = 0) -> list[ConnRecord]:
    """`size` bytes of random payload as base32 labels of at most 60 characters, TXT queries."""
    payload = np.random.default_rng(seed).bytes(size)
    chunk = -(-size // queries)
    names = []
    for i in range(queries):
        text = _b32(payload[i * chunk:(i + 1) * chunk])
        names.append(".".join([*(text[k:k + 60] for k in range(0, len(text), 60)), f"{i:04x}", domain]))
    return lookups(orig_h, names, start, span, TXT, 40, resp_h)


def reputation(rng: np.random.Generator, host: str, day: int, count: int) -> list[ConnRecord]:
    names = [f"{rng.bytes(20).hex()}.{int(rng.integers(0, 8))}.avqs.sentry-av.com" for _ in range(count)]
    return lookups(host, names, T0 + day * DAY + 8 * 3600, 9 * 3600)


def cdn(rng: np.random.Generator, host: str, day: int, count: int) -> list[ConnRecord]:
    nodes = [f"r{k}---sn-{_b32(rng.bytes(5))}.cdn.vendor.net" for k in range(12)]
    device = f"{rng.bytes(16).hex()}.v10.events.vendor.net"
    names = [nodes[int(rng.integers(0, 12))] if rng.random() < 0.6 else device for _ in range(count)]
    return lookups(host, names, T0 + day * DAY + 8 * 3600, 9 * 3600)


def dkim_spf(rng: np.random.Generator, host: str, day: int, count: int) -> list[ConnRecord]:
    senders = [f"sender{k}-mail.com" for k in range(300)]
    names = []
    for _ in range(count):
        sender = senders[int(rng.integers(0, 300))]
        names += [sender, f"s1._domainkey.{sender}", f"_dmarc.{sender}"]
    return lookups(host, names, T0 + day * DAY, DAY - 60, TXT, answer=420)


def ptr(rng: np.random.Generator, host: str, day: int, count: int) -> list[ConnRecord]:
    names = [".".join(str(int(x)) for x in rng.integers(1, 255, 4)) + ".in-addr.arpa" for _ in range(count)]
    return lookups(host, names, T0 + day * DAY, DAY - 60, PTR, answer=30)


def mdns(rng: np.random.Generator, host: str, day: int, count: int) -> list[ConnRecord]:
    services = ["_googlecast._tcp.local", "_airplay._tcp.local", f"desktop-{rng.bytes(4).hex()}.local"]
    out = lookups(host, [services[int(rng.integers(0, 3))] for _ in range(count)], T0 + day * DAY, DAY - 60,
                  PTR, resp_h="224.0.0.251", resp_p=5353)
    names = [f"host-{rng.bytes(6).hex()}" for _ in range(count)]
    return out + lookups(host, names, T0 + day * DAY + 30, DAY - 90, resp_h="224.0.0.252", resp_p=5355)


FAMILIES = {"reputation": (reputation, 150), "cdn": (cdn, 80), "dkim_spf": (dkim_spf, 300), "ptr": (ptr, 2000),
            "mdns": (mdns, 300)}


def history(families: list[str], hosts: tuple[str, ...] = (HOST, *OTHERS), days: int = DAYS,
            last_day_factor: float = 1.0, seed: int = 1) -> list[ConnRecord]:
    """Every host does each family daily; on the last day, `last_day_factor` times as much."""
    rng = np.random.default_rng(seed)
    out: list[ConnRecord] = []
    for day in range(days):
        factor = last_day_factor if day == days - 1 else 1.0
        for name in families:
            make, count = FAMILIES[name]
            for host in hosts:
                out += make(rng, host, day, int(count * factor * rng.uniform(0.6, 1.4)))
    return out


def run(records: list[ConnRecord], out: Path, scoring: str = "reference", db: str | None = None,
        **settings: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Feed records (sorted by end) to a Detector writing into `out` (with the state store `db`);
    its exfil_detection.log and notice.log rows."""
    out.mkdir(parents=True, exist_ok=True)
    store = StateStore(db) if db else None
    det = Detector(Settings(scoring=scoring, **settings), out_dir=str(out), store=store)
    now = 0.0
    for rec in sorted(records, key=lambda r: r.ts + (r.duration or 0.0)):
        now = max(now, rec.ts + (rec.duration or 0.0))
        det.on_time(now)
        det.on_record(rec)
    det.close(now)
    if store is not None:
        store.close()
    return list(read_log(str(out / "exfil_detection.log"))), list(read_log(str(out / "notice.log")))


def dns_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get(COLUMN) is not None]


# -- what is measured ------------------------------------------------------------------------
def test_split_name_keeps_registered_domains_and_drops_local_reverse_and_addresses() -> None:
    assert split_name("a1b2.c3.tunnel.example.co.uk", "psl") == ("example.co.uk", "a1b2.c3.tunnel")
    assert split_name("example.com", "psl") == ("example.com", "")
    assert split_name("x.y.example.co.uk", "last2") == ("co.uk", "x.y.example")
    for name in ("printer.local", "4.3.2.1.in-addr.arpa", "wpad", "10.1.2.3", "2001:db8::1"):
        assert split_name(name, "psl") is None, name


@pytest.mark.parametrize("encoding", ["base32", "hex", "base64"])
def test_window_info_estimates_the_payload_whatever_the_encoding(encoding: str) -> None:
    payload = np.random.default_rng(3).bytes(60_000)
    win = DnsWindow(0, HOST, "t.com", 0.0, 10800.0)
    for i in range(0, len(payload), 100):
        part = payload[i:i + 100]
        text = {"base32": _b32(part), "hex": part.hex(),
                "base64": base64.urlsafe_b64encode(part).decode().rstrip("=").lower()}[encoding]
        sub = ".".join(text[k:k + 60] for k in range(0, len(text), 60))
        win.add(float(i), f"{sub}.t.com", sub, TXT, 10)
        win.add(float(i), f"{sub}.t.com", sub, TXT, 10)  # a repeated name carries nothing new
    assert win.queries == 2 * len(win.names) == 1200
    # Lowercased base64 keeps about 5.2 of its 6 bits per character.
    low = 0.8 if encoding == "base64" else 0.95
    assert low * len(payload) <= win.info <= 1.05 * len(payload)


def test_judge_uses_the_domains_history_once_established_and_the_hosts_before() -> None:
    p = DnsTunnelParams()
    hist = History(14 * DAY)
    days = [f"2023-11-{14 + d:02d}" for d in range(5)]
    for d, day in enumerate(days[:4]):  # the domain carried 150 kB a day, from another host
        hist.add(Element(OTHERS[0], "av.com", day, T0 + d * DAY, 150_000.0, 900, 900))
    win = DnsWindow(0, HOST, "av.com", T0 + 4 * DAY, T0 + 4 * DAY)
    win.unique_chars, win.hist = 400_000, {c: 1 for c in "0123456789abcdef"}  # 200 kB of info
    hist.add(Element(HOST, "av.com", days[4], T0 + 4 * DAY, win.info, 1000, 1000))
    known = judge(win, days[4], T0 + 4 * DAY, hist, p)
    assert known.established and known.reference == pytest.approx(150_000.0) and known.score < 0.3
    win.domain = "new.com"
    hist.add(Element(HOST, "new.com", days[4], T0 + 4 * DAY, win.info, 1000, 1000))
    new = judge(win, days[4], T0 + 4 * DAY, hist, p)
    assert not new.established and new.reference == pytest.approx(p.prior) and new.score > 0.8


# -- the look-alikes stay quiet ---------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_benign_look_alike_family_is_not_flagged(family: str, tmp_path: Path) -> None:
    """Each family daily on four hosts for ten days, then three times as much on the last day."""
    rows, notices = run(history([family], last_day_factor=3.0), tmp_path)
    assert not [n for n in notices if n["note"] == NOTE]
    scores = [r[COLUMN] for r in dns_rows(rows)]
    if family in ("ptr", "mdns"):  # reverse lookups and multicast names are not counted at all
        assert scores == []
    elif family == "dkim_spf":  # three names per sender domain: below min_names
        assert scores == []
    else:
        assert scores and max(scores) < 0.5


# -- tunnels are found --------------------------------------------------------------------------
@pytest.mark.parametrize("scoring", ["reference", "robust"])
def test_tunnel_through_the_local_resolver_raises_a_notice(scoring: str, tmp_path: Path) -> None:
    """The issue's case: 1.8 MB as 6,000 TXT queries of base32 labels under one new domain over
    two hours, through the usual resolver, among every look-alike family."""
    records = history(sorted(FAMILIES)) + tunnel(HOST, "exfil-tun.net", 1_800_000, 6000,
                                                 T0 + (DAYS - 1) * DAY + 10 * 3600, 7200)
    rows, notices = run(records, tmp_path, scoring)
    found = [n for n in notices if n["note"] == NOTE]
    assert len(found) == 1
    n = found[0]
    assert n["src"] == HOST and n["p"] == 53
    assert "sent 6000 queries" in n["msg"] and "under exfil-tun.net" in n["msg"]
    name_bytes = int(n["msg"].split("(")[1].split(" bytes")[0])
    assert name_bytes == sum(len(q.query) for r in records for q in r.dns_queries if q.query.endswith("exfil-tun.net"))
    flagged = [r for r in dns_rows(rows) if r[COLUMN] >= 0.8]
    assert [(r["orig_h"], r["resp_p"], r["identifier"]) for r in flagged] == [(HOST, 53, "exfil-tun.net")]
    assert flagged[0]["exfiltration_score"] == flagged[0][COLUMN]
    assert max(r[COLUMN] for r in dns_rows(rows) if r["identifier"] != "exfil-tun.net") < 0.5


def test_small_direct_tunnel_is_found(tmp_path: Path) -> None:
    """0.2 MB straight to an outside server, spread over six hours (two windows)."""
    records = history(["reputation", "cdn"]) + tunnel(HOST, "t9-tunnel.org", 200_000, 1200,
                                                      T0 + (DAYS - 1) * DAY + 3600, 6 * 3600, "203.0.113.9")
    _, notices = run(records, tmp_path)
    found = {(n["src"], n["p"], "under t9-tunnel.org" in n["msg"]) for n in notices if n["note"] == NOTE}
    assert found == {(HOST, 53, True)}


def test_no_rule_gives_exactly_the_output_without_the_rule(tmp_path: Path) -> None:
    records = history(["reputation"], days=3) + tunnel(HOST, "tun.net", 500_000, 2000, T0 + 2 * DAY, 3600)
    records += [ConnRecord(T0 + DAY + 60 * k, f"W{k}", HOST, 50000 + k, "198.51.100.7", 443, "tcp", duration=1.0,
                           orig_ip_bytes=5000 + 100 * k, resp_ip_bytes=90000, server_name="www.site.com")
                for k in range(500)]
    on_rows, on_notices = run(records, tmp_path / "on", baseline_min_days_for_score=1)
    off_rows, off_notices = run(records, tmp_path / "off", baseline_min_days_for_score=1,
                                rules=tuple(r for r in RULES if r != "dns-tunnel"))
    assert dns_rows(on_rows) and any(n["note"] == NOTE for n in on_notices)
    header = next(line for line in (tmp_path / "off" / "exfil_detection.log").read_text().splitlines()
                  if line.startswith("#fields"))
    assert COLUMN not in header and "score.pcr" in header
    assert off_rows == [{k: v for k, v in r.items() if k != COLUMN} for r in on_rows if r[COLUMN] is None]
    assert off_notices == [n for n in on_notices if n["note"] != NOTE]


def test_state_store_runs_in_two_parts_equal_one_run(tmp_path: Path) -> None:
    """A tunnel cut by the end of the first run: its open window and the history carry over."""
    cut = T0 + (DAYS - 1) * DAY + 11 * 3600
    records = history(["reputation", "cdn"]) + tunnel(HOST, "tun.net", 600_000, 3000, cut - 3600, 7200)
    one = run(records, tmp_path / "one", db=str(tmp_path / "one.db"))
    db = str(tmp_path / "two.db")
    first = run([r for r in records if r.ts + (r.duration or 0.0) < cut], tmp_path / "a", db=db)
    store = StateStore(db)
    carried = store.load()
    store.close()
    assert [w.domain for w in carried.dns_windows if w.orig_h == HOST and w.domain == "tun.net"] == ["tun.net"]
    assert carried.dns_history
    second = run([r for r in records if r.ts + (r.duration or 0.0) >= cut], tmp_path / "b", db=db)
    assert any(n["note"] == NOTE for n in one[1])
    assert first[0] + second[0] == one[0]
    assert first[1] + second[1] == one[1]


def test_detect_over_dns_log_equals_analyze(tmp_path: Path) -> None:
    """`detect` over the logs `conn` wrote (dns.log included) finds what `analyze` finds."""
    data = tmp_path / "data"
    generate(SynthConfig(out_dir=str(data), days=3, hosts=4, seed=4, baseline_days=1, episodes_per_kind=1))
    tunnel_label = next(lb for lb in read_labels(data / "labels.csv") if lb.kind == "dns_tunnel")
    pcaps = sorted(str(p) for p in data.glob("*.pcap"))
    runner = CliRunner()
    common = ["--local-nets", "10.0.0.0/8"]
    for args in (["analyze", *pcaps, "-o", str(tmp_path / "a"), "--seed", "1", *common],
                 ["conn", *pcaps, "-o", str(tmp_path / "logs"), "--seed", "1", "--local-nets", "10.0.0.0/8"],
                 ["detect", str(tmp_path / "logs"), "-o", str(tmp_path / "d"), *common]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    # A record's effective time differs (analyze: when the flow table logs it, detect: its end),
    # so windows may start a little apart: the same windows are flagged, the same notices raised.
    flagged = []
    for run_dir in ("a", "d"):
        rows = dns_rows(list(read_log(str(tmp_path / run_dir / "exfil_detection.log"))))
        notes = [n for n in read_log(str(tmp_path / run_dir / "notice.log")) if n["note"] == NOTE]
        flagged.append(({(r["orig_h"], r["identifier"]) for r in rows if r[COLUMN] >= 0.8},
                        [(n["src"], n["msg"]) for n in notes]))
    assert flagged[0] == flagged[1]
    assert flagged[0][0] == {(tunnel_label.orig_h, tunnel_label.domain)}


def test_baseline_commands_show_merge_and_name_the_dns_history(tmp_path: Path) -> None:
    records = history(["reputation"], days=2) + tunnel(HOST, "tun.net", 300_000, 1500, T0 + DAY, 3600)
    db = str(tmp_path / "a.db")
    run(records, tmp_path / "a", db=db)
    store = StateStore(db)
    stored = store.load().dns_history
    store.close()
    assert {e.domain for e in stored if e.orig_h == HOST} == {"sentry-av.com", "tun.net"}
    runner = CliRunner()
    shown = runner.invoke(main, ["baseline", "show", "--state", db])
    assert shown.exit_code == 0
    lines = shown.output.splitlines()
    start = lines.index(f"# dns-tunnel history: hosts={len({e.orig_h for e in stored})}")
    assert f"{HOST}\t2\t{sum(e.orig_h == HOST for e in stored)}" in "\n".join(lines[start:])
    exported = runner.invoke(main, ["baseline", "export", "--state", db, "-o", str(tmp_path / "x.jsonl")])
    assert exported.exit_code == 0 and "dns-tunnel rule's history is not exported" in exported.stderr
    merged = runner.invoke(main, ["baseline", "merge", db, db, "-o", str(tmp_path / "m.db")])
    assert merged.exit_code == 0, merged.output
    store = StateStore(str(tmp_path / "m.db"))
    assert sorted(store.load().dns_history, key=repr) == sorted(stored + stored, key=repr)
    store.close()
