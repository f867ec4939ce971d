"""HTTP: transactions (on its ports, elsewhere where dpd.sig attaches it), Host without port,
body lengths, pipelining; a transaction against dpkt.http's parsers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_identifiers_support import FakeConn, Run, syn, tcp
from zeek_logs import read_zeek_log

from pcapexfil.identifiers.http import dpd_client, dpd_server, is_reply_line, is_request_line, strip_port, unescape_uri


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
    tmp_path.mkdir(parents=True, exist_ok=True)
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


FETCH = b"FETCH /x HTTP/1.1\r\nHost: a.example\r\n\r\n"  # a method dpd_http_client does not list
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_off_its_ports_either_signature_attaches(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """http/dpd.sig: off http/main.zeek's ports, the client's listed method or the server's
    status line attaches the analyzer, each on its own; on its ports no signature is needed."""
    rec, rows = _run(tmp_path / "server", FakeConn(resp_p=9000), [FETCH], [REPLY])
    assert rec.service == ["http"] and rec.http_host == "a.example"
    assert [(r["method"], r["status_code"]) for r in rows] == [("FETCH", "200")]
    rec, rows = _run(tmp_path / "client", FakeConn(resp_p=9000), [b"GET / HTTP/1.1\r\nHost: b.example\r\n\r\n"], [])
    assert rec.service == ["http"] and [r["method"] for r in rows] == ["GET"]
    rec, rows = _run(tmp_path / "neither", FakeConn(resp_p=9000), [FETCH], [])
    assert rec.service == [] and rec.http_host is None and rows is None
    rec, rows = _run(tmp_path / "port", FakeConn(resp_p=8080), [FETCH], [])
    assert rec.service == ["http"] and [r["method"] for r in rows] == ["FETCH"]


def test_a_signature_past_the_pia_buffer_does_not_attach(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The client's first chunk takes the PIA's buffer past dpd_buffer_size: the server's
    status line after it is never matched (zeek/zeek issue 834)."""
    long_fetch = b"FETCH /" + b"x" * 1100 + b" HTTP/1.1\r\n\r\n"
    rec, rows = _run(tmp_path / "after", FakeConn(resp_p=9000), [long_fetch], [REPLY])
    assert rec.service == [] and rows is None
    rec, rows = _run(tmp_path / "on-port", FakeConn(resp_p=80), [long_fetch], [REPLY])
    assert rec.service == ["http"] and [r["status_code"] for r in rows] == ["200"]


# http/dpd.sig's patterns as Zeek writes them (QUERY added by zeek/zeek PR 5595): the oracle.
_DPD_HTTP_CLIENT = re.compile(
    rb"[\s]*(OPTIONS|GET|HEAD|POST|PUT|DELETE|TRACE|CONNECT|PROPFIND|PROPPATCH|MKCOL|COPY|MOVE|LOCK|UNLOCK|"
    rb"VERSION-CONTROL|REPORT|CHECKOUT|CHECKIN|UNCHECKOUT|MKWORKSPACE|UPDATE|LABEL|MERGE|BASELINE-CONTROL|"
    rb"MKACTIVITY|ORDERPATCH|ACL|PATCH|SEARCH|BCOPY|BDELETE|BMOVE|BPROPFIND|BPROPPATCH|NOTIFY|POLL|SUBSCRIBE|"
    rb"UNSUBSCRIBE|X-MS-ENUMATTS|RPC_OUT_DATA|RPC_IN_DATA|QUERY)[\s]*")
_DPD_HTTP_SERVER = re.compile(rb"HTTP/[0-9]")
_PIECES = [b" ", b"\t", b"\r\n", b"\x0b", b"G", b"GET", b"HEAD", b"PO", b"ST", b"X-MS-", b"ENUMATTS", b"QUERY",
           b"get", b"HTTP/", b"1", b"x", b"RPC_IN_DATA"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=6), st.lists(st.sampled_from(_PIECES), max_size=4))
def test_dpd_signatures_answer_as_dpd_sig(pieces: list[bytes], more: list[bytes]) -> None:
    """True exactly where the pattern matches; False only where no continuation could match;
    None where one still could."""
    data = b"".join(pieces)
    longer = data + b"".join(more)
    for check, pattern in ((dpd_client, _DPD_HTTP_CLIENT), (dpd_server, _DPD_HTTP_SERVER)):
        verdict = check(data)
        assert (verdict is True) == (pattern.match(data) is not None)
        if verdict is not None:
            assert check(longer) is verdict


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


# -- an independent oracle: dpkt.http's request and response parsers -----------------------

_token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFXYZ0123456789-", min_size=1, max_size=12)
# Values a TSV column prints as they are (a lone "-" is written escaped: zeek_log's tests).
_value = st.text("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789/.;=()_-", min_size=1, max_size=30).map(str.strip).filter(
    lambda v: v not in ("", "-"))
_OWN = {"host", "user-agent", "content-length", "transfer-encoding", "connection", "content-type", "content-encoding"}


def _head(first_line: str, headers: list[tuple[str, str]]) -> bytes:
    return (first_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode()


@settings(max_examples=150, deadline=None)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "TRACE"]),
       uri=st.text("abcxyz0189/._-?=&", min_size=0, max_size=25).map(lambda u: "/" + u),
       version=st.sampled_from(["1.0", "1.1"]), host=_value, agent=st.one_of(st.none(), _value),
       extra=st.lists(st.tuples(_token, _value), max_size=4, unique_by=lambda kv: kv[0].lower()),
       request_body=st.binary(max_size=300), status=st.integers(200, 599).filter(lambda c: c not in (204, 304)),
       reason=_value, response_body=st.binary(max_size=3000))
def test_a_transaction_logs_what_dpkt_reads(tmp_path_factory, method, uri, version, host, agent, extra, request_body,
                                              status, reason, response_body) -> None:
    """One request and its response through the HTTP analyzer, against dpkt.http's Request
    and Response (written apart from it): method, URI, version, Host, User-Agent, status
    code and message, and both body lengths (Content-Length bodies)."""
    import dpkt

    extra = [(k, v) for k, v in extra if k.lower() not in _OWN]
    headers = [("Host", host), *([("User-Agent", agent)] if agent else []), *extra,
               ("Content-Length", str(len(request_body)))]
    request = _head(f"{method} {uri} HTTP/{version}", headers) + request_body
    response = _head(f"HTTP/{version} {status} {reason}", [("Content-Length", str(len(response_body)))]) + response_body
    theirs_req, theirs_resp = dpkt.http.Request(request), dpkt.http.Response(response)
    _, rows = _run(tmp_path_factory.mktemp("dpkt"), FakeConn(resp_p=80), [request], [response])
    (row,) = rows
    assert (row["method"], row["uri"], row["version"]) == (theirs_req.method, theirs_req.uri, theirs_req.version)
    assert row["host"] == theirs_req.headers["host"]
    assert row["user_agent"] == theirs_req.headers.get("user-agent", "-")
    assert (row["status_code"], row["status_msg"]) == (theirs_resp.status, theirs_resp.reason)
    assert (row["request_body_len"], row["response_body_len"]) == (str(len(theirs_req.body)),
                                                                   str(len(theirs_resp.body)))
