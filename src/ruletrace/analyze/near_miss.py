"""The near miss of a dropped packet: the rule that would have accepted it had one condition differed.

For a drop by a chain's policy (or by an unconditional ``-j DROP`` / ``-j REJECT`` at its end), the
ACCEPT rules the packet walked past in that table and hook are checked against the packet's logged
fields with ``rule_check`` (the simulator's option parser; the same checks ``diff`` uses). A rule
whose options all hold but one is named, with that one: "filter:INPUT rule 5 … would have accepted
it: the source fd00:98::2 is not in fd00:97::/64". Options the log cannot show are said, never blamed.
An nft rule of an inet (bridge, netdev) table whose ``ip``/``ip6`` expressions need the other
address family is never a near miss: no one condition turns an IPv4 packet into an IPv6 one.

A forwarded packet dropped in FORWARD while filter INPUT has an ACCEPT for its port gets the other
common answer: INPUT rules apply only to packets for the host itself; after a DNAT to another
address (or when routed through) FORWARD decides.

The results are ``CauseLink``s (roles ``near miss`` and ``INPUT rule``) added after the others, so
every view of the why (tree, JSON, report) shows them. iptables-save rules are read by
``rule_check.check_rule``, native nft rules (of an nft listing) by ``rule_check.check_nft_rule``;
the INPUT-vs-FORWARD hint reads iptables' filter INPUT, or an nft listing's input-hook base chains.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from ..explain.owners import NOT_ON_PATH
from ..fields import FIELD_WORDS, family_of
from ..model import CauseLink, Chain, Change, Explanation, Fate, Rule, RulesetView, StepKind
from . import vmap_owner
from .rule_check import (
    OptionCheck,
    check_nft_rule,
    check_rule,
    family_needed,
    fields_read,
    nft_rule_options,
    rule_options,
)

NEAR_MISS, INPUT_RULE = "near miss", "INPUT rule"  # the cause-link roles this module adds
assert {NEAR_MISS, INPUT_RULE} == NOT_ON_PATH  # owners skip them: the packet did not match these rules
MAX_NEAR = 2  # near misses named per packet
MAX_INPUT = 1  # INPUT rules named for a forwarded packet
# what the checked fields cannot show, and a field they lack, in the words of a traced packet (its
# log) and of a simulated one (simulate has no log: the checks read the predicted packet's fields)
UNSEEN = {False: ("the log cannot show", "not logged"),
          True: ("the predicted packet's fields do not show", "not among the predicted packet's fields")}
# the fields that differ between a packet for this host and one routed through it
_ROUTING_FIELDS = frozenset({"DST", "IN", "OUT"})


def annotate(expl: Explanation, view: RulesetView | None, *, simulated: bool = False) -> None:
    """Add the near misses (and the INPUT-vs-FORWARD hint) of a dropped packet to its cause links;
    ``simulated``: the packet is a prediction (simulate), its fields no log's (UNSEEN's words)."""
    if view is None or not view or expl.fate not in (Fate.DROPPED, Fate.REJECTED) or expl.verdict is None:
        return
    k = _decided_index(expl)
    if k is None:
        return
    vmap_owner.annotate(expl, view)  # first: who decided, where a verdict map chose the chain
    vstep = expl.steps[k]
    expl.cause.extend(near_misses(expl, view, k, simulated=simulated))
    if (vstep.hook or vstep.chain) == "FORWARD":
        expl.cause.extend(input_rules(expl, view, k))


def _decided_index(expl: Explanation) -> int | None:
    for c in expl.cause:
        if c.role == "decided" and c.step is not None and 0 <= c.step < len(expl.steps):
            return c.step
    return None


def _catch_all(expl: Explanation, k: int, nft: bool) -> bool:
    """The drop is what is left: a policy, or a rule without any match option (``-j DROP`` at a
    chain's end), in a chain every caller jumped to without a condition (a zone chain, not a
    ``--dport 25 -j LOGDROP`` that blocks on purpose)."""
    steps = expl.steps
    v = steps[k]
    if v.kind is StepKind.RULE and not (v.rule is not None and _plain(v.rule, nft)):
        return False
    depth = v.depth
    for j in range(k - 1, -1, -1):
        s = steps[j]
        if depth <= 0 or s.table != v.table or s.hook != v.hook:
            break
        if s.depth == depth - 1:  # the jump into the chain at `depth`
            if s.kind is not StepKind.RULE or s.rule is None or not _plain(s.rule, nft):
                return False
            depth -= 1
    return True


_IFACE_ONLY = frozenset({"in", "out"})  # rule_check's names of -i/-o, iifname/oifname


def _plain(r: Rule, nft: bool) -> bool:
    """A rule without any match (``-j DROP``, ``-j ZONE``; nft ``reject with icmpx …``, ``jump zones``)
    but the interface: firewalld's ``iifname "eth0" jump filter_IN_public`` and ``iifname "eth0"
    reject`` are the catch-all of what arrives there."""
    if r.text.startswith("-A "):
        return all(name in _IFACE_ONLY for name, *_ in rule_options(r.text))
    return nft and not r.vmap and all(name in _IFACE_ONLY for name, *_ in nft_rule_options(r.text))



def _readable(r: Rule, nft: bool) -> bool:
    """Rule text the checks read: iptables-save lines, and nft rules of an nft listing."""
    return r.text.startswith("-A ") or nft


def _is_nft(view: RulesetView, family: str | None) -> bool:
    rs = view.pick(family)
    return rs is not None and rs.format.startswith("nft")


def _walked(expl: Explanation, k: int) -> list[tuple[str, int | None]]:
    """The chains of the deciding step's table the packet walked in that hook's run, each with the
    number of the rule it left it at (rules before it were walked past), None: it walked them all."""
    v = expl.steps[k]
    start = k
    while start > 0 and expl.steps[start - 1].table == v.table and expl.steps[start - 1].hook == v.hook:
        start -= 1
    out: dict[str, int | None] = {}
    for s in expl.steps[start : k + 1]:
        out[s.chain] = s.num if s.kind is StepKind.RULE else None  # its last step in the chain
    return list(out.items())


def near_misses(expl: Explanation, view: RulesetView, k: int, *, simulated: bool = False) -> list[CauseLink]:
    """The accepting rules of the walked chains that fail on exactly one option while another holds."""
    v = expl.steps[k]
    family = v.event.family
    nft = _is_nft(view, family)
    if not _catch_all(expl, k, nft):
        return []
    fields = v.event.fields or expl.first
    have = family_of(fields)
    found: list[tuple[int, int, int, CauseLink]] = []
    for chain, stop in _walked(expl, k):
        ch = view.chain(v.table, chain, family)
        if ch is None:
            continue
        for r in ch.rules:
            if stop is not None and r.num >= stop:
                break
            if not _readable(r, nft) or not _accepts(r, view, family, nft):
                continue
            checks = _checks(r.text, fields)
            if nft and (need := family_needed(c.option for c in checks)) is not None and need != (have or need):
                continue  # an `ip6 saddr …` rule of an inet table: no one condition makes an IPv4 packet IPv6
            failed = [c for c in checks if c.left_ok is False]
            if len(failed) != 1 or not any(c.left_ok for c in checks):
                continue  # one condition differs, and some other holds (else `-i lo -j ACCEPT` always would)
            unknown = [c for c in checks if c.left_ok is None]
            words = UNSEEN[simulated]
            text = f"{_place(r)} `{r.spec}` would have accepted it: {_miss(failed[0], words)}" + _unknown(unknown, words)
            held = sum(1 for c in checks if c.left_ok)
            link = CauseLink(NEAR_MISS, r.table, r.chain, r.num, r, text, None)
            found.append((-held, len(unknown), len(found), link))
    # the most conditions held first (`-s … --dport 8443` before `--dport 22` for port 8443), then the fewest unknowns
    return [t[-1] for t in sorted(found, key=lambda t: t[:3])[:MAX_NEAR]]


def input_rules(expl: Explanation, view: RulesetView, k: int) -> list[CauseLink]:
    """filter INPUT ACCEPT rules for this packet's port (as sent, or after DNAT): they do not apply to it."""
    v = expl.steps[k]
    now = v.event.fields or expl.first
    sent = expl.first
    family = v.event.family
    nft = _is_nft(view, family)
    rules: list[Rule] = []
    for chain in _input_chains(view, family):
        rules += chain.rules
        for r in chain.rules:  # and the user chains it jumps to
            sub = view.chain(chain.table, r.target, family) if r.target and r.target != chain.name else None
            if sub is not None:
                rules += sub.rules
    out: list[CauseLink] = []
    for r in rules:
        if not _readable(r, nft) or not _accepts(r, view, family, nft):
            continue
        port = _opens_port(r, now) or _opens_port(r, sent)
        if port is None:
            continue
        dnat = next((c for c in expl.nat if c.what == "DST" and c.step is not None and c.step < k), None)
        if dnat is not None:
            where = f" at {c_place}" if (c_place := _change_place(dnat)) else ""
            how = f"after the DNAT to {dnat.new}{where} the packet is forwarded, not delivered"
        else:
            how = "this packet is routed through the host (forwarded), not delivered to it"
        which = "input-hook" if nft else "INPUT"
        text = (f"{_place(r)} `{r.spec}` accepts {port}, but {which} rules apply only to packets for this host: "
                f"{how}, so {v.table}:{v.chain} rules decide")
        out.append(CauseLink(INPUT_RULE, r.table, r.chain, r.num, r, text, None))
        if len(out) >= MAX_INPUT:
            break
    return out


def _accepts(r: Rule, view: RulesetView, family: str | None, nft: bool) -> bool:
    """The rule accepts what it matches: ``-j ACCEPT``, or a jump to a chain whose first rule is a
    plain ``-j ACCEPT`` (an ALLOWED chain)."""
    if r.target == "ACCEPT":
        return True
    ch = view.chain(r.table, r.target, family) if r.target else None
    if ch is None or not ch.rules:
        return False
    return ch.rules[0].target == "ACCEPT" and _plain(ch.rules[0], nft)


def _input_chains(view: RulesetView, family: str | None) -> list[Chain]:
    """filter INPUT (iptables), else every base chain on the input hook (nft), filter tables first."""
    rs = view.pick(family)
    if rs is None:
        return []
    ipt = rs.chain("filter", "INPUT")
    if ipt is not None and not rs.format.startswith("nft"):
        return [ipt]
    chains = [c for t in rs.tables.values() for c in t.values() if (c.hook or "").lower() == "input"
              and c.type in (None, "filter")]
    return sorted(chains, key=lambda c: (c.priority if c.priority is not None else 0, c.table))


def _opens_port(r: Rule, fields: Mapping[str, str]) -> str | None:
    """"port N/proto" when the rule's port options hold for ``fields`` and nothing but the routing
    fields (destination, interfaces) fails; None otherwise."""
    checks = _checks(r.text, fields)
    ports = [c for c in checks if c.field == "DPT"]
    if not ports or not all(c.left_ok for c in ports):
        return None
    if any(c.left_ok is False and c.field not in _ROUTING_FIELDS for c in checks):
        return None
    proto = (fields.get("PROTO") or "").lower()
    return f"port {fields.get('DPT')}" + (f"/{proto}" if proto else "")


_CACHE: dict[tuple[Any, ...], list[OptionCheck]] = {}
_CACHE_MAX = 1 << 14


def _checks(text: str, fields: Mapping[str, str]) -> list[OptionCheck]:
    """``check_rule`` of one packet, cached on the values of the fields the rule reads: the
    packets of one flow (or of one scan) ask the same question."""
    key = (text, *(fields.get(f) for f in fields_read(text)))
    got = _CACHE.get(key)
    if got is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        check = check_rule if text.startswith("-A ") else check_nft_rule
        got = _CACHE[key] = check(text, fields, fields)
    return got


def _place(r: Rule) -> str:
    return f"{r.table}:{r.chain} rule {r.num}"


def _change_place(c: Change) -> str | None:
    return None if c.table is None else f"{c.table}:{c.chain} rule {c.num}"


def _miss(c: OptionCheck, words: tuple[str, str]) -> str:
    what = FIELD_WORDS.get(c.field or "", c.field or "value")
    have = c.left if c.left is not None else words[1]
    if c.field in ("SRC", "DST") and ":" in have:  # the log's full IPv6 form, printed compressed
        with suppress(ValueError):
            have = str(ipaddress.ip_address(have))
    return f"the {what} does not match (`{c.option}`; the packet's is {have})"


def _unknown(checks: list[OptionCheck], words: tuple[str, str]) -> str:
    if not checks:
        return ""
    shown = ", ".join(f"`{c.option}`" for c in checks[:3]) + (" …" if len(checks) > 3 else "")
    return f" (and if {shown}, which {words[0]}, also held)"
