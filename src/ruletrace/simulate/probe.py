"""The probe: the packet a simulation sends, in the words iptables users know."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ..errors import RuletraceError
from ..model import Origin
from .hostfacts import parse_addr

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
# kernel log PROTO= names (nf_log_syslog.c dump_ipv4_packet / dump_ipv6_packet)
LOG_PROTO: dict[int, str] = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6", 136: "UDPLITE", 132: "SCTP"}
PORT_PROTOS = frozenset({6, 17, 132, 136, 33})

CTSTATES = ("NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED")
PATHS = ("input", "forward", "output")
PROBE_ORIGIN = Origin("probe")

# ICMP type names as iptables -p icmp --help lists them: name -> (type, code or None)
ICMP_TYPES: dict[str, tuple[int, int | None]] = {
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
ICMPV6_TYPES: dict[str, tuple[int, int | None]] = {
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
# TCP header flag bits (include/net/tcp.h TCPHDR_*), names as --tcp-flags and the log write them
TCP_FLAGS: dict[str, int] = {
    "FIN": 0x01,
    "SYN": 0x02,
    "RST": 0x04,
    "PSH": 0x08,
    "ACK": 0x10,
    "URG": 0x20,
    "ECE": 0x40,
    "CWR": 0x80,
}
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


def parse_icmp_type(text: str, v6: bool, origin: Origin | None = None) -> tuple[int, int | None]:
    """``TYPE[/CODE]`` (number or name) -> (type, code or None for any code)."""
    names = ICMPV6_TYPES if v6 else ICMP_TYPES
    t = text.strip()
    if t in names:
        return names[t]
    low = {k.lower(): v for k, v in names.items()}
    if t.lower() in low:
        return low[t.lower()]
    typ, _, code = t.partition("/")
    try:
        n = int(typ)
        c = int(code) if code else None
    except ValueError:
        raise RuletraceError(f"unknown {'icmpv6' if v6 else 'icmp'} type {text!r}", origin=origin) from None
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


def _flags_text(bits: int) -> str:
    # nf_log_syslog.c prints CWR ECE URG ACK PSH RST SYN FIN
    return " ".join(n for n in ("CWR", "ECE", "URG", "ACK", "PSH", "RST", "SYN", "FIN") if bits & TCP_FLAGS[n])


_FLAGS_TEXT = tuple(_flags_text(b) for b in range(TCP_ALL + 1))


def flags_text(bits: int) -> str:
    """Flag bits in the kernel log's order (``SYN ACK``)."""
    return _FLAGS_TEXT[bits] if 0 <= bits <= TCP_ALL else _flags_text(bits)


@dataclass(slots=True)
class Probe:
    """One packet to simulate; None means "not given" (the engine defaults it and says so)."""

    proto: int
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    iif: str | None = None  # -i
    oif: str | None = None  # -o
    path: str | None = None  # input / forward / output
    ctstate: str = "NEW"
    mark: int = 0
    ctmark: int = 0
    tcp_flags: int | None = None  # default: SYN for NEW, ACK otherwise
    length: int | None = None
    ttl: int | None = None
    tos: int = 0
    uid: int | None = None
    gid: int | None = None
    physin: str | None = None
    physout: str | None = None
    mac_src: str | None = None

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.src or ":" in self.dst else "ipv4"

    def check(self) -> None:
        """Raise RuletraceError for a probe that cannot be a packet."""
        self.addrs()

    def addrs(self) -> tuple[int, int, int]:
        """(IP version, source, destination as ints), after the checks of check()."""
        o = PROBE_ORIGIN
        a = parse_addr(self.src)  # to_int without its frame (this runs once per simulated packet)
        if a is None:
            raise RuletraceError(f"bad address {self.src!r}", origin=o)
        b = parse_addr(self.dst)
        if b is None:
            raise RuletraceError(f"bad address {self.dst!r}", origin=o)
        v, src = a
        w, dst = b
        if v != w:
            raise RuletraceError(f"source {self.src} and destination {self.dst} are different families", origin=o)
        if self.ctstate not in CTSTATES:
            raise RuletraceError(f"unknown ctstate {self.ctstate!r} ({', '.join(CTSTATES)})", origin=o)
        if self.path is not None and self.path not in PATHS:
            raise RuletraceError(f"unknown path {self.path!r} ({', '.join(PATHS)})", origin=o)
        sport, dport = self.sport, self.dport
        if sport is not None or dport is not None:
            if sport is not None and not 0 <= sport <= 65535:
                raise RuletraceError(f"sport {sport} out of range 0-65535", origin=o)
            if dport is not None and not 0 <= dport <= 65535:
                raise RuletraceError(f"dport {dport} out of range 0-65535", origin=o)
            if self.proto not in PORT_PROTOS:
                raise RuletraceError(f"protocol {self.proto} has no ports", origin=o)
        return v, src, dst


def probe_from_fields(fields: dict[str, str]) -> Probe:
    """A probe for the packet a trace event shows (kernel-log field names)."""
    name = fields.get("PROTO", "")
    low = name.lower()
    proto = parse_proto(low if low in PROTOCOLS or low.isdigit() else "all")

    def num(key: str) -> int | None:
        v = fields.get(key)
        try:
            return int(v, 0) if v not in (None, "") else None
        except ValueError:
            return None

    flags = None
    if proto == 6:
        tf = fields.get("TCPFLAGS")
        if tf is not None:
            flags = parse_tcp_flags(tf.replace(" ", ","))
    return Probe(
        proto=proto,
        src=fields.get("SRC", ""),
        dst=fields.get("DST", ""),
        sport=num("SPT"),
        dport=num("DPT"),
        icmp_type=num("TYPE"),
        icmp_code=num("CODE"),
        iif=fields.get("IN") or None,
        oif=fields.get("OUT") or None,
        mark=num("MARK") or 0,
        tcp_flags=flags,
        length=num("LEN"),
        ttl=num("TTL") if "TTL" in fields else num("HOPLIMIT"),
        physin=fields.get("PHYSIN") or None,
        physout=fields.get("PHYSOUT") or None,
        uid=num("UID"),
        gid=num("GID"),
    )
