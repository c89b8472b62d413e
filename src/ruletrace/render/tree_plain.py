"""The packet tree as plain text, fast: for output without colour (a file, a pipe, ``--no-color``).

The reference is ``render/tree.py`` (rich): this module lays out the same words the same way —
the header, the hook and chain guides, each step's head with its text in a hanging column,
the footer — with ``str`` operations instead of rich ``Text`` objects, and wraps words as rich
does (``Text.wrap(overflow="fold")``: greedy, a word longer than the line folded, trailing
blanks removed). Text that is not printable ASCII is wrapped by rich itself. The output is
byte-identical to the rich renderer's at the same width (tests/render/test_tree_plain.py: every
fixture, example and lab capture at 80 and 200 columns, and a generated kube-proxy log).

Most packets of a big log take a path already shown: the wrapped lines of a tree node are
cached by its words and the room it has, so a repeated step costs a dict lookup.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.control import strip_control_codes
from rich.text import Text

from ..explain.owners import deciding_owner
from ..fields import show_field
from ..model import (
    CauseLink,
    Change,
    ConntrackEntry,
    Explanation,
    Fate,
    KernelDrop,
    RouteDecision,
    Step,
    StepKind,
)
from ..rulesets.nft_model import table_label
from .theme import clean
from .tree import (
    ASCII_GUIDES,
    FOOTER_LABEL,
    GAP,
    MIN_BODY,
    MIN_LABEL,
    UNICODE_GUIDES,
    after_place,
    change_text,
    decisive_step,
    endpoint,
    hook_groups,
    step_table,
)

_WORD = re.compile(r"\s*\S+\s*")  # a word and the blanks around it, as rich divides a line
_CACHE_MAX = 200_000  # wrapped texts kept
_SKELETONS_MAX = 20_000  # paths whose layout is kept
_VARIANTS_MAX = 16
_ROWS_MAX = 50_000  # footer rows whose lines are kept  # annotation variants of one step whose lines are kept


def _simple(s: str) -> bool:
    """Printable ASCII: one cell a character, nothing rich would strip."""
    return s.isascii() and s.isprintable()


class _Hang:
    """A head and lines in a column of their own (tree._Hanging's plain twin)."""

    __slots__ = ("head", "key", "lines")

    def __init__(self, head: str, lines: Sequence[str | _Hang]) -> None:
        self.head = head
        self.lines = lines
        self.key: Any = None


def _key(item: str | _Hang) -> Any:
    if isinstance(item, str):
        return item
    if item.key is None:
        item.key = (item.head, tuple(_key(x) for x in item.lines))
    return item.key


def for_console(console: Any) -> PlainTree | None:
    """The plain layout where ``console`` (rich) prints no colour and records nothing (a file, a
    pipe, ``--no-color``); None where rich must lay the tree out itself."""
    if console.color_system is None and not console.record and not console.quiet:
        return PlainTree(console.width, ascii_only=console.options.ascii_only)
    return None


class PlainTree:
    """Renders explanations as rich's tree would print them without colour, at one width."""

    def __init__(self, width: int, *, ascii_only: bool = False) -> None:
        self.width = width
        self.guides = ASCII_GUIDES if ascii_only else UNICODE_GUIDES
        self._wrapped: dict[tuple[Any, int], list[str]] = {}
        self._skeletons: dict[tuple[Any, ...], list[Any]] = {}
        self._rows: dict[tuple[Any, ...], tuple[tuple[Any, ...], list[str]]] = {}
        self._rich: Any = None  # a Console for the rare text rich must wrap itself

    # --- layout -----------------------------------------------------------------------------
    def wrap_text(self, text: str, width: int) -> list[str]:
        """``Text(text).wrap(console, width, overflow="fold")``, each line rstripped."""
        if not _simple(text):
            return self._wrap_rich(text, width)
        if len(text) <= width:  # one line: only the trailing blanks go
            return [text.rstrip()]
        breaks: list[int] = []
        off = 0
        for m in _WORD.finditer(text):
            start = m.start()
            word = m.group()
            wl = len(word.rstrip())
            if width - off >= wl:
                off += len(word)
            elif wl > width:  # longer than a line: folded into pieces of the width
                n = len(word)
                for k in range(0, n, width):
                    if start:
                        breaks.append(start)
                    if k + width >= n:
                        off = n - k
                    else:
                        start += width
            elif off and start:
                breaks.append(start)
                off = len(word)
        out = []
        prev = 0
        for b in [*breaks, len(text)]:
            line = text[prev:b]
            prev = b
            if len(line) > width:  # blanks past the width go first, then the line is cut
                excess = len(line) - width
                blanks = len(line) - len(line.rstrip())
                line = line[: len(line) - min(blanks, excess)][:width]
            out.append(line.rstrip())
        return out

    def _wrap_rich(self, text: str, width: int) -> list[str]:
        if self._rich is None:
            from rich.console import Console

            self._rich = Console(width=max(self.width, 1), color_system=None, highlight=False, emoji=False)
        out = []
        for line in Text(text).wrap(self._rich, width, overflow="fold"):
            line.rstrip()
            out.append(line.plain)
        return out

    def _wrap(self, items: Iterable[str | _Hang], width: int) -> list[str]:
        out: list[str] = []
        for item in items:
            out += self._lines(item, width)
        return out

    def _lines(self, item: str | _Hang, width: int) -> list[str]:
        if type(item) is str and len(item) <= width and _simple(item):
            return [item.rstrip()]  # wrap_text's first case, not kept: one packet's own words mostly
        key = (_key(item), width)
        got = self._wrapped.get(key)
        if got is None:
            got = self.wrap_text(item, width) if isinstance(item, str) else self._hanging(item, width)
            if len(self._wrapped) >= _CACHE_MAX:
                self._wrapped.clear()
            self._wrapped[key] = got
        return got

    def _hanging(self, h: _Hang, width: int) -> list[str]:
        """tree._Hanging.render_lines."""
        head = strip_control_codes(h.head)
        hl = len(head) if _simple(head) else cell_len(head)
        indent = hl + GAP
        room = width - indent
        if room >= MIN_BODY or (room > 0 and all(isinstance(t, str) and _cells(t) <= room for t in h.lines)):
            body = self._wrap(h.lines, width - indent)
            if not body:
                return [head]
            pad = " " * indent
            return [head + " " * GAP + body[0], *(pad + line for line in body[1:])]
        out = self.wrap_text(head, width)
        out += ("  " + line for line in self._wrap(h.lines, max(width - GAP, 1)))
        return out

    def _skeleton(self, nodes: list[Any], prefix: str, out: list[Any]) -> None:
        """tree._walk, with each step's lines left to fill: (None, lines) for a hook's heading,
        [i, first prefix, prefix below, room, head, body, {annotations: lines}] for step i."""
        space, cont, fork, end = self.guides
        width = self.width
        last_k = len(nodes) - 1
        for k, (i, label, body, children) in enumerate(nodes):
            last = k == last_k
            below = prefix + (space if last else cont)
            first = prefix + (end if last else fork)
            room = max(width - len(below), 1)
            if i is None:
                lines = self._lines(label, room)
                out.append((None, [first + lines[0], *(below + line for line in lines[1:])] if lines else []))
            else:
                out.append([i, first, below, room, label, body, {}])
            self._skeleton(children, below, out)

    def _tree(self, expl: Explanation, decisive: int | None, verbose: bool) -> list[Any]:
        """The path's skeleton: made once per path (``Explanation.path_key``) and decisive step."""
        pk = expl.path_key
        key = (pk, decisive, verbose)
        sk = self._skeletons.get(key) if pk is not None else None
        if sk is None:
            max_depth = max((self.width - MIN_LABEL) // 4 - 2, 0)
            sk = []
            self._skeleton(_hooks(expl, decisive, max_depth), "", sk)
            if pk is not None:
                if len(self._skeletons) >= _SKELETONS_MAX:
                    self._skeletons.clear()
                self._skeletons[key] = sk
        return sk

    def _footer(self, expl: Explanation, out: list[str]) -> None:
        """The footer's rows (``_footer_rows``). A row's lines are kept by the identity of the
        objects it shows, which the explanations of one path share (explain/pathcache.py hands
        each packet its own lists of its template's changes and causes, never changed in place);
        the objects are kept with them, so an equal id is the same object."""
        width = self.width
        rows = self._rows
        for label, objs, make in _footer_rows(expl):
            key = (label, *map(id, objs))
            got = rows.get(key)
            if got is None or not all(map(operator.is_, got[0], objs)):
                got = (tuple(objs), self._hanging(_Hang(label.ljust(FOOTER_LABEL - GAP), make(objs)), width))
                if len(rows) >= _ROWS_MAX:
                    rows.clear()
                rows[key] = got
            out += got[1]

    def _steps(self, expl: Explanation, decisive: int | None, verbose: bool, out: list[str]) -> None:
        notes = _step_annotations(expl, decisive, verbose)
        for entry in self._tree(expl, decisive, verbose):
            i = entry[0]
            if i is None:
                out += entry[1]
                continue
            ann = notes.get(i)
            ann_key = tuple(ann) if ann else ()
            seen = entry[6]
            lines = seen.get(ann_key)
            if lines is None:
                got = self._hanging(_Hang(entry[4], [entry[5], *ann_key]), entry[3])
                lines = [entry[1] + got[0], *(entry[2] + line for line in got[1:])] if got else []
                if len(seen) < _VARIANTS_MAX:  # the lines of a step with packet-own words are not kept
                    seen[ann_key] = lines
            out += lines

    # --- content (the words of tree.py, as str) -------------------------------------------------
    def render(self, expl: Explanation, verbose: bool = False) -> str:
        """One packet's block, each line ended by a newline (what ``console.print`` writes)."""
        width = self.width
        decisive = decisive_step(expl)
        out = self._wrap(_header(expl, decisive, verbose), width)
        self._steps(expl, decisive, verbose, out)
        self._footer(expl, out)
        if expl.misses is not None:
            out += self._wrap(_misses(expl), width)
        # rich cuts what is wider than the console: only possible when the room left for a node or
        # a footer's column is below 1 (tree guides and labels keep it above at 16 columns or more)
        if width < 16 and any(_cells(line) > width for line in out):
            out = [_crop(line, width) for line in out]
        out.append("")
        return "\n".join(out)


def _cells(s: str) -> int:
    return len(s) if _simple(s) else cell_len(s)


def _crop(line: str, width: int) -> str:
    if _simple(line):
        return line[:width]
    return set_cell_size(line, width) if cell_len(line) > width else line


def _where(table: str | None, chain: str | None) -> str:
    return f"{clean(table or '?')}:{clean(chain or '?')}"


def _header(expl: Explanation, decisive: int | None, verbose: bool) -> list[str]:
    f = expl.first
    head = [f"packet {clean(expl.packet.id)}  ", clean(f.get("PROTO") or "?"), " ",
            endpoint(f.get("SRC"), f.get("SPT")), " -> ", endpoint(f.get("DST"), f.get("DPT"))]
    if f.get("TCPFLAGS"):
        head.append(f" [{clean(f['TCPFLAGS'])}]")
    if f.get("TYPE"):
        head.append(f" type {clean(f['TYPE'])}")
        if f.get("CODE"):
            head.append(f" code {clean(f['CODE'])}")
    for key, word in (("IN", "in"), ("OUT", "out")):
        if f.get(key):
            head.append(f"  {word} {clean(f[key])}")
    lines = ["".join(head), _fate_line(expl, decisive)]
    if verbose and f:
        lines.append(clean(" ".join(f"{k}={show_field(k, v)}" for k, v in f.items())))
        origin = expl.packet.events[0].origin
        if origin is not None:
            lines.append(clean(f"first seen at {origin}"))
    return lines


def _fate_line(expl: Explanation, decisive: int | None) -> str:
    line = str(expl.fate).upper()
    v = expl.verdict
    if v is not None:
        by_policy = v.rule is None and (decisive is None or expl.steps[decisive].kind == StepKind.POLICY)
        table = table_label(v.table or "?", v.family, expl.shared)
        line += " by " + _where(table, v.chain)
        place = f"{table}:{v.chain}"
        if by_policy:
            line += " policy " + clean(v.action.upper())
        else:
            num = v.num if v.num is not None else v.rule.num if v.rule is not None else None
            num_s = "?" if num is None else num
            line += f" rule {clean(num_s)}"
            place += f" rule {num_s}"
        owner = deciding_owner(expl)
        if owner is not None and owner.specific:
            line += f" [{clean(f'{owner.kind} {owner.name}')}]"
        reason = after_place(v.reason, place)
        if reason:
            line += (" " if reason != v.reason else ": ") + clean(reason)
    elif expl.drops and expl.fate == Fate.DROPPED:
        line += " by the kernel: " + clean(expl.drops[0].text)
    elif expl.fate == Fate.UNKNOWN and expl.last_seen:
        line += ": the trace ends at " + clean(expl.last_seen)
    return line


def _head(step: Step, shared: frozenset[str] = frozenset()) -> str:
    table = table_label(step.table, step.event.label_family, shared)
    return f"{_where(table, step.chain)} {step.kind} {'?' if step.num is None else clean(step.num)}"


def _body(step: Step) -> str:
    kind = step.kind
    if kind == StepKind.POLICY:
        return clean(step.policy or "?")
    if kind == StepKind.RETURN:
        return "-> " + clean(step.returned_to or "?")
    if step.rule is None:
        return "(rule not in the ruleset)"
    return clean(step.rule.spec)


def _hooks(expl: Explanation, decisive: int | None, max_depth: int) -> list[Any]:
    """tree._build's hook and step nodes: (step index or None for a hook, label, body, children);
    a step's annotations are added when its lines are made (PlainTree._steps)."""
    steps = expl.steps
    hooks: list[Any] = []
    for hook, indices in hook_groups(steps):
        tables: list[str] = []
        for i in indices:
            t = table_label(steps[i].table, steps[i].event.label_family, expl.shared)
            if t not in tables:
                tables.append(t)
        node: tuple[Any, ...] = (
            None, strip_control_codes(f"{hook or '?'}  ") + " -> ".join(clean(t) for t in tables), None, [])
        hooks.append(node)
        stack = [node]
        for i in indices:
            step = steps[i]
            depth = max(step.depth, 0)
            p = min(depth, len(stack) - 1, max_depth)
            head = _head(step, expl.shared)
            if p < depth:
                head = f"(depth {depth}) " + head
            child: tuple[Any, ...] = (i, head, _body(step), [])
            stack[p][3].append(child)
            del stack[p + 1 :]
            stack.append(child)
    return hooks


def _step_annotations(expl: Explanation, decisive: int | None, verbose: bool) -> dict[int, list[str]]:
    """tree._step_annotations, as str."""
    out: dict[int, list[str]] = {}
    n = len(expl.steps)

    def add(i: int | None, text: str) -> None:
        if i is not None and 0 <= i < n:
            out.setdefault(i, []).append(text)

    if decisive is not None and expl.verdict is not None:
        add(decisive, f"=> {clean(expl.verdict.action.upper())}")
    for c in expl.nat:
        add(c.step, clean(change_text(c)))
    for c in expl.marks:
        add(c.step, clean(change_text(c)))
    for link in expl.cause:
        if link.step != decisive:
            add(link.step, "<- cause: " + clean(link.role))
    prev: dict[str, str] = {}
    for i, step in enumerate(expl.steps):
        if step.warning:
            add(i, clean(f"! {step.warning}"))
        if step.note:
            add(i, clean(f"note: {step.note}"))
        if verbose:
            fields = step.event.fields
            if i:
                changed = [f"{k}={show_field(k, v)}" for k, v in fields.items() if prev.get(k) != v]
                changed += [f"-{k}" for k in prev if k not in fields]
                if changed:
                    add(i, clean("fields: " + " ".join(changed)))
            prev = fields
            if step.event.origin is not None:
                add(i, clean(f"at {step.event.origin.short}"))
    return out


def _at(table: str | None, chain: str | None, num: int | None, policy: bool) -> str:
    where = _where(table, chain)
    if policy:
        return where + " policy"
    if num is not None:
        return f"{where} rule {clean(num)}"
    return where


def _change_at(expl: Explanation, c: Change) -> str:
    line = clean(change_text(c))
    if c.table or c.chain:
        line += " at " + _at(step_table(expl, c.table, c.step), c.chain, c.num, False)
    return line


def _changes(expl: Explanation, cs: Sequence[Change]) -> list[str | _Hang]:
    return [_change_at(expl, c) for c in cs]


def _causes(expl: Explanation, cause: Sequence[CauseLink]) -> list[str | _Hang]:
    width = max(len(c.role) for c in cause)
    lines: list[str | _Hang] = []
    for c in cause:
        where = _at(step_table(expl, c.table, c.step), c.chain, c.num, c.rule is None and c.num is not None)
        if c.text and where in c.text:
            where = clean(c.text)
        elif c.text:
            where += ": " + clean(c.text)
        lines.append(_Hang(clean(c.role.ljust(width)), [where]))
    return lines


def _drops(drops: Sequence[KernelDrop]) -> list[str | _Hang]:
    return [clean("dropped: " + (d.text or d.reason)) for d in drops]


def _routing(routing: Sequence[RouteDecision]) -> list[str | _Hang]:
    return [clean(r.text) for r in routing]


def _conntrack(entries: Sequence[ConntrackEntry]) -> list[str | _Hang]:
    return [clean(f"{c.when}: {c.text}") for c in entries]


def _texts(texts: Sequence[str]) -> list[str | _Hang]:
    return [clean(t) for t in texts]


def _footer_rows(expl: Explanation) -> list[tuple[str, Sequence[Any], Callable[[Any], list[str | _Hang]]]]:
    """tree._footer: each row's label, the objects it shows and what makes its lines of them."""
    rows: list[tuple[str, Sequence[Any], Callable[[Any], list[str | _Hang]]]] = []
    if expl.nat:
        rows.append(("nat", expl.nat, partial(_changes, expl)))
    if expl.marks:
        rows.append(("mark", expl.marks, partial(_changes, expl)))
    if expl.cause:
        rows.append(("why", expl.cause, partial(_causes, expl)))
    if expl.drops:
        rows.append(("kernel", expl.drops, _drops))
    if expl.routing:
        rows.append(("route", expl.routing, _routing))
    if expl.conntrack:
        rows.append(("ct", expl.conntrack, _conntrack))
    if expl.warnings:
        rows.append(("warning", expl.warnings, _texts))
    if expl.notes:
        rows.append(("note", expl.notes, _texts))
    return rows


def _misses(expl: Explanation) -> list[str | _Hang]:
    ms = expl.misses or []
    where = f"{ms[0].table}:{ms[0].chain}" if ms else "the chain"
    out: list[str | _Hang] = [clean(f"rules of {where}, checked against the packet's logged fields")]
    if not ms:
        out.append("  (the chain has no rules)")
    for m in ms:
        if m.rule is not None:
            out.append(f"  {clean(m.table)}:{clean(m.chain)}:{m.num}  " + clean(m.rule.spec))
        out.append(_Hang("     ", [clean(m.reason)]))
    return out
