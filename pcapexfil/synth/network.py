"""The simulated enterprise network: hosts, destinations, benign days and injected exfiltration.

Everything random comes from one `numpy.random.Generator(seed)` consumed in a fixed order,
so one seed (with the same options) gives byte-identical files. Times are integer
microseconds of network time; nothing here reads the wall clock.

Traffic model (per host and day, UTC):
- browsing sessions, a Poisson count with a diurnal shape (work hours peak, quiet nights,
  weekends at ~20 %); each session resolves the site over DNS when the cached answer's TTL
  has run out, then opens 1-4 TLS (or, for some sites, HTTP port 80) connections with a
  few request/response exchanges: small requests, lognormal responses (heavy tail);
- every host uses port 80 and its other usual ports from day one, so that only an injected
  `new_port` episode is a genuinely new protocol;
- benign heavy hitters (labelled `benign_*` from the first scored day on): nightly backups,
  office-hours cloud sync, occasional large downloads;
- DNS tunnels and the benign DNS traffic that resembles them (synth.dnstraffic, from a
  random stream of their own).
Exfiltration episodes fall on days >= `baseline_days`, so the detector has a baseline.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field

import numpy as np

from pcapexfil.synth import apps, tls
from pcapexfil.synth.dnstraffic import DnsTraffic
from pcapexfil.synth.labels import EXFIL_KINDS, Label, write_labels
from pcapexfil.synth.wire import (
    FrameSink,
    Message,
    TcpFlow,
    halves,
    mac_for,
    udp_frame,
    write_pcap,
)

US = 1_000_000
HOUR = 3600 * US
DAY = 24 * HOUR

_SYLLABLES = ("ka", "lo", "mi", "ra", "ven", "tor", "bel", "qu", "zen", "dor", "fi", "na", "pix", "sol", "tra",
              "vo", "mar", "cel", "dri", "on", "ex", "ly", "sto", "gra", "hub", "net", "bit", "cor", "pa", "ri")
_TLDS = ("com", "com", "com", "net", "org", "io", "de", "co.uk", "cloud", "app")
_PREFIXES = ("www", "www", "cdn", "api", "static", "img", "app")
_NEW_PORTS = (8443, 4444, 2222, 9001, 6667, 8088, 1337, 5222)


@dataclass
class SynthConfig:
    out_dir: str
    days: int = 16
    hosts: int = 20
    seed: int = 1
    start: dt.date = dt.date(2024, 3, 4)
    local_nets: list[str] = field(default_factory=lambda: ["10.0.0.0/8"])
    scale: float = 1.0  # multiplies benign activity (connections), for bigger speed-test datasets
    episodes_per_kind: int = 3
    baseline_days: int = 10
    full_payload: bool = False  # write filler bytes too (bigger files, same counts)


@dataclass
class Destination:
    domain: str
    addrs: list[str]
    port: int
    server: tls.ServerProfile | None  # None: plain HTTP or opaque TCP
    ttl: int
    rtt_us: int


@dataclass
class Host:
    index: int
    ip: str
    ip_bytes: bytes
    mac: bytes
    activity: float
    clients: list[tls.ClientProfile]
    user_agent: str
    favorites: np.ndarray
    fav_weights: np.ndarray
    extra: list[Destination]  # other usual services (ssh to a git host, IMAPS)
    backup: Destination | None = None
    sync: Destination | None = None
    dns_cache: dict[str, int] = field(default_factory=dict)
    next_port: int = 49152
    ipid: int = 0


@dataclass
class Summary:
    files: list[str]
    packets: int
    pcap_bytes: int
    labels: list[Label]


class Network:
    def __init__(self, cfg: SynthConfig) -> None:
        if cfg.days <= cfg.baseline_days:
            raise ValueError(f"--days must exceed {cfg.baseline_days} (episodes need a baseline before them)")
        if cfg.hosts < 1:
            raise ValueError("--hosts must be at least 1")
        if cfg.scale <= 0:
            raise ValueError("--scale must be positive")
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        nets = [ipaddress.ip_network(n, strict=False) for n in cfg.local_nets]
        v4 = [n for n in nets if n.version == 4]
        if not v4:
            raise ValueError("--local-nets needs an IPv4 network for the simulated hosts")
        self.local = v4
        lan = v4[0]
        offset = 266 if lan.num_addresses > 4096 else 10
        if offset + cfg.hosts + 2 > lan.num_addresses:
            raise ValueError(f"{lan} is too small for {cfg.hosts} hosts")
        self.resolver = str(lan[offset - 3 if offset > 3 else 1])
        self.resolver_bytes = ipaddress.ip_address(self.resolver).packed
        self.used_addrs: set[str] = set()
        self.used_domains: set[str] = set()
        rng = self.rng
        servers = tls.SERVER_PROFILES
        self.web = [self._destination(443, servers[rng.choice(len(servers))]) for _ in range(300)]
        self.http = [self._destination(80, None) for _ in range(40)]
        ranks = np.arange(1, len(self.web) + 1, dtype=float)
        self.web_pop = (1 / ranks) / (1 / ranks).sum()
        self.update_site = self._destination(443, tls.SERVER_PROFILES[4], prefix="dl")
        backup_service = self._destination(443, tls.SERVER_PROFILES[0], prefix="backup")
        sync_service = self._destination(443, tls.SERVER_PROFILES[5], prefix="sync", n_addrs=3)
        git = self._destination(22, None, prefix="git")
        imap = self._destination(993, tls.SERVER_PROFILES[1], prefix="imap")
        # Host addresses: consecutive, skipping .0 and .255 so none looks like a network/broadcast address.
        host_addrs = [a for a in (lan[offset + k] for k in range(min(lan.num_addresses - offset - 1,
                                                                     2 * cfg.hosts + 16)))
                      if a.packed[-1] not in (0, 255)][: cfg.hosts]
        if len(host_addrs) < cfg.hosts:
            raise ValueError(f"{lan} is too small for {cfg.hosts} hosts")
        self.hosts: list[Host] = []
        clients = tls.CLIENT_PROFILES
        for i, addr in enumerate(host_addrs):
            n_fav = 15
            fav = rng.choice(len(self.web), size=n_fav, replace=False, p=self.web_pop)
            weights = rng.dirichlet(np.ones(n_fav))
            extra = [d for d, p in ((git, 0.25), (imap, 0.4)) if rng.random() < p]
            host = Host(
                index=i, ip=str(addr), ip_bytes=addr.packed, mac=mac_for(1000 + i),
                activity=float(rng.lognormal(0.0, 0.35)),
                clients=[clients[int(k)] for k in rng.choice(len(clients), size=2, replace=False)],
                user_agent=apps.USER_AGENTS[int(rng.integers(0, 2))],
                favorites=fav, fav_weights=weights, extra=extra,
                backup=backup_service if rng.random() < 0.3 else None,
                sync=sync_service if rng.random() < 0.4 else None,
                ipid=int(rng.integers(0, 65536)),
            )
            self.hosts.append(host)
        self.day0_us = int(dt.datetime(cfg.start.year, cfg.start.month, cfg.start.day,
                                       tzinfo=dt.timezone.utc).timestamp()) * US
        self.labels: list[Label] = []
        self.sink = FrameSink(cfg.full_payload)
        self.dns = DnsTraffic(self)  # its own random stream: see synth.dnstraffic

    # -- catalogue -------------------------------------------------------------------------------
    def _public_addr(self) -> str:
        while True:
            value = int(self.rng.integers(0x0B000000, 0xDF000000))
            addr = ipaddress.IPv4Address(value)
            text = str(addr)
            if addr.is_global and not addr.is_multicast and text not in self.used_addrs \
                    and not any(addr in n for n in self.local):
                self.used_addrs.add(text)
                return text

    def _domain(self, prefix: str | None = None) -> str:
        rng = self.rng
        while True:
            word = "".join(rng.choice(_SYLLABLES) for _ in range(int(rng.integers(2, 4))))
            name = f"{prefix or rng.choice(_PREFIXES)}.{word}.{rng.choice(_TLDS)}"
            if name not in self.used_domains:
                self.used_domains.add(name)
                return name

    def _destination(self, port: int, server: tls.ServerProfile | None, prefix: str | None = None,
                     n_addrs: int | None = None) -> Destination:
        rng = self.rng
        n = n_addrs or int(rng.choice((1, 1, 2, 2, 3, 4)))
        return Destination(
            domain=self._domain(prefix), addrs=[self._public_addr() for _ in range(n)], port=port, server=server,
            ttl=int(rng.choice((60, 300, 300, 600, 3600))), rtt_us=int(rng.uniform(8_000, 140_000)),
        )

    # -- building blocks ---------------------------------------------------------------------------
    def _lognormal(self, median: float, sigma: float, cap: float) -> int:
        return int(min(self.rng.lognormal(np.log(median), sigma), cap))

    def _resolve(self, host: Host, dest: Destination, t_us: int) -> tuple[int, str]:
        """Look the name up when the host's cached answer expired; returns (time after, address to use)."""
        rng = self.rng
        if host.dns_cache.get(dest.domain, -1) < t_us:
            txid = int(rng.integers(0, 65536))
            sport = self._port(host)
            c, s = halves(host.ip_bytes, host.mac, self.resolver_bytes, sport, 53, 17, 128, 64, host.ipid,
                          int(rng.integers(0, 65536)))
            data, wire = udp_frame(c, apps.dns_query(txid, dest.domain))
            host.ipid = c.ipid
            self.sink.add(t_us, data, wire)
            t_us += int(rng.uniform(800, 30_000))
            data, wire = udp_frame(s, apps.dns_response(txid, dest.domain, dest.addrs, dest.ttl))
            self.sink.add(t_us, data, wire)
            host.dns_cache[dest.domain] = t_us + dest.ttl * US
            t_us += 300
        return t_us, dest.addrs[int(rng.integers(0, len(dest.addrs)))]

    def _port(self, host: Host) -> int:
        host.next_port = 49152 + (host.next_port - 49152 + 1) % 16384
        return host.next_port

    def _conn(self, host: Host, dest: Destination, addr: str, t_us: int,
              exchanges: list[tuple[Message, Message]], rate_bps: float) -> TcpFlow:
        """One TCP connection: handshake, TLS handshake when the destination speaks TLS, exchanges, FIN."""
        rng = self.rng
        c, s = halves(host.ip_bytes, host.mac, ipaddress.ip_address(addr).packed, self._port(host), dest.port, 6,
                      128, 52, host.ipid, int(rng.integers(0, 65536)))
        rtt = int(dest.rtt_us * rng.uniform(0.9, 1.2))
        flow = TcpFlow(self.sink, c, s, t_us, rtt, rate_bps, int(rng.integers(0, 2**32)),
                       int(rng.integers(0, 2**32)))
        flow.handshake()
        if dest.server is not None:
            client = host.clients[int(rng.integers(0, len(host.clients)))]
            hello = tls.client_hello(client, dest.domain, rng)
            flow.send(True, Message(hello, len(hello)))
            flight = tls.server_flight(dest.server, int(rng.integers(1800, 4200)), rng)
            flow.send(False, Message(flight, len(flight)), think_us=int(rng.uniform(200, 3000)))
            finish = tls.client_finish(dest.server)
            flow.send(True, Message(finish, len(finish)))
        for request, response in exchanges:
            flow.send(True, request, think_us=int(rng.exponential(300_000)))
            flow.send(False, response, think_us=int(rng.uniform(1_000, 60_000)))
        flow.close()
        host.ipid = c.ipid
        return flow

    def _exchange(self, host: Host, dest: Destination, up: int, down: int, method: str = "GET"
                  ) -> tuple[Message, Message]:
        """One request/response pair carrying `up` and `down` application bytes (bodies for HTTP)."""
        if dest.server is not None:
            return Message(b"", max(up, 6), records=True), Message(b"", max(down, 6), records=True)
        if dest.port == 80:
            path = f"/{'upload' if method == 'POST' else 'assets'}/{int(self.rng.integers(0, 10**6))}"
            body = up if method == "POST" else 0
            head = apps.http_request(method, dest.domain, path, host.user_agent, body)
            ctype = apps.CONTENT_TYPES[int(self.rng.integers(0, len(apps.CONTENT_TYPES)))]
            rhead = apps.http_response(down, ctype)
            return Message(head, len(head) + body), Message(rhead, len(rhead) + down)
        return Message(b"", max(up, 1)), Message(b"", max(down, 1))

    def _session(self, host: Host, dest: Destination, t_us: int, conns: int,
                 sizes: list[list[tuple[int, int]]], rate_bps: float, method: str = "GET",
                 spread_addrs: bool = False) -> list[TcpFlow]:
        t_us, addr = self._resolve(host, dest, t_us)
        flows = []
        for k in range(conns):
            if spread_addrs:
                addr = dest.addrs[k % len(dest.addrs)]
            exchanges = [self._exchange(host, dest, up, down, method) for up, down in sizes[k]]
            flows.append(self._conn(host, dest, addr, t_us, exchanges, rate_bps))
            t_us += int(self.rng.uniform(5_000, 400_000))
        return flows

    # -- benign days ---------------------------------------------------------------------------------
    def _session_times(self, day_us: int, count: int) -> np.ndarray:
        rng = self.rng
        work = rng.random(count) < 0.85
        hours = np.where(work, np.clip(rng.normal(13.0, 2.7, count), 6.5, 21.0), rng.uniform(0, 24, count))
        return np.sort((day_us + hours * HOUR).astype(np.int64))

    def _browse(self, host: Host, t_us: int, plain_http: bool) -> None:
        rng = self.rng
        if plain_http:
            dest = self.http[int(rng.integers(0, len(self.http)))]
        elif rng.random() < 0.7:
            dest = self.web[int(host.favorites[rng.choice(len(host.favorites), p=host.fav_weights)])]
        else:
            dest = self.web[int(rng.choice(len(self.web), p=self.web_pop))]
        conns = 1 + min(int(rng.geometric(0.55)) - 1, 3)
        sizes = [[(self._lognormal(700, 0.5, 8_000), self._lognormal(9_000, 1.5, 8_000_000))
                  for _ in range(1 + min(int(rng.poisson(1.2)), 6))] for _ in range(conns)]
        self._session(host, dest, int(t_us), conns, sizes, rng.uniform(20e6, 200e6))

    def _benign_day(self, host: Host, day: int, day_us: int) -> None:
        rng, cfg = self.rng, self.cfg
        weekday = bool((self.day0_us // DAY + day + 3) % 7 < 5)  # 1970-01-01 was a Thursday
        rate = 22 * host.activity * cfg.scale * (1.0 if weekday else 0.2)
        times = self._session_times(day_us, max(int(rng.poisson(rate)), 3))
        for k, t in enumerate(times):
            self._browse(host, int(t), plain_http=(k == 0 or rng.random() < 0.12))
        for dest in host.extra:  # usual services, every day
            for t in self._session_times(day_us, 1 + int(rng.poisson(2 * cfg.scale))):
                up, down = self._lognormal(3_000, 1.0, 200_000), self._lognormal(20_000, 1.2, 2_000_000)
                self._session(host, dest, int(t), 1, [[(up, down)]], 50e6)
        scored = day >= cfg.baseline_days
        if host.backup is not None:
            t = day_us + int(rng.uniform(1, 3) * HOUR)
            total = self._lognormal(6_000_000, 0.35, 30_000_000)
            flows = self._session(host, host.backup, t, 1, [[(total, 2_000)]], rng.uniform(30e6, 80e6),
                                  method="POST")
            if scored:
                self._label("benign_backup", host, host.backup, flows)
        if host.sync is not None:
            flows = []
            for t in self._session_times(day_us, 2 + int(rng.poisson(6 * cfg.scale))):
                flows += self._session(host, host.sync, int(t), 1,
                                       [[(self._lognormal(150_000, 1.1, 6_000_000), 3_000)]], 40e6)
            if scored:
                self._label("benign_cloud_sync", host, host.sync, flows)
        if rng.random() < 0.12:
            t = day_us + int(rng.uniform(9, 17) * HOUR)
            flows = self._session(host, self.update_site, t, 1,
                                  [[(900, self._lognormal(20_000_000, 0.4, 60_000_000))]], rng.uniform(80e6, 300e6))
            if scored:
                self._label("benign_large_download", host, self.update_site, flows)
        self.dns.benign_day(host, day_us, weekday, scored)

    # -- exfiltration ---------------------------------------------------------------------------------
    def _episode(self, kind: str, host: Host, day_us: int) -> None:
        rng = self.rng
        if kind == "dns_tunnel":
            self.dns.tunnel(host, day_us)
            return
        if kind == "bulk_https_new_domain":
            dest = self._destination(443, tls.SERVER_PROFILES[int(rng.integers(0, len(tls.SERVER_PROFILES)))],
                                     prefix="files")
            t = day_us + int(rng.uniform(1, 20) * HOUR)
            conns = int(rng.integers(1, 4))
            total = self._lognormal(30_000_000, 0.4, 120_000_000)
            sizes = [[(total // conns, 4_000)] for _ in range(conns)]
            flows = self._session(host, dest, t, conns, sizes, rng.uniform(20e6, 60e6))
        elif kind == "spread_many_small":
            dest = self._destination(443, tls.SERVER_PROFILES[4], prefix="upload", n_addrs=int(rng.integers(3, 6)))
            t = day_us + int(rng.uniform(1, 20) * HOUR)
            span = int(rng.uniform(1.0, 2.5) * HOUR)
            conns = int(rng.integers(40, 100))
            starts = np.sort(rng.uniform(0, span, conns)).astype(np.int64) + t
            t, _ = self._resolve(host, dest, t)
            flows = []
            for k, start in enumerate(starts):
                up = self._lognormal(350_000, 0.4, 2_000_000)
                flows.append(self._conn(host, dest, dest.addrs[k % len(dest.addrs)], max(int(start), t),
                                        [self._exchange(host, dest, up, 600)], 30e6))
        elif kind == "low_and_slow":
            dest = self._destination(443, tls.SERVER_PROFILES[int(rng.integers(0, 4))], prefix="api")
            windows = int(rng.integers(4, 7))
            t0 = day_us + int(rng.uniform(0, 23 - 3 * windows) * HOUR) if windows * 3 < 23 else day_us
            flows = []
            for w in range(windows):
                for t in np.sort(rng.uniform(0, 3 * HOUR - 10 * 60 * US, int(rng.integers(2, 5)))):
                    up = self._lognormal(600_000, 0.3, 3_000_000)
                    flows += self._session(host, dest, t0 + w * 3 * HOUR + int(t), 1, [[(up, 900)]], 2e6)
        elif kind == "http_post_80":
            dest = self._destination(80, None, prefix="upload")
            t = day_us + int(rng.uniform(1, 20) * HOUR)
            conns = int(rng.integers(1, 3))
            total = self._lognormal(15_000_000, 0.4, 60_000_000)
            flows = self._session(host, dest, t, conns, [[(total // conns, 120)] for _ in range(conns)],
                                  rng.uniform(20e6, 60e6), method="POST")
        elif kind == "new_port":
            used = {d.port for d in host.extra} | {80, 443}
            port = int(rng.choice([p for p in _NEW_PORTS if p not in used]))
            dest = Destination(domain="", addrs=[self._public_addr()], port=port, server=None, ttl=0,
                               rtt_us=int(rng.uniform(30_000, 150_000)))
            t = day_us + int(rng.uniform(1, 20) * HOUR)
            up = self._lognormal(8_000_000, 0.5, 40_000_000)
            flows = [self._conn(host, dest, dest.addrs[0], t, [self._exchange(host, dest, up, 2_000)], 20e6)]
        else:
            raise ValueError(f"unknown episode kind {kind!r}")
        self._label(kind, host, dest, flows)

    def _schedule(self) -> dict[int, list[tuple[str, Host]]]:
        """Episodes per day: distinct (host, day) pairs while possible, days after the baseline."""
        cfg, rng = self.cfg, self.rng
        days = list(range(cfg.baseline_days, cfg.days))
        pairs = [(h, d) for d in days for h in range(cfg.hosts)]
        order = rng.permutation(len(pairs))
        plan: dict[int, list[tuple[str, Host]]] = {}
        # dns_tunnel episodes take their (host, day) after all others: adding the kind left the
        # other episodes of every seed where they were.
        rounds = [[k for k in EXFIL_KINDS if k != "dns_tunnel"]] * cfg.episodes_per_kind
        rounds += [["dns_tunnel"]] * cfg.episodes_per_kind
        k = 0
        for kinds in rounds:
            for kind in kinds:
                h, d = pairs[int(order[k % len(pairs)])]
                k += 1
                plan.setdefault(d, []).append((kind, self.hosts[h]))
        return plan

    def _label(self, kind: str, host: Host, dest: Destination, flows: list[TcpFlow]) -> None:
        if not flows:
            return
        addrs = sorted({ipaddress.IPv4Address(f.s.src).compressed for f in flows})
        self.labels.append(Label(
            id=f"{'B' if kind.startswith('benign_') else 'E'}{len(self.labels) + 1:04d}", kind=kind,
            orig_h=host.ip, resp_h=addrs, resp_p=dest.port, domain=dest.domain,
            start=min(f.start_us for f in flows) / US, end=max(f.end_us for f in flows) / US,
            bytes_sent=sum(f.client_bytes for f in flows), bytes_received=sum(f.server_bytes for f in flows),
            conns=len(flows),
        ))

    # -- driver -----------------------------------------------------------------------------------------
    def generate(self) -> Summary:
        cfg = self.cfg
        os.makedirs(cfg.out_dir, exist_ok=True)
        plan = self._schedule()
        files, packets, size = [], 0, 0
        for day in range(cfg.days):
            day_us = self.day0_us + day * DAY
            for host in self.hosts:
                self._benign_day(host, day, day_us)
            for kind, host in plan.get(day, []):
                self._episode(kind, host, day_us)
            # Frames past midnight belong to the next day's file (the last file takes them all).
            end = day_us + DAY
            frames = self.sink.frames
            if day < cfg.days - 1:
                today = [f for f in frames if f.ts_us < end]
                self.sink.frames = [f for f in frames if f.ts_us >= end]
            else:
                today = frames
                self.sink.frames = []
            date = (cfg.start + dt.timedelta(days=day)).isoformat()
            path = os.path.join(cfg.out_dir, f"day-{date}.pcap")
            size += write_pcap(path, today)
            packets += len(today)
            files.append(path)
        self.labels.sort(key=lambda lb: (lb.start, lb.id))
        write_labels(os.path.join(cfg.out_dir, "labels.csv"), self.labels)
        return Summary(files, packets, size, self.labels)


def generate(cfg: SynthConfig) -> Summary:
    """Write one pcap per day and labels.csv into `cfg.out_dir`."""
    return Network(cfg).generate()
