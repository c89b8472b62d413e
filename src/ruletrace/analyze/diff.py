"""Two packets' paths side by side: aligned steps, where they part ways, and the field that did it.

Works on explanations (``model.Explanation``): paths from ``explain``, ``trace`` and ``simulate``,
and their ``--json`` output read back (``render.json.from_json``), compare alike.

Steps are aligned with ``difflib.SequenceMatcher`` on (table, chain, kind, num). The number of a
``policy``/``return`` step is the chain's length + 1, so it is left out of the key: two packets
that both fell off the end of a chain did the same thing even if the chain had grown in between.
At each stretch where the paths differ, the two next steps are in the same chain as a rule
number N (or the end of the chain) for one and M > N for the other: the rule N matched the
first packet and was evaluated without matching the second. The rule's match options are
checked against both packets' fields (``rule_check``) to name the field that made the difference.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..fields import show_address
from ..model import HOOK_TABLES, Explanation, Step
from ..rulesets.nft_model import table_label
from .rule_check import OptionCheck, check_rule

SIDES = ("left", "right")
# fields worth naming when no rule option explains a difference (routing, trace ends)
KEY_FIELDS = ("IN", "OUT", "SRC", "DST", "PROTO", "SPT", "DPT", "MARK", "TCPFLAGS", "TYPE")


@dataclass(slots=True)
class DiffStep:
    """One step of a path, as the diff needs it."""

    table: str
    chain: str
    kind: str  # "rule", "return", "policy"
    num: int | None
    rule: str | None = None  # the iptables-save line of a rule step
    action: str | None = None
    depth: int = 0
    policy: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, int | None]:
        return (self.table, self.chain, self.kind, self.num if self.kind == "rule" else None)

    @property
    def place(self) -> str:
        n = "?" if self.num is None else self.num
        what = f"rule {n}" if self.kind == "rule" else f"{self.kind} {n}"
        return f"{self.table}:{self.chain} {what}"

    @classmethod
    def of(cls, s: Step, shared: frozenset[str] = frozenset()) -> DiffStep:
        """From one step of an explanation; ``shared`` (``Explanation.shared``): its table is named with
        its family where two families' tables share the name (``ip same``), so that two such tables
        are never aligned as one."""
        ev = s.event
        return cls(
            table=table_label(ev.table, ev.label_family, shared) if ev.table else "?",
            chain=ev.chain or "?",
            kind=str(ev.kind),
            num=ev.num,
            rule=None if s.rule is None else s.rule.text,
            action=s.action or None,
            depth=s.depth,
            policy=s.policy,
            fields=dict(ev.fields),
        )


@dataclass(slots=True)
class DiffPacket:
    """One side of the diff: a packet's identity, outcome and steps."""

    label: str  # "packet 1", or "a.log#1" when two inputs are compared
    id: Any
    fate: str
    decided: str  # "filter:KUBE-FIREWALL rule 1 (drop)" / "filter:INPUT policy ACCEPT" / ""
    summary: str  # "TCP 172.28.129.2:55694 -> 172.28.129.4:52000"
    steps: list[DiffStep]

    @classmethod
    def of(cls, e: Explanation, label: str | None = None) -> DiffPacket:
        """From an explanation (``label`` defaults to "packet ID")."""
        return cls(
            label=label or f"packet {e.packet.id}",
            id=e.packet.id,
            fate=str(e.fate),
            decided=decided_text(e),
            summary=packet_summary(e),
            # the rule that turned tracing on: a monitor shows it, a kernel log never does; no divergence
            steps=[DiffStep.of(s, e.shared) for s in e.steps if s.rule is None or not s.rule.starts_trace],
        )


@dataclass(slots=True)
class Row:
    """One line of the side-by-side view; ``left``/``right`` index the sides' steps, None for a gap."""

    tag: str  # "same", "changed", "left", "right" (only that side has a step here)
    left: int | None
    right: int | None
    hunk: int | None = None  # index into PathDiff.divergences of the stretch this row belongs to


@dataclass(slots=True)
class Divergence:
    """One stretch where the paths differ, explained."""

    row: int  # index into PathDiff.rows of its first row
    left_step: int | None  # index of each side's first differing step (None: that side's trace ended)
    right_step: int | None
    table: str | None = None
    chain: str | None = None
    num: int | None = None  # the rule that matched one packet and not the other
    rule: str | None = None
    matched: str | None = None  # "left" / "right": which packet that rule matched
    text: str = ""  # one or two sentences
    checks: list[OptionCheck] = field(default_factory=list)

    @property
    def decisive(self) -> list[OptionCheck]:
        """The options that matched one packet and not the other: the field that made the difference."""
        return [c for c in self.checks if c.decisive]

    @property
    def unknown(self) -> list[OptionCheck]:
        return [c for c in self.checks if c.left_ok is None or c.right_ok is None]


@dataclass(slots=True)
class PathDiff:
    left: DiffPacket
    right: DiffPacket
    rows: list[Row]
    divergences: list[Divergence]
    notes: list[str] = field(default_factory=list)

    @property
    def first(self) -> Divergence | None:
        """The first divergence: where the two packets part ways."""
        return self.divergences[0] if self.divergences else None

    @property
    def same(self) -> bool:
        return not self.divergences

    def side(self, name: str) -> DiffPacket:
        return self.left if name == "left" else self.right

    def to_json(self) -> dict[str, Any]:
        """The diff as a JSON-ready dict (``ruletrace diff --json``)."""

        def step(s: DiffStep | None) -> dict[str, Any] | None:
            if s is None:
                return None
            return {"table": s.table, "chain": s.chain, "kind": s.kind, "num": s.num, "rule": s.rule,
                    "action": s.action, "depth": s.depth}

        def packet(p: DiffPacket) -> dict[str, Any]:
            return {"label": p.label, "id": p.id, "fate": p.fate, "decided": p.decided, "summary": p.summary,
                    "steps": len(p.steps)}

        return {
            "left": packet(self.left),
            "right": packet(self.right),
            "same": self.same,
            "rows": [
                {
                    "tag": r.tag,
                    "left": step(self.left.steps[r.left] if r.left is not None else None),
                    "right": step(self.right.steps[r.right] if r.right is not None else None),
                    "left_step": r.left,
                    "right_step": r.right,
                    "divergence": r.hunk,
                }
                for r in self.rows
            ],
            "divergences": [
                {
                    "row": d.row,
                    "left_step": d.left_step,
                    "right_step": d.right_step,
                    "table": d.table,
                    "chain": d.chain,
                    "num": d.num,
                    "rule": d.rule,
                    "matched": d.matched,
                    "text": d.text,
                    "fields": [
                        {"option": c.option, "field": c.field, "left": c.left, "right": c.right,
                         "left_matches": c.left_ok, "right_matches": c.right_ok}
                        for c in d.decisive
                    ],
                    "unknown": [c.option for c in d.unknown],
                }
                for d in self.divergences
            ],
            "notes": list(self.notes),
        }


def diff_packets(left: Explanation | DiffPacket, right: Explanation | DiffPacket) -> PathDiff:
    """Align two packets' paths and explain each place they differ."""
    a = left if isinstance(left, DiffPacket) else DiffPacket.of(left)
    b = right if isinstance(right, DiffPacket) else DiffPacket.of(right)
    if a.label == b.label:
        a.label, b.label = f"left {a.label}", f"right {b.label}"
    ka = [s.key for s in a.steps]
    kb = [s.key for s in b.steps]
    sm = difflib.SequenceMatcher(None, ka, kb, autojunk=False)
    rows: list[Row] = []
    divergences: list[Divergence] = []
    notes: list[str] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                rows.append(Row("same", i, j))
                sa, sb = a.steps[i], b.steps[j]
                if sa.num != sb.num:
                    notes.append(
                        f"{sa.table}:{sa.chain}: both fell off the end, reported as {sa.kind} {sa.num} for "
                        f"{a.label} and {sb.num} for {b.label}: the chain had a different number of rules "
                        "(the ruleset changed between the traces?)"
                    )
            continue
        hunk = len(divergences)
        d = _explain(a, b, i1 if i1 < len(a.steps) else None, j1 if j1 < len(b.steps) else None)
        d.row = len(rows)
        divergences.append(d)
        for k in range(max(i2 - i1, j2 - j1)):
            ri = i1 + k if i1 + k < i2 else None
            rj = j1 + k if j1 + k < j2 else None
            rows.append(Row("changed" if ri is not None and rj is not None else "left" if rj is None else "right",
                            ri, rj, hunk))
    return PathDiff(a, b, rows, divergences, notes)


def _explain(a: DiffPacket, b: DiffPacket, i: int | None, j: int | None) -> Divergence:
    sa = a.steps[i] if i is not None else None
    sb = b.steps[j] if j is not None else None
    d = Divergence(row=0, left_step=i, right_step=j)
    if sa is not None and sb is not None and (sa.table, sa.chain) == (sb.table, sb.chain):
        d.table, d.chain = sa.table, sa.chain
        na = _order(sa)
        nb = _order(sb)
        if na == nb:  # same chain, same number, different kind: nothing rule-level to say
            d.text = f"in {sa.table}:{sa.chain}, {a.label} shows {sa.place}, {b.label} shows {sb.place}"
            d.checks = _field_checks(sa.fields, sb.fields)
            return d
        first, other, fs, os_ = (sa, sb, a, b) if na < nb else (sb, sa, b, a)
        d.matched = "left" if first is sa else "right"
        d.num = first.num
        d.rule = first.rule
        then = _went_on(other)
        d.checks = check_rule(first.rule, sa.fields, sb.fields) if first.rule else []
        head = f"{first.table}:{first.chain} rule {first.num} matched {fs.label} but not {os_.label}"
        head += f" ({os_.label} {then})"
        dec = d.decisive
        if dec:
            why = "; ".join(_check_text(c, a.label, b.label) for c in dec)
            d.text = f"{head}: {why}"
        elif first.rule is None:
            d.text = f"{head}; the rule text is unknown (give the ruleset with -r to see which field differs)"
        elif d.unknown:
            opts = ", ".join(c.option for c in d.unknown)
            d.text = f"{head}; the log cannot show what decided it: {opts}"
        else:
            d.text = f"{head}; the logged fields do not explain it (the ruleset may differ from the one traced)"
        return d
    # different chains: one trace ended, or the two went to different hooks (routing) or tables
    if sa is None or sb is None:
        done, going = (a, b) if sa is None else (b, a)
        s = sb if sa is None else sa
        assert s is not None  # the rows of a divergence show a step on one side at least
        d.table, d.chain = s.table, s.chain
        d.text = (f"{done.label}'s trace ends here ({done.fate}"
                  + (f", {done.decided}" if done.decided else "") + f"); {going.label} goes on to {s.place}")
        last_a = sa.fields if sa is not None else (a.steps[-1].fields if a.steps else {})
        last_b = sb.fields if sb is not None else (b.steps[-1].fields if b.steps else {})
        d.checks = _field_checks(last_a, last_b)
        return d
    assert i is not None and j is not None  # both sides have a step here (sa and sb are set)
    ha, hb = _hook(a, i), _hook(b, j)
    if ha != hb and ha is not None and hb is not None:
        d.text = (f"{a.label} goes on to {ha} ({sa.place}), {b.label} to {hb} ({sb.place})"
                  + (": the routing decision differed" if {ha, hb} & {"INPUT", "FORWARD"} else ""))
    else:
        d.text = f"{a.label} goes on to {sa.place}, {b.label} to {sb.place}"
    d.checks = _field_checks(sa.fields, sb.fields)
    if d.decisive:
        d.text += ": " + "; ".join(_check_text(c, a.label, b.label) for c in d.decisive)
    return d


def _order(s: DiffStep) -> float:
    # where in its chain a step is; the end of a chain sorts after every rule
    if s.kind == "rule" and s.num is not None:
        return float(s.num)
    return float("inf") if s.num is None else float(s.num)


def _went_on(s: DiffStep) -> str:
    if s.kind == "rule":
        return f"went on to rule {s.num}"
    if s.kind == "return":
        return f"returned from {s.chain} (return {s.num})"
    return f"fell through to the {s.policy or ''} policy ({s.kind} {s.num})".replace("the  policy", "the policy")


def _hook(p: DiffPacket, i: int) -> str | None:
    for s in reversed(p.steps[: i + 1]):
        if s.chain.upper() in HOOK_TABLES:
            return s.chain.upper()
    return None


def _field_checks(fa: Mapping[str, str], fb: Mapping[str, str]) -> list[OptionCheck]:
    out = []
    for k in KEY_FIELDS:
        va, vb = fa.get(k), fb.get(k)
        if k == "MARK":
            va, vb = va or "0x0", vb or "0x0"
        if va != vb and (va is None or vb is None or show_address(va) != show_address(vb)):  # one address, two forms
            out.append(OptionCheck(k, k, va, vb, True, False))
    return out


def _check_text(c: OptionCheck, la: str, lb: str) -> str:
    if c.option == c.field:
        return f"{c.field} is {shown(c.left)} for {la} and {shown(c.right)} for {lb}"
    return f"{c.option}: {la} has {c.field}={shown(c.left)}, {lb} has {c.field}={shown(c.right)}"


def shown(v: str | None) -> str:
    """A field value for a sentence: ``(none)`` when absent or empty."""
    return "(none)" if v is None or v == "" else show_address(v)


# ---------------------------------------------------------------- one packet in a few words


def packet_summary(e: Explanation) -> str:
    """``TCP 10.0.0.1:123 -> 10.0.0.2:80``: the packet as first seen."""
    first = e.first
    proto = first.get("PROTO") or "?"
    src = endpoint(first.get("SRC") or "?", port(first.get("SPT")))
    dst = endpoint(first.get("DST") or "?", port(first.get("DPT")))
    return f"{proto} {src} -> {dst}"


def port(value: str | None) -> int | None:
    """A logged port field as a number; None when absent or not decimal digits."""
    return int(value) if value and value.isascii() and value.isdigit() else None


def endpoint(addr: Any, port: Any) -> str | None:
    """``addr:port`` (``[addr]:port`` for IPv6), ``addr`` without a port, None without an address."""
    if not addr:
        return None
    a = show_address(str(addr))
    if port is None:
        return a
    return f"[{a}]:{port}" if ":" in a else f"{a}:{port}"


def decided_text(e: Explanation) -> str:
    """Where the packet's fate was decided: ``filter:KUBE-FIREWALL rule 1 (drop)``."""
    v = e.verdict
    if v is None:
        return decided_at(None, None, None, None, False, e.last_seen)
    table = table_label(v.table, v.family, e.shared) if v.table else None
    return decided_at(v.action or "", table, v.chain, v.num, v.rule is not None, None)


def decided_at(action: str | None, table: str | None, chain: str | None, num: int | None, by_rule: bool,
               last_seen: str | None) -> str:
    """The words for a deciding place; ``action`` None: nothing decided, the trace ends at ``last_seen``."""
    if action is None:
        return f"trace ends at {last_seen}" if last_seen else ""
    where = f"{table or '?'}:{chain or '?'}"
    if by_rule:
        return f"{where} rule {num} ({action})"
    return f"{where} policy {str(action or '').upper()}"
