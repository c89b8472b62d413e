"""iptables-nft's tables in an nf_tables listing, paired with their ``iptables-nft-save`` lines.

iptables-nft keeps one nf_tables rule per iptables rule, in the same order: rule n of a chain
in ``nft list ruleset`` (or ``nft -j``) *is* line n of that chain in ``iptables-nft-save``. This
is the one place that rule is applied to a listed ruleset (``take_save_line``); the live
iptables-nft session applies it from the other side (``live/nftrace.attach_handles``: handles of
``nft -j`` onto the save's rules, by the same position).

``pair_save`` does it for a host with native tables too: each table of the listing that the
save describes (the same chains, the same number of rules in each, no rule whose verdict
disagrees) takes the save's text, target and goto rule by rule, and keeps the listing's handle,
hook, priority and policy. A rule's nft rendering stays in ``Rule.listed`` (what ``nft monitor
trace`` prints for it). Tables the save does not describe (native ones, or an older save) are
left as listed.
"""

from __future__ import annotations

from ..model import Rule, Ruleset

# verdicts both renderings name the same way (nft_model's target words and iptables' -j names)
_VERDICTS = frozenset({"ACCEPT", "DROP", "RETURN", "REJECT", "DNAT", "SNAT", "MASQUERADE", "REDIRECT"})


def take_save_line(rule: Rule, save: Ruleset) -> bool:
    """Rule ``num`` of the same chain in the save stands for this listed rule: its text, target
    and goto (the listing's text kept in ``listed``). False when the save has no such rule."""
    other = save.rule(rule.table, rule.chain, rule.num)
    if other is None:
        return False
    if rule.listed is None and rule.text != other.text:
        rule.listed = rule.text
    rule.text, rule.target, rule.goto = other.text, other.target, other.goto
    return True


def _agree(listed: Rule, saved: Rule, chains: set[str]) -> bool:
    """Nothing tells the two apart: where both name a verdict or a chain to jump to, it is the same."""
    a, b = listed.target, saved.target
    known = _VERDICTS | chains
    if a in known and b in known:
        return a == b and (a not in chains or listed.goto == saved.goto)
    return True


def fitting_tables(listed: Ruleset, save: Ruleset) -> list[str]:
    """Tables of the listing that the save describes rule for rule (see the module's doc)."""
    if save.family not in (None, listed.family) or listed.family not in ("ipv4", "ipv6"):
        return []
    out = []
    for name, chains in listed.tables.items():
        saved = save.tables.get(name)
        if not saved or not any(c.rules for c in chains.values()):
            continue
        names = set(saved)
        if all(cname in saved and len(c.rules) == len(saved[cname].rules)
               and all(_agree(r, s, names) for r, s in zip(c.rules, saved[cname].rules))
               for cname, c in chains.items()):
            out.append(name)
    return out


def pair_save(listed: Ruleset, save: Ruleset) -> list[str]:
    """Give the rules of every table the save describes their save lines; the tables paired."""
    tables = fitting_tables(listed, save)
    for name in tables:
        for chain in listed.tables[name].values():
            for rule in chain.rules:
                take_save_line(rule, save)
    return tables
