"""Summaries of huge kernel logs on every core: the file is cut into byte ranges, one per worker.

Workers are forked before the ruleset is parsed: each reads the lines that *start* in its
range as lean records (no event objects) and groups them into paths with packet counts. The
parent meanwhile parses the ruleset, reads a smaller first range, and explains every distinct
path once. Packets cut by a range boundary are handled so that the result equals one
sequential pass (tests/pipeline/test_parallel.py):

- a worker goes on reading past its range end ("overflow") only to complete the packets it
  has open there; no packet starts in the overflow;
- the next worker sees the tails of those packets at its start as packets of their own
  ("head" packets, first event within ``HEAD_LINES`` of its start): it hands them back with
  their keys instead of counting them, and the parent drops those whose key the previous
  worker completed in its overflow.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .explain.explain import Explainer
from .model import Ruleset
from .sources.stats import ReadStats

HEAD_LINES = 20_000  # a packet whose first line is this close to a range start may be a tail
OVERFLOW_BYTES = 8 << 20  # read past a range end to complete open packets (~20,000 lines)
PARENT_SHARE = 0.85  # the parent's range relative to a worker's (it also parses and explains)
MIN_BYTES = 32 << 20  # smaller files are read in one process: forking costs more than it saves

_JOB: dict[str, Any] = {}  # set in the parent before fork; workers read it


@dataclass
class _Result:
    """What one range gave: paths with their packet counts; no ruleset was needed for it."""

    paths: Counter = field(default_factory=Counter)  # (family, steps) -> packets
    heads: list[tuple[Any, tuple]] = field(default_factory=list)  # (key, (family, steps))
    spilled: set = field(default_factory=set)
    skipped: int = 0
    events: int = 0


class _Bytes(io.RawIOBase):
    """Raw bytes [pos, end) of an open file, reported to ``report`` as they are read.

    A raw stream (not a line generator) so that the reader iterates lines at C speed through
    an io.BufferedReader.
    """

    def __init__(self, f, pos: int, end: int, report: Any = None) -> None:
        super().__init__()
        self.f = f
        self.pos = pos
        self.end = end
        self.report = report

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        want = min(len(b), self.end - self.pos)
        if want <= 0:
            return 0
        self.f.seek(self.pos)
        data = self.f.read(want)
        n = len(data)
        b[:n] = data
        self.pos += n
        if self.report is not None:
            self.report(n)
        return n


def _line_start(f, offset: int) -> int:
    """The offset of the first line that starts at or after ``offset``."""
    if offset <= 0:
        return 0
    f.seek(offset - 1)
    f.readline()  # the rest of a line that started before `offset`
    return f.tell()


def _work(args: tuple[int, int, int], progress: Any = None) -> _Result:
    """Read and group one byte range into paths (no ruleset: workers start before it is parsed).

    The range is the lines that start in [start, end); then up to OVERFLOW_BYTES more are read
    only to complete the packets open at its end (no packet starts there, nothing is counted).
    """
    from .sources.kernel_log_paths import PathReader

    index, start, end = args
    path: str = _JOB["path"]
    res = _Result()
    paths = res.paths
    spilled = res.spilled
    heads = res.heads
    range_lines = 1 << 62

    def emit(family: Any, steps: list, key: Any, first: int, last: int) -> None:
        path_key = (family, tuple(steps))
        if last > range_lines:
            spilled.add(key)
        if index > 0 and first <= HEAD_LINES:
            heads.append((key, path_key))
        else:
            paths[path_key] += 1

    reader = PathReader(path, emit)
    st = ReadStats()
    with open(path, "rb", buffering=0) as f:
        lo = _line_start(f, start)
        hi = max(lo, _line_start(f, end))
        reader.feed(io.BufferedReader(_Bytes(f, lo, hi, progress), 1 << 20), st)
        range_lines = reader.lines
        reader.feed(io.BufferedReader(_Bytes(f, hi, hi + OVERFLOW_BYTES), 1 << 20), ReadStats(),
                    admit=lambda line: False)
        reader.finish()
    res.skipped = st.skipped
    res.events = st.events
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
    from .errors import RuletraceError
    from .sources import detect

    try:
        return (fmt or detect.detect(head, path)) == "kernel-log"
    except RuletraceError:
        return False  # the sequential path reports it


def summarize(path: str, load_rulesets, pick, fates=frozenset(), workers: int | None = None,
              progress: Any = None):
    """Summary over ``path`` computed by ``workers`` processes; returns (summary, skipped, events, misfits).

    The workers are forked first and only read and group; the parent meanwhile parses the
    ruleset(s) (``load_rulesets()``), reads a smaller first range, then explains every distinct
    path once and counts its packets.
    """
    from .render.summary import Summary

    workers = max(2, workers or min(os.cpu_count() or 2, 8))
    size = os.path.getsize(path)
    # the parent also parses the ruleset and explains the paths: give it less of the file
    share = PARENT_SHARE / workers
    cuts = [0, int(size * share)] + [int(size * share + (size - size * share) * i / (workers - 1))
                                      for i in range(1, workers)]
    cuts[-1] = size
    _JOB.update(path=path)
    total = Summary()
    entry_of = Summary.entry
    explainers: dict[str | None, Explainer] = {}

    def count(paths: Counter) -> None:
        for (fam, steps), n in paths.items():
            ex = explainers.get(fam)
            if ex is None:
                ex = explainers[fam] = Explainer(pick(rulesets, fam), summary_only=True)
            entry = ex.memo_path(steps, entry_of, n)
            if not fates or entry[0] in fates:
                total.count(entry, n)

    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers - 1) as pool:
            rest = pool.map_async(_work, [(i, cuts[i], cuts[i + 1]) for i in range(1, workers)])
            rulesets = load_rulesets()
            # the workers finish about when the parent does: its share stands for the whole file
            scale = size / max(cuts[1], 1)
            first = _work((0, cuts[0], cuts[1]), (lambda n: progress(int(n * scale))) if progress else None)
            count(first.paths)  # while the workers still read
            results = [first] + rest.get()
    finally:
        _JOB.clear()
    for i, r in enumerate(results):
        if i:
            count(r.paths)
        drop = results[i - 1].spilled if i > 0 else set()
        count(Counter(p for key, p in r.heads if key not in drop))
    return (total, sum(r.skipped for r in results), sum(r.events for r in results),
            sum(x.misfit_packets for x in explainers.values()))
