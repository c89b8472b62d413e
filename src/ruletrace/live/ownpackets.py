"""Which traced packets are this session's own, and which arrived visibly incomplete.

Several sessions in one namespace all receive every nf_tables trace event (multicast), and
every kernel-log line. A packet is this session's when its trace starts at the session's own
TRACE rule: nf_tables reports the rule that set ``nftrace`` (``-j TRACE`` of iptables-nft is
``meta nftrace set 1``, its event has verdict continue) as the first event of the trace; legacy
TRACE does not log the rule that switched tracing on, so its trace starts with the first rule
that matched after it in the same raw chain. A trace that already runs logs every later rule
that matches, so a session's own TRACE rule also shows up in a packet that another session
started tracing, and a packet whose path shows the session's counter rule but not its TRACE
rule was left out by the session's rate cap. When the start is missing (lost in an overrun),
the packet's fields are matched against the session's filter.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from ..model import Packet, Rule, Ruleset, StepKind, TraceEvent
from . import session as ss

TRACE_CHAINS = ("PREROUTING", "OUTPUT")


def _ports(text: str, proto: str) -> tuple[int, int] | None:
    lo, _, hi = text.partition(":")
    try:
        a = int(lo) if lo else 0
        b = (int(hi) if hi else 65535) if _ else a
    except ValueError:
        try:
            a = b = socket.getservbyname(text, proto)
        except OSError:
            return None
    return a, b


def spec_fits(spec: ss.TraceSpec, fields: dict[str, str], chain: str) -> bool | None:
    """Whether a packet's fields fit the session's filter: True, False, or None (cannot tell)."""
    if not fields:
        return None
    known = True
    proto = (spec.proto or "").lower()
    have = (fields.get("PROTO") or "").lower()
    if proto and proto not in ("all", "0"):
        want = {"ipv6-icmp": "icmpv6", "icmp6": "icmpv6"}.get(proto, proto)
        have = {"ipv6-icmp": "icmpv6", "icmp6": "icmpv6"}.get(have, have)
        if not have:
            known = False
        elif want.isdigit() or have.isdigit():
            known = known and want == have
        elif want == "icmp" and have == "icmpv6":
            pass  # -p icmp maps to ipv6-icmp for IPv6
        elif want != have:
            return False
    for value, key in ((spec.src, "SRC"), (spec.dst, "DST")):
        if value:
            neg = value.strip().startswith("!")
            try:
                net = ipaddress.ip_network(value.lstrip("!").strip(), strict=False)
                addr = ipaddress.ip_address(fields[key])
            except (KeyError, ValueError):
                known = False
                continue
            if (addr.version == net.version and addr in net) == neg:
                return False
    for value, key in ((spec.sport, "SPT"), (spec.dport, "DPT")):
        if value:
            neg = value.strip().startswith("!")
            rng = _ports(value.lstrip("!").strip(), proto or "tcp")
            try:
                port = int(fields[key])
            except (KeyError, ValueError):
                known = False
                continue
            if rng is None:
                known = False
            elif (rng[0] <= port <= rng[1]) == neg:
                return False
    if spec.iface:
        neg = spec.iface.strip().startswith("!")
        name = spec.iface.lstrip("!").strip()
        have_if = fields.get("IN" if chain == "PREROUTING" else "OUT")
        if not have_if:
            known = False
        else:
            hit = have_if.startswith(name[:-1]) if name.endswith("+") else have_if == name
            if hit == neg:
                return False
    if spec.raw_match:
        known = False
    return True if known else None


@dataclass
class Verdict:
    """What the session makes of one grouped packet."""

    own: bool
    incomplete: list[str] = field(default_factory=list)
    events: list[TraceEvent] = field(default_factory=list)  # the steps to explain (own rules left out)
    versions: list[int] = field(default_factory=list)


def _tag(rule: Rule | None, sid: str) -> str:
    """``trace``/``seen`` (this session's rules), ``other-trace``/``other-seen`` (another's), or ""."""
    t = ss.rule_tag(rule.text) if rule is not None else None
    if t is None:
        return ""
    return ("" if t[0] == sid else "other-") + ("seen" if t[1] else "trace")


def _trace_num(rs: Ruleset | None, sid: str, chain: str) -> int | None:
    ch = rs.chain("raw", chain) if rs is not None else None
    if ch is None:
        return None
    for r in ch.rules:
        if _tag(r, sid) == "trace":
            return r.num
    return None


def judge(pkt: Packet, versions: list[int], rulesets: Callable[[int, str | None], Ruleset | None], sid: str, spec: ss.TraceSpec, *,
          nft: bool, others: bool) -> Verdict:
    """Own or not, incomplete or not, for one packet; ``rulesets(version, family)`` -> Ruleset.

    ``others``: another ruletrace session has rules in this namespace (so that a packet whose
    start is lost and whose fields cannot be matched is not taken as ours).
    """
    tags = []
    for ev, v in zip(pkt.events, versions):
        rule = None
        if ev.kind is StepKind.RULE and ev.table == "raw" and ev.num is not None:
            rs = rulesets(v, ev.family)
            rule = rs.rule("raw", ev.chain, ev.num) if rs is not None else None
        tags.append(_tag(rule, sid))
    first = pkt.events[0] if pkt.events else None
    out = Verdict(False)
    for ev, v, t in zip(pkt.events, versions, tags):
        if t in ("trace", "seen") or (nft and t == "other-trace" and ev.verdict == "continue"):
            continue  # the session's own rules, and (nf_tables) the rule that set nftrace
        out.events.append(ev)
        out.versions.append(v)
    if first is None:
        return out
    chain = first.chain if first.chain in TRACE_CHAINS else ("OUTPUT" if first.fields.get("OUT") and
                                                             not first.fields.get("IN") else "PREROUTING")
    started_here = first.table == "raw" and first.chain in TRACE_CHAINS
    if nft:
        started_here = started_here and tags[0] in ("trace", "other-trace")
    own_num = None if nft else _trace_num(rulesets(versions[0], first.family), sid, first.chain)
    if "trace" in tags:
        out.own = True
    elif "seen" in tags or (nft and tags[0] == "other-trace"):
        out.own = False  # our rate cap left it out, or another session's TRACE rule started it
    else:
        fit = spec_fits(spec, first.fields, chain)
        if fit is False:
            out.own = False
        elif not nft and started_here and own_num is not None:
            # legacy: a trace that starts after our TRACE rule, with no other TRACE rule between
            rs = rulesets(versions[0], first.family)
            ch = rs.chain("raw", first.chain) if rs is not None else None
            num = first.num if first.kind is StepKind.RULE and first.num else (len(ch.rules) + 1 if ch else 0)
            between = [r for r in (ch.rules if ch else []) if own_num < r.num < num
                       and _tag(r, sid) == "other-trace"]
            out.own = num > own_num and (fit is True or not between)
        else:
            out.own = fit is True or (fit is None and not others)
    if out.own and not started_here:
        out.incomplete.append("its first steps are missing (the trace does not start with "
                              + ("the event of the rule that set nftrace)" if nft else f"raw {chain})"))
    return out
