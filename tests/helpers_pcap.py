"""Write handcrafted pcap / pcapng captures for tests (shared by several test files).

`write_pcap` / `write_pcapng` take a list of (ts, frame bytes); builders make Ethernet,
IPv4/IPv6, TCP/UDP/ICMP frames with correct lengths and checksums (via dpkt).
"""

from __future__ import annotations

import gzip
import socket
import struct
from collections.abc import Sequence
from pathlib import Path

import dpkt

Frames = Sequence[tuple[float, bytes]]


def write_pcap(
    path: str | Path,
    frames: Frames,
    linktype: int = 1,
    nano: bool = False,
    big_endian: bool = False,
    compress: bool = False,
    snaplen: int = 65535,
    wirelens: Sequence[int] | None = None,
) -> Path:
    """Classic pcap; `wirelens` overrides the original length per frame (snaplen tests)."""
    o = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    div = 10**9 if nano else 10**6
    out = [struct.pack(o + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, (ts, data) in enumerate(frames):
        sec = int(ts)
        frac = round((ts - sec) * div)
        wl = wirelens[i] if wirelens is not None else len(data)
        out.append(struct.pack(o + "IIII", sec, frac, len(data), wl) + data)
    return _write(path, b"".join(out), compress)


def _opt(o: str, code: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack(o + "HH", code, len(value)) + value + b"\x00" * pad


def _block(o: str, btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack(o + "II", btype, length) + body + struct.pack(o + "I", length)


def write_pcapng(
    path: str | Path,
    frames: Sequence[tuple[float, bytes, int]],
    interfaces: Sequence[tuple[int, int]] = ((1, 6),),
    big_endian: bool = False,
    compress: bool = False,
) -> Path:
    """pcapng; `interfaces` = (linktype, tsresol exponent: 6 = µs, 9 = ns; 0x80|n = 2^-n);
    each frame is (ts, data, interface index)."""
    o = ">" if big_endian else "<"
    out = [_block(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    units = []
    for linktype, res in interfaces:
        opts = _opt(o, 9, bytes([res])) + _opt(o, 0, b"")
        out.append(_block(o, 1, struct.pack(o + "HHI", linktype, 0, 0) + opts))
        units.append(2 ** (res & 0x7F) if res & 0x80 else 10 ** res)
    for ts, data, ifid in frames:
        t = round(ts * units[ifid])
        pad = (-len(data)) % 4
        body = struct.pack(o + "IIIII", ifid, t >> 32, t & 0xFFFFFFFF, len(data), len(data)) + data + b"\0" * pad
        out.append(_block(o, 6, body))
    return _write(path, b"".join(out), compress)


def _write(path: str | Path, blob: bytes, compress: bool) -> Path:
    p = Path(path)
    p.write_bytes(gzip.compress(blob) if compress else blob)
    return p


# ---- frame builders -------------------------------------------------------------------

MAC_A = b"\x02\x00\x00\x00\x00\x01"
MAC_B = b"\x02\x00\x00\x00\x00\x02"


def ether(payload: bytes, ethertype: int = 0x0800, src: bytes = MAC_A, dst: bytes = MAC_B) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def vlan_tags(vids: Sequence[int], ethertype: int, payload: bytes, outer_tpid: int = 0x88A8) -> tuple[int, bytes]:
    """A VLAN stack for `ether`: returns (first TPID, tags + payload)."""
    body = payload
    et = ethertype
    for i, vid in enumerate(reversed(vids)):
        body = struct.pack("!HH", vid, et) + body
        et = outer_tpid if (i == len(vids) - 1 and len(vids) > 1) else 0x8100
    return et, body


def tcp(sport: int = 1234, dport: int = 80, flags: int = dpkt.tcp.TH_SYN, seq: int = 1, ack: int = 0,
        data: bytes = b"", opts: bytes = b"") -> dpkt.tcp.TCP:
    seg = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, win=8192, opts=opts, data=data)
    seg.off = (20 + len(opts)) // 4
    return seg


def udp(sport: int = 5353, dport: int = 53, data: bytes = b"") -> dpkt.udp.UDP:
    return dpkt.udp.UDP(sport=sport, dport=dport, data=data, ulen=8 + len(data))


def ipv4(l4: dpkt.Packet | bytes, src: str = "10.0.0.1", dst: str = "10.0.0.2", p: int | None = None,
         opts: bytes = b"", ident: int = 1, ttl: int = 64) -> bytes:
    """Serialized IPv4 packet with checksums computed (transport checksum included)."""
    if p is None:
        p = {dpkt.tcp.TCP: 6, dpkt.udp.UDP: 17, dpkt.icmp.ICMP: 1}.get(type(l4), 0)
    pkt = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=p, ttl=ttl, id=ident, opts=opts, data=l4)
    pkt.hl = 5 + len(opts) // 4
    pkt.len = 4 * pkt.hl + len(bytes(l4))
    return bytes(pkt)


def ipv6(l4: dpkt.Packet | bytes, src: str = "2001:db8::1", dst: str = "2001:db8::2", nxt: int | None = None,
         ext: bytes = b"", first_nxt: int | None = None) -> bytes:
    """Serialized IPv6 packet. `ext` = raw extension headers placed before `l4`; then
    `first_nxt` is the IPv6 next-header value and `nxt` the last extension's next header."""
    if nxt is None:
        nxt = {dpkt.tcp.TCP: 6, dpkt.udp.UDP: 17, dpkt.icmp6.ICMP6: 58}.get(type(l4), 59)
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    body = bytes(l4)
    if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
        body = _with_v6_checksum(l4, s, d, nxt)
    payload = ext + body
    hdr = struct.pack("!IHBB", 0x60000000, len(payload), first_nxt if ext else nxt, 64) + s + d
    return hdr + payload


def _with_v6_checksum(l4: dpkt.Packet, s: bytes, d: bytes, nxt: int) -> bytes:
    l4.sum = 0
    raw = bytes(l4)
    ph = s + d + struct.pack("!IxxxB", len(raw), nxt)
    total = dpkt.in_cksum_add(0, ph + raw)
    l4.sum = dpkt.in_cksum_done(total)
    return bytes(l4)


def ipv4_fragments(datagram: bytes, size: int) -> list[bytes]:
    """Split an IPv4 datagram (no options) into fragments of `size` payload bytes (multiple of 8)."""
    hdr, payload = datagram[:20], datagram[20:]
    out = []
    for off in range(0, len(payload), size):
        chunk = payload[off : off + size]
        more = off + size < len(payload)
        h = bytearray(hdr)
        struct.pack_into("!HHH", h, 2, 20 + len(chunk), struct.unpack_from("!H", hdr, 4)[0],
                         (0x2000 if more else 0) | (off // 8))
        struct.pack_into("!H", h, 10, 0)
        struct.pack_into("!H", h, 10, dpkt.in_cksum(bytes(h)))
        out.append(bytes(h) + chunk)
    return out


def ipv6_fragments(datagram: bytes, size: int, ident: int = 7) -> list[bytes]:
    """Split an IPv6 packet without extension headers into fragments with a fragment header."""
    hdr, payload = datagram[:40], datagram[40:]
    nxt = hdr[6]
    out = []
    for off in range(0, len(payload), size):
        chunk = payload[off : off + size]
        more = off + size < len(payload)
        fh = struct.pack("!BBHI", nxt, 0, off | int(more), ident)
        h = bytearray(hdr)
        h[6] = 44
        struct.pack_into("!H", h, 4, 8 + len(chunk))
        out.append(bytes(h) + fh + chunk)
    return out
