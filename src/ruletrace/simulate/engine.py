"""The simulator: Ruleset + Probe + HostFacts -> the TraceEvents the kernel's TRACE would log.

This module takes the packet made from the probe (packet.py) through the hooks of its path
(routing, conntrack, loopback) and turns the walk's verdict into a fate. The hooks' tables are walked by
walker.py's generated functions (the fast path) or reference.py (the reference walk); what a
rule's target does to the walk is defined once, in semantics.py; hook plans in compiled.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import RuletraceError
from ..model import Fate, KernelDrop, RouteDecision, Rule, Ruleset, TraceEvent, Verdict
from .backends import Both, BothCompiled, combined
from .compiled import Compiled, compiled
from .hostfacts import HostFacts, addr_text
from .miss_words import MATCHED, NOT_REACHED, parse_chain
from .nft_l2 import before_ip, l2_compiled
from .nft_walk import NftCompiled, is_native, nft_compiled
from .packet import make_packet
from .probe import Probe
from .reference import run_hook
from .routestep import kernel_drop, lookup, route_input
from .semantics import ACCEPT, DROP, QUEUE, REJECT, WalkState
from .sockets import socket_check
from .state import IPS_ASSURED, IPS_CONFIRMED, IPS_EXPECTED, IPS_SEEN_REPLY, Branch, Ctx, Pkt, snapshot_fields

# status of the connection a probe in each tracked state belongs to
CT_STATUS = {"NEW": 0, "ESTABLISHED": IPS_SEEN_REPLY | IPS_CONFIRMED | IPS_ASSURED,
             "RELATED": IPS_EXPECTED | IPS_CONFIRMED}
# Fate's members as plain globals: looking a member up on the Enum class costs ~10x a global
DROPPED, REJECTED, FORWARDED, SENT, UNKNOWN = Fate.DROPPED, Fate.REJECTED, Fate.FORWARDED, Fate.SENT, Fate.UNKNOWN
_ACCEPTED_BY: dict[str, str] = {}
_NO_HOOKS: dict[str, Any] = {}  # (never written)
_NO_MISSES: dict[int, str] = {}  # (never written)  # verdict reason -> "last accepted by <reason>" (one string per rule)

ASSUMED_IIF = "eth0"  # the input interface a probe without one is given (depends.py tries others)


@dataclass(slots=True)
class Miss:
    """A rule of the --explain-miss chain that did not match, and why."""

    rule: Rule
    reason: str


@dataclass(slots=True)
class SimResult:
    """What the simulation predicts for one probe."""

    probe: Probe
    events: list[TraceEvent]
    assumptions: list[str]
    branches: list[Branch]
    fate: Fate
    verdict: Verdict | None
    facts: list[str] = field(default_factory=list)  # host facts used, and where they came from
    hooks: list[str] = field(default_factory=list)  # hooks traversed in order
    trace_start: int = 0  # events before this index come before the first -j TRACE rule fired
    misses: list[Miss] | None = None  # None unless explain_miss was asked
    final_snapshot: tuple[Any, ...] = ()
    path: str = ""  # input / forward / output, given or determined
    assumed_out: str | None = None  # the output interface, when it was assumed
    guessed: list[str] = field(default_factory=list)  # --assume keys of matches assumed not to match
    depends_on: list[str] = field(default_factory=list)  # assumptions the verdict rests on (depends.py)
    kernel_drop: KernelDrop | None = None  # a drop outside the rules the kernel would make (routing, sysctls)
    routing: list[RouteDecision] = field(default_factory=list)  # the lookups made from --routes/--rules
    backends: list[str] = field(default_factory=list)  # both backends walked: each event's ("legacy" / "nft")
    decided_by: str | None = None  # both backends walked: the backend of the verdict's rule
    socket: str | None = None  # delivered: whether a socket takes it, in words (sockets.py)

    @property
    def final(self) -> dict[str, str]:
        """The packet as it leaves (kernel-log field names)."""
        return snapshot_fields(self.final_snapshot) if self.final_snapshot else {}


def simulate(ruleset: Ruleset | list[Ruleset] | Both, probe: Probe, facts: HostFacts | None = None, *,
             explain_miss: str | None = None, index: bool = True) -> SimResult:
    """Predict the packet's path: its TRACE steps, fate, verdict and every assumption made.

    ``ruleset``: an iptables listing, or nf_tables listings (a list: every family's tables; the
    packet meets those of its family and ``inet``, walked natively by nft_walk.py); or ``Both``:
    legacy xtables tables beside nf_tables, walked together (backends.py).
    """
    facts = facts or HostFacts()
    try:
        return _Run(ruleset, probe, facts, explain_miss, index).run()
    except RecursionError:
        # chains nested deeper than Python's stack (or a loop): the plain walk has its own
        # stack and reports a loop
        return _Run(ruleset, probe, facts, explain_miss, index, fast=False).run()


Setup = tuple[Any, Ruleset, bool, "Compiled | NftCompiled | BothCompiled", "NftCompiled | None", bool,
              "tuple[str, str] | None", bool, str]
# _Run's remembered setups, a few rulesets at a time. An entry holds its compiled form, which may
# outlive that form's entry in compiled()'s / nft_compiled()'s own caches: a second compile of the
# same rulesets then walks alike (compiling is deterministic), only the memory is held longer.
SETUPS: dict[Any, Setup] = {}


def setup(given: Ruleset | list[Ruleset] | Both, v: int, index: bool, fast: bool, facts: HostFacts,
          explain_miss: str | None) -> Setup:
    """What a run needs from the ruleset: (given, the ruleset walked, native?, its compiled form,
    the netdev/bridge tables' or None, no base chain at all?, the --explain-miss chain or None,
    walked by generated functions?, the packet's family).
    A function of its arguments alone (facts: only their --assume, and only with both backends)."""
    fam = "ipv6" if v == 6 else "ipv4"
    both = given if isinstance(given, Both) else None
    rs = given.nft if isinstance(given, Both) else given
    rss = rs if isinstance(rs, list) else [rs]
    native = is_native(rss)
    if native:
        rs = rss[0]
    elif isinstance(rs, list):
        rs = rss[0]
    if not native and rs.family is not None and rs.family != fam:
        raise RuletraceError(f"the ruleset is {rs.family} but the packet is {fam}", origin=rs.origin)
    cc: Compiled | NftCompiled | BothCompiled
    if native:
        if explain_miss:
            raise RuletraceError("--explain-miss is not available for nftables rulesets yet", origin=rs.origin)
        cc = nft_compiled(rss, v == 6, linear=not (index and fast))
    else:
        cc = compiled(rs, v == 6, index)
    if both is not None:
        cc = combined(both, cc, fam, index, fast and index, facts.assume, explain_miss)
    nft = cc.nft if isinstance(cc, BothCompiled) else cc
    l2 = l2_compiled(rss, v == 6, not (index and fast)) if isinstance(nft, NftCompiled) and nft.has_l2 else None
    miss_key = None
    if explain_miss:
        t, ch = parse_chain(explain_miss)
        if rs.chain(t, ch) is None:
            raise RuletraceError(f"--explain-miss: no chain {ch} in table {t}", origin=rs.origin)
        miss_key = (t, ch)
    # (with both backends, legacy has chains)
    no_chains = isinstance(cc, NftCompiled) and not cc.base
    held = tuple(given) if isinstance(given, list) else given  # keeps the ids of a remembered key alive
    # the chain functions (walker.py) with the index; the reference walk without it, and
    # for --explain-miss, which notes why each rule of its chain did not match
    gen = fast and index and miss_key is None
    return held, rs, native, cc, l2, no_chains, miss_key, gen, fam


class _Run(WalkState):
    """One simulation: the walk's record (WalkState) and what the hooks between the walks need."""

    __slots__ = ("rs", "probe", "facts", "cc", "p", "c", "miss_key", "miss_state", "v", "addrs", "fast",
                 "native", "_rerouted", "_assumed_out", "l2", "kdrop", "lookups", "in_route",
                 "backends", "socket", "no_chains", "in_local")

    def __init__(self, given: Ruleset | list[Ruleset] | Both, probe: Probe, facts: HostFacts, explain_miss: str | None,
                 index: bool, fast: bool = True) -> None:
        v, src, dst = probe.addrs()
        self.probe = probe
        self.facts = facts
        both = isinstance(given, Both)
        if explain_miss is None and not both:
            # the ruleset's part of the setup, remembered (setup() is the reference: the same answer
            # for the same rulesets, version and walk; tests/simulate/test_engine_memo.py)
            key = (tuple(map(id, given)) if type(given) is list else id(given), v, index, fast)
            s = SETUPS.get(key)
            if s is None:
                s = setup(given, v, index, fast, facts, None)
                if len(SETUPS) >= 4:
                    SETUPS.pop(next(iter(SETUPS)))
                SETUPS[key] = s
        else:
            s = setup(given, v, index, fast, facts, explain_miss)
        _given, self.rs, self.native, self.cc, self.l2, self.no_chains, self.miss_key, self.fast, fam = s
        WalkState.__init__(self, fam)
        self.v = v
        self.addrs = (src, dst)
        self.backends: list[str] | None = [] if both else None
        self.socket: str | None = None  # what the socket check found (sockets.py), in words
        self._rerouted: str | None = None
        self._assumed_out: str | None = None
        self.kdrop: KernelDrop | None = None
        self.lookups: list[RouteDecision] = []
        self.in_route: RouteDecision | None = None
        self.in_local = False  # the routing step after PREROUTING found DST local (routestep.route_input)
        # --explain-miss: each rule's state (reference.scan_recording); never written without it
        self.miss_state: dict[int, str] = {} if self.miss_key is not None else _NO_MISSES

    # --- the walk ------------------------------------------------------------------------

    def run(self) -> SimResult:
        p, c = self.p, self.c = make_packet(self.probe, self.facts, self.v, self.addrs, self.no_chains)
        pr = self.probe
        if c.path == "output":
            fate = self._output(p, c)
        else:
            p.iif = pr.iif
            if p.iif is None:
                p.iif = ASSUMED_IIF
                c.note(f"input interface not given: assumed IN={ASSUMED_IIF}")
            p.oif = None
            p.snap = None
            fate = (self._l2(p, c) if self.l2 is not None else None) or self._incoming(p, c)
        verdict = self._verdict(fate)
        misses = None
        if self.miss_key is not None:
            misses = self._misses()
        # every field in order, positionally (no keyword matching in the call)
        res = SimResult(pr, self.events, list(c.assumptions), c.branches, fate, verdict, list(self.facts.sources),
                        self.hooks, self.trace_start, misses, p.snap or p.snapshot(), c.path, self._assumed_out,
                        c.guessed, [], self.kdrop, self.lookups, [], None, self.socket)
        if self.backends is not None and isinstance(self.cc, BothCompiled):
            res.backends = self.backends
            res.decided_by = self.cc.backend_of(self.decider[1]) if self.decider is not None else None
        return res

    def _hook(self) -> Callable[[str], Callable[[Pkt, Ctx, WalkState], str]]:
        """hook name -> the function that runs its tables: generated (walker.make_hook) or the reference walk."""
        if self.fast or self.native or self.backends is not None:
            return self.cc.hook  # bound once: no frame of ours per hook
        return lambda hook: lambda p, c, run: run_hook(hook, p, c, run)

    def _hooks(self) -> tuple[Callable[[str], Callable[[Pkt, Ctx, WalkState], str] | None],
                              Callable[[str], Callable[[Pkt, Ctx, WalkState], str]]]:
        """(name -> the hook's function made already, else None; _hook): ``made(h) or hook(h)`` is
        ``hook(h)`` (cc.hook returns what it put in cc.hooks), without cc.hook's frame when made."""
        if self.fast or self.native or self.backends is not None:
            cc = self.cc
            return cc.hooks.get, cc.hook
        return _NO_HOOKS.get, self._hook()

    def conntrack(self, p: Pkt, c: Ctx) -> None:
        """The conntrack hook: attach the connection's entry (unless there is none)."""
        if p.ct:
            return  # looped back: the entry is already attached
        if p.ctstate in ("UNTRACKED", "INVALID"):
            return
        on = self.facts.assume.get("conntrack")
        if on is None:
            on = self.cc.uses_conntrack
            if not on:
                c.note("no rule needs connection tracking, so the kernel does not track in this namespace: "
                       "no NAT, conntrack state INVALID; use --assume conntrack=match if something else "
                       "(nftables, ipvs, another ruleset) enables it")
        if not on:
            return
        p.ct = True
        p.orig = (p.src, p.dst, p.sport, p.dport)
        p.repl_src = p.dst
        p.repl_dst = p.src
        p.repl_sport = p.dport
        p.repl_dport = p.sport
        p.ctstatus = CT_STATUS[p.ctstate]

    def _l2(self, p: Pkt, c: Ctx) -> Fate | None:
        """netdev ingress and bridge hooks (nft_l2.py): a fate, or None to go on in the IP stack."""
        assert self.l2 is not None  # called only when the listings hold netdev/bridge tables
        # up to the IP stack: for the host itself, or routed through it (the frame was sent to the
        # bridge's MAC as the gateway: DST is not on the bridge's own prefix); else bridged
        master = c.facts.masters.get(p.iif) if p.iif else None
        up = c.is_local(p, p.v, p.dst) or (master is not None and c.facts.connected(p.v, p.dst) != master)
        v, bridged = before_ip(self.l2, p, c, self, up)
        if v != ACCEPT:
            return self._fate(v)
        return Fate.FORWARDED if bridged else None

    def _incoming(self, p: Pkt, c: Ctx) -> Fate:
        made, hook = self._hooks()
        v = (made("PREROUTING") or hook("PREROUTING"))(p, c, self)
        if v != ACCEPT:
            return self._fate(v)
        ended = route_input(self, p, c)
        if ended is not None:
            return ended
        if self.in_local:  # route_input's c.is_local of this DST
            v = (made("INPUT") or hook("INPUT"))(p, c, self)
            return self._fate(v) if v != ACCEPT else socket_check(self, p, c)
        if not self._routed(p, c, "the kernel drops the packet before FORWARD (ICMP unreachable)", self.in_route):
            return DROPPED
        # ip_forward() / ip6_forward() decrement TTL / hop limit before the FORWARD hook
        if p.ttl <= 1:
            return kernel_drop(self, "IP_INHDR", "ip_forward", ttl=str(p.ttl))
        p.ttl -= 1
        p.snap = None  # a packet's snapshot is shared by its steps until IN, OUT, TTL or a target changes it
        v = (made("FORWARD") or hook("FORWARD"))(p, c, self)
        if v != ACCEPT:
            return self._fate(v)
        v = (made("POSTROUTING") or hook("POSTROUTING"))(p, c, self)
        return self._fate(v) if v != ACCEPT else FORWARDED

    def _output(self, p: Pkt, c: Ctx) -> Fate:
        p.iif = None
        if not self._routed(p, c, "the socket gets 'network unreachable', no packet is sent"):
            return Fate.DROPPED
        p.snap = None
        hook = self._hook()
        v = hook("OUTPUT")(p, c, self)
        if v != ACCEPT:
            return self._fate(v)
        if self._rerouted is None and self.facts.rules and p.mark != self.probe.mark:
            # ipt_mangle_out / nft route chains: a changed mark is routed again (ip_route_me_harder)
            self._rerouted = self._route_out(p, c, force=True) or p.oif
        if self._rerouted is not None:
            # the OUTPUT hook's chains all see the device routed before nat OUTPUT changed the
            # destination (the hook state's out); the new route's device leaves from POSTROUTING on
            p.oif, self._rerouted = self._rerouted, None
            p.snap = None
        v = hook("POSTROUTING")(p, c, self)
        if v != ACCEPT:
            return self._fate(v)
        if p.oif != "lo":
            return Fate.SENT
        # loopback: the packet comes back in through PREROUTING and INPUT with its conntrack
        # entry attached and both NAT manips already set up (no nat chains)
        p.iif, p.oif = "lo", None
        p.snap = None
        v = hook("PREROUTING")(p, c, self)
        if v != ACCEPT:
            return self._fate(v)
        v = hook("INPUT")(p, c, self)
        return self._fate(v) if v != ACCEPT else socket_check(self, p, c)

    def _routed(self, p: Pkt, c: Ctx, unroutable: str, d: RouteDecision | None = None) -> bool:
        """Route the packet out (``p.oif``; ``d``: the decision made already, see ``_route_out``);
        False, and a note ending in ``unroutable``, when no route fits."""
        oif = self._route_out(p, c, d)
        if oif is None:
            c.note(f"no route to {addr_text(p.v, p.dst)} in the given routes: {unroutable}")
            return False
        p.oif = oif
        return True

    def _route_out(self, p: Pkt, c: Ctx, d: RouteDecision | None = None, *, force: bool = False) -> str | None:
        """The output interface: -o, else the routes (and connected prefixes); None: no route."""
        pr, f = self.probe, self.facts
        if c.path == "output" and c.is_local(p, p.v, p.dst):
            return "lo"
        moved = (p.v, p.dst) != c.orig_dst
        if f.raw_routes is not None and (force or moved or not pr.oif):
            if d is None:
                d = lookup(self, p, "reroute" if force or moved else "output" if c.path == "output" else "input")
            if d is not None and not d.error:
                return "lo" if d.type == "local" else d.dev or f.connected(p.v, p.dst)
            if d is not None:
                return None
        if pr.oif and not (moved and f.routes):
            return pr.oif
        r = f.route(p.v, p.dst) if f.routes else None
        if r is not None and r.dev:
            return r.dev
        if r is None and f.routes:
            return None
        la = f.connected(p.v, p.dst)
        if la is not None:
            return la
        dflt = "eth0" if c.path == "output" else "eth1"
        c.note(f"output interface for {addr_text(p.v, p.dst)} not known (give -o or --routes): assumed OUT={dflt}")
        self._assumed_out = dflt
        return dflt

    def reroute(self, p: Pkt, c: Ctx) -> None:
        """Route again after the nat table changed the destination of a locally generated packet
        (ip_route_me_harder): the new device is the packet's from POSTROUTING on (_output)."""
        self._rerouted = self._route_out(p, c) or p.oif

    def _misses(self) -> list[Miss]:
        t, ch = self.miss_key  # type: ignore[misc]  # only called with --explain-miss set
        chain = self.rs.chain(t, ch)
        out: list[Miss] = []
        if not any(e.table == t and e.chain == ch for e in self.events) and not self.miss_state:
            return out
        for i, r in enumerate(chain.rules if chain else []):
            st = self.miss_state.get(i)
            if st == MATCHED:
                continue
            out.append(Miss(r, st or NOT_REACHED))
        return out

    def _fate(self, v: str) -> Fate:
        if v == DROP:
            return DROPPED
        if v == REJECT:
            return REJECTED
        if v == QUEUE:
            self.c.note("the packet was queued to user space: its fate depends on that program")
            return UNKNOWN
        return UNKNOWN

    def _verdict(self, fate: Fate) -> Verdict | None:
        d = self.decider
        if d is None:
            return None
        action, chain, num, rule = d
        reason = chain.reasons.get(num)
        if reason is None:
            where = f"{chain.table} {chain.name}"
            if rule is None:
                reason = (f"policy {chain.policy} of {where}" if chain.policy is not None else
                          f"the policy of {where}, which the ruleset does not give")
            else:
                reason = f"rule {num} of {where}: {rule.text}"
            chain.reasons[num] = reason
        if fate is DROPPED or fate is REJECTED or action != ACCEPT:
            return Verdict(action, chain.table, chain.name, num, rule, reason)
        text = _ACCEPTED_BY.get(reason)
        if text is None:
            if len(_ACCEPTED_BY) >= 1 << 16:
                _ACCEPTED_BY.clear()
            text = _ACCEPTED_BY[reason] = f"last accepted by {reason}"
        return Verdict(ACCEPT, chain.table, chain.name, num, rule, text)


def step_tags(events: list[TraceEvent]) -> list[tuple[str, str, str, int | None]]:
    """(table, chain, kind, num) of each event: what the kernel-diff tests compare."""
    return [(e.table, e.chain, str(e.kind), e.num) for e in events]

