"""The terminal view of a path diff (``analyze.diff``): the two paths side by side and each divergence."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..analyze.diff import DiffPacket, DiffStep, Divergence, PathDiff, diff_packets, shown
from .theme import clean, fate_style, safe, verdict_style

__all__ = ["diff_packets", "to_renderable"]


def to_renderable(diff: PathDiff) -> Any:
    """The diff as a rich renderable: header, the two paths side by side, the divergences."""

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
