"""The probe: the packet a simulation sends, in the words iptables users know."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RuletraceError
from ..fields import PROTO_NAMES, tcp_flags_text
from ..model import Origin
from ..rulesets.options import PROTOCOLS, parse_proto, parse_tcp_flags
from .hostfacts import parse_addr

# kernel log PROTO= names (fields.PROTO_NAMES: SCTP is PROTO=132 there, as nf_log prints it)
LOG_PROTO = PROTO_NAMES
PORT_PROTOS = frozenset({6, 17, 132, 136, 33})

CTSTATES = ("NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED")
PATHS = ("input", "forward", "output")
PROBE_ORIGIN = Origin("probe")


flags_text = tcp_flags_text  # flag bits in the kernel log's order (fields.py)


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
