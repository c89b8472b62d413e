"""Which trace format a file holds, from its content; and reading several files merged in time order."""

from __future__ import annotations

import heapq
import importlib
import io
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from ..errors import RuletraceError
from ..inputs import Prefixed
from ..model import Origin, TraceEvent
from ..pcap import looks_like_capture

FORMATS = ("kernel-log", "nflog-pcap", "ulogd-json", "wireshark-csv", "xtables-monitor", "nft-monitor")
# format name -> module with read_events(stream, *, name, stats=None)
MODULES = {
    "kernel-log": "kernel_log",
    "nflog-pcap": "nflog_pcap",
    "ulogd-json": "ulogd_json",
    "wireshark-csv": "wireshark_csv",
    "xtables-monitor": "xtables_monitor",
    "nft-monitor": "nft_monitor",
}
ALIASES = {"journal-json": "kernel-log", "ulogd-logemu": "kernel-log", "pcap": "nflog-pcap",
           "pcapng": "nflog-pcap", "csv": "wireshark-csv", "nft": "nft-monitor"}

_NFT_TRACE = re.compile(rb"^trace id [0-9a-f]{8} \S+ \S+ \S+ (?:packet: |rule |policy |verdict )", re.M)
# "[^\s:]+" (as xtables_monitor reads table and chain), not "\S+:\S+": that backtracked cubically
_XT_TRACE = re.compile(
    rb"^[ \t]*(?:PACKET: \d+ [0-9a-f]+ |TRACE: \d+ [0-9a-f]+ [^\s:]+:[^\s:]+:(?:rule|policy|return):)", re.M)
_ULOGD = re.compile(rb'^\s*\{.*"oob\.(?:prefix|family|time\.sec)"', re.M)
_CSV_HEADER = re.compile(rb'^\xef?\xbb?\xbf?"?(?:No\.|frame\.number)"?,', re.I)


def detect(head: bytes, name: str) -> str:
    """Name the trace format of an input from its first bytes (not from its file name)."""
    if looks_like_capture(head):
        return "nflog-pcap"
    if _CSV_HEADER.match(head) or (b"nflog.prefix" in head[:2000] and b"," in head[:200]):
        return "wireshark-csv"
    if _ULOGD.search(head):
        return "ulogd-json"
    if _NFT_TRACE.search(head):
        return "nft-monitor"
    if _XT_TRACE.search(head):
        return "xtables-monitor"
    from . import kernel_log

    if kernel_log.looks_like(head):
        return "kernel-log"  # also journalctl -o json and ulogd's LOGEMU text
    if not head.strip():
        raise RuletraceError("empty trace input: no TRACE events", origin=Origin(name))
    from ..inputs import check_not_ruleset, check_text

    check_text(head, name)  # "binary file, not a text log"
    check_not_ruleset(head, name)  # "looks like an iptables-save ruleset, not a trace log"
    raise RuletraceError(
        "not a trace format ruletrace knows (kernel log, NFLOG pcap, ulogd JSON, Wireshark CSV, "
        "xtables-monitor --trace, nft monitor trace); force one with --format",
        origin=Origin(name),
    )


def reader(fmt: str) -> Callable[..., Iterator[TraceEvent]]:
    """The ``read_events`` function of a format (aliases accepted)."""
    fmt = ALIASES.get(fmt, fmt)
    mod = MODULES.get(fmt)
    if mod is None:
        raise RuletraceError(f"unknown trace format {fmt!r}; known: {', '.join(FORMATS)}")
    read: Callable[..., Iterator[TraceEvent]] = importlib.import_module(f"{__package__}.{mod}").read_events
    return read


def _open(path: str) -> tuple[BinaryIO, str]:
    from ..inputs import open_input

    return open_input(path)


def _peek(stream: Any, n: int = 8192) -> tuple[bytes, Any]:
    """Look at the first bytes without losing them, also on pipes."""
    if hasattr(stream, "peek"):
        head = stream.peek(n)[:n]
        if len(head) >= min(n, 64) or head == b"":
            return head, stream
    head = stream.read(n)
    return head, io.BufferedReader(Prefixed(head, stream))  # a full binary stream (TextIOWrapper)


def read_any(
    paths: list[str],
    fmt: str | None = None,
    *,
    on_format: Callable[[str, str], None] | None = None,
    stats: Callable[[str, str], Any] | None = None,
    **options: Any,
) -> Iterator[TraceEvent]:
    """Events of all ``paths``, format detected per file (or ``fmt``), merged in time order.

    ``on_format(path, format)`` is told each file's format as it is chosen, so the CLI can say it;
    ``stats(path, format)`` may return a stats object for that file's reader. Options a reader
    does not take (``ifmap`` for text formats) are not passed to it. Events without a timestamp
    keep their file order; ties keep the order of ``paths``.
    """
    progress = options.pop("progress", None)
    streams = []
    for path in paths:
        stream: Any  # the opened file, then perhaps the _Counting wrapper around it (same read API)
        stream, name = _open(path)
        try:
            head, stream = _peek(stream)
            chosen = ALIASES.get(fmt, fmt) if fmt else detect(head, name)
        except BaseException:
            stream.close()
            raise
        if chosen == "nflog-pcap":
            from ..inputs import binary_input

            binary_input(stream)  # records hold no lines: no line-length limit
        if progress is not None:
            stream = _Counting(stream, progress)
        if on_format is not None:
            on_format(name, chosen)
        read = reader(chosen)
        kwargs = {k: v for k, v in options.items() if k in read.__code__.co_varnames}
        st = stats(name, chosen) if stats is not None else None
        streams.append(_closing(read(stream, name=name, stats=st, **kwargs), stream, name, st))
    if len(streams) == 1:
        yield from streams[0]
        return
    yield from _merge(streams)


class _Counting:
    """A binary stream that reports the bytes read through it (for progress bars)."""

    def __init__(self, raw: Any, report: Callable[[int], None]) -> None:
        self._raw, self._report = raw, report

    def read(self, n: int = -1) -> bytes:
        b: bytes = self._raw.read(n)
        self._report(len(b))
        return b

    def readline(self, n: int = -1) -> bytes:
        b: bytes = self._raw.readline(n)
        self._report(len(b))
        return b

    def __iter__(self) -> Iterator[bytes]:
        report = self._report
        for line in self._raw:
            report(len(line))
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _closing(events: Iterator[TraceEvent], stream: Any, name: str = "", stats: Any = None) -> Iterator[TraceEvent]:
    back = ahead = 0  # steps between consecutive stamped events that go back / forward in time
    last: float | None = None
    try:
        for ev in events:
            ts = ev.ts
            if ts is not None:
                if last is not None:
                    if ts < last:
                        back += 1
                    elif ts > last:
                        ahead += 1
                last = ts
            yield ev
        if stats is not None and hasattr(stats, "warnings"):
            from ..inputs import limit_warnings

            stats.warnings.extend(limit_warnings(stream, name))
            if newest_first(back, ahead):
                stats.warnings.append(
                    f"{name}: {NEWEST_FIRST} ({back} of {back + ahead} steps between time "
                    "stamps go back): the input looks newest-first (tac, journalctl -r), and its packets are "
                    "grouped in the file's order, so they are wrong; give it oldest-first (tac it back, "
                    "journalctl without -r)")
    finally:
        stream.close()


NEWEST_FIRST = "its lines run backwards in time"  # the warning's words (the pipeline looks for them)


def newest_first(back: int, ahead: int) -> bool:
    """Do the time stamps of a file run backwards throughout (a paste of ``tac`` or ``journalctl -r``)?
    Most steps between stamps go back; a clock step or a file of two logs concatenated goes back once."""
    return back >= 2 and back > 3 * ahead


def _merge(streams: list[Iterator[TraceEvent]]) -> Iterator[TraceEvent]:
    """heapq.merge on ts; an event without ts sorts with the last stamped event of its file."""

    def keyed(i: int, it: Iterator[TraceEvent]) -> Iterator[tuple[float, int, int, TraceEvent]]:
        last = float("-inf")
        for n, ev in enumerate(it):
            if ev.ts is not None:
                last = ev.ts
            yield last, i, n, ev

    for _ts, _i, _n, ev in heapq.merge(*(keyed(i, s) for i, s in enumerate(streams))):
        yield ev

