"""Counts over many explanations: packets by fate and by deciding rule, skipped lines, warnings.

The terminal view is ``render.summary.to_renderable``; the JSON form is ``Summary.to_json``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

from ..explain.owners import Owner, deciding_owner, owner_of
from ..model import Explanation, Fate, Rule, StepKind
from ..rulesets.nft_model import table_label

MAX_WARNINGS = 1000  # distinct warning texts kept; more are counted under OTHER_WARNINGS
OTHER_WARNINGS = "(other warnings)"


class Decider(NamedTuple):
    """What decided a packet's fate: a rule, a chain policy, or nothing (trace ended)."""

    action: str | None  # "drop", "accept", …; None when nothing decided
    table: str | None
    chain: str | None
    num: int | None
    rule: str | None  # iptables-save text of the deciding rule
    policy: str | None  # the chain policy when no rule decided
    last_seen: str | None  # "table:chain" where the trace ended, when nothing decided
    # the deciding table's family where the packet's path shows its name in two (``ip same`` and
    # ``inet same``: Explanation.shared); None otherwise
    family: str | None = None
    # who decided, as the tree says it (``explain.owners.deciding_owner``): the rule's own owner, or,
    # where the rule is a product's plumbing (KUBE-FIREWALL), the owner a cause link names (the
    # service whose rule set the mark). Those links need the packet's fields: an explanation without
    # detail (``explain --summary``) has none, and its deciders name the rule's own owner.
    # One rule, two owners (kind and name): two deciders; two endpoints of one service are one
    # (``Summary`` keeps of the owner what its packets agree on)
    owner: Owner | None = None
    # a legacy xtables decider's packet family (iptables' filter and ip6tables' filter are two tables, so
    # two deciders); ``Summary.ranked`` copies it to ``family``, and the views name the table in its tool's
    # words, only where the summary's deciders hold the name in two families
    xtables: str | None = None


class Summary:
    """Accumulates counts over explanations as they stream by; holds no explanation."""

    __slots__ = ("packets", "fates", "deciding", "skipped_lines", "warnings", "packets_with_warnings", "_groups")

    def __init__(self) -> None:
        self.packets = 0
        self.fates: Counter[Fate] = Counter()
        self.deciding: Counter[Decider] = Counter()
        self.skipped_lines = 0
        self.warnings: Counter[str] = Counter()
        self.packets_with_warnings = 0
        # a decider by its owner's kind and name -> the one it is counted under (_grouped)
        self._groups: dict[tuple[Any, ...], Decider] = {}

    def add(self, expl: Explanation) -> Explanation:
        """Count one explanation; return it, so ``map(summary.add, expls)`` passes them on."""
        self.count(self.entry(expl))
        return expl

    @staticmethod
    def entry(expl: Explanation) -> tuple[Fate, Decider, tuple[str, ...]]:
        """What the summary counts of one explanation: its fate, decider and warnings (the owner of the
        decider may differ between packets of one path: a map element names each one's service)."""
        messages = list(expl.warnings)
        messages += (s.warning for s in expl.steps if s.warning)
        return expl.fate, _decider(expl), tuple(messages)

    def count(self, entry: tuple[Fate, Decider, tuple[str, ...]], n: int = 1) -> None:
        """Count ``n`` packets of one path from its ``entry``."""
        fate, decider, messages = entry
        self.packets += n
        self.fates[fate] += n
        self.deciding[self._grouped(decider)] += n
        if messages:
            self.packets_with_warnings += n
            for m in messages:
                self.warn(m, n)

    def _grouped(self, d: Decider) -> Decider:
        """The decider ``d`` is counted under: one per rule and owner (kind and name), whose owner keeps
        the detail and evidence all its packets agree on (a service's endpoints: "endpoint 10.244.1.5:8080"
        and "…7:8080" are one owner, without the endpoint), so that no two rows read the same."""
        o = d.owner
        if o is None:
            return d
        key = (*_plain(d), o.kind, o.name, o.specific)
        got = self._groups.get(key)
        if got is None:
            self._groups[key] = d
            return d
        g = got.owner
        if g is None or g == o:
            return got
        kept = Owner(g.kind, g.name, g.detail if g.detail == o.detail else "",
                     g.evidence if g.evidence == o.evidence else "", g.specific)
        if kept == g:
            return got
        new = got._replace(owner=kept)
        self.deciding[new] += self.deciding.pop(got, 0)
        self._groups[key] = new
        return new

    def warn(self, message: str, count: int = 1) -> None:
        """Count a warning that is not tied to one packet (or is, via ``add``)."""
        if message in self.warnings or len(self.warnings) < MAX_WARNINGS:
            self.warnings[message] += count
        else:
            self.warnings[OTHER_WARNINGS] += count

    def merge(self, other: Summary) -> None:
        """Add another summary's counts (from a worker process) to this one."""
        self.packets += other.packets
        self.fates.update(other.fates)
        for d, n in other.deciding.items():
            self.deciding[self._grouped(d)] += n
        self.skipped_lines += other.skipped_lines
        self.packets_with_warnings += other.packets_with_warnings
        for text, n in other.warnings.items():
            self.warn(text, n)

    def add_skipped(self, lines: int = 1) -> None:
        """Count input lines that were not understood and were skipped."""
        self.skipped_lines += lines

    def to_json(self) -> dict[str, Any]:
        """The summary as the ``summary`` object of the JSON document (docs/json-schema.md)."""
        return {
            "packets": self.packets,
            "skipped_lines": self.skipped_lines,
            "fates": {str(f): self.fates.get(f, 0) for f in Fate},
            "deciding": [{**_fields(d), "count": n, "owner": _as_json(decider_owner(d))}
                         for d, n in self.ranked()],
            "packets_with_warnings": self.packets_with_warnings,
            "warnings": [{"text": t, "count": n} for t, n in self.top_warnings()],
        }

    def ranked(self) -> list[tuple[Decider, int]]:
        """The deciders as every view shows them, most packets first; ties by place, so that the order
        does not depend on which packet came first (the parallel summary counts slices in the order they
        finish). A legacy decider's family stays only where the deciders show its table's name in two
        families (IPv4's and IPv6's filter:OUTPUT policy read alike otherwise)."""
        fams: dict[str | None, set[str]] = {}
        for d in self.deciding:
            if d.xtables is not None:
                fams.setdefault(d.table, set()).add(d.xtables)
        shown: Counter[Decider] = Counter()
        for d, n in self.deciding.items():
            if d.xtables is not None:
                d = d._replace(family=d.xtables) if len(fams[d.table]) > 1 else d._replace(xtables=None)
            shown[d] += n
        return sorted(shown.items(), key=lambda kv: (-kv[1], _order(kv[0])))

    def top_warnings(self, limit: int | None = None) -> list[tuple[str, int]]:
        return sorted(self.warnings.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


def decider_table(d: Decider) -> str:
    """The deciding table as every view names it: ``ip same`` where the path showed that name in two
    families (``Decider.family``), ``ip6tables filter`` where the summary holds a legacy table's name in
    two (``Summary.ranked``), else its name ("?" when unknown)."""
    table = d.table or "?"
    return table_label(table, d.family, (table,), legacy=d.xtables is not None)


def decider_owner(d: Decider) -> Owner | None:
    """Who decided: the owner the packet's explanation gave (``Decider.owner``), else the deciding
    rule's (or chain's, for a policy), from its names and text alone."""
    if d.action is None:
        return None
    if d.owner is not None:
        return d.owner
    rule = None if d.rule is None else Rule(d.table or "", d.chain or "", d.num or 0, d.rule)
    return owner_of(d.table, d.chain, rule)


def _fields(d: Decider) -> dict[str, Any]:
    """A decider's fields for JSON; its owner goes in as ``owner``, after ``count`` (docs/json-schema.md)."""
    out = d._asdict()
    del out["owner"], out["xtables"]
    if out["family"] is None:  # only where two families' tables share the name
        del out["family"]
    return out


def _as_json(o: Owner | None) -> dict[str, Any] | None:
    return None if o is None else o.as_json()


def _plain(d: Decider) -> tuple[Any, ...]:
    """A decider's fields but its owner."""
    return d[:-2] + d[-1:]


def _order(d: Decider) -> tuple[Any, ...]:
    """A total order on deciders: by action, table, chain, number …, owner; a missing field last."""
    return (*((x is None, x if x is not None else "") for x in _plain(d)), (d.owner is None, str(d.owner or "")))


def _decider(expl: Explanation) -> Decider:
    v = expl.verdict
    if v is None:
        return Decider(None, None, None, None, None, None, expl.last_seen)
    owner = deciding_owner(expl)
    family = v.family if v.table in expl.shared else None
    xt = v.legacy_family if family is None else None
    if v.rule is not None:
        num = v.num if v.num is not None else v.rule.num
        return Decider(v.action, v.table, v.chain, num, v.rule.text, None, None, family, owner, xt)
    if v.kind is StepKind.RULE:  # a rule the ruleset does not hold ("rule ?"), not the chain's policy
        return Decider(v.action, v.table, v.chain, v.num, None, None, None, family, owner, xt)
    policy = next(
        (s.policy for s in reversed(expl.steps) if s.policy and s.table == v.table and s.chain == v.chain),
        v.action.upper(),
    )
    return Decider(v.action, v.table, v.chain, v.num, None, policy, None, family, owner, xt)
