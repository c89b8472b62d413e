"""Chains compiled to Python functions: the fast path of the table walk.

``engine._Run._table`` interprets the compiled rules one step at a time (the plain walk). Here
each chain becomes one function ``walk(p, c, run)`` that does what that loop does for the
chain: it tests the rules in order, logs the step of each rule that matched, runs its target,
calls the walk of a jump's chain (a goto returns the callee's result: it pushes nothing), and at
the end logs the chain's tail (policy or return). It returns None when the chain returned to
its caller, or the verdict. The kernel's stack of ``ipt_do_table()`` is Python's call stack.

Short chains are generated as straight-line code (``if <conditions>: <step>`` per rule,
conditions inlined from ``Cond.src``); the source depends only on the chain's shape, so one
compiled factory serves every chain of that shape (kube-proxy's thousands of KUBE-SEP-* chains
share a handful). Indexed chains use one generic function around ``CChain.next_match``.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any, Callable

from ..model import StepKind
from .targets import ACCEPT, CONTINUE, DROP, GOTO, JUMP, NAT, RETURN

if TYPE_CHECKING:
    from .index import CChain, Compiled

Walk = Callable[..., "str | None"]
MAX_GENERATED = 64  # longer chains (without an index) use the generic walk
_factories: dict[str, Callable[..., Walk]] = {}
_test_factories: dict[str, Callable[..., Callable[..., Any]]] = {}  # _rule_tests' code by source
# one step's event (engine.SimEvent), fields set inline: no Python __init__ frame per step
_EVENT = ("e = SimEvent(); e.table = {0}; e.chain = {1}; e.kind = {2}; e.num = {3}; e.family = F; "
          "e.raw = p.snap or p.snapshot(); A(e)")


def make_walk(cc: Compiled, chain: CChain) -> Walk:
    """The walk function of a chain (generated code for short chains)."""
    from .engine import SimEvent

    if chain.keyfn is not None or len(chain.rules) > MAX_GENERATED:
        return _generic(cc, chain, SimEvent)
    src, consts = _source(cc, chain)
    make = _factories.get(src)
    if make is None:
        ns: dict[str, Any] = {"SimEvent": SimEvent, "RULE": StepKind.RULE, "POLICY": StepKind.POLICY,
                              "RETURN": StepKind.RETURN}
        exec(compile(src, "<simulate walk>", "exec"), ns)  # noqa: S102
        make = _factories[src] = ns["make"]
    return make(*consts)


def _target_chain(cc: Compiled, chain: CChain, name: str) -> CChain:
    nxt = cc.chain(chain.table, name)
    if nxt is None:  # compile_target makes jumps only to chains of the table: cannot happen
        raise AssertionError(f"jump to missing chain {name}")
    return nxt


def _source(cc: Compiled, chain: CChain) -> tuple[str, list[Any]]:
    consts: list[Any] = []

    def k(v: Any) -> str:
        consts.append(v)
        return f"k{len(consts) - 1}"

    kinds = {StepKind.RULE: "RULE", StepKind.POLICY: "POLICY", StepKind.RETURN: "RETURN"}
    tname, cname, ch = k(chain.table), k(chain.name), k(chain)
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
        body.append(ind + _EVENT.format(tname, cname, kinds[cr.kind], i + 1))
        t = cr.target
        kind = t.kind
        if kind is CONTINUE:
            if t.effect is not None:
                body += [f"{ind}{k(t.effect)}(p, c)", f"{ind}p.snap = None"]
            elif t.name == "TRACE":
                body += [f"{ind}if not R.trace_start:", f"{ind}    R.trace_start = len(R.events)"]
            continue
        if kind is JUMP:
            body += [f"{ind}v = {k(_target_chain(cc, chain, t.chain))}.walk(p, c, R)",  # type: ignore[arg-type]
                     f"{ind}if v is not None:", f"{ind}    return v"]
            continue
        if kind is GOTO:
            body.append(f"{ind}return {k(_target_chain(cc, chain, t.chain))}.walk(p, c, R)")  # type: ignore[arg-type]
        elif kind is RETURN:
            body.append(f"{ind}return None")
        elif kind is NAT:
            body += [f"{ind}{k(t.effect)}(p, c)", f"{ind}p.snap = None",
                     *_decide(ind, chain, ACCEPT, k(ACCEPT), ch, str(i + 1), k(cr.rule)), f"{ind}return {k(ACCEPT)}"]
        else:  # accept, drop, reject, queue
            if t.effect is not None:
                body += [f"{ind}{k(t.effect)}(p, c)", f"{ind}p.snap = None"]
            body += [*_decide(ind, chain, kind, k(kind), ch, str(i + 1), k(cr.rule)), f"{ind}return {k(kind)}"]
        if not tests:
            break  # an unconditional rule that leaves the chain: nothing after it runs
    else:
        tail = len(chain.rules) + 1
        if chain.builtin:
            pol = DROP if chain.policy == "DROP" else ACCEPT
            body += ["        " + _EVENT.format(tname, cname, "POLICY", tail),
                     *_decide("        ", chain, pol, k(pol), ch, "None", "None"), f"        return {k(pol)}"]
        else:
            body += ["        " + _EVENT.format(tname, cname, "RETURN", tail),
                     "        return None"]
    head = f"def make({', '.join(f'k{j}' for j in range(len(consts)))}):"
    return "\n".join([head, *body, "    return walk", ""]), consts


def _decide(ind: str, chain: CChain, v: str, vname: str, ch: str, num: str, rule: str) -> list[str]:
    """engine._Run._decide as code, its test on the verdict and the table made when generating."""
    # an accept in filter says more about the fate than a later accept in nat or security
    setting = f"{ind}R.decider = ({vname}, {ch}, {num}, {rule})"
    if v != ACCEPT or chain.table == "filter":
        return [setting]
    return [f"{ind}d = R.decider", f"{ind}if d is None or d[1].table != 'filter':", "    " + setting]


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
            exec(compile(src, "<simulate rule test>", "exec"), ns)  # noqa: S102
            make = _test_factories[src] = ns["make"]
        out.append(make(*consts))
    return out


def _generic(cc: Compiled, chain: CChain, event: type) -> Walk:
    """The walk of an indexed (or very long) chain: next_match, then the rule's target."""
    table, name, rules, next_match = chain.table, chain.name, chain.rules, chain.next_match
    tail = len(rules) + 1
    pol = DROP if chain.policy == "DROP" else ACCEPT
    tail_kind = StepKind.POLICY if chain.builtin else StepKind.RETURN

    merged, keyed, wild, keyfn = chain.merged, chain.keyed, chain.wild, chain.keyfn
    tests = _rule_tests(chain) if merged or keyfn is None else []
    n = len(rules)

    def walk(p: Any, c: Any, R: Any) -> str | None:
        A = R.append
        F = R.fam
        pos = 0
        while True:
            k = -1
            if merged:  # CChain.next_match for one candidate list per key, inlined
                cand = keyed.get(keyfn(p))  # type: ignore[misc]
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
            if k < 0:
                e = event()
                e.table = table
                e.chain = name
                e.kind = tail_kind
                e.num = tail
                e.family = F
                e.raw = p.snap or p.snapshot()
                A(e)
                if chain.builtin:
                    R._decide(pol, chain, None, None)
                    return pol
                return None
            cr = rules[k]
            e = event()
            e.table = table
            e.chain = name
            e.kind = cr.kind
            e.num = k + 1
            e.family = F
            e.raw = p.snap or p.snapshot()
            A(e)
            t = cr.target
            kind = t.kind
            if kind is JUMP or kind is GOTO:
                nxt = t.resolved
                if nxt is None:
                    nxt = t.resolved = _target_chain(cc, chain, t.chain)  # type: ignore[arg-type]
                v = nxt.walk(p, c, R)
                if kind is GOTO or v is not None:
                    return v
                pos = k + 1
                continue
            if kind is CONTINUE:
                if t.effect is not None:
                    t.effect(p, c)
                    p.snap = None
                elif t.name == "TRACE" and not R.trace_start:
                    R.trace_start = len(R.events)
                pos = k + 1
                continue
            if kind is RETURN:
                return None
            if kind is NAT:
                t.effect(p, c)  # type: ignore[misc]
                p.snap = None
                R._decide(ACCEPT, chain, k + 1, cr.rule)
                return ACCEPT
            if t.effect is not None:
                t.effect(p, c)
                p.snap = None
            R._decide(kind, chain, k + 1, cr.rule)
            return kind

    return walk


def make_hook(hook: str, plan: tuple[tuple[str, CChain | None, str | None], ...]) -> Callable[..., str]:
    """engine._Run._hook for one hook of the fast walk, as straight-line code over the hook's plan."""
    from .engine import SimEvent

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
            body.append(f"{ind}    R._conntrack(p, c)")
            continue
        if t == "nat":
            # nf_nat_inet_fn: nat rules only for a connection's first packet
            manip = k("dst" if hook == "PREROUTING" or hook == "OUTPUT" else "src")
            body += [f"{ind}if p.ct and p.ctstate == 'NEW' and {manip} not in p.nat_done:",
                     f"{ind}    p.nat_done += ({manip},)"]
            if base is None:
                continue
            ind += "    "
            if hook == "OUTPUT":
                body.append(f"{ind}before = (p.dst, p.dport)")
        tn, bn = k(t), k(base)
        if empty is not None:
            # empty built-in chain: the kernel logs its policy as step 1
            body.append(ind + _EVENT.format(tn, h, "POLICY", 1))
            setting = f"R.decider = ({k(empty)}, {bn}, None, None)"
            if empty != ACCEPT or t == "filter":
                body.append(f"{ind}{setting}")
            else:
                body += [f"{ind}d = R.decider", f"{ind}if d is None or d[1].table != 'filter':",
                         f"{ind}    {setting}"]
            if empty != ACCEPT:
                body.append(f"{ind}return {k(empty)}")
            continue
        n = len(base.rules) + 1  # type: ignore[union-attr]
        body += [f"{ind}v = {bn}.walk(p, c, R)",
                 f"{ind}if v is None:",  # RETURN in the built-in chain, or the end of a chain it went to
                 f"{ind}    " + _EVENT.format(tn, h, "POLICY", n),
                 f"{ind}    v = R._policy({bn})",
                 f"{ind}if v != {acc}:", f"{ind}    return v"]
        if t == "nat" and hook == "OUTPUT":
            # nf_nat_ipv4_local_fn: ip_route_me_harder after DNAT
            body += [f"{ind}if (p.dst, p.dport) != before:", f"{ind}    R._reroute(p, c)"]
    body.append(f"        return {acc}")
    src = "\n".join([f"def make({', '.join(f'k{j}' for j in range(len(consts)))}):", *body,
                     "    return run_hook", ""])
    ns: dict[str, Any] = {"SimEvent": SimEvent, "POLICY": StepKind.POLICY}
    exec(compile(src, "<simulate hook>", "exec"), ns)  # noqa: S102
    return ns["make"](*consts)  # type: ignore[no-any-return]
