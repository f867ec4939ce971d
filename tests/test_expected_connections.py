"""Connections another one announced: FTP data channels named "ftp-data" and IRC DCC transfers
named "irc-dcc-data", as ftp/main.zeek, irc/dcc-send.zeek and analyzer::Manager's scheduled
analyzers name them (pcapexfil.services.expected, ftp_session, irc_session)."""

from __future__ import annotations

import pytest
from helpers_pcap import write_pcap
from test_workers import assert_same as assert_same_with_workers
from test_zeek_rules import ACK, CLIENT, FIN, PSH, SERVER, SYN, records, tcp_frame

from pcapexfil.packet import PROTO_TCP
from pcapexfil.services.expected import FTP_DATA, ScheduledAnalyzers
from pcapexfil.services.ftp_session import FtpSession, parse_eftp, parse_epsv, parse_pasv, parse_port
from pcapexfil.services.irc_session import dcc_send

OTHER = "10.0.0.3"


@pytest.mark.parametrize("text,expected", [
    (b"10,0,0,2,195,80", ("10.0.0.2", 50000)),
    (b"10, 0,0,2,195,80)", ("10.0.0.2", 50000)),  # sscanf: blanks before a number
    (b"010,0,0,2,0,21 and more", ("10.0.0.2", 21)),
    (b"10 ,0,0,2,195,80", None),  # none before a comma
    (b"10,0,0,2,195,256", None),  # each number 0..255
    (b"1,2,3,4,5", None),
    (b"1,2,3,4,5,", None),  # shorter than 11 characters, or five numbers
])
def test_parse_port_reads_six_numbers(text, expected) -> None:
    assert parse_port(text) == expected


@pytest.mark.parametrize("msg,expected", [
    (b"Entering Passive Mode (10,0,0,2,195,80).", ("10.0.0.2", 50000)),
    (b"Entering Passive Mode 10,0,0,2,195,80", ("10.0.0.2", 50000)),  # the list around the first comma
    (b"PORT 10,0,0,2,0,20", ("10.0.0.2", 20)),
    (b"Entering Passive Mode", None),
    (b"", None),
    (b"(10,0,0,2\x00,195,80)", None),  # a C string: the NUL ends it
])
def test_parse_pasv(msg, expected) -> None:
    assert parse_pasv(msg) == expected


@pytest.mark.parametrize("text,expected", [
    (b"|1|10.0.0.2|1055|", ("10.0.0.2", 1055)),
    (b" |2|fe80::1|1055|", ("fe80::1", 1055)),
    (b"|2|::ffff:10.0.0.2|1055|", ("10.0.0.2", 1055)),  # Zeek holds IPv4 as mapped IPv6
    (b"!1!10.0.0.2!1055!", ("10.0.0.2", 1055)),  # any delimiter
    (b"|1x10.0.0.2|1055|", ("10.0.0.2", 1055)),  # a bad protocol field, then a good address: good
    (b"|x|10.0.0.2|1055|", None),  # no digits: the address is skipped, the port read at it
    (b"|1|10.0.0.2", ("10.0.0.2", 0)),  # no port field: port 0, still valid
    (b"|1|10.0.0.256|1055|", None),
    (b"|1|10.0.0.2|70000|", None),
    (b"|1|10.0.0.2|1055", None),  # the port's delimiter missing
    (b"", None),
])
def test_parse_eftp(text, expected) -> None:
    assert parse_eftp(text) == expected


def test_parse_epsv_leaves_the_address_to_the_caller() -> None:
    assert parse_epsv(b"Entering Extended Passive Mode (|||6446|)") == (None, 6446)
    assert parse_epsv(b"Entering Extended Passive Mode (||::|6446|)") == (None, 6446)  # "::" too
    assert parse_epsv(b"Entering Extended Passive Mode |||6446|") is None  # after '(' only


def test_scheduled_analyzers_expire_only_when_another_is_scheduled() -> None:
    """Manager.cc: GetScheduled returns an exact entry whatever its timeout; only the next
    ScheduleAnalyzer expires it. A wildcard originator's entry counts before its timeout only."""
    table = ScheduledAnalyzers()
    table.schedule("10.0.0.1", "10.0.0.2", 50000, PROTO_TCP, "ftp-data", 100.0, 300.0)
    table.schedule("::", "10.0.0.2", 6000, PROTO_TCP, "irc-data", 100.0, 300.0)
    assert table.scheduled("10.0.0.1", "10.0.0.2", 50000, PROTO_TCP, 1000.0) == {"ftp-data"}
    assert table.scheduled("10.0.0.9", "10.0.0.2", 6000, PROTO_TCP, 200.0) == {"irc-data"}
    assert table.scheduled("10.0.0.9", "10.0.0.2", 6000, PROTO_TCP, 400.0) == set()
    assert table.scheduled("10.0.0.3", "10.0.0.2", 50000, PROTO_TCP, 200.0) == set()
    table.schedule("10.0.0.1", "10.0.0.2", 50001, PROTO_TCP, "ftp-data", 1000.0, 300.0)
    assert table.scheduled("10.0.0.1", "10.0.0.2", 50000, PROTO_TCP, 1000.0) == set()


class _Conn:
    orig_h, resp_h = CLIENT, SERVER


def _session_announcements(client: list[bytes], server: list[bytes]) -> list[tuple[str, str, str, int]]:
    """Feed alternating lines (client first) and collect what the session announces."""
    out: list[tuple[str, str, str, int]] = []
    session = FtpSession(_Conn(), lambda *a: out.append(a))  # type: ignore[arg-type]
    for i in range(max(len(client), len(server))):
        if i < len(client):
            session.feed(True, client[i])
        if i < len(server):
            session.feed(False, server[i])
    return out


def test_session_matches_replies_to_pending_commands() -> None:
    pasv = b"227 Entering Passive Mode (10,0,0,2,195,80).\r\n"
    # PASV's 227 announces a channel from the client; a 227 to no PASV does not.
    assert _session_announcements([b"USER a\r\n", b"PASV\r\n"], [b"220 hi\r\n", b"331 pw\r\n", pasv]) == [
        (FTP_DATA, CLIENT, "10.0.0.2", 50000)]
    assert _session_announcements([b"USER a\r\n", b"NOOP\r\n"], [b"220 hi\r\n", b"331 pw\r\n", pasv]) == []
    # A multi-line 227: its last line announces.
    assert _session_announcements([b"PASV\r\n"], [b"220 hi\r\n", b"227-wait\r\n227 (10,0,0,2,0,99)\r\n"]) == [
        (FTP_DATA, CLIENT, "10.0.0.2", 99)]
    # EPSV's 229 without an address: the control connection's responder.
    assert _session_announcements([b"EPSV\r\n"], [b"220 hi\r\n", b"229 Extended (|||6446|)\r\n"]) == [
        (FTP_DATA, CLIENT, SERVER, 6446)]
    # PORT and EPRT: a channel from the server, on the command alone.
    assert _session_announcements([b"port 10,0,0,1,4,31\r\n", b"EPRT |1|10.0.0.1|1056|\r\n"], []) == [
        (FTP_DATA, SERVER, "10.0.0.1", 1055), (FTP_DATA, SERVER, "10.0.0.1", 1056)]
    # After a 234 to AUTH TLS the lines are TLS's.
    assert _session_announcements([b"AUTH TLS\r\n", b"PASV\r\n"], [b"220 hi\r\n234 go\r\n", pasv]) == []


def _segments(t: float, client: str, cport: int, server: str, sport: int,
              turns: list[tuple[bool, bytes]]) -> list[tuple[float, bytes]]:
    """A whole TCP connection: handshake, one segment per turn, FIN both ways."""
    frames = [tcp_frame(t, client, cport, server, sport, SYN, 100),
              tcp_frame(t + 0.001, server, sport, client, cport, SYN | ACK, 900, 101),
              tcp_frame(t + 0.002, client, cport, server, sport, ACK, 101, 901)]
    cseq, sseq = 101, 901
    for i, (from_client, data) in enumerate(turns):
        ts = t + 0.003 + 0.001 * i
        if from_client:
            frames.append(tcp_frame(ts, client, cport, server, sport, PSH | ACK, cseq, sseq, data))
            cseq += len(data)
        else:
            frames.append(tcp_frame(ts, server, sport, client, cport, PSH | ACK, sseq, cseq, data))
            sseq += len(data)
    end = t + 0.003 + 0.001 * len(turns)
    frames += [tcp_frame(end, client, cport, server, sport, FIN | ACK, cseq, sseq),
               tcp_frame(end + 0.001, server, sport, client, cport, FIN | ACK, sseq, cseq + 1),
               tcp_frame(end + 0.002, client, cport, server, sport, ACK, cseq + 1, sseq + 1)]
    return frames


def _ftp_capture(reuse: bool = True) -> list[tuple[float, bytes]]:
    control = _segments(10.0, CLIENT, 40000, SERVER, 21, [
        (False, b"220 ready\r\n"), (True, b"USER a\r\n"), (False, b"331 pw\r\n"), (True, b"PASS b\r\n"),
        (False, b"230 in\r\n"), (True, b"PASV\r\n"), (False, b"227 Entering Passive Mode (10,0,0,2,195,80).\r\n"),
        (True, b"PORT 10,0,0,1,156,65\r\n"), (False, b"200 ok\r\n")])
    upload = [(True, b"x" * 500)]
    frames = control[:-3]  # the control connection stays open
    frames += _segments(11.0, CLIENT, 40001, SERVER, 50000, upload)  # passive: ftp-data
    frames += _segments(11.5, SERVER, 20, CLIENT, 40001, upload)  # active: ftp-data
    # Once the first one is removed (tcp_close_delay, 5 s after its close), finalize_ftp_data
    # deletes the channel: a later connection to it is not named again; nor one from another
    # client, for whom no analyzer was scheduled.
    if reuse:
        frames += _segments(20.0, CLIENT, 40002, SERVER, 50000, upload)
    frames += _segments(20.5, OTHER, 40003, SERVER, 50000, upload)
    frames += control[-3:]
    return sorted(frames, key=lambda f: f[0])


def test_data_channels_are_named_ftp_data(tmp_path) -> None:
    recs = records(tmp_path, _ftp_capture())
    named = [(r.orig_h, r.orig_p, r.resp_p, r.service) for r in recs]
    assert named == [
        (CLIENT, 40000, 21, ["ftp"]),
        (CLIENT, 40001, 50000, ["ftp-data"]),
        (SERVER, 20, 40001, ["ftp-data"]),
        (CLIENT, 40002, 50000, []),
        (OTHER, 40003, 50000, []),
    ]


def test_a_channel_opened_after_five_minutes_is_not_named(tmp_path) -> None:
    control = _segments(10.0, CLIENT, 40000, SERVER, 21, [
        (False, b"220 ready\r\n"), (True, b"PASV\r\n"), (False, b"227 (10,0,0,2,195,80)\r\n")])
    late = _segments(10.0 + 301.0, CLIENT, 40001, SERVER, 50000, [(True, b"x")])
    recs = records(tmp_path, control + late)
    assert [r.service for r in recs] == [["ftp"], []]


def test_workers_name_connections_another_workers_connection_announced(tmp_path) -> None:
    """Every worker reads FTP control and IRC connections (workers.Share.mark). Not covered: a channel
    reused after its first connection was removed, whose removal only its owner sees
    (docs/cluster.md, limits)."""
    frames = _ftp_capture(reuse=False) + [(ts + 1000.0, frame) for ts, frame in _irc_capture()]
    path = str(write_pcap(tmp_path / "announced.pcap", frames))
    for workers in (2, 3):
        assert assert_same_with_workers([path], tmp_path / str(workers), workers=workers, local_nets=()) == 8


@pytest.mark.parametrize("message,expected", [
    (b":\x01DCC SEND ssh.trace 167772167 59130 1320211\x01", ("10.0.0.7", 59130)),
    (b"  :DCC SEND file 167772167 59130", ("10.0.0.7", 59130)),  # 5 words, no size
    (b":\x01DCC SEND a  167772167 59130 1 T\x01", ("10.0.0.7", 59130)),  # Turbo DCC; SplitWords drops empty words
    (b":\x01DCC SEND a 1x0 59130 1\x01", ("0.0.0.100", 59130)),  # atoi per character: 'x' counts 0
    (b":\x01DCC CHAT chat 167772167 59214\x01", None),  # dcc-send.zeek: SEND only
    (b":\x01DCC SEND a 167772167\x01", None),  # too few words
    (b":\x01DCC SEND a 167772167 70000 1\x01", None),  # no such port
    (b":\x01PING 1\x01", None),
])
def test_dcc_send_as_irc_cc_reads_it(message, expected) -> None:
    assert dcc_send(message) == expected


def _irc_capture() -> list[tuple[float, bytes]]:
    irc = _segments(10.0, CLIENT, 40000, SERVER, 6667, [
        (True, b"NICK a\r\nUSER a 0 * :a\r\n"), (False, b":srv 001 a :hi\r\n"),
        (True, b"PRIVMSG b :\x01DCC SEND f.txt 167772161 50000 10\x01\r\n"),
        (True, b"PRIVMSG b :\x01DCC CHAT chat 167772161 50001\x01\r\n"),
        (True, b"PRIVMSG b :\x01DCC SEND g.txt 167772161 50002 10\x01\r\n")])
    frames = irc + _segments(11.0, OTHER, 41003, CLIENT, 50000, [(False, b"x" * 10)])  # owned by another worker
    frames += _segments(11.5, OTHER, 41001, CLIENT, 50001, [(False, b"x")])
    frames += _segments(10.0 + 301.0, OTHER, 41002, CLIENT, 50002, [(False, b"x")])
    return sorted(frames, key=lambda f: f[0])


def test_irc_dcc_transfers_are_named_irc_dcc_data(tmp_path) -> None:
    """dcc-send.zeek schedules IRC_DATA for any originator (0.0.0.0, Manager.cc's wildcard):
    a connection from another host to the announced address and port is named, within the
    5 minutes a wildcard entry counts; a DCC CHAT announces nothing."""
    recs = records(tmp_path, _irc_capture())
    assert [(r.resp_p, r.service) for r in recs] == [(6667, ["irc"]), (50000, ["irc-dcc-data"]), (50001, []),
                                                    (50002, [])]
