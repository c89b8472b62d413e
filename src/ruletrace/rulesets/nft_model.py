"""The one place nf_tables rulesets become the model: ``nft_text`` and ``nft_json`` feed a Builder.

One ``Ruleset`` per nft family (``ip`` -> family "ipv4", ``ip6`` -> "ipv6", ``inet``, ``arp``,
``bridge``, ``netdev`` keep their names): tables of different families may share a name. A
rule's target, goto flag, verdict map and counters are read from its nft text, whichever front
end produced it, so the text reader and the JSON reader cannot disagree on them.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from typing import Any

from ..errors import RuletraceError
from ..fields import bounded_int
from ..model import Chain, NftSet, Origin, Rule, Ruleset

# nft's family words -> the family names rulesets and events carry ("ipv4" as iptables' rulesets say it),
# and back (``table ip filter``): the one home of both
FAMILIES = {"ip": "ipv4", "ip6": "ipv6", "inet": "inet", "arp": "arp", "bridge": "bridge", "netdev": "netdev"}
NFT_WORDS = {ours: word for word, ours in FAMILIES.items()}
# a legacy xtables table by its family, in the tools' own words (never nft's: ``ip filter`` is the nf_tables
# table on a mixed host)
XTABLES_WORDS = {"ipv4": "iptables", "ipv6": "ip6tables", "arp": "arptables", "bridge": "ebtables"}


def shared_tables(events: Iterable[Any]) -> frozenset[str]:
    """The table names a packet's path shows in two or more families (``table ip filter`` and
    ``table inet filter`` on one path): each such table is named with its family (``table_label``)."""
    first: dict[str, str] = {}
    shared: set[str] = set()
    for ev in events:
        fam = ev.family if getattr(ev, "nftables", False) else None  # a legacy xtables step: not an nft table
        if fam is None:
            continue
        seen = first.setdefault(ev.table, fam)
        if seen != fam:
            shared.add(ev.table)
    return frozenset(shared)


def shared_in_rulesets(rulesets: Iterable[Ruleset]) -> frozenset[str]:
    """The table names nf_tables listings give two or more families (``table inet same``, ``table ip
    same``; or ``inet filter`` beside iptables-nft's ``filter``): named with their family on every
    packet's path, as the path shows one table or both. Legacy xtables listings do not count (their
    steps are never named so): iptables-save's and ip6tables-save's filter stay ``filter``."""
    families: dict[str, set[str]] = {}
    for rs in rulesets:
        if rs.family is None or not is_nftables(rs):
            continue
        for t in rs.tables:
            families.setdefault(t, set()).add(rs.family)
    return frozenset(t for t, fams in families.items() if len(fams) > 1)


def is_nftables(rs: Ruleset) -> bool:
    """A listing of nf_tables tables: nft's own, or iptables-nft-save's (its header says nf_tables)."""
    return rs.format.startswith("nft") or rs.backend == "nft"


def table_label(table: str, family: str | None, shared: Container[str], *, legacy: bool = False) -> str:
    """A table as a path shows it: its name, or, where the path shows that name in two families,
    with the family in nft's words (``ip filter``, ``inet filter``), the one rule for every view;
    a ``legacy`` xtables table in its tool's (``ip6tables filter``: a summary over IPv4 and IPv6 packets)."""
    if family is None or table not in shared:
        return table
    if legacy:
        return f"{XTABLES_WORDS.get(family, family)} {table}"
    return f"{NFT_WORDS.get(family, family)} {table}"
HOOKS = ("prerouting", "input", "forward", "output", "postrouting", "ingress", "egress")
CHAIN_TYPES = ("filter", "nat", "route")
# standard priority names, nft(8) "CHAINS": (value, hooks where valid; empty = any)
_PRIO_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
_BRIDGE_PRIO_NAMES = {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300}
_PRIO_EXPR = re.compile(r"([a-z]+)(?:\s*([+-])\s*(\d+))?$")
POLICIES = {"accept": "ACCEPT", "drop": "DROP"}
# terminal statements -> the model's target words
_VERDICTS = {"accept": "ACCEPT", "drop": "DROP", "reject": "REJECT", "return": "RETURN", "queue": "QUEUE",
             "dnat": "DNAT", "snat": "SNAT", "masquerade": "MASQUERADE", "redirect": "REDIRECT"}
# words after which the next token is a value, never a statement (``meta mark set …``)
_VALUE_OF = frozenset({"comment", "prefix", "set", "to", "name", "with", "type", "map", "vmap", "queue",
                       "status"})  # ct status dnat: a match, not the dnat statement
_RULE_TOKEN = re.compile(r'"[^"]*"?|[{}]|[^\s{}"]+')


def rule_tokens(text: str) -> list[str]:
    """An nft rule's tokens: quoted strings whole, braces apart, other runs of non-blank characters."""
    return _RULE_TOKEN.findall(text)


def priority_value(text: str | int, family: str, hook: str | None) -> int | None:
    """``filter``, ``dstnat - 10``, ``-150`` -> the number; None when it is neither."""
    if isinstance(text, int):
        return text
    t = text.strip()
    n = bounded_int(t)
    if n is not None:
        return n
    m = _PRIO_EXPR.match(t)
    if m is None:
        return None
    names = _BRIDGE_PRIO_NAMES if family == "bridge" else _PRIO_NAMES
    base = names.get(m[1])
    if base is None:
        return None
    if m[2]:
        off = bounded_int(m[3])
        if off is None:
            return None
        base += off if m[2] == "+" else -off
    return base


def rule_facts(text: str) -> tuple[str | None, bool, str | None, tuple[int, int] | None]:
    """(target, goto, vmap, counters) of an nft rule's text; braces and quotes are not looked into."""
    target: str | None = None
    goto = False
    vmap: str | None = None
    counters: tuple[int, int] | None = None
    toks = _RULE_TOKEN.findall(text)
    depth = 0
    n = len(toks)
    prev = ""
    for i, t in enumerate(toks):
        if t == "{":
            depth += 1
        elif t == "}":
            depth -= 1
        elif depth == 0 and prev not in _VALUE_OF:
            if t in ("jump", "goto") and i + 1 < n and target is None:
                target, goto = toks[i + 1], t == "goto"
            elif t == "xt" and toks[i + 1 : i + 2] == ["target"] and i + 2 < n and target is None:
                target = toks[i + 2].strip('"')  # iptables-nft placeholder: xt target "MASQUERADE"
            elif t in _VERDICTS and target is None:
                target = _VERDICTS[t]
            elif t == "vmap" and vmap is None and i + 1 < n:
                if toks[i + 1] == "{":
                    j, d = i + 1, 0
                    while j < n:
                        d += toks[j] == "{"
                        d -= toks[j] == "}"
                        if d == 0:
                            break
                        j += 1
                    vmap = " ".join(toks[i + 1 : j + 1])
                else:
                    vmap = toks[i + 1]
            elif t == "counter" and toks[i + 1 : i + 2] == ["packets"] and i + 4 < n and toks[i + 3] == "bytes":
                p, b = bounded_int(toks[i + 2]), bounded_int(toks[i + 4])
                if p is not None and b is not None:
                    counters = p, b
        prev = t if depth == 0 else ""
    return target, goto, vmap, counters


class Builder:
    """Collects tables, chains, rules, sets and objects in listing order; ``finish`` gives the rulesets."""

    def __init__(self, origin: Origin, fmt: str) -> None:
        self.origin = origin
        self.format = fmt
        self._rs: dict[str, Ruleset] = {}  # nft family -> ruleset, in order of first appearance
        self._reg = 0
        self.warnings: list[str] = []

    def ruleset(self, family: str) -> Ruleset:
        rs = self._rs.get(family)
        if rs is None:
            rs = self._rs[family] = Ruleset(family=FAMILIES.get(family, family), origin=self.origin,
                                             format=self.format)
        return rs

    def table(self, family: str, name: str) -> dict[str, Chain]:
        return self.ruleset(family).tables.setdefault(name, {})

    def chain(
        self,
        family: str,
        table: str,
        name: str,
        *,
        hook: str | None = None,
        type: str | None = None,
        priority: str | int | None = None,
        devices: tuple[str, ...] = (),
        policy: str | None = None,
        handle: int | None = None,
        comment: str | None = None,
        origin: Origin | None = None,
    ) -> Chain:
        chains = self.table(family, table)
        c = chains.get(name)
        if c is None:
            c = chains[name] = Chain(table, name, origin=origin)
            self._reg += 1
            c.reg = self._reg
        if hook is not None:
            c.hook = hook.lower()
            c.type = type
            prio = priority_value(priority, family, c.hook) if priority is not None else None
            if prio is None and priority is not None:
                raise RuletraceError(f"cannot read chain priority {priority!r}", origin=origin or self.origin)
            c.priority = prio
            c.policy = POLICIES.get((policy or "accept").lower(), (policy or "").upper())
            c.devices = devices
        if handle is not None:
            c.handle = handle
        if comment is not None:
            c.comment = comment
        return c

    def rule(self, family: str, table: str, chain: str, text: str, *, handle: int | None = None,
             origin: Origin | None = None) -> Rule:
        rs = self.ruleset(family)
        c = rs.tables.get(table, {}).get(chain) or self.chain(family, table, chain, origin=origin)
        target, goto, vmap, counters = rule_facts(text)
        r = Rule(table, chain, len(c.rules) + 1, text, target=target, goto=goto, handle=handle,
                 origin=origin, counters=counters, vmap=vmap)
        c.rules.append(r)
        if handle is not None:
            rs.handles[(table, chain, handle)] = r
        return r

    def set(self, family: str, s: NftSet) -> None:
        self.table(family, s.table)
        self.ruleset(family).sets[(s.table, s.name)] = s

    def object(self, family: str, table: str, kind: str, name: str, body: str) -> None:
        self.table(family, table)
        self.ruleset(family).objects[(table, kind, name)] = body

    def flowtable(self, family: str, table: str, name: str, body: str) -> None:
        self.table(family, table)
        self.ruleset(family).flowtables[(table, name)] = body

    def finish(self) -> list[Ruleset]:
        out = list(self._rs.values())
        if out and self.warnings:
            out[0].warnings.extend(self.warnings)
        return out
