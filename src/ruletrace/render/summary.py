"""The terminal view of a summary (``analyze.summary.Summary``): totals, packets by fate, by deciding rule, warnings."""

from __future__ import annotations

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from ..analyze.summary import Decider, Summary, decider_owner, decider_table
from ..model import Fate, rule_spec
from .theme import clean, fate_style, safe, verdict_style

TOP_RULES = 20  # deciding rules shown in the terminal table; JSON has them all

__all__ = ["TOP_RULES", "Summary", "to_renderable"]  # Summary: where renderers and the CLI found it before


def to_renderable(summary: Summary) -> RenderableType:
    """A terminal view: a totals line, packets by fate, by deciding rule, and warnings."""
    total = Text.assemble((f"{summary.packets}", "summary.count"), " packet" if summary.packets == 1 else " packets")
    if summary.skipped_lines:
        skipped = Text.assemble(", ", (f"{summary.skipped_lines}", "summary.count"),
                                " line skipped" if summary.skipped_lines == 1 else " lines skipped")
        total.append_text(skipped)
    if summary.packets_with_warnings:
        total.append_text(
            Text.assemble(", ", (f"{summary.packets_with_warnings}", "summary.count"), " with warnings")
        )
    parts: list[RenderableType] = [total]

    fates = Table(box=box.SIMPLE_HEAD, header_style="summary.header", show_edge=False)
    fates.add_column("fate", no_wrap=True)
    fates.add_column("packets", justify="right", no_wrap=True)
    fates.add_column("share", justify="right", no_wrap=True)
    for f in Fate:
        n = summary.fates.get(f, 0)
        if n:
            fates.add_row(Text(str(f), fate_style(f)), str(n), f"{100 * n / summary.packets:.1f}%")
    if summary.packets:
        parts.append(fates)

    ranked = summary.ranked()
    if ranked:
        parts.append(_Deciders(ranked))

    if summary.warnings:
        warns = Table(box=box.SIMPLE_HEAD, header_style="summary.header", show_edge=False)
        warns.add_column("count", justify="right", no_wrap=True)
        warns.add_column("warning", style="warning", overflow="fold")
        for text, n in summary.top_warnings(TOP_RULES):
            warns.add_row(str(n), safe(text, "warning"))
        parts.append(warns)
    spaced: list[RenderableType] = []
    for part in parts:
        spaced += (Text(""), part) if spaced else (part,)
    return Group(*spaced)


class _Deciders:
    """The packets by deciding rule, laid out for the width it is drawn at.

    The count, the action and where the rule is (table, chain, number) are the answer and are never
    cut; the owner and then the rule text get what is left, and are left out when too little is
    (at 80 columns the plain table had squeezed the counts to "26…" and the actions to "a…").
    """

    def __init__(self, ranked: list[tuple[Decider, int]]) -> None:
        self.cells = [(str(n), *_decider_cells(d)) for d, n in ranked[:TOP_RULES]]
        self.rest = (sum(n for _, n in ranked[TOP_RULES:]), len(ranked) - TOP_RULES)
        owners = [decider_owner(d) for d, _ in ranked[:TOP_RULES]]
        self.owners = [o if o is not None and o.specific else None for o in owners]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        cells, (rest, more) = self.cells, self.rest
        counts = [c[0] for c in cells] + ([str(rest)] if more > 0 else [])
        w_count = max(len("packets"), *(len(c) for c in counts))
        w_action = max(len("action"), *(c[1].cell_len for c in cells))
        w_where = max(len("where"), *(c[2].cell_len for c in cells))
        left = options.max_width - (w_count + w_action + w_where + 3 * _GAP)
        table = Table(box=box.SIMPLE_HEAD, header_style="summary.header", show_edge=False)
        table.add_column("packets", justify="right", no_wrap=True, min_width=w_count)
        table.add_column("action", no_wrap=True, min_width=w_action)
        if left < 0:  # too narrow even for these: only "where" gives way (its end ellipsized)
            table.add_column("where", no_wrap=True, overflow="ellipsis", max_width=max(8, w_where + left))
        else:
            table.add_column("where", no_wrap=True, min_width=w_where)
        with_owner = any(self.owners) and left >= _OWNER_MIN + _GAP
        named = [f"{o.kind} {o.name}" if o is not None else "" for o in self.owners]
        if with_owner:  # who made the deciding rule, where the host's names say (explain/owners.py)
            w_owner = min(_OWNER_MAX, left - _GAP)
            if w_owner < _OWNER_MAX and max(map(len, named)) > w_owner:  # short of room: the name alone
                named = [o.name if o is not None else "" for o in self.owners]
            table.add_column("owner", no_wrap=True, overflow="ellipsis", max_width=w_owner)
            left -= min(w_owner, max(map(len, named))) + _GAP
        with_rule = left >= _RULE_MIN + _GAP
        if with_rule:
            table.add_column("rule")  # wrapable, so the table gives it what is left; cells ellipsize
        for (count, action, where, what), name in zip(cells, named):
            row: list[RenderableType] = [count, action, where]
            if with_owner:
                row.append(safe(name, "owner") if name else Text(""))
            if with_rule:
                row.append(what)
            table.add_row(*row)
        if more > 0:
            table.add_row(str(rest), "", Text(f"{more} more", "note"), *[""] * (with_owner + with_rule))
        yield table


_GAP = 3  # the columns' padding and rule between them
_OWNER_MIN, _OWNER_MAX = 14, 32
_RULE_MIN = 10


def _decider_cells(d: Decider) -> tuple[Text, Text, Text]:
    if d.action is None:
        where = Text("trace ends at ") + safe(d.last_seen or "?", "chain")
        return Text("none", "verdict.unknown"), where, Text("")
    where = Text.assemble(safe(decider_table(d), "table"), ":", safe(d.chain or "?", "chain"))
    if d.rule is not None:
        where.append(" rule ")
        where.append(clean(d.num if d.num is not None else "?"), "rule.num")
        what = safe(rule_spec(d.rule, d.chain or ""), "rule.text")
    else:
        where.append(" policy")
        what = safe(d.policy or "?", verdict_style(d.policy))
    what.no_wrap = True
    what.overflow = "ellipsis"
    return Text(clean(d.action), verdict_style(d.action)), where, what
