"""HTTP: transactions by content on any port, Host without port, body lengths, pipelining."""

from __future__ import annotations

from test_identifiers_support import FakeConn, Run, syn, tcp
from zeek_logs import read_zeek_log

import pytest

from pcapexfil.identifiers.http import is_reply_line, is_request_line, strip_port, unescape_uri


def _flow(conn: FakeConn, client: list[bytes], server: list[bytes]) -> list:
    pkts = [(True, syn(conn, True, 999)), (False, syn(conn, False, 4999))]
    off = 0
    for chunk in client:
        pkts.append((True, tcp(conn, True, 1000 + off, chunk)))
        off += len(chunk)
    off = 0
    for chunk in server:
        pkts.append((False, tcp(conn, False, 5000 + off, chunk)))
        off += len(chunk)
    return pkts


def _run(tmp_path, conn: FakeConn, client: list[bytes], server: list[bytes]):  # type: ignore[no-untyped-def]
    run = Run(out_dir=str(tmp_path))
    run.feed(conn, _flow(conn, client, server))
    rec = run.finish(conn)
    run.close()
    path = tmp_path / "http.log"
    return rec, read_zeek_log(str(path)).rows if path.exists() else None


def test_host_with_port_on_nonstandard_port(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = FakeConn(resp_p=22)
    req = b"GET /a?b=1 HTTP/1.1\r\nHost: Files.Example.com:8080\r\nUser-Agent: t/1\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    rec, rows = _run(tmp_path, conn, [req[:10], req[10:]], [resp])
    assert rec.http_host == "Files.Example.com"
    assert rec.service == ["http"]
    (row,) = rows
    assert (row["method"], row["host"], row["uri"], row["user_agent"]) == ("GET", "Files.Example.com:8080", "/a?b=1", "t/1")
    assert (row["status_code"], row["status_msg"], row["response_body_len"], row["trans_depth"]) == ("200", "OK", "5", "1")


def test_pipelined_requests_bodies_and_chunked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = FakeConn(resp_p=80)
    client = [
        b"POST /up HTTP/1.1\r\nHost: a.example\r\nContent-Length: 11\r\n\r\nhello world",
        b"GET /two HTTP/1.1\r\nHost: b.example\r\n\r\n",
    ]
    server = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
    ]
    rec, rows = _run(tmp_path, conn, client, server)
    assert rec.http_host == "a.example"  # the first request's Host
    by_depth = {r["trans_depth"]: r for r in rows}
    one, two = by_depth["1"], by_depth["2"]
    assert (one["method"], one["request_body_len"], one["response_body_len"]) == ("POST", "11", "7")
    assert (one["status_code"], one["info_code"], one["info_msg"]) == ("201", "100", "Continue")
    assert (two["host"], two["uri"], two["status_code"], two["response_body_len"]) == ("b.example", "/two", "404", "2")


def test_body_until_close_and_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = FakeConn(resp_p=8000)
    client = [b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET /x HTTP/1.0\r\n\r\n"]
    server = [b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\n", b"x" * 300, b"y" * 50]
    rec, rows = _run(tmp_path, conn, client, server)
    by_depth = {r["trans_depth"]: r for r in rows}
    assert by_depth["1"]["response_body_len"] == "0"
    # Read until close, its last line unterminated: Zeek counts the missing CRLF too.
    assert by_depth["2"]["response_body_len"] == "352"
    assert by_depth["2"]["host"] == "-" and rec.http_host == "h"


def test_body_until_close_ending_in_crlf_is_exact(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = FakeConn(resp_p=8000)
    rec, rows = _run(tmp_path, conn, [b"GET /x HTTP/1.0\r\n\r\n"], [b"HTTP/1.0 200 OK\r\n\r\n", b"line\r\n" * 10])
    assert rows[0]["response_body_len"] == "60"


def test_not_http_is_ignored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = FakeConn(resp_p=80)
    rec, rows = _run(tmp_path, conn, [b"\x00\x01binary junk\r\n\r\n"], [b"HTTP/1.1 200 OK\r\n\r\n"])
    assert rec.http_host is None and rows is None and rec.service == []  # no http.log at all


def test_server_first_protocol_is_not_http(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = FakeConn(resp_p=22)
    pkts = [(False, tcp(conn, False, 5000, b"SSH-2.0-OpenSSH_9\r\n")), (True, tcp(conn, True, 1000, b"SSH-2.0-x\r\n"))]
    run = Run()
    run.feed(conn, pkts)
    assert run.finish(conn).service == ["ssh"]  # the SSH recogniser's, not HTTP's


def test_connect_then_tls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from test_identifiers_support import client_hello_record

    conn = FakeConn(resp_p=3128)
    req = b"CONNECT secure.example.com:443 HTTP/1.1\r\nHost: secure.example.com:443\r\n\r\n"
    # The client sends its ClientHello once the tunnel is up: TLS bytes before the server's
    # reply would be request lines (HTTP.cc sets up the tunnel after the reply's headers).
    pkts = _flow(conn, [req], [b"HTTP/1.1 200 Connection established\r\n\r\n"])
    pkts.append((True, tcp(conn, True, 1000 + len(req), client_hello_record("secure.example.com"))))
    run = Run(out_dir=str(tmp_path))
    run.feed(conn, pkts)
    rec = run.finish(conn)
    run.close()
    rows = read_zeek_log(str(tmp_path / "http.log")).rows
    assert rows[0]["method"] == "CONNECT" and rows[0]["response_body_len"] == "0"
    assert rec.server_name == "secure.example.com"
    assert set(rec.service) == {"http", "ssl"}


def test_strip_port() -> None:
    assert strip_port("example.com:80") == "example.com"
    assert strip_port("[2001:db8::1]:8080") == "2001:db8::1"
    assert strip_port("2001:db8::1") == "2001:db8::1"
    assert strip_port("example.com") == "example.com"


def test_unescape_uri_like_zeek() -> None:
    assert unescape_uri(b"/a?u=http%3A%2F%2Fx%2fy") == (b"/a?u=http://x/y", [])
    assert unescape_uri(b"/%u0041%u2603") == (b"/A\x26\x03", [])
    assert unescape_uri(b"/a%%41") == (b"/aA", ["double_%_in_URI"])
    assert unescape_uri(b"/a%zz") == (b"/a%zz", ["unescaped_%_in_URI"])
    assert unescape_uri(b"/a%4") == (b"/a%4", ["partial_escape_at_end_of_URI"])
    assert unescape_uri(b"/a%") == (b"/a%", ["illegal_%_at_end_of_URI"])


@pytest.mark.parametrize(
    ("line", "taken"),
    [
        (b"GET / HTTP/1.1", True),
        (b"GET\t/x HTTP/1.0", True),
        (b"GET/ HTTP/1.1", False),  # no blank after the method
        (b"G / HTTP/1.1", True),
        (b"GE /x", False),  # HTTP/0.9 needs a 3-character method
        (b"GET /x", True),
        (b"GET \x7f", False),
        (b"GET \x7fHTTP/1.1", True),
        (b"G{T / HTTP/1.1", False),
        (b" GET / HTTP/1.1", False),
        (b"GET  /a%20b?c=d#e HTTP/1.1", True),
    ],
)
def test_request_line_check(line: bytes, taken: bool) -> None:
    assert is_request_line(line) is taken


@pytest.mark.parametrize(
    ("line", "taken"),
    [
        (b"HTTP/1.1 200 OK", True),
        (b"HTTP/1.1\t200", True),
        (b"HTTP/1.1 20", False),
        (b"HTTP/1.1   abc", True),
        (b"HTTP/1.1", False),
        (b"HTTP/1.1 \t 2 ", False),
        (b"http/1.1 200", False),
        (b"HTTP/ 200", True),
    ],
)
def test_reply_line_check(line: bytes, taken: bool) -> None:
    assert is_reply_line(line) is taken


def test_head_ends_and_folded_headers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A head may end in a bare blank line after CRLF lines; a blank line in the body after
    a CRLF head does not end it; folded and non-ASCII header text decodes as sent."""
    conn = FakeConn(resp_p=80)
    req = b"GET /a HTTP/1.1\r\nHost: h\xc3\xa9.example\r\nUser-Agent: a\r\n\tb\x1c\r\nReferer: \xff\n\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab\n\ncd"
    rec, rows = _run(tmp_path, conn, [req], [resp])
    (row,) = rows
    assert rec.http_host == "h\u00e9.example"
    assert (row["user_agent"], row["response_body_len"], row["status_code"]) == ("a b", "6", "200")
    assert row["referrer"] is not None and row["referrer"] != "-"
