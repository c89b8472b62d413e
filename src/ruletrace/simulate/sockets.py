"""The host's listening sockets (``ss -lntu``), and whether one takes a delivered packet.

A TCP segment or UDP datagram that the rules let through to the host still needs a socket: with none
bound to its destination port the kernel frees it (drop reason NO_SOCKET, in tcp_v4_rcv /
__udp4_lib_rcv and their IPv6 twins) and answers a TCP segment with a reset and a UDP datagram with
ICMP port unreachable. A socket takes the packet when its protocol and port are the packet's, its
address is the packet's destination or the wildcard of the packet's family, and it is not bound to
another device. ``ss`` writes an IPv6 wildcard socket that takes IPv4 too as ``*``, one with
IPV6_V6ONLY as ``[::]``.

Only what ``ss -lntu`` lists is known: sockets found by other means (TPROXY, a BPF sk_lookup
program, IPVS) are not, and that is said with the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import RuletraceError
from ..model import Fate, Origin
from .hostfacts import addr_text, parse_addr
from .routestep import kernel_drop

PROTOS = {"tcp": 6, "udp": 17}
STATES = {"LISTEN", "UNCONN"}  # ss -l: TCP listeners, unconnected UDP sockets
ANY = "*"  # an IPv6 wildcard that takes IPv4 too (ss's writing)


@dataclass(frozen=True, slots=True)
class Listener:
    proto: int  # 6 / 17
    v: int | None  # 4 / 6; None: both (ss "*")
    addr: int | None  # None: the wildcard of its family
    port: int
    dev: str | None = None  # bound to this device (ss "ADDR%DEV")
    text: str = ""  # as ss wrote it

    def takes(self, proto: int, v: int, dst: int, port: int, iif: str | None) -> bool:
        if proto != self.proto or port != self.port:
            return False
        if self.dev is not None and iif is not None and self.dev != iif:
            return False
        if self.v is None:
            return self.addr is None
        if self.addr is None:
            return self.v == v
        if self.v == v:
            return self.addr == dst
        # an IPv4-mapped IPv6 address (::ffff:a.b.c.d) takes the IPv4 packet to a.b.c.d
        return v == 4 and self.v == 6 and self.addr == (0xFFFF << 32 | dst)


@dataclass(slots=True)
class Sockets:
    listeners: list[Listener]
    where: str  # where they were read: "ss -lntu in netns X" / a file name

    def find(self, proto: int, v: int, dst: int, port: int, iif: str | None) -> Listener | None:
        for s in self.listeners:
            if s.takes(proto, v, dst, port, iif):
                return s
        return None


def _local(text: str, origin: Origin) -> tuple[int | None, int | None, int, str | None]:
    """``ADDR[%DEV]:PORT`` -> (version, address, port, device); version None: ``*``."""
    host, sep, port_s = text.rpartition(":")
    if not sep or not port_s.isdigit() or int(port_s) > 65535:
        raise RuletraceError(f"bad local address:port {text!r} (expected ss -lntu output)", origin=origin)
    dev = None
    if "%" in host:
        host, _, dev = host.partition("%")
    host = host.strip("[]")
    if host == ANY:
        return None, None, int(port_s), dev
    if host in ("0.0.0.0", "::"):
        return (4 if host == "0.0.0.0" else 6), None, int(port_s), dev
    a = parse_addr(host)
    if a is None:
        raise RuletraceError(f"bad address {host!r} in {text!r}", origin=origin)
    return a[0], a[1], int(port_s), dev


def parse_ss(text: str, origin: Origin) -> list[Listener]:
    """The listening sockets of ``ss -lntu`` output (with or without its header, -H)."""
    out: list[Listener] = []
    for n, line in enumerate(text.splitlines(), 1):
        toks = line.split()
        if not toks or toks[0] == "Netid":
            continue
        where = Origin(origin.path, n)
        if toks[0] not in PROTOS or len(toks) < 5:
            if toks[0] == "State":
                raise RuletraceError("`ss` output without the Netid column: give `ss -lntu` (tcp and udp)",
                                     origin=where)
            raise RuletraceError(f"not a line of `ss -lntu` output: {line.strip()[:80]!r}", origin=where)
        if toks[1] not in STATES:
            continue  # a connected socket (ss without -l): takes only its peer's packets
        v, addr, port, dev = _local(toks[4], where)
        out.append(Listener(PROTOS[toks[0]], v, addr, port, dev, toks[4]))
    return out


def load_sockets(text: str, where: str, origin: Origin) -> Sockets:
    return Sockets(parse_ss(text, origin), where)


def no_socket_words(proto: int, port: int) -> str:
    """The headline's words for a packet no socket takes (the brief's vocabulary)."""
    if proto == 6:
        return f"delivered to the stack, answered with a TCP reset (no socket listens on tcp/{port})"
    return f"delivered to the stack, answered with ICMP port unreachable (no socket listens on udp/{port})"


def unchecked_words(proto: int, port: int) -> str:
    name = "tcp" if proto == 6 else "udp"
    return f"whether a socket listens on {name}/{port} was not checked (give --sockets `ss -lntu` output, or --netns)"


def found_words(s: Listener, v: int, dst: int) -> str:
    name = "tcp" if s.proto == 6 else "udp"
    what = "listens" if s.proto == 6 else "is bound"
    return f"a {name} socket {what} on {s.text} (it takes {addr_text(v, dst)}:{s.port})"


RCV_FN = {(6, 4): "tcp_v4_rcv", (6, 6): "tcp_v6_rcv", (17, 4): "__udp4_lib_rcv", (17, 6): "__udp6_lib_rcv"}


def socket_check(R: Any, p: Any, c: Any) -> Fate:
    """INPUT let the packet through (``R``: the engine's run): a socket must take it. Records on ``R``
    what was found (``R.socket``, in words) and, when no socket takes it, the kernel's NO_SOCKET drop
    (``R.kdrop``); the fate stays DELIVERED: the packet reached the stack, which answers it."""
    proto = p.proto
    if proto not in (6, 17) or p.dport is None or p.ctstate in ("ESTABLISHED", "RELATED"):
        return Fate.DELIVERED  # a packet of a connection: its socket is assumed to be there
    if proto == 6 and p.tcpflags is not None and p.tcpflags & 0x04:
        return Fate.DELIVERED  # a RST is never answered
    socks = R.facts.sockets
    if socks is None:
        R.socket = unchecked_words(proto, p.dport)
        c.note(R.socket)
        return Fate.DELIVERED
    hit = socks.find(proto, p.v, p.dst, p.dport, p.iif)
    if hit is not None:
        R.socket = found_words(hit, p.v, p.dst)
        return Fate.DELIVERED
    R.socket = no_socket_words(proto, p.dport)
    kernel_drop(R, "NO_SOCKET", RCV_FN[(proto, p.v)])
    return Fate.DELIVERED
