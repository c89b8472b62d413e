"""An nft expression written once as code: the reference walk's function and the generated walk's text.

``code_fn("(v := {0}) is not None and v == {1}", (get, 80))`` is ``lambda p, c: …`` over the packet
``p`` and its context ``c``, with ``{0}``, ``{1}``… standing for the constants; the function keeps
its text and constants as ``.src``, so nft_gen.py inlines the very expression the reference walk
(nft_walk.py) calls: the two cannot differ. ``embed`` puts one such function inside another's text
(a getter inside a comparison): its text, renumbered, when it has one; a call of it when it has
none (fib, numgen: functions that record assumptions or branches).

Texts use the names ``v`` (a selector's value), ``t`` (a concatenation's tuple) and ``d`` (a
map's data) as walrus targets, each assigned before it is read; no braces other than the
placeholders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Src = tuple[str, tuple[Any, ...]]
_factories: dict[str, Callable[..., Callable[[Any, Any], Any]]] = {}


def code_fn(expr: str, consts: tuple[Any, ...] = ()) -> Callable[[Any, Any], Any]:
    """``lambda p, c: expr`` with ``{i}`` bound to ``consts[i]``; carries ``.src = (expr, consts)``."""
    make = _factories.get(expr)
    if make is None:
        names = [f"k{i}" for i in range(len(consts))]
        src = f"def make({', '.join(names)}):\n    return lambda p, c: {expr.format(*names)}\n"
        ns: dict[str, Any] = {}
        exec(compile(src, "<nft expression>", "exec"), ns)
        make = _factories[expr] = ns["make"]
    fn = make(*consts)
    fn.__dict__["src"] = (expr, consts)  # read by embed / nft_gen
    return fn


def src_of(fn: Any) -> Src | None:
    """The (text, constants) of a function made by code_fn; None for any other function."""
    return getattr(fn, "src", None)


def embed(fn: Any, consts: list[Any]) -> str:
    """``fn(p, c)`` as text for an expression whose constants are ``consts`` (extended here)."""
    s = src_of(fn)
    if s is None:
        consts.append(fn)
        return f"{{{len(consts) - 1}}}(p, c)"
    expr, own = s
    off = len(consts)
    consts.extend(own)
    return "(" + expr.format(*(f"{{{off + i}}}" for i in range(len(own)))) + ")"


def const(value: Any, consts: list[Any]) -> str:
    """A constant's placeholder."""
    consts.append(value)
    return f"{{{len(consts) - 1}}}"
