"""The live view of ``ruletrace trace``: one line per packet, repeats collapsed, a summary at the end.

The words come from ``analyze.live`` (``line_of``, ``Repeats``); this module lays them out.
``COLUMNS`` is the one list of what a line shows, in order: a column added later (an owner)
is one entry more. On a terminal each line is cut to the width (ending in "…"), so it takes
exactly one row and a repeat can rewrite it in place ("×3"); anywhere else (a pipe, a file)
lines are never cut nor wrapped, so that ``grep`` sees whole paths.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.control import Control
from rich.segment import ControlType
from rich.text import Text

from ..analyze.live import LiveLine, Repeat, Repeats, decider_words
from ..model import Explanation, Fate
from .theme import THEME, clean, cut_middle, fate_style

GAP = "  "
REPRINT_AFTER = 5.0  # seconds: a repeat of a path whose line scrolled away is printed again at most this often



def _fate_style(line: LiveLine) -> str:
    return fate_style(line.fate.lower())


# The one-line view, left to right: (field of LiveLine, style). COLUMNS is the one list of what
# a line shows; NARROWING says what gives way, in order, where a terminal is too narrow.
COLUMNS: list[tuple[str, Callable[[LiveLine], str]]] = [
    ("time", lambda line: "dim"),
    ("packet", lambda line: "packet.addr"),
    ("iface", lambda line: "packet.iface"),
    ("fate", _fate_style),
    ("decider", lambda line: "chain"),
    ("owner", lambda line: "owner"),  # explain/owners.py: "kubernetes ns/svc:http"
    ("cause", lambda line: "note"),
    ("miss", lambda line: "note"),  # trace --explain-miss
]
# What a narrow terminal gives up first: the packet's source port and flags ("short"), the time,
# the interfaces; then the cause, the near miss and the owner are each cut short ("…") to what
# is left (the owner losing its kind first), or left out when fewer than CUT_MIN cells are;
# then the gaps narrow. The answer -- the packet's addresses, its fate, the deciding rule, who
# owns it and the count -- goes last: a Kubernetes drop at 120 columns names its service
# ("ns/svc:http"), where it used to show the time and the source port instead.
NARROWING = ("short", "time", "iface", "cause", "miss", "owner", "gap")
CUT = frozenset({"cause", "miss", "owner"})
CUT_MIN = 12  # cells a cut column keeps at least (its "…" included)
MIN_PACKET = 20  # cells the packet column keeps at least when cut
MIN_CHAIN = 9  # characters the deciding rule's chain keeps at least when cut ("…" included)


def to_text(line: LiveLine, count: int = 1, width: int | None = None) -> Text:
    """One packet's line: the columns, then "×N" when N packets took this path.

    With ``width``, the line fits in it, giving way in the order of ``NARROWING``; then the
    deciding rule's chain gives up its middle (the addresses stay whole); at last the packet is cut
    in its middle with "…", and then the end of the line is.
    """
    dropped: set[str] = set()
    gap = GAP
    text = _assemble(line, count, dropped, gap)
    if width is None or text.cell_len <= width:
        return text
    for step in NARROWING:
        if step == "short":
            line = line._replace(packet=line.short)
        elif step == "gap":
            gap = " "
        elif step in CUT and getattr(line, step):
            dropped.add(step)
            room = width - _assemble(line, count, dropped, gap).cell_len - len(gap)
            if room >= CUT_MIN:
                cut = Text(clean(getattr(line, step)))
                if step == "owner" and cut.cell_len > room and " " in cut.plain:
                    cut = Text(cut.plain.split(" ", 1)[1])  # the name without its kind ("kubernetes ")
                cut.truncate(room, overflow="ellipsis")
                line = line._replace(**{step: cut.plain})
                dropped.discard(step)
        else:
            dropped.add(step)
        text = _assemble(line, count, dropped, gap)
        if text.cell_len <= width:
            return text
    over = text.cell_len - width
    decider = _cut_chain(clean(line.decider), over)
    if decider != line.decider:  # the chain gives up its middle: "firewalld:filter_I…OLICIES rule 3"
        line = line._replace(decider=decider)
        text = _assemble(line, count, dropped, gap)
        if text.cell_len <= width:
            return text
        over = text.cell_len - width
    packet = clean(line.packet)
    short = cut_middle(packet, max(len(packet) - over - 1, MIN_PACKET))
    if short != packet:
        line = line._replace(packet=short)
        text = _assemble(line, count, dropped, gap)
    text.truncate(width, overflow="ellipsis")
    return text


def _cut_chain(decider: str, over: int) -> str:
    """The deciding rule ``table:CHAIN rule N`` with ``over`` cells less, taken from the chain's
    middle (table, the chain's ends and the rule's number stay); as it is when it has no such part."""
    table, colon, rest = decider.partition(":")
    chain, space, tail = rest.partition(" ")
    if not colon or not space:
        return decider
    cut = cut_middle(chain, max(len(chain) - over - 1, MIN_CHAIN))
    return decider if cut == chain else f"{table}:{cut} {tail}"


def _assemble(line: LiveLine, count: int, dropped: set[str], gap: str = GAP) -> Text:
    out = Text()
    for name, style in COLUMNS:
        value = getattr(line, name)
        if not value or name in dropped:
            continue
        if out:
            out.append(gap)
        out.append(clean(value), style(line))
    if count > 1:
        out.append(f"{gap}×{count}", "summary.count")
    return out


class LiveView:
    """Prints packets as they complete: a line (or a tree) for a new path, a count for a repeat.

    ``tree``: the full tree for the first packet of each distinct path, a line for its repeats;
    ``every``: the tree of every packet, nothing collapsed (``-v``). ``interrupted()`` must be
    called when anything else was written to the terminal, so that no line is rewritten above it.
    """

    def __init__(self, console: Console, *, tree: bool = False, every: bool = False, verbose: bool = False,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.console = console
        self.tree = tree or every
        self.every = every
        self.verbose = verbose
        self.repeats = Repeats()
        self.clock = clock
        self.wall = wall  # the time shown for a packet without a wall-clock stamp of its own
        self.in_place = console.is_terminal
        self._last: Repeat | None = None  # the path whose line is the last row printed
        self._printed_at: dict[int, float] = {}  # first packet id of a path -> when its line was last printed
        self._blank = False

    def show(self, expl: Explanation) -> None:
        rep, new = self.repeats.add(expl, self.wall())
        if self.every or (new and self.tree):
            from .tree import to_renderable

            with self.console.use_theme(THEME):
                if self._blank:
                    self.console.print()
                self.console.print(to_renderable(expl, verbose=self.verbose))
            self._blank = True
            self._last = None
            rep.shown_count = rep.count if self.every else rep.shown_count
            return
        if new:
            self._print(rep)
            return
        if self.in_place and self._last is rep:
            self.console.control(Control.move(0, -1), Control((ControlType.ERASE_IN_LINE, 2)))
            self._print(rep)
        elif self.clock() - self._printed_at.get(rep.first_id, 0.0) >= REPRINT_AFTER:
            self._print(rep)

    def _print(self, rep: Repeat) -> None:
        with self.console.use_theme(THEME):
            if self._blank:
                self.console.print()
                self._blank = False
            if self.in_place:
                text = to_text(rep.line, rep.count, self._row_width())
                self.console.print(text, no_wrap=True, overflow="ellipsis", crop=True)
            else:
                self.console.print(to_text(rep.line, rep.count), soft_wrap=True, crop=False)
        rep.shown_count = rep.count
        self._last = rep
        self._printed_at[rep.first_id] = self.clock()

    def _row_width(self) -> int:
        """Cells in one row: the console's width, and never more than the terminal's own (a
        --width wider than the terminal would wrap the line, and a rewrite would miss it)."""
        try:
            return min(self.console.width, os.get_terminal_size(self.console.file.fileno()).columns)
        except (OSError, ValueError, AttributeError):  # not a real terminal (a test's buffer)
            return self.console.width

    def interrupted(self) -> None:
        """Something else was written: the last row is no longer this view's."""
        self._last = None

    def unshown(self) -> list[Repeat]:
        """Paths with more packets than their last printed line says."""
        return [r for r in self.repeats.repeated() if r.count > r.shown_count]

    def finish(self) -> None:
        """At the end: each path whose last count was not printed, once more with its total."""
        for rep in self.unshown():
            self._print(rep)


SUMMARY_DECIDERS = 5  # deciding rules the exit summary names (the most packets first)


def summary_lines(repeats: Repeats, width: int = 100) -> list[str]:
    """The exit summary's words: packets by fate, then by deciding rule (most first).

    The deciders are one line while that fits in ``width`` (with the caller's "ruletrace: "),
    else "decided by:" and one indented line each, its count first: a kube node's five
    deciders with their owners made one line of ~350 characters that a terminal folded
    mid-word."""
    s = repeats.summary
    if not s.packets:
        return []
    fates = ", ".join(f"{n} {f}" for f in Fate if (n := s.fates.get(f, 0)))
    lines = [f"{s.packets} packet(s): {fates}"]
    ranked = s.ranked()
    if ranked:
        top = ranked[:SUMMARY_DECIDERS]
        more = len(ranked) - len(top)
        shown = ", ".join(f"{decider_words(d)} ×{n}" for d, n in top) + (f", {more} more" if more else "")
        if len("ruletrace: decided by: " + shown) <= width:
            lines.append(f"decided by: {shown}")
        else:
            rest = sum(n for _d, n in ranked[len(top):])
            digits = max(len(str(n)) for n in [rest, *(n for _d, n in top)])
            lines.append("decided by:")
            lines += [f"  {n:>{digits}}  {decider_words(d)}" for d, n in top]
            if more:
                lines.append(f"  {rest:>{digits}}  {more} more")
    collapsed = sum(r.count - 1 for r in repeats.repeated())
    if collapsed:
        lines.append(f"{collapsed} packet(s) took a path already shown ({len(repeats.repeated())} path(s) repeated)")
    return lines


def json_object(obj: dict[str, Any], session: str, when: float) -> dict[str, Any]:
    """A ``to_json`` packet object as ``trace --json`` streams it: with time, session and schema."""
    from .json import SCHEMA_VERSION

    stamp = datetime.fromtimestamp(when, tz=UTC).isoformat(timespec="milliseconds")
    return {**obj, "time": stamp, "session": session, "schema": SCHEMA_VERSION}

