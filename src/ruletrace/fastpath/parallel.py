"""Summaries of huge kernel logs on every core: the file is cut into slices, claimed in turn.

Workers are forked before the ruleset is parsed. Each claims the next slice (a shared counter),
reads the lines that *start* in it straight into packet paths with counts
(``fastpath.kernel_log_paths``: no event objects) and sends them to the parent. The parent
meanwhile parses the ruleset, then claims slices too, and between slices explains every
distinct path that came in, once. With several slices per process all finish at about the
same time, however the machine shares its cores out. Packets cut by a slice boundary are
handled so that the result equals one sequential pass (tests/pipeline/test_parallel.py):

- reading goes on past a slice end ("overflow") only to complete the packets open there;
  no packet starts in the overflow and nothing there is counted;
- the next slice sees the tails of those packets at its start as packets of their own
  ("head" packets: first event in the bytes that overflow also read): they are handed back
  with their keys instead of being counted, and the parent drops those whose key the
  previous slice completed in its overflow, as soon as both slices are in.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import queue
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import RuletraceError
from ..explain.explain import Explainer
from ..inputs import compression
from ..model import Origin, Ruleset
from ..sources.stats import ReadStats

if TYPE_CHECKING:
    from ..analyze.summary import Summary

# read past a range end to complete the packets open there (~5,600 lines): a packet's lines lie
# within a few hundred lines of each other (one softirq pass prints them), even with many CPUs
OVERFLOW_BYTES = 2 << 20
GUIDE = 2  # a slice is 1/(GUIDE x processes) of what is left: the last ones are small
SLICE_MIN = 8 << 20
MIN_BYTES = 32 << 20  # smaller files are read in one process: forking costs more than it saves

_JOB: dict[str, Any] = {}  # set in the parent before fork; workers read it
_TAGS: dict[bytes, tuple[Any, ...]] = {}  # tag -> what it tells the grouping, kept from slice to slice


@dataclass
class _Result:
    """What one range gave: paths with their packet counts; no ruleset was needed for it."""

    paths: Counter[Any] = field(default_factory=Counter)  # (family, steps) -> packets
    heads: list[tuple[Any, tuple[Any, ...]]] = field(default_factory=list)  # (key, (family, steps))
    spilled: set[Any] = field(default_factory=set)
    skipped: int = 0
    events: int = 0


class Span(io.RawIOBase):
    """Raw bytes [pos, end) of an open file, reported to ``report`` as they are read.

    A raw stream (not a line generator) so that the reader iterates lines at C speed through
    an io.BufferedReader.
    """

    def __init__(self, f: BinaryIO, pos: int, end: int, report: Any = None) -> None:
        super().__init__()
        self.f = f
        self.pos = pos
        self.end = end
        self.report = report

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
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


def stop(procs: Collection[Any]) -> None:
    """Ends the workers still running (the fast paths' ``finally``): SIGTERM, two seconds, then
    SIGKILL — a SIGTERM handler a worker inherited (an in-process caller's) can keep it alive."""
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(2)
            if p.is_alive():
                p.kill()
                p.join()


def _line_start(f: BinaryIO, offset: int) -> int:
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
    from .kernel_log_paths import PathReader

    _index, start, end = args
    path: str = _JOB["path"]
    res = _Result()
    paths = res.paths
    spilled = res.spilled
    heads = res.heads
    range_lines = 1 << 62
    head_lines = 0  # lines in the bytes the previous slice's overflow also read (set below)

    def emit(family: Any, steps: list[Any], key: Any, first: int, last: int) -> None:
        path_key = (family, tuple(steps))
        if last > range_lines:
            spilled.add(key)
        if first <= head_lines:
            heads.append((key, path_key))
        else:
            paths[path_key] += 1

    reader = PathReader(path, emit, tags=_TAGS)
    st = ReadStats()
    with open(path, "rb", buffering=0) as f:
        lo = _line_start(f, start)
        hi = max(lo, _line_start(f, end))
        # first the lines the previous slice's overflow also read: packets starting there are heads
        mid = min(hi, _line_start(f, lo + OVERFLOW_BYTES)) if lo > 0 else lo
        head_lines = 1 << 62
        reader.feed(io.BufferedReader(Span(f, lo, mid, progress), 1 << 20), st)
        head_lines = reader.lines
        reader.feed(io.BufferedReader(Span(f, mid, hi, progress), 1 << 20), st)
        range_lines = reader.lines
        reader.feed(io.BufferedReader(Span(f, hi, hi + OVERFLOW_BYTES), 1 << 20), ReadStats(),
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
    if compression(head) is not None or head[:1] == b"{":
        return False
    from ..sources import detect

    try:
        return (fmt or detect.detect(head, path)) == "kernel-log"
    except RuletraceError:
        return False  # the sequential path reports it


def _slices(size: int, workers: int) -> list[int]:
    """Cut points of the slices the processes claim in turn, each a 1/(GUIDE x workers) share of
    what is left (none below SLICE_MIN): big slices first, small ones last, so that all
    processes run out of work at about the same time however the machine treats them."""
    cuts = [0]
    while cuts[-1] < size:
        left = size - cuts[-1]
        cuts.append(cuts[-1] + max(SLICE_MIN, left // (GUIDE * workers), 1) if left > SLICE_MIN else size)
    return cuts


def _serve(next_slice: Any, cuts: list[int], out: Any, done_bytes: Any) -> None:
    """A worker process: claim slices until none is left, send each result (or the error);
    ``done_bytes`` counts the bytes read, for the parent's progress bar."""

    def report(n: int) -> None:
        with done_bytes.get_lock():
            done_bytes.value += n

    try:
        while (i := _claim(next_slice)) < len(cuts) - 1:
            out.put((i, _work((i, cuts[i], cuts[i + 1]), report)))
    except BaseException as e:
        out.put((-1, f"{type(e).__name__}: {e}"))
    finally:
        out.put(None)


def _claim(next_slice: Any) -> int:
    with next_slice.get_lock():
        i: int = next_slice.value
        next_slice.value = i + 1
    return i


def summarize(path: str, load_rulesets: Callable[[], Any], pick: Callable[[Any, str | None], Ruleset | None],
              fates: Collection[str] = frozenset(), workers: int | None = None,
              progress: Any = None) -> tuple[Summary, int, int, int]:
    """Summary over ``path`` computed by ``workers`` processes; returns (summary, skipped, events, misfits).

    The file is cut into slices that the processes claim in turn. The workers are forked first
    and only read and group; the parent meanwhile parses the ruleset(s) (``load_rulesets()``),
    then claims slices too, and between slices explains every distinct path of the results
    that came in (once per path) and counts its packets.
    """
    from ..analyze.summary import Summary

    workers = max(2, workers or min(os.cpu_count() or 2, 8))
    size = os.path.getsize(path)
    cuts = _slices(size, workers)
    _JOB.update(path=path)
    total = Summary()
    entry_of = Summary.entry
    explainers: dict[str | None, Explainer] = {}
    results: dict[int, _Result] = {}
    rulesets: Any = None

    def count(paths: Counter[Any]) -> None:
        for (fam, steps), n in paths.items():
            ex = explainers.get(fam)
            if ex is None:
                ex = explainers[fam] = Explainer(pick(rulesets, fam), summary_only=True)
            entry = ex.memo_path(steps, entry_of, n, fam)
            if not fates or entry[0] in fates:
                total.count(entry, n)

    def take(item: tuple[int, Any]) -> None:
        """Count a slice's result: its paths now, its head packets once the slice before is in."""
        i, r = item
        if i < 0:
            raise RuletraceError(f"reading in a worker process failed: {r}", origin=Origin(path))
        results[i] = r
        count(r.paths)
        for j in (i, i + 1):  # head packets, once the slice before is known too
            if 0 < j < len(cuts) - 1 and j - 1 in results and j in results:
                drop = results[j - 1].spilled
                count(Counter(p for key, p in results[j].heads if key not in drop))

    ctx = multiprocessing.get_context("fork")
    next_slice = ctx.Value("l", 0)
    done_bytes = ctx.Value("q", 0)  # bytes the workers read so far
    shown = 0  # of those, how many the progress bar has

    def show(n: int = 0) -> None:
        """Progress: ``n`` bytes this process read, plus what the workers read since last time."""
        nonlocal shown
        w = done_bytes.value
        progress(n + w - shown)
        shown = w

    mine = show if progress is not None else None
    out = ctx.Queue()  # a feeder thread sends: a worker never waits for the parent to read
    procs = [ctx.Process(target=_serve, args=(next_slice, cuts, out, done_bytes),
                         daemon=True) for _ in range(workers - 1)]
    try:
        for p in procs:
            p.start()
        rulesets = load_rulesets()
        running = len(procs)
        while (i := _claim(next_slice)) < len(cuts) - 1:
            while True:  # explain what came in while this process read
                try:
                    item = out.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    running -= 1
                else:
                    take(item)
            try:
                r = _work((i, cuts[i], cuts[i + 1]), mine)
            except OSError as e:
                raise RuletraceError(f"cannot read: {e.strerror or e}", origin=Origin(path)) from None
            take((i, r))
        while running:
            try:
                item = out.get(timeout=0.2)
            except queue.Empty:
                if mine is not None:
                    mine()
                continue
            if item is None:
                running -= 1
            else:
                take(item)
        for p in procs:
            p.join()
        if mine is not None:
            mine()
    finally:
        _JOB.clear()
        stop(procs)
    ordered = [results[i] for i in range(len(cuts) - 1)]
    return (total, sum(r.skipped for r in ordered), sum(r.events for r in ordered),
            sum(x.misfit_packets for x in explainers.values()))
