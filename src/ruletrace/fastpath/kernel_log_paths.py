"""Kernel-log TRACE lines straight to packet paths: reading and grouping fused, for summaries.

``ruletrace explain --summary`` over a huge kernel log needs of each packet only its family and
its steps ``(table, chain, kind, num)``: no time stamps, no fields, no event objects. This module
reads like ``kernel_log.read_events`` and groups like ``correlate.group.group_packets`` (the same
idents, restart rule and window) in one loop, so that a clean line costs two ``partition``s and
a few dict lookups. Lines that loop does not take (journal JSON, glued records, damaged pastes,
LOG lines) go through ``kernel_log``'s own slow path, event by event.
tests/sources/test_kernel_log_paths.py checks that the packets equal those of
``read_events`` + ``group_packets`` on every kernel-log fixture.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, BinaryIO

from ..correlate.group import (
    DEFAULT_WINDOW,
    HOOK_RANK,
    TABLE_INDEX,
    expired,
    loops_back,
    resolve_key,
    starts_new,
)
from ..fields import PartialIdent
from ..sources import kernel_log, kernel_log_records
from ..sources.stats import ReadStats

__all__ = ["PathReader", "read_paths"]

# open packet state, a list for speed: steps, builtin hook the packet is in, its table index,
# last rule number there, event counter when last seen, the hook's rank, family, grouping key,
# first and last line
_STEPS, _HOOK, _TI, _LAST, _SEEN, _RANK, _FAMILY, _KEY, _FIRST, _END = range(10)

Info = tuple[Any, ...]  # (table, chain, kind, num), as TraceEvent holds them
Emit = Callable[[Any, list[Any], Any, int, int], None]


def _entry(info: Info) -> tuple[Any, ...]:
    """What a tag tells the grouping: (info, builtin hook or None, table index, num, hook rank)."""
    table, chain, _, num = info
    tables = TABLE_INDEX.get(chain)
    ti = tables.get(table) if tables is not None else None
    if ti is None:  # a user chain (or a table the hook does not have): no position
        return info, None, 0, 0, 0
    return info, chain, ti, num or 0, HOOK_RANK[chain]


class PathReader:
    """Reads streams of one log in order (``feed``) and emits each packet once it completes.

    ``emit(family, steps, key, first_line, last_line)``: ``steps`` is the packet's list of
    infos, ``key`` its grouping key. Packets are emitted as they complete, not in order; line
    numbers and the packet state run on from one ``feed`` to the next, ``finish`` ends the rest.
    """

    def __init__(self, name: str, emit: Emit, window: int = DEFAULT_WINDOW,
                 tags: dict[bytes, tuple[Any, ...]] | None = None) -> None:
        self.name = name
        self.emit = emit
        self.window = window
        self.lines = 0
        self.events = 0  # the window counts events, as group_packets does
        self.open: OrderedDict[Any, list[Any]] = OrderedDict()
        # what each tag tells the grouping; may be shared by the readers of one process
        self._entries: dict[bytes, tuple[Any, ...]] = {} if tags is None else tags
        self._seen: dict[bytes, tuple[str, bytes]] = {}  # field text -> (family, ident)
        self._partials: dict[PartialIdent, None] = {}  # open keys that are partial idents

    def finish(self) -> None:
        """Emit the packets still open."""
        for op in self.open.values():
            self.emit(op[_FAMILY], op[_STEPS], op[_KEY], op[_FIRST], op[_END])
        self.open.clear()

    def feed(self, stream: BinaryIO, stats: ReadStats, admit: Callable[[int], bool] | None = None) -> None:
        """Read ``stream``'s lines. ``admit(line)`` False keeps a packet from starting at that
        line (its events are dropped, as ``group_packets`` does); ``stats`` gets the skipped and
        LOG lines and the events read (not lines or bytes)."""
        # the hot loop's names, bound once; what it inlines is kernel_log.read_events + correlate.group's
        # group_packets (tests/sources/test_kernel_log_paths.py::test_same_packets_as_read_events_and_group_packets)
        st = stats
        rd = kernel_log_records.LineReader(self.name, st)
        tag_of = rd.tag
        ident_of = kernel_log.ident_of
        identity_key = kernel_log.identity_key
        partials = self._partials
        mark = kernel_log.TRACE_MARK
        cache_max = kernel_log_records.CACHE_MAX
        seen_max = kernel_log_records.SEEN_MAX
        entries = self._entries
        seen = self._seen
        open_ = self.open
        emit = self.emit
        window = self.window
        counter = self.events
        start_events = counter
        get_open = open_.get
        to_end = open_.move_to_end

        def done(op: list[Any]) -> None:
            emit(op[_FAMILY], op[_STEPS], op[_KEY], op[_FIRST], op[_END])

        def expire() -> None:
            for oldest in expired(open_, counter - window):
                done(oldest)

        def add(ent: tuple[Any, ...], key: Any, family: Any, lineno: int, in_lo: bool = False) -> None:
            """One event, the general way: it may end the open packet of its key and start one."""
            info, hook, ti, num, rank = ent
            op = open_.get(key)
            if op is None and (partials or type(key) is PartialIdent):
                key = resolve_key(open_, partials, key)
                op = open_.get(key)
                if op is not None:
                    op[_KEY] = key
            if op is not None:
                if hook is not None and starts_new(op, hook, ti, num) and not (
                        loops_back(op[_HOOK], hook, "lo" if in_lo else None)):
                    del open_[key]
                    done(op)
                    op = None
                else:
                    open_.move_to_end(key)
            if op is None:
                if admit is not None and not admit(lineno):
                    return
                op = open_[key] = [[], None, -1, 0, 0, 0, family, key, lineno, lineno]
                if type(key) is PartialIdent:
                    partials[key] = None
            op[_STEPS].append(info)
            op[_SEEN] = counter
            op[_END] = lineno
            if hook is not None:
                if hook != op[_HOOK] or ti != op[_TI]:
                    op[_HOOK], op[_TI], op[_LAST], op[_RANK] = hook, ti, 0, rank
                if num > op[_LAST]:
                    op[_LAST] = num

        def slow(line: bytes, lineno: int) -> None:
            """A line for kernel_log's slow path (journal JSON, glued records, damaged pastes)."""
            nonlocal counter
            for ev in rd.slow_line(line, lineno):
                counter += 1
                add(_entry((ev.table, ev.chain, ev.kind, ev.num)), ev.ident, ev.family, lineno,
                    ev.chain == "PREROUTING" and ev.fields.get("IN") == "lo")
                if not counter & 1023:
                    expire()

        prev_fs = b""
        family: Any = None
        key: Any = None
        lineno = self.lines
        try:
            for lineno, line in enumerate(stream, self.lines + 1):
                head, sep, rest = line.partition(mark)
                if not sep:  # as in read_events: LOG lines are counted, journal JSON is taken apart
                    if b"IN=" in line:
                        if line[:1] == b"{":
                            slow(line, lineno)
                        else:
                            rd.log_line(line, lineno)
                    elif line[:1] == b"{" and b'"MESSAGE":[' in line:
                        slow(line, lineno)
                    continue
                tag, _, fs = rest.partition(b" ")
                ent = entries.get(tag)
                if ent is None:
                    info, cut = tag_of(tag)
                    if info is None:
                        if b"\t" in rest:  # a tab after the tag: the slow path splits on any blank
                            slow(line, lineno)
                        else:
                            st.skip(lineno)
                        continue
                    if cut != len(tag):  # "policy:2IN=eth0": the paste lost a space
                        slow(line, lineno)
                        continue
                    if len(entries) > cache_max:
                        entries.clear()
                    ent = entries[tag] = _entry(info)
                if fs != prev_fs:
                    got = seen.get(fs)
                    if got is None:
                        # the identity rule: a packet whose mark was set or cleared (nf_log
                        # prints MARK= last, the ident leaves it out) is found by its key
                        bare = identity_key(fs)
                        got = seen.get(bare)
                        if got is None:
                            text = fs.rstrip()
                            got = ident_of(text) if text.startswith(b"IN=") and head[:1] != b"{" else None
                            if got is None:  # damaged, truncated, glued, journal JSON
                                slow(line, lineno)
                                continue
                            if len(seen) >= seen_max:
                                seen.clear()
                            seen[bare] = got
                        seen[fs] = got
                    prev_fs = fs
                    family, key = got
                counter += 1
                # the usual case inline: a step of an open packet that does not restart it
                # (correlate.group.starts_new, the grouping position rule, inlined)
                op = get_open(key)
                hook = ent[1]
                if op is None or (hook is not None and op[_HOOK] is not None and (
                    ent[4] <= op[_RANK] if hook != op[_HOOK]
                    else ent[2] < op[_TI] if ent[2] != op[_TI] else 0 < op[_LAST] >= ent[3]
                )):
                    add(ent, key, family, lineno, fs.startswith(b"IN=lo "))
                else:
                    to_end(key)
                    op[_STEPS].append(ent[0])
                    op[_SEEN] = counter
                    op[_END] = lineno
                    if hook is not None:
                        if hook != op[_HOOK] or ent[2] != op[_TI]:
                            op[_HOOK], op[_TI], op[_LAST], op[_RANK] = hook, ent[2], 0, ent[4]
                        if ent[3] > op[_LAST]:
                            op[_LAST] = ent[3]
                if not counter & 1023:
                    expire()
        finally:
            self.lines = lineno
            self.events = counter
            st.events += counter - start_events


def read_paths(stream: BinaryIO, *, name: str, emit: Emit, stats: ReadStats | None = None,
               window: int = DEFAULT_WINDOW) -> None:
    """Read all of ``stream`` and ``emit`` every packet (see PathReader); ``stats`` gets lines too."""
    st = stats if stats is not None else ReadStats()
    reader = PathReader(name, emit, window)
    try:
        reader.feed(stream, st)
        reader.finish()
    finally:
        st.lines = reader.lines
        st.cut_warning()
