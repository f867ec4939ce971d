"""DNS: dns.log rows (UDP and TCP), Zeek's pairing rules, and DNS-derived connection names."""

from __future__ import annotations

import struct

from test_identifiers_support import (
    FakeConn,
    Run,
    a_answer,
    client_hello_record,
    dns_message,
    dns_name,
    syn,
    tcp,
    udp,
)
from zeek_logs import read_zeek_log

from pcapexfil.identifiers.dns import Malformed, Message, read_name
from pcapexfil.packet import PROTO_UDP
from pcapexfil.weird import Weirds

RD, QR_RA = 0x0100, 0x8180
DNS_SERVER = "192.0.2.53"


def _resolve(run: Run, name: str, addr: str, ttl: int, ts: float, tid: int = 7) -> FakeConn:
    conn = FakeConn(uid=f"Cdns{tid}", resp_h=DNS_SERVER, resp_p=53, proto=PROTO_UDP, orig_p=5000 + tid, start_ts=ts)
    cname = ("cname", 5, ttl, dns_name("edge.cdn.example.net"))
    reply = dns_message(tid, QR_RA | RD, (name, 1), [(name, *cname[1:]), a_answer("edge.cdn.example.net", addr, ttl)])
    run.feed(conn, [(True, udp(conn, True, dns_message(tid, RD, (name, 1)), ts)), (False, udp(conn, False, reply, ts + 0.02))])
    return conn


def _raw_ip_conn(run: Run, addr: str, ts: float, sni: str | None = None):  # type: ignore[no-untyped-def]
    conn = FakeConn(uid="Cweb", resp_h=addr, resp_p=443, start_ts=ts)
    pkts = [(True, syn(conn, True, 99, ts))]
    if sni:
        pkts.append((True, tcp(conn, True, 100, client_hello_record(sni), ts=ts)))
    run.feed(conn, pkts)
    return run.finish(conn)


def test_query_reply_row(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = Run(out_dir=str(tmp_path))
    conn = _resolve(run, "WWW.Example.ORG", "198.51.100.9", 300, 1000.0)
    rec = run.finish(conn)
    run.close()
    assert rec.service == ["dns"]
    (row,) = read_zeek_log(str(tmp_path / "dns.log")).rows
    assert row["query"] == "www.example.org"  # Zeek lowercases
    assert (row["qtype"], row["qtype_name"], row["qclass_name"]) == ("1", "A", "C_INTERNET")
    assert (row["rcode"], row["rcode_name"], row["RD"], row["RA"], row["AA"]) == ("0", "NOERROR", "T", "T", "F")
    assert row["answers"] == "edge.cdn.example.net,198.51.100.9"
    assert row["TTLs"] == "300.000000,300.000000"
    assert row["rtt"] == "0.020000" and row["proto"] == "udp" and row["trans_id"] == "7"


def test_unanswered_duplicates_and_reply_without_records(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = Run(out_dir=str(tmp_path))
    conn = FakeConn(resp_h=DNS_SERVER, resp_p=53, proto=PROTO_UDP)
    q = dns_message(9, RD, ("a.example", 255))
    nx = dns_message(10, 0x8183, ("b.example", 28))
    run.feed(conn, [(True, udp(conn, True, q)), (True, udp(conn, True, q)),
                    (True, udp(conn, True, dns_message(10, RD, ("b.example", 28)))), (False, udp(conn, False, nx, 1000.5))])  # fmt: skip
    run.finish(conn)
    run.close()
    rows = read_zeek_log(str(tmp_path / "dns.log")).rows
    assert [(r["query"], r["qtype_name"], r["rcode_name"]) for r in rows] == [
        ("b.example", "AAAA", "NXDOMAIN"),
        ("a.example", "*", "-"),
        ("a.example", "*", "-"),
    ]
    assert rows[0]["rejected"] == "T" and rows[0]["answers"] == "-" and rows[0]["rtt"] == "-"


def test_dns_over_tcp(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = Run(out_dir=str(tmp_path))
    conn = FakeConn(resp_h=DNS_SERVER, resp_p=53)
    q = dns_message(1, RD, ("t.example", 16))
    txt = b"\x05hello\x02hi"
    r = dns_message(1, QR_RA | RD, ("t.example", 16), [("t.example", 16, 60, txt)])
    framed_q, framed_r = struct.pack("!H", len(q)) + q, struct.pack("!H", len(r)) + r
    run.feed(conn, [(True, syn(conn, True, 0)), (False, syn(conn, False, 50)),
                    (True, tcp(conn, True, 1, framed_q[:3])), (True, tcp(conn, True, 4, framed_q[3:])),
                    (False, tcp(conn, False, 51, framed_r))])  # fmt: skip
    run.finish(conn)
    run.close()
    (row,) = read_zeek_log(str(tmp_path / "dns.log")).rows
    assert (row["proto"], row["query"], row["qtype_name"]) == ("tcp", "t.example", "TXT")
    assert row["answers"] == "TXT 5 hello TXT 2 hi"


def test_connection_named_only_by_dns() -> None:
    run = Run()
    _resolve(run, "Files.Example.COM", "198.51.100.20", 300, 1000.0)
    rec = _raw_ip_conn(run, "198.51.100.20", 1100.0)
    assert rec.dns_name == "files.example.com"  # the question, not the CNAME target
    other_client = FakeConn(orig_h="10.0.0.99", resp_h="198.51.100.20", start_ts=1100.0)
    run.feed(other_client, [(True, syn(other_client, True, 1, 1100.0))])
    assert run.finish(other_client).dns_name is None  # someone else's lookup


def test_expired_dns_answer_gives_no_name() -> None:
    run = Run()
    _resolve(run, "old.example.com", "198.51.100.30", 60, 1000.0)
    assert _raw_ip_conn(run, "198.51.100.30", 1000.02 + 60.5).dns_name is None
    assert _raw_ip_conn(run, "198.51.100.30", 1000.02 + 59.5).dns_name == "old.example.com"


def test_sni_takes_precedence_over_dns_name() -> None:
    run = Run()
    _resolve(run, "dns.example.com", "198.51.100.40", 300, 1000.0)
    rec = _raw_ip_conn(run, "198.51.100.40", 1001.0, sni="tls.example.com")
    assert rec.server_name == "tls.example.com" and rec.dns_name is None


def test_most_recent_answer_wins() -> None:
    run = Run()
    _resolve(run, "first.example", "198.51.100.50", 300, 1000.0, tid=1)
    _resolve(run, "second.example", "198.51.100.50", 300, 1010.0, tid=2)
    assert _raw_ip_conn(run, "198.51.100.50", 1020.0).dns_name == "second.example"


def test_malformed_messages_are_weird() -> None:
    weirds = Weirds()
    run = Run(weirds=weirds)
    conn = FakeConn(resp_h=DNS_SERVER, resp_p=53, proto=PROTO_UDP)
    looping = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    run.feed(conn, [(True, udp(conn, True, b"\x00\x01")), (True, udp(conn, True, looping))])
    run.finish(conn)
    assert weirds.counts["DNS_malformed_message"] == 2


def test_compressed_names() -> None:
    msg = struct.pack("!HHHHHH", 1, 0x8180, 1, 1, 0, 0) + dns_name("a.example.com") + b"\x00\x01\x00\x01"
    msg += b"\x03www\xc0\x0e" + struct.pack("!HHIH", 1, 1, 5, 4) + bytes([192, 0, 2, 1])
    m = Message(msg)
    assert m.answers == [("www.example.com", 1, 5, "192.0.2.1")]
    try:
        read_name(b"\xc0\x05", 0)
    except Malformed:
        pass
    else:
        raise AssertionError("forward pointer accepted")


def test_owner_pointing_at_the_question() -> None:
    """Owners written as a bare pointer to offset 12 (the usual form) name the question,
    lowercased like it; without a question, offset 12 holds the answer itself and the
    pointer is refused as a forward one."""
    rr = struct.pack("!HHIH", 1, 1, 5, 4) + bytes([192, 0, 2, 1])
    msg = struct.pack("!HHHHHH", 1, 0x8180, 1, 2, 0, 0) + dns_name("A.Example.com") + b"\x00\x01\x00\x01"
    m = Message(msg + b"\xc0\x0c" + rr + b"\x01b\xc0\x0c" + rr)
    assert [a[0] for a in m.answers] == ["a.example.com", "b.a.example.com"]
    try:
        Message(struct.pack("!HHHHHH", 1, 0x8180, 0, 1, 0, 0) + b"\xc0\x0c" + rr)
    except Malformed as exc:
        assert str(exc) == "forward compression pointer"
    else:
        raise AssertionError("pointer to itself accepted")
