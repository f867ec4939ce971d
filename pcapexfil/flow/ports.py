"""Zeek's port registrations and the `likely_server_ports` set derived from them.

Zeek fills `likely_server_ports` (scripts/base/init-bare.zeek declares it empty) from its
protocol scripts: a script that analyses a protocol calls
`Analyzer::register_for_ports(ANALYZER, ports)` in its zeek_init, and most of them also do
`redef likely_server_ports += { ports }`; a few register ports without that redef (MySQL,
PostgreSQL, QUIC, DHCP's client port). `REGISTRATIONS` is that data, one row per script and
analyzer, with the script named; `LIKELY_SERVER_PORTS` is the union of the rows' `likely`
ports, as a default `zeek` run (base scripts loaded) has it. A bare run (`zeek -b`, only
init-bare and what a test loads) has an empty set: `FlowConfig.likely_server_ports`.

The roles rules that read it are IPBasedAnalyzer::IsLikelyServerPort and
TCPAnalyzer::WantConnection / UDPAnalyzer::WantConnection
(src/packet_analysis/protocol/{ip,tcp,udp}).
"""

from __future__ import annotations

from dataclasses import dataclass

from pcapexfil.packet import PROTO_TCP, PROTO_UDP

Port = tuple[int, int]  # (number, IP protocol)


def _tcp(*ports: int) -> frozenset[Port]:
    return frozenset((p, PROTO_TCP) for p in ports)


def _udp(*ports: int) -> frozenset[Port]:
    return frozenset((p, PROTO_UDP) for p in ports)


@dataclass(frozen=True, slots=True)
class Registration:
    script: str  # the Zeek script (zeek/zeek repository) that registers the ports
    analyzer: str  # the analyzer's name as conn.log's service column writes it
    ports: frozenset[Port]  # Analyzer::register_for_ports (or the packet analyzer's ports)
    likely: frozenset[Port]  # what the script adds to likely_server_ports


_P = "scripts/base/protocols/"
_T = "scripts/base/packet-protocols/"

REGISTRATIONS: tuple[Registration, ...] = (
    Registration(_P + "dce-rpc/main.zeek", "dce_rpc", _tcp(135), _tcp(135)),
    # 4011/udp (proxyDHCP) is registered; only the server port 67 is a likely server port.
    Registration(_P + "dhcp/main.zeek", "dhcp", _udp(67, 68, 4011), _udp(67)),
    Registration(_P + "dnp3/main.zeek", "dnp3_tcp", _tcp(20000), _tcp(20000)),
    Registration(_P + "dnp3/main.zeek", "dnp3_udp", _udp(20000), _udp(20000)),
    Registration(_P + "dns/main.zeek", "dns", _tcp(53) | _udp(53, 137, 5353, 5355), _tcp(53) | _udp(53, 137, 5353, 5355)),
    Registration(_P + "finger/main.zeek", "finger", _tcp(79), _tcp(79)),
    Registration(_P + "ftp/main.zeek", "ftp", _tcp(21, 2811), _tcp(21, 2811)),
    Registration(_P + "http/main.zeek", "http", _tcp(80, 81, 631, 1080, 3128, 8000, 8080, 8888),
                 _tcp(80, 81, 631, 1080, 3128, 8000, 8080, 8888)),
    Registration(_P + "imap/main.zeek", "imap", _tcp(143), _tcp(143)),
    Registration(_P + "irc/main.zeek", "irc", _tcp(6666, 6667, 6668, 6669), _tcp(6666, 6667, 6668, 6669)),
    Registration(_P + "krb/main.zeek", "krb", _udp(88), _udp(88)),
    Registration(_P + "krb/main.zeek", "krb_tcp", _tcp(88), _tcp(88)),
    Registration(_P + "ldap/main.zeek", "ldap_tcp", _tcp(389, 3268), _tcp(389, 3268)),
    Registration(_P + "ldap/main.zeek", "ldap_udp", _udp(389), _udp(389)),
    Registration(_P + "modbus/main.zeek", "modbus", _tcp(502), _tcp(502)),
    Registration(_P + "mqtt/main.zeek", "mqtt", _tcp(1883), _tcp(1883)),
    # mysql/main.zeek registers 1434 and 3306 without adding them to likely_server_ports.
    Registration(_P + "mysql/main.zeek", "mysql", _tcp(1434, 3306), frozenset()),
    Registration(_P + "ntp/main.zeek", "ntp", _udp(123), _udp(123)),
    # pop3 has no main.zeek: its analyzer attaches by dpd.sig only, 110/tcp is no likely server port.
    # postgresql/main.zeek: `const ports = { 5432/tcp }`, registered, not a likely server port.
    Registration(_P + "postgresql/main.zeek", "postgresql", _tcp(5432), frozenset()),
    # quic/main.zeek registers quic_ports without the likely_server_ports redef.
    Registration(_P + "quic/main.zeek", "quic", _udp(443, 784, 853), frozenset()),
    Registration(_P + "radius/main.zeek", "radius", _udp(1812), _udp(1812)),
    Registration(_P + "rdp/main.zeek", "rdp", _tcp(3389), _tcp(3389)),
    Registration(_P + "rdp/main.zeek", "rdpeudp", _udp(3389), _udp(3389)),
    Registration(_P + "redis/main.zeek", "redis", _tcp(6379), _tcp(6379)),
    Registration(_P + "sip/main.zeek", "sip", _udp(5060), _udp(5060)),
    Registration(_P + "smb/main.zeek", "smb", _tcp(139, 445), _tcp(139, 445)),
    Registration(_P + "smtp/main.zeek", "smtp", _tcp(25, 587), _tcp(25, 587)),
    Registration(_P + "snmp/main.zeek", "snmp", _udp(161, 162), _udp(161, 162)),
    Registration(_P + "socks/main.zeek", "socks", _tcp(1080), _tcp(1080)),
    Registration(_P + "ssh/main.zeek", "ssh", _tcp(22), _tcp(22)),
    Registration(_P + "ssl/main.zeek", "ssl", _tcp(443, 563, 585, 614, 636, 989, 990, 992, 993, 995, 5223),
                 _tcp(443, 563, 585, 614, 636, 989, 990, 992, 993, 995, 5223)),
    Registration(_P + "ssl/main.zeek", "dtls", _udp(443), _udp(443)),
    Registration(_P + "syslog/main.zeek", "syslog", _udp(514), _udp(514)),
    Registration(_P + "xmpp/main.zeek", "xmpp", _tcp(5222, 5269), _tcp(5222, 5269)),
    # Tunnels: the packet-protocol scripts register their UDP ports with the UDP analyzer.
    Registration(_T + "ayiya/main.zeek", "ayiya", _udp(5072), _udp(5072)),
    Registration(_T + "geneve/main.zeek", "geneve", _udp(6081), _udp(6081)),
    Registration(_T + "gtpv1/main.zeek", "gtpv1", _udp(2152, 2123), _udp(2152, 2123)),
    Registration(_T + "teredo/main.zeek", "teredo", _udp(3544), _udp(3544)),
    Registration(_T + "vxlan/main.zeek", "vxlan", _udp(4789), _udp(4789)),
)

LIKELY_SERVER_PORTS: frozenset[Port] = frozenset().union(*(r.likely for r in REGISTRATIONS))


# scripts/base/frameworks/analyzer/dpd.zeek, DPD::ignore_violations_after: a violation
# raised once the two directions carried more than this (c$orig$size + c$resp$size) is
# ignored; below it, analyzer_violation_info disables the analyzer and analyzer_failed
# deletes its name from c$service if it had confirmed (services.base.analyzer_violation).
IGNORE_VIOLATIONS_AFTER = 10 * 1024


def registered_analyzers(port: int, proto: int) -> tuple[str, ...]:
    """The analyzers Zeek attaches by the responder's port (analyzer::Manager::
    BuildInitialAnalyzerTree looks up the responder port only)."""
    return _BY_PORT.get((port, proto), ())


def analyzer_ports(analyzer: str) -> frozenset[Port]:
    """Every port Zeek's scripts register `analyzer` for."""
    return frozenset().union(*(r.ports for r in REGISTRATIONS if r.analyzer == analyzer))


def registered_ports(analyzer: str, proto: int) -> frozenset[int]:
    """The port numbers Zeek's scripts register `analyzer` for on IP protocol `proto`."""
    return frozenset(port for port, port_proto in analyzer_ports(analyzer) if port_proto == proto)


_BY_PORT: dict[Port, tuple[str, ...]] = {}
for _r in REGISTRATIONS:
    for _port in _r.ports:
        _BY_PORT[_port] = (*_BY_PORT.get(_port, ()), _r.analyzer)


def is_likely_server_port(port: int, proto: int, ports: frozenset[Port] = LIKELY_SERVER_PORTS) -> bool:
    return (port, proto) in ports
