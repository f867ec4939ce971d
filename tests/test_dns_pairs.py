"""DNS transactions paired in the kernel (`fast.dns_pairs`) against their oracle, the DNS
analyzer's own pairing (`DnsAnalyzer._session`), which the reference engine runs on every
message: generated conversations (queries and replies in any order, repeated and
unanswered ids, bursts past the kernel's limit and past Zeek's flush limits, opcodes Zeek
does not pair, malformed and oversized messages, fragmented datagrams, idle gaps that
expire the session) must give both engines the same dns.log, conn.log and records."""

from __future__ import annotations

import struct

import dpkt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_fast_engine import _run, assert_same

from helpers_pcap import ether, ipv4, ipv4_fragments, udp, write_pcap
from pcapexfil.fast import table as fast_table
from pcapexfil.fast.dns_pairs import MAX_KERNEL_QUEUED, NAME_BYTES
from pcapexfil.identifiers.dns import MAX_PENDING_IDS, MAX_QUERIES, DnsAnalyzer

CLIENT, SERVER = "10.9.0.1", "10.9.0.53"
NAMES = ["a.example", "Mixed.Example.ORG", "b.example", ".".join(["x" * 60] * 5)]  # the last: longer than a slot
assert len(NAMES[-1]) > NAME_BYTES


def query(tid: int, name: str | None, opcode: int = 0) -> bytes:
    return bytes(dpkt.dns.DNS(id=tid, rd=1, opcode=opcode, qd=[dpkt.dns.DNS.Q(name=name)] if name else []))


def reply(tid: int, name: str | None, rcode: int = 0, answers: int = 1) -> bytes:
    qd = [dpkt.dns.DNS.Q(name=name)] if name else []
    an = [dpkt.dns.DNS.RR(name=name or "owner.example", type=1, cls=1, ttl=60 + k, ip=bytes([192, 0, 2, 1 + k]))
          for k in range(answers)]
    return bytes(dpkt.dns.DNS(id=tid, qr=1, rd=1, ra=1, rcode=rcode, qd=qd, an=an))


tids = st.integers(1, 4)
names = st.one_of(st.none(), st.sampled_from(NAMES))
steps = st.one_of(
    st.tuples(st.just("query"), tids, names, st.sampled_from([0, 0, 0, 2])),
    st.tuples(st.just("reply"), tids, names, st.sampled_from([0, 3]), st.integers(0, 2)),
    st.tuples(st.just("burst"), st.sampled_from([MAX_KERNEL_QUEUED, MAX_KERNEL_QUEUED + 2, MAX_PENDING_IDS + 3])),
    st.sampled_from([("malformed",), ("too_many",), ("empty",), ("fragmented",), ("idle",), ("other_port",),
                     ("same_time",)]),
)


def frames_of(plan: list[tuple]) -> list[tuple[float, bytes]]:
    """The plan as frames: queries from the client, replies from the server, on one
    5-tuple (or a second client port), 10 ms apart; an idle step waits out the DNS
    analyzer's session expiry; after a same-time step the next two messages share their
    time (the order of rows of one time is the order they were written in)."""
    frames: list[tuple[float, bytes]] = []
    ts = 1000.0
    port = 40000
    same = 0

    def send(data: bytes, to_server: bool) -> None:
        nonlocal ts, same
        if same:
            same -= 1
        else:
            ts += 0.01
        if to_server:
            frames.append((ts, ether(ipv4(udp(port, 53, data), CLIENT, SERVER))))
        else:
            frames.append((ts, ether(ipv4(udp(53, port, data), SERVER, CLIENT))))

    for step in plan:
        kind = step[0]
        if kind == "query":
            send(query(step[1], step[2], step[3]), True)
        elif kind == "reply":
            send(reply(step[1], step[2], step[3], step[4]), False)
        elif kind == "burst":
            for k in range(step[1]):
                send(query(100 + k, "burst.example"), True)
            for k in range(step[1]):
                send(reply(100 + k, "burst.example"), False)
        elif kind == "malformed":
            send(query(1, "a.example")[:15], False)
        elif kind == "too_many":
            send(struct.pack(">6H", 2, 0, MAX_QUERIES + 1, 0, 0, 0), True)
        elif kind == "empty":
            send(b"", True)
        elif kind == "fragmented":
            ts += 0.01
            datagram = ipv4(udp(port, 53, query(3, "frag.example" + ".x" * 20)), CLIENT, SERVER)
            frames.extend((ts, ether(f)) for f in ipv4_fragments(datagram, 48))
        elif kind == "idle":
            ts += 15.0
        elif kind == "same_time":
            same = 2
        else:
            port = 40001 if port == 40000 else 40000
    return frames


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plan=st.lists(steps, min_size=1, max_size=14))
# Queries still waiting are written at the end in the analyzer's order (pending_query
# first), and rows of one time keep the order they were written in: so these show which
# query the kernel made the pending one. A reply to it takes the next query of its id ...
@example(plan=[("query", 1, "a.example", 0), ("same_time",), ("query", 2, "b.example", 0), ("query", 1, None, 0),
               ("reply", 1, "a.example", 0, 1)])
# ... else the first of the id queued first (dict order), even if a later id's came earlier.
@example(plan=[("query", 1, "a.example", 0), ("query", 2, "b.example", 0), ("same_time",), ("query", 3, None, 0),
               ("query", 2, None, 0), ("reply", 2, "b.example", 0, 1), ("reply", 1, "a.example", 0, 1)])
def test_kernel_pairing_writes_what_the_analyzer_writes(plan, tmp_path_factory) -> None:
    tmp = tmp_path_factory.mktemp("pairs")
    path = write_pcap(tmp / "dns.pcap", frames_of(plan))
    assert_same([str(path)], tmp)


def test_a_small_pool_hands_connections_to_python(tmp_path, monkeypatch) -> None:
    """With two slots, the third waiting query (on another connection) finds the pool empty."""
    monkeypatch.setattr(fast_table, "DNS_SLOTS", 2)
    plan = [("query", 1, "a.example", 0), ("other_port",), ("query", 2, "b.example", 0), ("query", 3, None, 0),
            ("other_port",), ("reply", 1, "a.example", 0, 1), ("other_port",), ("reply", 3, None, 0, 0)]
    path = write_pcap(tmp_path / "dns.pcap", frames_of(plan))
    assert assert_same([str(path)], tmp_path) == 2


# -- the kernel does the work: how many messages reach the analyzer's Python pairing -----------


class _Counted:
    """Counts the DNS analyzer's entry points while a fast run goes."""

    def __init__(self, monkeypatch) -> None:
        self.calls: dict[str, int] = {"on_message": 0, "kernel_pair": 0, "kernel_handover": 0}
        for name in self.calls:
            original = getattr(DnsAnalyzer, name)

            def counted(analyzer, *args, _name=name, _original=original):
                self.calls[_name] += 1
                return _original(analyzer, *args)

            monkeypatch.setattr(DnsAnalyzer, name, counted)


@pytest.mark.parametrize("plan,calls", [
    # Answered in order: one call per transaction, none per message.
    ([("query", 1, "a.example", 0), ("reply", 1, "a.example", 0, 1), ("query", 2, "b.example", 0),
      ("reply", 2, "b.example", 0, 1)], {"on_message": 0, "kernel_pair": 2, "kernel_handover": 0}),
    # Two waiting, answered out of order; a third left waiting, written at the end.
    ([("query", 1, "a.example", 0), ("query", 2, "b.example", 0), ("query", 3, None, 0),
      ("reply", 2, "b.example", 0, 1), ("reply", 1, "a.example", 0, 0)],
     {"on_message": 0, "kernel_pair": 2, "kernel_handover": 1}),
    # A reply before its query: the analyzer pairs from there on (nothing at the end).
    ([("query", 1, "a.example", 0), ("reply", 4, None, 0, 1), ("reply", 1, "a.example", 0, 1)],
     {"on_message": 2, "kernel_pair": 0, "kernel_handover": 1}),
])
def test_the_kernel_pairs_and_hands_over_where_it_must(plan, calls, tmp_path, monkeypatch) -> None:
    path = write_pcap(tmp_path / "dns.pcap", frames_of(plan))
    assert_same([str(path)], tmp_path)
    counted = _Counted(monkeypatch)
    _run([str(path)], str(tmp_path / "counted"), "fast")
    assert counted.calls == calls
