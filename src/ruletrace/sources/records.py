"""What the non-kernel-log trace readers share: the TRACE tag (sources/tag.py) and the broken-record tally."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..model import Origin

MAX_TS = float(1 << 35)  # seconds (year 3058): larger stamps are damage, not time


def sane_ts(ts: Any) -> float | None:
    """A time stamp that can be shown as a time (finite, 0 <= ts < MAX_TS), else None."""
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return None
    return float(ts) if 0 <= ts < MAX_TS else None  # False for NaN too


def text_lines(stream: Any) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a binary text stream as (line number, text without the newline)."""
    for n, raw in enumerate(stream, 1):
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.strip():
            yield n, line


def note_bad(stats: Any, origin: Origin, reason: str) -> None:
    """Count a broken record on a ``sources.stats.ReadStats`` (or anything with ``skip(line)``)."""
    if stats is not None:
        stats.skip(origin.line)


def note_record(stats: Any, *, event: bool) -> None:
    if stats is None:
        return
    stats.lines += 1
    if event:
        stats.events += 1


class Tally:
    """Broken records of one file: counted on ``stats`` when there is one, else raised at the end.

    Readers keep going past a broken record so that every good record is still yielded; a caller
    that passed no stats object gets a RuletraceError naming the first broken record once the
    good ones are out.
    """

    __slots__ = ("stats", "count", "first", "reason")

    def __init__(self, stats: Any) -> None:
        self.stats = stats
        self.count = 0
        self.first: Origin | None = None
        self.reason = ""

    def bad(self, origin: Origin, reason: str) -> None:
        self.count += 1
        if self.first is None:
            self.first, self.reason = origin, reason
        note_bad(self.stats, origin, reason)

    def finish(self) -> None:
        """Raise for the broken records when nobody is counting them."""
        if self.count and self.stats is None:
            from ..errors import RuletraceError

            more = f" (and {self.count - 1} more)" if self.count > 1 else ""
            raise RuletraceError(f"{self.reason}{more}", origin=self.first)
