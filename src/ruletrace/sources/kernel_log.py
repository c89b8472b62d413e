"""Kernel-log TRACE lines (``TRACE: table:chain:type:num IN=…``, nf_log_syslog) -> TraceEvents.

Reads the lines the kernel's nf_log writes for ``-j TRACE`` wherever they ended up:
``/var/log/messages`` and ``kern.log`` (``Jan  1 21:23:16 host kernel: [uptime] TRACE: …``),
RFC 3339 rsyslog lines, ``journalctl -k`` (short, short-precise, short-iso, short-monotonic),
``journalctl -k -o json`` (one object per line; MESSAGE a string or a list of byte values),
``dmesg`` with and without ``[uptime]``, ``dmesg -T``, ``/dev/kmsg`` records and bare lines.
Damaged pastes are read too: a lost space before ``IN=`` (``policy:2IN=tap0``) or between fields
(``LEN=84TOS=0x00``, see ``logtext.parse_fields``), and many records glued into one line.

``TraceEvent.ts`` is, by what the line carries, in this order of preference:
the syslog stamp (it has no year: the current year is assumed, or the previous one when that
would put the stamp more than a day in the future; local time zone), an RFC 3339 / ISO stamp,
the journal's ``__REALTIME_TIMESTAMP``, a ``dmesg -T`` stamp (local time zone) — all seconds since
the epoch — or else the kernel's uptime in seconds (``[12345.678901]``, ``/dev/kmsg``); None for
bare lines. Lines of the LOG target (fields but no TRACE tag) are counted in ``ReadStats``.

``TraceEvent.ident`` is one byte string made of the fields that stay the same along a
packet's path (see ``ident_of``), computed from the text ``identity_key`` gives. Damaged
pastes are tidied first (``logtext.tidy_text``: tabs, runs of spaces, glued fields, a trailing
``...``); a record cut short keeps its step with the fields before the cut and a
``fields.PartialIdent`` (the part of the identity that survived), matched to its packet by
``correlate.group``. Idents are comparable within this source only. Lines that look like TRACE
records but cannot be read (bad tag, cut before the packet's ``ID=``/``FLOWLBL=``) are counted as skipped, with
their line numbers; other lines are ordinary log content.

Speed: lines are bytes; the hot path is a few ``partition``s per line (on this path the number
of calls, not of bytes, is the cost), the tag is parsed once per distinct tag, the ident once
per distinct field text (consecutive steps of a packet repeat it) and the bytes are shared,
fields are parsed only when ``event.fields`` is first read, and an event's Origin is built
only when asked for. Events are ``KernelLogEvent``, a TraceEvent subclass for that last point.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from ..model import TraceEvent
from .kernel_log_ident import complete, ident_of, identity_key, partial_ident
from .kernel_log_records import (
    ISO_RE,
    JSON_MESSAGE_BAD,
    MARK_LEN,
    SEEN_MAX,
    SOURCE,
    SYSLOG_RE,
    TRACE_MARK,
    UPTIME_RE,
    KernelLogEvent,
    LineReader,
    loads_json,
    make_event,
)
from .records import MAX_TS as _MAX_TS
from .stats import ReadStats
from .tag import parse as _parse_tag

__all__ = ["KernelLogEvent", "ReadStats", "complete", "ident_of", "identity_key", "looks_like",
           "make_event", "partial_ident", "read_events", "SOURCE", "TRACE_MARK"]

_SNIFF_LINES = 2000

_PROGRESS_EVERY = 0x3FFF  # lines between updates of stats.lines / stats.bytes_read


def read_events(
    stream: BinaryIO, *, name: str, stats: ReadStats | None = None, line0: int = 0
) -> Iterator[TraceEvent]:
    """Yield one TraceEvent per kernel-log TRACE record in ``stream`` (binary, line by line).

    ``line0``: the lines of the file before the stream's first (a slice of it: fastpath/slice_packets.py).

    (``kernel_log_paths`` reads the same lines straight into packet paths, for summaries.)
    """
    st = stats if stats is not None else ReadStats()
    rd = LineReader(name, st)
    tags = rd.tags
    stamps = rd.stamps
    tag_of = rd.tag
    mark = TRACE_MARK
    lineno = line0
    nbytes = 0
    events = 0
    # the field text of the previous clean record and what it gave; then the texts and the
    # identity keys (identity_key) of recent records: the steps of the few packets in flight
    # repeat them, so the ident is computed once per key and the bytes are shared between events
    seen: dict[bytes, tuple[bytes, str, object]] = {}
    keyed: dict[bytes, tuple[str, object]] = {}
    prev_fs = b""
    prev_family: str | None = None
    prev_ident: object = None
    try:
        for lineno, line in enumerate(stream, line0 + 1):
            nbytes += len(line)
            if not lineno & _PROGRESS_EVERY:
                st.lines = lineno
                st.bytes_read = nbytes
            head, sep, rest = line.partition(mark)
            if not sep:
                if b"IN=" in line:
                    if line[:1] == b"{":
                        for ev in rd.slow_line(line, lineno):
                            events += 1
                            yield ev
                    else:
                        rd.log_line(line, lineno)
                elif line[:1] == b"{" and b'"MESSAGE":[' in line:
                    for ev in rd.slow_line(line, lineno):
                        events += 1
                        yield ev
                continue
            # -- hot path: one clean record on this line; anything else goes to rd.slow_line --
            tag, sep, fs = rest.partition(b" ")
            got = tags.get(tag)
            if got is None:
                got = tag_of(tag)
            info, cut = got
            if info is None:
                if b"\t" in rest:  # a tab after the tag: the slow path splits on any blank
                    for ev in rd.slow_line(line, lineno):
                        events += 1
                        yield ev
                else:
                    st.skip(lineno)
                continue
            if cut != len(tag):  # "policy:2IN=eth0": the paste lost a space
                for ev in rd.slow_line(line, lineno):
                    events += 1
                    yield ev
                continue
            fs = fs.rstrip()
            if fs == prev_fs:
                fs = prev_fs  # share the bytes
            else:
                hit = seen.get(fs)
                if hit is not None:  # a packet in flight seen before with this very text
                    fs, prev_family, prev_ident = hit
                else:
                    key = identity_key(fs)  # the identity rule
                    idg = keyed.get(key)
                    if idg is None:
                        idg = ident_of(fs) if fs.startswith(b"IN=") and head[:1] != b"{" else None
                        if idg is None:  # damaged, truncated, glued, journal JSON
                            for ev in rd.slow_line(line, lineno):
                                events += 1
                                yield ev
                            continue
                        if len(keyed) >= SEEN_MAX:
                            keyed.clear()
                        keyed[key] = idg
                    prev_family, prev_ident = idg
                    if len(seen) >= SEEN_MAX:
                        seen.clear()
                    seen[fs] = (fs, prev_family, prev_ident)
                prev_fs = fs
            if not head:
                ts = None
            else:
                c = head[0]
                if 0x41 <= c <= 0x5A:  # "Jan  1 21:23:16 …": syslog / journalctl short
                    ts = stamps.get(head[:16])
                    if ts is None:
                        ts = rd.syslog_head(head)
                elif c == 0x5B:  # "[": dmesg
                    try:
                        ts = float(head[1 : head.find(b"]")])
                        if not 0.0 <= ts < _MAX_TS:  # "inf", "1e999", "-5": not an uptime
                            ts = rd.head_ts(head)
                    except ValueError:
                        ts = rd.head_ts(head)
                elif 0x30 <= c <= 0x39 and head[4:5] == b"-":  # "2026-01-01T21:23:16.5+00:00 …"
                    ts = rd.iso_head(head)
                else:
                    ts = rd.head_ts(head)
            events += 1
            yield make_event(info, fs, ts, (prev_family, prev_ident), None, name, lineno)
    finally:
        st.lines = lineno
        st.bytes_read = nbytes
        st.events += events
        st.cut_warning()


def looks_like(head: bytes) -> bool:
    """True when the head holds a kernel-log TRACE record, or is mostly syslog / kernel-log lines."""
    lines = head.splitlines()[:_SNIFF_LINES]
    kernelish = 0
    for line in lines:
        t = line.find(TRACE_MARK)
        if t >= 0:
            start = t + MARK_LEN
            sp = line.find(b" ", start)
            tag = line[start:sp] if sp >= 0 else line[start:]
            info, _ = _parse_tag(tag)
            if info is not None and b"IN=" in line[start:]:
                return True
        elif line.startswith(b"{") and b'"MESSAGE":[' in line:
            try:
                obj = loads_json(line)
                msg = obj.get("MESSAGE") or b""
                msg = bytes(msg) if isinstance(msg, list) else b""  # bytes(an int) allocates that many
            except JSON_MESSAGE_BAD:
                continue
            if TRACE_MARK in msg and b"IN=" in msg:
                return True
        if (b" kernel: " in line or b'"_TRANSPORT":"kernel"' in line or UPTIME_RE.match(line)
                or SYSLOG_RE.match(line) or ISO_RE.match(line)):
            kernelish += 1
    # a syslog file or kernel log whose TRACE lines start further down
    return bool(lines) and kernelish * 2 > len(lines)
