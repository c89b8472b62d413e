"""Ruleset versions of a live trace, kept only while a packet may still refer to them.

Every ruleset snapshot is a numbered version. A version costs a parsed ruleset (several MB on
thousands of rules), so only the newest one and the versions steps of still-open packets refer
to are kept, at most ``MAX_KEPT``; the iptables-save text (only needed to describe the next
change) is kept for the newest version only. A packet that refers to a dropped version is
explained against the oldest version still kept, and says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..model import Ruleset

MAX_KEPT = 8  # versions kept at most (the newest always among them)


@dataclass
class Version:
    """One ruleset snapshot."""

    n: int
    at: float
    rulesets: dict[str, Ruleset]
    texts: dict[str, str]
    changes: list[str] = field(default_factory=list)


def _normal(text: str) -> list[str]:
    """iptables-save text without comments and counters, for change detection."""
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        out.append(re.sub(r" \[\d+:\d+\]$", "", re.sub(r"^\[\d+:\d+\] ", "", line)))
    return out


def diff_summary(old: str, new: str) -> list[str]:
    """``table:chain +A -R`` per chain whose rules changed between two iptables-save texts."""
    def by_chain(text: str) -> dict[tuple[str, str], list[str]]:
        d: dict[tuple[str, str], list[str]] = {}
        table = ""
        for line in _normal(text):
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A "):
                chain = line.split()[1]
                d.setdefault((table, chain), []).append(line)
        return d

    a, b = by_chain(old), by_chain(new)
    out = []
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key, []), b.get(key, [])
        if ra == rb:
            continue
        added = len([r for r in rb if r not in ra])
        removed = len([r for r in ra if r not in rb])
        moved = " (order changed)" if not added and not removed else ""
        out.append(f"{key[0]}:{key[1]} +{added} -{removed}{moved}")
    return out


def same_rules(a: Version, b: Version, families: Iterable[str]) -> bool:
    return all(_normal(a.texts.get(f, "")) == _normal(b.texts.get(f, "")) for f in families)


class Versions:
    """The kept versions by number; ``latest`` is the live one."""

    def __init__(self, max_kept: int = MAX_KEPT) -> None:
        self.max_kept = max(1, max_kept)
        self._kept: dict[int, Version] = {}
        self.latest_n = -1
        self.dropped = 0  # versions dropped so far

    def __len__(self) -> int:
        return len(self._kept)

    def __bool__(self) -> bool:
        return bool(self._kept)

    def kept(self) -> list[int]:
        return sorted(self._kept)

    @property
    def latest(self) -> Version:
        return self._kept[self.latest_n]

    def next_n(self) -> int:
        return self.latest_n + 1

    def add(self, v: Version) -> None:
        """Add the new live version; the previous one keeps no text (only the newest is diffed)."""
        if self._kept:
            self.latest.texts = {}
        self._kept[v.n] = v
        self.latest_n = v.n

    def replace_latest(self, v: Version) -> None:
        """Replace the live version's content (a change of our own, e.g. our rules re-installed)."""
        v.n = self.latest_n
        self._kept[v.n] = v

    def get(self, n: int) -> tuple[Version, bool]:
        """``(version, exact)``: version ``n``, or the oldest kept newer one when ``n`` was dropped."""
        v = self._kept.get(n)
        if v is not None:
            return v, True
        newer = [k for k in self._kept if k > n]
        return self._kept[min(newer) if newer else self.latest_n], False

    def has(self, n: int) -> bool:
        return n in self._kept

    def prune(self, referenced: Iterable[int]) -> list[int]:
        """Drop versions no open packet refers to (and the oldest beyond ``max_kept``); returns them."""
        keep = {n for n in referenced if n in self._kept}
        keep.add(self.latest_n)
        if len(keep) > self.max_kept:
            keep = set(sorted(keep)[-self.max_kept:]) | {self.latest_n}
        gone = [n for n in self._kept if n not in keep]
        for n in gone:
            del self._kept[n]
        self.dropped += len(gone)
        return gone
