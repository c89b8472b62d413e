"""Native nftables: the walk of a hook's base chains, the one definition (nf_tables_core.c nft_do_chain).

- A hook runs every base chain of every table of the packet's families (``ip`` or ``ip6``, and
  ``inet``) in priority order; equal priorities run in reverse registration order (the chain
  listed later runs first: nf_hook_entries_insert_raw). Conntrack sits at -200 (prerouting,
  output). The ``nat`` chains of a hook all run at the NAT hook's own priority (-100 for
  prerouting and output, 100 for input and postrouting), among themselves by priority, only for a
  connection's first packet, and the first chain that sets the mapping ends them (nf_nat_inet_fn).
- An ``accept`` ends the base chain, not the hook: the next base chain still runs and may drop.
  ``drop`` / ``reject`` / ``queue`` end the hook.
- A rule whose expressions all match logs a step (``rule``, with the verdict); a rule that breaks
  logs nothing. ``jump`` pushes the next rule, ``goto`` does not; ``return`` and the end of a
  regular chain pop (the implicit end logs no step: the kernel reports none); with nothing to pop,
  the base chain's policy step (``policy``) ends it with its policy.

``NftCompiled(…, linear=False)`` hashes set and map look-ups and runs the hooks as generated code
(nft_gen.py, the fast path); ``linear=True`` scans them and runs ``run_hook`` / ``walk`` here (the
reference). The generated code inlines the same item expressions (nft_code.py) and follows this
walk; tests/simulate/test_nft_gen.py checks the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

from ..model import Chain, Origin, Ruleset, StepKind
from .compiled import nat_manip
from .nft_expr import NRule, compile_nft_rule
from .nft_gen import chain_fn, hook_fn
from .nft_sets import NSet, Where, compile_set
from .semantics import (
    ACCEPT,
    CONTINUE,
    GOTO,
    JUMP,
    MAX_JUMPS,
    NAT,
    RETURN,
    VERDICT,
    loop_error,
    policy_verdict,
)
from .semantics import NftSimEvent as SimEvent

NFT_HOOK = {"PREROUTING": "prerouting", "INPUT": "input", "FORWARD": "forward", "OUTPUT": "output",
            "POSTROUTING": "postrouting"}
NAT_PRIO = {"prerouting": -100, "output": -100, "input": 100, "postrouting": 100}
CT_PRIO = -200  # NF_IP_PRI_CONNTRACK
CT_USER = re.compile(r"(?:^|\s)(?:ct|dnat|snat|masquerade|redirect)\s|\bxt (?:match|target) \"(?:conntrack|state)")
RULE, POLICY = StepKind.RULE, StepKind.POLICY
_cache: dict[tuple[Any, ...], NftCompiled] = {}


def is_native(rulesets: list[Ruleset]) -> bool:
    """Whether these rulesets are nf_tables listings (base chains carry hooks), not iptables-save."""
    for rs in rulesets:  # (a loop, not any(genexpr): asked once per simulated packet)
        if rs.format.startswith("nft"):
            return True
    return False


class NChain:
    """A chain of an nft table; its rules are compiled on first walk."""

    __slots__ = ("table", "name", "family", "src", "rules", "policy", "base", "hook", "priority", "reg",
                 "reasons", "tab", "type", "fn")

    def __init__(self, family: str, ch: Chain, tab: dict[str, NChain]) -> None:
        self.table = ch.table
        self.name = ch.name
        self.family = family
        self.src = ch
        self.rules: list[NRule] | None = None
        self.base = ch.hook is not None
        self.policy = ch.policy or "ACCEPT" if self.base else None
        self.hook = ch.hook
        self.priority = ch.priority or 0
        self.reg = ch.reg or 0
        self.type = ch.type
        self.reasons: dict[int | None, str] = {}
        self.tab = tab  # the chains of its table, for jumps
        self.fn: Callable[..., str | None] | None = None  # the generated walk (nft_gen.chain_fn), compiled on first call

    @property
    def builtin(self) -> bool:
        return self.base


class NftCompiled:
    """The nft rulesets of a packet's family, compiled: hook plans and chains."""

    def __init__(self, rulesets: list[Ruleset], v6: bool, linear: bool = False,
                 fams: tuple[str, ...] | None = None) -> None:
        fams = fams or ("ipv6" if v6 else "ipv4", "inet")
        self.rulesets = [rs for rs in rulesets if rs.family in fams]
        self.has_l2 = any(rs.family in ("netdev", "bridge") for rs in rulesets)  # nft_l2.py has work
        self.v6 = v6
        self.linear = linear
        self.tables: list[tuple[Ruleset, str, dict[str, NChain]]] = []
        self.base: list[NChain] = []
        self.uses_conntrack = False
        self.hooks: dict[str, Callable[..., str]] = {}
        self.plans: dict[str, list[Any]] = {}
        self._sets: dict[int, dict[tuple[str, str], NSet | None]] = {}
        self._table_of: dict[int, tuple[Ruleset, Any]] = {}
        for rs in self.rulesets:
            for tname, chains in rs.tables.items():
                tab: dict[str, NChain] = {}
                for name, ch in chains.items():
                    nc = tab[name] = NChain(rs.family or "", ch, tab)
                    if not linear:
                        nc.fn = partial(self._first_walk, nc)
                    if nc.base and nc.hook in NAT_PRIO.keys() | {"forward"}:
                        self.base.append(nc)
                    if ch.type == "nat" or any(CT_USER.search(r.text) for r in ch.rules):
                        self.uses_conntrack = True
                self.tables.append((rs, tname, tab))
                self._table_of[id(tab)] = (rs, tab.keys())  # a live view: jump targets by name
        self.families = sorted({rs.family or "" for rs in self.rulesets})
        self.inputs: tuple[Ruleset, ...] = ()

    # --- compile -------------------------------------------------------------------------------

    def rules(self, ch: NChain, rs_sets: Any = None) -> list[NRule]:
        if ch.rules is None:
            rs, names = self._table_of[id(ch.tab)]
            sets = self._compiled_sets(rs)
            ch.rules = [compile_nft_rule(r, self.v6, sets, rs.objects, names, self.linear) for r in ch.src.rules]
        return ch.rules

    def _compiled_sets(self, rs: Ruleset) -> dict[tuple[str, str], NSet | None]:
        d = self._sets.get(id(rs))
        if d is None:
            d = self._sets[id(rs)] = {}
            for key, s in rs.sets.items():
                w = Where(s.table, s.name, 0, f"set {s.name}", s.origin or rs.origin or Origin("nftables"), self.v6, d, self.linear,
                          rs.objects)
                d[key] = compile_set(s, w)
        return d

    def _first_walk(self, ch: NChain, p: Any, c: Any, R: Any) -> str | None:
        fn = ch.fn = chain_fn(ch, self.rules(ch), self._policy)
        return fn(p, c, R)

    def compile_all(self) -> int:
        n = 0
        for _rs, _t, tab in self.tables:
            for ch in tab.values():
                n += len(self.rules(ch))
                if not self.linear:
                    ch.fn = chain_fn(ch, self.rules(ch), self._policy)
        return n

    # --- the hooks ------------------------------------------------------------------------------

    def plan(self, hook: str) -> list[Any]:
        """("ct", None) / ("nat", [chains]) / ("chain", chain) in the order the hook runs them."""
        pl = self.plans.get(hook)
        if pl is not None:
            return pl
        h = NFT_HOOK[hook]
        entries: list[tuple[int, int, str, Any]] = []
        nat: list[NChain] = []
        for ch in self.base:
            if ch.hook != h:
                continue
            if ch.type == "nat":
                nat.append(ch)
            else:
                entries.append((ch.priority, -ch.reg, "chain", ch))
        if nat:
            nat.sort(key=lambda c: (c.priority, -c.reg))
            first_reg = min(c.reg for c in nat)
            entries.append((NAT_PRIO[h], -first_reg, "nat", nat))
        if h in ("prerouting", "output"):
            entries.append((CT_PRIO, -(1 << 30), "ct", None))  # registered after the chains
        entries.sort(key=lambda e: (e[0], e[1]))
        pl = self.plans[hook] = [(kind, x) for _p, _r, kind, x in entries]
        return pl

    def hook(self, hook: str) -> Callable[..., str]:
        fn = self.hooks.get(hook)
        if fn is None:
            plan = self.plan(hook)
            if self.linear:
                fn = self.hooks[hook] = partial(self.run_hook, hook, plan)  # (p, c, R): no frame of its own
            else:
                fn = self.hooks[hook] = hook_fn(hook, nat_manip(hook), plan, self._policy)
        return fn

    def run_hook(self, hook: str, plan: list[Any], p: Any, c: Any, R: Any) -> str:
        p.hook = hook
        R.hooks.append(hook)
        for kind, x in plan:
            if kind == "chain":
                v = self.walk(x, p, c, R)
                if v != ACCEPT:
                    return v
            elif kind == "ct":
                if not p.ct:
                    R.conntrack(p, c)
            else:
                manip = nat_manip(hook)
                if not p.ct or p.ctstate != "NEW" or manip in p.nat_done:
                    continue  # nat chains only for a connection's first packet
                p.nat_done += (manip,)
                before = (p.dst, p.dport)
                for ch in x:
                    v = self.walk(ch, p, c, R)
                    if v != ACCEPT:
                        return v
                    if p.dnat if manip == "dst" else p.snat:
                        break  # the mapping is set up: later nat chains of the hook do not run
                if hook == "OUTPUT" and (p.dst, p.dport) != before:
                    R.reroute(p, c)
        return ACCEPT

    def walk(self, base: NChain, p: Any, c: Any, R: Any) -> str:
        """Walk one base chain: the steps it logs and its verdict (ACCEPT lets the hook go on)."""
        chain, pos = base, 0
        stack: list[tuple[NChain, int]] = []
        jumps = 0
        fam = base.family
        append = R.append
        while True:
            rules = chain.rules if chain.rules is not None else self.rules(chain)
            n = len(rules)
            k = pos
            res = None
            while k < n:
                r = rules[k]
                for f in r.items:
                    if not f(p, c):
                        break
                else:
                    res = r.verdict if r.vmap is None else r.vmap(p, c)
                    if res is not None:
                        break
                k += 1
            if res is None:  # the end of the chain
                if chain.base:
                    return self._policy(chain, p, R, fam)
                if stack:  # implicit return: no step
                    chain, pos = stack.pop()
                    continue
                return self._policy(base, p, R, fam)
            kind, target, vtext = res
            e = SimEvent()
            e.table = chain.table
            e.chain = chain.name
            e.kind = RULE
            e.num = k + 1
            e.family = fam
            e.raw = p.snap or p.snapshot()
            e.handle = r.rule.handle
            e.verdict = vtext
            append(e)
            if r.trace:
                R.traced()
            if kind == CONTINUE:
                pos = k + 1
                continue
            if kind == JUMP or kind == GOTO:
                jumps += 1
                if jumps > MAX_JUMPS:
                    raise loop_error(chain.table, chain.name, R.rs.origin)
                if kind == JUMP:
                    stack.append((chain, k + 1))
                chain, pos = chain.tab[target], 0
                continue
            if kind == RETURN:
                if stack:
                    chain, pos = stack.pop()
                    continue
                return self._policy(base, p, R, fam)
            v = VERDICT[kind] if kind != NAT else ACCEPT
            R.decide(v, chain, k + 1, r.rule)
            return v

    @staticmethod
    def _policy(base: NChain, p: Any, R: Any, fam: str) -> str:
        e = SimEvent()
        e.table = base.table
        e.chain = base.name
        e.kind = POLICY
        e.num = len(base.src.rules) + 1
        e.family = fam
        e.raw = p.snap or p.snapshot()
        v = policy_verdict(base.policy)
        e.handle = None
        e.verdict = "drop" if v != ACCEPT else "accept"
        R.append(e)
        R.decide(v, base, None, None)
        return v

    policy = _policy  # public: a base chain's end after its generated function (backends.py)


def nft_compiled(rulesets: list[Ruleset], v6: bool, linear: bool = False,
                 fams: tuple[str, ...] | None = None) -> NftCompiled:
    """The compiled form (cached for the few most recent ruleset lists); ``fams``: other families
    than the packet's and inet (nft_l2.py: netdev and bridge)."""
    # the cached entry holds its rulesets (c.inputs), so ids in a key cannot be reused by others
    key = (tuple(map(id, rulesets)), v6, linear, fams)
    c = _cache.get(key)
    if c is None:
        if len(_cache) >= 4:
            _cache.pop(next(iter(_cache)))
        c = _cache[key] = NftCompiled(rulesets, v6, linear, fams)
        c.inputs = tuple(rulesets)
    return c
