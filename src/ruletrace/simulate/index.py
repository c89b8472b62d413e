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

from bisect import bisect_left
from collections.abc import Callable
from operator import attrgetter

from ..model import Rule, StepKind
from ..rulesets.options import parse_spec
from .conds import Cond
from .matches import compile_conds
from .semantics import ACCEPT, DROP, QUEUE, RETURN
from .state import Ctx, Pkt
from .targets import Target, compile_target

MIN_INDEXED = 16  # chains shorter than this are scanned
MERGE_BUDGET = 4  # wildcard positions copied into each key's list while the copies stay under 4x the rule count
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
        """Position of the first rule at or after pos that matches, or -1.

        The hot loop: its three branches (no key, merged lists, two lists) repeat one scan on
        purpose; the reference is ``next_match_linear`` and
        tests/simulate/test_index_property.py::test_indexed_equals_linear proves them equal."""
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


def compile_rule(rule: Rule, chains: frozenset[str], v6: bool, builtin: bool) -> CRule:
    """One rule -> CRule (tokenize, conditions, target, TRACE kind)."""
    parsed = parse_spec(rule.spec, rule.origin)
    conds = compile_conds(rule, parsed, v6)
    target = compile_target(rule, parsed.target, parsed.goto, parsed.target_opts, chains, v6)
    kind = StepKind.RULE
    # ip_tables.c get_chainname_rulenum(): an unconditional rule (no IP part, no match) with a
    # standard verdict target is reported as the chain's tail: "policy" in a built-in chain,
    # "return" in a user chain, with the rule's own number
    if len(parsed.tokens) == 2 and target.kind in (ACCEPT, DROP, RETURN, QUEUE) and target.effect is None:
        kind = StepKind.POLICY if builtin else StepKind.RETURN
    return CRule(rule, conds, target, kind)
