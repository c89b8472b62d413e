"""A rule's conditions: what the match functions of matches.py and its modules build and the walks evaluate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model import Origin, Rule
from .state import Ctx, Pkt

CondFn = Callable[[Pkt, Ctx], bool]
Options = list[tuple[bool, str, list[str]]]  # (negated, option, its arguments) of one module


class Cond:
    """One condition of a rule: ``fn(pkt, ctx) -> bool`` plus what to say when it fails."""

    __slots__ = ("fn", "text", "field", "pure", "key", "src")

    def __init__(self, fn: CondFn, text: str, field: str, *, pure: bool = True,
                 key: tuple[str, object] | None = None, src: tuple[str, tuple[Any, ...]] | None = None) -> None:
        self.fn = fn
        self.text = text  # the rule's words for it: "-d 10.96.0.1/32"
        self.field = field  # packet field it looks at, kernel-log name ("DST"), "" if none
        self.pure = pure  # evaluating it records nothing (no assumption, no branch)
        self.key = key  # ("dst", int) / ("dport", int) / …: the rule can only match packets with it
        # fn as a Python expression over p ({0}, {1}, … stand for the constants), for walker.py to
        # inline; it must compute exactly what fn does
        self.src = src


class Mod:
    """One ``-m`` module of a rule, as its match function gets it."""

    __slots__ = ("name", "opts", "rule", "where", "origin", "v6", "text")

    def __init__(self, name: str, opts: Options, rule: Rule, v6: bool) -> None:
        self.name = name
        self.opts = opts
        self.rule = rule
        self.where = f"{rule.table}:{rule.chain}:{rule.num}"  # the --assume key of the rule
        self.origin: Origin | None = rule.origin
        self.v6 = v6
        words = [f"-m {name}"]
        for neg, opt, args in opts:
            words.append(("! " if neg else "") + " ".join([opt, *args]))
        self.text = " ".join(words)


ModuleFn = Callable[[Mod], list[Cond]]
OptionFn = Callable[[Mod, bool, str, list[str], str, list[Cond]], None]


def per_option(fn: OptionFn) -> ModuleFn:
    """A module's match function from one that turns each of its options into conditions."""

    def module(m: Mod) -> list[Cond]:
        out: list[Cond] = []
        for neg, opt, args in m.opts:
            label = f"{'! ' if neg else ''}{opt}{' ' if args else ''}{' '.join(args)}"
            fn(m, neg, opt, args, label, out)
        return out

    return module


def negate(fn: CondFn, neg: bool) -> CondFn:
    if not neg:
        return fn
    return lambda p, c: not fn(p, c)


def iface_test(name: str) -> Callable[[str | None], bool]:
    # xt: a trailing "+" matches any interface name with that prefix (ifname_compare)
    if name.endswith("+"):
        prefix = name[:-1]
        return lambda have: (have or "").startswith(prefix)
    return lambda have: (have or "") == name


def unknown(module: str, text: str, where: str, what: str) -> Cond:
    """A condition the simulator cannot evaluate: no match unless --assume says otherwise (noted)."""

    def fn(p: Pkt, c: Ctx) -> bool:
        o = c.override(where, module)
        if o is None:
            c.guessed.append(where)
            c.note(f"{where}: {what}: assumed no match; use --assume {module}=match to change")
            return False
        c.note(f"{where}: {what}: --assume says {'match' if o else 'no match'}")
        return o

    return Cond(fn, text, "", pure=False)
