"""The terminal view of a summary (``analyze.summary.Summary``): totals, packets by fate, by deciding rule, warnings."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..analyze.summary import Decider, Summary, decider_owner
from ..model import Fate
from .theme import clean, fate_style, safe, verdict_style

TOP_RULES = 20  # deciding rules shown in the terminal table; JSON has them all

__all__ = ["TOP_RULES", "Summary", "to_renderable"]  # Summary: where renderers and the CLI found it before


def to_renderable(summary: Summary) -> RenderableType:
    """A terminal view: a totals line, packets by fate, by deciding rule, and warnings."""
    total = Text.assemble((f"{summary.packets}", "summary.count"), " packets")
    if summary.skipped_lines:
        skipped = Text.assemble(", ", (f"{summary.skipped_lines}", "summary.count"), " lines skipped")
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
        rules = Table(box=box.SIMPLE_HEAD, header_style="summary.header", show_edge=False)
        rules.add_column("packets", justify="right", no_wrap=True)
        rules.add_column("action", no_wrap=True)
        rules.add_column("where", no_wrap=True)
        owners = [decider_owner(d) for d, _ in ranked[:TOP_RULES]]
        shown = [o if o is not None and o.specific else None for o in owners]
        if any(shown):  # who made the deciding rule, where the host's names say (explain/owners.py)
            rules.add_column("owner", no_wrap=True, overflow="ellipsis", max_width=32)
        rules.add_column("rule")  # wrapable, so the table gives it what is left; cells ellipsize
        for (d, n), o in zip(ranked[:TOP_RULES], shown):
            action, where, what = _decider_cells(d)
            owner = [safe(f"{o.kind} {o.name}", "owner") if o is not None else Text("")] if any(shown) else []
            rules.add_row(str(n), action, where, *owner, what)
        if len(ranked) > TOP_RULES:
            rest = sum(n for _, n in ranked[TOP_RULES:])
            pad = [""] if any(shown) else []
            rules.add_row(str(rest), "", Text(f"{len(ranked) - TOP_RULES} more", "note"), *pad, "")
        parts.append(rules)

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


def _decider_cells(d: Decider) -> tuple[Text, Text, Text]:
    if d.action is None:
        where = Text("trace ends at ") + safe(d.last_seen or "?", "chain")
        return Text("none", "verdict.unknown"), where, Text("")
    where = Text.assemble(safe(d.table or "?", "table"), ":", safe(d.chain or "?", "chain"))
    if d.rule is not None:
        where.append(" rule ")
        where.append(clean(d.num if d.num is not None else "?"), "rule.num")
        spec = d.rule
        prefix = f"-A {d.chain} "
        if spec.startswith(prefix):
            spec = spec[len(prefix) :]
        what = safe(spec, "rule.text")
    else:
        where.append(" policy")
        what = safe(d.policy or "?", verdict_style(d.policy))
    what.no_wrap = True
    what.overflow = "ellipsis"
    return Text(clean(d.action), verdict_style(d.action)), where, what
