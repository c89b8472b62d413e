"""nft comparisons, sets, maps and verdict maps, compiled to functions of the packet.

Selectors (what value of the packet an expression reads) are in ``nft_selectors.py``.

Sets and maps are hash lookups on exact keys (a verdict map of 10,000 services is one dict
lookup) plus a scan of interval / prefix / wildcard elements; with ``linear`` (the reference
walk) every lookup scans the elements in order instead: the property test checks both agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import RuletraceError
from ..model import NftSet, Origin
from .nft_code import code_fn, const, embed
from .nft_selectors import one_selector
from .nft_values import FIB_TYPES, comp_match, exact, parse_value, split_tokens
from .semantics import ACCEPT, CONTINUE, DROP, GOTO, JUMP, QUEUE, RETURN

MISS = object()


class Unreadable(Exception):
    """An expression the simulator cannot evaluate (the rule states it and assumes no match)."""
SET_TYPES = {"ipv4_addr": "addr4", "ipv6_addr": "addr6", "inet_proto": "proto", "inet_service": "int",
             "mark": "int", "ifname": "ifname", "iface_index": "ifname", "ct_state": "ctstate",
             "ct_status": "ctstatus", "nf_proto": "nfproto", "pkt_type": "pkttype", "integer": "int",
             "icmp_type": "icmp", "icmpv6_type": "icmpv6", "tcp_flag": "tcpflags", "ct_dir": "ctdir",
             "verdict": "verdict"}
VERDICT_KINDS = {"accept": ACCEPT, "drop": DROP, "return": RETURN, "continue": CONTINUE, "queue": QUEUE,
                 "jump": JUMP, "goto": GOTO}


@dataclass(slots=True)
class Where:
    """The rule being compiled: for messages, branch records and set look-ups."""

    table: str
    chain: str
    num: int
    text: str
    origin: Origin
    v6: bool
    sets: dict[tuple[str, str], NSet | None]
    linear: bool
    objects: dict[tuple[str, str, str], str]

    def error(self, msg: str) -> RuletraceError:
        return RuletraceError(f"{self.table} {self.chain} rule {self.num}: {msg}", origin=self.origin)

    @property
    def key(self) -> str:
        return f"{self.table}:{self.chain}:{self.num}"


def parse_verdict(text: str, w: Where) -> tuple[str, str | None, str]:
    """``accept``, ``goto X`` -> (kind, chain, the verdict as an nft monitor's step carries it: ``accept``,
    ``goto:X`` (sources/nft_monitor.py), so explain reads a predicted jump as it reads a traced one)."""
    words = text.split()
    kind = VERDICT_KINDS.get(words[0]) if words else None
    if kind is None:
        raise w.error(f"not a verdict: {text!r}")
    if kind in (JUMP, GOTO):
        if len(words) < 2:
            raise w.error(f"{words[0]} without a chain")
        name = words[1].strip('"')
        return kind, name, f"{words[0]}:{name}"
    return kind, None, words[0]


# --- comparisons -------------------------------------------------------------------------------------


def parse_rhs_list(toks: list[str], i: int, w: Where, typ: Any) -> tuple[list[Any], int]:
    """Values after a selector: ``a``, ``a,b,c`` (flags), ``a . b`` (concatenation), ``syn / fin,syn``."""
    comps = [_elem_key(toks, i, w, typ)]
    i = comps[0][1]
    comps = [comps[0][0]]
    while i + 1 < len(toks) and toks[i] == ",":
        c, i = _elem_key(toks, i + 1, w, typ)
        comps.append(c)
    if i + 1 < len(toks) and toks[i] == "/" and typ == "tcpflags":  # flags / mask
        mask = 0
        i += 1
        while i < len(toks):
            mask |= parse_value(typ, toks[i], w.v6, w.origin)[0]
            if i + 1 < len(toks) and toks[i + 1] == ",":
                i += 2
                continue
            i += 1
            break
        comps = [("mask", mask, sum(c[0][0] for c in comps))]  # type: ignore[list-item]  # a bitmask component is ("mask", bits, count), not a (range, width) pair
    return comps, i


def _elem_key(toks: list[str], i: int, w: Where, typ: Any) -> tuple[tuple[Any, ...], int]:
    """One key (a tuple of components, one per concatenated type) from toks[i]."""
    typs = typ if isinstance(typ, tuple) else (typ,)
    out = []
    for k, t in enumerate(typs):
        if k:
            if i >= len(toks) or toks[i] != ".":
                raise w.error(f"expected '.' in a concatenated value at {toks[i] if i < len(toks) else 'end'!r}")
            i += 1
        if i >= len(toks):
            raise w.error("expected a value")
        out.append(_value(t, toks[i], w))
        i += 1
    return tuple(out), i


def _value(typ: str, text: str, w: Where) -> tuple[Any, ...]:
    if typ == "fibtype":
        if text not in FIB_TYPES:
            raise w.error(f"unknown fib type {text!r}")
        k = FIB_TYPES.index(text)
        return k, k
    if typ == "fiboif":
        return ("=", "") if text == "missing" else ("*", "") if text == "exists" else ("=", text.strip('"'))
    return parse_value(typ, text, w.v6, w.origin)


BITMASK = frozenset({"ctstate", "ctstatus", "tcpflags"})


def cmp_fn(get: Callable[..., Any], typ: Any, op: str, comps: list[Any], w: Where) -> Callable[[Any, Any], bool]:
    """The item of ``SEL [op] VALUE[,VALUE…]`` (op "implicit": none written), as code (nft_code.py)."""
    k: list[Any] = []
    g = embed(get, k)
    if comps and comps[0][0] == "mask":
        _m, mask, want = comps[0]
        eq = "!=" if op == "!=" else "=="
        return code_fn(f"(v := {g}) is not None and (v & {const(mask, k)}) {eq} {const(want, k)}", tuple(k))
    single = not isinstance(typ, tuple)
    keys = [c[0] if single else c for c in comps]
    if single and typ in BITMASK:
        bits = 0
        for key in keys:
            bits |= key[0]
        b = const(bits, k)
        if op == "implicit":  # a flag test: any of the bits
            return code_fn(f"(v := {g}) is not None and v & {b} != 0", tuple(k))
        if op == "!=" and typ == "ctstate":
            return code_fn(f"(v := {g}) is not None and v & {b} == 0", tuple(k))
        if op in ("==", "!="):
            return code_fn(f"(v := {g}) is not None and v {op} {b}", tuple(k))
    if op == "implicit":
        op = "=="
    if len(keys) == 1 and op in ("<", ">", "<=", ">="):
        return code_fn(f"(v := {g}) is not None and v {op} {const(keys[0][0], k)}", tuple(k))
    if single:
        ex = exact(keys[0])
        if len(keys) == 1 and ex is not None:
            if op == "!=":
                return code_fn(f"(v := {g}) is not None and v != {const(ex, k)}", tuple(k))
            return code_fn(f"{g} == {const(ex, k)}", tuple(k))
        # any(comp_match(key, v) for key in keys): an integer interval inlined as comp_match reads it
        tests = [f"{const(key[0], k)} <= v <= {const(key[1], k)}" if type(key[0]) is int
                 else f"{const(comp_match, k)}({const(key, k)}, v)" for key in keys]
        anyof = " or ".join(tests)
        return code_fn(f"(v := {g}) is not None and {'not ' if op == '!=' else ''}({anyof})", tuple(k))
    return code_fn(f"(v := {g}) is not None and {const(_concat_in, k)}({const(tuple(keys), k)}, v) == "
                   f"{const(op != '!=', k)}", tuple(k))


def _concat_in(keys: tuple[Any, ...], v: tuple[Any, ...]) -> bool:
    """Whether a concatenation's values are in one of the keys (component by component)."""
    return any(all(comp_match(kc, vc) for kc, vc in zip(key, v)) for key in keys)


# --- sets and maps ---------------------------------------------------------------------------------


class NSet:
    """A set or map: exact keys hashed, other elements scanned (everything scanned with ``linear``)."""

    __slots__ = ("name", "elems", "hashed", "ranged", "linear", "chains")

    def __init__(self, name: str, elems: list[tuple[tuple[Any, ...], Any]], linear: bool) -> None:
        self.name = name
        self.elems = elems  # (key components, data) in listing order
        self.linear = linear
        self.hashed: dict[tuple[Any, ...], Any] = {}
        self.ranged: list[tuple[tuple[Any, ...], Any]] = []
        for comps, data in elems:
            key = tuple(exact(c) for c in comps)
            if None in key:
                self.ranged.append((comps, data))
            else:
                self.hashed.setdefault(key, data)
        self.chains = tuple({d[1] for _, d in elems if isinstance(d, tuple) and d and d[1]})

    def lookup(self, key: tuple[Any, ...]) -> Any:
        if self.linear:
            for comps, data in self.elems:
                if all(comp_match(c, v) for c, v in zip(comps, key)):
                    return data
            return MISS
        d = self.hashed.get(key, MISS)
        if d is MISS and self.ranged:
            for comps, data in self.ranged:
                if all(comp_match(c, v) for c, v in zip(comps, key)):
                    return data
        return d

    def contains_fn(self, get: Callable[..., Any]) -> Callable[[Any, Any], bool]:
        k: list[Any] = []
        if not self.linear and not self.ranged:  # only exact keys: lookup() is a membership test
            tup = getattr(get, "concat", False)  # a concatenation's getter returns the key tuple itself
            keys = frozenset(self.hashed) if tup else frozenset(key[0] for key in self.hashed)
            return code_fn(f"(v := {embed(get, k)}) is not None and v in {const(keys, k)}", tuple(k))
        look = self.lookup
        return lambda p, c: (v := get(p, c)) is not None and look(v if type(v) is tuple else (v,)) is not MISS

    def dispatch(self, get: Callable[..., Any]) -> Callable[[Any, Any], tuple[Any, ...] | None]:
        look = self.lookup
        if not self.linear and not self.ranged:  # only exact keys: lookup() is this one dict.get
            tup = getattr(get, "concat", False)
            data = self.hashed if tup else {key[0]: d for key, d in self.hashed.items()}
            k: list[Any] = []
            fn = code_fn(f"None if (v := {embed(get, k)}) is None else {const(data, k)}.get(v)", tuple(k))
            fn.chains = self.chains  # type: ignore[attr-defined]
            return fn

        def vmap(p: Any, c: Any) -> tuple[Any, ...] | None:
            v = get(p, c)
            if v is None:
                return None
            d = look(v if type(v) is tuple else (v,))
            return None if d is MISS else d

        vmap.chains = self.chains  # type: ignore[attr-defined]  # the dispatch function carries its chains for nft_expr
        return vmap

    def map_fn(self, get: Callable[..., Any]) -> Callable[[Any, Any], Any]:
        """``EXPR map @m``: the data of the packet's key, None on a miss."""
        look = self.lookup

        def mapped(p: Any, c: Any) -> Any:
            v = get(p, c)
            if v is None:
                return None
            d = look(v if type(v) is tuple else (v,))
            return None if d is MISS else d

        return mapped

    @staticmethod
    def inline_or_named(toks: list[str], i: int, w: Where, typ: Any, data: str | None) -> tuple[NSet, int]:
        """``@name`` or ``{ elements }`` at toks[i] (data: None for a set, "verdict" or a value type)."""
        t = toks[i]
        if t.startswith("@"):
            if (w.table, t[1:]) not in w.sets:
                raise w.error(f"no set or map named {t[1:]!r} in table {w.table}")
            s = w.sets[(w.table, t[1:])]
            if s is None:
                raise Unreadable(t)
            return s, i + 1
        if t != "{":
            raise w.error(f"expected '{{' or '@set', found {t!r}")
        depth, j = 0, i
        while j < len(toks):
            depth += (toks[j] == "{") - (toks[j] == "}")
            if depth == 0:
                break
            j += 1
        elems = parse_elements(toks[i + 1 : j], w, typ, data)
        return NSet("{…}", elems, w.linear), j + 1


def parse_elements(toks: list[str], w: Where, typ: Any, data: str | None) -> list[tuple[tuple[Any, ...], Any]]:
    """``k1, k2 : v2, …`` (tokens without the braces) -> [(key, data)]."""
    out: list[tuple[tuple[Any, ...], Any]] = []
    cur: list[str] = []
    for t in [*toks, ","]:
        if t == "," and cur:
            out.append(_element(cur, w, typ, data))
            cur = []
        elif t != ",":
            cur.append(t)
    return out


_ELEM_SKIP = {"timeout": 2, "expires": 2, "comment": 2, "counter": 1, "packets": 2, "bytes": 2}


def _element(toks: list[str], w: Where, typ: Any, data: str | None) -> tuple[tuple[Any, ...], Any]:
    if ":" in toks:
        k = toks.index(":")
        key_t, data_t = toks[:k], toks[k + 1 :]
    else:
        key_t, data_t = toks, []
    clean: list[str] = []
    i = 0
    while i < len(key_t):
        skip = _ELEM_SKIP.get(key_t[i])
        if skip:
            i += skip
            continue
        clean.append(key_t[i])
        i += 1
    key, _ = _elem_key(clean, 0, w, typ)
    if data is None:
        return key, True
    if not data_t:
        raise w.error(f"map element without data: {' '.join(toks)!r}")
    if data == "verdict":
        return key, parse_verdict(" ".join(data_t), w)
    dtyp = tuple(data.split(" . ")) if " . " in data else data
    dkey, _ = _elem_key(data_t, 0, w, dtyp)
    return key, tuple(c[0] for c in dkey) if isinstance(dtyp, tuple) else dkey[0][0]


def set_types(s: NftSet, w: Where) -> tuple[Any, str | None]:
    """(key type, data type) of a listed set or map, from ``type`` names or ``typeof`` expressions."""
    def one(text: str) -> Any:
        parts = [p.strip() for p in text.split(" . ")]
        out = []
        for p in parts:
            if s.typeof:
                sel = one_selector(p.split(), 0, w)
                if sel is None:
                    return None
                out.append(sel[2])
            else:
                t = SET_TYPES.get(p)
                if t is None:
                    return None
                out.append(t)
        return out[0] if len(out) == 1 else tuple(out)

    key = one(s.key)
    data = None
    if s.data is not None:
        data = "verdict" if s.data == "verdict" else one(s.data)
        if isinstance(data, tuple):
            data = " . ".join(data)
    return key, data


def compile_set(s: NftSet, w: Where) -> NSet | None:
    """A listed set compiled; None when its key type is one the simulator cannot read."""
    key, data = set_types(s, w)
    if key is None or (s.data is not None and data is None):
        return None
    toks: list[str] = []
    for e in s.elements:
        if toks:
            toks.append(",")
        toks.extend(split_tokens(e))
    return NSet(s.name, parse_elements(toks, w, key, data), w.linear)


def unknown_item(expr: str, word: str, w: Where) -> Callable[[Any, Any], bool]:  # an nft_expr.Item
    """An item that states it cannot evaluate ``expr``: no match unless --assume says otherwise."""
    key = f"{w.table}:{w.chain}:{w.num}"

    def item(p: Any, c: Any) -> bool:
        o = c.override(key, word)
        if o is None:
            c.note(f"{key}: cannot evaluate '{expr}': assumed no match; --assume {key}=match to change")
            return False
        c.note(f"{key}: '{expr}' decided by --assume: {'match' if o else 'no match'}")
        return bool(o)

    return item
