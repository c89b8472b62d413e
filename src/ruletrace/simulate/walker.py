"""Chains compiled to Python functions: the fast path of the table walk.

``reference.walk_table`` interprets the compiled rules one step at a time by the rules of
``semantics.py`` (the reference walk). Here each chain becomes one function ``walk(p, c, run)``
that does what that loop does for the chain: it tests the rules in order, logs the step of each
rule that matched, does what ``semantics.FLOW`` says for its target (a jump calls the walk of
its chain, a goto returns the callee's result: it pushes nothing), and at the end logs the
chain's tail (policy or return). It returns None when the chain returned to its caller, or the
verdict. The kernel's stack of ``ipt_do_table()`` is Python's call stack; a loop runs out of
it (RecursionError), and the engine then runs the reference walk, which reports it.

The inlined pieces name their reference: ``semantics.EVENT_SRC`` is ``sim_event``,
``semantics.decide_src`` is ``WalkState.decide``, ``make_hook`` is ``reference.run_hook``.
tests/simulate/test_walker.py and test_index_property.py check that both walks predict the
same steps, packets, fate, verdict, assumptions and branches.

Short chains are generated as straight-line code (``if <conditions>: <step>`` per rule,
conditions inlined from ``Cond.src``); the source depends only on the chain's shape, so one
compiled factory serves every chain of that shape (kube-proxy's thousands of KUBE-SEP-* chains
share a handful). Indexed chains use one generic function around ``CChain.next_match``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from ..model import StepKind
from .index import CChain
from .semantics import (
    ACCEPT,
    CALL,
    EVENT_SRC,
    NEXT,
    POP,
    TAIL,
    SimEvent,
    decide_src,
    policy_verdict,
    tail_kind,
)

Walk = Callable[..., "str | None"]
Resolve = Callable[[str, str], "CChain | None"]  # (table, chain name) -> the compiled chain
MAX_GENERATED = 64  # longer chains (without an index) use the generic walk
_factories: dict[str, Callable[..., Walk]] = {}
_test_factories: dict[str, Callable[..., Callable[..., Any]]] = {}  # _rule_tests' code by source
KIND_NAMES = {StepKind.RULE: "RULE", StepKind.POLICY: "POLICY", StepKind.RETURN: "RETURN"}


def make_walk(resolve: Resolve, chain: CChain) -> Walk:
    """The walk function of a chain (generated code for short chains)."""
    if chain.keyfn is not None or len(chain.rules) > MAX_GENERATED:
        return _generic(resolve, chain)
    src, consts = _source(resolve, chain)
    make = _factories.get(src)
    if make is None:
        ns: dict[str, Any] = {"SimEvent": SimEvent, **{v: k for k, v in KIND_NAMES.items()}}
        exec(compile(src, "<simulate walk>", "exec"), ns)
        make = _factories[src] = ns["make"]
    return make(*consts)


def _target_chain(resolve: Resolve, chain: CChain, name: str) -> CChain:
    nxt = resolve(chain.table, name)
    if nxt is None:  # compile_target makes jumps only to chains of the table: cannot happen
        raise AssertionError(f"jump to missing chain {name}")
    return nxt


def _source(resolve: Resolve, chain: CChain) -> tuple[str, list[Any]]:
    consts: list[Any] = []

    def k(v: Any) -> str:
        consts.append(v)
        return f"k{len(consts) - 1}"

    table = chain.table
    tname, cname, ch = k(table), k(chain.name), k(chain)
    body = ["    def walk(p, c, R):", "        A = R.append", "        F = R.fam"]
    for i, cr in enumerate(chain.rules):
        tests = []
        for cond in cr.conds:
            if cond.src is not None:
                expr, vals = cond.src
                tests.append("(" + expr.format(*(k(v) for v in vals)) + ")")
            else:
                tests.append(f"{k(cond.fn)}(p, c)")
        ind = "            " if tests else "        "
        if tests:
            body.append(f"        if {' and '.join(tests)}:")
        body.append(ind + EVENT_SRC.format(tname, cname, KIND_NAMES[cr.kind], i + 1))
        t = cr.target
        flow = t.flow
        if t.effect is not None:  # NEXT and END run the target's effect after the step
            body += [f"{ind}{k(t.effect)}(p, c)", f"{ind}p.snap = None"]
        if flow is NEXT:
            if t.trace:  # WalkState.traced
                body += [f"{ind}if not R.trace_start:", f"{ind}    R.trace_start = len(R.events)"]
            continue
        if flow is CALL:
            body += [f"{ind}v = {k(_target_chain(resolve, chain, t.chain))}.walk(p, c, R)",  # type: ignore[arg-type]  # CALL targets name a chain
                     f"{ind}if v is not None:", f"{ind}    return v"]
            continue
        if flow is TAIL:
            body.append(f"{ind}return {k(_target_chain(resolve, chain, t.chain))}.walk(p, c, R)")  # type: ignore[arg-type]  # TAIL too
        elif flow is POP:
            body.append(f"{ind}return None")
        else:  # END
            v = t.verdict
            assert v is not None  # END targets have a verdict (semantics.VERDICT)
            body += [*decide_src(ind, table, v, k(v), ch, str(i + 1), k(cr.rule)), f"{ind}return {k(v)}"]
        if not tests:
            break  # an unconditional rule that leaves the chain: nothing after it runs
    else:
        tail = len(chain.rules) + 1
        body.append("        " + EVENT_SRC.format(tname, cname, KIND_NAMES[tail_kind(chain.builtin)], tail))
        if chain.builtin:  # WalkState.policy
            pol = policy_verdict(chain.policy)
            body += [*decide_src("        ", table, pol, k(pol), ch, "None", "None"), f"        return {k(pol)}"]
        else:
            body.append("        return None")
    head = f"def make({', '.join(f'k{j}' for j in range(len(consts)))}):"
    return "\n".join([head, *body, "    return walk", ""]), consts


def _rule_tests(chain: CChain) -> list[Callable[..., Any] | None]:
    """One test per rule: None (no condition), the condition's function, or generated code that
    evaluates several conditions in order (inlined from ``Cond.src``) in one call."""
    out: list[Callable[..., Any] | None] = []
    for cr in chain.rules:
        conds = cr.conds
        if not conds:
            out.append(None)
            continue
        if len(conds) == 1:
            out.append(conds[0].fn)
            continue
        consts: list[Any] = []
        tests = []
        for cond in conds:
            if cond.src is not None:
                expr, vals = cond.src
                names = []
                for v in vals:
                    consts.append(v)
                    names.append(f"k{len(consts) - 1}")
                tests.append("(" + expr.format(*names) + ")")
            else:
                consts.append(cond.fn)
                tests.append(f"k{len(consts) - 1}(p, c)")
        src = (f"def make({', '.join(f'k{j}' for j in range(len(consts)))}):\n"
               f"    def test(p, c):\n        return {' and '.join(tests)}\n    return test\n")
        make = _test_factories.get(src)
        if make is None:
            ns: dict[str, Any] = {}
            exec(compile(src, "<simulate rule test>", "exec"), ns)
            make = _test_factories[src] = ns["make"]
        out.append(make(*consts))
    return out


def _generic(resolve: Resolve, chain: CChain) -> Walk:
    """The walk of an indexed (or very long) chain: next_match, then what its target's flow says."""
    table, name, rules, next_match = chain.table, chain.name, chain.rules, chain.next_match
    tail = len(rules) + 1
    builtin = chain.builtin
    tail_step = tail_kind(builtin)
    event = SimEvent

    merged, keyed, wild, keyfn = chain.merged, chain.keyed, chain.wild, chain.keyfn
    tests = _rule_tests(chain) if merged or keyfn is None else []
    n = len(rules)

    def walk(p: Any, c: Any, R: Any) -> str | None:
        v: str | None  # a chain's verdict (None: fell off a user chain)
        A = R.append
        F = R.fam
        pos = 0
        while True:
            k = -1
            if merged:  # CChain.next_match for one candidate list per key, inlined
                cand = keyed.get(keyfn(p))  # type: ignore[misc]  # keyfn is set whenever merged is
                if cand is None:
                    cand = wild
                for j in range(bisect_left(cand, pos) if pos else 0, len(cand)):
                    i = cand[j]
                    t = tests[i]
                    if t is None or t(p, c):
                        k = i
                        break
            elif keyfn is None:  # a long chain without an index: every rule in turn
                for i in range(pos, n):
                    t = tests[i]
                    if t is None or t(p, c):
                        k = i
                        break
            else:
                k = next_match(p, c, pos)
            # the steps: semantics.sim_event, inlined
            if k < 0:
                e = event()
                e.table = table
                e.chain = name
                e.kind = tail_step
                e.num = tail
                e.family = F
                e.raw = p.snap or p.snapshot()
                A(e)
                return R.policy(chain) if builtin else None
            cr = rules[k]
            e = event()
            e.table = table
            e.chain = name
            e.kind = cr.kind
            e.num = k + 1
            e.family = F
            e.raw = p.snap or p.snapshot()
            A(e)
            tg = cr.target
            flow = tg.flow
            if flow is CALL or flow is TAIL:
                nxt = tg.resolved
                if nxt is None:
                    nxt = tg.resolved = _target_chain(resolve, chain, tg.chain)  # type: ignore[arg-type]  # CALL/TAIL targets name a chain
                v = nxt.walk(p, c, R)
                if flow is TAIL or v is not None:
                    return v
                pos = k + 1
                continue
            if tg.effect is not None:
                tg.effect(p, c)
                p.snap = None
            if flow is NEXT:
                if tg.trace:
                    R.traced()
                pos = k + 1
                continue
            if flow is POP:
                return None
            v = tg.verdict  # END
            R.decide(v, chain, k + 1, cr.rule)
            return v

    return walk


def make_hook(hook: str, manip: str, plan: tuple[tuple[str, CChain | None, str | None], ...]) -> Callable[..., str]:
    """reference.run_hook for one hook of the fast walk, as straight-line code over the hook's plan."""
    consts: list[Any] = []

    def k(v: Any) -> str:
        consts.append(v)
        return f"k{len(consts) - 1}"

    h = k(hook)
    body = ["    def run_hook(p, c, R):", f"        p.hook = {h}", f"        R.hooks.append({h})",
            "        A = R.append", "        F = R.fam"]
    acc = k(ACCEPT)
    for t, base, empty in plan:
        ind = "        "
        if t == "conntrack":
            body.append(f"{ind}if not p.ct:")
            body.append(f"{ind}    R.conntrack(p, c)")
            continue
        if t == "nat":
            # nf_nat_inet_fn: nat rules only for a connection's first packet
            m = k(manip)
            body += [f"{ind}if p.ct and p.ctstate == 'NEW' and {m} not in p.nat_done:",
                     f"{ind}    p.nat_done += ({m},)"]
            if base is None:
                continue
            ind += "    "
            if hook == "OUTPUT":
                body.append(f"{ind}before = (p.dst, p.dport)")
        tn, bn = k(t), k(base)
        if empty is not None:
            # an empty built-in chain: its walk is its policy step (number 1) and its policy
            body.append(ind + EVENT_SRC.format(tn, h, "POLICY", 1))
            body += decide_src(ind, t, empty, k(empty), bn, "None", "None")
            if empty != ACCEPT:
                body.append(f"{ind}return {k(empty)}")
            continue
        n = len(base.rules) + 1  # type: ignore[union-attr]  # the empty-hook case continued above
        body += [f"{ind}v = {bn}.walk(p, c, R)",
                 f"{ind}if v is None:",  # RETURN in the built-in chain, or the end of a chain it went to
                 f"{ind}    " + EVENT_SRC.format(tn, h, "POLICY", n),
                 f"{ind}    v = R.policy({bn})",
                 f"{ind}if v != {acc}:", f"{ind}    return v"]
        if t == "nat" and hook == "OUTPUT":
            # nf_nat_ipv4_local_fn: ip_route_me_harder after DNAT
            body += [f"{ind}if (p.dst, p.dport) != before:", f"{ind}    R.reroute(p, c)"]
    body.append(f"        return {acc}")
    src = "\n".join([f"def make({', '.join(f'k{j}' for j in range(len(consts)))}):", *body,
                     "    return run_hook", ""])
    ns: dict[str, Any] = {"SimEvent": SimEvent, "POLICY": StepKind.POLICY}
    exec(compile(src, "<simulate hook>", "exec"), ns)
    return ns["make"](*consts)  # type: ignore[no-any-return]  # the generated function, from exec
