"""Zeek's default `likely_server_ports`, used to decide who the originator is.

Zeek fills the set from its base protocol scripts: each
scripts/base/protocols/*/main.zeek (and the tunnel packet-protocol scripts) does
`redef likely_server_ports += { ports }` for the ports it registers with
`Analyzer::register_for_ports`. This is that union for a default `zeek` run
(zeek/zeek master, 2025-2026), compiled by hand; a port is (number, IP protocol).

IRC (6666-6669/tcp) is left out: the corpus case core.tcp.flip-without-syn shows current
Zeek flipping a SYN-ACK from 80/tcp to 6669/tcp, which it would not do were 6669 in the set.
"""

from __future__ import annotations

from pcapexfil.packet import PROTO_TCP, PROTO_UDP

_TCP = {
    21, 2811,  # ftp
    22,  # ssh
    25, 587,  # smtp
    79,  # finger
    80, 81, 631, 1080, 3128, 8000, 8080, 8888,  # http (1080 is socks too)
    88, 750,  # krb (tcp)
    110,  # pop3
    135,  # dce-rpc
    139, 445,  # smb
    143,  # imap
    389, 3268,  # ldap
    443, 563, 585, 614, 636, 989, 990, 992, 993, 995, 5223,  # ssl
    502,  # modbus
    1434, 3306,  # mysql
    1883,  # mqtt
    3389,  # rdp
    5222, 5269,  # xmpp
    5432,  # postgresql
    6379,  # redis
    20000,  # dnp3
    53,  # dns
}

_UDP = {
    53, 137, 5353, 5355,  # dns
    67,  # dhcp
    88, 750,  # krb
    123,  # ntp
    161, 162,  # snmp
    389,  # ldap
    443,  # quic, dtls
    514,  # syslog
    1812,  # radius
    3389,  # rdp (rdpeudp)
    5060,  # sip
    20000,  # dnp3
    2152, 2123,  # gtpv1
    3544,  # teredo
    4789,  # vxlan
    5072,  # ayiya
    6081,  # geneve
}

LIKELY_SERVER_PORTS: frozenset[tuple[int, int]] = frozenset(
    {(p, PROTO_TCP) for p in _TCP} | {(p, PROTO_UDP) for p in _UDP}
)


def is_likely_server_port(port: int, proto: int) -> bool:
    return (port, proto) in LIKELY_SERVER_PORTS
