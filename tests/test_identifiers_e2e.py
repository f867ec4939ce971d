"""Identifiers end to end: handcrafted pcaps (written here with dpkt) through pcapexfil's
pipeline, checked on the connection records and on ssl.log/http.log/dns.log/conn.log."""

from __future__ import annotations

import socket

import dpkt
from record_sink import RecordCollector
from test_identifiers_support import a_answer, client_hello_record, dns_message
from zeek_logs import read_zeek_log

from pcapexfil.pipeline import ConnLogSink, RunOptions, run

CLIENT, RESOLVER = "10.1.0.5", "10.1.0.53"
T0 = 1_700_000_000.0


class _Writer:
    """Frames of TCP connections and UDP datagrams into a pcap file, in the order given."""

    def __init__(self, path: str) -> None:
        self.fh = open(path, "wb")
        self.pcap = dpkt.pcap.Writer(self.fh, linktype=dpkt.pcap.DLT_EN10MB)

    def _ip(self, src: str, dst: str, l4: dpkt.Packet, proto: int) -> bytes:
        ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, ttl=64, data=l4)
        ip.len = 20 + len(bytes(l4))
        eth = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
        return bytes(eth)

    def tcp(self, ts: float, src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
            data: bytes = b"") -> None:  # fmt: skip
        seg = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=65535, data=data)
        self.pcap.writepkt(self._ip(src, dst, seg, dpkt.ip.IP_PROTO_TCP), ts)

    def udp(self, ts: float, src: str, dst: str, sport: int, dport: int, data: bytes) -> None:
        dgram = dpkt.udp.UDP(sport=sport, dport=dport, data=data)
        dgram.ulen = 8 + len(data)
        self.pcap.writepkt(self._ip(src, dst, dgram, dpkt.ip.IP_PROTO_UDP), ts)

    def close(self) -> None:
        self.pcap.close()


A, PA, S, SA, FA = dpkt.tcp.TH_ACK, dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, dpkt.tcp.TH_SYN, 0x12, 0x11


def _tcp_conn(w: _Writer, ts: float, server: str, dport: int, sport: int,
              client_segments: list[tuple[int, bytes]], server_data: bytes = b"") -> None:  # fmt: skip
    """Handshake, client segments at (offset, bytes) in the order given, server reply, FINs."""
    ci, si = 1000, 9000
    w.tcp(ts, CLIENT, server, sport, dport, ci, 0, S)
    w.tcp(ts + 0.01, server, CLIENT, dport, sport, si, ci + 1, SA)
    w.tcp(ts + 0.02, CLIENT, server, sport, dport, ci + 1, si + 1, A)
    t = ts + 0.03
    total = max(off + len(d) for off, d in client_segments)
    for off, data in client_segments:
        w.tcp(t, CLIENT, server, sport, dport, ci + 1 + off, si + 1, PA, data)
        t += 0.001
    if server_data:
        w.tcp(t, server, CLIENT, dport, sport, si + 1, ci + 1 + total, PA, server_data)
        t += 0.001
    end_c, end_s = ci + 1 + total, si + 1 + len(server_data)
    w.tcp(t + 0.01, CLIENT, server, sport, dport, end_c, end_s, FA)
    w.tcp(t + 0.02, server, CLIENT, dport, sport, end_s, end_c + 1, FA)
    w.tcp(t + 0.03, CLIENT, server, sport, dport, end_c + 1, end_s + 1, A)


def _lookup(w: _Writer, ts: float, name: str, addr: str, ttl: int, tid: int) -> None:
    w.udp(ts, CLIENT, RESOLVER, 40000 + tid, 53, dns_message(tid, 0x0100, (name, 1)))
    w.udp(ts + 0.005, RESOLVER, CLIENT, 53, 40000 + tid, dns_message(tid, 0x8180, (name, 1), [a_answer(name, addr, ttl)]))


def test_handcrafted_capture(tmp_path) -> None:  # type: ignore[no-untyped-def]
    hello = client_hello_record("split.example.co.uk")
    a, b, c = hello[:20], hello[20:90], hello[90:]
    w = _Writer(str(tmp_path / "in.pcap"))
    # 1. ClientHello in three segments, sent out of order and with a retransmission.
    _tcp_conn(w, T0, "198.51.100.1", 443, 50001,
              [(0, a), (len(a) + len(b), c), (len(a), b), (len(a), b)])  # fmt: skip
    # 2. HTTP with Host:port on a non-standard port.
    req = b"GET /index.html HTTP/1.1\r\nHost: WWW.Shop.Example.COM:8080\r\nUser-Agent: e2e\r\n\r\n"
    _tcp_conn(w, T0 + 1, "198.51.100.2", 8080, 50002, [(0, req)], b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    # 3. Named only by DNS: looked up, then contacted by address without SNI/Host.
    _lookup(w, T0 + 2, "Vault.Example.org", "198.51.100.3", 300, 1)
    _tcp_conn(w, T0 + 3, "198.51.100.3", 9999, 50003, [(0, b"\x00\x01opaque")], b"\x00\x02ok")
    # 4. An expired answer: TTL 5 s, contact 60 s later.
    _lookup(w, T0 + 4, "stale.example.net", "198.51.100.4", 5, 2)
    _tcp_conn(w, T0 + 64, "198.51.100.4", 9999, 50004, [(0, b"\x00\x01opaque")], b"\x00\x02ok")
    w.close()

    out = tmp_path / "out"
    out.mkdir()
    sink = RecordCollector()
    run([str(tmp_path / "in.pcap")], RunOptions(out_dir=str(out), local_nets=(), seed=1),
        [sink, ConnLogSink(str(out))])  # fmt: skip
    by_port = {r.resp_p: r for r in sink.records if r.proto == "tcp"}

    tls = by_port[443]
    assert tls.server_name == "split.example.co.uk" and tls.service == ["ssl"]
    assert tls.ja3 is not None and tls.dns_name is None

    web = by_port[8080]
    assert web.http_host == "WWW.Shop.Example.COM" and web.service == ["http"]

    named = next(r for r in sink.records if r.resp_h == "198.51.100.3" and r.proto == "tcp")
    assert named.dns_name == "vault.example.org" and named.server_name is None and named.http_host is None
    stale = next(r for r in sink.records if r.resp_h == "198.51.100.4" and r.proto == "tcp")
    assert stale.dns_name is None

    from pcapexfil.identifiers.domain import identifier_domain

    assert identifier_domain(tls) == "example.co.uk"  # multi-label public suffix
    assert identifier_domain(tls, "last2") == "co.uk"
    assert identifier_domain(web) == "example.com"
    assert identifier_domain(named) == "example.org"

    ssl_rows = read_zeek_log(str(out / "ssl.log")).rows
    assert [r["server_name"] for r in ssl_rows] == ["split.example.co.uk"]
    (http_row,) = read_zeek_log(str(out / "http.log")).rows
    assert (http_row["host"], http_row["uri"], http_row["response_body_len"]) == ("WWW.Shop.Example.COM:8080", "/index.html", "3")
    dns_rows = read_zeek_log(str(out / "dns.log")).rows
    assert sorted((r["query"], r["answers"], r["TTLs"]) for r in dns_rows) == [
        ("stale.example.net", "198.51.100.4", "5.000000"),
        ("vault.example.org", "198.51.100.3", "300.000000"),
    ]
    services = {(r["id.resp_h"], r["id.resp_p"]): r["service"] for r in read_zeek_log(str(out / "conn.log")).rows}
    assert services[("198.51.100.1", "443")] == "ssl"
    assert services[("198.51.100.2", "8080")] == "http"
    assert services[(RESOLVER, "53")] == "dns"
    assert services[("198.51.100.3", "9999")] == "-"
