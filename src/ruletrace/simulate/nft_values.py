"""nft selectors and values: what ``ip saddr``, ``meta mark``, ``ct state``… read from the simulated packet.

A selector is a getter ``(p, c) -> value or None`` and a value type; None is "the packet has no
such field" (a TCP port of a UDP packet, the output device in prerouting, a conntrack key without
an entry), where the kernel's expression breaks the rule (NFT_BREAK): no match, also for ``!=``.
Values are ints (addresses, ports, marks, bits) or strings (interface names); a value of a set,
map or comparison is an interval ``(lo, hi)`` of ints or a ``("=", name)`` / ``("*", prefix)``
interface name. Names follow nft(8) (src/proto.c, src/ct.c, src/meta.c).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from ..errors import RuletraceError
from ..fields import NFT_ICMP_CODES, NFT_ICMP_TYPES, NFT_ICMPV6_TYPES
from ..model import Origin
from ..rulesets.nft_model import rule_tokens
from ..rulesets.options import PROTOCOLS
from .hostfacts import to_int, to_net
from .nft_code import code_fn
from .probe import PORT_PROTOS
from .state import IPS_ASSURED, IPS_CONFIRMED, IPS_EXPECTED, IPS_SEEN_REPLY, Pkt

Getter = Callable[[Pkt, Any], Any]

# ct state bits (NF_CT_STATE_*_BIT) and ct status bits (IPS_*)
CT_STATE = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
_STATE_OF = {"INVALID": 1, "ESTABLISHED": 2, "RELATED": 4, "NEW": 8, "UNTRACKED": 64}
CT_STATUS = {"expected": IPS_EXPECTED, "seen-reply": IPS_SEEN_REPLY, "assured": IPS_ASSURED,
             "confirmed": IPS_CONFIRMED, "snat": 16, "dnat": 32, "dying": 512}
NFPROTO = {"ipv4": 2, "ipv6": 10}
PKTTYPE = {"host": 0, "unicast": 0, "broadcast": 1, "multicast": 2, "other": 3}
CT_DIR = {"original": 0, "reply": 1}
TCP_FLAGS = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ecn": 64, "cwr": 128}
FIB_TYPES = ("unspec", "unicast", "local", "broadcast", "anycast", "multicast", "blackhole", "unreachable",
             "prohibit", "throw", "nat", "xresolve")


def _g(expr: str, *consts: Any) -> Getter:
    """A getter from its expression (nft_code.code_fn: nft_gen.py inlines the same text)."""
    return code_fn(expr, consts)


def _ports(protos: frozenset[int], which: str) -> Getter:
    field = "p.sport" if which == "sport" else "p.dport"
    if len(protos) == 1:
        return _g(f"{field} if p.proto == {next(iter(protos))} else None")
    return _g(f"{field} if p.proto in {{0}} else None", protos)


def _addr(v: int, which: str) -> Getter:
    return _g(f"p.{'src' if which == 'saddr' else 'dst'} if p.v == {v} else None")


def _pkttype(p: Pkt, c: Any) -> int:
    t = c.facts.addr_type(p.v, p.dst)
    return 1 if t == "BROADCAST" else 2 if t == "MULTICAST" else 0


def _icmp(proto: int, which: str) -> Getter:
    if which == "type":
        return _g(f"p.itype if p.proto == {proto} else None")
    return _g(f"(p.icode or 0) if p.proto == {proto} and p.itype is not None else None")


# (first word, second word) -> (getter, value type); value types: addr4 addr6 int ifname proto
# nfproto ctstate ctstatus pkttype icmp icmpv6 tcpflags ctdir
SELECTORS: dict[tuple[str, str], tuple[Getter, str]] = {
    ("ip", "saddr"): (_addr(4, "saddr"), "addr4"),
    ("ip", "daddr"): (_addr(4, "daddr"), "addr4"),
    ("ip", "protocol"): (_g("p.proto if p.v == 4 else None"), "proto"),
    ("ip", "ttl"): (_g("p.ttl if p.v == 4 else None"), "int"),
    ("ip", "length"): (_g("p.length if p.v == 4 else None"), "int"),
    ("ip", "dscp"): (_g("p.tos >> 2 if p.v == 4 else None"), "int"),
    ("ip6", "saddr"): (_addr(6, "saddr"), "addr6"),
    ("ip6", "daddr"): (_addr(6, "daddr"), "addr6"),
    ("ip6", "nexthdr"): (_g("p.proto if p.v == 6 else None"), "proto"),
    ("ip6", "hoplimit"): (_g("p.ttl if p.v == 6 else None"), "int"),
    ("tcp", "flags"): (_g("p.tcpflags if p.proto == 6 else None"), "tcpflags"),
    ("icmp", "type"): (_icmp(1, "type"), "icmp"),
    ("icmp", "code"): (_icmp(1, "code"), "icmpcode"),
    ("icmpv6", "type"): (_icmp(58, "type"), "icmpv6"),
    ("icmpv6", "code"): (_icmp(58, "code"), "icmpcode"),
    # NFT_META_IIFNAME / OIFNAME: "" when the packet has no such device (nft_meta_store_ifname)
    ("meta", "iifname"): (_g("p.iif or ''"), "ifname"),
    ("meta", "oifname"): (_g("p.oif or ''"), "ifname"),
    ("meta", "iif"): (_g("p.iif or None"), "ifname"),
    ("meta", "oif"): (_g("p.oif or None"), "ifname"),
    ("meta", "mark"): (_g("p.mark"), "int"),
    ("meta", "l4proto"): (_g("p.proto"), "proto"),
    ("meta", "nfproto"): (_g("2 if p.v == 4 else 10"), "nfproto"),
    ("meta", "protocol"): (_g("0x0800 if p.v == 4 else 0x86DD"), "ethertype"),
    ("meta", "pkttype"): (_pkttype, "pkttype"),
    ("meta", "skuid"): (_g("p.uid"), "int"),
    ("meta", "skgid"): (_g("p.gid"), "int"),
    ("meta", "length"): (_g("p.length"), "int"),
    ("ct", "state"): (_g("{0}.get(p.ct_state(), 1)", _STATE_OF), "ctstate"),
    ("ct", "status"): (_g("(p.ctstatus | (32 if p.dnat else 0) | (16 if p.snat else 0)) if p.ct else None"),
                       "ctstatus"),
    ("ct", "mark"): (_g("p.ctmark if p.ct else None"), "int"),
    ("ct", "direction"): (_g("0 if p.ct else None"), "ctdir"),
    ("ct", "l3proto"): (_g("(2 if p.v == 4 else 10) if p.ct else None"), "nfproto"),
    ("ct", "protocol"): (_g("p.proto if p.ct else None"), "proto"),
    ("ct", "original saddr"): (_g("p.orig[0] if p.ct else None"), "addr"),
    ("ct", "original daddr"): (_g("p.orig[1] if p.ct else None"), "addr"),
    ("ct", "original proto-src"): (_g("p.orig[2] if p.ct else None"), "int"),
    ("ct", "original proto-dst"): (_g("p.orig[3] if p.ct else None"), "int"),
}
for _proto, _num in (("tcp", 6), ("udp", 17), ("udplite", 136), ("sctp", 132), ("dccp", 33)):
    SELECTORS[(_proto, "sport")] = (_ports(frozenset({_num}), "sport"), "int")
    SELECTORS[(_proto, "dport")] = (_ports(frozenset({_num}), "dport"), "int")
SELECTORS[("th", "sport")] = (_ports(PORT_PROTOS, "sport"), "int")
SELECTORS[("th", "dport")] = (_ports(PORT_PROTOS, "dport"), "int")
# meta keys nft lists without "meta"
BARE_META = frozenset({"iif", "oif", "iifname", "oifname", "mark", "skuid", "skgid", "l4proto", "nfproto",
                       "pkttype"})
# @th,OFFSET,LEN raw payload loads the simulator can read
RAW_TH = {(0, 16): SELECTORS[("th", "sport")][0], (16, 16): SELECTORS[("th", "dport")][0]}


def selector_width(typ: str) -> int:
    return {"addr4": 32, "addr6": 128, "ctstate": 32, "ctstatus": 32, "tcpflags": 8}.get(typ, 32)


def _service(text: str) -> int:
    try:
        return socket.getservbyname(text)
    except OSError:
        raise ValueError(text) from None


def parse_value(typ: str, text: str, v6: bool, origin: Origin | None) -> tuple[Any, ...]:
    """One value as listed -> ``(lo, hi)`` ints, or ``("=", name)`` / ``("*", prefix)`` for interface names."""
    t = text.strip('"')
    try:
        if typ == "ifname":
            return ("*", t[:-1]) if t.endswith("*") and not t.endswith("\\*") else ("=", t.replace("\\*", "*"))
        if typ in ("addr4", "addr6", "addr"):
            if "/" in t:
                _v, net, mask = to_net(t, origin)
                width = 32 if _v == 4 else 128
                return net, net | (~mask & ((1 << width) - 1))
            if "-" in t:  # an address range (addresses have no "-")
                lo, _, hi = t.partition("-")
                return to_int(lo, origin)[1], to_int(hi, origin)[1]
            a = to_int(t, origin)[1]
            return a, a
        if "-" in t[1:] and t[:1].isdigit() and typ in ("int", "proto", "icmp", "icmpv6", "icmpcode"):
            lo, _, hi = t.partition("-")
            return parse_value(typ, lo, v6, origin)[0], parse_value(typ, hi, v6, origin)[0]
        n = _number(typ, t)
        return n, n
    except (ValueError, KeyError):
        raise RuletraceError(f"cannot read {text!r} as a {typ} value", origin=origin) from None


_NAMES: dict[str, dict[str, int]] = {  # a value type -> the names nft accepts for its values
    "proto": PROTOCOLS,
    "nfproto": NFPROTO,
    "ctstate": CT_STATE,
    "ctstatus": CT_STATUS,
    "pkttype": PKTTYPE,
    "ctdir": CT_DIR,
    "tcpflags": TCP_FLAGS,
    "icmp": NFT_ICMP_TYPES,
    "icmpv6": NFT_ICMPV6_TYPES,
    "icmpcode": NFT_ICMP_CODES,
    "ethertype": {"ip": 0x0800, "ip6": 0x86DD, "arp": 0x0806},
}


def _number(typ: str, t: str) -> int:
    if t[:1].isdigit():
        return int(t, 0)
    names = _NAMES.get(typ)
    if names is not None:
        return names[t]
    if typ == "int":
        return _service(t)
    raise ValueError(t)


def comp_match(comp: tuple[Any, ...], v: Any) -> bool:
    """Whether a packet value is in one element component."""
    a, b = comp
    if a == "=":
        eq: bool = v == b
        return eq
    if a == "*":
        return isinstance(v, str) and v.startswith(b)
    inside: bool = a <= v <= b
    return inside


def exact(comp: tuple[Any, ...]) -> Any:
    """The single value of an exact component (hashable key), or None when it is an interval or wildcard."""
    a, b = comp
    if a == "=":
        return b
    if a == "*":
        return None
    return a if a == b else None


def split_tokens(text: str) -> list[str]:
    """Rule tokens (rulesets.nft_model) with commas and parentheses apart."""
    out: list[str] = []
    for t in rule_tokens(text):
        if t[0] in '"@' or len(t) == 1:
            out.append(t)
            continue
        cur = ""
        for ch in t:
            if ch in ",()":
                if cur:
                    out.append(cur)
                out.append(ch)
                cur = ""
            else:
                cur += ch
        if cur:
            out.append(cur)
    return out
