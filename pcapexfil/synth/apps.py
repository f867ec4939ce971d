"""Application messages other than TLS: DNS (built with dpkt) and HTTP/1.1 heads."""

from __future__ import annotations

import socket
import struct

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


_DNS_HEADER = struct.Struct("!6H")
_DNS_RR = struct.Struct("!HHIH")
DNS_FLAGS_QUERY = 0x0100  # RD
DNS_FLAGS_REPLY = 0x8180  # QR, RD, RA, NOERROR
DNS_FLAGS_NXDOMAIN = 0x8183


def dns_name(name: str) -> bytes:
    """A domain name in wire form, without compression."""
    return b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.split(".") if label) + b"\0"


def dns_message(txid: int, flags: int, qname: str, qtype: int,
                answers: tuple[tuple[int, int, bytes], ...] = ()) -> bytes:
    """One DNS message with one question and `answers` as (type, TTL, rdata), each owned by the
    question's name (a pointer to it). Built with struct: tunnels need hundreds of thousands."""
    parts = [_DNS_HEADER.pack(txid, flags, 1, len(answers), 0, 0), dns_name(qname), struct.pack("!HH", qtype, 1)]
    for rtype, ttl, rdata in answers:
        parts.append(b"\xc0\x0c" + _DNS_RR.pack(rtype, 1, ttl, len(rdata)) + rdata)
    return b"".join(parts)


def txt_rdata(text: bytes) -> bytes:
    """TXT record data: the text as character-strings of at most 255 bytes."""
    return b"".join(bytes([len(text[i:i + 255])]) + text[i:i + 255] for i in range(0, max(len(text), 1), 255))
