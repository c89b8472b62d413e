"""The reference walk: a hook's tables and a table's chains, one step at a time by semantics.py.

This is the walk the fast path (walker.py) must equal; it also runs for ``--explain-miss``
(it notes why each rule of that chain did not match), without the index (``index=False``), and
when the fast path runs out of Python stack (chains nested very deep, or a loop, which this walk
reports). Its state is the engine's run (a ``semantics.WalkState`` with ``cc``, ``rs``,
``miss_key``, ``miss_state``, ``conntrack`` and ``reroute``).
"""

from __future__ import annotations

from typing import Any

from .compiled import nat_manip
from .hostfacts import addr_text
from .index import CChain, CRule
from .miss_words import MATCHED, failed
from .semantics import ACCEPT, CALL, MAX_JUMPS, NEXT, POLICY, POP, TAIL, loop_error, tail_kind
from .state import Ctx, Pkt


def run_hook(hook: str, p: Pkt, c: Ctx, R: Any) -> str:  # R: the engine's run (a semantics.WalkState)
    """Run the tables of one hook in priority order; return the first non-accept verdict or accept."""
    p.hook = hook
    R.hooks.append(hook)
    for t, base, _empty in R.cc.plan(hook):
        if t == "conntrack":
            if not p.ct:  # looped back: the entry is already attached
                R.conntrack(p, c)
            continue
        if t == "nat":
            manip = nat_manip(hook)
            if not p.ct or p.ctstate != "NEW" or manip in p.nat_done:
                continue  # nf_nat_inet_fn: nat rules only for a connection's first packet
            p.nat_done += (manip,)
            if base is None:
                continue
            before = (p.dst, p.dport)
        v = walk_table(t, base, p, c, R)
        if v != ACCEPT:
            return v
        if t == "nat" and hook == "OUTPUT" and (p.dst, p.dport) != before:
            R.reroute(p, c)  # nf_nat_ipv4_local_fn: ip_route_me_harder after DNAT
    return ACCEPT


def walk_table(table: str, base: CChain, p: Pkt, c: Ctx, R: Any) -> str:
    """Walk a table from its built-in chain: the steps it logs, and its verdict."""
    chain = base
    pos = 0
    stack: list[tuple[CChain, int]] = []
    miss_key = R.miss_key
    jumps = 0
    while True:
        if miss_key is not None and (table, chain.name) == miss_key:
            k = scan_recording(chain, p, c, pos, R.miss_state)
        else:
            k = chain.next_match(p, c, pos)
        if k < 0:
            R.step(table, chain.name, tail_kind(chain.builtin), len(chain.rules) + 1, p)
            if chain.builtin:
                return str(R.policy(chain))
            if stack:  # the implicit return of a user chain
                chain, pos = stack.pop()
                continue
            # a user chain reached by goto from the built-in chain: its policy
            R.step(table, base.name, POLICY, len(base.rules) + 1, p)
            return str(R.policy(base))
        cr = chain.rules[k]
        R.step(table, chain.name, cr.kind, k + 1, p)
        t = cr.target
        flow = t.flow
        if flow is CALL or flow is TAIL:
            # only jumps and gotos can make a walk loop: a chain's own rules are passed in order
            jumps += 1
            if jumps > MAX_JUMPS:
                raise loop_error(table, chain.name, R.rs.origin)
            nxt = t.resolved
            if nxt is None:
                nxt = t.resolved = R.cc.chain(table, t.chain)
                if nxt is None:  # compile_target makes jumps only to chains of the table
                    raise AssertionError(f"jump to missing chain {t.chain}")
            if flow is CALL:
                stack.append((chain, k + 1))
            chain, pos = nxt, 0
            continue
        if t.effect is not None:
            t.effect(p, c)
            p.snap = None
        if flow is NEXT:
            if t.trace:
                R.traced()
            pos = k + 1
            continue
        if flow is POP:
            if stack:
                chain, pos = stack.pop()
                continue
            # RETURN in the built-in chain (or a chain it went to): its policy
            R.step(table, base.name, POLICY, len(base.rules) + 1, p)
            return str(R.policy(base))
        v = t.verdict  # END: the chain and the table end
        assert v is not None  # END targets have a verdict (semantics.VERDICT)
        R.decide(v, chain, k + 1, cr.rule)
        return v


def scan_recording(chain: CChain, p: Pkt, c: Ctx, pos: int, notes: dict[int, str]) -> int:
    """Linear scan of the --explain-miss chain, noting the first failing condition of each rule."""
    rules: list[CRule] = chain.rules
    for i in range(pos, len(rules)):
        bad = rules[i].first_failure(p, c)
        if bad is None:
            notes[i] = MATCHED
            return i
        have = describe_value(p, bad.field)
        r = rules[i].rule
        to_chain = rules[i].target.flow in (CALL, TAIL)
        # no value to show (a field describe_value does not know): just the condition
        notes.setdefault(i, failed(bad.text, bad.field if have else "", None if have == "(none)" else have,
                                   r.target, to_chain, r.goto))
    return -1


def describe_value(p: Pkt, field: str) -> str:
    """The packet's value of a field for "needs X; packet has Y" messages."""
    if field == "SRC":
        return addr_text(p.v, p.src)
    if field == "DST":
        return addr_text(p.v, p.dst)
    if field in ("IN", "OUT"):
        return (p.iif if field == "IN" else p.oif) or "(none)"
    if field == "PROTO":
        return str(p.proto)
    if field in ("SPT", "DPT"):
        v = p.sport if field == "SPT" else p.dport
        return "(none)" if v is None else str(v)
    if field == "MARK":
        return f"0x{p.mark:x}"
    if field == "CTMARK":
        return f"0x{p.ctmark:x}" if p.ct else "(no conntrack entry)"
    if field == "CTSTATE":
        return p.ct_state() + (",DNAT" if p.dnat else "") + (",SNAT" if p.snat else "")
    if field == "TYPE":
        return "(none)" if p.itype is None else f"{p.itype}/{p.icode or 0}"
    if field in ("TTL", "HOPLIMIT"):
        return str(p.ttl)
    if field == "LEN":
        return str(p.length)
    if field == "PORTS":
        return f"{p.sport}->{p.dport}"
    return ""
