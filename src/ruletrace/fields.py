"""Packet-field vocabulary shared by all sources (the kernel log's names) and the nf_log text parser.

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
import re
from collections.abc import Iterable
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
_TCP_FLAGS = frozenset(TCP_FLAG_WORDS)
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


# Keys the kernel prints with "=", longest first: used to split pastes that lost a space
# ("LEN=84TOS=0x00", "TYPE=8CODE=0ID=28976SEQ=1"). ARP-only keys are left out on purpose:
# "PROTO=ICMPTYPE=8" must split as PROTO + TYPE, not PROTO + PTYPE.
_GLUE_KEYS = tuple(
    sorted(
        {
            "IN", "OUT", "PHYSIN", "PHYSOUT", "MAC", "MACSRC", "MACDST", "MACPROTO", "VPROTO", "VID",
            "SRC", "DST", "LEN", "TOS", "PREC", "TTL", "ID", "TC", "HOPLIMIT", "FLOWLBL", "PROTO",
            "SPT", "DPT", "SEQ", "ACK", "WINDOW", "RES", "URGP", "TYPE", "CODE", "PARAMETER",
            "POINTER", "GATEWAY", "MTU", "SPI", "UID", "GID", "MARK", "TUNNEL",
        },
        key=len,
        reverse=True,
    )
)

_ETH_MAC_LEN = 41  # 14 bytes "dd:dd:dd:dd:dd:dd:ss:ss:ss:ss:ss:ss:pp:pp" (ETH_HLEN = 14)


def _unglue(tok: str) -> list[str]:
    """Split a token that lost its spaces, e.g. ``TTL=64ID=0`` -> ``TTL=64``, ``ID=0``."""
    parts: list[str] = []
    start = 0  # start of the current key=value piece
    eq = tok.find("=")
    while True:
        nxt = tok.find("=", eq + 1)
        if nxt < 0:
            parts.append(tok[start:])
            return parts
        before = tok[eq + 1 : nxt]  # value of the current key, glued to the next key
        for key in _GLUE_KEYS:
            if before.endswith(key) and len(before) > len(key):
                cut = eq + 1 + len(before) - len(key)
                parts.append(tok[start:cut])
                start = cut
                break
            if before == key:  # empty value: "IN=OUT=eth0"
                parts.append(tok[start : eq + 1])
                start = eq + 1
                break
        eq = nxt


def _group(toks: list[str], i: int, open_: str, close: str) -> tuple[str, int]:
    """Join tokens from ``toks[i]`` until the brackets balance; return the text and the next index."""
    depth = 0
    j = i
    n = len(toks)
    while j < n:
        t = toks[j]
        depth += t.count(open_) - t.count(close)
        j += 1
        if depth <= 0:
            break
    return " ".join(toks[i:j]), j


_last: tuple[object, dict[str, str]] = (None, {})  # the last text parsed and its fields
# recent texts and their fields: the steps of the few packets in flight repeat their texts,
# though not always one after the other (a packet's steps are explained after all were read)
_recent: dict[str | bytes, dict[str, str]] = {}
_RECENT_MAX = 4096


def parse_fields(raw: str | bytes) -> dict[str, str]:
    """Parse the nf_log field text that starts at ``IN=`` into a dict keyed by kernel-log names."""
    global _last
    last = _last
    if raw is last[0]:  # consecutive events often share one text object (see sources.kernel_log)
        return dict(last[1])
    got = _recent.get(raw) if isinstance(raw, (str, bytes)) else None
    if got is not None:
        _last = (raw, got)
        return dict(got)
    s = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    if not s.startswith("IN="):
        i = s.find("IN=")
        while i > 0 and s[i - 1].isalpha():  # PHYSIN=, or a prefix word ending in "IN="
            i = s.find("IN=", i + 3)
        if i >= 0:
            s = s[i:]
    out = _parse_regular(s)
    if out is None:
        out = _parse_tokens(s)
    if "..." in s or "\u2026" in s:  # redacted values (MAC=...) are unknown, never a value
        out = {k: v for k, v in out.items() if v.strip(".\u2026")}
    for k in ("SRC", "DST"):  # a redacted or damaged address (10.0.0.x, <ip>) is unknown, never a value
        v = out.get(k)
        if v is not None and not address_ok(v):
            del out[k]
    _last = (raw, out)
    if isinstance(raw, (str, bytes)):
        if len(_recent) >= _RECENT_MAX:
            _recent.clear()
        _recent[raw] = out
    return dict(out)


_HEX6 = frozenset("0123456789abcdefABCDEF:.")


def address_ok(v: str) -> bool:
    """Is ``v`` an address as nf_log prints one (dotted IPv4, IPv6 with colons)? Cheap: no
    ``ipaddress`` object on this path; run once per distinct field text."""
    if ":" in v:
        return 2 <= v.count(":") <= 7 and len(v) <= 45 and all(c in _HEX6 for c in v)
    parts = v.split(".")
    return len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts)


_KV = re.compile(r"(?<![A-Z])([A-Z]+)=(\S*)")  # not from inside a run of capitals: linear
_IP_FLAG = re.compile(r" (CE|DF|MF)(?= |$)")
_TCP_FLAG = re.compile(r" (AE|CWR|ECE|URG|ACK|PSH|RST|SYN|FIN)(?= |$)")
_TCP_OPT = re.compile(r" OPT \(([^ ()]*)\)")


def _parse_regular(s: str) -> dict[str, str] | None:
    """Fast path for the common layout (a few C-level regex calls); None for anything unusual.

    Taken only when every token is accounted for: ``KEY=value`` pairs, IP flags before
    ``PROTO=``, TCP flags and one TCP ``OPT (hex)`` after it. Glued keys, inner packets, IP
    options, fragments' extension headers, ARP and unknown words go to ``_parse_tokens``.
    """
    p = s.find(" PROTO=")
    if p < 0 or "[" in s:
        return None
    head = s[:p]
    tail = s[p:]
    hk = _KV.findall(head)
    tk = _KV.findall(tail)
    if len(hk) + len(tk) != s.count("="):
        return None
    ipf = _IP_FLAG.findall(head)
    tcpf = _TCP_FLAG.findall(tail)
    m = _TCP_OPT.search(tail)
    if len(hk) + len(tk) + len(ipf) + len(tcpf) + (2 if m else 0) != len(s.split()):
        return None
    out = dict(hk)
    if len(out) != len(hk):
        return None  # a key twice
    mac = out.get("MAC")
    if mac is not None and len(mac) == _ETH_MAC_LEN:
        out["MACDST"] = mac[:17]
        out["MACSRC"] = mac[18:35]
        out["MACPROTO"] = mac[36:38] + mac[39:41]
    if ipf:
        out["IPFLAGS"] = " ".join(ipf)
    t = dict(tk)
    proto = t["PROTO"]
    if "LEN" in t:
        t["ULEN"] = t.pop("LEN")
    if proto.startswith("ICMP"):
        if "ID" in t:
            t["ICMPID"] = t.pop("ID")
        if "SEQ" in t:
            t["ICMPSEQ"] = t.pop("SEQ")
    out.update(t)
    if tcpf:
        out["TCPFLAGS"] = " ".join(tcpf)
    elif proto == "TCP" and "URGP" in out:
        out["TCPFLAGS"] = ""
    if m:
        out["OPT"] = m.group(1)
    return out


def _parse_tokens(s: str) -> dict[str, str]:
    """The general parser: token by token, splitting glued keys, grouping ``[…]`` and ``OPT (…)``."""
    out: dict[str, str] = {}
    toks = s.split()
    ipflags: list[str] = []
    tcpflags: list[str] = []
    extra: list[str] = []
    proto: str | None = None  # set once PROTO= is seen: later keys belong to the transport header
    i = 0
    n = len(toks)
    while i < n:
        tok = toks[i]
        i += 1
        if tok.startswith("["):  # ICMP error: the quoted packet, one level deep
            text, i = _group(toks, i - 1, "[", "]")
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1].strip()
            out.setdefault("INNER", text)
            continue
        eq = tok.find("=")
        if eq > 0:
            if tok.find("=", eq + 1) > 0 and not tok.startswith(("[", "TUNNEL=")):
                pieces = _unglue(tok)
                if len(pieces) > 1:
                    toks[i - 1 : i] = pieces
                    n = len(toks)
                    i -= 1
                    continue
            key = tok[:eq]
            val = tok[eq + 1 :]
            if proto is not None:
                if key == "LEN":
                    key = "ULEN"
                elif proto.startswith("ICMP"):
                    if key == "ID":
                        key = "ICMPID"
                    elif key == "SEQ":
                        key = "ICMPSEQ"
            elif key == "PROTO":
                proto = val
            elif key == "MAC" and len(val) == _ETH_MAC_LEN:
                out["MACDST"] = val[:17]
                out["MACSRC"] = val[18:35]
                out["MACPROTO"] = val[36:38] + val[39:41]
            if key not in out:  # the first value wins (ARP payload MACSRC after the Ethernet one)
                out[key] = val
            continue
        if tok == "OPT" and i < n and toks[i].startswith("("):
            text, i = _group(toks, i, "(", ")")
            inner = text[1:-1].strip() if text.endswith(")") else text[1:].strip()
            if proto is None:  # IPv4 options (hex), or IPv6 extension headers "( FRAG:0 ID:… )"
                if " " in inner or inner.startswith("FRAG:"):
                    _ext_words(inner.split(), out, ipflags, extra)
                out.setdefault("IPOPT", inner)
            else:  # TCP options (hex)
                out.setdefault("OPT", inner)
            continue
        if tok.startswith("FRAG:") or tok.startswith("ID:"):
            _ext_words([tok], out, ipflags, extra)
            continue
        if tok == "INCOMPLETE":
            if i < n and toks[i].startswith("["):  # "INCOMPLETE [65535 bytes]"
                text, i = _group(toks, i, "[", "]")
                out.setdefault("INCOMPLETE", text.strip("[]").split()[0] if text.strip("[] ") else "")
            else:  # IPv6 fragment header with the M flag set
                ipflags.append("MF")
            continue
        if proto is None:
            if tok in IP_FLAG_WORDS:
                ipflags.append(tok)
                continue
            if tok == "ARP":
                out.setdefault("PROTO", "ARP")
                continue
        elif tok in _TCP_FLAGS:
            tcpflags.append(tok)
            continue
        if tok == "TRUNCATED":
            out["TRUNCATED"] = ""
            continue
        extra.append(tok)
    if ipflags:
        out["IPFLAGS"] = " ".join(ipflags)
    if tcpflags:
        out["TCPFLAGS"] = " ".join(tcpflags)
    elif proto == "TCP" and "URGP" in out:
        out["TCPFLAGS"] = ""
    if extra:
        out["EXTRA"] = " ".join(extra)
    return out


def _ext_words(toks: list[str], out: dict[str, str], ipflags: list[str], extra: list[str]) -> None:
    """IPv6 extension-header words: ``FRAG:off``, ``INCOMPLETE`` (M flag), ``ID:%08x``, ``AH``, ``ESP``."""
    for t in toks:
        if t.startswith("FRAG:"):
            out.setdefault("FRAG", t[5:])
        elif t.startswith("ID:"):
            out.setdefault("FRAGID", t[3:])
        elif t == "INCOMPLETE":
            ipflags.append("MF")
        elif t.startswith("SPI="):
            out.setdefault("SPI", t[4:])
        elif t in ("AH", "ESP", ")", "("):
            continue
        else:
            extra.append(t)


def family_of(fields: dict[str, str]) -> str | None:
    """``"ipv4"`` or ``"ipv6"`` from which header fields are present, else None."""
    if "HOPLIMIT" in fields or "FLOWLBL" in fields:
        return "ipv6"
    if "TTL" in fields or "TOS" in fields:
        return "ipv4"
    return None


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


_ELLIPSES = ("...", "\u2026")


def tidy_text(s: str) -> tuple[str, bool]:
    """Damaged field text as the kernel printed it: (text, whether it ended in ``...``).

    Tabs and runs of blanks separate fields like one space (``dmesg -T``, ``column -t``);
    fields glued by a lost space are split (``LEN=84TOS=0x00``); a trailing ``...`` (a paste cut
    on purpose) is taken off and reported, so that the fields before it count as whole.
    """
    toks = s.split()
    cut = False
    if toks and toks[-1].endswith(_ELLIPSES):
        last = toks.pop().rstrip(".\u2026")
        cut = True
        if last:
            toks.append(last)
            cut = False  # "DPT=80...": that value may be cut too
    out: list[str] = []
    for tok in toks:
        eq = tok.find("=")
        if eq > 0 and tok.find("=", eq + 1) > 0 and not tok.startswith(("[", "TUNNEL=")):
            out.extend(_unglue(tok))
        else:
            out.append(tok)
    return " ".join(out), cut


class PartialIdent(bytes):
    """An ident that holds only the first part of a packet's identity (its record was cut short).

    A byte prefix of the full ident of the record's packet. Grouping matches it to the open
    packet whose ident it starts (``correlate.group.resolve_key``), and a full ident to an open
    packet started by a partial one.
    """

    __slots__ = ()
