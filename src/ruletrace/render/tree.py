"""Explanations as a terminal tree: one block per packet, hooks, nested chains, verdict and cause."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.segment import Segment
from rich.text import Text

from ..explain.owners import deciding_owner
from ..fields import show_address, show_field
from ..model import BUILTIN_CHAINS, Change, Explanation, Fate, Step, StepKind
from ..rulesets.nft_model import table_label
from .theme import THEME, clean, fate_style, safe, verdict_style

GAP = 2  # spaces between a step's head and its text
MIN_BODY = 30  # below this many columns for the text, it goes under the head instead
MIN_LABEL = 28  # columns kept for a step's label: deeper calls stop indenting further
FOOTER_LABEL = 9  # width of the footer's label column ("warning" + 2)
MAX_LEAD_IN_WORDS = 6  # "dropped by the DROP policy of" before a place that is already shown


def to_renderable(expl: Explanation, *, verbose: bool = False) -> RenderableType:
    """One packet's explanation as a rich renderable: header, path tree, footer."""
    return _PacketView(expl, verbose)


class _PacketView:
    """Lays the block out once the width is known: deep call chains stop indenting before they run out.

    The tree guides are drawn here rather than with ``rich.tree.Tree``: same look (rich's
    guide characters), a fifth of the time per packet, which matters for logs of many packets.
    """

    __slots__ = ("expl", "verbose")

    def __init__(self, expl: Explanation, verbose: bool) -> None:
        self.expl = expl
        self.verbose = verbose

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        # a step at call depth d sits under the header and its hook: (d + 2) guides of 4 cells
        max_depth = max((width - MIN_LABEL) // 4 - 2, 0)
        header, hooks, footer = _build(self.expl, self.verbose, max_depth)
        guides = ASCII_GUIDES if options.ascii_only else UNICODE_GUIDES
        new_line = Segment.line()
        guide_style = console.get_style("tree.line", default="")
        for line in _wrap(console, header, width):
            yield from line.render(console)
            yield new_line
        for prefix, line in _walk(console, hooks, "", width, guides):
            yield Segment(prefix, guide_style)
            yield from line.render(console)
            yield new_line
        for block in footer:
            for line in block.render_lines(console, width):
                yield from line.render(console)
                yield new_line
        if self.expl.misses is not None:  # explain --explain-miss: a block after the packet
            for line in _wrap(console, _misses(self.expl), width):
                yield from line.render(console)
                yield new_line


# rich's tree guides (rich/tree.py): space, continue, fork, end; ASCII where the console is
UNICODE_GUIDES = ("    ", "│   ", "├── ", "└── ")
ASCII_GUIDES = ("    ", "|   ", "+-- ", "`-- ")


class _Node:
    __slots__ = ("label", "children")

    def __init__(self, label: Text | _Hanging) -> None:
        self.label = label
        self.children: list[_Node] = []


def _walk(
    console: Console, nodes: list[_Node], prefix: str, width: int, guides: tuple[str, str, str, str]
) -> Iterator[tuple[str, Text]]:
    space, cont, fork, end = guides
    for k, node in enumerate(nodes):
        last = k == len(nodes) - 1
        below = prefix + (space if last else cont)
        lines = _wrap(console, [node.label], max(width - len(below), 1))
        for j, line in enumerate(lines):
            yield (prefix + (end if last else fork) if j == 0 else below), line
        yield from _walk(console, node.children, below, width, guides)


def _build(
    expl: Explanation, verbose: bool, max_depth: int
) -> tuple[list[Text], list[_Node], list[_Hanging]]:
    decisive = decisive_step(expl)
    notes = _step_annotations(expl, decisive, verbose)
    hooks: list[_Node] = []
    for hook, indices in hook_groups(expl.steps):
        tables: list[str] = []
        for i in indices:
            s = expl.steps[i]
            t = table_label(s.table, s.event.label_family, expl.shared)
            if t not in tables:
                tables.append(t)
        heading = Text.assemble((hook or "?", "hook"), "  ")
        heading.append_text(Text(" -> ").join(safe(t, "table") for t in tables))
        hooks.append(_Node(heading))
        stack = [hooks[-1]]
        for i in indices:
            step = expl.steps[i]
            depth = max(step.depth, 0)
            p = min(depth, len(stack) - 1, max_depth)  # a gap in depth attaches to the deepest chain
            head = _head(step, i == decisive, expl.shared)
            if p < depth:  # shown shallower than it is: say how deep
                head = Text(f"(depth {depth}) ", "origin") + head
            node = _Node(_Hanging(head, [_body(step), *notes.get(i, ())]))
            stack[p].children.append(node)
            del stack[p + 1 :]
            stack.append(node)
    return _header(expl, decisive, verbose), hooks, _footer(expl)


def render_explanations(expls: Iterable[Explanation], console: Console, *, verbose: bool = False) -> int:
    """Print each explanation as it comes, a blank line between packets; return how many.

    Without colour (a file, a pipe, --no-color) the text is laid out by ``tree_plain.PlainTree``:
    the same bytes as rich's layout below (tests/render/test_tree_plain.py), a fraction of the time.
    """
    from .tree_plain import for_console

    n = 0
    plain = for_console(console)
    if plain is not None:
        write = console.file.write
        for expl in expls:
            write(plain.render(expl, verbose) if not n else "\n" + plain.render(expl, verbose))
            n += 1
        console.file.flush()
        return n
    with console.use_theme(THEME):
        for expl in expls:
            if n:
                console.print()
            console.print(to_renderable(expl, verbose=verbose))
            n += 1
    return n


class _Hanging:
    """A head followed by lines wrapped in a column of their own (under the head when narrow)."""

    __slots__ = ("head", "lines")

    def __init__(self, head: Text, lines: Sequence[Text | _Hanging]) -> None:
        self.head = head
        self.lines = lines

    def render_lines(self, console: Console, width: int) -> list[Text]:
        """The block as lines of at most ``width`` cells, trailing spaces removed."""
        indent = self.head.cell_len + GAP
        room = width - indent
        fits = room > 0 and all(isinstance(t, Text) and t.cell_len <= room for t in self.lines)
        if room >= MIN_BODY or fits:
            body = _wrap(console, self.lines, width - indent)
            if not body:
                return [self.head.copy()]
            first = self.head + Text(" " * GAP)
            first.append_text(body[0])
            return [first, *(Text(" " * indent) + line for line in body[1:])]
        out = _wrap(console, [self.head], width)
        out += (Text(" " * GAP) + line for line in _wrap(console, self.lines, max(width - GAP, 1)))
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.render_lines(console, options.max_width)


def _wrap(console: Console, items: Iterable[Text | _Hanging], width: int) -> list[Text]:
    out: list[Text] = []
    for item in items:
        if isinstance(item, _Hanging):
            out += item.render_lines(console, width)
            continue
        for line in item.wrap(console, width, overflow="fold"):
            line.rstrip()
            out.append(line)
    return out


def _header(expl: Explanation, decisive: int | None, verbose: bool) -> list[Text]:
    f = expl.first
    head = Text.assemble((f"packet {clean(expl.packet.id)}", "packet.id"), "  ")
    head.append(clean(f.get("PROTO") or "?"), "packet.proto")
    head.append(" ")
    head.append(endpoint(f.get("SRC"), f.get("SPT")), "packet.addr")
    head.append(" -> ")
    head.append(endpoint(f.get("DST"), f.get("DPT")), "packet.addr")
    if f.get("TCPFLAGS"):
        head.append(f" [{clean(f['TCPFLAGS'])}]")
    if f.get("TYPE"):  # ICMP / ICMPv6
        head.append(f" type {clean(f['TYPE'])}")
        if f.get("CODE"):
            head.append(f" code {clean(f['CODE'])}")
    for key, word in (("IN", "in"), ("OUT", "out")):
        if f.get(key):
            head.append(f"  {word} ")
            head.append(clean(f[key]), "packet.iface")
    lines = [head, _fate_line(expl, decisive)]
    if verbose and f:
        lines.append(safe(" ".join(f"{k}={show_field(k, v)}" for k, v in f.items()), "field"))
        origin = expl.packet.events[0].origin
        if origin is not None:
            lines.append(safe(f"first seen at {origin}", "origin"))
    return lines


def _fate_line(expl: Explanation, decisive: int | None) -> Text:
    line = Text(str(expl.fate).upper(), fate_style(expl.fate))
    v = expl.verdict
    if v is not None:
        by_policy = v.rule is None and (decisive is None or expl.steps[decisive].kind == StepKind.POLICY)
        line.append(" by ")
        table = table_label(v.table or "?", v.family, expl.shared)
        line.append_text(_where(table, v.chain))
        place = f"{table}:{v.chain}"
        if by_policy:
            line.append(" policy ")
            line.append(clean(v.action.upper()), verdict_style(v.action))
        else:
            num = v.num if v.num is not None else v.rule.num if v.rule is not None else None
            num_s = "?" if num is None else num
            line.append(" rule ")
            line.append(clean(num_s), "rule.num")
            place += f" rule {num_s}"
        owner = deciding_owner(expl)
        if owner is not None and owner.specific:
            line.append(" [")
            line.append(clean(f"{owner.kind} {owner.name}"), "owner")
            line.append("]")
        reason = after_place(v.reason, place)
        if reason:
            line.append((" " if reason != v.reason else ": ") + clean(reason))
    elif expl.drops and expl.fate == Fate.DROPPED:  # outside the rules: the kernel's own reason
        line.append(" by the kernel: " + clean(expl.drops[0].text))
    elif expl.fate == Fate.UNKNOWN and expl.last_seen:
        line.append(": the trace ends at ")
        line.append_text(safe(expl.last_seen, "chain"))
    return line


def after_place(text: str, place: str) -> str:
    """``text`` minus a short lead-in up to ``place``: "dropped by filter:X rule 1 because …" -> "because …".

    The header and footer already name the place; explainers often repeat it in their sentence.
    """
    i = text.find(place)
    if i < 0 or len(text[:i].split()) > MAX_LEAD_IN_WORDS:
        return text
    rest = text[i + len(place) :].lstrip(" ,;:")
    if place.count(" ") == 0 and rest.startswith(("rule ", "policy ")):
        return text  # the place named is another rule of that chain (both backends: "…filter:INPUT rule 1, then …")
    return rest


def endpoint(addr: str | None, port: str | None) -> str:
    a = clean(show_address(addr) if addr else "?")
    if not port:
        return a
    return f"[{a}]:{clean(port)}" if ":" in a else f"{a}:{clean(port)}"


def _where(table: str | None, chain: str | None) -> Text:
    return Text.assemble(safe(table or "?", "table"), ":", safe(chain or "?", "chain"))


def _head(step: Step, decisive: bool, shared: frozenset[str] = frozenset()) -> Text:
    kind = step.kind
    head = _where(table_label(step.table, step.event.label_family, shared), step.chain)
    head.append(f" {kind} ", f"step.{kind}")
    head.append("?" if step.num is None else clean(step.num), "rule.num")
    if decisive:
        head.stylize("step.decisive")
    return head


def _body(step: Step) -> Text:
    kind = step.kind
    if kind == StepKind.POLICY:
        return safe(step.policy or "?", verdict_style(step.policy))
    if kind == StepKind.RETURN:
        return Text.assemble("-> ", safe(step.returned_to or "?", "chain"))
    if step.rule is None:
        return Text("(rule not in the ruleset)", "rule.missing")
    return safe(step.rule.spec, "rule.text")


def _step_annotations(expl: Explanation, decisive: int | None, verbose: bool) -> dict[int, list[Text]]:
    """Lines shown under a step's text: verdict, rewrites, cause, warnings, notes."""
    out: dict[int, list[Text]] = {}

    def add(i: int | None, text: Text) -> None:
        if i is not None and 0 <= i < len(expl.steps):
            out.setdefault(i, []).append(text)

    if decisive is not None and expl.verdict is not None:
        action = expl.verdict.action
        add(decisive, Text(f"=> {clean(action.upper())}", verdict_style(action)))
    for c in expl.nat:
        add(c.step, safe(change_text(c), "nat"))
    for c in expl.marks:
        add(c.step, safe(change_text(c), "mark"))
    for link in expl.cause:
        if link.step != decisive:
            add(link.step, Text.assemble(("<- cause: ", "cause"), safe(link.role, "cause")))
    prev: dict[str, str] = {}
    for i, step in enumerate(expl.steps):
        if step.warning:
            add(i, safe(f"! {step.warning}", "warning"))
        if step.note:
            add(i, safe(f"note: {step.note}", "note"))
        if verbose:
            fields = step.event.fields
            if i:
                changed = [f"{k}={show_field(k, v)}" for k, v in fields.items() if prev.get(k) != v]
                changed += [f"-{k}" for k in prev if k not in fields]
                if changed:
                    add(i, safe("fields: " + " ".join(changed), "field"))
            prev = fields
            if step.event.origin is not None:
                add(i, safe(f"at {step.event.origin.short}", "origin"))
    return out


def change_text(c: Change) -> str:
    old = "(none)" if c.old is None else c.old
    new = "(none)" if c.new is None else c.new
    text = f"{c.what} {old} -> {new}"
    return f"{text} ({c.note})" if c.note else text


def decisive_step(expl: Explanation) -> int | None:
    """Index of the step that made the verdict: the last step at the verdict's place."""
    v = expl.verdict
    if v is not None:
        for i in range(len(expl.steps) - 1, -1, -1):
            s = expl.steps[i]
            if s.table == v.table and s.chain == v.chain and (v.num is None or s.num == v.num) and (
                    v.family is None or v.table not in expl.shared or s.event.label_family == v.family):
                return i  # (a table name two families share: the verdict's family's)
    for link in expl.cause:
        if link.role == "decided" and link.step is not None:
            return link.step
    return None


def hook_groups(steps: list[Step]) -> Iterator[tuple[str | None, list[int]]]:
    """Consecutive steps of one hook: a built-in chain at depth 0 names the hook, user chains inherit it."""
    hook: str | None = None
    group: list[int] = []
    for i, step in enumerate(steps):
        name = step.hook or (step.chain if step.chain in BUILTIN_CHAINS else None)  # native: the ruleset's hook
        # a base chain whose hook nothing names (nft text without its listing: a monitor marks where each
        # base chain starts) is a hook of its own, "?": never the hook of the group before it
        unknown_base = name is None and step.depth == 0 and step.event.base and i > 0 and (
            hook is not None or steps[i - 1].chain != step.chain or steps[i - 1].table != step.table)
        if step.depth == 0 and ((name is not None and name != hook) or unknown_base):
            if group:
                yield hook, group
            hook, group = name, []
        group.append(i)
    if group:
        yield hook, group


def _footer(expl: Explanation) -> list[_Hanging]:
    rows: list[tuple[str, Sequence[Text | _Hanging]]] = []
    if expl.nat:
        rows.append(("nat", [_change_at(expl, c, "nat") for c in expl.nat]))
    if expl.marks:
        rows.append(("mark", [_change_at(expl, c, "mark") for c in expl.marks]))
    if expl.cause:
        width = max(len(c.role) for c in expl.cause)
        lines: list[Text | _Hanging] = []
        for c in expl.cause:
            # a link without a rule but with a number is a chain policy (num = rules + 1)
            where = _at(step_table(expl, c.table, c.step), c.chain, c.num, c.rule is None and c.num is not None)
            if c.text and where.plain in c.text:  # the sentence names the place itself
                where = safe(c.text)
            elif c.text:
                where.append(": " + clean(c.text))
            lines.append(_Hanging(safe(c.role.ljust(width), "cause"), [where]))
        rows.append(("why", lines))
    if expl.drops:  # the kernel's own drop reason (live: skb:kfree_skb)
        rows.append(("kernel", [safe("dropped: " + (d.text or d.reason), "warning") for d in expl.drops]))
    if expl.routing:
        rows.append(("route", [safe(r.text) for r in expl.routing]))
    if expl.conntrack:
        rows.append(("ct", [safe(f"{c.when}: {c.text}") for c in expl.conntrack]))
    if expl.warnings:
        rows.append(("warning", [safe(w, "warning") for w in expl.warnings]))
    if expl.notes:
        rows.append(("note", [safe(n, "note") for n in expl.notes]))
    return [_Hanging(Text(label.ljust(FOOTER_LABEL - GAP), "label"), lines) for label, lines in rows]


def _misses(expl: Explanation) -> list[Text | _Hanging]:
    """The --explain-miss block, in simulate's layout (cli/simulate.py): the rule, then why."""
    ms = expl.misses or []
    where = f"{ms[0].table}:{ms[0].chain}" if ms else "the chain"
    out: list[Text | _Hanging] = [safe(f"rules of {where}, checked against the packet's logged fields", "bold")]
    if not ms:
        out.append(Text("  (the chain has no rules)"))
    for m in ms:
        if m.rule is not None:
            out.append(Text.assemble((f"  {clean(m.table)}:{clean(m.chain)}:{m.num}  ", "dim"), safe(m.rule.spec)))
        out.append(_Hanging(Text("     "), [safe(m.reason, "note" if m.result == "matched" else "")]))
    return out


def _change_at(expl: Explanation, c: Change, style: str) -> Text:
    line = safe(change_text(c), style)
    if c.table or c.chain:
        line.append(" at ")
        line.append_text(_at(step_table(expl, c.table, c.step), c.chain, c.num, False))
    return line


def step_table(expl: Explanation, table: str | None, step: int | None) -> str | None:
    """The table of a change or cause link made at step ``step``, named with that step's family where
    the path shows its name in two (rulesets/nft_model.table_label)."""
    if table is None or not expl.shared or step is None or not 0 <= step < len(expl.steps):
        return table
    return table_label(table, expl.steps[step].event.label_family, expl.shared)


def _at(table: str | None, chain: str | None, num: int | None, policy: bool) -> Text:
    where = _where(table, chain)
    if policy:
        where.append(" policy")
    elif num is not None:
        where.append(" rule ")
        where.append(clean(num), "rule.num")
    return where


if __name__ == "__main__":  # pragma: no cover
    from ..model import Packet, Rule, TraceEvent, Verdict

    _f = {"IN": "eth0", "SRC": "10.0.0.2", "DST": "10.0.0.1", "PROTO": "TCP", "SPT": "40000", "DPT": "22"}
    _evs = [
        TraceEvent("filter", "INPUT", StepKind.RULE, 1, fields=_f),
        TraceEvent("filter", "BLOCK", StepKind.RULE, 2, fields=_f),
    ]
    _drop = Rule("filter", "BLOCK", 2, "-A BLOCK -p tcp --dport 22 -j DROP", "DROP")
    _demo = Explanation(
        Packet(1, _evs),
        steps=[
            Step(_evs[0], rule=Rule("filter", "INPUT", 1, "-A INPUT -j BLOCK", "BLOCK"), action="jump"),
            Step(_evs[1], rule=_drop, depth=1, action="drop"),
        ],
        fate=Fate.DROPPED,
        verdict=Verdict("drop", "filter", "BLOCK", 2, _drop, "ssh is blocked"),
    )
    render_explanations([_demo], Console(theme=THEME))
