"""The registry of trace readers: format name -> module, and opening one input as events."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from ..errors import RuletraceError
from ..model import Origin, TraceEvent

# format name -> module under ruletrace.sources with read_events(stream, *, name, stats=None)
READERS: dict[str, str] = {
    "kernel-log": "kernel_log",
    "nflog-pcap": "nflog_pcap",
    "ulogd-json": "ulogd_json",
    "wireshark-csv": "wireshark_csv",
    "xtables-monitor": "xtables_monitor",
    "nft-monitor": "nft_monitor",
}
FORMATS = tuple(READERS)


class _Counting:
    """A read-only binary stream wrapper that reports bytes read (for progress bars)."""

    def __init__(self, raw: BinaryIO, report: Callable[[int], None]) -> None:
        self._raw = raw
        self._report = report

    def read(self, n: int = -1) -> bytes:
        b = self._raw.read(n)
        self._report(len(b))
        return b

    def readline(self, n: int = -1) -> bytes:
        b = self._raw.readline(n)
        self._report(len(b))
        return b

    def __iter__(self) -> Iterator[bytes]:
        report, raw = self._report, self._raw
        for line in raw:
            report(len(line))
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _module(fmt: str):
    name = READERS.get(fmt)
    if name is None:
        raise RuletraceError(f"unknown trace format {fmt!r}; known: {', '.join(FORMATS)}")
    try:
        return importlib.import_module(f"ruletrace.sources.{name}")
    except ImportError as e:
        raise RuletraceError(f"the {fmt} reader is not available: {e}") from e


def _new_stats(mod) -> Any:
    for where in (mod, importlib.import_module("ruletrace.sources.kernel_log")):
        cls = getattr(where, "ReadStats", None)
        if cls is not None:
            return cls()
    return None


def detect_format(head: bytes, name: str) -> str:
    """Name the trace format of an input from its first bytes."""
    try:
        from . import detect
    except ImportError:
        detect = None  # type: ignore[assignment]
    if detect is not None and hasattr(detect, "detect"):
        return detect.detect(head, name)
    from . import kernel_log

    if kernel_log.looks_like(head):
        return "kernel-log"
    raise RuletraceError("not a trace format ruletrace knows", origin=Origin(name))


def open_events(
    path: str,
    fmt: str | None = None,
    *,
    ifmap: dict[int, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[str, Iterator[TraceEvent], Any]:
    """Open ``path`` ("-" for stdin), detect (or take) its format; return (format, events, stats)."""
    from .open import open_input, sniff

    stream, name = open_input(path)
    head = sniff(stream)
    fmt = fmt or detect_format(head, name)
    mod = _module(fmt)
    stats = _new_stats(mod)
    src: BinaryIO = _Counting(stream, progress) if progress is not None else stream  # type: ignore[assignment]
    kwargs: dict[str, Any] = {"name": name, "stats": stats}
    if ifmap is not None and fmt == "nflog-pcap":
        kwargs["ifmap"] = ifmap
    return fmt, mod.read_events(src, **kwargs), stats
