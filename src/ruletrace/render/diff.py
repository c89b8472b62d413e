"""Two packets' paths side by side: aligned steps, where they part ways, and the field that did it.

Works on the JSON form of an explanation (``render.json.to_json``), so paths from ``explain``,
``trace`` and ``simulate`` (and their ``--json`` output read back) compare alike.

Steps are aligned with ``difflib.SequenceMatcher`` on (table, chain, kind, num). The number of a
``policy``/``return`` step is the chain's length + 1, so it is left out of the key: two packets
that both fell off the end of a chain did the same thing even if the chain had grown in between.
At each stretch where the paths differ, the two next steps are in the same chain as a rule
number N (or the end of the chain) for one and M > N for the other: the rule N matched the
first packet and was evaluated without matching the second. The rule's match options are
checked against both packets' fields (``options``) to name the field that made the difference.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RuletraceError
from ..model import HOOK_TABLES
from ..rulesets.iptables_save import tokenize
from ..rulesets.options import number, parse_icmp_type, parse_proto, parse_tcp_flags, port_range, split_rule, value_mask

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
    def from_json(cls, s: Mapping[str, Any]) -> DiffStep:
        """From one element of a JSON packet's ``steps``."""
        return cls(
            table=str(s.get("table") or "?"),
            chain=str(s.get("chain") or "?"),
            kind=str(s.get("kind") or "rule"),
            num=s.get("num"),
            rule=s.get("rule"),
            action=s.get("action"),
            depth=int(s.get("depth") or 0),
            policy=s.get("policy"),
            fields={str(k): str(v) for k, v in (s.get("fields") or {}).items()},
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
    def from_json(cls, p: Mapping[str, Any], label: str | None = None) -> DiffPacket:
        """From a JSON packet object (``render.json.to_json``)."""
        steps = [DiffStep.from_json(s) for s in p.get("steps") or ()]
        return cls(
            label=label or f"packet {p.get('id')}",
            id=p.get("id"),
            fate=str(p.get("fate") or "unknown"),
            decided=decided_text(p),
            summary=packet_summary(p),
            steps=steps,
        )


@dataclass(slots=True)
class Row:
    """One line of the side-by-side view; ``left``/``right`` index the sides' steps, None for a gap."""

    tag: str  # "same", "changed", "left", "right" (only that side has a step here)
    left: int | None
    right: int | None
    hunk: int | None = None  # index into PathDiff.divergences of the stretch this row belongs to


@dataclass(slots=True)
class OptionCheck:
    """One match option of a rule checked against both packets."""

    option: str  # as written: "--dport 52000", "! -i docker0", "-m mark --mark 0x8000/0x8000"
    field: str | None  # the packet field it reads (kernel-log name), None when the log cannot show it
    left: str | None  # that field's value for each packet (None: absent)
    right: str | None
    left_ok: bool | None  # whether the option matches; None: cannot tell from the log
    right_ok: bool | None

    @property
    def decisive(self) -> bool:
        return self.left_ok is not None and self.right_ok is not None and self.left_ok != self.right_ok


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


def diff_packets(left: Mapping[str, Any] | DiffPacket, right: Mapping[str, Any] | DiffPacket) -> PathDiff:
    """Align two packets' paths (JSON packet objects) and explain each place they differ."""
    a = left if isinstance(left, DiffPacket) else DiffPacket.from_json(left)
    b = right if isinstance(right, DiffPacket) else DiffPacket.from_json(right, None)
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
            i = i1 + k if i1 + k < i2 else None
            j = j1 + k if j1 + k < j2 else None
            rows.append(Row("changed" if i is not None and j is not None else "left" if j is None else "right",
                            i, j, hunk))
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
        d.table, d.chain = s.table, s.chain
        d.text = (f"{done.label}'s trace ends here ({done.fate}"
                  + (f", {done.decided}" if done.decided else "") + f"); {going.label} goes on to {s.place}")
        last_a = sa.fields if sa is not None else (a.steps[-1].fields if a.steps else {})
        last_b = sb.fields if sb is not None else (b.steps[-1].fields if b.steps else {})
        d.checks = _field_checks(last_a, last_b)
        return d
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
        if va != vb:
            out.append(OptionCheck(k, k, va, vb, True, False))
    return out


def _check_text(c: OptionCheck, la: str, lb: str) -> str:
    if c.option == c.field:
        return f"{c.field} is {_show(c.left)} for {la} and {_show(c.right)} for {lb}"
    return f"{c.option}: {la} has {c.field}={_show(c.left)}, {lb} has {c.field}={_show(c.right)}"


def _show(v: str | None) -> str:
    return "(none)" if v is None or v == "" else v


# ---------------------------------------------------------------- rule options against fields

# match options check_rule can test against a logged field -> its name for them; the rule is
# parsed by rulesets.options (the simulator's parser), which knows which module each option
# belongs to and how many arguments it takes
_OPTIONS: dict[str, str] = {
    "--dport": "dport", "--destination-port": "dport", "--sport": "sport", "--source-port": "sport",
    "--dports": "dports", "--destination-ports": "dports", "--sports": "sports", "--source-ports": "sports",
    "--ports": "ports", "--mark": "mark", "--tcp-flags": "tcpflags", "--syn": "syn",
    "--icmp-type": "icmptype", "--icmpv6-type": "icmptype", "--physdev-in": "physin", "--physdev-out": "physout",
    "--uid-owner": "uid", "--gid-owner": "gid",
}
_IP_NAMES = {"s": "src", "d": "dst", "i": "in", "o": "out", "p": "proto", "f": "frag"}
_FIELD = {
    "proto": "PROTO", "src": "SRC", "dst": "DST", "in": "IN", "out": "OUT", "dport": "DPT", "sport": "SPT",
    "dports": "DPT", "sports": "SPT", "mark": "MARK", "tcpflags": "TCPFLAGS", "syn": "TCPFLAGS",
    "icmptype": "TYPE", "physin": "PHYSIN", "physout": "PHYSOUT", "uid": "UID", "gid": "GID", "frag": "FRAG",
}


def rule_options(rule_text: str) -> list[tuple[str, str, list[str], bool, str]]:
    """The match options of an iptables-save rule: (name, module, args, negated, as written).

    The target's options are left out. Options this module cannot check against the log are
    returned with name ``"?"`` and their module; a rule the parser rejects gives no options.
    """
    try:
        tokens = tokenize(rule_text)
        if tokens[:1] in (["-A"], ["--append"], ["-I"], ["--insert"]):
            tokens = tokens[2:]
        parsed = split_rule(tokens, None)
    except RuletraceError:
        return []
    out: list[tuple[str, str, list[str], bool, str]] = []
    for neg, letter, val in parsed.ip:
        args = [val] if letter != "f" else []
        out.append((_IP_NAMES[letter], "", args, neg, _written(neg, f"-{letter}", args)))
    for module, opts in parsed.modules:
        if module == "comment":
            continue
        for neg, opt, args in opts:
            name = _OPTIONS.get(opt, "?")
            if name == "mark" and module != "mark":
                name = "?"  # connmark's --mark is the connection's mark, which the log does not show
            elif name in ("dport", "sport") and module == "multiport":  # multiport's --dport takes lists too
                name += "s"
            out.append((name, module, list(args), neg, _written(neg, opt, args)))
    return out


def _written(neg: bool, opt: str, args: Sequence[str]) -> str:
    return " ".join((["!"] if neg else []) + [opt, *args])


def check_rule(rule_text: str, left: Mapping[str, str], right: Mapping[str, str]) -> list[OptionCheck]:
    """Each match option of ``rule_text`` checked against two packets' fields."""
    checks: list[OptionCheck] = []
    for name, module, args, neg, written in rule_options(rule_text):
        if name == "?":
            if module and module != "comment":
                shown = written if module in written else f"-m {module} {written}"
                checks.append(OptionCheck(shown, None, None, None, None, None))
            continue
        f = _FIELD[name]
        if name == "mark":
            written = f"-m mark {written}"
        va, vb = left.get(f), right.get(f)
        checks.append(OptionCheck(written, f, _shown(f, va), _shown(f, vb),
                                  _apply(name, module, args, va, neg), _apply(name, module, args, vb, neg)))
    return checks


def _shown(f: str, v: str | None) -> str | None:
    if f == "MARK" and not v:
        return "0x0"  # nf_log prints MARK= only when the mark is nonzero
    return v


def _apply(name: str, module: str, args: Sequence[str], have: str | None, neg: bool) -> bool | None:
    try:
        r = _match(name, module, args, have)
    except RuletraceError:  # a value the option grammar rejects: cannot tell
        return None
    return None if r is None else r != neg


def _match(name: str, module: str, args: Sequence[str], have: str | None) -> bool | None:
    want = args[0] if args else ""
    if name == "mark":
        v, m = value_mask(want)
        return (number(have or "0") & m) == v
    if name == "syn":
        return _tcp_flags(("FIN,SYN,RST,ACK", "SYN"), have)
    if name == "tcpflags":
        return _tcp_flags(args, have)
    if name == "frag":
        return bool(have) if have is not None else False
    if have is None or have == "":
        # a TCP/UDP port or an interface the log does not show cannot match
        return False if name in ("dport", "sport", "dports", "sports", "ports", "in", "out", "proto") else None
    if name == "proto":
        n = parse_proto(want)
        return n == 0 or n == parse_proto(have)
    if name in ("src", "dst"):
        return _addr(want, have)
    if name in ("in", "out", "physin", "physout"):
        return have.startswith(want[:-1]) if want.endswith("+") else have == want
    if name in ("dport", "sport", "dports", "sports", "ports"):
        if not have.isdigit():
            return None
        p = int(have)
        return any(lo <= p <= hi for lo, hi in (port_range(part) for part in want.split(",")))
    if name == "icmptype":
        typ, _code = parse_icmp_type(want, module != "icmp")
        return typ == 0xFF or str(typ) == have  # icmp_type_code_match: type 0xFF is any type
    if name in ("uid", "gid"):
        lo, _, hi = want.partition("-")
        if lo.isdigit() and have.isdigit():
            return int(lo) <= int(have) <= int(hi or lo)
        return None
    return None


def _tcp_flags(args: Sequence[str], have: str | None) -> bool | None:
    if len(args) < 2 or have is None:
        return None
    return (parse_tcp_flags(have) & parse_tcp_flags(args[0])) == parse_tcp_flags(args[1])


def _addr(want: str, have: str) -> bool | None:
    try:
        ip = ipaddress.ip_address(have)
        return any(ip in ipaddress.ip_network(w, strict=False) for w in want.split(","))
    except ValueError:
        return None


# ---------------------------------------------------------------- summaries of a JSON packet


def packet_summary(p: Mapping[str, Any]) -> str:
    """``TCP 10.0.0.1:123 -> 10.0.0.2:80`` from a JSON packet."""
    proto = p.get("proto") or "?"
    src = _endpoint(p.get("src"), p.get("sport"))
    dst = _endpoint(p.get("dst"), p.get("dport"))
    return f"{proto} {src} -> {dst}"


def _endpoint(addr: Any, port: Any) -> str:
    a = str(addr) if addr else "?"
    if port is None:
        return a
    return f"[{a}]:{port}" if ":" in a else f"{a}:{port}"


def decided_text(p: Mapping[str, Any]) -> str:
    """Where a JSON packet's fate was decided: ``filter:KUBE-FIREWALL rule 1 (drop)``."""
    v = p.get("verdict")
    if not v:
        last = p.get("last_seen")
        return f"trace ends at {last}" if last else ""
    where = f"{v.get('table') or '?'}:{v.get('chain') or '?'}"
    if v.get("rule"):
        return f"{where} rule {v.get('num')} ({v.get('action')})"
    return f"{where} policy {str(v.get('action') or '').upper()}"


# ---------------------------------------------------------------- terminal view


def to_renderable(diff: PathDiff) -> Any:
    """The diff as a rich renderable: header, the two paths side by side, the divergences."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from .theme import clean, fate_style, safe

    def head(p: DiffPacket, side: str) -> Text:
        t = Text.assemble((f"{side:5} ", "label"), (clean(p.label), "packet.id"), "  ", safe(p.summary, "packet.addr"))
        t.append("\n      ")
        t.append(clean(p.fate).upper(), fate_style(p.fate))
        if p.decided:
            t.append(" by " + clean(p.decided))
        return t

    first = diff.first
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, expand=True, pad_edge=False)
    table.add_column("", width=1, no_wrap=True)
    table.add_column(clean(diff.left.label), ratio=1, overflow="ellipsis", no_wrap=True)
    table.add_column("", width=1, no_wrap=True)
    table.add_column(clean(diff.right.label), ratio=1, overflow="ellipsis", no_wrap=True)
    for r_i, r in enumerate(diff.rows):
        sa = diff.left.steps[r.left] if r.left is not None else None
        sb = diff.right.steps[r.right] if r.right is not None else None
        style = "dim" if r.tag == "same" else ""
        mark = Text(">", "cause") if first is not None and r_i == first.row else Text(" ")
        sep = Text("=" if r.tag == "same" else "|", "dim" if r.tag == "same" else "cause")
        table.add_row(mark, _cell(sa, style, diff.first, r_i), sep, _cell(sb, style, diff.first, r_i))
    parts: list[Any] = [head(diff.left, "left"), head(diff.right, "right"), table]
    if diff.same:
        parts.append(Text("the two paths are the same", "label"))
    for k, d in enumerate(diff.divergences):
        label = "first divergence" if k == 0 else f"divergence {k + 1}"
        t = Text.assemble((label, "cause"), "  ", safe(d.text))
        parts.append(t)
        if d.rule:
            parts.append(Text.assemble("    rule  ", safe(d.rule, "rule.text")))
        for c in d.decisive:
            parts.append(Text.assemble("    ", (clean(c.option), "label"), "  ",
                                       f"{clean(diff.left.label)}: {clean(_show(c.left))} "
                                       f"({'matches' if c.left_ok else 'no match'}), "
                                       f"{clean(diff.right.label)}: {clean(_show(c.right))} "
                                       f"({'matches' if c.right_ok else 'no match'})"))
    for n in diff.notes:
        parts.append(Text.assemble(("note", "note"), "  ", safe(n, "note")))
    return Group(*parts)


def _cell(s: DiffStep | None, style: str, first: Divergence | None, row: int) -> Any:
    from rich.text import Text

    from .theme import clean, safe, verdict_style

    if s is None:
        return Text("")
    t = Text("  " * min(s.depth, 6), style)
    t.append(f"{clean(s.table)}:", "table" if not style else style)
    t.append(clean(s.chain), "chain" if not style else style)
    if s.kind == "rule":
        t.append(f" rule {s.num}", "rule.num" if not style else style)
        if s.rule:
            spec = s.rule
            prefix = f"-A {s.chain} "
            t.append("  ")
            t.append_text(safe(spec[len(prefix):] if spec.startswith(prefix) else spec, style or "rule.text"))
    else:
        t.append(f" {s.kind} {s.num if s.num is not None else '?'}", style or "step.return")
        if s.policy:
            t.append(f"  {clean(s.policy)}", style or verdict_style(s.policy))
    if first is not None and row == first.row:
        t.stylize("bold")
    return t
