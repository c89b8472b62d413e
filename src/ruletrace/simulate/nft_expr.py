"""An nft rule's text -> the expressions the simulation runs, in order (parsed once, at compile time).

A rule is a tuple of items ``f(p, c) -> bool`` run in order, as nft_do_chain runs a rule's
expressions: a match that fails breaks the rule (NFT_BREAK: no step, next rule); a statement
(``meta mark set``, ``counter``, ``log``) does its effect and returns True. Then the rule's verdict:
fixed (``accept``, ``jump X``, a NAT statement's accept, ``reject``'s drop) or looked up in a
verdict map (a miss breaks the rule). An expression the simulator cannot evaluate is an item that
states so ("cannot evaluate …: assumed no match") and obeys ``--assume TABLE:CHAIN:NUM`` or
``--assume WORD`` (its first word).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model import Origin, Rule
from .nft_code import code_fn, const, embed
from .nft_selectors import selector
from .nft_sets import NSet, Unreadable, Where, cmp_fn, parse_rhs_list, parse_verdict, unknown_item
from .nft_stmts import statement
from .nft_values import split_tokens
from .semantics import CONTINUE

Item = Callable[[Any, Any], bool]
RELOPS = {"==": "==", "eq": "==", "!=": "!=", "ne": "!=", "<": "<", "lt": "<", ">": ">", "gt": ">",
          "<=": "<=", "le": "<=", ">=": ">=", "ge": ">="}
# words that start a statement or a verdict (end of an unknown expression)
STMT_WORDS = frozenset({"accept", "drop", "reject", "return", "jump", "goto", "queue", "continue", "counter",
                        "log", "limit", "quota", "dnat", "snat", "masquerade", "redirect", "notrack", "comment",
                        "flow", "synproxy", "tproxy", "dup", "fwd", "xt"})


class NRule:
    """A compiled nft rule: its items, then a fixed verdict or a verdict map."""

    __slots__ = ("rule", "items", "verdict", "vmap", "trace", "num")

    def __init__(self, rule: Rule, items: tuple[Item, ...], verdict: tuple[str, str | None, str],
                 vmap: Callable[[Any, Any], tuple[Any, ...] | None] | None, trace: bool) -> None:
        self.rule = rule
        self.num = rule.num
        self.items = items
        self.verdict = verdict  # (kind, chain, trace text)
        self.vmap = vmap
        self.trace = trace


def compile_nft_rule(rule: Rule, v6: bool, sets: dict[tuple[str, str], NSet | None],
                     objects: dict[tuple[str, str, str], str], chains: frozenset[str], linear: bool) -> NRule:
    """Parse a rule's text into items and a verdict."""
    toks = split_tokens(rule.text)
    if len(toks) >= 3 and toks[-3] == "#" and toks[-2] == "handle":
        toks = toks[:-3]
    w = Where(rule.table, rule.chain, rule.num, rule.text, rule.origin or Origin("nft"), v6, sets, linear, objects)
    items: list[Item] = []
    verdict: tuple[str, str | None, str] | None = None
    vmap = None
    trace = False
    i, n = 0, len(toks)
    while i < n:
        t = toks[i]
        if t in ("jump", "goto"):
            if i + 1 >= n:
                raise w.error(f"'{t}' without a chain")
            name = toks[i + 1].strip('"')
            if name not in chains:
                raise w.error(f"{t} {name}: no such chain in table {rule.table}")
            verdict = parse_verdict(f"{t} {name}", w)
            i += 2
            continue
        if t in ("accept", "drop", "return", "continue"):
            verdict = parse_verdict(t, w)
            i += 1
            continue
        if t in ("meta", "ct") or t in STMT_WORDS or (i + 2 < n and toks[i + 2] == "set") or (
                i + 4 < n and toks[i + 4] == "set"):
            r = statement(toks, i, w)
            if r is not None:
                i, item, v, tr = r
                if item is not None:
                    items.append(item)
                if v is not None:
                    verdict = v
                trace = trace or tr
                continue
        try:
            i, item, vm = _match(toks, i, w)
        except Unreadable:
            i, item, vm = _unknown(toks, i, w)
        if vm is not None:
            vmap = vm
        if item is not None:
            items.append(item)
    if verdict is None:
        verdict = (CONTINUE, None, "continue")
    for name in _verdict_chains(vmap):
        if name not in chains:
            raise w.error(f"verdict map jumps to {name}: no such chain in table {rule.table}")
    return NRule(rule, tuple(items), verdict, vmap, trace)


def _verdict_chains(vmap: Any) -> list[str]:
    return list(getattr(vmap, "chains", ()) or ())


def _match(toks: list[str], i: int, w: Where) -> tuple[int, Item | None, Any]:
    """One relational expression (or a verdict-map dispatch) from toks[i]."""
    start = i
    sel = selector(toks, i, w)
    if sel is None:
        return _unknown(toks, start, w)
    i, get, typ, text = sel
    n = len(toks)
    if i < n and toks[i] in ("&", "and") and i + 1 < n:
        mask, i = _mask(toks, i + 1, w, typ)
        k: list[Any] = []
        get = code_fn(f"None if (v := {embed(get, k)}) is None else v & {const(mask, k)}", tuple(k))
    if i < n and toks[i] == "vmap":
        if i + 1 >= n:
            raise w.error("'vmap' without a map")
        m, i = NSet.inline_or_named(toks, i + 1, w, typ, "verdict")
        return i, None, m.dispatch(get)
    op = "implicit"
    if i < n and toks[i] in RELOPS:
        op = RELOPS[toks[i]]
        i += 1
    if i >= n:
        raise w.error(f"expected a value after {text!r}")
    if toks[i] == "{" or toks[i].startswith("@"):
        s, i = NSet.inline_or_named(toks, i, w, typ, None)
        hit = s.contains_fn(get)
        if op == "!=":
            k = []
            return i, code_fn(f"{embed(get, k)} is not None and not {embed(hit, k)}", tuple(k)), None
        return i, hit, None
    comps, i = parse_rhs_list(toks, i, w, typ)
    return i, cmp_fn(get, typ, op, comps, w), None


def _mask(toks: list[str], i: int, w: Where, typ: Any) -> tuple[int, int]:
    """``0xff``, ``syn``, ``(syn | ack)`` after ``&``: the mask, and the index after it."""
    if toks[i] != "(":
        return parse_rhs_list(toks, i, w, typ)[0][0][0][0], i + 1
    mask = 0
    i += 1
    while i < len(toks) and toks[i] != ")":
        if toks[i] not in ("|", "or"):
            mask |= parse_rhs_list(toks, i, w, typ)[0][0][0][0]
        i += 1
    return mask, i + 1


def _int(text: str, w: Where) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise w.error(f"expected a number, found {text!r}") from None


def _unknown(toks: list[str], i: int, w: Where) -> tuple[int, Item, None]:
    """An expression the simulator cannot read: up to the next statement word, assumed not to match."""
    j = i + 1
    depth = 0
    while j < len(toks):
        t = toks[j]
        depth += (t == "{") - (t == "}")
        if depth == 0 and (t in STMT_WORDS or t in ("meta", "ct", "ip", "ip6", "tcp", "udp", "th", "iifname",
                                                     "oifname", "iif", "oif", "fib")) and j > i + 1:
            break
        j += 1
    return j, unknown_item(" ".join(toks[i:j]), toks[i], w), None


