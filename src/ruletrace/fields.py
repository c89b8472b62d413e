"""Packet-field vocabulary shared by all sources, the simulator and the views (the kernel log's names).

The text parser (kernel-log field text -> these fields) is ``logtext.py``.

Format: net/netfilter/nf_log_syslog.c (``nf_log_dump_packet_common``, ``dump_mac_header``,
``dump_ipv4_packet``, ``dump_ipv6_packet``, ``nf_log_dump_tcp_header``, ``nf_log_dump_udp_header``).
The kernel prints, in this order (``[]`` = only sometimes)::

    IN= OUT= [PHYSIN=] [PHYSOUT=] [MAC=dst:src:proto | MACSRC= MACDST= [VPROTO= VID=] MACPROTO=]
    IPv4: SRC= DST= LEN= TOS= PREC= TTL= ID= [CE] [DF] [MF] [FRAG:off] [OPT (hex)]
    IPv6: SRC= DST= LEN= TC= HOPLIMIT= FLOWLBL= [OPT ( FRAG:off [INCOMPLETE] ID:hex )]
    PROTO=TCP [SPT= DPT= [SEQ= ACK=] WINDOW= RES= flags URGP= [OPT (hex)]]
    PROTO=UDP|UDPLITE [SPT= DPT= LEN=]
    PROTO=ICMP|ICMPv6 [TYPE= CODE= [ID= SEQ= | PARAMETER= | POINTER= | GATEWAY= | [inner] [MTU=]]]
    PROTO=AH|ESP SPI=0x..   PROTO=<number>   [INCOMPLETE [n bytes]]
    [UID= GID=] [MARK=0x..]

Keys that would clash are renamed here: the transport ``LEN`` of UDP is ``ULEN``; ICMP echo
``ID``/``SEQ`` are ``ICMPID``/``ICMPSEQ``; the bare IP flags go to ``IPFLAGS`` and the bare TCP
flags to ``TCPFLAGS`` (space-joined, kernel order); ``FRAG:n`` becomes ``FRAG``; an IPv4 ``OPT``
before ``PROTO`` (and the IPv6 extension-header text) is ``IPOPT``, the TCP one is ``OPT``
(hex, without the parentheses); the ICMP
error's quoted packet ``[SRC=... ]`` is kept as text in ``INNER``; ``MAC`` is kept and, when it
is an Ethernet header, also split into ``MACDST``, ``MACSRC`` and ``MACPROTO`` (4 hex digits,
as the kernel's MACDECODE prints it). IPv6 fragment headers give ``FRAG`` (offset), ``FRAGID``
(hex) and ``MF`` in ``IPFLAGS`` (the kernel's ``INCOMPLETE`` there); ``INCOMPLETE [n bytes]``
gives ``INCOMPLETE`` = n; words nobody knows are kept, space-joined, in ``EXTRA``.
Values are the kernel's text, unconverted (``TOS=0x00``, ``MARK=0x8000``, addresses as printed).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache

# Names a TraceEvent.fields dict may hold (kernel-log names, see docs/DEVELOPING.md).
INTERFACE_FIELDS = ("IN", "OUT", "PHYSIN", "PHYSOUT")
MAC_FIELDS = ("MAC", "MACDST", "MACSRC", "MACPROTO", "VPROTO", "VID", "TUNNEL")
IPV4_FIELDS = ("SRC", "DST", "LEN", "TOS", "PREC", "TTL", "ID", "IPFLAGS", "FRAG", "IPOPT", "PROTO")
IPV6_FIELDS = (
    "SRC", "DST", "LEN", "TC", "HOPLIMIT", "FLOWLBL", "FRAG", "FRAGID", "IPFLAGS", "IPOPT", "PROTO",
)
TCP_FIELDS = ("SPT", "DPT", "SEQ", "ACK", "WINDOW", "RES", "TCPFLAGS", "URGP", "OPT")
UDP_FIELDS = ("SPT", "DPT", "ULEN")
ICMP_FIELDS = ("TYPE", "CODE", "ICMPID", "ICMPSEQ", "PARAMETER", "POINTER", "GATEWAY", "MTU", "INNER")
OTHER_FIELDS = ("SPI", "UID", "GID", "MARK", "INCOMPLETE", "TRUNCATED", "EXTRA")
ARP_FIELDS = ("HTYPE", "PTYPE", "OPCODE", "IPSRC", "IPDST")
FIELD_NAMES = frozenset(
    INTERFACE_FIELDS + MAC_FIELDS + IPV4_FIELDS + IPV6_FIELDS + TCP_FIELDS + UDP_FIELDS
    + ICMP_FIELDS + OTHER_FIELDS + ARP_FIELDS
)

ADDRESS_FIELDS = ("SRC", "DST", "IPSRC", "IPDST", "GATEWAY")
# what each field a rule can test is, in words ("the packet's source is …"): near misses and --explain-miss
FIELD_WORDS: dict[str, str] = {
    "SRC": "source", "DST": "destination", "SPT": "source port", "DPT": "destination port", "PROTO": "protocol",
    "IN": "input interface", "OUT": "output interface", "PHYSIN": "bridge input port", "PHYSOUT": "bridge output port",
    "MARK": "mark", "TCPFLAGS": "TCP flags", "TYPE": "ICMP type", "UID": "socket owner", "GID": "socket group",
    "FRAG": "fragment", "CTMARK": "connection mark", "CTSTATE": "conntrack state", "TTL": "TTL",
    "HOPLIMIT": "hop limit", "LEN": "length", "PORTS": "ports",
}


@lru_cache(maxsize=4096)
def show_address(v: str) -> str:
    """An address as every view prints it: IPv6 compressed (RFC 5952), anything else unchanged.

    The kernel log prints IPv6 in full (``fd00:0010:0000:…:0002``, ``%pI6``), nft and conntrack
    compressed (``fd00:10::2``); the one printed form is ``ipaddress``'s (lower case, longest
    zero run as ``::``). A value that is not an IPv6 address (IPv4, a name, damage) is returned as
    it is. The data keeps the form the source used (JSON ``fields`` too); views call this.
    """
    if ":" not in v or len(v) > 64:
        return v
    try:
        return ipaddress.IPv6Address(v).compressed
    except ValueError:
        return v


def show_field(name: str, value: str) -> str:
    """A field's value as views print it: addresses through ``show_address``, the rest as logged."""
    return show_address(value) if name in ADDRESS_FIELDS else value


def same_address(have: str, want: str) -> bool:
    """Do two texts name the same IP address, whatever form each was written in?"""
    try:
        return ipaddress.ip_address(have) == ipaddress.ip_address(want)
    except ValueError:
        return False


# Bare words of dump_ipv4_packet: "CE DF MF" (IP_CE 0x8000, IP_DF 0x4000, IP_MF 0x2000).
MAX_DIGITS = 20  # a u64 counter has 20 decimal digits; longer numbers are damage, not data


def bounded_int(text: str | bytes, base: int = 10, max_digits: int = MAX_DIGITS) -> int | None:
    """An ASCII number of at most ``max_digits`` digits, else None.

    Input numbers go through here: ``str.isdigit`` and ``int`` also take Unicode digits
    (``"²".isdigit()`` is true, ``int("٣")`` is 3), and Python refuses to convert more than
    4,300 digits with a ValueError; neither belongs in a listing or a log.
    """
    if not text or len(text) > max_digits + 2 or not text.isascii():
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


IP_FLAG_WORDS = frozenset({"CE", "DF", "MF"})

# --- the packet vocabulary every reader, the simulator and the views share ------------------
# TCP flag bits (include/net/tcp.h TCPHDR_*, the low byte of the flags word) in the order
# nf_log_dump_tcp_header prints them; --tcp-flags names them the same way.
TCP_FLAG_BITS: dict[str, int] = {
    "CWR": 0x80, "ECE": 0x40, "URG": 0x20, "ACK": 0x10, "PSH": 0x08, "RST": 0x04, "SYN": 0x02, "FIN": 0x01,
}
# Bare words of nf_log_dump_tcp_header, in the order the kernel prints them (AE: AccECN, 6.x).
TCP_FLAG_WORDS = ("AE", *TCP_FLAG_BITS)
_FLAGS_TEXT = tuple(" ".join(n for n, bit in TCP_FLAG_BITS.items() if bits & bit) for bits in range(256))


def tcp_flags_text(bits: int) -> str:
    """The flag bits as the kernel log writes them: 0x12 -> ``ACK SYN`` (bits above 0xFF ignored)."""
    return _FLAGS_TEXT[bits & 0xFF]


def tcp_flags_ordered(words: Iterable[str]) -> str:
    """Flag names (``SYN``, ``ACK``, any order, any others left out) in the kernel log's order."""
    have = set(words)
    return " ".join(w for w in TCP_FLAG_WORDS if w in have)


# PROTO= of the kernel log: the protocols nf_log_syslog.c names (dump_ipv4_packet,
# dump_ipv6_packet); any other protocol is printed as its number.
PROTO_NAMES: dict[int, str] = {1: "ICMP", 6: "TCP", 17: "UDP", 50: "ESP", 51: "AH", 58: "ICMPv6", 136: "UDPLITE"}


def proto_name(number: int) -> str:
    """PROTO= as the kernel log writes it: ``TCP``, ``ICMPv6``, else the number (``132``)."""
    return PROTO_NAMES.get(number) or str(number)


# ICMP and ICMPv6 names, once for each syntax that writes them (values: type numbers, codes)
# nft's names for ICMP / ICMPv6 types (src/proto.c icmp_type_tbl, icmp6_type_tbl)
NFT_ICMP_TYPES: dict[str, int] = {
    "echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5, "echo-request": 8,
    "router-advertisement": 9, "router-solicitation": 10, "time-exceeded": 11, "parameter-problem": 12,
    "timestamp-request": 13, "timestamp-reply": 14, "info-request": 15, "info-reply": 16,
    "address-mask-request": 17, "address-mask-reply": 18,
}
NFT_ICMPV6_TYPES: dict[str, int] = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3, "parameter-problem": 4,
    "echo-request": 128, "echo-reply": 129, "mld-listener-query": 130, "mld-listener-report": 131,
    "mld-listener-done": 132, "nd-router-solicit": 133, "nd-router-advert": 134,
    "nd-neighbor-solicit": 135, "nd-neighbor-advert": 136, "nd-redirect": 137,
}
NFT_ICMP_CODES: dict[str, int] = {
    "net-unreachable": 0, "host-unreachable": 1, "prot-unreachable": 2, "port-unreachable": 3,
    "frag-needed": 4, "net-prohibited": 9, "host-prohibited": 10, "admin-prohibited": 13,
    "no-route": 0, "addr-unreachable": 3,
}
# ICMP type names as iptables -p icmp --help lists them: name -> (type, code or None)
XT_ICMP_TYPES: dict[str, tuple[int, int | None]] = {
    "any": (255, None),
    "echo-reply": (0, None),
    "pong": (0, None),
    "destination-unreachable": (3, None),
    "network-unreachable": (3, 0),
    "host-unreachable": (3, 1),
    "protocol-unreachable": (3, 2),
    "port-unreachable": (3, 3),
    "fragmentation-needed": (3, 4),
    "source-route-failed": (3, 5),
    "network-unknown": (3, 6),
    "host-unknown": (3, 7),
    "network-prohibited": (3, 9),
    "host-prohibited": (3, 10),
    "TOS-network-unreachable": (3, 11),
    "TOS-host-unreachable": (3, 12),
    "communication-prohibited": (3, 13),
    "host-precedence-violation": (3, 14),
    "precedence-cutoff": (3, 15),
    "source-quench": (4, None),
    "redirect": (5, None),
    "network-redirect": (5, 0),
    "host-redirect": (5, 1),
    "TOS-network-redirect": (5, 2),
    "TOS-host-redirect": (5, 3),
    "echo-request": (8, None),
    "ping": (8, None),
    "router-advertisement": (9, None),
    "router-solicitation": (10, None),
    "time-exceeded": (11, None),
    "ttl-exceeded": (11, None),
    "ttl-zero-during-transit": (11, 0),
    "ttl-zero-during-reassembly": (11, 1),
    "parameter-problem": (12, None),
    "ip-header-bad": (12, 0),
    "required-option-missing": (12, 1),
    "timestamp-request": (13, None),
    "timestamp-reply": (14, None),
    "address-mask-request": (17, None),
    "address-mask-reply": (18, None),
}
XT_ICMPV6_TYPES: dict[str, tuple[int, int | None]] = {
    "destination-unreachable": (1, None),
    "no-route": (1, 0),
    "communication-prohibited": (1, 1),
    "beyond-scope": (1, 2),
    "address-unreachable": (1, 3),
    "port-unreachable": (1, 4),
    "failed-policy": (1, 5),
    "reject-route": (1, 6),
    "packet-too-big": (2, None),
    "time-exceeded": (3, None),
    "ttl-exceeded": (3, None),
    "ttl-zero-during-transit": (3, 0),
    "ttl-zero-during-reassembly": (3, 1),
    "parameter-problem": (4, None),
    "bad-header": (4, 0),
    "unknown-header-type": (4, 1),
    "unknown-option": (4, 2),
    "echo-request": (128, None),
    "ping": (128, None),
    "echo-reply": (129, None),
    "pong": (129, None),
    "router-solicitation": (133, None),
    "router-advertisement": (134, None),
    "neighbour-solicitation": (135, None),
    "neighbor-solicitation": (135, None),
    "neighbour-advertisement": (136, None),
    "neighbor-advertisement": (136, None),
    "redirect": (137, None),
}


def family_of(fields: Mapping[str, str]) -> str | None:
    """``"ipv4"`` or ``"ipv6"`` from which header fields are present, else from the form of the
    addresses (a paste without TTL/HOPLIMIT), else None."""
    if "HOPLIMIT" in fields or "FLOWLBL" in fields:
        return "ipv6"
    if "TTL" in fields or "TOS" in fields:
        return "ipv4"
    a = fields.get("SRC") or fields.get("DST") or ""
    return "ipv6" if ":" in a else "ipv4" if "." in a else None


# Fields that stay the same while one packet crosses the rules (NAT rewrites SRC/DST/SPT/DPT and
# the ICMP echo id, forwarding lowers TTL/HOPLIMIT, DSCP/MARK targets change TOS/TC/MARK, and
# IN/OUT/MAC/UID/GID depend on the hook).
INVARIANT_FIELDS = (
    "PROTO", "LEN", "ID", "FLOWLBL", "IPFLAGS", "FRAG", "FRAGID",
    "SEQ", "ACK", "WINDOW", "TCPFLAGS", "TYPE", "CODE", "ICMPSEQ", "ULEN", "SPI",
)


def packet_ident(fields: dict[str, str]) -> tuple[str, ...]:
    """A hashable identity of a packet from fields that do not change along its path."""
    return tuple(fields.get(k, "") for k in INVARIANT_FIELDS)


class PartialIdent(bytes):
    """An ident that holds only the first part of a packet's identity (its record was cut short).

    A byte prefix of the full ident of the record's packet. Grouping matches it to the open
    packet whose ident it starts (``correlate.group.resolve_key``), and a full ident to an open
    packet started by a partial one.
    """

    __slots__ = ()
