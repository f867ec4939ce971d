"""Parent domains (identifiers.md): psl with the private section, last2, normalisation."""

from __future__ import annotations

import pytest

from pcapexfil.identifiers.domain import identifier_domain, parent_domain
from pcapexfil.record import ConnRecord


@pytest.mark.parametrize(
    ("name", "psl", "last2"),
    [
        ("www.bbc.co.uk", "bbc.co.uk", "co.uk"),  # multi-label public suffix
        ("a.b.bucket.s3.amazonaws.com", "bucket.s3.amazonaws.com", "amazonaws.com"),  # private section
        ("WWW.Example.COM.", "example.com", "example.com"),
        ("example.com:8443", "example.com", "example.com"),
        ("10.0.0.1", "10.0.0.1", "10.0.0.1"),
        ("[2001:db8::1]:443", "2001:db8::1", "2001:db8::1"),
        ("localhost", "localhost", "localhost"),
        ("co.uk", "co.uk", "co.uk"),
    ],
)
def test_parent_domain(name: str, psl: str, last2: str) -> None:
    assert parent_domain(name, "psl") == psl
    assert parent_domain(name, "last2") == last2


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown domain mode"):
        parent_domain("example.com", "tld")  # type: ignore[arg-type]


def test_identifier_order_host_then_sni_then_dns() -> None:
    rec = ConnRecord(0.0, "C", "10.0.0.1", 1, "192.0.2.1", 443, "tcp")
    assert identifier_domain(rec) is None
    rec.dns_name = "x.dns.example.org"
    assert identifier_domain(rec) == "example.org"
    rec.server_name = "cdn.tls.example.co.jp"
    assert identifier_domain(rec) == "example.co.jp"
    rec.http_host = "api.http.example.net"
    assert identifier_domain(rec, "last2") == "example.net"
