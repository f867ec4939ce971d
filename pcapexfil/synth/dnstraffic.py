"""DNS tunnels (`dns_tunnel` episodes) and the benign DNS traffic that looks like them.

Everything here draws from its own random stream (seeded from the dataset's seed), takes
UDP source ports below the traffic model's range (32768-49151) and leaves the hosts' IP id
counters alone, so adding it left every other frame of a seed's dataset as it was (only
connection uids, drawn in order, moved).

Tunnels (iodine, dnscat2, DNSExfiltrator style): 0.2 to 20 MB of random payload encoded as
base32, hex or base64 labels (up to 3 labels of at most 63 characters, then a sequence
label) under a never-seen domain, as TXT, NULL or CNAME queries whose answers carry a little
data back; steady (one socket, evenly spaced queries over 1 to 6 h) or bursty (bursts of
50-400 queries, a new socket per burst); three in four through the local resolver, the rest
straight to the tunnel's server.

Look-alikes, labelled `benign_dns_*` on scored days: antivirus/reputation lookups with
hashed labels (every host, under its product's domain), CDN node and telemetry names (every
host), DKIM/SPF/DMARC TXT lookups and PTR lookups of a mail server (the last host), mDNS and
LLMNR chatter (every host).
"""

from __future__ import annotations

import base64
import ipaddress
import math
from typing import TYPE_CHECKING

import numpy as np

from pcapexfil.synth.apps import (
    DNS_FLAGS_NXDOMAIN,
    DNS_FLAGS_QUERY,
    DNS_FLAGS_REPLY,
    dns_message,
    dns_name,
    txt_rdata,
)
from pcapexfil.synth.labels import Label
from pcapexfil.synth.wire import Half, halves, udp_frame

if TYPE_CHECKING:
    from pcapexfil.synth.network import Host, Network

US = 1_000_000
HOUR = 3600 * US
A, CNAME, NULL, PTR, TXT, AAAA = 1, 5, 10, 12, 16, 28
MDNS_GROUP, LLMNR_GROUP = "224.0.0.251", "224.0.0.252"
_WORDS = ("vex", "nor", "qua", "lin", "tek", "zor", "mu", "pra", "sil", "dax", "om", "ke", "run", "bly", "fen")
_MDNS_SERVICES = ("_googlecast._tcp.local", "_airplay._tcp.local", "_spotify-connect._tcp.local",
                  "_ipp._tcp.local", "_companion-link._tcp.local", "_raop._tcp.local")


def encode(payload: bytes, encoding: str) -> str:
    """Payload as DNS-label text: lowercase base32 or hex, or URL-safe base64 (no padding)."""
    if encoding == "base32":
        return base64.b32encode(payload).decode().rstrip("=").lower()
    if encoding == "hex":
        return payload.hex()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


CHARS_PER_BYTE = {"base32": 1.6, "hex": 2.0, "base64": 4 / 3}


class DnsTraffic:
    def __init__(self, net: Network) -> None:
        self.net = net
        self.rng = np.random.default_rng([net.cfg.seed, 53])
        self.reputation = [self._domain("avqs"), self._domain("rep")]
        self.vendor = self._domain()  # a software vendor's CDN and telemetry names
        self.mail_host = net.hosts[-1]
        self.senders = [self._domain("mail") for _ in range(300)]

    # -- helpers -----------------------------------------------------------------------------
    def _domain(self, prefix: str = "") -> str:
        """A never-used registered domain (with an optional first label)."""
        rng = self.rng
        while True:
            word = "".join(str(rng.choice(_WORDS)) for _ in range(int(rng.integers(2, 4))))
            name = f"{word}{int(rng.integers(10, 99))}.{rng.choice(('com', 'net', 'io', 'org'))}"
            if name not in self.net.used_domains:
                self.net.used_domains.add(name)
                return f"{prefix}.{name}" if prefix else name

    def _public_addr(self) -> str:
        while True:
            addr = ipaddress.IPv4Address(int(self.rng.integers(0x0B000000, 0xDF000000)))
            if addr.is_global and str(addr) not in self.net.used_addrs:
                self.net.used_addrs.add(str(addr))
                return str(addr)

    def _halves(self, host: Host, server: str, sport: int, dport: int) -> tuple[Half, Half]:
        rng = self.rng
        return halves(host.ip_bytes, host.mac, ipaddress.ip_address(server).packed, sport, dport, 17, 128, 64,
                      int(rng.integers(0, 65536)), int(rng.integers(0, 65536)))

    def _sport(self) -> int:
        return int(self.rng.integers(32768, 49152))

    def _send(self, c: Half, s: Half | None, t_us: int, query: bytes, reply: bytes | None) -> int:
        """One query (and its reply a few ms later); returns the query's payload bytes."""
        sink = self.net.sink
        sink.add(t_us, *udp_frame(c, query))
        if reply is not None and s is not None:
            sink.add(t_us + int(self.rng.uniform(1_000, 40_000)), *udp_frame(s, reply))
        return len(query)

    def _lookup(self, host: Host, t_us: int, qname: str, qtype: int, answers: tuple[tuple[int, int, bytes], ...],
                nxdomain: bool = False) -> int:
        """A stub resolver's lookup: a fresh source port, via the local resolver."""
        c, s = self._halves(host, self.net.resolver, self._sport(), 53)
        txid = int(self.rng.integers(0, 65536))
        reply = dns_message(txid, DNS_FLAGS_NXDOMAIN if nxdomain else DNS_FLAGS_REPLY, qname, qtype,
                            () if nxdomain else answers)
        return self._send(c, s, t_us, dns_message(txid, DNS_FLAGS_QUERY, qname, qtype), reply)

    def _times(self, day_us: int, count: int) -> np.ndarray:
        """Lookup times with the office-hours shape of the traffic model."""
        rng = self.rng
        work = rng.random(count) < 0.85
        hours = np.where(work, np.clip(rng.normal(13.0, 2.7, count), 6.5, 21.0), rng.uniform(0, 24, count))
        return np.sort((day_us + hours * HOUR).astype(np.int64))

    def _label(self, kind: str, host: Host, resp_h: list[str], resp_p: int, domain: str, times: list[int],
               sent: int, received: int = 0) -> None:
        if not times:
            return
        labels = self.net.labels
        labels.append(Label(
            id=f"{'B' if kind.startswith('benign_') else 'E'}{len(labels) + 1:04d}", kind=kind, orig_h=host.ip,
            resp_h=resp_h, resp_p=resp_p, domain=domain, start=min(times) / US, end=max(times) / US + 1.0,
            bytes_sent=sent, bytes_received=received, conns=len(times),
        ))

    # -- benign look-alikes ------------------------------------------------------------------
    def benign_day(self, host: Host, day_us: int, weekday: bool, scored: bool) -> None:
        for family in (self._reputation, self._cdn, self._mdns):
            family(host, day_us, weekday, scored)
        if host is self.mail_host:
            self._mail_txt(host, day_us, scored)
            self._mail_ptr(host, day_us, scored)

    def _reputation(self, host: Host, day_us: int, weekday: bool, scored: bool) -> None:
        """Antivirus cloud lookups: one hashed name per file or URL checked, answered 127.0.0.x."""
        rng = self.rng
        domain = self.reputation[host.index % 2]
        count = int(min(rng.lognormal(math.log(120 * host.activity * (1.0 if weekday else 0.3)), 0.6), 1500))
        times, sent = [], 0
        for t in self._times(day_us, count):
            digest = rng.bytes(20 if host.index % 2 == 0 else 32)
            label = digest.hex() if host.index % 2 == 0 else encode(digest, "base32")
            name = f"{label}.{int(rng.integers(0, 8))}.{domain}"
            sent += self._lookup(host, int(t), name, A, ((A, 300, bytes((127, 0, 0, int(rng.integers(1, 5))))),),
                                 nxdomain=rng.random() < 0.3)
            times.append(int(t))
        if scored:
            self._label("benign_dns_reputation", host, [self.net.resolver], 53, domain, times, sent)

    def _cdn(self, host: Host, day_us: int, weekday: bool, scored: bool) -> None:
        """CDN node names (a few distinct per day, repeated) and telemetry names."""
        rng = self.rng
        nodes = [f"r{int(rng.integers(1, 9))}---sn-{encode(rng.bytes(5), 'base32')}" for _ in range(12)]
        device = rng.bytes(16).hex()
        count = int(rng.poisson(60 if weekday else 20))
        times, sent = [], 0
        for t in self._times(day_us, count):
            if rng.random() < 0.6:
                name, cname = f"{nodes[int(rng.integers(0, len(nodes)))]}.cdn.{self.vendor}", f"edge.{self.vendor}"
            else:
                name = f"{device}.{rng.choice(('v10', 'v20', 'settings'))}.events.{self.vendor}"
                cname = f"global.{self.vendor}"
            qtype = AAAA if rng.random() < 0.4 else A
            addr = rng.bytes(16) if qtype == AAAA else ipaddress.IPv4Address(self._cdn_addr()).packed
            sent += self._lookup(host, int(t), name, qtype, ((CNAME, 60, dns_name(cname)), (qtype, 60, addr)))
            times.append(int(t))
        if scored:
            self._label("benign_dns_cdn", host, [self.net.resolver], 53, self.vendor, times, sent)

    def _cdn_addr(self) -> str:
        """Answers in documentation space: no connection of the dataset goes there."""
        return f"198.51.100.{int(self.rng.integers(1, 255))}"

    def _mail_txt(self, host: Host, day_us: int, scored: bool) -> None:
        """A mail server checking senders: SPF (the domain's TXT), DKIM keys, DMARC policies."""
        rng = self.rng
        times, sent, received = [], 0, 0
        for t in np.sort(day_us + rng.uniform(0, 24 * HOUR, int(rng.poisson(250))).astype(np.int64)):
            sender = self.senders[int(rng.integers(0, len(self.senders)))]
            for name, text in (
                (sender, f"v=spf1 include:_spf.{sender} ip4:{self._public_addr()}/24 ~all"),
                (f"s{int(rng.integers(1, 3))}._domainkey.{sender}",
                 "v=DKIM1; k=rsa; p=" + base64.b64encode(rng.bytes(270)).decode()),
                (f"_dmarc.{sender}", f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{sender}"),
            ):
                rdata = txt_rdata(text.encode())
                sent += self._lookup(host, int(t), name, TXT, ((TXT, 3600, rdata),))
                received += len(rdata)
                times.append(int(t))
                t += int(rng.uniform(2_000, 50_000))
        if scored:
            self._label("benign_dns_txt", host, [self.net.resolver], 53, "", times, sent, received)

    def _mail_ptr(self, host: Host, day_us: int, scored: bool) -> None:
        """A mail server's reverse lookups of every connecting client."""
        rng = self.rng
        times, sent = [], 0
        for t in np.sort(day_us + rng.uniform(0, 24 * HOUR, int(rng.poisson(1500))).astype(np.int64)):
            octets = [int(x) for x in rng.integers(1, 255, 4)]
            name = ".".join(str(o) for o in reversed(octets)) + ".in-addr.arpa"
            answer = dns_name(f"mx{int(rng.integers(1, 9))}.{self.senders[int(rng.integers(0, len(self.senders)))]}")
            sent += self._lookup(host, int(t), name, PTR, ((PTR, 3600, answer),), nxdomain=rng.random() < 0.25)
            times.append(int(t))
        if scored:
            self._label("benign_dns_ptr", host, [self.net.resolver], 53, "in-addr.arpa", times, sent)

    def _mdns(self, host: Host, day_us: int, weekday: bool, scored: bool) -> None:
        """Service discovery (mDNS, port 5353) and LLMNR name queries (port 5355) to their groups."""
        rng = self.rng
        times, sent = [], 0
        for t in self._times(day_us, int(rng.poisson(40 if weekday else 15))):
            if rng.random() < 0.75:
                c, _ = self._halves(host, MDNS_GROUP, 5353, 5353)
                name, qtype = str(rng.choice(_MDNS_SERVICES)), PTR
            else:
                c, _ = self._halves(host, LLMNR_GROUP, self._sport(), 5355)
                name, qtype = str(rng.choice(("wpad", f"desktop-{rng.bytes(4).hex()}", "printer"))), A
            sent += self._send(c, None, int(t), dns_message(int(rng.integers(0, 65536)), 0, name, qtype), None)
            times.append(int(t))
        if scored:
            self._label("benign_dns_mdns", host, [MDNS_GROUP, LLMNR_GROUP], 5353, "local", times, sent)

    # -- the tunnel --------------------------------------------------------------------------
    def tunnel(self, host: Host, day_us: int) -> None:
        rng = self.rng
        domain = self._domain()
        size = int(np.clip(rng.lognormal(math.log(1.5e6), 1.0), 0.2e6, 20e6))
        encoding = str(rng.choice(("base32", "hex", "base64")))
        qtype = int(rng.choice((TXT, NULL, CNAME)))
        direct = rng.random() < 0.25
        server = self._public_addr() if direct else self.net.resolver
        chunk = int(180 / CHARS_PER_BYTE[encoding])  # payload bytes per query: up to 3 labels of 60
        count = -(-size // chunk)
        span = rng.uniform(1, 6) * HOUR
        start = day_us + int(rng.uniform(1, 17) * HOUR)
        if rng.random() < 0.5:  # steady: one socket, evenly spaced
            times = (start + np.arange(count) * (span / count)).astype(np.int64)
            sockets = np.zeros(count, dtype=np.int64)
        else:  # bursty: 50-400 queries 20-60 ms apart, then a pause; a new socket per burst
            bursts = rng.integers(50, 401, size=count // 50 + 1)
            sockets = np.repeat(np.arange(len(bursts)), bursts)[:count]
            gaps = rng.uniform(20_000, 60_000, count)
            pause = span / (int(sockets[-1]) + 1)
            gaps[1:][np.diff(sockets) > 0] = pause
            times = (start + np.cumsum(gaps)).astype(np.int64)
        payload = rng.bytes(size)
        session = rng.bytes(2).hex()
        flows: dict[int, tuple[Half, Half]] = {}
        sent = received = 0
        for i in range(count):
            text = encode(payload[i * chunk:(i + 1) * chunk], encoding)
            labels = [text[k:k + 60] for k in range(0, len(text), 60)]
            qname = ".".join([*labels, f"{session}{i & 0xFFFF:04x}", domain])
            sock = int(sockets[i])
            if sock not in flows:
                flows[sock] = self._halves(host, server, self._sport(), 53)
            c, s = flows[sock]
            txid = int(rng.integers(0, 65536))
            back = rng.bytes(int(rng.integers(4, 24)))
            if qtype == TXT:
                rdata = txt_rdata(encode(back, "base32").encode())
            elif qtype == NULL:
                rdata = back
            else:
                rdata = dns_name(f"{encode(back, 'base32')}.{domain}")
            reply = dns_message(txid, DNS_FLAGS_REPLY, qname, qtype, ((qtype, 0, rdata),))
            sent += self._send(c, s, int(times[i]), dns_message(txid, DNS_FLAGS_QUERY, qname, qtype), reply)
            received += len(reply)
        self._label("dns_tunnel", host, [server], 53, domain, [int(times[0]), int(times[-1])], sent, received)
        self.net.labels[-1].conns = len(flows)
