"""The routing step of a simulated packet: the policy-routing lookup from the dumps given
(``routes.resolve``: ip rules, then their tables), and the drops the kernel makes there, outside
the rules (a failed lookup, forwarding off, reverse-path filtering, TTL), named as the kernel
names them (``kernel_facts``; the reason for each case measured in the lab, lab/scenarios_fate.py).
``R`` is the engine's run (engine._Run): its probe, facts and the record of lookups and drops.
"""

from __future__ import annotations

from typing import Any

from .. import kernel_facts as kf
from .. import routes as rt
from ..model import Fate, KernelDrop, RouteDecision
from .hostfacts import addr_text
from .state import Ctx, Pkt

PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp"}



DEFAULT_RULE = {"local": "0: from all lookup local", "main": "32766: from all lookup main",
                "default": "32767: from all lookup default"}  # the kernel's rules when none were given


def lookup(R: Any, p: Pkt, point: str) -> RouteDecision | None:
    """The policy-routing lookup (routes.resolve: ip rules, then their tables) from the dumps given.

    Without ``ip rule``s only the kernel's default rules apply (local, main, default): the cached
    longest-prefix lookup of HostFacts.route answers that (the batch walks' fast path; the same
    tables in the same order). Its words (``text``) are written by the caller that shows them."""
    f = R.facts
    if f.raw_routes is None:
        return None
    if f.rules is None:
        # _default_rules' remembered decision read here first (no frame when it is there)
        d = f.route_decisions.get((point, p.v, p.dst, p.mark)) or _default_rules(f, p, point)
    else:
        d = rt.resolve(point, f.rules, f.raw_routes, dst=addr_text(p.v, p.dst), src=addr_text(p.v, p.src),
                       mark=p.mark or None, iif=p.iif if point == "input" else None)
    R.lookups.append(d)
    return d


def _default_rules(f: Any, p: Pkt, point: str) -> RouteDecision:
    """The decision for (point, destination, mark), remembered in the facts: a batch of probes asks
    the same few (the answer is a function of the facts alone). Shared: callers that word a
    decision copy it first (cli/simulate.with_fate)."""
    key = (point, p.v, p.dst, p.mark)
    d: RouteDecision | None = f.route_decisions.get(key)
    if d is None:
        d = _decide(f, p, point)
        if len(f.route_decisions) < 1 << 16:
            f.route_decisions[key] = d
    return d


def _decide(f: Any, p: Pkt, point: str) -> RouteDecision:
    r = f.route(p.v, p.dst)
    d = RouteDecision(point, mark=hex(p.mark) if p.mark else None, dst=addr_text(p.v, p.dst))
    if r is None or r.type == "throw":
        d.type, d.error = "unreachable", rt.ERRORS[None]
        return d
    d.table, d.rule, d.type, d.dev, d.gateway = r.table, DEFAULT_RULE.get(r.table), r.type, \
        rt.route_dev(r.type, r.dev), r.gateway
    if r.type in rt.REFUSING:
        d.error = rt.ERRORS[r.type]
    return d


def kernel_drop(R: Any, reason: str, function: str | None, why: str = "", **ctx: Any) -> Fate:
    """A drop the kernel makes outside the rules, named as the kernel names it (kernel_facts)."""
    p = R.p
    sy = R.facts.sysctls if R.facts.ip_forward else {"net.ipv4.ip_forward": "0", **R.facts.sysctls}
    if p.iif and sy.get(f"net.ipv4.conf.{p.iif}.forwarding") == "0":
        sy = {**sy, "net.ipv4.ip_forward": "0"}  # the input interface does not forward: said the same way
    text = kf.sentence(reason, function, proto=PROTO_NAMES.get(p.proto, str(p.proto)), port=p.dport,
                       dst=addr_text(p.v, p.dst), iface=p.iif, sysctls=sy, **ctx)
    if why:  # the specific finding says more than the reason's general meaning
        text = f"{kf.REASONS[reason].meaning.split(':')[0] if reason in kf.REASONS else reason}, {why}: {reason}"
    R.kdrop = KernelDrop(reason, function, text)
    return Fate.DROPPED


def route_input(R: Any, p: Pkt, c: Ctx) -> Fate | None:
    """The routing step after PREROUTING (ip_route_input_slow): a failed lookup, forwarding off
    on the input interface, and reverse-path filtering drop the packet here."""
    f, sy = R.facts, R.facts.sysctls
    local = R.in_local = c.is_local(p, p.v, p.dst)
    d = R.in_route = lookup(R, p, "input")
    fwd = rt.forwarding(sy, p.iif, v6=p.v == 6) if sy else None
    if fwd is None:
        fwd = "1" if f.ip_forward or (p.v == 6 and sy) else "0"  # --sysctl without the IPv6 key: not known off
    if not local and d is not None and d.error:
        return kernel_drop(R, rt.drop_reason(d, fwd) or "NOT_SPECIFIED", "ip_error")
    if not local and fwd == "0":
        return kernel_drop(R, "IP_INADDRERRORS", "ip6_forward" if p.v == 6 else "ip_error")
    if sy and f.raw_routes is not None and p.v == 4 and p.iif:
        why = rt.rp_check(f.rules, f.raw_routes, sy, src=addr_text(p.v, p.src), dst=addr_text(p.v, p.dst),
                          iif=p.iif, mark=p.mark or None)
        if why:
            return kernel_drop(R, "IP_RPFILTER", None, why)
    return None
