"""Both backends in one session: legacy xtables and nf_tables steps of one packet, merged.

Legacy xtables tables and nf_tables base chains hook into the same netfilter hooks, each at its
priority (legacy raw -300, mangle -150, nat -100 / 100, filter 0, security 50; an nft base
chain at whatever it declares). On each hook the kernel runs them in priority order; an accept
in one ends only that table or chain, the next one still sees the packet, and a drop anywhere
is final. So:

* the steps of both backends are put in the kernel's order: by hook, then by the priority of
  the base chain (table) they ran under. For two blocks at one priority the kernel runs the one
  registered later first; which that was cannot be read back, but a block that ends the packet
  (drop, reject) must have run last, since the other one still saw the packet;
* the packet's fate is a drop or reject by either backend when one happened (the packet got
  that far); an accept, delivery or forward needs both backends' word: when one of them left
  no step at all for the packet, the fate is unknown and said to be incomplete. One backend's
  verdict is never printed as the packet's fate;
* a backend's part shows only the hooks where that backend holds chains: a part that ends at an
  earlier hook than the other backend's (nf_tables with only a nat prerouting chain that DNATs,
  legacy filter INPUT after it) let the packet through, since the other backend saw it later;
  its own "last seen in PREROUTING" is not the packet's end. The fate is then the word of the
  backends that saw the packet at its last hook, unless the earlier one holds chains on a later
  hook of the path (``holds``) and left no step there: then the fate is incomplete;
* a NAT or mark change one backend saw happen outside its rules is the other backend's rule that
  made it when an earlier step of the merged path is such a rule (nf_tables reports no packet
  after its last rule, so its dnat shows in the legacy steps that follow).
"""

from __future__ import annotations

from dataclasses import replace

from ..explain.causes import DNAT_ACTIONS, SNAT_ACTIONS
from ..model import CauseLink, Change, Explanation, Fate, Packet, Ruleset, Step, StepKind, TraceEvent, Verdict
from ..rulesets.nft_model import table_label

LEGACY_LABEL = "legacy"
NFT_LABEL = "nft"
HOOK_RANK = {"INGRESS": -1, "PREROUTING": 0, "OUTPUT": 0, "INPUT": 1, "FORWARD": 1, "POSTROUTING": 2, "EGRESS": 3}
ENDS = (Fate.DROPPED, Fate.REJECTED)
NFT_SOURCE = "nftrace"


def is_nft(ev: TraceEvent) -> bool:
    return ev.source == NFT_SOURCE


def split(events: list[TraceEvent]) -> tuple[list[TraceEvent], list[TraceEvent]]:
    """(legacy events, nf_tables events) of one packet, each in arrival order."""
    return [e for e in events if not is_nft(e)], [e for e in events if is_nft(e)]


def _blocks(steps: list[Step], label: str) -> list[tuple[tuple[int, int], str, list[Step]]]:
    """Runs of steps under one base chain: ((hook rank, priority), label, steps)."""
    out: list[tuple[tuple[int, int], str, list[Step]]] = []
    key = None
    for s in steps:
        if s.depth == 0 and s.hook is not None:
            k = (HOOK_RANK.get(s.hook, 1), s.priority if s.priority is not None else 0)
            if key is None or k != key or (out and out[-1][2][-1].kind.value == "policy"):
                key = k
                out.append((k, label, []))
        if not out:
            out.append(((0, 0), label, []))
        out[-1][2].append(s)
    return out


def held(rulesets: list[Ruleset], family: str | None, events: list[TraceEvent]) -> set[str]:
    """The hooks (``INPUT``, …) where these rulesets hold chains that a packet of ``family`` (the
    address family, ``ipv4``) with these events passes: nf_tables base chains of its family's and
    inet tables, the built-in chains of legacy tables; nat ones only for a connection's first
    packet (its events show a nat step)."""
    fams = {family, "inet"} if family else None
    nat_chains = {(t, c.name) for rs in rulesets for t, chains in rs.tables.items() for c in chains.values()
                  if c.type == "nat" or (c.hook is None and t == "nat")}
    first = any((e.table, e.chain) in nat_chains for e in events)
    out: set[str] = set()
    for rs in rulesets:
        if fams is not None and rs.family is not None and rs.family not in fams:
            continue
        for t, chains in rs.tables.items():
            for c in chains.values():
                if (t, c.name) in nat_chains and not first:
                    continue
                hook = c.hook.upper() if c.hook else c.name if c.builtin and c.name in HOOK_RANK else None
                if hook is not None:
                    out.add(hook)
    return out


def _ends(block: list[Step]) -> bool:
    return any(s.action in ("drop", "reject") for s in block)


def order(parts: list[tuple[str, Explanation]]) -> list[tuple[str, list[Step]]]:
    """Every step of both parts in the kernel's order, as (label, block of steps)."""
    blocks = [b for label, e in parts for b in _blocks(e.steps, label)]
    # stable sort: within one backend the arrival order stays; at equal (hook, priority) the
    # block that ended the packet goes last
    idx = {id(b[2]): i for i, b in enumerate(blocks)}
    blocks.sort(key=lambda b: (b[0], _ends(b[2]), idx[id(b[2])]))
    return [(label, steps) for _k, label, steps in blocks]


def describe(label: str, v: Verdict | None, shared: frozenset[str] = frozenset()) -> str:
    """``accepted by nft filter:INPUT rule 1`` / ``dropped by legacy filter:INPUT policy DROP``; an
    nf_tables table whose name two families share with its family (``nft ip filter:INPUT``)."""
    if v is None:
        return f"no decision by {label}"
    past = {"accept": "accepted", "drop": "dropped", "reject": "rejected", "queue": "queued",
            "dnat": "accepted (DNAT)", "snat": "accepted (SNAT)", "masquerade": "accepted (MASQUERADE)",
            "redirect": "accepted (REDIRECT)"}.get(v.action, v.action)
    where = f"{table_label(v.table, v.family, shared)}:{v.chain}" if v.table else "?"
    how = f"policy {v.action.upper()}" if v.rule is None and "policy" in v.reason else f"rule {v.num}"
    return f"{past} by {label} {where} {how}"


def merge(packet: Packet, parts: list[tuple[str, Explanation]], *, missing: list[str],
          ordered: list[tuple[str, list[Step]]] | None = None,
          holds: dict[str, set[str]] | None = None) -> Explanation:
    """One explanation of a packet from its legacy and nf_tables parts (``(label, explanation)``,
    only the parts with steps); ``missing``: labels of backends that hold rules on the packet's
    way but left no step (lost, or not traced); ``ordered``: the parts' steps in the kernel's order
    when the caller knows it (simulate walks both backends in that order), else ``order(parts)``;
    ``holds``: per label, the hooks (``INPUT``, …) where that backend has chains, when known."""
    ordered = order(parts) if ordered is None else ordered
    # each backend's shared table names (nft: ``inet filter`` beside iptables-nft's ``filter``); a
    # legacy table is told from an nf_tables one by its step's note, not named ``ip filter``
    out = Explanation(packet, shared=frozenset().union(*(e.shared for _label, e in parts)))
    for label, steps in ordered:
        for s in steps:
            s.note = f"{label}: {s.note}" if s.note else (LEGACY_LABEL + " xtables" if label == LEGACY_LABEL
                                                            else "nf_tables")
            out.steps.append(s)
    by_label = dict(parts)
    new_index = {id(s): i for i, s in enumerate(out.steps)}
    def moved(e: Explanation, step: int | None) -> int | None:
        return new_index.get(id(e.steps[step])) if step is not None and 0 <= step < len(e.steps) else None

    # a change one backend saw happen between its steps is another backend's rule when that
    # backend's part names the rule that made it: keep that one
    made = {(c.what, c.new) for _l, e in parts for c in (*e.nat, *e.marks) if c.rule is not None}
    causes: list[tuple[str, CauseLink]] = []  # (backend label, cause), labelled below
    for label, e in parts:
        out.nat += [replace(c, step=moved(e, c.step)) for c in e.nat if c.rule is not None or (c.what, c.new) not in made]
        out.marks += [replace(c, step=moved(e, c.step)) for c in e.marks
                      if c.rule is not None or (c.what, c.new) not in made]
        causes += [(label, replace(c, step=moved(e, c.step))) for c in e.cause]
        out.warnings += [f"{label}: {w}" for w in e.warnings]
        out.notes += [f"{label}: {n}" for n in e.notes]
        out.drops += e.drops
    last_block = {label: i for i, (label, _s) in enumerate(ordered)}  # where each backend decided
    labels_in_order = sorted(last_block, key=last_block.__getitem__)
    enders = [label for label in labels_in_order if by_label[label].fate in ENDS]
    through, unseen = _passed_through(ordered, labels_in_order, holds)
    # a part the packet went on from: its "last seen" is not where the packet ended
    out.notes = [n for n in out.notes if not any(n.startswith(f"{label}: last seen") for label in through)]
    sentence = ", then ".join(_passed(label, by_label[label]) if label in through
                              else describe(label, by_label[label].verdict, by_label[label].shared)
                              for label in labels_in_order)
    out.nat = [_setter(out, c) for c in out.nat]
    out.marks = [_setter(out, c) for c in out.marks]
    decided_by = enders[-1] if enders else labels_in_order[-1] if labels_in_order and not missing else None
    out.cause = [c if label == decided_by else replace(c, role=f"{label}: {c.role}")
                 for label, c in causes]
    if enders:
        end = by_label[enders[-1]]
        out.fate, out.last_seen = end.fate, end.last_seen
        decider = end.verdict
    elif missing:
        out.fate = Fate.UNKNOWN
        decider = None
        out.last_seen = parts[-1][1].last_seen if parts else None
        out.warnings.append(
            f"fate incomplete: {' and '.join(missing)} also hold{'s' if len(missing) == 1 else ''} rules on "
            "this packet's way but no step of "
            + ("it" if len(missing) == 1 else "them")
            + " arrived; " + (sentence or "nothing decided") + " is only part of the packet's path")
    elif unseen:
        out.fate = Fate.UNKNOWN
        decider = None
        out.last_seen = by_label[labels_in_order[-1]].last_seen
        out.warnings += [f"fate incomplete: {label} holds rules on {', '.join(hooks)}, where the packet was seen, "
                         f"but no step of {label} arrived there; " + sentence + " is only part of the packet's path"
                         for label, hooks in unseen]
    else:
        fates = {e.fate for label, e in parts if label not in through}
        out.fate = fates.pop() if len(fates) == 1 else Fate.UNKNOWN
        last = by_label[labels_in_order[-1]] if labels_in_order else None
        decider = last.verdict if last is not None else None
        out.last_seen = last.last_seen if last is not None else None
        if out.fate is Fate.UNKNOWN and parts:
            out.warnings.append("the two backends' paths end differently: "
                                + "; ".join(f"{label}: {e.fate}" for label, e in parts if label not in through))
    if decider is not None:
        reason = sentence if len(labels_in_order) > 1 else f"{labels_in_order[0]}: {decider.reason}"
        out.verdict = Verdict(decider.action, decider.table, decider.chain, decider.num, decider.rule,
                              reason=reason, kind=decider.kind, family=decider.family)
    elif sentence:
        out.notes.append(sentence)
    return out


def _passed_through(ordered: list[tuple[str, list[Step]]], labels: list[str],
                    holds: dict[str, set[str]] | None) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The backends whose part ends at an earlier hook than the merged path's last (the packet went
    on: another backend saw it later), and of those, each with the later hooks of the path where it
    holds chains (``holds``) but left no step: (through labels, [(label, hooks)])."""
    seen: dict[str, list[str]] = {}  # label -> the hooks its steps show, in order
    path: list[str] = []
    for label, steps in ordered:
        for s in steps:
            if s.depth == 0 and s.hook is not None:
                seen.setdefault(label, []).append(s.hook)
                if not path or path[-1] != s.hook:
                    path.append(s.hook)
    if not path:
        return [], []
    end = HOOK_RANK.get(path[-1], 1)
    through = [label for label in labels if seen.get(label) and HOOK_RANK.get(seen[label][-1], 1) < end]
    unseen = []
    for label in through:
        later = path[path.index(seen[label][-1]) + 1:]
        held = [h for h in later if h in (holds or {}).get(label, set()) and h not in seen[label]]
        if held:
            unseen.append((label, held))
    return through, unseen


def _passed(label: str, e: Explanation) -> str:
    """A part the packet went on from, in words: its last accepting (or NAT) step."""
    for s in reversed(e.steps):
        if s.depth == 0 and (s.action == "accept" or s.action in DNAT_ACTIONS or s.action in SNAT_ACTIONS):
            how = "policy" if s.kind is StepKind.POLICY else ""
            return describe(label, Verdict(s.action, s.table, s.chain, s.num, s.rule, reason=how,
                                           family=s.event.label_family), e.shared)
    return f"passed {label}" + (f" {e.last_seen}" if e.last_seen else "")


def _mark_value(text: str | None) -> int | None:
    try:
        return int(text, 16) if text else 0
    except ValueError:
        return None


def _setter(out: Explanation, c: Change) -> Change:
    """A NAT or mark change one backend's part saw happen outside its rules, given to the other
    backend's rule that made it: the latest earlier step of the merged path whose rule rewrites
    that field (a dnat for DST/DPT, an snat or masquerade for SRC/SPT), or sets a mark after which
    the packet carries the new value (nf_tables reports the mark after the rule ran)."""
    if c.rule is not None or c.step is None:
        return c
    nat = DNAT_ACTIONS if c.what in ("DST", "DPT") else SNAT_ACTIONS if c.what in ("SRC", "SPT") else None
    if nat is None and c.what != "MARK":
        return c
    want = _mark_value(c.new)
    for j in range(c.step - 1, -1, -1):
        st = out.steps[j]
        if st.note == out.steps[c.step].note:
            continue  # the same backend's step: its part already looked
        if st.rule is None:
            continue
        if (st.action in nat if nat is not None else
                st.action == "continue" and "mark" in st.rule.text.lower()
                and _mark_value(st.event.fields.get("MARK")) == want):
            return replace(c, table=st.table, chain=st.chain, num=st.num, rule=st.rule, step=j, note="")
    return c


def only_one(expl: Explanation, untraced: str) -> Explanation:
    """A packet of a session that traced one backend while ``untraced`` also holds rules on the
    hooks: a drop or reject seen is the packet's end; anything else is not its fate."""
    if expl.fate in ENDS:
        return expl
    if expl.verdict is not None:
        expl.notes.append(f"the traced backend's word: {describe('it', expl.verdict).replace(' by it', '')}"
                          f" ({expl.fate})")
    expl.fate = Fate.UNKNOWN
    expl.verdict = None
    expl.warnings.append(f"fate incomplete: {untraced} also holds rules on this packet's way and was not "
                         "traced (trace both with --backend both)")
    return expl
