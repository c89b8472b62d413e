"""The terminal view of a path diff (``analyze.diff``): the two paths side by side and each divergence."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ..analyze.diff import DiffPacket, DiffStep, Divergence, PathDiff, diff_packets, shown
from ..model import rule_spec
from .theme import clean, cut_middle, fate_style, safe, verdict_style

__all__ = ["diff_packets", "to_renderable"]


def to_renderable(diff: PathDiff) -> Any:
    """The diff as a rich renderable: header, the two paths side by side, the divergences."""

    def head(p: DiffPacket, side: str) -> Text:
        # one packet on both sides is labelled "left packet 3" / "right packet 3" (diff_packets): said once
        label = p.label[len(side) + 1:] if p.label.startswith(f"{side} ") else p.label
        t = Text.assemble((f"{side:5} ", "label"), (clean(label), "packet.id"), "  ", safe(p.summary, "packet.addr"))
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
        parts.append(_hang(Text(label, "cause"), safe(d.text)))
        if d.rule:
            parts.append(_hang(Text("    rule"), safe(d.rule, "rule.text")))
        for c in d.decisive:
            parts.append(_hang(Text.assemble("    ", (clean(c.option), "label")), Text(
                f"{clean(diff.left.label)}: {clean(shown(c.left))} ({'matches' if c.left_ok else 'no match'}), "
                f"{clean(diff.right.label)}: {clean(shown(c.right))} ({'matches' if c.right_ok else 'no match'})")))
    for n in diff.notes:
        parts.append(_hang(Text("note", "note"), safe(n, "note")))
    return Group(*parts)


def _hang(label: Text, body: Text) -> Table:
    """``label  body``, the body's wrapped lines under its first (not back at the margin), so a
    divergence stays readable at 80 columns; on one line the same text as ``label + "  " + body``."""
    grid = Table.grid(padding=(0, 2, 0, 0))  # two spaces after the label, none at the edges
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")  # a rule text's long words (chain names) broken rather than cut
    grid.add_row(label, body)
    return grid


def _cell(s: DiffStep | None, style: str, first: Divergence | None, row: int) -> Any:
    if s is None:
        return Text("")
    indent = Text("  " * min(s.depth, 6), style)
    chain = clean(s.chain)
    if s.kind == "rule":
        tail = Text(f" rule {s.num}", "rule.num" if not style else style)
        rest = Text("")
        if s.rule:
            rest = Text("  ") + safe(rule_spec(s.rule, s.chain), style or "rule.text")
    else:
        tail = Text(f" {s.kind} {s.num if s.num is not None else '?'}", style or "step.return")
        rest = Text(f"  {clean(s.policy)}", style or verdict_style(s.policy)) if s.policy else Text("")
    cell = _Step(indent, Text(f"{clean(s.table)}:", "table" if not style else style), chain,
                 "chain" if not style else style, tail, rest)
    cell.bold = first is not None and row == first.row
    return cell


class _Step:
    """One step in a diff column, fitted to the column's width: what the step is (table, chain,
    rule number) stays whole while the rule text after it is cut ("…"); where even that does not
    fit, the chain name gives up its middle ("KUBE-XLB-VE…K3NB"), never the rule number. (At 80
    columns the rows read "nat:KUBE-XLB-VETHOZVMBYUVK3…": which rule was lost.)"""

    def __init__(self, indent: Text, table: Text, chain: str, chain_style: str, tail: Text, rest: Text) -> None:
        self.indent, self.table, self.chain, self.chain_style, self.tail, self.rest = (
            indent, table, chain, chain_style, tail, rest)
        self.bold = False

    def text(self, width: int | None = None) -> Text:
        chain = self.chain
        fixed = self.indent.cell_len + self.table.cell_len + self.tail.cell_len
        if width is not None and fixed + len(chain) > width and len(chain) > 3:
            chain = cut_middle(chain, max(width - fixed - 1, 2))
        t = Text.assemble(self.indent, self.table, (chain, self.chain_style), self.tail)
        if width is None or t.cell_len + len("  x") <= width:  # room for some of the rule text, cut
            t.append_text(self.rest)
        if width is not None and t.cell_len > width:
            t.truncate(width, overflow="ellipsis")
        if self.bold:
            t.stylize("bold")
        return t

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.text(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, self.text().cell_len)
