"""Compiled chains and the rule index that finds the first matching rule without scanning.

A chain with many rules keyed on one packet field (kube-proxy's ``-d VIP/32`` in
KUBE-SERVICES, ``--dport`` in KUBE-NODEPORTS) gets a dict from that field's value to the
positions of the rules that can only match it, plus the positions of the rules that can match
any value. The next candidate is the smaller of the two lists' next positions, so rules are
still tried in chain order and the result is the linear walk's. A rule is keyed only when every
condition before the key is pure (records no assumption), so skipping it records nothing the
linear walk would have recorded.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from operator import attrgetter
from typing import Callable

from ..errors import RuletraceError
from ..model import BUILTIN_CHAINS, Rule, Ruleset, StepKind
from ..rulesets.iptables_save import tokenize
from .matches import Cond, compile_conds, split_rule
from .state import Ctx, Pkt
from .targets import ACCEPT, DROP, QUEUE, RETURN, Target, compile_target
from .walker import make_hook, make_walk

# matches and targets that call nf_ct_netns_get(): conntrack runs in a namespace only while a
# rule needs it (kernel >= 4.10); without it there is no NAT and every packet is INVALID
_CT_USER = re.compile(r"-m (?:conntrack|state|connmark|helper|connlimit|connbytes|connlabel|cluster|ipvs)\b"
                      r"|-j (?:DNAT|SNAT|MASQUERADE|REDIRECT|NETMAP|CT|NOTRACK|CONNMARK|CONNSECMARK)\b")
MIN_INDEXED = 16  # chains shorter than this are scanned
MERGE_BUDGET = 4  # wildcard positions copied into each key's list while the copies stay under 4x the rule count
# the tables of each hook in priority order (include/uapi/linux/netfilter_ipv4.h NF_IP_PRI_*):
# raw -300, conntrack -200, mangle -150, nat DNAT -100, filter 0, security 50, nat SNAT 100
HOOK_ORDER: dict[str, tuple[str, ...]] = {
    "PREROUTING": ("raw", "conntrack", "mangle", "nat"),
    "INPUT": ("mangle", "filter", "security", "nat"),
    "FORWARD": ("mangle", "filter", "security"),
    "OUTPUT": ("raw", "conntrack", "mangle", "nat", "filter", "security"),
    "POSTROUTING": ("mangle", "nat"),
}
KEY_FIELDS: dict[str, Callable[[Pkt], object]] = {d: attrgetter(d) for d in ("dst", "dport", "src", "iif", "mark",
                                                                             "proto")}


class CRule:
    """A rule ready to evaluate."""

    __slots__ = ("rule", "conds", "fns", "target", "kind", "keys")

    def __init__(self, rule: Rule, conds: list[Cond], target: Target, kind: StepKind) -> None:
        self.rule = rule
        self.conds = conds
        self.fns = tuple(c.fn for c in conds)
        self.target = target
        self.kind = kind  # the TRACE type the kernel reports when this rule matches
        keys: dict[str, object] = {}
        for c in conds:
            if c.key is not None and c.key[0] not in keys:
                keys[c.key[0]] = c.key[1]
            if not c.pure:
                break
        self.keys = keys

    def matches(self, p: Pkt, c: Ctx) -> bool:
        for f in self.fns:
            if not f(p, c):
                return False
        return True

    def first_failure(self, p: Pkt, c: Ctx) -> Cond | None:
        for cond in self.conds:
            if not cond.fn(p, c):
                return cond
        return None


class CChain:
    """A chain's compiled rules and, for long chains, the index."""

    __slots__ = ("table", "name", "policy", "builtin", "rules", "fns", "keyfn", "dim", "keyed", "wild", "merged",
                 "walk", "reasons")

    def __init__(self, table: str, name: str, policy: str | None, builtin: bool, rules: list[CRule],
                 index: bool) -> None:
        self.table = table
        self.name = name
        self.policy = policy
        self.builtin = builtin
        self.rules = rules
        self.fns = [r.fns for r in rules]
        self.keyfn: Callable[[Pkt], object] | None = None
        self.dim = ""
        self.keyed: dict[object, list[int]] = {}
        self.wild: list[int] = []
        self.merged = False  # keyed lists hold the wildcard positions too (in chain order)
        self.walk: Callable[..., str | None] | None = None  # walker.py's function, set by Compiled
        self.reasons: dict[int | None, str] = {}  # verdict reason by rule number (None: the policy)
        if index and len(rules) >= MIN_INDEXED:
            self._build()

    def _build(self) -> None:
        # pick the field that leaves the fewest candidates in the worst case: rules keyed on
        # another value are skipped, wildcard rules (no key on that field) are always tried
        n = len(self.rules)
        buckets: dict[str, dict[object, int]] = {}
        for r in self.rules:
            for d, v in r.keys.items():
                b = buckets.setdefault(d, {})
                b[v] = b.get(v, 0) + 1
        best, best_cost = "", n
        for d, b in buckets.items():
            cost = (n - sum(b.values())) + max(b.values())
            if cost < best_cost:
                best, best_cost = d, cost
        if not best or best_cost > n // 2:
            return
        self.dim = best
        self.keyfn = KEY_FIELDS[best]
        for i, r in enumerate(self.rules):
            if best in r.keys:
                self.keyed.setdefault(r.keys[best], []).append(i)
            else:
                self.wild.append(i)
        w = self.wild
        if not w:
            self.merged = True
        elif len(w) * len(self.keyed) <= MERGE_BUDGET * n:
            # one sorted candidate list per key: the walk then reads a single list
            self.keyed = {v: sorted(a + w) for v, a in self.keyed.items()}
            self.merged = True

    def next_match(self, p: Pkt, c: Ctx, pos: int) -> int:
        """Position of the first rule at or after pos that matches, or -1."""
        fns = self.fns
        keyfn = self.keyfn
        if keyfn is None:
            for i in range(pos, len(fns)):
                for f in fns[i]:
                    if not f(p, c):
                        break
                else:
                    return i
            return -1
        if self.merged:
            cand = self.keyed.get(keyfn(p))
            if cand is None:
                cand = self.wild
            for j in range(bisect_left(cand, pos) if pos else 0, len(cand)):
                k = cand[j]
                for f in fns[k]:
                    if not f(p, c):
                        break
                else:
                    return k
            return -1
        a = self.keyed.get(keyfn(p), ())
        b = self.wild
        na, nb = len(a), len(b)
        i = bisect_left(a, pos) if na else 0
        j = bisect_left(b, pos) if nb else 0
        while i < na or j < nb:
            if j >= nb or (i < na and a[i] < b[j]):
                k = a[i]
                i += 1
            else:
                k = b[j]
                j += 1
            for f in fns[k]:
                if not f(p, c):
                    break
            else:
                return k
        return -1

    def next_match_linear(self, p: Pkt, c: Ctx, pos: int) -> int:
        rules = self.rules
        for i in range(pos, len(rules)):
            if rules[i].matches(p, c):
                return i
        return -1


class Compiled:
    """A ruleset's chains, compiled on first use."""

    __slots__ = ("ruleset", "v6", "index", "chains", "names", "uses_conntrack", "plans", "hooks")

    def __init__(self, ruleset: Ruleset, v6: bool, index: bool = True) -> None:
        self.ruleset = ruleset
        self.v6 = v6
        self.index = index
        self.chains: dict[tuple[str, str], CChain] = {}
        self.names = {t: frozenset(chains) for t, chains in ruleset.tables.items()}
        self.uses_conntrack = any(_CT_USER.search(r.text) for t in ruleset.tables.values()
                                  for ch in t.values() for r in ch.rules)
        self.plans: dict[str, tuple[tuple[str, CChain | None, str | None], ...]] = {}
        self.hooks: dict[str, Callable[..., str]] = {}  # the fast walk's function of each hook (walker.make_hook)

    def plan(self, hook: str) -> tuple[tuple[str, CChain | None, str | None], ...]:
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
                    empty = DROP if base.policy == "DROP" else ACCEPT
                out.append((t, base, empty))
            pl = self.plans[hook] = tuple(out)
        return pl

    def hook(self, hook: str) -> Callable[..., str]:
        """The fast walk's function of a hook: ``run_hook(p, c, run)`` -> its verdict."""
        fn = self.hooks.get(hook)
        if fn is None:
            fn = self.hooks[hook] = make_hook(hook, self.plan(hook))
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
                cc.walk = make_walk(self, cc)
        return n

    def chain(self, table: str, name: str) -> CChain | None:
        cc = self.chains.get((table, name))
        if cc is None:
            ch = self.ruleset.chain(table, name)
            if ch is None:
                return None
            builtin = ch.policy is not None or name in BUILTIN_CHAINS
            rules = [compile_rule(r, self.names[table], self.v6, builtin) for r in ch.rules]
            cc = CChain(table, name, ch.policy or ("ACCEPT" if builtin else None), builtin, rules, self.index)
            if self.index:
                cc.walk = self._first_walk(cc)
            self.chains[(table, name)] = cc
        return cc

    def _first_walk(self, cc: CChain) -> Callable[..., str | None]:
        def first(p: Pkt, c: Ctx, run: object) -> str | None:
            # the chain's first walk makes its function (chains no packet reaches never get one)
            cc.walk = make_walk(self, cc)
            return cc.walk(p, c, run)

        return first


def compile_rule(rule: Rule, chains: frozenset[str], v6: bool, builtin: bool) -> CRule:
    """One rule -> CRule (tokenize, conditions, target, TRACE kind)."""
    spec = rule.spec
    try:
        tokens = tokenize(spec)
    except RuletraceError as e:
        raise RuletraceError(e.message, origin=rule.origin) from None
    parsed = split_rule(tokens, rule.origin)
    conds = compile_conds(rule, parsed, v6)
    target = compile_target(rule, parsed.target, parsed.goto, parsed.target_opts, chains, v6)
    kind = StepKind.RULE
    # ip_tables.c get_chainname_rulenum(): an unconditional rule (no IP part, no match) with a
    # standard verdict target is reported as the chain's tail: "policy" in a built-in chain,
    # "return" in a user chain, with the rule's own number
    if len(tokens) == 2 and target.kind in (ACCEPT, DROP, RETURN, QUEUE) and target.effect is None:
        kind = StepKind.POLICY if builtin else StepKind.RETURN
    return CRule(rule, conds, target, kind)
