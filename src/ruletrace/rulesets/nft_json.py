"""``nft -j list ruleset`` (libnftables JSON, schema 1): tables and chains of any family and priority.

Spec: libnftables-json(5). Each rule's ``text`` is rebuilt in nft syntax from its ``expr`` list
where the expression kinds are known, else it is the compact JSON of the expression list.
``Rule.num`` is the 1-based position in its chain (what a TRACE step's number means) and
``Ruleset.handles`` maps ``(table, chain, handle)`` to the rule.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import RuletraceError
from ..model import Chain, Origin, Rule, Ruleset

FAMILIES = {"ip": "ipv4", "ip6": "ipv6"}
# base chain policies as nft prints them -> the iptables words the model uses
POLICIES = {"accept": "ACCEPT", "drop": "DROP"}
VERDICTS = ("accept", "drop", "continue", "return", "queue")


def parse(text: str, *, origin: Origin, family: str | None = None) -> Ruleset:
    """Read ``nft -j list ruleset``; ``family`` ("ip", "ip6", "inet", …) keeps only that family's tables.

    Tables of different families with the same name (iptables-nft makes ``ip filter`` and
    ``ip6 filter``) cannot share one Ruleset: without ``family`` the first family listed wins and a
    warning says which tables were left out.
    """
    try:
        doc = json.loads(text)
        items = doc["nftables"]
        if not isinstance(items, list):
            raise TypeError("'nftables' is not a list")
    except RecursionError:
        raise RuletraceError("not `nft -j list ruleset` output: nested too deeply", origin=origin) from None
    except (ValueError, KeyError, TypeError) as e:
        raise RuletraceError(f"not `nft -j list ruleset` output: {e}", origin=origin) from e
    rs = Ruleset(family=None, origin=origin, format="nft-json")
    table_family: dict[str, str] = {}
    skipped: set[str] = set()
    damaged: list[int] = []  # items of rules whose expressions could not be read
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict) or len(item) != 1:
            raise RuletraceError(f"item {i}: expected one object per ruleset element", origin=origin)
        (kind, obj), = item.items()
        if kind not in ("table", "chain", "rule"):
            continue  # metainfo, set, map, flowtable, counter, …
        try:
            fam, table = obj["family"], obj["table"] if kind != "table" else obj["name"]
        except (KeyError, TypeError) as e:
            raise RuletraceError(f"item {i}: {kind} without {e}", origin=origin) from e
        if not isinstance(fam, str) or not isinstance(table, str):
            raise RuletraceError(f"item {i}: {kind} whose family or table is not a name", origin=origin)
        if family is not None and fam != family:
            continue
        have = table_family.setdefault(table, fam)
        if have != fam:
            skipped.add(f"{fam} {table}")
            continue
        if kind == "table":
            rs.tables.setdefault(table, {})
        elif kind == "chain":
            name = obj.get("name")
            if not isinstance(name, str):
                raise RuletraceError(f"item {i}: chain without a name", origin=origin)
            pol = obj.get("policy", "accept")
            policy = POLICIES.get(pol, str(pol).upper()) if "hook" in obj and isinstance(pol, str) else None
            rs.tables.setdefault(table, {})[name] = Chain(table, name, policy=policy, origin=origin)
        else:
            cname = obj.get("chain")
            if not isinstance(cname, str):
                raise RuletraceError(f"item {i}: rule without a chain name", origin=origin)
            chain = rs.tables.setdefault(table, {}).get(cname)
            if chain is None:
                chain = rs.tables[table][cname] = Chain(table, cname, origin=origin)
            exprs = obj.get("expr", [])
            try:
                if not isinstance(exprs, list):
                    raise TypeError("'expr' is not a list")
                target, goto = _target(exprs)
                counters = _counters(exprs)
                text = rule_text(exprs)
            except (KeyError, TypeError, ValueError, AttributeError, IndexError):
                # one damaged rule (null expr, a statement without a key) does not reject the
                # ruleset: it keeps its place (numbering) as unparsed text, and is counted
                damaged.append(i)
                target, goto, counters = None, False, None
                text = json.dumps(exprs, separators=(",", ":"))
            handle = obj.get("handle")
            rule = Rule(
                table,
                cname,
                len(chain.rules) + 1,
                text,
                target=target,
                goto=goto,
                handle=handle if isinstance(handle, int) and not isinstance(handle, bool) else None,
                origin=origin,
                counters=counters,
            )
            chain.rules.append(rule)
            if rule.handle is not None:
                rs.handles[(table, cname, rule.handle)] = rule
    fams = set(table_family.values())
    if len(fams) == 1:
        rs.family = FAMILIES.get(fams.pop())
    elif fams <= {"ip", "inet"} and "ip" in fams:
        rs.family = "ipv4"
    if damaged:
        rs.warnings.append(f"{origin.path}: {len(damaged)} rule(s) with unreadable expressions kept as "
                           f"unparsed text (first: item {damaged[0]})")
    if skipped:
        rs.warnings.append(f"left out (same table name in another family; pick one with family=): "
                           f"{', '.join(sorted(skipped))}")
    return rs


def _target(exprs: list[Any]) -> tuple[str | None, bool]:
    for e in exprs:
        if not isinstance(e, dict):
            continue
        for k, v in e.items():
            if k == "jump":
                return v.get("target"), False
            if k == "goto":
                return v.get("target"), True
            if k in VERDICTS:
                return k.upper(), False
            if k == "reject":
                return "REJECT", False
            if k in ("snat", "dnat", "masquerade", "redirect"):
                return k.upper(), False
            if k == "xt" and isinstance(v, dict) and v.get("type") == "target":
                return v.get("name"), False
    return None, False


def _counters(exprs: list[Any]) -> tuple[int, int] | None:
    for e in exprs:
        if isinstance(e, dict) and isinstance(e.get("counter"), dict):
            c = e["counter"]
            p, b = c.get("packets", 0), c.get("bytes", 0)
            if not (isinstance(p, int) and isinstance(b, int)):
                raise TypeError("counter values are not numbers")
            return p, b
    return None


def rule_text(exprs: list[Any]) -> str:
    """nft syntax for a rule's expression list, or its compact JSON where a part is not known."""
    try:
        return " ".join(_stmt(e) for e in exprs)
    except _Unknown:
        return json.dumps(exprs, separators=(",", ":"))


class _Unknown(Exception):
    pass


def _stmt(e: Any) -> str:
    if not isinstance(e, dict) or len(e) != 1:
        raise _Unknown
    (k, v), = e.items()
    if k == "match":
        op = v.get("op", "==")
        left, right = _expr(v["left"]), _expr(v["right"])
        return f"{left} {right}" if op in ("==", "in") else f"{left} {op} {right}"
    if k == "counter":
        return "counter packets {} bytes {}".format(v.get("packets", 0), v.get("bytes", 0)) if v else "counter"
    if k in VERDICTS:
        return k
    if k in ("jump", "goto"):
        return f"{k} {v['target']}"
    if k == "mangle":
        return f"{_expr(v['key'])} set {_expr(v['value'])}"
    if k == "log":
        return "log" + "".join(f' {a} "{b}"' if a == "prefix" else f" {a} {b}" for a, b in (v or {}).items())
    if k == "reject":
        return "reject" if not v else "reject with {} {}".format(v.get("type", ""), _expr(v.get("expr", ""))).strip()
    if k in ("snat", "dnat"):
        to = _expr(v["addr"]) if "addr" in v else ""
        if "port" in v:
            to += f":{_expr(v['port'])}"
        return f"{k} to {to}"
    if k in ("masquerade", "redirect"):
        return k + (f" to :{_expr(v['port'])}" if v and "port" in v else "")
    if k == "xt":
        return f"xt {v.get('type', '')} {v.get('name', '')}".strip()
    if k == "notrack":
        return "notrack"
    raise _Unknown


def _expr(x: Any) -> str:
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, (int, str)):
        return str(x)
    if isinstance(x, list):
        return " . ".join(_expr(y) for y in x)
    if not isinstance(x, dict) or len(x) != 1:
        raise _Unknown
    (k, v), = x.items()
    if k == "payload":
        if "protocol" in v:
            return f"{v['protocol']} {v['field']}"
        return "@{},{},{}".format(v.get("base"), v.get("offset"), v.get("len"))
    if k == "meta":
        return f"meta {v['key']}"
    if k == "ct":
        return f"ct {v['key']}" if "dir" not in v else f"ct {v['dir']} {v['key']}"
    if k == "set":
        items = v if isinstance(v, list) else [v]
        return "{ " + ", ".join(_expr(i) for i in items) + " }"
    if k == "prefix":
        return f"{_expr(v['addr'])}/{v['len']}"
    if k == "range":
        return f"{_expr(v[0])}-{_expr(v[1])}"
    if k == "&":
        return " & ".join(_expr(i) for i in v)
    if k == "|":
        return " | ".join(_expr(i) for i in v)
    if k == "concat":
        return " . ".join(_expr(i) for i in v)
    if k == "fib":
        return "fib {} {}".format(" . ".join(v.get("flags", [])), v.get("result"))
    raise _Unknown
