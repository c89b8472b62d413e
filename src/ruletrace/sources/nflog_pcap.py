"""NFLOG captures (``tcpdump -i nflog -w``): pcap and pcapng files with link type 239.

Spec: https://www.tcpdump.org/linktypes/LINKTYPE_NFLOG.html, https://pcapng.github.io/pcapng/
and include/uapi/linux/netfilter/nfnetlink_log.h. TLV length and type are in the byte order of
the capturing host (the file's byte order); attribute values are big-endian.
"""

from __future__ import annotations

import ipaddress
import json
import struct
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from ..errors import RuletraceError
from ..fields import bounded_int, packet_ident
from ..model import Origin, TraceEvent
from .records import Tally, note_record, sane_ts
from .tag import from_prefix as parse_tag

SOURCE = "nflog-pcap"

LINKTYPE_NFLOG = 239

# pcap global header magics (usec / nsec resolution), as read little-endian
PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A  # section header block type (palindromic)
PCAPNG_BOM = 0x1A2B3C4D  # byte-order magic inside the SHB
PCAPNG_IDB = 1  # interface description block
PCAPNG_SPB = 3  # simple packet block
PCAPNG_EPB = 6  # enhanced packet block
PCAPNG_OPT_IF_TSRESOL = 9  # timestamp resolution
PCAPNG_OPT_ENDOFOPT = 0

NFLOG_HDR = struct.Struct("!BBH")  # family, version, res_id (= group, big-endian)
TLV_HDR_LE = struct.Struct("<HH")  # tlv_length (incl. this header), tlv_type
TLV_HDR_BE = struct.Struct(">HH")
NLA_TYPE_MASK = 0x3FFF  # strip NLA_F_NESTED / NLA_F_NET_BYTEORDER

# enum nfulnl_attr_type
NFULA_PACKET_HDR = 1  # be16 hw_protocol, u8 hook, u8 pad
NFULA_MARK = 2  # be32
NFULA_TIMESTAMP = 3  # be64 sec, be64 usec
NFULA_IFINDEX_INDEV = 4  # be32
NFULA_IFINDEX_OUTDEV = 5  # be32
NFULA_IFINDEX_PHYSINDEV = 6  # be32
NFULA_IFINDEX_PHYSOUTDEV = 7  # be32
NFULA_HWADDR = 8  # be16 hw_addrlen, be16 pad, u8[8]
NFULA_PAYLOAD = 9  # network header onward
NFULA_PREFIX = 10  # NUL-terminated string
NFULA_UID = 11  # be32
NFULA_SEQ = 12  # be32 per-instance sequence
NFULA_SEQ_GLOBAL = 13  # be32
NFULA_GID = 14  # be32
NFULA_HWTYPE = 15  # be16 ARPHRD_*
NFULA_HWHEADER = 16  # the link-layer header
NFULA_HWLEN = 17  # be16
NFULA_CT = 18  # nested conntrack attributes
NFULA_CT_INFO = 19  # be32 enum ip_conntrack_info

# enum ip_conntrack_info
CT_INFO = {0: "ESTABLISHED", 1: "RELATED", 2: "NEW", 3: "ESTABLISHED_REPLY", 4: "RELATED_REPLY"}

AF_INET, AF_INET6, AF_BRIDGE = 2, 10, 7
FAMILIES = {AF_INET: "ipv4", AF_INET6: "ipv6", AF_BRIDGE: "bridge"}
ARPHRD_ETHER = 1
ETH_HLEN = 14

IPV4_HDR = struct.Struct("!BBHHHBBH4s4s")  # ver_ihl tos tot_len id frag_off ttl proto csum saddr daddr
IPV6_HDR = struct.Struct("!IHBB16s16s")  # ver_tc_flow payload_len nexthdr hop_limit saddr daddr
TCP_HDR = struct.Struct("!HHIIHHHH")  # sport dport seq ack off_flags window csum urg_ptr
UDP_HDR = struct.Struct("!HHHH")  # sport dport len csum
ICMP_HDR = struct.Struct("!BBHHH")  # type code csum id seq (echo)

IPTOS_TOS_MASK = 0x1E
IPTOS_PREC_MASK = 0xE0
IP_CE, IP_DF, IP_MF, IP_OFFSET = 0x8000, 0x4000, 0x2000, 0x1FFF
# TCP flag bits of the 16-bit data-offset/flags word, in the kernel log's order
TCP_FLAGS = (("CWR", 0x80), ("ECE", 0x40), ("URG", 0x20), ("ACK", 0x10), ("PSH", 0x08),
             ("RST", 0x04), ("SYN", 0x02), ("FIN", 0x01))
IPPROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 136: "UDPLITE", 58: "ICMPv6"}
ICMP_ECHO_TYPES = frozenset({0, 8})
ICMPV6_ECHO_TYPES = frozenset({128, 129})
# IPv6 extension headers the kernel log walks over (hop-by-hop, routing, dest opts)
IPV6_EXT = frozenset({0, 43, 60})
IPV6_FRAG = 44


def load_ifmap(path: str) -> dict[int, str]:
    """Interface index -> name from ``ip -j link`` output or ``INDEX NAME`` / ``INDEX=NAME`` lines."""
    from ..inputs import read_limited

    text = read_limited(path, "interface map").decode("utf-8", "replace")
    return parse_ifmap(text, origin=Origin(path))


def parse_ifmap(text: str, *, origin: Origin | None = None) -> dict[int, str]:
    """Parse an interface map: ``ip -j link`` JSON, or lines ``3 eth0`` / ``3=eth0`` / ``3: eth0``."""
    if text.lstrip().startswith("["):
        try:
            links = json.loads(text)
            return {_index(link["ifindex"]): str(link["ifname"]) for link in links}
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise RuletraceError(f"not an `ip -j link` listing: {e}", origin=origin) from e
    out: dict[int, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace("=", " ").replace(":", " ", 1).split()
        index = bounded_int(parts[0], max_digits=10) if len(parts) >= 2 and parts[0].isdigit() else None
        if index is None:
            where = Origin(origin.path, n) if origin else None
            raise RuletraceError(f"interface map line must be 'INDEX NAME', got {line[:60]!r}", origin=where)
        out[index] = parts[1].split("@", 1)[0]
    return out


def _index(v: Any) -> int:
    """An interface index from JSON: a number (or digits) that fits in 32 bits."""
    n = v if isinstance(v, int) and not isinstance(v, bool) else bounded_int(v, max_digits=10) if isinstance(v, str) else None
    if n is None or not 0 <= n < 1 << 32:
        raise ValueError(f"bad ifindex {str(v)[:20]!r}")
    return n


# --- file containers -------------------------------------------------------------------


MAX_RECORD = 0x4000000  # 64 MiB: larger record or block lengths are damage, not data


class Truncated(RuletraceError):
    """The capture ends inside a record (still being written, tcpdump killed, copied short)."""

    def __init__(self, message: str, *, origin: Origin, offset: int) -> None:
        super().__init__(message, origin=origin)
        self.offset = offset


class _Pos:
    """Reads from a stream and counts the bytes, so that a cut can be named by its offset."""

    __slots__ = ("stream", "offset")

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.offset = 0

    def read(self, n: int) -> bytes:
        data = self.stream.read(n) or b""
        self.offset += len(data)
        return data


def _read_exact(stream: Any, n: int) -> bytes:
    data = stream.read(n)
    return data if data is not None else b""


def iter_records(stream: BinaryIO, *, name: str) -> Iterator[tuple[int, float, bytes, str]]:
    """Yield ``(record_no, ts, body, byte_order)`` from a pcap or pcapng file of link type 239.

    A file that ends inside a record raises ``Truncated`` (with the byte offset where the cut
    record starts) after every whole record was yielded.
    """
    pos = _Pos(stream)
    head = pos.read(4)
    if len(head) < 4:
        raise RuletraceError("empty or truncated capture file (no pcap header)", origin=Origin(name))
    (magic_le,) = struct.unpack("<I", head)
    if magic_le == PCAPNG_SHB:
        yield from _iter_pcapng(pos, head, name)
    else:
        yield from _iter_pcap(pos, head, name)


def _iter_pcap(stream: _Pos, head: bytes, name: str) -> Iterator[tuple[int, float, bytes, str]]:
    for bo in ("<", ">"):
        (magic,) = struct.unpack(bo + "I", head)
        if magic in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
            break
    else:
        raise RuletraceError(f"not a pcap/pcapng file (magic {head.hex()})", origin=Origin(name))
    scale = 1e-6 if magic == PCAP_MAGIC_USEC else 1e-9
    rest = _read_exact(stream, 20)
    if len(rest) < 20:
        raise RuletraceError("truncated pcap header", origin=Origin(name))
    _vmaj, _vmin, _zone, _sigfigs, _snaplen, linktype = struct.unpack(bo + "HHiIII", rest)
    linktype &= 0xFFFF  # upper bits hold FCS length flags
    if linktype != LINKTYPE_NFLOG:
        raise RuletraceError(
            f"pcap link type {linktype}, not NFLOG (239): capture with `tcpdump -i nflog -w FILE`",
            origin=Origin(name),
        )
    rec_hdr = struct.Struct(bo + "IIII")  # ts_sec ts_frac incl_len orig_len
    n = 0
    while True:
        start = stream.offset
        hdr = _read_exact(stream, rec_hdr.size)
        if not hdr:
            return
        n += 1
        if len(hdr) < rec_hdr.size:
            raise Truncated(f"record {n}: truncated record header ({len(hdr)} of 16 bytes)",
                            origin=Origin(name, n), offset=start)
        sec, frac, incl, _orig = rec_hdr.unpack(hdr)
        if incl > MAX_RECORD:
            raise RuletraceError(f"record {n}: implausible record length {incl} at byte {start:,}",
                                 origin=Origin(name, n))
        body = _read_exact(stream, incl)
        if len(body) < incl:
            raise Truncated(f"record {n}: truncated ({len(body)} of {incl} bytes)",
                            origin=Origin(name, n), offset=start)
        yield n, sec + frac * scale, body, bo


def _iter_pcapng(stream: _Pos, head: bytes, name: str) -> Iterator[tuple[int, float, bytes, str]]:
    bo = "<"
    ifaces: list[tuple[int, int]] = []  # (linktype, ticks per second) per interface id
    n = 0
    block_type_raw = head
    start = 0
    while True:
        if not block_type_raw:
            return
        n += 1
        origin = Origin(name, n)
        if len(block_type_raw) < 4:
            raise Truncated(f"block {n}: truncated block header", origin=origin, offset=start)
        len_raw = _read_exact(stream, 4)
        if len(len_raw) < 4:
            raise Truncated(f"block {n}: truncated block header", origin=origin, offset=start)
        is_shb = struct.unpack("<I", block_type_raw)[0] == PCAPNG_SHB
        if is_shb:
            bom = _read_exact(stream, 4)
            if len(bom) < 4:
                raise Truncated(f"block {n}: truncated section header", origin=origin, offset=start)
            if struct.unpack("<I", bom)[0] == PCAPNG_BOM:
                bo = "<"
            elif struct.unpack(">I", bom)[0] == PCAPNG_BOM:
                bo = ">"
            else:
                raise RuletraceError(f"block {n}: bad pcapng byte-order magic {bom.hex()}", origin=origin)
        (blen,) = struct.unpack(bo + "I", len_raw)
        if blen < (28 if is_shb else 12) or blen % 4 or blen > MAX_RECORD:
            raise RuletraceError(f"block {n}: bad block length {blen} at byte {start:,}", origin=origin)
        if is_shb:
            body = bom + _read_exact(stream, blen - 16)
            ifaces = []
        else:
            body = _read_exact(stream, blen - 12)
        trailer = _read_exact(stream, 4)
        if len(body) < blen - 12 or len(trailer) < 4:
            raise Truncated(f"block {n}: truncated ({blen} bytes announced)", origin=origin, offset=start)
        (btype,) = struct.unpack(bo + "I", block_type_raw)
        if btype == PCAPNG_IDB:
            if len(body) < 8:
                raise RuletraceError(f"block {n}: interface description block too short", origin=origin)
            linktype, _res, _snap = struct.unpack_from(bo + "HHI", body)
            ifaces.append((linktype, _tsresol(body[8:], bo)))
            if linktype != LINKTYPE_NFLOG:
                raise RuletraceError(
                    f"block {n}: pcapng interface link type {linktype}, not NFLOG (239): "
                    "capture with `tcpdump -i nflog -w FILE`",
                    origin=origin,
                )
        elif btype == PCAPNG_EPB:
            if len(body) < 20:
                raise RuletraceError(f"block {n}: enhanced packet block too short", origin=origin)
            ifid, ts_hi, ts_lo, caplen, _orig = struct.unpack_from(bo + "IIIII", body)
            if ifid >= len(ifaces):
                raise RuletraceError(f"block {n}: packet for undeclared interface {ifid}", origin=origin)
            if 20 + caplen > len(body):
                raise RuletraceError(f"block {n}: truncated packet data", origin=origin)
            yield n, ((ts_hi << 32) | ts_lo) / ifaces[ifid][1], body[20 : 20 + caplen], bo
        elif btype == PCAPNG_SPB:
            if not ifaces:
                raise RuletraceError(f"block {n}: packet before any interface block", origin=origin)
            if len(body) < 4:
                raise RuletraceError(f"block {n}: simple packet block too short", origin=origin)
            (orig,) = struct.unpack_from(bo + "I", body)
            yield n, 0.0, body[4 : 4 + orig], bo
        # other blocks (name resolution, statistics, custom) carry no packets
        start = stream.offset
        block_type_raw = _read_exact(stream, 4)


def _tsresol(opts: bytes, bo: str) -> int:
    off = 0
    while off + 4 <= len(opts):
        code, length = struct.unpack_from(bo + "HH", opts, off)
        if code == PCAPNG_OPT_ENDOFOPT:
            break
        if code == PCAPNG_OPT_IF_TSRESOL and length >= 1:
            v = opts[off + 4]
            return int(2 ** (v & 0x7F) if v & 0x80 else 10**v)
        off += 4 + ((length + 3) & ~3)
    return 1_000_000  # default: microseconds


# --- NFLOG TLVs ----------------------------------------------------------------------


def _align4(n: int) -> int:
    return (n + 3) & ~3


def iter_tlvs(buf: bytes, hdr: struct.Struct, origin: Origin) -> Iterator[tuple[int, bytes]]:
    """Walk NFLOG TLVs after the nflog header: ``(type, value)`` pairs."""
    off = 0
    while off + hdr.size <= len(buf):
        length, kind = hdr.unpack_from(buf, off)
        if length < hdr.size:
            raise RuletraceError(f"offset {off:#x}: TLV length {length} < {hdr.size}", origin=origin)
        if off + length > len(buf):
            raise RuletraceError(f"offset {off:#x}: TLV type {kind & NLA_TYPE_MASK} runs past the record "
                                 f"({length} bytes, {len(buf) - off} left)", origin=origin)
        yield kind & NLA_TYPE_MASK, buf[off + hdr.size : off + length]
        off += _align4(length)


def decode_record(body: bytes, byte_order: str, origin: Origin) -> dict[int, bytes]:
    """One NFLOG record body -> {family: ..., NFULA_* type: value}; key 0 holds the family."""
    if len(body) < NFLOG_HDR.size:
        raise RuletraceError(f"record shorter than the nflog header ({len(body)} bytes)", origin=origin)
    family, version, _group = NFLOG_HDR.unpack_from(body)
    if version != 0:
        raise RuletraceError(f"unknown nflog version {version}", origin=origin)
    hdr = TLV_HDR_LE if byte_order == "<" else TLV_HDR_BE
    tlvs: dict[int, bytes] = {0: bytes([family])}
    for kind, value in iter_tlvs(body[NFLOG_HDR.size :], hdr, origin):
        tlvs.setdefault(kind, value)
    return tlvs


def _be32(v: bytes) -> int:
    return struct.unpack("!I", v[:4])[0] if len(v) >= 4 else 0


def read_events(
    stream: BinaryIO,
    *,
    name: str,
    stats: Any = None,
    ifmap: dict[int, str] | None = None,
) -> Iterator[TraceEvent]:
    """TRACE events from an NFLOG pcap/pcapng capture; records without a TRACE prefix are skipped."""
    ifname = _ifnamer(ifmap)
    tally = Tally(stats)
    try:
        yield from _events(stream, name, stats, ifname, tally)
    except Truncated as e:
        if stats is None or not hasattr(stats, "warnings"):
            raise
        stats.warnings.append(f"{e} at byte {e.offset:,}: the capture is cut off there (still being "
                              "written, or tcpdump was killed); every whole record before it was read")
    tally.finish()


def _events(stream: BinaryIO, name: str, stats: Any, ifname: Any, tally: Tally) -> Iterator[TraceEvent]:
    for n, ts, body, bo in iter_records(stream, name=name):
        origin = Origin(name, n)
        try:
            tlvs = decode_record(body, bo, origin)
        except RuletraceError as e:
            tally.bad(origin, e.message)
            continue
        prefix = tlvs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0]
        tag = parse_tag(prefix)
        note_record(stats, event=tag is not None)
        if tag is None:
            continue  # an ordinary NFLOG rule's packet, not a TRACE step
        table, chain, kind, num = tag
        family = tlvs[0][0]
        try:
            fields = packet_fields(tlvs, ifname)
        except (struct.error, ValueError, IndexError) as e:
            tally.bad(origin, f"undecodable packet: {e}")
            continue
        stamp = tlvs.get(NFULA_TIMESTAMP)
        if stamp is not None and len(stamp) >= 16:
            sec, usec = struct.unpack("!QQ", stamp[:16])
            ts = sec + usec * 1e-6
        when = sane_ts(ts)
        yield TraceEvent(
            table,
            chain,
            kind,
            num,
            ts=when,
            family=FAMILIES.get(family, str(family)),
            ident=packet_ident(fields),
            origin=origin,
            source=SOURCE,
            fields=fields,
        )


def _ifnamer(ifmap: dict[int, str] | None) -> Callable[[int], str]:
    def name(index: int) -> str:
        if ifmap and index in ifmap:
            return ifmap[index]
        return f"if{index}"

    return name


def packet_fields(tlvs: dict[int, bytes], ifname: Callable[[int], str]) -> dict[str, str]:
    """Kernel-log fields (IN= OUT= MAC= SRC= …) from decoded NFLOG attributes."""
    f: dict[str, str] = {}
    indev = tlvs.get(NFULA_IFINDEX_INDEV)
    outdev = tlvs.get(NFULA_IFINDEX_OUTDEV)
    f["IN"] = ifname(_be32(indev)) if indev else ""
    f["OUT"] = ifname(_be32(outdev)) if outdev else ""
    if NFULA_IFINDEX_PHYSINDEV in tlvs:
        f["PHYSIN"] = ifname(_be32(tlvs[NFULA_IFINDEX_PHYSINDEV]))
    if NFULA_IFINDEX_PHYSOUTDEV in tlvs:
        f["PHYSOUT"] = ifname(_be32(tlvs[NFULA_IFINDEX_PHYSOUTDEV]))
    hw = tlvs.get(NFULA_HWHEADER)
    hwtype = tlvs.get(NFULA_HWTYPE)
    if hw and indev:  # nf_log prints MAC= on the input path only
        f["MAC"] = ":".join(f"{b:02x}" for b in hw)
        if (hwtype is None or struct.unpack("!H", hwtype[:2])[0] == ARPHRD_ETHER) and len(hw) == ETH_HLEN:
            f["MACDST"] = ":".join(f"{b:02x}" for b in hw[0:6])
            f["MACSRC"] = ":".join(f"{b:02x}" for b in hw[6:12])
            f["MACPROTO"] = hw[12:14].hex()
    payload = tlvs.get(NFULA_PAYLOAD, b"")
    family = tlvs[0][0]
    if payload:
        version = payload[0] >> 4
        if version == 4:
            _ipv4(payload, f)
        elif version == 6:
            _ipv6(payload, f)
        elif family not in (AF_INET, AF_INET6):
            f["PROTO"] = str(struct.unpack("!H", tlvs[NFULA_PACKET_HDR][:2])[0]) if NFULA_PACKET_HDR in tlvs else "?"
    if NFULA_UID in tlvs:
        f["UID"] = str(_be32(tlvs[NFULA_UID]))
    if NFULA_GID in tlvs:
        f["GID"] = str(_be32(tlvs[NFULA_GID]))
    mark = _be32(tlvs[NFULA_MARK]) if NFULA_MARK in tlvs else 0
    if mark:  # nf_log prints MARK= only when nonzero
        f["MARK"] = f"{mark:#x}"
    if NFULA_CT_INFO in tlvs:
        info = _be32(tlvs[NFULA_CT_INFO])
        f["CTINFO"] = CT_INFO.get(info, str(info))
    return f


def _ipv4(p: bytes, f: dict[str, str]) -> None:
    ver_ihl, tos, tot_len, ip_id, frag, ttl, proto, _csum, src, dst = IPV4_HDR.unpack_from(p)
    ihl = (ver_ihl & 0x0F) * 4
    f["SRC"] = str(ipaddress.IPv4Address(src))
    f["DST"] = str(ipaddress.IPv4Address(dst))
    f["LEN"] = str(tot_len)
    f["TOS"] = f"0x{tos & IPTOS_TOS_MASK:02X}"
    f["PREC"] = f"0x{tos & IPTOS_PREC_MASK:02X}"
    f["TTL"] = str(ttl)
    f["ID"] = str(ip_id)
    flags = [n for n, bit in (("CE", IP_CE), ("DF", IP_DF), ("MF", IP_MF)) if frag & bit]
    if flags:
        f["IPFLAGS"] = " ".join(flags)
    if frag & IP_OFFSET:
        f["FRAG"] = str(frag & IP_OFFSET)
    if ihl > IPV4_HDR.size:
        f["IPOPT"] = p[IPV4_HDR.size : ihl].hex().upper()
    if frag & IP_OFFSET:  # not the first fragment: no transport header (as nf_log)
        f["PROTO"] = IPPROTO_NAMES.get(proto, str(proto))
        return
    _transport(proto, p[ihl:], f, icmpv6=False)


def _ipv6(p: bytes, f: dict[str, str]) -> None:
    vtf, plen, nexthdr, hlim, src, dst = IPV6_HDR.unpack_from(p)
    f["SRC"] = _ip6(src)  # nf_log prints %pI6: eight 4-digit groups, no "::"
    f["DST"] = _ip6(dst)
    f["LEN"] = str(plen + IPV6_HDR.size)
    f["TC"] = str((vtf & 0x0FF00000) >> 20)
    f["HOPLIMIT"] = str(hlim)
    f["FLOWLBL"] = str(vtf & 0x000FFFFF)
    off = IPV6_HDR.size
    while nexthdr in IPV6_EXT or nexthdr == IPV6_FRAG:
        if off + 8 > len(p):
            f["PROTO"] = str(nexthdr)
            return
        if nexthdr == IPV6_FRAG:
            frag = struct.unpack_from("!H", p, off + 2)[0]
            if frag & 0xFFF8:
                f["FRAG"] = str(frag >> 3)
                f["PROTO"] = IPPROTO_NAMES.get(p[off], str(p[off]))
                return
            nexthdr, off = p[off], off + 8
        else:
            nexthdr, off = p[off], off + (p[off + 1] + 1) * 8
    _transport(nexthdr, p[off:], f, icmpv6=True)


def _ip6(b: bytes) -> str:
    return ":".join(b[i : i + 2].hex() for i in range(0, 16, 2))


def _transport(proto: int, t: bytes, f: dict[str, str], *, icmpv6: bool) -> None:
    name = IPPROTO_NAMES.get(proto, str(proto))
    f["PROTO"] = name
    if proto == 6 and len(t) >= TCP_HDR.size:
        sport, dport, seq, ack, offflags, window, _csum, urg = TCP_HDR.unpack_from(t)
        f["SPT"], f["DPT"] = str(sport), str(dport)
        f["SEQ"], f["ACK"] = str(seq), str(ack)
        f["WINDOW"] = str(window)
        # nf_log prints (flag word & TCP_RESERVED_BITS 0x0F000000) >> 22: the 4 reserved bits times 4
        f["RES"] = f"0x{((offflags >> 8) & 0x0F) << 2:02x}"
        f["TCPFLAGS"] = " ".join(n for n, bit in TCP_FLAGS if offflags & bit)
        f["URGP"] = str(urg)
        doff = (offflags >> 12) * 4
        if doff > TCP_HDR.size and len(t) >= doff:
            f["OPT"] = t[TCP_HDR.size : doff].hex().upper()
    elif proto in (17, 136) and len(t) >= UDP_HDR.size:
        sport, dport, ulen, _csum = UDP_HDR.unpack_from(t)
        f["SPT"], f["DPT"], f["ULEN"] = str(sport), str(dport), str(ulen)
    elif proto in (1, 58) and len(t) >= 4:
        f["TYPE"], f["CODE"] = str(t[0]), str(t[1])
        echo = ICMPV6_ECHO_TYPES if icmpv6 else ICMP_ECHO_TYPES
        if t[0] in echo and len(t) >= ICMP_HDR.size:
            _t, _c, _s, icmp_id, icmp_seq = ICMP_HDR.unpack_from(t)
            f["ICMPID"], f["ICMPSEQ"] = str(icmp_id), str(icmp_seq)
    elif proto in (6, 17, 136):
        f["INCOMPLETE"] = str(len(t))
