"""Why a packet ended where it did: NAT rewrites, mark changes and the cause chain.

Field values in a TRACE step are the packet as it was when that step's rule matched, before
its target ran. So a mark set by rule *i* shows from step *i+1* on, and a DNAT made in nat
PREROUTING shows from the first step of the next hook on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container
from dataclasses import replace

from ..errors import RuletraceError
from ..fields import show_address
from ..model import CauseLink, Change, Explanation, Fate, Rule, RulesetView, Step, StepKind, TraceEvent
from ..rulesets.nft_model import table_label
from ..rulesets.options import parse_spec, xmark
from ..sources.kernel_log import complete  # field text that reaches the packet's end
from .owners import FALLS_TO_CATCH_ALL, Owner, owner_of, published_port, rule_comments

# iptables-save form, and the `iptables -L` row form ("tcp dpt:80", "mark match 0x1")
_DPORT = re.compile(r"--dports? (\S+)|\bdpts?:(\S+)|multiport dports (\S+)")
_MARK_MATCH = re.compile(r"-m mark (!\s+)?--mark (\S+)|(?<!conn)mark match (!)?(\S+)")
_TO = re.compile(r"--to(?:-destination|-source|-ports)? (\S+)")
DNAT_ACTIONS = ("dnat", "redirect", "netmap")
SNAT_ACTIONS = ("snat", "masquerade", "netmap")


def rule_comment(rule: Rule | None) -> str | None:
    """The first comment of a rule, unquoted (the grammar: ``owners.rule_comments``)."""
    if rule is None:
        return None
    got = rule_comments(rule.text)
    return got[0] if got else None


def rule_dport(rule: Rule | None) -> str | None:
    if rule is None:
        return None
    m = _DPORT.search(rule.text)
    return next((g for g in m.groups() if g), None) if m else None


def _place(table: str | None, chain: str | None, num: int | None, family: str | None = None,
           shared: Container[str] = ()) -> str:
    t = table_label(table or "?", family, shared)
    return f"{t}:{chain} rule {num}" if num is not None else f"a rule of {t}:{chain}"


def _where(step: Step, shared: Container[str] = ()) -> str:
    """``table:chain rule N`` of a step; its table named with its family where the path shows the
    name in two (``shared``, ``Explanation.shared``)."""
    num = step.num if step.num is not None else step.rule.num if step.rule is not None else None
    t = table_label(step.table, step.event.label_family, shared)
    if num is None:
        return f"a rule of {t}:{step.chain}"
    return f"{t}:{step.chain} rule {num}"


def _at_step(expl: Explanation, table: str | None, chain: str | None, num: int | None, step: int | None) -> str:
    """``_place`` of a link or change made at step ``step`` of ``expl`` (its family from that step)."""
    if step is None or not 0 <= step < len(expl.steps):
        return _place(table, chain, num, None, expl.shared)
    s = expl.steps[step]
    fam = s.event.label_family
    if s.kind is StepKind.POLICY and s.rule is None:  # a chain's policy is no rule of it (review)
        return f"{table_label(table or '?', fam, expl.shared)}:{chain} policy"
    return _place(table, chain, num, fam, expl.shared)


def _addr(f: dict[str, str], ip: str, port: str) -> str | None:
    a = f.get(ip)
    if a is None:
        return None
    a = show_address(a)  # the printed form: "DST fd00:10::2 -> …", whatever form the log used
    p = f.get(port)
    if p is None:
        return a
    return f"[{a}]:{p}" if ":" in a else f"{a}:{p}"


def _mark_value(f: dict[str, str]) -> int:
    v = f.get("MARK")
    if not v:
        return 0
    try:
        return int(v, 0)
    except ValueError:
        return 0


# Sources whose rule events show the packet after the rule's statements ran (nf_tables trace
# events); in kernel-log / NFLOG TRACE a rule's line is written when it matches, before its target.
AFTER_STATEMENTS = frozenset({"nft-monitor", "xtables-monitor", "nftrace"})
# the simulator's nf_tables steps (simulate/semantics.NFT_SOURCE): the whole packet as it is after the
# rule's statements, at every step (no payload printed once per base chain): any change is the rule's own
AFTER_ALL = "simulate-nft"


def setter_index(steps: list[Step], i: int, what: str) -> int:
    """The step that made a change first visible at step ``i``: one place for every source kind.

    TRACE lines (kernel log, NFLOG, ulogd) are written when a rule matches, before its target
    runs: a change first seen at step i was made by step i-1. nf_tables trace events are sent
    after a rule's statements ran, so a mark first seen at step i was set by step i itself;
    their packet payload is printed once per base chain, so an address rewrite shows, as in
    the kernel log, from the step after the rule that made it.
    """
    source = steps[i].event.source
    if source == AFTER_ALL or (what == "MARK" and source in AFTER_STATEMENTS):
        return i
    return i - 1


def _probably(s: Step, shared: Container[str] = ()) -> str:
    t = table_label(s.table, s.event.label_family, shared)
    if s.num is not None or s.rule is not None:
        where = _where(s, shared)
    elif s.event.handle is not None:
        where = f"{t}:{s.chain} rule handle {s.event.handle}"
    else:
        where = f"a rule of {t}:{s.chain}"
    return f"probably {where} (its text is not in the ruleset)"


def _host(addr: str) -> str:
    """The address of ``a.b.c.d:port``, ``[v6]:port``, bare v6, or the first of a range."""
    if addr.startswith("["):
        return addr[1 : addr.find("]")]
    if addr.count(":") == 1:
        addr = addr.split(":")[0]
    return addr.split("-")[0]


def _untraced_rules(steps: list[Step], i: int, table: str, view: RulesetView,
                    fits: Callable[[Rule], bool]) -> list[Rule]:
    """Rules of ``table`` that ``fits`` and a lost trace line may have hidden before step ``i``: those of
    the chains the path shows there, and of the chains its rules jumped to (and theirs, up to 256)."""
    family = next((s.event.family for s in reversed(steps[:i]) if s.table == table), None)
    shown = list(dict.fromkeys(s.chain for s in steps[:i] if s.table == table))
    todo = [s.rule.target for s in steps[:i] if s.table == table and s.kind is StepKind.RULE
            and s.rule is not None and s.rule.target and s.rule.target not in shown]
    found: list[Rule] = []
    seen: set[str] = set()
    for name in shown:  # (no walk from these: their jumps the path shows)
        seen.add(name)
        chain = view.chain(table, name, family)
        found += [r for r in chain.rules if fits(r)] if chain is not None else []
    while todo and len(seen) < 256:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        chain = view.chain(table, name, family)
        if chain is None:
            continue
        for r in chain.rules:
            if fits(r):
                found.append(r)
            elif r.target and view.chain(table, r.target, family) is not None:
                todo.append(r.target)
    return found


def _untraced_mark_rules(steps: list[Step], i: int, old: int, new: int, view: RulesetView | None) -> str | None:
    """A mark changed between two steps with no rule of the path to set it: the MARK rules that make
    ``new`` of ``old`` (``rulesets.options.xmark``) where a lost trace line can have been (below). A
    guess from the ruleset, said so."""
    if view is None:
        return None

    def sets(r: Rule) -> bool:
        if r.target != "MARK":
            return False
        try:
            parsed = parse_spec(r.spec)
            xm = xmark({o: (a[0] if a else "") for _, o, a in parsed.target_opts}, None)
        except RuletraceError:
            return False
        return xm is not None and (old & ~xm[1] & 0xFFFFFFFF) ^ xm[0] == new

    # only where the lost line can be: after the step before (its chain's later rules, the chain its rule
    # jumped to) and before the step that first shows the new mark (its chain's earlier rules); a chain
    # the step before left by its policy or end showed the old mark to its end (review)
    a, b = steps[i - 1], steps[i]
    places: list[tuple[str, str, int, int]] = []  # (table, chain, first, last rule number)
    if a.kind is StepKind.RULE and a.num is not None:
        places.append((a.table, a.chain, a.num + 1, 1 << 30))
        if a.rule is not None and a.rule.target:
            places.append((a.table, a.rule.target, 1, 1 << 30))
    if b.num is not None:
        places.append((b.table, b.chain, 1, b.num - 1))
    found: list[Rule] = []
    for table, name, lo, hi in places:
        ch = view.chain(table, name, b.event.family)
        found += [r for r in ch.rules if lo <= r.num <= hi and sets(r) and r not in found] if ch is not None else []
    if not found:
        return None
    names = ", ".join(f"{r.table}:{r.chain} rule {r.num}" for r in found[:3]) + (" …" if len(found) > 3 else "")
    one = "probably " if len(found) == 1 else "probably one of "
    return f"{one}{names} (it sets this mark); its trace line is not in the log"


def _untraced_nat_rules(steps: list[Step], i: int, what: str, new: str, view: RulesetView | None,
                        shared: Container[str] = ()) -> str | None:
    """Trace lines lost between a jump and the change: the nat rules of the jumped chains (and the
    chains they jump to) whose ``--to`` gives the new address. A guess from the ruleset, said so."""
    if view is None:
        return None
    j = i - 1
    while j >= 0 and steps[j].table != "nat":
        j -= 1
    if j < 0:
        return None
    s = steps[j]
    actions = DNAT_ACTIONS if what == "DST" else SNAT_ACTIONS
    want_ip = _host(new)

    def gives(r: Rule) -> bool:
        if (r.target or "").lower() not in actions:
            return False
        m = _TO.search(r.text)
        to = m.group(1) if m else ""
        return bool(to) and (to == new or _host(to) == want_ip)

    found = _untraced_rules(steps, i, "nat", view, gives)
    if not found:
        return None
    port = steps[i - 1].event.fields.get("DPT" if what == "DST" else "SPT")
    if port and len(found) > 1:  # the rules for the port the packet had before the change, if named
        same = [r for r in found if rule_dport(r) == port]
        found = same or found
    names = ", ".join(f"nat:{r.chain} rule {r.num}" for r in found[:3]) + (" …" if len(found) > 3 else "")
    one = "probably " if len(found) == 1 else "probably one of "
    jumped = s.kind is StepKind.RULE and s.rule is not None and s.rule.target == found[0].chain
    reached = f", reached from {_where(s, shared)}" if jumped else ""
    return f"{one}{names}{reached}; its trace line is not in the log"


def address_change(before: dict[str, str], after: dict[str, str], ip: str, port: str) -> tuple[str, str] | None:
    """(old, new) ``addr:port`` when the packet's ``ip``/``port`` differ between two steps' fields, else None."""
    if (port in before) != (port in after):  # one line was cut: compare what both show
        before, after = {ip: before.get(ip, "")}, {ip: after.get(ip, "")}
    old, new = _addr(before, ip, port), _addr(after, ip, port)
    if not old or not new or old == new:
        return None
    return old, new


def mark_change(a: TraceEvent, b: TraceEvent) -> tuple[int, int] | None:
    """(old, new) mark when it differs between two consecutive events, else None (also when a line
    was cut before its MARK= field: the mark is not known there)."""
    fa, fb = a.fields, b.fields
    if ("MARK" in fa) != ("MARK" in fb):
        cut, f = (b, fb) if "MARK" in fa else (a, fa)
        if isinstance(cut.raw, (str, bytes)) and not complete(f):
            return None  # (simulated events carry a snapshot tuple and leave MARK out when it is 0)
    old, new = _mark_value(fa), _mark_value(fb)
    return None if old == new else (old, new)


def _nat_changes(expl: Explanation, view: RulesetView | None = None) -> None:
    steps = expl.steps
    used: set[int] = set()
    for i in range(1, len(steps)):
        a, b = steps[i - 1].event, steps[i].event
        if a.raw is b.raw and a.raw is not None:  # one text object (kernel_log shares it): no change
            continue
        before, after = a.fields, b.fields
        for what, ip, port, actions in (("DST", "DST", "DPT", DNAT_ACTIONS), ("SRC", "SRC", "SPT", SNAT_ACTIONS)):
            got = address_change(before, after, ip, port)
            if got is None:
                continue
            old, new = got
            j = setter_index(steps, i, what)
            s = steps[j] if j >= 0 else None
            if s is not None and s.kind is StepKind.RULE and s.action in actions:
                used.add(j)
                expl.nat.append(Change(what, old, new, s.table, s.chain, s.num, s.rule, j))
            elif s is not None and s.kind is StepKind.RULE and s.rule is None and s.table == "nat":
                # the rule's chain is missing from the ruleset (or there is none): a nat rule ran
                used.add(j)
                expl.nat.append(Change(what, old, new, s.table, s.chain, s.num, None, j, note=_probably(s, expl.shared)))
            elif not any(st.table == "nat" for st in steps[:i]):
                expl.nat.append(Change(
                    what, old, new, step=i,
                    note="rewritten by conntrack: the connection was NATed when it started; no nat rule ran now",
                ))
            else:
                guess = _untraced_nat_rules(steps, i, what, new, view, expl.shared)
                expl.nat.append(Change(
                    what, old, new, step=i,
                    note=guess or f"changed outside the traced rules; first seen at {_where(steps[i], expl.shared)}",
                ))
    # SNAT/MASQUERADE in POSTROUTING act after the last TRACE step: state them from the rule
    for j, s in enumerate(steps):
        if s.action in ("snat", "masquerade") and j not in used:
            expl.nat.append(leaving_snat(s, j))


LEAVING_NOTE = "applied as the packet leaves; not visible in later trace steps"


def leaving_snat(s: Step, j: int) -> Change:
    """The SNAT/MASQUERADE of step ``j`` (``s``), which acts after the last TRACE step: its
    old source is the packet's own (explain/pathcache.py remakes it for each packet of a path)."""
    f = s.event.fields
    m = _TO.search(s.rule.text) if s.rule is not None else None
    new = m.group(1) if m else (f"address of {f.get('OUT') or 'the outgoing interface'}"
                                if s.action == "masquerade" else "an address the rule gives")
    return Change("SRC", _addr(f, "SRC", "SPT") or "its source", new, s.table, s.chain, s.num, s.rule, j,
                  note=LEAVING_NOTE)


def _mark_changes(expl: Explanation, view: RulesetView | None = None) -> None:
    steps = expl.steps
    for i in range(1, len(steps)):
        a, b = steps[i - 1].event, steps[i].event
        if a.raw is b.raw and a.raw is not None:
            continue
        got = mark_change(a, b)
        if got is None:
            continue
        old, new = got
        j = setter_index(steps, i, "MARK")
        s = steps[j]
        if s.kind is StepKind.RULE and s.rule is not None and s.action == "continue":
            expl.marks.append(Change("MARK", hex(old), hex(new), s.table, s.chain, s.num, s.rule, j))
        elif s.kind is StepKind.RULE and s.rule is None:
            expl.marks.append(Change("MARK", hex(old), hex(new), s.table, s.chain, s.num, None, j,
                                     note=_probably(s, expl.shared)))
        else:
            guess = _untraced_mark_rules(steps, i, old, new, view)
            expl.marks.append(
                Change("MARK", hex(old), hex(new), step=i,
                       note=guess or "changed outside the traced rules (conntrack, routing or an untraced table)")
            )


def _called_from(expl: Explanation, frames: list[tuple[int, ...]], k: int) -> list[CauseLink]:
    links = []
    for j in reversed(frames[k]):
        s = expl.steps[j]
        links.append(CauseLink("called from", s.table, s.chain, s.num, s.rule, f"reached from {_where(s, expl.shared)}", j))
    return links


def _describe_frame(expl: Explanation, link: CauseLink) -> str:
    d = rule_dport(link.rule)
    extra = [x for x in (rule_comment(link.rule), f"dport {d}" if d else None) if x]
    return _at_step(expl, link.table, link.chain, link.num, link.step) + (f" ({', '.join(extra)})" if extra else "")


def annotate(expl: Explanation, frames: list[tuple[int, ...]], verdict_index: int | None,
             view: RulesetView | None = None) -> None:
    """Fill ``nat``, ``marks``, ``cause`` and cause-related notes of an explanation."""
    if not expl.steps:
        return
    _nat_changes(expl, view)
    _mark_changes(expl, view)
    _nat_accept_skips_snat(expl)
    if verdict_index is None or expl.verdict is None:
        return
    vstep = expl.steps[verdict_index]
    decided = CauseLink(
        "decided", vstep.table, vstep.chain, vstep.num, vstep.rule, expl.verdict.reason, verdict_index
    )
    chain: list[CauseLink] = [decided]
    sentence = expl.verdict.reason
    rule = vstep.rule
    if rule is not None:
        m = _MARK_MATCH.search(rule.text)
        negated = m is not None and bool(m.group(1) or m.group(3))
        if m and not negated:
            want = m.group(2) or m.group(4)
            try:
                value, _, mask = want.partition("/")
                v, msk = int(value, 0), int(mask, 0) if mask else 0xFFFFFFFF
            except ValueError:
                v, msk = 0, 0
            setter = next(
                (c for c in reversed(expl.marks) if c.step is not None and c.step < verdict_index
                 and (int(c.new or "0", 0) & msk) == v),
                None,
            )
            if setter is not None and setter.num is not None:
                idx = setter.step if setter.step is not None else 0
                set_at = _at_step(expl, setter.table, setter.chain, setter.num, setter.step)
                chain.append(CauseLink("mark set", setter.table, setter.chain, setter.num, setter.rule,
                                       f"mark {setter.new} set by {set_at}",
                                       idx))
                callers = _called_from(expl, frames, idx)
                chain.extend(callers)
                sentence = (
                    f"{expl.fate.value} in {_where(vstep, expl.shared)} because of mark {v:#x}, set in {set_at}"
                )
                focus = next((c for c in callers if rule_dport(c.rule)), None) or next(
                    (c for c in callers if rule_comment(c.rule)), None)
                if focus is not None:
                    sentence += f", reached from {_describe_frame(expl, focus)}"
        if expl.nat and expl.fate in (Fate.DROPPED, Fate.REJECTED, Fate.DELIVERED, Fate.FORWARDED):
            for c in expl.nat:
                if c.step is not None and c.step < verdict_index and c.what == "DST":
                    if c.table is not None:
                        chain.append(CauseLink("rewritten", c.table, c.chain, c.num, c.rule,
                                               f"DST {c.old} → {c.new} at {_at_step(expl, c.table, c.chain, c.num, c.step)}",
                                               c.step))
                    else:  # conntrack or outside the traced rules: no rule to name, name the place
                        s = expl.steps[c.step]
                        chain.append(CauseLink("rewritten", s.table, s.chain, None, None,
                                               f"DST {c.old} → {c.new}, first seen at "
                                               f"{table_label(s.table, s.event.label_family, expl.shared)}:{s.chain} "
                                               f"({_short(c.note)})", c.step))
    fell = _fell_off_zone(expl, verdict_index)
    if fell is not None:
        chain.append(fell)
    elif len(chain) == 1:
        chain.extend(_plumbing_callers(expl, frames, verdict_index))
    owned = _owner_link(expl, chain)
    if owned is not None:
        link, words = owned
        chain.append(link)
        sentence = f"{sentence}; {words}"
    if len(chain) > 1:
        decided.text = sentence
    expl.cause = chain


def add_links(expl: Explanation, links: list[CauseLink]) -> None:
    """Cause links found after the explanation was made (analyze/vmap_owner: the element of a verdict
    map the packet selected) go before the owner link, and the owner is named again from the chain
    with them (``_owner_link``, as ``annotate`` names it): the owner link and the why's sentence.
    The links of ``expl.cause`` are never changed in place (explain/pathcache.py shares them between
    the packets of a path): changed ones are copies."""
    if not links or not expl.cause or expl.cause[0].role != "decided":
        return
    chain = expl.cause
    k = next((i for i, c in enumerate(chain) if c.role == "owner"), len(chain))
    base, rest = chain[:k], chain[k + 1:]
    old = _owner_link(expl, base)
    new = _owner_link(expl, base + links)
    sentence = chain[0].text
    if old is not None and sentence.endswith(f"; {old[1]}"):
        sentence = sentence[: -len(old[1]) - 2]
    out = base + links
    if new is not None:
        out.append(new[0])
        sentence = f"{sentence}; {new[1]}"
    out[0] = replace(chain[0], text=sentence)
    expl.cause = out + rest


def _plumbing_callers(expl: Explanation, frames: list[tuple[int, ...]], k: int) -> list[CauseLink]:
    """A verdict in a product's shared chain (fw4's handle_reject): the jumps into it, innermost first,
    up to the first whose rule names an object (``reject_from_wan``: zone wan); none when no caller does
    (KUBE-FIREWALL called from INPUT) or the deciding rule names one itself."""
    v = expl.steps[k]
    o = owner_of(v.table, v.chain, v.rule)
    if o is None or o.specific:
        return []
    callers = _called_from(expl, frames, k)
    for i, c in enumerate(callers):
        co = owner_of(c.table, c.chain, c.rule)
        if co is not None and co.specific:
            return callers[: i + 1]
    return []


FELL_OFF = "fell off"  # the cause-link role of _fell_off_zone


def _fell_off_zone(expl: Explanation, k: int) -> CauseLink | None:
    """A product's catch-all (owners.FALLS_TO_CATCH_ALL: firewalld's ``reject with icmpx
    admin-prohibited`` after the zone dispatch; with its iptables backend ``-A INPUT -j REJECT`` after
    ``INPUT_ZONES``) that decided after the packet fell off a zone's (or policy's) chains: no
    rule of that zone took the packet, so the zone's default target is what rejected it. The zone
    then owns the decision.

    The zone's chains need not be the last ones before the catch-all: firewalld 0.9 and later jump
    to ``filter_INPUT_POLICIES_post`` after the zones (often empty), so the steps are walked back
    over the product's own plumbing (its unspecific chains, entered and fallen off) and the
    catch-all's chain's own rules (its jumps), to the zone chain last fallen off in that same
    run of the base chain."""
    v = expl.steps[k]
    if k == 0 or v.kind is not StepKind.RULE or expl.steps[k - 1].kind is not StepKind.RETURN:
        return None  # a chain's policy is the host's, not a zone's
    o = owner_of(v.table, v.chain, v.rule)  # the product's plumbing (nft), or no owner (iptables' INPUT)
    for j in range(k - 1, -1, -1):
        prev = expl.steps[j]
        if prev.table != v.table:
            return None
        if prev.chain == v.chain:
            if prev.kind is StepKind.RULE:
                continue  # the catch-all's chain jumping on (to the plumbing after the zones)
            return None
        zone = owner_of(prev.table, prev.chain, None)
        if zone is None or zone.kind not in FALLS_TO_CATCH_ALL:
            return None
        if not zone.specific:
            continue  # the product's plumbing (filter_INPUT_POLICIES_post), entered and fallen off
        if prev.kind is not StepKind.RETURN:
            return None  # a zone's rule took it somewhere: not a fall off the zone's end
        if o is not None and (o.specific or o.kind != zone.kind):
            return None
        return CauseLink(FELL_OFF, prev.table, prev.chain, None, None,
                         f"no rule of {zone.kind} {zone.name} took it (it fell off "
                         f"{table_label(prev.table, prev.event.label_family, expl.shared)}:{prev.chain}), "
                         f"so {_where(v, expl.shared)}, after the zone's chains, decided", j)
    return None


def _owner_link(expl: Explanation, chain: list[CauseLink]) -> tuple[CauseLink, str] | None:
    """Who made the deciding rule, or the nearest link that names an object (a Kubernetes service
    whose comment says it "has no local endpoints"): the link and its words for the why."""
    first: tuple[CauseLink, Owner] | None = None
    for link in chain:
        o = owner_of(link.table, link.chain, link.rule)
        if o is None:
            continue
        if first is None:
            first = (link, o)
        if o.specific:
            break
    else:
        if first is None:
            return None
        link, o = first
    o = published_port(o, link.rule, chain)  # Docker's filter rule: the host port from the DNAT on the path
    at = _at_step(expl, link.table, link.chain, link.num, link.step)
    if link.role == FELL_OFF:
        at = at.removeprefix("a rule of ")
    if o.evidence.startswith("comment "):  # the host's own words are the answer
        words = f"{o.kind}: {o.evidence[len('comment '):]}"
        text = f"{words}, at {at}"
    else:
        words = f"{o.kind} {o.name}" + (f", {o.detail}" if o.detail else "")
        text = f"{words} (from the {o.evidence}), at {at}"
    return CauseLink("owner", link.table, link.chain, link.num, link.rule, text, link.step), words


def _short(note: str | None) -> str:
    """A Change note's first clause ("rewritten by conntrack: …" -> "rewritten by conntrack")."""
    return (note or "").split(": ", 1)[0].split("; ", 1)[0]


def _nat_accept_skips_snat(expl: Explanation) -> None:
    """An ACCEPT in nat POSTROUTING (or a chain it calls) ends nat: later SNAT rules never run."""
    for i, s in enumerate(expl.steps):
        if s.table == "nat" and s.action == "accept" and s.kind is StepKind.RULE:
            hook = next((st.chain for st in reversed(expl.steps[: i + 1]) if st.depth == 0), s.chain)
            if hook == "POSTROUTING":
                expl.notes.append(
                    f"ACCEPT at {_where(s, expl.shared)} ends the nat table for this packet: "
                    "SNAT/MASQUERADE rules after it in nat POSTROUTING are skipped"
                )
