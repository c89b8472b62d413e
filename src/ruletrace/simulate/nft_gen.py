"""Native nftables chains compiled to Python functions: the fast path of nft_walk.py's walk.

``nft_walk.NftCompiled.walk`` (with ``run_hook``) is the reference: the one definition of how a
hook's base chains run. Here each chain becomes one function ``fn(p, c, R)`` doing what that
loop does for the chain, as straight-line code: per rule ``if <its items>:`` then its step and
what its verdict says. A jump calls the target's function (the kernel's jump stack is Python's
call stack; a loop ends in RecursionError and the engine then runs the reference walk, which
reports it); a goto returns the callee's result; ``return`` (and a jumped-to chain's end)
returns None, which the hook turns into the base chain's policy step, as the reference does with
an empty stack. Each hook's plan (conntrack, base chains in priority order, the nat chains) is
generated once too.

Items are inlined from their text when they were written as code (``nft_code.code_fn``: the
reference calls the very same expression); any other item (fib, numgen, limit, statements, an
expression the simulator cannot read) is called, the function the reference calls. A verdict
map whose look-up is not a plain dict (intervals, the scanned reference look-up) is called too.
tests/simulate/test_nft_gen.py checks both walks give the same steps, fate, verdict,
assumptions and branches. Functions are compiled per chain on its first walk; the code depends
only on the chain's shape, so one compiled factory serves every chain of a shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model import StepKind
from .nft_code import src_of
from .semantics import (
    ACCEPT,
    CONTINUE,
    GOTO,
    JUMP,
    MAX_JUMPS,
    RETURN,
    VERDICT,
    decide_src,
    loop_error,
    policy_verdict,
)
from .semantics import NftSimEvent as SimEvent

_factories: dict[str, Callable[..., Any]] = {}
_NS = {"SimEvent": SimEvent, "RULE": StepKind.RULE, "POLICY": StepKind.POLICY, "MAXJ": MAX_JUMPS, "LOOP": loop_error,
       "GOTO": GOTO, "JUMP": JUMP, "RETURN": RETURN, "CONTINUE": CONTINUE, "VERDICT": VERDICT}
# NftCompiled.walk's step of a matched rule (table, chain, number, handle, verdict text: {0}-{4};
# A is R.append, F the table's family)
STEP = ("e = SimEvent(); e.table = {0}; e.chain = {1}; e.kind = RULE; e.num = {2}; e.family = F; "
        "e.raw = p.snap or p.snapshot(); e.handle = {3}; e.verdict = {4}; A(e)")


class _Consts:
    def __init__(self) -> None:
        self.vals: list[Any] = []

    def k(self, v: Any) -> str:
        self.vals.append(v)
        return f"k{len(self.vals) - 1}"

    def expr(self, fn: Any) -> str:
        """An item or getter as an expression: its code inlined, or a call."""
        s = src_of(fn)
        if s is None:
            return f"{self.k(fn)}(p, c)"
        text, own = s
        return "(" + text.format(*(self.k(v) for v in own)) + ")"


def _policy(ind: str, k: _Consts, ch: Any, chk: str, ret: str = "return ") -> list[str]:
    """NftCompiled._policy of a base chain as code: its policy step, decide, ``ret`` its verdict."""
    v = policy_verdict(ch.policy)
    step = STEP.format(k.k(ch.table), k.k(ch.name), len(ch.src.rules) + 1, "None",
                       k.k("drop" if v != ACCEPT else "accept")).replace("RULE", "POLICY")
    return [ind + step, *decide_src(ind, ch.table, v, k.k(v), chk, "None", "None"), f"{ind}{ret}{k.k(v)}"]


def _make(src: str, consts: list[Any]) -> Any:
    make = _factories.get(src)
    if make is None:
        ns = dict(_NS)
        exec(compile(src, "<simulate nft walk>", "exec"), ns)
        make = _factories[src] = ns["make"]
    return make(*consts)


def _jump(ind: str, tbl: str, chn: str) -> list[str]:
    """NftCompiled.walk's jump count (a ruleset the kernel accepted has no loops: bad input)."""
    return [f"{ind}n = R.jumps = R.jumps + 1", f"{ind}if n > MAXJ:", f"{ind}    raise LOOP({tbl}, {chn}, R.rs.origin)"]


def chain_fn(ch: Any, rules: list[Any], policy: Callable[..., str]) -> Callable[..., str | None]:
    """The function of one chain (an nft_walk.NChain with its compiled rules): its verdict, or None
    when it returned to its caller (for a base chain: its policy is the hook's to log)."""
    k = _Consts()
    tbl, chn, ch_k = k.k(ch.table), k.k(ch.name), k.k(ch)
    body = ["    def fn(p, c, R):", "        A = R.append", f"        F = {k.k(ch.family)}"]
    for i, r in enumerate(rules):
        num = str(i + 1)
        tests = [k.expr(f) for f in r.items]
        ind = "        "
        rule = k.k(r.rule)
        if r.vmap is not None:  # the verdict is looked up: a miss breaks the rule
            tests.append(f"(d := {k.expr(r.vmap)}) is not None")
        if tests:
            body.append(f"{ind}if {' and '.join(tests)}:")
            ind += "    "
        if r.vmap is not None:
            body += _dispatch(ind, k, tbl, chn, ch_k, num, rule, r, ch)
            continue
        kind, target, vtext = r.verdict
        body.append(ind + STEP.format(tbl, chn, num, k.k(r.rule.handle), k.k(vtext)))
        if r.trace:
            body.append(f"{ind}R.traced()")
        if kind == CONTINUE:
            continue
        if kind == JUMP or kind == GOTO:
            body += _jump(ind, tbl, chn)
            call = f"{k.k(ch.tab[target])}.fn(p, c, R)"
            if kind == GOTO:
                body.append(f"{ind}return {call}")
            else:
                body += [f"{ind}v = {call}", f"{ind}if v is not None:", f"{ind}    return v"]
                continue
        elif kind == RETURN:
            body.append(f"{ind}return None")
        else:
            v = VERDICT[kind]
            body += [*decide_src(ind, ch.table, v, k.k(v), ch_k, num, rule), f"{ind}return {k.k(v)}"]
        if not tests:
            break  # an unconditional rule that leaves the chain: nothing after it runs
    else:
        if ch.base:  # the end of a base chain: its policy
            body += _policy("        ", k, ch, ch_k)
        else:
            body.append("        return None")
    head = f"def make({', '.join(f'k{j}' for j in range(len(k.vals)))}):"
    return _make("\n".join([head, *body, "    return fn", ""]), k.vals)  # type: ignore[no-any-return]


def _dispatch(ind: str, k: _Consts, tbl: str, chn: str, ch_k: str, num: str, rule: str, r: Any,
              ch: Any) -> list[str]:
    """A verdict map's data ``d`` = (kind, chain, text): NftCompiled.walk's step and flow for it."""
    out = [ind + STEP.format(tbl, chn, num, k.k(r.rule.handle), "d[2]")]
    if r.trace:
        out.append(f"{ind}R.traced()")
    tab = k.k(ch.tab)
    out += [f"{ind}x = d[0]", f"{ind}if x == GOTO:", *_jump(ind + "    ", tbl, chn),
            f"{ind}    return {tab}[d[1]].fn(p, c, R)",
            f"{ind}if x == JUMP:", *_jump(ind + "    ", tbl, chn),
            f"{ind}    v = {tab}[d[1]].fn(p, c, R)", f"{ind}    if v is not None:", f"{ind}        return v",
            f"{ind}elif x == RETURN:", f"{ind}    return None",
            f"{ind}elif x != CONTINUE:", f"{ind}    v = VERDICT[x]", f"{ind}    R.decide(v, {ch_k}, {num}, {rule})",
            f"{ind}    return v"]
    return out


def hook_fn(hook: str, manip: str, plan: list[Any], policy: Callable[..., str]) -> Callable[..., str]:
    """NftCompiled.run_hook for one hook, as straight-line code over its plan."""
    k = _Consts()
    h, acc, pol = k.k(hook), k.k(ACCEPT), k.k(policy)
    body = ["    def run_hook(p, c, R):", f"        p.hook = {h}", f"        R.hooks.append({h})",
            "        A = R.append"]

    def base(ind: str, ch: Any) -> list[str]:  # a base chain; None: the nat loop's variable ch
        if ch is None:
            return [f"{ind}R.jumps = 0", f"{ind}v = ch.fn(p, c, R)", f"{ind}if v is None:",
                    f"{ind}    v = {pol}(ch, p, R, ch.family)", f"{ind}if v != {acc}:", f"{ind}    return v"]
        b = k.k(ch)
        return [f"{ind}R.jumps = 0", f"{ind}v = {b}.fn(p, c, R)", f"{ind}if v is None:",
                f"{ind}    F = {k.k(ch.family)}", *_policy(ind + "    ", k, ch, b, "v = "),
                f"{ind}if v != {acc}:", f"{ind}    return v"]

    for kind, x in plan:
        if kind == "chain":
            body += base("        ", x)
        elif kind == "ct":
            body += ["        if not p.ct:", "            R.conntrack(p, c)"]
        else:  # nf_nat_inet_fn: the nat chains only for a connection's first packet
            m = k.k(manip)
            body += [f"        if p.ct and p.ctstate == 'NEW' and {m} not in p.nat_done:",
                     f"            p.nat_done += ({m},)"]
            if hook == "OUTPUT":
                body.append("            before = (p.dst, p.dport)")
            body.append(f"            for ch in {k.k(tuple(x))}:")
            body += base("                ", None)
            body += [f"                if p.{'dnat' if manip == 'dst' else 'snat'}:",
                     "                    break  # the mapping is set up: later nat chains do not run"]
            if hook == "OUTPUT":
                body += ["            if (p.dst, p.dport) != before:", "                R.reroute(p, c)"]
    body.append(f"        return {acc}")
    head = f"def make({', '.join(f'k{j}' for j in range(len(k.vals)))}):"
    src = "\n".join([head, *body, "    return run_hook", ""])
    ns = dict(_NS)
    exec(compile(src, "<simulate nft hook>", "exec"), ns)
    return ns["make"](*k.vals)  # type: ignore[no-any-return]
