"""A ruleset compiled for simulation: its chains (index.py), each hook's plan, the fast walk's functions.

Hook order and table priorities as in the kernel (include/uapi/linux/netfilter_ipv4.h
NF_IP_PRI_*): raw -300, conntrack -200, mangle -150, nat DNAT -100, filter 0, security 50,
nat SNAT 100.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..model import BUILTIN_CHAINS, Ruleset
from .index import CChain, compile_rule
from .semantics import policy_verdict
from .state import Ctx, Pkt
from .walker import make_hook, make_walk

# matches and targets that call nf_ct_netns_get(): conntrack runs in a namespace only while a
# rule needs it (kernel >= 4.10); without it there is no NAT and every packet is INVALID
CT_USER = re.compile(r"-m (?:conntrack|state|connmark|helper|connlimit|connbytes|connlabel|cluster|ipvs)\b"
                     r"|-j (?:DNAT|SNAT|MASQUERADE|REDIRECT|NETMAP|CT|NOTRACK|CONNMARK|CONNSECMARK)\b")
# the tables of each hook in priority order; "conntrack" is the conntrack hook (no chain)
HOOK_ORDER: dict[str, tuple[str, ...]] = {
    "PREROUTING": ("raw", "conntrack", "mangle", "nat"),
    "INPUT": ("mangle", "filter", "security", "nat"),
    "FORWARD": ("mangle", "filter", "security"),
    "OUTPUT": ("raw", "conntrack", "mangle", "nat", "filter", "security"),
    "POSTROUTING": ("mangle", "nat"),
}
CACHE_SIZE = 4
_cache: dict[tuple[int, bool], Compiled] = {}

Plan = tuple[tuple[str, "CChain | None", "str | None"], ...]


def nat_manip(hook: str) -> str:
    """The NAT manip of a hook's nat chain: "dst" before routing and on output, "src" after."""
    return "dst" if hook == "PREROUTING" or hook == "OUTPUT" else "src"


class Compiled:
    """A ruleset's chains, compiled on first use."""

    __slots__ = ("ruleset", "v6", "index", "chains", "names", "uses_conntrack", "plans", "hooks")

    def __init__(self, ruleset: Ruleset, v6: bool, index: bool = True) -> None:
        self.ruleset = ruleset
        self.v6 = v6
        self.index = index
        self.chains: dict[tuple[str, str], CChain] = {}
        self.names = {t: frozenset(chains) for t, chains in ruleset.tables.items()}
        self.uses_conntrack = any(CT_USER.search(r.text) for t in ruleset.tables.values()
                                  for ch in t.values() for r in ch.rules)
        self.plans: dict[str, Plan] = {}
        self.hooks: dict[str, Callable[..., str]] = {}  # the fast walk's function of each hook (walker.make_hook)

    def plan(self, hook: str) -> Plan:
        """What a hook runs, in order: (table, built-in chain, verdict if the chain is empty) per table.

        Tables without the hook's chain are left out, except "conntrack" (no chain) and "nat"
        (its manip is set up for the connection even when there are no nat rules).
        """
        pl = self.plans.get(hook)
        if pl is None:
            out: list[tuple[str, CChain | None, str | None]] = []
            for t in HOOK_ORDER[hook]:
                base = None if t == "conntrack" else self.chain(t, hook)
                if base is None and t not in ("conntrack", "nat"):
                    continue
                empty = None
                if base is not None and not base.rules:
                    empty = policy_verdict(base.policy)
                out.append((t, base, empty))
            pl = self.plans[hook] = tuple(out)
        return pl

    def hook(self, hook: str) -> Callable[..., str]:
        """The fast walk's function of a hook: ``run_hook(p, c, run)`` -> its verdict."""
        fn = self.hooks.get(hook)
        if fn is None:
            fn = self.hooks[hook] = make_hook(hook, nat_manip(hook), self.plan(hook))
        return fn

    def compile_all(self) -> int:
        """Compile every chain now (instead of on first use) and link its jumps; return the rule count."""
        n = 0
        for t, chains in self.ruleset.tables.items():
            for name in chains:
                cc = self.chain(t, name)
                n += len(cc.rules) if cc is not None else 0
        for (t, _name), cc in self.chains.items():
            for r in cc.rules:
                tg = r.target
                if tg.chain is not None and tg.resolved is None:
                    tg.resolved = self.chains.get((t, tg.chain))
        if self.index:
            for cc in list(self.chains.values()):
                cc.walk = make_walk(self.chain, cc)
        return n

    def chain(self, table: str, name: str) -> CChain | None:
        cc = self.chains.get((table, name))
        if cc is None:
            ch = self.ruleset.chain(table, name)
            if ch is None:
                return None
            builtin = ch.policy is not None or name in BUILTIN_CHAINS
            rules = [compile_rule(r, self.names[table], self.v6, builtin) for r in ch.rules]
            # a built-in chain without a policy (rules without their ``:CHAIN POLICY`` line): None, its
            # verdict unknown (semantics.policy_verdict)
            cc = CChain(table, name, ch.policy if builtin else None, builtin, rules, self.index)
            if self.index:
                cc.walk = self._first_walk(cc)
            self.chains[(table, name)] = cc
        return cc

    def _first_walk(self, cc: CChain) -> Callable[..., str | None]:
        def first(p: Pkt, c: Ctx, run: object) -> str | None:
            # the chain's first walk makes its function (chains no packet reaches never get one)
            cc.walk = make_walk(self.chain, cc)
            return cc.walk(p, c, run)

        return first


def compiled(ruleset: Ruleset, v6: bool, index: bool = True) -> Compiled:
    """The compiled form of a ruleset (cached for the few most recent rulesets)."""
    key = (id(ruleset), index)
    c = _cache.get(key)
    if c is None or c.ruleset is not ruleset:
        if len(_cache) >= CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        c = _cache[key] = Compiled(ruleset, v6, index)
    return c
