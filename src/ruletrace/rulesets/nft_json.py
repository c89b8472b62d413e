"""``nft -j list ruleset`` (libnftables JSON, schema 1): the JSON front end of ``nft_model``.

Spec: libnftables-json(5). Gives one Ruleset per nft family, built by the same ``Builder`` as
``nft list ruleset`` text. Each rule's ``text`` is rendered in nft's own syntax from its ``expr``
list (``nft_render``); an expression kind it does not know makes that rule's text the compact
JSON of its expression list. ``Rule.num`` is the 1-based position in its chain and
``Ruleset.handles`` maps ``(table, chain, handle)`` to the rule (handles are per table).

iptables-nft rules whose matches or targets have no nft equivalent appear as ``xt`` placeholders
(``xt match "addrtype"``): given ``save`` (``iptables-save`` of the same host and family), such a
rule takes the text and target of the save's rule at the same position in the same chain.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import RuletraceError
from ..model import NftSet, Origin, Rule, Ruleset
from .nft_model import FAMILIES, Builder
from .nft_render import Unknown, element, render_rule, type_hint

_OBJECTS = ("counter", "quota", "limit", "ct helper", "ct timeout", "ct expectation", "secmark", "synproxy")


def parse(text: str, *, origin: Origin, save: Ruleset | None = None) -> list[Ruleset]:
    """Read ``nft -j list ruleset``: one Ruleset per family, in order of appearance."""
    try:
        doc = json.loads(text)
        items = doc["nftables"]
        if not isinstance(items, list):
            raise TypeError("'nftables' is not a list")
    except RecursionError:
        raise RuletraceError("not `nft -j list ruleset` output: nested too deeply", origin=origin) from None
    except (ValueError, KeyError, TypeError) as e:
        raise RuletraceError(f"not `nft -j list ruleset` output: {e}", origin=origin) from e
    b = Builder(origin, "nft-json")
    xt_total = xt_resolved = 0
    damaged: list[int] = []  # items of rules whose expressions could not be read
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict) or len(item) != 1:
            raise RuletraceError(f"item {i}: expected one object per ruleset element", origin=origin)
        (kind, obj), = item.items()
        if kind == "metainfo":
            continue
        if not isinstance(obj, dict):
            raise RuletraceError(f"item {i}: {kind} is not an object", origin=origin)
        try:
            fam = obj["family"]
            table = obj["name"] if kind == "table" else obj["table"]
        except KeyError as e:
            raise RuletraceError(f"item {i}: {kind} without {e}", origin=origin) from e
        if not isinstance(fam, str) or not isinstance(table, str):
            raise RuletraceError(f"item {i}: {kind} whose family or table is not a name", origin=origin)
        if fam not in FAMILIES or not isinstance(table, str):
            raise RuletraceError(f"item {i}: unknown family {fam!r}", origin=origin)
        if kind == "table":
            b.table(fam, table)
        elif kind == "chain":
            name = obj.get("name")
            if not isinstance(name, str):
                raise RuletraceError(f"item {i}: chain without a name", origin=origin)
            dev = obj.get("dev")
            devices = tuple(dev) if isinstance(dev, list) else (dev,) if isinstance(dev, str) else ()
            if "hook" in obj:
                b.chain(fam, table, name, hook=str(obj["hook"]), type=obj.get("type"),
                        priority=obj.get("prio", 0), devices=devices, policy=obj.get("policy"),
                        handle=obj.get("handle"), comment=obj.get("comment"), origin=origin)
            else:
                b.chain(fam, table, name, handle=obj.get("handle"), comment=obj.get("comment"), origin=origin)
        elif kind == "rule":
            cname = obj.get("chain")
            if not isinstance(cname, str):
                raise RuletraceError(f"item {i}: rule without a chain", origin=origin)
            exprs = obj.get("expr", [])
            try:
                if not isinstance(exprs, list):
                    raise TypeError("'expr' is not a list")
                rtext = rule_text(exprs, fam, obj.get("comment"))
            except (KeyError, TypeError, ValueError, AttributeError, IndexError):
                # one damaged rule (null expr, a statement without a key) does not reject the
                # ruleset: it keeps its place (numbering) as unparsed text, and is counted
                damaged.append(i)
                rtext = json.dumps(exprs, separators=(",", ":"))
            handle = obj.get("handle")
            handle = handle if isinstance(handle, int) and not isinstance(handle, bool) else None
            r = b.rule(fam, table, cname, rtext, handle=handle, origin=origin)
            if "xt" in rtext and _has_xt(exprs):
                xt_total += 1
                if save is not None and _resolve_xt(r, save):
                    xt_resolved += 1
        elif kind in ("set", "map"):
            b.set(fam, _set(obj, kind, fam, origin))
        elif kind in _OBJECTS:
            body = {k: v for k, v in obj.items() if k not in ("family", "table", "name", "handle")}
            b.object(fam, table, kind, str(obj.get("name")), json.dumps(body, separators=(",", ":")))
        elif kind == "flowtable":
            body = {k: v for k, v in obj.items() if k not in ("family", "table", "name", "handle")}
            b.flowtable(fam, table, str(obj.get("name")), json.dumps(body, separators=(",", ":")))
        # anything else (a newer schema's element kind) is not part of the model
    if xt_total:
        how = (f"{xt_resolved} resolved from the save listing" if save is not None
               else "give the host's iptables-save listing to resolve them")
        b.warnings.append(f"{xt_total} rule(s) hold iptables-nft xt placeholders (their matches are not in "
                          f"the JSON): {how}")
    if damaged:
        b.warnings.append(f"{origin.path}: {len(damaged)} rule(s) with unreadable expressions kept as "
                          f"unparsed text (first: item {damaged[0]})")
    return b.finish()


def parse_family(text: str, *, origin: Origin, family: str | None = None,
                 save: Ruleset | None = None) -> Ruleset:
    """One family's Ruleset (nft name: "ip", "ip6", "inet", …); None: the first family listed.

    A warning names the families left out.
    """
    rulesets = parse(text, origin=origin, save=save)
    want = FAMILIES.get(family, family) if family is not None else None
    pick = next((rs for rs in rulesets if want is None or rs.family == want), None)
    if pick is None:
        raise RuletraceError(f"no {family} tables in this listing", origin=origin)
    others = sorted({f"{rs.family} ({', '.join(rs.tables)})" for rs in rulesets if rs is not pick})
    if others:
        pick.warnings.append(f"left out (other families; read them with load_rulesets): {', '.join(others)}")
    return pick


def rule_text(exprs: Any, family: str = "ip", comment: Any = None) -> str:
    """nft syntax for a rule's expression list, or its compact JSON where a part is not known."""
    try:
        return render_rule(exprs, family, comment)
    except Unknown:
        return json.dumps(exprs, separators=(",", ":"))


def _has_xt(exprs: Any) -> bool:
    return isinstance(exprs, list) and any(isinstance(e, dict) and "xt" in e for e in exprs)


def _resolve_xt(rule: Rule, save: Ruleset) -> bool:
    """The save's rule at the same place stands for an xt rule: its text and target (xt_save)."""
    from .xt_save import take_save_line

    return take_save_line(rule, save)


def _set(obj: dict[str, Any], kind: str, fam: str, origin: Origin) -> NftSet:
    def typ(t: Any) -> str:
        return " . ".join(map(str, t)) if isinstance(t, list) else str(t)

    s = NftSet(str(obj.get("table")), str(obj.get("name")), kind, key=typ(obj.get("type", "")),
               handle=obj.get("handle"), comment=obj.get("comment"), origin=origin)
    if kind == "map":
        s.data = typ(obj.get("map", ""))
        if s.data == "verdict":
            s.kind = "vmap"
    flags = obj.get("flags", [])
    s.flags = tuple(flags) if isinstance(flags, list) else (str(flags),)
    if "timeout" in obj:
        s.timeout = f"{obj['timeout']}s"
    elems = obj.get("elem", [])
    h, dh = type_hint(obj.get("type")), type_hint(obj.get("map"))
    s.elements = [_elem(e, h, dh) for e in elems] if isinstance(elems, list) else []
    return s


def _elem(e: Any, h: Any, dh: Any) -> str:
    try:
        return element(e, h, dh)
    except Unknown:
        return json.dumps(e, separators=(",", ":"))
