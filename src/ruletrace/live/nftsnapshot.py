"""Whole-ruleset snapshots of a native nf_tables host, the tables of ruletrace sessions left out.

The ruleset is read with ``nft -a -s list ruleset`` (every table, every family, rule handles,
no counter values): the steps get the rule text the listing shows (what ``nft monitor trace``
prints) and the rule's position in its chain, found by its handle (handles are per table).
A listing the text reader cannot read falls back to ``nft -j`` of the same ruleset. The tables
iptables-nft made (``ip``/``ip6`` filter, nat, mangle, raw, security) are read with
``iptables-nft-save`` / ``ip6tables-nft-save`` too and paired with it (``rulesets/xt_save.py``):
their steps show the iptables rule and its number, as on a legacy host. The session's own table
is installed by ``nftnative.py``.
"""

from __future__ import annotations

import json

from ..errors import RuletraceError
from ..model import Ruleset, nft_rule_key
from .nftnative import is_own_table, run_nft


def list_ruleset() -> str:
    """``nft -a -s list ruleset`` (every table, handles, no counter values), sessions' tables left out
    (``own_tables_in`` of the unstripped text names them)."""
    p = run_nft("-a", "-s", "list", "ruleset")  # -s: no counter values (they would be stale at once)
    if p is None:
        raise RuletraceError("nft -a -s list ruleset: nft not found or timed out (the nft tool is needed "
                             "to read native nf_tables rules)")
    if p.returncode != 0:
        raise RuletraceError(f"nft -a -s list ruleset failed: {p.stderr.strip()[:300]}")
    return strip_own_tables(p.stdout)


def strip_own_tables(text: str) -> str:
    """The listing without the tables of ruletrace sessions (top-level ``table … {`` … ``}``)."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        if not skipping and line.startswith("table "):
            words = line.split()
            if len(words) >= 3 and is_own_table(words[2]):
                skipping = True
                continue
        if skipping:
            if line.startswith("}"):
                skipping = False
            continue
        out.append(line)
    return "\n".join(out) + ("\n" if out else "")


def own_tables_in(text: str) -> list[str]:
    """Session tables named in an unstripped listing."""
    return [w[2] for w in (line.split() for line in text.splitlines() if line.startswith("table "))
            if len(w) >= 3 and is_own_table(w[2])]


def parse_snapshot(text: str) -> dict[str, Ruleset]:
    """family -> Ruleset of a listing (an empty ruleset gives nothing)."""
    if not text.strip():
        return {}
    from ..rulesets import load_rulesets

    return {str(rs.family): rs for rs in load_rulesets("nft -a -s list ruleset (live)", text=text)}


def read_snapshot(text: str) -> tuple[dict[str, Ruleset], str | None]:
    """``parse_snapshot``, and when the text listing cannot be read, ``nft -j`` of the same
    ruleset; when neither can, no ruleset (steps keep the kernel's verdicts, without rule text and
    positions) and the reason why, to be said once."""
    try:
        got = parse_snapshot(text)
        pair_iptables_nft(got)
        return got, None
    except RuletraceError as e:
        first = str(e)
    p = run_nft("-a", "-s", "-j", "list", "ruleset")
    if p is not None and p.returncode == 0:
        try:
            items = json.loads(p.stdout)
            kept = [x for x in items.get("nftables", []) if not own_item(x)]
            from ..rulesets import load_rulesets

            loaded = load_rulesets("nft -a -s -j list ruleset (live)", text=json.dumps({"nftables": kept}))
            by_family = {str(rs.family): rs for rs in loaded}
            pair_iptables_nft(by_family)
            return by_family, f"the text listing could not be read ({first}): read nft -j"
        except (ValueError, AttributeError, RuletraceError):
            pass
    return {}, (f"the nf_tables ruleset could not be read ({first}): steps show the kernel's verdicts "
                "without rule text or positions")


XT_TABLES = frozenset({"filter", "nat", "mangle", "raw", "security"})  # the tables iptables-nft makes


def pair_iptables_nft(rulesets: dict[str, Ruleset]) -> list[str]:
    """The ip/ip6 tables iptables-nft made take their ``iptables-nft-save`` lines (by position,
    ``xt_save.pair_save``; a save that does not fit a table, e.g. read across a change, leaves it
    in nft syntax); returns ``family table`` of each table paired."""
    from ..rulesets import load_ruleset
    from ..rulesets.xt_save import pair_save
    from . import backend as be

    out = []
    for fam in ("ipv4", "ipv6"):
        rs = rulesets.get(fam)
        if rs is None or not XT_TABLES & set(rs.tables):
            continue
        try:
            text = be.save(be.NFT, fam)
        except RuletraceError:
            continue
        if text.strip():
            name = be.tool(be.NFT, fam, save=True)
            try:
                saved = load_ruleset(f"{name} (live)", text=text)
            except RuletraceError:  # only tables nft wrote ("# Table `filter' is incompatible, use 'nft'
                continue  # tool."): they keep their nft syntax
            out += [f"{fam} {t}" for t in pair_save(rs, saved)]
    return out


def own_item(item: object) -> bool:
    """An ``nft -j`` item of a session's own table."""
    if not isinstance(item, dict):
        return False
    for obj in item.values():
        if isinstance(obj, dict):
            name = obj.get("name") if "table" not in obj else obj.get("table")
            if isinstance(name, str) and is_own_table(name):
                return True
    return False


def table_counts(rulesets: dict[str, Ruleset]) -> list[tuple[str, str, int, int]]:
    """``(family, table, chains, rules)`` per table of a parsed listing."""
    return [(fam, t, len(chains), sum(len(c.rules) for c in chains.values()))
            for fam, rs in sorted(rulesets.items()) for t, chains in rs.tables.items()]


def _chain_keys(rulesets: dict[str, Ruleset]) -> dict[tuple[str, str, str], list[str]]:
    """(family, table, chain) -> what a change would show: hook, priority, policy, rule text + handle."""
    out: dict[tuple[str, str, str], list[str]] = {}
    for fam, rs in rulesets.items():
        for t, chains in rs.tables.items():
            for name, c in chains.items():
                head = f"{c.type} {c.hook} {c.priority} {c.policy}" if c.hook else ""
                # (nft's text even where a save line was paired in: a pairing that fails once is no change)
                out[(fam, t, name)] = [head] + [f"{nft_rule_key(r.listed or r.text)} #{r.handle}" for r in c.rules]
        for key, body in sorted(rs.sets.items()):
            out[(fam, key[0], "@" + key[1])] = [str(body)]
    return out


def changes(old: dict[str, Ruleset], new: dict[str, Ruleset]) -> list[str]:
    """``family table:chain +A -R`` per chain whose rules (or base chain setting) changed; [] when
    the rulesets are the same (counters aside)."""
    a, b = _chain_keys(old), _chain_keys(new)
    out = []
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key), b.get(key)
        if ra == rb:
            continue
        where = f"{key[0]} {key[1]}:{key[2]}"
        if ra is None or rb is None:
            out.append(f"{where} {'added' if ra is None else 'removed'}")
            continue
        added = len([r for r in rb[1:] if r not in ra[1:]])
        removed = len([r for r in ra[1:] if r not in rb[1:]])
        extra = " (base chain changed)" if ra[0] != rb[0] else " (order changed)" if not added and not removed else ""
        out.append(f"{where} +{added} -{removed}{extra}")
    return out
