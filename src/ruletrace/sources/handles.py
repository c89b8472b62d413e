"""nf_tables trace events: implied chain returns, and rule handles -> rule numbers via a ruleset.

nf_tables reports no event when a packet falls off the end of a user chain (the kernel's
handle-less RULE event is not printed by ``nft monitor trace`` nor ``xtables-monitor``), while
the legacy kernel log says ``chain:return:N``. ``add_returns`` puts those steps back from the
call stack; ``resolve_handles`` numbers rule steps by handle (or rule text) and end-of-chain
steps as rules + 1, as nf_log does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from ..model import Ruleset, StepKind, TraceEvent

TERMINAL = frozenset({"accept", "drop", "reject", "queue", "stolen", "stop"})


def add_returns(events: Iterable[TraceEvent]) -> Iterator[TraceEvent]:
    """Yield the events, with a RETURN step inserted where a jumped-to chain ended silently."""
    stacks: dict[object, list[tuple[str, str]]] = {}
    for ev in events:
        key = ev.packet_id
        here = (ev.table, ev.chain)
        st = stacks.setdefault(key, [])
        if st and st[-1] != here:
            if here in st:
                while st[-1] != here:
                    table, chain = st.pop()
                    yield TraceEvent(
                        table, chain, StepKind.RETURN, None, ts=ev.ts, family=ev.family, ident=ev.ident,
                        packet_id=ev.packet_id, origin=ev.origin, source=ev.source, fields=ev.fields,
                    )
            else:
                st.clear()
        if not st:
            st.append(here)
        yield ev
        v = ev.verdict or ""
        if ev.kind is StepKind.POLICY or v in TERMINAL:
            st.clear()
        elif v.startswith("jump:"):
            st.append((ev.table, v[5:]))
        elif v.startswith("goto:"):
            if len(st) > 1:
                st[-1] = (ev.table, v[5:])
            else:
                st.append((ev.table, v[5:]))
        elif v == "return" and len(st) > 1:
            st.pop()
        if not st:
            stacks.pop(key, None)


# " TRACE: 2 ead7b103 filter:INPUT:rule:0x6:JUMP:WEB  -4 -t filter -A INPUT -p tcp -j WEB"
_XT_TEXT = re.compile(r"TRACE: \d+ [0-9a-f]+ \S+  (.*\S)")
# "trace id 8c0ec022 ip filter INPUT rule meta l4proto tcp ... jump WEB # handle 6 (verdict jump WEB)"
_NFT_HEAD = re.compile(r"trace id [0-9a-f]+ \S+ \S+ \S+ rule ")


def rule_text(ev: TraceEvent) -> str | None:
    """The rule text a monitor printed for this step (from the event's ``raw`` line), if any."""
    raw = ev.raw
    if not isinstance(raw, str):
        return None
    if ev.source == "xtables-monitor":
        m = _XT_TEXT.search(raw)
        return m[1] if m else None
    from .nft_monitor import _rule_tail  # (nft_monitor imports this module)

    m = _NFT_HEAD.match(raw)
    t = _rule_tail(raw[m.end() :]) if m else None
    return t[0] if t is not None and not t[3] else None


def _norm(text: str) -> str:
    """Rule text without counters: ``counter packets 3 bytes 180`` -> ``counter``; ``[0:0]`` dropped."""
    toks = text.split()
    out: list[str] = []
    i = 0
    while i < len(toks):
        if toks[i] == "counter" and i + 4 < len(toks) + 1 and toks[i + 1 : i + 2] == ["packets"]:
            out.append("counter")
            i += 5
            continue
        if toks[i] in ("-4", "-6") and not out:
            i += 1
            continue
        if toks[i] == "-t" and not out and i + 1 < len(toks):
            i += 2
            continue
        out.append(toks[i])
        i += 1
    return " ".join(out)


def resolve_handles(events: Iterable[TraceEvent], ruleset: Ruleset) -> Iterator[TraceEvent]:
    """Fill ``num`` of nf_tables events from the ruleset: by handle, else by rule text; ends = rules + 1."""
    by_text: dict[tuple[str, str, str], int] = {}
    for table, chains in ruleset.tables.items():
        for cname, chain in chains.items():
            for rule in chain.rules:
                by_text.setdefault((table, cname, _norm(rule.text)), rule.num)
    for ev in events:
        if ev.num is None:
            chain = ruleset.chain(ev.table, ev.chain)
            if ev.kind is StepKind.RULE:
                rule = ruleset.handles.get((ev.table, ev.chain, ev.handle)) if ev.handle is not None else None
                if rule is not None:
                    ev.num = rule.num
                else:
                    text = rule_text(ev)
                    if text:
                        ev.num = by_text.get((ev.table, ev.chain, _norm(text)))
            elif chain is not None:
                ev.num = len(chain.rules) + 1
        yield ev
