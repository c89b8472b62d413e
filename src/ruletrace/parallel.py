"""Summaries of huge kernel logs on every core: the file is cut into byte ranges, one per worker.

Each worker reads the lines that *start* in its range, groups and explains them (summary
only) with the ruleset it inherited through fork. Packets cut by a range boundary are handled
so that the result equals one sequential pass:

- a worker goes on reading past its range end ("overflow") only to complete the packets it
  has open there; no packet starts in the overflow;
- the next worker sees the tails of those packets at its start as packets of their own
  ("head" packets, first event within ``HEAD_LINES`` of its start): it hands them back with
  their keys instead of counting them, and the parent drops those whose key the previous
  worker completed in its overflow.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .correlate.group import group_key, group_packets
from .explain.explain import Explainer
from .model import Explanation, Packet, Ruleset

HEAD_LINES = 20_000  # a packet whose first line is this close to a range start may be a tail
OVERFLOW_LINES = 20_000  # lines read past a range end to complete open packets
MIN_BYTES = 32 << 20  # smaller files are read in one process: forking costs more than it saves

_JOB: dict[str, Any] = {}  # set in the parent before fork; workers read it


@dataclass
class _Result:
    summary: Any
    heads: list[tuple[Any, Explanation]] = field(default_factory=list)
    spilled: set = field(default_factory=set)
    skipped: int = 0
    events: int = 0
    misfits: int = 0


class _RangeLines:
    """The lines that start in [start, end), then up to ``overflow`` more, flagged as overflow."""

    def __init__(self, f, start: int, end: int, overflow: int, stats: Any) -> None:
        self.f, self.start, self.end, self.overflow, self.stats = f, start, end, overflow, stats
        self.in_overflow = False
        self.range_lines = 0  # lines yielded before the overflow
        self.skipped_in_range = 0

    def __iter__(self) -> Iterator[bytes]:
        f = self.f
        if self.start > 0:
            f.seek(self.start - 1)
            f.readline()  # the rest of the line that started before `start` is the previous worker's
        else:
            f.seek(0)
        pos = f.tell()
        end = self.end
        n = 0
        for line in f:
            if pos >= end:
                self.range_lines = n
                self.in_overflow = True
                self.skipped_in_range = getattr(self.stats, "skipped", 0)
                yield line  # the first overflow line
                break
            pos += len(line)
            n += 1
            yield line
        else:
            self.range_lines = n
        self.in_overflow = True
        if not self.skipped_in_range:
            self.skipped_in_range = getattr(self.stats, "skipped", 0)
        left = self.overflow - 1
        for line in f:
            if left <= 0:
                return
            left -= 1
            yield line

    def readable(self) -> bool:
        return True


def _line_of(ev) -> int:
    o = ev.origin
    return (o.line or 0) if o is not None else 0


def _work(args: tuple[int, int, int]) -> _Result:
    from .render.summary import Summary
    from .sources import kernel_log
    from .sources.stats import ReadStats

    index, start, end = args
    path: str = _JOB["path"]
    rulesets: list[Ruleset] = _JOB["rulesets"]
    pick = _JOB["pick"]
    wants = _JOB["wants"]
    st = ReadStats()
    res = _Result(Summary())
    explainers: dict[str | None, Explainer] = {}
    with open(path, "rb") as f:
        lines = _RangeLines(f, start, end, OVERFLOW_LINES, st)
        events = kernel_log.read_events(lines, name=path, stats=st)
        for packet in group_packets(events, admit=lambda ev: not lines.in_overflow):
            fam = packet.events[0].family
            ex = explainers.get(fam)
            if ex is None:
                ex = explainers[fam] = Explainer(pick(rulesets, fam), summary_only=True)
            e = ex.explain(packet, detail=False)
            key = group_key(packet.events[0])
            if lines.in_overflow and _line_of(packet.events[-1]) > lines.range_lines:
                res.spilled.add(key)
            if index > 0 and _line_of(packet.events[0]) <= HEAD_LINES:
                e.packet = Packet(packet.id, [])
                res.heads.append((key, e))
            elif wants(e):
                res.summary.add(e)
    res.skipped = lines.skipped_in_range if lines.in_overflow else st.skipped
    res.events = st.events
    res.misfits = sum(x.misfit_packets for x in explainers.values())
    return res


def usable(path: str, fmt: str | None) -> bool:
    """True when ``path`` is a plain (uncompressed) kernel-log file large enough to split."""
    if (os.cpu_count() or 1) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return False
    try:
        if not os.path.isfile(path) or os.path.getsize(path) < MIN_BYTES:
            return False
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return False
    if head[:2] in (b"\x1f\x8b", b"BZ", b"\xfd7") or head[:1] == b"{":
        return False
    from .sources import detect

    try:
        return (fmt or detect.detect(head, path)) == "kernel-log"
    except Exception:
        return False


def summarize(path: str, rulesets: list[Ruleset], pick, wants, workers: int | None = None):
    """Summary over ``path`` computed by ``workers`` processes; returns (summary, skipped, events, misfits)."""
    from .render.summary import Summary

    workers = max(2, workers or min(os.cpu_count() or 2, 8))
    size = os.path.getsize(path)
    bounds = [size * i // workers for i in range(workers + 1)]
    _JOB.update(path=path, rulesets=rulesets, pick=pick, wants=wants)
    try:
        ctx = multiprocessing.get_context("fork")
        # the parent reads the first range itself: one process (and one ruleset copy) less
        with ctx.Pool(workers - 1) as pool:
            rest = pool.map_async(_work, [(i, bounds[i], bounds[i + 1]) for i in range(1, workers)])
            results = [_work((0, bounds[0], bounds[1]))] + rest.get()
    finally:
        _JOB.clear()
    total = Summary()
    for i, r in enumerate(results):
        total.merge(r.summary)
        drop = results[i - 1].spilled if i > 0 else set()
        for key, e in r.heads:
            if key not in drop and wants(e):
                total.add(e)
    return (total, sum(r.skipped for r in results), sum(r.events for r in results),
            sum(r.misfits for r in results))
