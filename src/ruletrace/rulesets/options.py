"""Rule options as iptables reads them: one parser for the simulator and the packet diff.

A rule's spec (``rulesets.iptables_save.tokenize`` splits it into arguments as iptables-restore
does) is grouped into its IP options (``-s -d -i -o -p -f``), its match modules with their
options (``-m tcp --dport 80``; ``-p tcp --dport 80`` loads the protocol's module, as iptables
does) and its target with its options. The value grammars of the options (protocols, ports and
port ranges, VALUE/MASK, TCP flags, ICMP types) live here too; what an option means for a packet
is the reader's business (simulate/matches.py evaluates it, render/diff.py checks log fields).
"""

from __future__ import annotations

import socket

from ..errors import RuletraceError
from ..fields import TCP_FLAG_BITS, XT_ICMP_TYPES, XT_ICMPV6_TYPES
from ..model import Origin
from .iptables_save import tokenize

# IANA protocol numbers (netinet/in.h IPPROTO_*); names as iptables accepts them
PROTOCOLS: dict[str, int] = {
    "all": 0,
    "icmp": 1,  # IPPROTO_ICMP
    "igmp": 2,
    "ipip": 4,
    "tcp": 6,  # IPPROTO_TCP
    "egp": 8,
    "udp": 17,  # IPPROTO_UDP
    "dccp": 33,
    "ipv6": 41,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "icmpv6": 58,  # IPPROTO_ICMPV6
    "ipv6-icmp": 58,
    "mh": 135,
    "sctp": 132,  # IPPROTO_SCTP
    "udplite": 136,
}

# options of known modules that take no argument (everything else takes one, except TWO_ARGS)
NO_ARG = frozenset({
    "--syn", "--physdev-is-in", "--physdev-is-out", "--physdev-is-bridged", "--socket-exists",
    "--return-nomatch", "--update-counters", "--update-subcounters", "--suppl-groups",
    "--connlimit-saddr", "--connlimit-daddr", "--rsource", "--rdest", "--set", "--rcheck", "--update",
    "--remove", "--rttl", "--reap", "--ctdir-original", "--no-counters", "--limit-iface-in",
    "--limit-iface-out",
})
TWO_ARGS = frozenset({"--tcp-flags", "--match-set", "--set-mark-xor"})
IP_OPTS = {
    "-s": "s", "--source": "s", "--src": "s",
    "-d": "d", "--destination": "d", "--dst": "d",
    "-i": "i", "--in-interface": "i",
    "-o": "o", "--out-interface": "o",
    "-p": "p", "--protocol": "p",
    "-f": "f", "--fragment": "f",
}
# modules whose options' arities NO_ARG / TWO_ARGS describe (the simulator evaluates these); the
# options of any other module take the words up to the next option
KNOWN_MODULES = frozenset({
    "tcp", "udp", "sctp", "udplite", "multiport", "icmp", "icmp6", "icmpv6", "conntrack", "state", "mark",
    "connmark", "addrtype", "comment", "physdev", "set", "statistic", "limit", "hashlimit", "connlimit",
    "owner", "iprange", "length", "ttl", "hl", "pkttype", "mac", "dscp", "tos",
})
PROTO_MODULES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6", 132: "sctp"}  # -p without -m

# ICMP type names of the iptables syntax (one table: fields.py)
ICMP_TYPES = XT_ICMP_TYPES
ICMPV6_TYPES = XT_ICMPV6_TYPES
# TCP header flag bits, names as --tcp-flags and the log write them (one table: fields.py)
TCP_FLAGS = TCP_FLAG_BITS
TCP_ALL = 0xFF


def parse_proto(text: str, origin: Origin | None = None) -> int:
    """Protocol name or number -> number (``-p``)."""
    t = text.strip().lower()
    if t.isdigit():
        n = int(t)
        if n > 255:
            raise RuletraceError(f"protocol number {n} out of range 0-255", origin=origin)
        return n
    if t in PROTOCOLS:
        return PROTOCOLS[t]
    try:
        return socket.getprotobyname(t)
    except OSError:
        raise RuletraceError(f"unknown protocol {text!r}", origin=origin) from None


def int_pair(text: str, sep: str, error: str, origin: Origin | None) -> tuple[int, int | None]:
    """``A`` or ``A<sep>B`` as whole numbers (B None when absent); else the error ``error``."""
    a, _, b = text.partition(sep)
    try:
        return int(a), (int(b) if b else None)
    except ValueError:
        raise RuletraceError(error, origin=origin) from None


def parse_icmp_type(text: str, v6: bool, origin: Origin | None = None) -> tuple[int, int | None]:
    """``TYPE[/CODE]`` (number or name) -> (type, code or None for any code)."""
    names = ICMPV6_TYPES if v6 else ICMP_TYPES
    t = text.strip()
    if t in names:
        return names[t]
    low = {k.lower(): v for k, v in names.items()}
    if t.lower() in low:
        return low[t.lower()]
    n, c = int_pair(t, "/", f"unknown {'icmpv6' if v6 else 'icmp'} type {text!r}", origin)
    if not 0 <= n <= 255 or (c is not None and not 0 <= c <= 255):
        raise RuletraceError(f"icmp type/code out of range: {text!r}", origin=origin)
    return n, c


def parse_tcp_flags(text: str, origin: Origin | None = None) -> int:
    """``SYN,ACK`` (or ``ALL``/``NONE``) -> flag bits."""
    bits = 0
    for name in text.replace(" ", ",").split(","):
        name = name.strip().upper()
        if not name or name == "NONE":
            continue
        if name == "ALL":
            bits |= TCP_ALL
        elif name in TCP_FLAGS:
            bits |= TCP_FLAGS[name]
        else:
            raise RuletraceError(f"unknown TCP flag {name!r}", origin=origin)
    return bits


def port(text: str, origin: Origin | None = None) -> int:
    """A port number or service name."""
    if text.isdigit():
        n = int(text)
        if n > 65535:
            raise RuletraceError(f"port {n} out of range", origin=origin)
        return n
    try:
        return socket.getservbyname(text)
    except OSError:
        raise RuletraceError(f"unknown port {text!r}", origin=origin) from None


def port_range(text: str, origin: Origin | None = None) -> tuple[int, int]:
    """``80``, ``80:90``, ``:90``, ``80:`` (xtables parse_port_range) -> (low, high)."""
    if ":" in text:
        lo, _, hi = text.partition(":")
        return (port(lo, origin) if lo else 0), (port(hi, origin) if hi else 65535)
    n = port(text, origin)
    return n, n


def number(text: str, origin: Origin | None = None) -> int:
    """An integer in C syntax (``0x10``, ``8``)."""
    try:
        return int(text, 0)
    except ValueError:
        raise RuletraceError(f"bad number {text!r}", origin=origin) from None


def value_mask(text: str, origin: Origin | None = None) -> tuple[int, int]:
    """``VALUE[/MASK]`` (``--mark``): the mask defaults to all 32 bits."""
    v, _, m = text.partition("/")
    return number(v, origin), (number(m, origin) if m else 0xFFFFFFFF)


def parse_spec(spec: str, origin: Origin | None = None) -> Parsed:
    """A rule's spec (without ``-A CHAIN``) tokenized as iptables-restore does, then grouped."""
    try:
        tokens = tokenize(spec)
    except RuletraceError as e:
        raise RuletraceError(e.message, origin=origin) from None
    return split_rule(tokens, origin)


class Parsed:
    """A rule split into its IP options, its match modules and its target."""

    __slots__ = ("ip", "modules", "target", "target_opts", "goto", "tokens")

    def __init__(self) -> None:
        self.ip: list[tuple[bool, str, str]] = []  # (negated, letter, value)
        self.modules: list[tuple[str, list[tuple[bool, str, list[str]]]]] = []
        self.target: str | None = None
        self.target_opts: list[tuple[bool, str, list[str]]] = []
        self.goto = False
        self.tokens: list[str] = []


def split_rule(tokens: list[str], origin: Origin | None) -> Parsed:
    """Group a rule's tokens into IP options, ``-m`` modules with their options, and the target."""
    out = Parsed()
    out.tokens = tokens
    i, n = 0, len(tokens)
    neg = False
    opts: list[tuple[bool, str, list[str]]] | None = None  # options of the current module / target
    known = True
    while i < n:
        t = tokens[i]
        i += 1
        if t == "!":
            neg = True
            continue
        if t in IP_OPTS:
            letter = IP_OPTS[t]
            if letter == "f":
                out.ip.append((neg, "f", ""))
            else:
                if i >= n:
                    raise RuletraceError(f"option {t} needs a value", origin=origin)
                v = tokens[i]
                i += 1
                if v == "!":  # old syntax "-s ! ADDR"
                    neg, v = True, tokens[i] if i < n else ""
                    i += 1
                out.ip.append((neg, letter, v))
            neg = False
            opts = None if out.target is None else opts
            continue
        if t in ("-m", "--match"):
            if i >= n:
                raise RuletraceError("-m needs a module name", origin=origin)
            name = tokens[i]
            i += 1
            opts = []
            out.modules.append((name, opts))
            known = name in KNOWN_MODULES
            neg = False
            continue
        if t in ("-j", "--jump", "-g", "--goto"):
            if i >= n:
                raise RuletraceError(f"{t} needs a target", origin=origin)
            out.target = tokens[i]
            out.goto = t in ("-g", "--goto")
            i += 1
            opts = out.target_opts
            known = False
            neg = False
            continue
        if t in ("-c", "--set-counters"):
            i += 2
            continue
        if t.startswith("-") and len(t) > 1:
            if opts is None:
                # "-p tcp --dport 80" without "-m tcp": iptables loads the protocol's match
                proto = next((v for _, letter, v in reversed(out.ip) if letter == "p"), None)
                name = PROTO_MODULES.get(proto_or_none(proto), proto or "")  # type: ignore[arg-type]  # a None key just misses
                opts = []
                out.modules.append((name or "?", opts))
                known = name in KNOWN_MODULES
            args: list[str] = []
            if known and t in NO_ARG:
                pass
            elif known:
                k = 2 if t in TWO_ARGS else 1
                args = tokens[i : i + k]
                i += len(args)
            else:
                while i < n and not (tokens[i] == "!" or (tokens[i].startswith("-") and len(tokens[i]) > 1
                                                          and not tokens[i][1:2].isdigit())):
                    args.append(tokens[i])
                    i += 1
            opts.append((neg, t, args))
            neg = False
            continue
        raise RuletraceError(f"unexpected word {t!r} in rule", origin=origin)
    return out


def proto_or_none(text: str | None) -> int | None:
    """parse_proto, None for a missing or unknown protocol."""
    if text is None:
        return None
    try:
        return parse_proto(text)
    except RuletraceError:
        return None


def xmark(d: dict[str, str], origin: Origin | None) -> tuple[int, int] | None:
    """MARK/CONNMARK value-changing options as xt_mark_tginfo2 (mark, mask): new = (old & ~mask) ^ mark
    (the simulator's MARK, and explain's guess of a MARK rule whose trace line is lost)."""
    if "--set-xmark" in d:
        return value_mask(d["--set-xmark"], origin)
    if "--set-mark" in d:
        v, m = value_mask(d["--set-mark"], origin)
        return v, m | v  # libxt_MARK: --set-mark v/m is --set-xmark v/(m|v)
    if "--and-mark" in d:
        return 0, ~number(d["--and-mark"], origin) & 0xFFFFFFFF
    if "--or-mark" in d:
        v = number(d["--or-mark"], origin)
        return v, v
    if "--xor-mark" in d:
        return number(d["--xor-mark"], origin), 0
    return None
