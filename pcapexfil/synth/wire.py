"""Frame building for the generator: Ethernet/IPv4/TCP/UDP bytes with correct checksums.

Built with `struct` rather than dpkt objects because a dataset holds millions of frames.
Payload is modelled as *content* (the bytes that carry meaning: TLS handshakes, HTTP
headers, TLS record headers) followed by zero filler. Zero bytes add nothing to the
Internet checksum, so a frame's checksum is exact even when its filler is not captured:
by default data segments are written snap-length truncated (caplen = headers + content,
wirelen = the full frame), which keeps files small while the IP total length, TCP
sequence space and checksums describe the full segment.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dpkt

ETH_HDR = 14
IP_HDR = 20
TCP_HDR_SYN = 40  # 20 + MSS, SACK-permitted, timestamps, NOP, window scale
TCP_HDR = 32  # 20 + NOP, NOP, timestamps
UDP_HDR = 8
MSS = 1448  # 1500 MTU - 20 IP - 32 TCP with timestamps
TLS_RECORD_HDR = 5

SYN, FIN, ACK, PSH = 0x02, 0x01, 0x10, 0x08

_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_PCAP_REC = struct.Struct("<IIII")


def words_sum(data: bytes) -> int:
    """Unfolded sum of big-endian 16-bit words (odd length padded with a zero byte)."""
    if len(data) & 1:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def fold(total: int) -> int:
    """One's-complement checksum from an unfolded word sum."""
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@dataclass(slots=True)
class Frame:
    """One frame waiting to be written: sorted by (ts_us, serial) before writing."""

    ts_us: int
    serial: int
    data: bytes  # captured bytes
    wirelen: int


class FrameSink:
    """Collects frames of one capture; `serial` keeps ties in emission order (deterministic)."""

    def __init__(self, full_payload: bool) -> None:
        self.full_payload = full_payload
        self.frames: list[Frame] = []
        self._serial = 0

    def add(self, ts_us: int, data: bytes, wirelen: int) -> None:
        self._serial += 1
        self.frames.append(Frame(ts_us, self._serial, data, wirelen))


def write_pcap(path: str, frames: list[Frame]) -> int:
    """Write frames (sorted here by time) as a microsecond little-endian pcap; returns bytes written."""
    frames.sort(key=lambda f: (f.ts_us, f.serial))
    header = bytes(dpkt.pcap.LEFileHdr(snaplen=65535, linktype=dpkt.pcap.DLT_EN10MB))
    size = len(header)
    with open(path, "wb") as fh:
        fh.write(header)
        chunks: list[bytes] = []
        pack = _PCAP_REC.pack
        for f in frames:
            sec, usec = divmod(f.ts_us, 1_000_000)
            chunks.append(pack(sec, usec, len(f.data), f.wirelen))
            chunks.append(f.data)
            size += 16 + len(f.data)
            if len(chunks) >= 8192:
                fh.write(b"".join(chunks))
                chunks.clear()
        fh.write(b"".join(chunks))
    return size


def mac_for(index: int, vendor: int = 0x02) -> bytes:
    """A locally administered unicast MAC address derived from an index."""
    return struct.pack("!BBI", vendor, 0x42, index & 0xFFFFFFFF)


GATEWAY_MAC = mac_for(1, 0x02)


class Half:
    """One direction of a flow: addressing, IP id counter and the constant checksum parts."""

    __slots__ = ("src", "dst", "sport", "dport", "eth", "ttl", "ipid", "ip_const", "pseudo_const")

    def __init__(self, src: bytes, dst: bytes, sport: int, dport: int, eth: bytes, ttl: int, ipid: int,
                 proto: int) -> None:
        self.src, self.dst, self.sport, self.dport = src, dst, sport, dport
        self.eth, self.ttl, self.ipid = eth, ttl, ipid
        # IP header words that never change in this direction (length, id, checksum zero).
        self.ip_const = words_sum(_IP.pack(0x45, 0, 0, 0, 0x4000, ttl, proto, 0, src, dst))
        self.pseudo_const = words_sum(src + dst) + proto

    def ip_header(self, ip_len: int, proto: int) -> bytes:
        self.ipid = (self.ipid + 1) & 0xFFFF
        csum = fold(self.ip_const + ip_len + self.ipid)
        return _IP.pack(0x45, 0, ip_len, self.ipid, 0x4000, self.ttl, proto, csum, self.src, self.dst)


def halves(client_ip: bytes, client_mac: bytes, server_ip: bytes, sport: int, dport: int, proto: int,
           client_ttl: int, server_ttl: int, ipid_c: int, ipid_s: int) -> tuple[Half, Half]:
    """The two directions of a client/server flow seen on the client's access link."""
    c = Half(client_ip, server_ip, sport, dport, GATEWAY_MAC + client_mac + b"\x08\x00", client_ttl,
             ipid_c, proto)
    s = Half(server_ip, client_ip, dport, sport, client_mac + GATEWAY_MAC + b"\x08\x00", server_ttl,
             ipid_s, proto)
    return c, s


def udp_frame(h: Half, payload: bytes) -> tuple[bytes, int]:
    """A complete UDP datagram frame; returns (captured bytes, wire length)."""
    udp_len = UDP_HDR + len(payload)
    csum = fold(h.pseudo_const + udp_len + words_sum(_UDP.pack(h.sport, h.dport, udp_len, 0)) + words_sum(payload))
    udp = _UDP.pack(h.sport, h.dport, udp_len, csum or 0xFFFF)
    ip = h.ip_header(IP_HDR + udp_len, 17)
    data = h.eth + ip + udp + payload
    return data, len(data)


@dataclass(slots=True)
class Message:
    """One application message in one direction: `head` is real content, the rest filler.

    With `records`, the filler is TLS application-data: every filler segment carries its own
    record header, so the stream stays valid TLS. Otherwise the filler is zero bytes
    (an HTTP body, an opaque protocol).
    """

    head: bytes
    length: int
    records: bool = False


class TcpFlow:
    """Emits one TCP connection: handshake, messages segmented at MSS with delayed ACKs, FIN teardown.

    Time is integer microseconds. `rate_bps` paces data segments; the receiver ACKs every
    second segment one half round trip later (the capture point is the client's link).
    Counts of payload bytes per direction are kept for the labels.
    """

    def __init__(self, sink: FrameSink, c: Half, s: Half, t_us: int, rtt_us: int, rate_bps: float,
                 isn_c: int, isn_s: int) -> None:
        self.sink, self.c, self.s = sink, c, s
        self.t = t_us
        self.rtt = max(rtt_us, 200)
        self.rate = rate_bps
        self.seq = {id(c): isn_c, id(s): isn_s}
        self.tsval = {id(c): (t_us // 1000) & 0xFFFFFFF, id(s): (isn_s >> 4) & 0xFFFFFFF}
        self.start_us = t_us
        self.end_us = t_us
        self.payload = {id(c): 0, id(s): 0}

    # -- packets -----------------------------------------------------------------------------
    def _emit(self, h: Half, peer: Half, t_us: int, flags: int, payload_len: int, content: bytes,
              syn_opts: bool = False) -> None:
        seq = self.seq[id(h)]
        ack = self.seq[id(peer)] if flags & ACK else 0
        tsval = (self.tsval[id(h)] + (t_us - self.start_us) // 1000) & 0xFFFFFFFF
        tsecr = (self.tsval[id(peer)] + (t_us - self.start_us) // 1000) & 0xFFFFFFFF if flags & ACK else 0
        if syn_opts:
            opts = struct.pack("!BBHBBBBII", 2, 4, MSS + 12, 4, 2, 8, 10, tsval, tsecr) + b"\x01\x03\x03\x07"
            hdr_len, window = TCP_HDR_SYN, 64240
        else:
            opts = struct.pack("!BBBBII", 1, 1, 8, 10, tsval, tsecr)
            hdr_len, window = TCP_HDR, 502
        tcp_len = hdr_len + payload_len
        csum = fold(
            h.pseudo_const + tcp_len
            + words_sum(_TCP.pack(h.sport, h.dport, seq, ack, hdr_len << 2, flags, window, 0, 0) + opts)
            + words_sum(content)
        )
        tcp = _TCP.pack(h.sport, h.dport, seq, ack, hdr_len << 2, flags, window, csum, 0) + opts
        ip = h.ip_header(IP_HDR + tcp_len, 6)
        data = h.eth + ip + tcp + content
        wirelen = ETH_HDR + IP_HDR + tcp_len
        if self.sink.full_payload and len(data) < wirelen:
            data += bytes(wirelen - len(data))
        self.sink.add(t_us, data, wirelen)
        self.seq[id(h)] = (seq + payload_len + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        self.payload[id(h)] += payload_len
        self.end_us = max(self.end_us, t_us)

    def handshake(self) -> None:
        c, s = self.c, self.s
        self._emit(c, s, self.t, SYN, 0, b"", syn_opts=True)
        self._emit(s, c, self.t + self.rtt, SYN | ACK, 0, b"", syn_opts=True)
        self.t += self.rtt + 50
        self._emit(c, s, self.t, ACK, 0, b"")

    def send(self, from_client: bool, msg: Message, think_us: int = 0) -> None:
        """Send one message; the peer ACKs; the clock moves past the last ACK."""
        h, peer = (self.c, self.s) if from_client else (self.s, self.c)
        self.t += think_us
        gap = max(int(MSS * 8e6 / self.rate), 10)
        half = self.rtt // 2
        segs = _segments(msg)
        pending = 0
        for i, (length, content) in enumerate(segs):
            last = i == len(segs) - 1
            self._emit(h, peer, self.t, ACK | (PSH if last else 0), length, content)
            pending += 1
            if pending == 2 or last:
                self._emit(peer, h, self.t + half + 40, ACK, 0, b"")
                pending = 0
            self.t += gap if not last else 1
        self.t += half + 60

    def close(self) -> None:
        c, s = self.c, self.s
        self.t += 200
        self._emit(c, s, self.t, FIN | ACK, 0, b"")
        self._emit(s, c, self.t + self.rtt, FIN | ACK, 0, b"")
        self._emit(c, s, self.t + self.rtt + 40, ACK, 0, b"")
        self.t += self.rtt + 40

    @property
    def client_bytes(self) -> int:
        return self.payload[id(self.c)]

    @property
    def server_bytes(self) -> int:
        return self.payload[id(self.s)]


def _segments(msg: Message) -> list[tuple[int, bytes]]:
    """Split a message into (payload length, captured content) segments of at most MSS."""
    out: list[tuple[int, bytes]] = []
    head, length = msg.head, max(msg.length, len(msg.head))
    pos = 0
    if msg.records:
        while pos < len(head):
            chunk = head[pos : pos + MSS]
            out.append((len(chunk), chunk))
            pos += len(chunk)
        remaining = length - pos
        if 0 < remaining < TLS_RECORD_HDR + 1:  # too short for a record: round up to one
            remaining = TLS_RECORD_HDR + 1
        while remaining > 0:
            n = min(MSS, remaining)
            if 0 < remaining - n < TLS_RECORD_HDR + 1:  # keep the last record big enough for a header
                n = remaining - (TLS_RECORD_HDR + 1)
            out.append((n, b"\x17\x03\x03" + struct.pack("!H", n - TLS_RECORD_HDR)))
            remaining -= n
        return out
    while pos < length:
        n = min(MSS, length - pos)
        out.append((n, head[pos : pos + n]))
        pos += n
    return out
