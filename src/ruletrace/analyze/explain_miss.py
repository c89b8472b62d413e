"""``explain --explain-miss [TABLE:]CHAIN``: each rule of CHAIN checked against a traced packet's logged fields.

For every packet, every rule of the chain (from the given ruleset) gets a result: ``matched`` (the
trace shows it), ``failed`` (the first condition that did not hold, with the packet's value),
``unknown`` (only conditions the log cannot show are left: stated, never guessed), ``not reached``
(the packet left the chain before it) or ``would match`` (the packet never reached the chain, and
every condition holds). The rules are read by ``rule_check`` (the simulator's option parser, the
checks the near miss and diff use; iptables-save and native nft rules); the words are the
simulator's (simulate/miss_words.py), so ``simulate --explain-miss`` and this read alike.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import RuletraceError
from ..model import Explanation, MissLine, Rule, RulesetView, StepKind
from ..simulate.miss_words import (
    NO_RULE_TEXT,
    NOT_REACHED,
    TRACE_ON,
    TRACED_MATCH,
    TRACED_NO_MATCH,
    WOULD_MATCH,
    failed,
    parse_chain,
    traced_unknown,
    unknown,
)
from .rule_check import OptionCheck, check_nft_rule, check_rule

MATCHED, WOULD, FAILED, UNKNOWN, SKIPPED = "matched", "would match", "failed", "unknown", "not reached"


def chain_key(spec: str, view: RulesetView) -> tuple[str, str]:
    """The (table, chain) of ``spec``, checked against the rulesets: one clear error when there is no
    ruleset or no ruleset has the chain."""
    table, chain = parse_chain(spec)
    if not view:
        raise RuletraceError("--explain-miss needs the ruleset: give -r FILE")
    if not any(rs.chain(table, chain) is not None for rs in view.rulesets):
        raise RuletraceError(f"--explain-miss: no chain {chain} in table {table} of the given ruleset(s)")
    return table, chain


def annotate(expl: Explanation, view: RulesetView, key: tuple[str, str]) -> None:
    """Set ``expl.misses``: each rule of the chain and why it did (not) match this packet."""
    expl.misses = explain_miss(expl, view, key)


def explain_miss(expl: Explanation, view: RulesetView, key: tuple[str, str]) -> list[MissLine]:
    table, name = key
    family = expl.packet.events[0].family if expl.packet.events else None
    ch = view.chain(table, name, family)
    if ch is None:
        return [MissLine(table, name, 0, None, UNKNOWN, f"unknown: no chain {table}:{name} in the ruleset "
                                                        "of this packet's family")]
    rs = view.pick(family)
    nft = rs is not None and rs.format.startswith("nft")
    steps = [s for s in expl.steps if s.table == table and s.chain == name]
    traversed = bool(steps)
    taken = {s.num for s in steps if s.kind is StepKind.RULE}
    first_taken = min((n for n in taken if n is not None), default=None)
    last = steps[-1] if steps else None
    stop = last.num if last is not None and last.kind is StepKind.RULE else None  # it left the chain there
    fields = steps[0].event.fields if steps and steps[0].event.fields else expl.first
    out: list[MissLine] = []
    for r in ch.rules:
        if r.num in taken:
            out.append(MissLine(table, name, r.num, r, MATCHED, TRACED_MATCH))
        elif r.starts_trace and traversed and (first_taken is None or r.num < first_taken) and \
                (got := _checked(r, fields, nft, False, False)).result != FAILED:
            # the trace begins after the rule that started it: it cannot show it, nor its not matching
            out.append(got if got.result == UNKNOWN else MissLine(table, name, r.num, r, MATCHED, TRACE_ON))
        elif stop is not None and r.num > stop:
            out.append(MissLine(table, name, r.num, r, SKIPPED, NOT_REACHED))
        else:
            to_chain = bool(r.target) and view.chain(table, r.target or "", family) is not None
            out.append(_checked(r, fields, nft, traversed, to_chain))
    return out


def _checked(r: Rule, fields: Mapping[str, str], nft: bool, traversed: bool, to_chain: bool) -> MissLine:
    """A rule the packet passed (``traversed``) or never reached, by its conditions on the logged fields."""
    def line(result: str, reason: str) -> MissLine:
        return MissLine(r.table, r.chain, r.num, r, result, reason)

    if r.text.startswith("-A "):
        checks: list[OptionCheck] = check_rule(r.text, fields, fields)
    elif nft:
        checks = check_nft_rule(r.text, fields, fields)
    else:
        return line(UNKNOWN, NO_RULE_TEXT)
    bad = next((c for c in checks if c.left_ok is False), None)
    if bad is not None:
        return line(FAILED, failed(bad.option, bad.field or "", bad.left, r.target, to_chain, r.goto))
    unknowns = [c.option for c in checks if c.left_ok is None]
    if traversed:  # the trace shows it did not match
        return line(FAILED, traced_unknown(unknowns) if unknowns else TRACED_NO_MATCH)
    if unknowns:
        return line(UNKNOWN, unknown(unknowns))
    return line(WOULD, WOULD_MATCH)
