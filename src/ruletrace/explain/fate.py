"""A packet's fate from the evidence of its trace: where it got to, and what decided it.

Only the trace and the ruleset count as evidence. A hook is passed when its last table ended
the packet's traversal with an accept: the last table of the hook that the ruleset lists or
that the packet itself shows there (nat only for a connection's first packet). Without the
ruleset a chain policy's verdict is unknown unless the trace states it (nf_tables verdicts).
POSTROUTING reached proves the packet left; INPUT passed proves it was delivered; a packet whose
trace stops earlier is UNKNOWN, last seen where it stopped. (A reply in the same trace proves
more: ``explain.replies`` looks for it over all packets.)
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any, NamedTuple

from ..model import HOOK_TABLES, Fate, RulesetView, StepKind, TraceEvent, Verdict
from ..rulesets.nft_model import NFT_WORDS, table_label

_NAT_ACTIONS = frozenset({"dnat", "snat", "masquerade", "redirect", "netmap"})
# actions that end the traversal of the current table (the packet goes on to the next one)
ENDS_TABLE = frozenset({"accept", "queue", "tproxy"}) | _NAT_ACTIONS

ROUTING_NOTE = (
    "last seen in PREROUTING: after it the routing decision dropped the packet "
    "(no route, rp_filter, martian) or the log was cut"
)


class Decision(NamedTuple):
    fate: Fate
    verdict: Verdict | None
    verdict_index: int | None
    last_seen: str | None
    notes: list[str]


def where(ev: Any, shared: Container[str] = ()) -> str:
    """``table:chain`` of an event, the table named with its family where the path shows its name in
    two (``shared``: ``inet same:in``, ``ip same:in``)."""
    return f"{table_label(ev.table, ev.label_family, shared)}:{ev.chain}"


def place(ev: Any, rule: Any, kind: StepKind, shared: Container[str] = ()) -> str:
    """``table:chain rule N`` / ``the end of table:chain`` of one step, never with ``None`` in it."""
    num = ev.num if ev.num is not None else rule.num if rule is not None else None
    where_ = where(ev, shared)
    if kind is StepKind.RULE or rule is not None:
        if num is None and rule is not None and rule.text:  # known by the text the trace printed
            return f"{where_} rule `{rule.text}`"
        return f"{where_} rule {num}" if num is not None else f"a rule of {where_}"
    return f"the end of {where_}"


def _verdict(events: Sequence[TraceEvent], steps: Sequence[Any], i: int, reason: str) -> Verdict:
    ev, sp = events[i], steps[i]
    num = ev.num if ev.num is not None else sp.rule.num if sp.rule is not None else None
    return Verdict(sp.action, ev.table, ev.chain, num, sp.rule, reason, ev.kind, ev.label_family,
                   None if ev.nftables else ev.family)


def _what(ev: TraceEvent, sp: Any, shared: Container[str] = ()) -> str:
    """The deciding place in words: a rule, or a built-in chain's policy."""
    if ev.kind is StepKind.POLICY and sp.rule is None:
        if sp.action in ("", "unknown"):
            return f"the policy of {where(ev, shared)}"
        return f"the {sp.action.upper()} policy of {where(ev, shared)}"
    return place(ev, sp.rule, ev.kind, shared)


def expected_last_table(rs: RulesetView | None, hook: str, events: Sequence[TraceEvent]) -> str | None:
    """The last table of ``hook`` this packet must pass: listed by the ruleset or shown by the packet.

    nat is traversed only by a connection's first packet: it is expected where the packet shows
    it, and at INPUT after nat PREROUTING.
    """
    seen = {ev.table for ev in events if ev.chain == hook}
    fam = next((ev.family for ev in events if ev.chain == hook), None)
    nat_first = hook == "INPUT" and any(ev.chain == "PREROUTING" and ev.table == "nat" for ev in events)
    last = None
    for t in HOOK_TABLES[hook]:
        if t == "nat" and not nat_first and t not in seen:
            continue
        if t in seen or (rs is not None and rs.chain(t, hook, fam) is not None):
            last = t
    return last


# sources whose packets report every base chain they pass once tracing is on (nftrace)
_NFTRACE_SOURCES = frozenset({"nft-monitor", "xtables-monitor", "nftrace"})


def _later_base_chains(rs: RulesetView, ev: TraceEvent, events: Sequence[TraceEvent]) -> list[str]:
    """Base chains of the same hook that run after ``ev``'s (priority order, equal: last registered first)
    and that this packet must pass, in every family the packet's events show (an IPv4 packet passes ip
    and inet tables): nat-type chains only when the packet was in one (first packet)."""
    mine = rs.pick(ev.family)
    ch = rs.chain(ev.table, ev.chain, ev.family)
    if ch is None or not ch.hook:
        return []
    nat_seen = any((c := rs.chain(e.table, e.chain, e.family)) is not None and c.type == "nat" for e in events)
    me = (ch.priority or 0, -(ch.reg or 0))
    many = len(fams := rs.of_families({e.family for e in events})) > 1
    out = []
    for r in fams:
        for t, chains in r.tables.items():
            for c in chains.values():
                if c is ch or c.hook != ch.hook or c.devices != ch.devices:
                    continue
                # across families only the priority orders them (registration order is per listing)
                later = (c.priority or 0, -(c.reg or 0)) > me if r is mine else (c.priority or 0) > me[0]
                if later and (c.type != "nat" or nat_seen):
                    fam = NFT_WORDS.get(r.family or "", r.family)
                    out.append(f"{fam} {t}:{c.name}" if many and fam else f"{t}:{c.name}")
    return out


def hook_passed(rs: RulesetView | None, events: Sequence[TraceEvent], steps: Sequence[Any], i: int,
                hook: str) -> tuple[bool, str | None]:
    """Whether the base chain step ``i`` runs under is the last of its hook; else what runs after it."""
    j = i
    while j > 0 and steps[j].depth > 0:
        j -= 1
    table, chain = events[j].table, events[j].chain
    ch = rs.chain(table, chain, events[j].family) if rs is not None else None
    if ch is not None and ch.hook:
        later = _later_base_chains(rs, events[j], events)  # type: ignore[arg-type]  # rs is set: ch came from it
        return not later, ", ".join(later) or None
    if chain in HOOK_TABLES:
        last = expected_last_table(rs, hook, events)
        return table == last, last
    # a native base chain without its listing: a traced packet reports every base chain it passes
    return events[i].source in _NFTRACE_SOURCES, None


def start_missing(first: TraceEvent) -> bool:
    """A traced packet reports each base chain it runs with a packet dump first (``base``): a
    packet whose first event opens none began before the input did (a paste that starts mid-packet)."""
    # (getattr: a path given as steps alone, explain._PathStep, names no source: a kernel log's)
    return getattr(first, "source", None) in _NFTRACE_SOURCES and not first.base


def start_missing_note(first: TraceEvent, shared: Container[str] = ()) -> str:
    return (f"the packet's start is missing from the input: its steps before {where(first, shared)} "
            "(and the packet dump that names it) are not there, so where it came from is unknown")


def decide(rs: RulesetView | None, events: Sequence[TraceEvent], steps: Sequence[Any],
           shared: Container[str] = ()) -> Decision:
    """Fate, verdict (None when the fate is UNKNOWN), its step, last place seen, notes; ``shared``:
    the table names named with their family (``Explanation.shared``)."""
    if not events:
        return Decision(Fate.UNKNOWN, None, None, None, [])
    last_i = len(events) - 1
    last, last_ev = steps[last_i], events[last_i]
    last_seen = where(last_ev, shared)
    hooks = [sp.hook for sp in steps if sp.hook]
    first_hook = hooks[0] if hooks else None
    last_hook = hooks[-1] if hooks else None
    notes: list[str] = [start_missing_note(events[0], shared)] if start_missing(events[0]) else []

    if last.action in ("drop", "reject"):
        fate = Fate.DROPPED if last.action == "drop" else Fate.REJECTED
        reason = f"{fate.value} by {_what(last_ev, last, shared)}"
        return Decision(fate, _verdict(events, steps, last_i, reason), last_i, last_seen, notes)
    if last.action == "queue":
        notes.append(f"queued to user space by {_what(last_ev, last, shared)}: the verdict is a program's")
        return Decision(Fate.UNKNOWN, None, None, last_seen, notes)

    # the last terminal decision of the filter table, else of any table
    decisive: int | None = None
    for prefer_filter in (True, False):
        for i in range(last_i, -1, -1):
            ev, sp = events[i], steps[i]
            if prefer_filter and ev.table != "filter":
                continue
            if sp.action in ENDS_TABLE or (ev.kind is StepKind.POLICY and sp.action == "accept"):
                decisive = i
                break
        if decisive is not None:
            break

    # did the last table the packet was in end with an accept, and was it the hook's last table?
    ended = last.action in ENDS_TABLE or (last_ev.kind is not StepKind.RULE and last.action == "accept")
    passed, after = hook_passed(rs, events, steps, last_i, last_hook) if ended and last_hook else (False, None)
    fate = Fate.UNKNOWN
    if last_hook == "POSTROUTING":
        fate = Fate.SENT if first_hook == "OUTPUT" else Fate.FORWARDED
    elif passed and last_hook == "INPUT":
        fate = Fate.DELIVERED
        if first_hook == "OUTPUT":
            notes.append("delivered locally: the packet looped back (OUTPUT, POSTROUTING, then PREROUTING "
                         "and INPUT)")
    elif passed and last_hook == "FORWARD":
        fate = Fate.FORWARDED
    elif passed and last_hook == "OUTPUT":
        fate = Fate.SENT

    if fate is Fate.UNKNOWN:
        if last_hook == "PREROUTING" and passed:
            notes.append(ROUTING_NOTE)
        elif last.action == "unknown" and last_ev.kind is not StepKind.RULE:
            notes.append(f"last seen at {_what(last_ev, last, shared)}: its verdict is not known without the "
                         "ruleset" if rs is None else
                         f"last seen at {_what(last_ev, last, shared)}: the ruleset does not say its verdict")
        elif last.action == "return" and last_ev.kind is StepKind.RETURN and rs is None:
            notes.append(f"last seen at the end of {last_seen}: legacy iptables reports an unconditional "
                         "-j ACCEPT or -j DROP rule there as well; without the ruleset the verdict is unknown")
        elif ended and last_hook is not None:
            notes.append(f"last seen in {table_label(last_ev.table, last_ev.label_family, shared)} {last_hook}: the trace stops before the hook's "
                         f"last {'table' if ':' not in (after or '') else 'base chain'} ({after}) decided")
        return Decision(fate, None, None, last_seen, notes)
    if decisive is None:
        return Decision(fate, None, None, last_seen, notes)
    ev = events[decisive]
    reason = f"accepted by {_what(ev, steps[decisive], shared)}"
    return Decision(fate, _verdict(events, steps, decisive, reason), decisive, last_seen, notes)
