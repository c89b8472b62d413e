"""NFLOG records -> kernel-log fields and TRACE steps: one decoder for every NFLOG reader.

Used by the capture reader (``nflog_pcap.py``: records from ``tcpdump -i nflog -w``), the live
NFLOG listener (``live/nflog.py``: records from netlink) and the live nftables trace decoder
(``live/nftrace.py``: its network/transport headers through ``link_fields``/``payload_fields``).
Spec: include/uapi/linux/netfilter/nfnetlink_log.h and https://www.tcpdump.org/linktypes/LINKTYPE_NFLOG.html.
TLV length and type are in the byte order of the host that logged (a capture file's byte order);
attribute values are big-endian. Fields are named and written as net/netfilter/nf_log_syslog.c
prints them (see ``fields.py``).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterator

from ..errors import RuletraceError
from ..fields import packet_ident, proto_name, tcp_flags_text
from ..model import Origin, StepKind, TraceEvent
from .tag import from_prefix as parse_tag

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
# netfilter's protocol family numbers (NFPROTO_*, the AF_* numbers for IP and bridge), as NFLOG
# headers, ulogd's oob.family and nf_tables trace events carry them -> the family names events carry
FAMILIES = {AF_INET: "ipv4", AF_INET6: "ipv6", AF_BRIDGE: "bridge", 1: "inet", 3: "arp", 5: "netdev"}
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
ICMP_ECHO_TYPES = frozenset({0, 8})
ICMPV6_ECHO_TYPES = frozenset({128, 129})
# IPv6 extension headers the kernel log walks over (hop-by-hop, routing, dest opts)
IPV6_EXT = frozenset({0, 43, 60})
IPV6_FRAG = 44


# --- TLVs --------------------------------------------------------------------------


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
    n: int = struct.unpack("!I", v[:4])[0] if len(v) >= 4 else 0
    return n

# --- TRACE steps ---------------------------------------------------------------------

# what a damaged packet header raises in packet_fields / payload_fields
DECODE_ERRORS: tuple[type[Exception], ...] = (struct.error, ValueError, IndexError)


def trace_tag(tlvs: dict[int, bytes]) -> tuple[str, str, StepKind, int | None] | None:
    """The TRACE tag of the record's prefix (``TRACE: filter:INPUT:rule:2``), None for an
    ordinary NFLOG rule's packet."""
    return parse_tag(tlvs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0])


def step_event(tlvs: dict[int, bytes], tag: tuple[str, str, StepKind, int | None], *,
               ifname: Callable[[int], str], ts: float | None, origin: Origin, source: str) -> TraceEvent:
    """The TraceEvent of one TRACE record; ``ts`` unless the record has its own timestamp.

    Raises one of ``DECODE_ERRORS`` when the packet's headers cannot be decoded.
    """
    table, chain, kind, num = tag
    fields = packet_fields(tlvs, ifname)
    stamp = tlvs.get(NFULA_TIMESTAMP)
    if stamp is not None and len(stamp) >= 16:
        sec, usec = struct.unpack("!QQ", stamp[:16])
        ts = sec + usec * 1e-6
    family = tlvs[0][0]
    return TraceEvent(table, chain, kind, num, ts=ts, family=FAMILIES.get(family, str(family)),
                      ident=packet_ident(fields), origin=origin, source=source, fields=fields)


# --- packet fields -------------------------------------------------------------------


def packet_fields(tlvs: dict[int, bytes], ifname: Callable[[int], str]) -> dict[str, str]:
    """Kernel-log fields (IN= OUT= MAC= SRC= …) from decoded NFLOG attributes."""
    f: dict[str, str] = {}
    indev = tlvs.get(NFULA_IFINDEX_INDEV)
    outdev = tlvs.get(NFULA_IFINDEX_OUTDEV)
    hwtype = tlvs.get(NFULA_HWTYPE)
    link_fields(f, ifname, _be32(indev) if indev else None, _be32(outdev) if outdev else None,
                tlvs.get(NFULA_HWHEADER), struct.unpack("!H", hwtype[:2])[0] if hwtype is not None else None)
    if NFULA_IFINDEX_PHYSINDEV in tlvs:
        f["PHYSIN"] = ifname(_be32(tlvs[NFULA_IFINDEX_PHYSINDEV]))
    if NFULA_IFINDEX_PHYSOUTDEV in tlvs:
        f["PHYSOUT"] = ifname(_be32(tlvs[NFULA_IFINDEX_PHYSOUTDEV]))
    payload = tlvs.get(NFULA_PAYLOAD, b"")
    family = tlvs[0][0]
    if payload and not payload_fields(payload, f) and family not in (AF_INET, AF_INET6):
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


def link_fields(f: dict[str, str], ifname: Callable[[int], str], indev: int | None, outdev: int | None,
                hw: bytes | None, hwtype: int | None) -> None:
    """IN= OUT= and MAC= (split into MACDST MACSRC MACPROTO for Ethernet) into ``f``.

    ``indev``/``outdev``: interface indexes (None: none); ``hw``: the link-layer header;
    ``hwtype``: its ARPHRD_* type (None: unknown, read as Ethernet when 14 bytes long).
    """
    f["IN"] = ifname(indev) if indev is not None else ""
    f["OUT"] = ifname(outdev) if outdev is not None else ""
    if hw and indev is not None:  # nf_log prints MAC= on the input path only
        f["MAC"] = ":".join(f"{b:02x}" for b in hw)
        if (hwtype is None or hwtype == ARPHRD_ETHER) and len(hw) == ETH_HLEN:
            f["MACDST"] = ":".join(f"{b:02x}" for b in hw[0:6])
            f["MACSRC"] = ":".join(f"{b:02x}" for b in hw[6:12])
            f["MACPROTO"] = hw[12:14].hex()


def payload_fields(p: bytes, f: dict[str, str]) -> bool:
    """The network header onward (IPv4 or IPv6, then TCP/UDP/ICMP) into ``f``, as nf_log prints it.

    False when ``p`` is no IP packet. Damaged headers raise struct.error / ValueError / IndexError
    (``DECODE_ERRORS``).
    """
    version = p[0] >> 4 if p else 0
    if version == 4:
        _ipv4(p, f)
    elif version == 6:
        _ipv6(p, f)
    else:
        return False
    return True


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
        f["PROTO"] = proto_name(proto)
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
                f["PROTO"] = proto_name(p[off])
                return
            nexthdr, off = p[off], off + 8
        else:
            nexthdr, off = p[off], off + (p[off + 1] + 1) * 8
    _transport(nexthdr, p[off:], f, icmpv6=True)


def _ip6(b: bytes) -> str:
    return ":".join(b[i : i + 2].hex() for i in range(0, 16, 2))


def _transport(proto: int, t: bytes, f: dict[str, str], *, icmpv6: bool) -> None:
    name = proto_name(proto)
    f["PROTO"] = name
    if proto == 6 and len(t) >= TCP_HDR.size:
        sport, dport, seq, ack, offflags, window, _csum, urg = TCP_HDR.unpack_from(t)
        f["SPT"], f["DPT"] = str(sport), str(dport)
        f["SEQ"], f["ACK"] = str(seq), str(ack)
        f["WINDOW"] = str(window)
        # nf_log prints (flag word & TCP_RESERVED_BITS 0x0F000000) >> 22: the 4 reserved bits times 4
        f["RES"] = f"0x{((offflags >> 8) & 0x0F) << 2:02x}"
        f["TCPFLAGS"] = tcp_flags_text(offflags)
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
