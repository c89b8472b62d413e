"""The packets of one slice of a plain kernel-log file, as one sequential pass would group them.

A large file is cut at line starts into slices (``cut``); ``lines`` counts the lines before each
cut, so every event keeps its file-wide line number. ``packets(i)`` yields the packets whose first
event lies on a line of slice ``i``, in the order (and with the events) that
``correlate.group.group_packets`` over the whole file gives them:

- reading starts ``WARM_BYTES`` before the slice ("warm-up"), so the packets open at its first
  line are open here too; packets that start there belong to the slice before and are not yielded;
- reading goes on ``OVERFLOW_BYTES`` past the slice end to complete the packets open there; no
  packet starts in the overflow (``group_packets``' ``admit``); what is still open after it is
  complete.

Both rest on what ``fastpath/parallel.py`` rests on: the lines of one packet lie within a few
hundred lines of each other (one softirq pass prints them). Events are the reference reader's
(``sources.kernel_log.read_events``: every field, time stamp and origin as one pass makes them), so
a caller explains them with the reference explainer. ``stats`` counts only the slice's own lines.
Used by fastpath/parallel_json.py (tests/pipeline/test_parallel_json.py); meant for any per-packet
output made on every core (the tree too).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import BinaryIO

from ..correlate.group import group_packets
from ..model import Packet, TraceEvent
from ..sources import kernel_log
from ..sources.stats import MAX_SKIPPED_LINES, ReadStats
from .parallel import Span

__all__ = ["OVERFLOW_BYTES", "WARM_BYTES", "SliceStats", "cut", "packets"]

WARM_BYTES = 1 << 20  # read before a slice: the starts of the packets open at its first line
OVERFLOW_BYTES = 1 << 20  # read after a slice: the rest of the packets open at its end


class SliceStats(ReadStats):
    """ReadStats that count only the lines ``lo`` <= line < ``hi`` (the slice's own)."""

    __slots__ = ("hi", "lo")

    def __init__(self, lo: int, hi: int) -> None:
        super().__init__()
        self.lo, self.hi = lo, hi

    def skip(self, line: int | None) -> None:
        if line is None or self.lo <= line < self.hi:
            ReadStats.skip(self, line)

    def cut_short(self, line: int | None) -> None:
        if line is None or self.lo <= line < self.hi:
            ReadStats.cut_short(self, line)

    def cut_warning(self) -> None:
        """Said once for the whole file by the caller (``merge``), not per slice."""

    def log_line(self, prefix: str) -> None:
        """LOG lines of the warm-up and overflow would count twice; no output reads them here."""


def merge(parts: list[ReadStats]) -> ReadStats:
    """One ReadStats of the slices' (in file order), as one reader of the whole file fills it."""
    st = ReadStats()
    for p in parts:
        st.events += p.events
        st.skipped += p.skipped
        st.skipped_lines.extend(p.skipped_lines)
        st.cut += p.cut
        st.cut_lines.extend(p.cut_lines)
        st.warnings.extend(p.warnings)
    del st.skipped_lines[MAX_SKIPPED_LINES:], st.cut_lines[MAX_SKIPPED_LINES:]
    st.cut_warning()
    return st


def _line_start(f: BinaryIO, offset: int) -> int:
    """The offset of the first line that starts at or after ``offset``."""
    if offset <= 0:
        return 0
    f.seek(offset - 1)
    f.readline()
    return f.tell()


def cut(path: str, slice_bytes: int, shrink: int = 0) -> tuple[list[int], list[int]]:
    """Cut points (line starts, the first 0, the last the file size) and the lines before each.
    Slices are ``slice_bytes`` long; with ``shrink``, a slice is at most 1/``shrink`` of what is
    left (none below ``slice_bytes`` / 8): the last ones are small, so processes that claim them
    in turn run dry together."""
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb", buffering=0) as f:
        while cuts[-1] < size:
            left = size - cuts[-1]
            step = max(1, slice_bytes if not shrink else max(slice_bytes // 8, min(slice_bytes, left // shrink)))
            nxt = _line_start(f, cuts[-1] + step) if step < left else size
            cuts.append(min(nxt, size))
        lines = [0]
        f.seek(0)
        pos = 0
        for c in cuts[1:]:
            n = 0
            while pos < c:
                data = f.read(min(c - pos, 1 << 22))
                if not data:
                    break
                n += data.count(b"\n")
                pos += len(data)
            lines.append(lines[-1] + n)
    return cuts, lines


def _line(ev: TraceEvent) -> int:
    """The line of an event (kernel-log events keep it apart from their lazily made origin)."""
    try:
        line: int = ev._line  # type: ignore[attr-defined]
        return line
    except AttributeError:
        o = ev.origin
        return o.line if o is not None and o.line is not None else -1


def _counted(events: Iterator[TraceEvent], stats: ReadStats, lo: int, hi: int) -> Iterator[TraceEvent]:
    """The events; ``stats.events`` counts those of lines [lo, hi) (as one reader of the file does),
    not the reader's own count of every event it read."""
    start = stats.events
    n = 0
    try:
        for ev in events:
            if lo <= _line(ev) < hi:
                n += 1
            yield ev
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # its own count goes in now, to be replaced
        stats.events = start + n


def packets(path: str, cuts: list[int], lines: list[int], i: int, stats: SliceStats | None = None,
            name: str | None = None) -> Iterator[Packet]:
    """The packets of slice ``i`` (see the module doc), ids numbered from 1 within the slice.
    ``stats`` (``SliceStats(lines[i] + 1, lines[i + 1] + 1)``) gets what one reader of the whole
    file counts for the slice's lines; ``name`` is the file's name in origins (default ``path``)."""
    lo, hi = cuts[i], cuts[i + 1]
    lo_line, hi_line = lines[i] + 1, lines[i + 1] + 1
    st = stats if stats is not None else SliceStats(lo_line, hi_line)
    with open(path, "rb", buffering=0) as f:
        warm = _line_start(f, lo - WARM_BYTES) if lo > 0 else 0
        f.seek(warm)
        line0 = lines[i] - f.read(lo - warm).count(b"\n")
        end = _line_start(f, hi + OVERFLOW_BYTES) if hi < cuts[-1] else hi
        stream = io.BufferedReader(Span(f, warm, end), 1 << 20)
        events = _counted(kernel_log.read_events(stream, name=name or path, stats=st, line0=line0), st,
                          lo_line, hi_line)

        def admit(ev: TraceEvent) -> bool:  # no packet starts in the overflow
            return _line(ev) < hi_line

        n = 0
        for p in group_packets(events, admit=admit):
            if p.events and 0 <= _line(p.events[0]) < lo_line:
                continue  # the slice before's (its start lies in the warm-up)
            n += 1
            p.id = n
            yield p
