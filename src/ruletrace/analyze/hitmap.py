"""Rule hit map: how many traced packets matched each rule, reached it, or never got there.

Counts are per packet (a packet that matches a rule twice counts once). A TRACE ``rule:N``
step in chain C means rules 1..N-1 of C were evaluated and did not match, and rule N matched;
``return``/``policy`` steps carry ``rules + 1``, so every rule of C was evaluated. The highest
number a packet shows in C is therefore how far down C it got ("evaluated").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ..model import BUILTIN_CHAINS, HOOK_TABLES, TABLES, Ruleset, Step

HOOKS = tuple(HOOK_TABLES)

# (table, chain, kind, num) of one TRACE step, kind as in StepKind ("rule", "return", "policy")
Place = tuple[str, str, str, int | None]


@dataclass(slots=True)
class RuleHits:
    """One rule with its counts."""

    num: int
    text: str | None  # the iptables-save line, None when the ruleset is unknown
    hits: int = 0  # packets this rule matched
    evaluated: int = 0  # packets that got to this rule (matched or not)

    @property
    def reached(self) -> bool:
        return self.evaluated > 0


@dataclass(slots=True)
class ChainHits:
    """One chain of one ruleset with the counts of its rules."""

    ruleset: int  # index into the report's rulesets (0 when there is one)
    table: str
    name: str
    policy: str | None
    rules: list[RuleHits] = field(default_factory=list)
    entered: int = 0  # packets with any step in this chain
    fell_off: int = 0  # packets that reached the end (policy / return)
    known: bool = True  # False: built from the trace alone, the ruleset was not given

    @property
    def hit_rules(self) -> int:
        return sum(1 for r in self.rules if r.hits)

    @property
    def unreached(self) -> list[RuleHits]:
        """Rules no traced packet got to."""
        return [r for r in self.rules if not r.evaluated]

    @property
    def missed(self) -> list[RuleHits]:
        """Rules packets got to but that never matched one."""
        return [r for r in self.rules if r.evaluated and not r.hits]


@dataclass(slots=True)
class ChainCounts:
    """One chain's counts, sparse: what the HTML report embeds."""

    ruleset: int
    table: str
    name: str
    policy: str | None
    rules: int  # how many rules the chain has
    known: bool = True  # False: built from the trace alone
    entered: int = 0
    fell_off: int = 0
    hits: dict[int, int] = field(default_factory=dict)  # rule number -> packets it matched (nonzero only)
    # highest rule number a packet showed in the chain -> packets; evaluated(k) = packets with deepest >= k
    deepest: dict[int, int] = field(default_factory=dict)

    def evaluated(self, num: int) -> int:
        """Packets that got to rule ``num`` (matched or not)."""
        return sum(c for n, c in self.deepest.items() if n >= num)


class HitMap:
    """Accumulates per-rule packet counts over a stream of packets; holds no packet."""

    __slots__ = ("rulesets", "hits", "ends", "entered", "deepest", "tables", "packets")

    def __init__(self, rulesets: Sequence[Ruleset] = ()) -> None:
        self.rulesets = list(rulesets)
        self.hits: Counter[tuple[int, str, str, int]] = Counter()
        self.ends: Counter[tuple[int, str, str]] = Counter()
        self.entered: Counter[tuple[int, str, str]] = Counter()
        # (ruleset, table, chain) -> Counter of the highest rule number a packet showed there
        self.deepest: dict[tuple[int, str, str], Counter[int]] = {}
        self.tables: Counter[tuple[str, str]] = Counter()  # (hook, table) -> packets that passed it
        self.packets = 0

    def ruleset_index(self, family: str | None, default: int = 0) -> int:
        """Which ruleset a packet (or a step) of ``family`` was explained against (as the pipeline
        picks it); ``default`` when no ruleset is of that family."""
        if family is not None:
            for i, rs in enumerate(self.rulesets):
                if rs.family == family:
                    return i
        return default

    def add(self, places: Iterable[Place | tuple[int, str, str, str, int | None]], family: str | None = None, *,
            weight: int = 1, ruleset: int | None = None) -> int:
        """Count ``weight`` packets that took these steps; return the ruleset index they were counted under.

        ``ruleset`` overrides the index ``family`` would pick (the report counts each distinct
        path once, with its number of packets as the weight). A place given with its ruleset first,
        ``(ruleset, table, chain, kind, num)``, is counted under that one: the steps of one native
        nf_tables path are in tables of several families (``ip nat``, ``inet filter``).
        """
        rs = self.ruleset_index(family) if ruleset is None else ruleset
        places = [p if len(p) == 5 else (rs, *p) for p in places]
        self.packets += weight
        # dicts as ordered sets; keys without the ruleset index until they are counted
        matched: dict[tuple[int, str, str, int], None] = {}
        deepest: dict[tuple[int, str, str], int] = {}
        fell: dict[tuple[int, str, str], None] = {}
        get = deepest.get
        for prs, table, chain, kind, num in places:  # type: ignore[misc]  # made 5 items above
            key = (prs, table, chain)
            if num is None:
                if key not in deepest:
                    deepest[key] = 0
                continue
            if kind == "rule":
                matched[(prs, table, chain, num)] = None
            else:
                fell[key] = None
            if num > get(key, 0):
                deepest[key] = num
        hits, ends, entered, deep = self.hits, self.ends, self.entered, self.deepest
        for hk in matched:
            hits[hk] = hits.get(hk, 0) + weight
        for k in fell:
            ends[k] = ends.get(k, 0) + weight
        for k, n in deepest.items():
            entered[k] = entered.get(k, 0) + weight
            c = deep.get(k)
            if c is None:
                c = deep[k] = Counter()
            c[n] = c.get(n, 0) + weight
        tables = self.tables
        for hook_table in set(hook_tables([(t, c, k, n) for _r, t, c, k, n in places])):  # type: ignore[misc]  # 5 items
            tables[hook_table] = tables.get(hook_table, 0) + weight
        return rs

    def add_paths(self, places: Sequence[tuple[int, str, str, str, int | None]],
                  paths: Iterable[tuple[Sequence[int], int]]) -> None:
        """``add`` for many paths at once: each path as numbers into ``places`` (a place is
        (ruleset, table, chain, kind, num)) with its weight; the path's ruleset is its places'.

        The counts equal ``add(path's places, weight=w, ruleset=rs)`` for each path (the reference:
        tests/report/test_report_hitmap.py proves them equal); what a place says (its chain, whether
        it is a rule, the hook a built-in chain names, its table's diagram row) is worked out once per
        place instead of once per path that passes it, and a path is counted with numbers, not tuples.
        """
        n = len(places)
        chain_keys: dict[tuple[int, str, str], int] = {}
        chain_of = [0] * n
        num_of: list[int | None] = [None] * n
        rule_of = [False] * n
        hook_of = [-1] * n  # the hook a built-in chain names (hook_tables): its index in HOOKS, or -1
        table_of = [0] * n  # the table's index in TABLES, or -1
        for i, (rs, table, chain, kind, num) in enumerate(places):
            c = chain_keys.get((rs, table, chain))
            if c is None:
                c = chain_keys[(rs, table, chain)] = len(chain_keys)
            chain_of[i], num_of[i], rule_of[i] = c, num, kind == "rule"
            up = chain.upper()
            if up in HOOK_TABLES and table in TABLES:
                hook_of[i] = HOOKS.index(up)
            table_of[i] = TABLES.index(table) if table in TABLES else -1
        nt = len(TABLES)
        boxes = [(hook, table) for hook in HOOKS for table in TABLES]  # box hook * nt + table
        in_box = [table in HOOK_TABLES[hook] for hook, table in boxes]
        # counts per place / chain / box; None until a path passes (then the key is made, as add makes it)
        hits_at: list[int | None] = [None] * n
        chains = len(chain_keys)
        ends_at: list[int | None] = [None] * chains
        entered_at: list[int | None] = [None] * chains
        deep_at: list[dict[int, int]] = [{} for _ in range(chains)]
        box_n: list[int | None] = [None] * len(boxes)
        total = 0
        for pids, w in paths:
            total += w
            deepest: dict[int, int] = {}
            fell: set[int] = set()
            matched: set[int] = set()
            seen_box: set[int] = set()
            hook = -1
            for p in pids:
                h = hook_of[p]
                if h >= 0:
                    hook = h
                if hook >= 0:
                    t = table_of[p]
                    if t >= 0 and in_box[hook * nt + t]:
                        seen_box.add(hook * nt + t)
                c = chain_of[p]
                num = num_of[p]
                if num is None:
                    if c not in deepest:
                        deepest[c] = 0
                    continue
                if rule_of[p]:
                    matched.add(p)
                else:
                    fell.add(c)
                if num > deepest.get(c, 0):
                    deepest[c] = num
            for p in matched:
                hits_at[p] = (hits_at[p] or 0) + w
            for c in fell:
                ends_at[c] = (ends_at[c] or 0) + w
            for c, top in deepest.items():
                entered_at[c] = (entered_at[c] or 0) + w
                d = deep_at[c]
                d[top] = d.get(top, 0) + w
            for b in seen_box:
                box_n[b] = (box_n[b] or 0) + w
        self.packets += total
        hits, ends, entered, deep, tables = self.hits, self.ends, self.entered, self.deepest, self.tables
        for p, (rs, table, chain, _kind, num) in enumerate(places):
            m = hits_at[p]
            if m is not None and num is not None:  # counted: a rule with a number
                hk = (rs, table, chain, num)
                hits[hk] = hits.get(hk, 0) + m
        for k, c in chain_keys.items():
            m = ends_at[c]
            if m is not None:
                ends[k] = ends.get(k, 0) + m
            m = entered_at[c]
            if m is not None:
                entered[k] = entered.get(k, 0) + m
                got = deep.get(k)
                if got is None:
                    got = deep[k] = Counter()
                for top, m in deep_at[c].items():
                    got[top] = got.get(top, 0) + m
        for b, m in enumerate(box_n):
            if m is not None:
                tables[boxes[b]] = tables.get(boxes[b], 0) + m

    def chain_counts(self) -> Iterator[ChainCounts]:
        """Every chain in the order of ``chains()``, with its counts kept sparse (no per-rule objects).

        Cheap for a 100k-rule ruleset: most chains were never entered and carry no counts.
        """
        hits: dict[tuple[int, str, str], dict[int, int]] = {}
        for (rs_i, table, cname, num), c in self.hits.items():
            hits.setdefault((rs_i, table, cname), {})[num] = c

        def counts(rs_i: int, table: str, name: str, policy: str | None, n: int, known: bool) -> ChainCounts:
            key = (rs_i, table, name)
            entered = self.entered.get(key, 0)
            if not entered:
                return ChainCounts(rs_i, table, name, policy, n, known)
            return ChainCounts(rs_i, table, name, policy, n, known, entered, self.ends.get(key, 0),
                               {k: c for k, c in sorted(hits.get(key, {}).items()) if 1 <= k <= n},
                               dict(sorted(self.deepest.get(key, {}).items())))

        if self.rulesets:
            for i, rs in enumerate(self.rulesets):
                for table in table_order(rs.tables):
                    for chain in rs.tables[table].values():
                        yield counts(i, table, chain.name, chain.policy, len(chain.rules), True)
            return
        for (rs_i, table, cname), n in self._trace_chains():
            yield counts(rs_i, table, cname, "?" if cname in BUILTIN_CHAINS else None, n, False)

    def _trace_chains(self) -> list[tuple[tuple[int, str, str], int]]:
        sizes: dict[tuple[int, str, str], int] = {}
        for (rs_i, table, chain), c in self.deepest.items():
            top = max(c)
            n = top - 1 if self.ends.get((rs_i, table, chain)) else top
            sizes[(rs_i, table, chain)] = max(n, sizes.get((rs_i, table, chain), 0))
        return sorted(sizes.items(), key=lambda kv: _chain_sort(kv[0]))

    def chains(self) -> list[ChainHits]:
        """Every chain of every ruleset (in listing order, tables in kernel order) with its counts.

        Without a ruleset, the chains and rules the packets showed are listed instead (rule
        text unknown, ``known=False``).
        """
        out: list[ChainHits] = []
        if self.rulesets:
            for i, rs in enumerate(self.rulesets):
                for table in table_order(rs.tables):
                    for chain in rs.tables[table].values():
                        rules = [RuleHits(r.num, r.text) for r in chain.rules]
                        out.append(self._fill(ChainHits(i, table, chain.name, chain.policy, rules)))
            return out
        for (rs_i, table, cname), n in self._trace_chains():
            rules = [RuleHits(k, None) for k in range(1, n + 1)]
            policy = "?" if cname in BUILTIN_CHAINS else None
            out.append(self._fill(ChainHits(rs_i, table, cname, policy, rules, known=False)))
        return out

    def _fill(self, ch: ChainHits) -> ChainHits:
        key = (ch.ruleset, ch.table, ch.name)
        ch.entered = self.entered.get(key, 0)
        ch.fell_off = self.ends.get(key, 0)
        deepest = self.deepest.get(key)
        if deepest:
            # evaluated(k) = packets whose deepest number in the chain is >= k: a suffix sum
            order = sorted(deepest, reverse=True)
            by_rule = {r.num: r for r in ch.rules}
            running = 0
            k_iter = iter(sorted(by_rule, reverse=True))
            k = next(k_iter, None)
            for n in order:
                while k is not None and k > n:
                    by_rule[k].evaluated = running
                    k = next(k_iter, None)
                running += deepest[n]
            while k is not None:
                by_rule[k].evaluated = running
                k = next(k_iter, None)
        for r in ch.rules:
            r.hits = self.hits.get((ch.ruleset, ch.table, ch.name, r.num), 0)
        return ch


def hook_tables(places: Iterable[Place]) -> Iterator[tuple[str, str]]:
    """The (hook, table) boxes of the packet-flow diagram a path passed, in order, repeats folded.

    A built-in chain names its hook; user chains belong to the hook of the built-in chain
    that called them (as the terminal tree groups them).
    """
    hook: str | None = None
    last: tuple[str, str] | None = None
    for table, chain, _kind, _num in places:
        up = chain.upper()
        if up in HOOK_TABLES and table in TABLES:
            hook = up
        if hook is None or table not in HOOK_TABLES[hook]:
            continue
        here = (hook, table)
        if here != last:
            yield here
            last = here


def places_of(steps: Iterable[Step]) -> list[Place]:
    """(table, chain, kind, num) of each step of an explanation."""
    return [(s.event.table, s.event.chain, str(s.event.kind), s.event.num) for s in steps]


def table_order(tables: Iterable[str]) -> list[str]:
    known = [t for t in TABLES if t in tables]
    return known + sorted(t for t in tables if t not in TABLES)


def _chain_sort(key: tuple[int, str, str]) -> tuple[int, int, bool, str]:
    rs, table, chain = key
    t = TABLES.index(table) if table in TABLES else len(TABLES)
    return rs, t, chain not in BUILTIN_CHAINS, chain
