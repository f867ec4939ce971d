"""Application messages other than TLS: DNS (built with dpkt) and HTTP/1.1 heads."""

from __future__ import annotations

import socket

import dpkt

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Microsoft-Delivery-Optimization/10.0",
    "curl/8.5.0",
    "python-requests/2.31.0",
)

CONTENT_TYPES = ("text/html; charset=utf-8", "application/javascript", "image/jpeg", "application/json",
                 "application/octet-stream", "text/css")


def dns_query(txid: int, name: str) -> bytes:
    q = dpkt.dns.DNS(id=txid, op=dpkt.dns.DNS_RD, qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)])
    return bytes(q)


def dns_response(txid: int, name: str, addrs: list[str], ttl: int) -> bytes:
    """A recursive resolver's answer: one A record per address, all with `ttl`."""
    answers = [
        dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_A, cls=dpkt.dns.DNS_IN, ttl=ttl, rdata=socket.inet_aton(a))
        for a in addrs
    ]
    r = dpkt.dns.DNS(
        id=txid,
        op=dpkt.dns.DNS_QR | dpkt.dns.DNS_RD | dpkt.dns.DNS_RA,
        rcode=dpkt.dns.DNS_RCODE_NOERR,
        qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)],
        an=answers,
    )
    return bytes(r)


def http_request(method: str, host: str, path: str, user_agent: str, body_len: int = 0) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"User-Agent: {user_agent}", "Accept: */*",
             "Connection: keep-alive"]
    if method in ("POST", "PUT"):
        lines += ["Content-Type: application/octet-stream", f"Content-Length: {body_len}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def http_response(body_len: int, content_type: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", "Server: nginx", f"Content-Type: {content_type}", f"Content-Length: {body_len}",
             "Connection: keep-alive"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
