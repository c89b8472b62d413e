"""Why a packet that every rule let through did not arrive: routing and sysctls, ranked.

Given the host's routing facts (``ip -j rule``, ``ip -j route show table all``, a ``sysctl -a``
dump, its addresses: ``routes.RouteFacts``), a packet's routing points are resolved as the kernel's
fib lookup would (``routes.resolve``): after PREROUTING for a packet that came in (with the mark
and destination it has after PREROUTING: mangle marks and DNAT count), after OUTPUT for one sent
from here, and again after OUTPUT when nat/mangle OUTPUT changed the destination or the mark. A
packet last seen in PREROUTING gets the likely causes of its end, ranked: those the facts prove
first, those the facts cannot rule out after them, the cut log last. Live tracing uses the same
ranking with the facts read from the traced namespace (and the kernel's own drop reason when known).
"""

from __future__ import annotations

import re

from .. import routes as rt
from ..model import Change, Explanation, RouteDecision
from .ctinvalid import invalid_note
from .fate import ROUTING_NOTE

CAUSE_PREFIX = "likely cause"


def _mark(v: str | None) -> int | None:
    if not v:
        return None
    try:
        return int(v, 0)
    except ValueError:
        return None


def mark_setter(expl: Explanation, before: int | None, mark: int | None) -> str | None:
    """Where the packet's mark ``mark`` was set (the last change to it before step ``before``)."""
    if not mark:
        return None
    for c in reversed(expl.marks):
        if (before is None or c.step is None or c.step < before) and _mark(c.new) == mark:
            return _changer(c)
    return None


def _changer(c: Change) -> str:
    if c.table is not None and c.num is not None:
        return f"{c.table}:{c.chain} rule {c.num}"
    return (c.note or "outside the traced rules").split(";")[0]


def routing_points(expl: Explanation) -> list[tuple[str, dict[str, str], int | None]]:
    """(point, the packet's fields there, index of the step after it) for each routing point.

    input: after PREROUTING (the first step of the next hook, else the last step seen);
    output: before OUTPUT (the first step), reroute: after OUTPUT when DST or MARK changed there.
    """
    evs = expl.packet.events
    if not evs:
        return []
    hooks: list[str | None] = []
    cur = None
    for i, ev in enumerate(evs):
        h = expl.steps[i].hook if i < len(expl.steps) and expl.steps[i].hook else None
        cur = h or cur or (ev.chain if ev.chain in ("PREROUTING", "OUTPUT") else None)
        hooks.append(cur)
    first = hooks[0] or ("PREROUTING" if evs[0].fields.get("IN") else "OUTPUT")
    if first == "OUTPUT" or (first != "PREROUTING" and not evs[0].fields.get("IN")):
        out: list[tuple[str, dict[str, str], int | None]] = [("output", evs[0].fields, 0)]
        after = next((i for i, h in enumerate(hooks) if h not in (None, "OUTPUT")), None)
        f = evs[after].fields if after is not None else evs[-1].fields
        f0 = evs[0].fields
        if f.get("DST") != f0.get("DST") or (_mark(f.get("MARK")) or 0) != (_mark(f0.get("MARK")) or 0):
            out.append(("reroute", f, after))
        return out
    after = next((i for i, h in enumerate(hooks) if h not in (None, "PREROUTING")), None)
    if after is not None:
        return [("input", evs[after].fields, after)]
    return [("input", _after_last_rule(expl), None)]


_TO_DEST = re.compile(r"--to-destination (\d+\.\d+\.\d+\.\d+)|\bdnat (?:ip )?to (\d+\.\d+\.\d+\.\d+)")


def _after_last_rule(expl: Explanation) -> dict[str, str]:
    """The packet after the last traced step: a TRACE line shows it before its rule's target ran, so
    a DNAT to one address by that very rule is applied here (the kernel routes the new destination)."""
    f = expl.packet.events[-1].fields
    last = expl.steps[-1] if expl.steps else None
    if last is not None and last.action == "dnat" and last.rule is not None:
        m = _TO_DEST.search(last.rule.text)
        if m:
            return {**f, "DST": m.group(1) or m.group(2)}
    return f


def decisions(expl: Explanation, facts: rt.RouteFacts) -> list[RouteDecision]:
    """The routing decisions of a packet, from the given dumps (offline)."""
    if facts.routes is None:
        return []
    out = []
    for point, f, after in routing_points(expl):
        dst = f.get("DST")
        if not dst:
            continue
        mark = _mark(f.get("MARK"))
        iif = f.get("IN") or None if point == "input" else None
        d = rt.resolve(point, facts.rules, facts.routes, dst=dst, src=f.get("SRC"), mark=mark, iif=iif)
        d.mark_set = mark_setter(expl, after, mark)
        d.sysctls = _sysctls_of(facts.sysctls, [iif, d.dev])
        d.text = rt.describe(d, dst)
        out.append(d)
    return out


def _sysctls_of(sysctls: dict[str, str], ifaces: list[str | None]) -> dict[str, str]:
    names = ["net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.all.forwarding"]
    for i in dict.fromkeys(x for x in ifaces if x):
        names += [f"net.ipv4.conf.{i}.rp_filter", f"net.ipv4.conf.{i}.forwarding"]
    return {n: sysctls[n] for n in names if n in sysctls}


def likely_causes(expl: Explanation, facts: rt.RouteFacts, d: RouteDecision | None) -> list[str]:
    """Why a packet last seen in PREROUTING ended there, most likely first (each with its evidence)."""
    pts = routing_points(expl)
    if not pts or pts[0][0] != "input":
        return []
    f = pts[0][1]
    src, dst, iif = f.get("SRC"), f.get("DST"), f.get("IN") or None
    sy = facts.sysctls
    src_of = {k: f" (from {v})" for k, v in facts.where.items()}
    proven: list[str] = []
    open_: list[str] = []
    if src and iif != "lo" and (facts.local or facts.routes) and facts.is_local(src):
        proven.append(f"its source {src} is an address of this host: the kernel drops it as a martian "
                      f"(IP_LOCAL_SOURCE){src_of.get('addrs', src_of.get('routes', ''))}")
    route_failed = d is not None and bool(d.error) and (d.type in rt.REFUSING or (d.table is None and d.rule is None))
    if d is not None and route_failed:
        no_table = d.table is None and d.rule is None
        name = rt.drop_reason(d, rt.forwarding(sy, iif, v6=":" in (dst or "")))
        via = f" ({'ip rule ' + d.rule + ' → ' if d.rule else ''}{'table ' + d.table if d.table else 'no table'})"
        what = "no route to" if no_table else f"{'an' if (d.type or 'x')[0] in 'aeiou' else 'a'} {d.type} route for"
        proven.append(f"{what} {dst}{via if d.rule or d.table else ''}: {name}{src_of.get('routes', '')}")
    forwarded = d is not None and not route_failed and d.type not in ("local", "broadcast", "multicast")
    if d is None or forwarded:
        v6 = ":" in (dst or "")
        fwd, key = rt.forwarding(sy, iif, v6=v6), rt.forwarding_key(sy, iif, v6=v6)
        fn = "ip6_forward" if v6 else "ip_error"
        # forwarding matters only for a packet not to this host: proven when the route says so, or
        # the host's addresses are known and DST is none of them
        not_local = forwarded or (dst is not None and dst != "" and bool(facts.local or facts.routes)
                                  and not facts.is_local(dst))
        if fwd == "0" and not_local:
            proven.append(f"forwarding is disabled ({key}=0): IP_INADDRERRORS in {fn}{src_of.get('sysctls', '')}")
        elif fwd == "0":
            open_.append(f"forwarding is disabled ({key}=0): if {dst} is not an address of this host, IP_INADDRERRORS "
                         f"in {fn} (give --addrs or --routes to check)")
        elif fwd is None:
            open_.append(f"forwarding disabled ({key}=0): give --sysctl to check")
        ttl = f.get("TTL") or f.get("HOPLIMIT")
        if ttl is not None and ttl.isdigit() and int(ttl) <= 1:
            proven.append(f"TTL {ttl} expires on forwarding: IP_INHDR in ip_forward (ICMP time exceeded)")
    if src and dst and iif and ":" not in src:
        if sy and facts.routes is not None:
            why = rt.rp_check(facts.rules, facts.routes, sy, src=src, dst=dst, iif=iif, mark=_mark(f.get("MARK")))
            if why:
                proven.append(f"reverse-path filter: {why}: IP_RPFILTER{src_of.get('sysctls', '')}")
        elif rt.rp_mode(sy, iif) or not sy:
            open_.append("reverse-path filter (rp_filter) with an asymmetric route: give --sysctl and --routes "
                         "to check")
    if facts.routes is None:
        open_.append("no route to its destination (or an unreachable/prohibit route): give --routes and --rules "
                     "to check")
    if d is not None and d.type == "local" and not proven:
        open_.append("the routing step delivers it here and the trace shows nothing after PREROUTING: no traced "
                     "chain in INPUT, then no socket for it (NO_SOCKET: the dumps hold no socket list, so unknown), "
                     "a martian address, or the log was cut")
    open_.append("the log was cut after PREROUTING")
    return proven + open_


def annotate(expl: Explanation, facts: rt.RouteFacts) -> None:
    """Offline: routing decisions from the dumps, and the ranked causes in place of the fixed guess."""
    if not facts:
        return
    if facts.sysctls:  # a rule that drops ctstate INVALID: nf_conntrack_tcp_loose is now known
        invalid_note(expl, None, facts.sysctls)
    if not expl.routing:
        expl.routing = decisions(expl, facts)
    if ROUTING_NOTE not in expl.notes:
        return
    causes = likely_causes(expl, facts, expl.routing[0] if expl.routing else None)
    if causes:
        expl.notes.remove(ROUTING_NOTE)
        n = len(causes)
        local = bool(expl.routing) and expl.routing[0].type == "local" and causes[0].startswith("the routing step")
        expl.notes.append("last seen in PREROUTING: " + ("the routing step delivers it here; its end is not in the "
                                                         "trace" if local else "the routing step after it ended the packet"))
        expl.notes.extend(f"{CAUSE_PREFIX} {i}/{n}: {c}" for i, c in enumerate(causes, 1))
