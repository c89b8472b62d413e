"""nft selectors: which value of the packet an expression reads, compiled to a getter.

``ip saddr``, ``meta mark``, ``ct original ip daddr``, ``@th,16,16``, ``fib daddr type``,
``numgen``/``jhash`` (a branch the simulator records), and concatenations ``a . b``. A getter is
``get(p, c)`` over the simulated packet and its context; comparisons, sets and maps over the
values it returns are in ``nft_sets.py``.
"""

from __future__ import annotations

from typing import Any, Protocol

from .nft_code import code_fn, embed
from .nft_values import BARE_META, FIB_TYPES, RAW_TH, SELECTORS
from .state import Branch


class RuleAt(Protocol):
    """What a selector needs of the rule being compiled (``nft_sets.Where`` is one)."""

    table: str
    chain: str
    num: int
    text: str

    @property
    def key(self) -> str: ...


def selector(toks: list[str], i: int, w: RuleAt) -> tuple[int, Any, Any, str] | None:
    """A selector (or a concatenation ``a . b``) at toks[i]: (next index, getter, type, text); None if unknown."""
    one = one_selector(toks, i, w)
    if one is None:
        return None
    j, get, typ = one
    if j < len(toks) and toks[j] == ".":
        gets, typs = [get], [typ]
        while j < len(toks) and toks[j] == ".":
            nxt = one_selector(toks, j + 1, w)
            if nxt is None:
                return None
            j, g, t = nxt
            gets.append(g)
            typs.append(t)
        gs = tuple(gets)
        concat = _concat(gs)
        concat.__dict__["concat"] = True  # it returns a tuple (nft_sets keys it as is)
        return j, concat, tuple(typs), " ".join(toks[i:j])
    return j, get, typ, " ".join(toks[i:j])


def _concat(gs: tuple[Any, ...]) -> Any:
    """The getter of ``a . b . c``: the tuple of the parts' values; None when one of them is None."""
    consts: list[Any] = []
    parts = ", ".join(embed(g, consts) for g in gs)
    return code_fn(f"None if None in (t := ({parts},)) else t", tuple(consts))


def one_selector(toks: list[str], i: int, w: RuleAt) -> tuple[int, Any, str] | None:
    n = len(toks)
    t = toks[i]
    nxt = toks[i + 1] if i + 1 < n else ""
    if t in BARE_META:
        return i + 1, SELECTORS[("meta", t)][0], SELECTORS[("meta", t)][1]
    if t == "ct" and nxt in ("original", "reply"):
        j = i + 2
        if j < n and toks[j] in ("ip", "ip6"):
            j += 1
        key = ("ct", f"{nxt} {toks[j] if j < n else ''}")
        if nxt == "reply" or key not in SELECTORS:
            return None
        return j + 1, *SELECTORS[key]
    if (t, nxt) in SELECTORS:
        return i + 2, *SELECTORS[(t, nxt)]
    if t.startswith("@th,"):
        parts = t.split(",")
        try:
            get = RAW_TH.get((int(parts[1]), int(parts[2])))
        except (ValueError, IndexError):
            get = None
        return (i + 1, get, "int") if get is not None else None
    if t == "fib":
        return _fib(toks, i, w)
    if t in ("numgen", "jhash", "symhash"):
        return _hash(toks, i, w)
    return None


def _fib(toks: list[str], i: int, w: RuleAt) -> tuple[int, Any, str] | None:
    """``fib daddr [. iif] type``, ``fib saddr . iif [. mark] oif``."""
    j = i + 1
    flags: list[str] = []
    while j < len(toks) and toks[j] not in ("type", "oif", "oifname"):
        if toks[j] != ".":
            flags.append(toks[j])
        j += 1
    if j >= len(toks):
        return None
    result = toks[j]
    key = w.key
    if result == "type" and flags[:1] == ["daddr"]:
        def fib_type(p: Any, c: Any) -> int:
            if c.is_local(p, p.v, p.dst):
                return 2
            return FIB_TYPES.index(c.facts.addr_type(p.v, p.dst).lower())
        return j + 1, fib_type, "fibtype"
    if result in ("oif", "oifname") and flags[:1] == ["saddr"] and "iif" in flags:
        def rpf(p: Any, c: Any) -> str:
            if not p.iif or p.iif == "lo":
                return p.iif or ""
            if not c.facts.routes:
                c.note(f"{key}: reverse-path check of {w.text!r} needs routes (--routes): assumed the "
                       f"route back to the source leaves through IN={p.iif}")
                return str(p.iif)
            r = c.facts.route(p.v, p.src)
            return p.iif if r is not None and r.dev == p.iif and r.type == "unicast" else ""
        return j + 1, rpf, "fiboif"
    return None


def _hash(toks: list[str], i: int, w: RuleAt) -> tuple[int, Any, str] | None:
    """``numgen random|inc mod N [offset O]``, ``jhash EXPR mod N seed S [offset O]``: a branch."""
    j = i + 1
    while j < len(toks) and toks[j] != "mod":
        j += 1
    try:
        mod = int(toks[j + 1], 0)
    except (IndexError, ValueError):
        return None
    j += 2
    offset = 0
    while j + 1 < len(toks) and toks[j] in ("seed", "offset"):
        if toks[j] == "offset":
            offset = int(toks[j + 1], 0)
        j += 2
    expr = " ".join(toks[i:j])
    key, word = w.key, toks[i]
    where = (w.table, w.chain, w.num)

    def get(p: Any, c: Any) -> int:
        vals = c.facts.values
        v = vals.get(key, vals.get(word)) if vals else None
        how = "--assume" if v is not None else "assumed"
        v = offset + ((v - offset) % mod if v is not None and v >= offset else 0)
        c.branches.append(Branch(*where, expr, True, f"value {v} {how} (the kernel picks one of "
                                 f"{offset}..{offset + mod - 1}); --assume {key}=N to take another"))
        return v

    return j, get, "int"
