"""What the kernel's own drop reasons mean: the one vocabulary shared by live tracing and explain.

The kernel names why it freed a packet (``enum skb_drop_reason``, reported by the
``skb:kfree_skb`` tracepoint). The numbers change between kernel versions, so they are never
written down here: :func:`reason_names` reads the number -> name table from the tracepoint's
``print fmt`` at run time. This module only says what a name means in words and which host
fact (a sysctl, a socket, a route) to name beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
KFREE_FORMAT = "events/skb/kfree_skb/format"


@dataclass(frozen=True, slots=True)
class Reason:
    """One drop reason: its meaning in words; ``fact`` names what to check on the host."""

    meaning: str
    fact: str = ""


NETFILTER_DROP = "NETFILTER_DROP"  # the reason netfilter gives for its own DROP / REJECT / policy

# name (verbatim from the kernel) -> meaning. {proto}/{port}/{dst}/{iface} are filled in when known.
REASONS: dict[str, Reason] = {
    "NOT_SPECIFIED": Reason("the kernel freed it without naming a reason"),
    "NO_SOCKET": Reason("no socket listens on {proto}/{port}", "a listening socket (ss -lun / ss -ltn)"),
    "SOCKET_CLOSE": Reason("the socket it was for was closed"),
    "SOCKET_FILTER": Reason("a socket filter (BPF on the socket) refused it"),
    "SOCKET_RCVBUFF": Reason("the receiving socket's buffer was full", "net.core.rmem_max"),
    "PKT_TOO_SMALL": Reason("the packet is shorter than its headers say"),
    "TCP_CSUM": Reason("bad TCP checksum"),
    "UDP_CSUM": Reason("bad UDP checksum"),
    "NETFILTER_DROP": Reason("a netfilter rule or chain policy dropped it"),
    "OTHERHOST": Reason("the frame was addressed to another host's MAC address"),
    "IP_CSUM": Reason("bad IP header checksum"),
    "IP_INHDR": Reason("malformed IP header (or TTL/hop limit expired while forwarding)"),
    "IP_RPFILTER": Reason("reverse-path filter: the reply to its source would not leave through the interface it "
                          "came in on", "net.ipv4.conf.{iface}.rp_filter"),
    "XFRM_POLICY": Reason("an IPsec (xfrm) policy refused it"),
    "IP_NOPROTO": Reason("no handler for its IP protocol on this host"),
    "PROTO_MEM": Reason("the protocol's memory limit was reached"),
    "TCP_FLAGS": Reason("TCP flags not valid in this connection state"),
    "TCP_RESET": Reason("a TCP reset ended the connection"),
    "TCP_INVALID_SYN": Reason("an unexpected SYN in an established connection"),
    "TCP_CLOSE": Reason("the TCP connection is closed"),
    "TCP_OLD_DATA": Reason("TCP data already received"),
    "TCP_LISTEN_OVERFLOW": Reason("the listening socket's accept queue overflowed", "net.core.somaxconn"),
    "IP_OUTNOROUTES": Reason("no route for it on the way out", "ip route get {dst}"),
    "NEIGH_FAILED": Reason("the next hop did not answer ARP/neighbour discovery"),
    "NEIGH_QUEUEFULL": Reason("too many packets waited for the next hop's address"),
    "QDISC_DROP": Reason("the interface's queue discipline dropped it"),
    "CPU_BACKLOG": Reason("the CPU's input backlog was full", "net.core.netdev_max_backlog"),
    "UNHANDLED_PROTO": Reason("no handler for its link-layer protocol"),
    "ICMP_CSUM": Reason("bad ICMP checksum"),
    "IP_INADDRERRORS": Reason("the routing step refused it: not for this host and not forwarded (forwarding is "
                              "disabled, or the route is unreachable/prohibit)", "net.ipv4.ip_forward"),
    "IP_INNOROUTES": Reason("no route to its destination", "ip route get {dst}"),
    "IP_LOCAL_SOURCE": Reason("its source address is one of this host's own"),
    "IP_INVALID_SOURCE": Reason("its source address is not valid here (martian source)"),
    "IP_LOCALNET": Reason("a loopback (127/8) address arrived on a real interface",
                          "net.ipv4.conf.{iface}.route_localnet"),
    "IP_INVALID_DEST": Reason("its destination address is not valid"),
    "PKT_TOO_BIG": Reason("larger than the path MTU and not fragmentable"),
    "FRAG_REASM_TIMEOUT": Reason("its fragments were not all received in time"),
    "IPV6DISABLED": Reason("IPv6 is disabled on the interface", "net.ipv6.conf.{iface}.disable_ipv6"),
    "IPV6_BAD_EXTHDR": Reason("bad IPv6 extension header"),
}

_SYMBOL = re.compile(r"\{\s*(\d+)\s*,\s*\"([A-Z0-9_]+)\"\s*\}")


def reason_names(fmt_text: str) -> dict[int, str]:
    """The number -> name table of ``enum skb_drop_reason`` from a tracepoint ``format`` file."""
    for line in fmt_text.splitlines():
        if line.startswith("print fmt:"):
            return {int(n): name for n, name in _SYMBOL.findall(line)}
    return {}


def read_reason_names() -> dict[int, str]:
    """The running kernel's table ({} when tracefs is not mounted or the tracepoint is missing)."""
    for base in TRACEFS:
        try:
            with open(f"{base}/{KFREE_FORMAT}") as f:
                names = reason_names(f.read())
        except OSError:
            continue
        if names:
            return names
    return {}


def meaning(name: str, *, proto: str | None = None, port: int | str | None = None, dst: str | None = None,
            iface: str | None = None, sysctls: dict[str, str] | None = None, function: str | None = None,
            ttl: str | None = None) -> str:
    """A reason in words, with the host facts known (``sysctls``: name -> value) filled in."""
    r = REASONS.get(name)
    if r is None:
        return f"the kernel dropped it ({name})"
    ctx = {"proto": (proto or "?").lower(), "port": port if port not in (None, "") else "?", "dst": dst or "?",
           "iface": iface or "all"}
    text = r.meaning.format(**ctx)
    sysctls = sysctls or {}
    if name == "IP_INADDRERRORS":
        fwd = sysctls.get("net.ipv4.ip_forward")
        if fwd == "0" or (iface and sysctls.get(f"net.ipv4.conf.{iface}.forwarding") == "0"):
            text = "forwarding is disabled on this host (net.ipv4.ip_forward=0)"
    elif name == "IP_INHDR" and function in ("ip_forward", "ip6_forward") and (ttl is None or ttl in ("0", "1")):
        text = f"TTL {ttl or '≤1'} expired while forwarding (the kernel sends ICMP time exceeded)"
    elif name == "NOT_SPECIFIED" and function == "ip_error":
        text = ("the routing step refused it: an unreachable, prohibit or blackhole route (the kernel "
                "names no reason for these)")
    elif name == "NO_SOCKET" and (proto or "").lower() == "tcp":
        text += "; the kernel answered with a TCP RST"
    elif name == "NO_SOCKET" and (proto or "").lower() == "udp":
        text += "; the kernel answered with ICMP port unreachable"
    elif name == "IP_RPFILTER" and iface:
        vals = [f"{k}={sysctls[k]}" for k in (f"net.ipv4.conf.{iface}.rp_filter", "net.ipv4.conf.all.rp_filter")
                if k in sysctls]
        if vals:
            text += f" ({', '.join(vals)}; the higher of the two applies)"
    return text


def fact(name: str, *, dst: str | None = None, iface: str | None = None) -> str:
    """What to look at on the host for this reason ('' when nothing in particular)."""
    r = REASONS.get(name)
    return r.fact.format(dst=dst or "?", iface=iface or "all", proto="?", port="?") if r else ""


def sentence(name: str, function: str | None, **ctx: Any) -> str:
    """"forwarding is disabled on this host (net.ipv4.ip_forward=0): IP_INADDRERRORS in ip_error"."""
    return f"{meaning(name, function=function, **ctx)}: {name}" + (f" in {function}" if function else "")
