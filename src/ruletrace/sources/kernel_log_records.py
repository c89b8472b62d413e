"""Kernel-log records -> events: the event type and its one constructor, time stamps, slow paths.

``kernel_log.read_events`` (and the ``--summary`` fast path) handle the common line in their own
loop and hand everything else to a ``LineReader`` here: journal JSON, several records glued into
one line, damaged or cut text, odd time-stamp headers. See ``kernel_log.py`` for the formats.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..fields import bounded_int, family_of
from ..logtext import parse_fields, tidy_text
from ..model import Origin, StepKind, TraceEvent
from . import tag as _tag
from .kernel_log_ident import WHOLE_LAST, ident_of, partial_ident
from .records import MAX_TS as _MAX_TS
from .records import sane_ts as _finite
from .stats import ReadStats

loads_json: Callable[[bytes | str], Any]
try:  # optional speed-up for journal JSON
    import orjson

    loads_json = orjson.loads
    _JSONError: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover - orjson is optional
    loads_json = json.loads
    _JSONError = (ValueError,)
_JSON_BAD: tuple[type[Exception], ...] = (*_JSONError, RecursionError)  # a line that is no journal JSON object
JSON_MESSAGE_BAD: tuple[type[Exception], ...] = (*_JSONError, TypeError, AttributeError, RecursionError)  # ... or has no MESSAGE

SOURCE = "kernel-log"
TRACE_MARK = _tag.TRACE_MARK  # ip_tables.c trace_packet(): prefix "TRACE: %s:%s:%s:%u "
MARK_LEN = len(TRACE_MARK)
_MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
# "Jan  1 21:23:16", "Jan 01 21:23:16.620815" (journalctl short-precise), "Apr 1811:50:23" (damaged)
SYSLOG_RE = re.compile(rb"([A-Z][a-z]{2}) {1,2}(\d{1,2}) ?(\d\d):(\d\d):(\d\d)(\.\d+)?")
ISO_RE = re.compile(rb"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?")
_DMESG_T_RE = re.compile(rb"\[([A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\]")
UPTIME_RE = re.compile(rb"\[ {0,20}([0-9]{1,12}\.[0-9]{1,9})\]")
# bounded repetitions: searched over untrusted lines, an unbounded "\d+," would be quadratic
_KMSG_RE = re.compile(rb"(?<![0-9])[0-9]{1,20},[0-9]{1,20},([0-9]{1,20}),[^;\n]{0,256};")

CACHE_MAX = 200_000  # distinct tags / stamps / names kept before a cache is cleared
SEEN_MAX = 4096  # recent field texts kept for ident reuse (packets in flight are few)

_ORIGIN = TraceEvent.__dict__["origin"]  # the base class's slot descriptor


class KernelLogEvent(TraceEvent):
    """A TraceEvent that builds its ``origin`` on first access (one object less per line)."""

    __slots__ = ("_path", "_line")
    _path: str
    _line: int

    @property
    def origin(self) -> Origin | None:
        try:
            got: Origin | None = _ORIGIN.__get__(self, KernelLogEvent)
            return got
        except AttributeError:
            o = Origin(self._path, self._line)
            _ORIGIN.__set__(self, o)
            return o

    @origin.setter
    def origin(self, value: Origin | None) -> None:
        _ORIGIN.__set__(self, value)


_parse_tag = _tag.parse


class _Clock:
    """Turns year-less syslog stamps into epoch seconds (current year, local time zone)."""

    def __init__(self) -> None:
        self.now = time.time()
        self.year = time.localtime(self.now).tm_year

    def syslog(self, m: re.Match[bytes], with_fraction: bool = True) -> float | None:
        mon = _MONTHS.get(m.group(1))
        if mon is None:
            return None
        day, hh, mm, ss = int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5))
        if not (1 <= day <= 31 and hh < 24 and mm < 60 and ss < 61):
            return None
        tm = (self.year, mon, day, hh, mm, ss, 0, 0, -1)
        ts = time.mktime(tm)
        if ts > self.now + 86400:  # December's log read in January
            ts = time.mktime((self.year - 1,) + tm[1:])
        frac = m.group(6)
        return ts + float(frac) if frac and with_fraction else ts


def _iso_ts(tok: bytes) -> float | None:
    try:
        return datetime.fromisoformat(tok.decode()).timestamp()
    except (ValueError, UnicodeDecodeError):
        return None


def _dmesg_t_ts(text: bytes) -> float | None:
    try:
        return time.mktime(time.strptime(text.decode(), "%a %b %d %H:%M:%S %Y"))
    except (ValueError, UnicodeDecodeError):
        return None


class LineReader:
    """State of one read: caches, clock, stats, and the slow paths the hot loop hands over."""

    def __init__(self, name: str, stats: ReadStats) -> None:
        self.name = name
        self.stats = stats
        self.clock = _Clock()
        self.tags: dict[bytes, tuple[tuple[str, str, StepKind, int] | None, int]] = {}
        self.stamps: dict[bytes, float | None] = {}
        self.prev_fs = b""  # slow path's last clean field text and its (family, ident)
        self.prev_got: tuple[str | None, object] = (None, None)

    # -- time stamps ---------------------------------------------------------------------------
    def syslog_head(self, head: bytes) -> float | None:
        """Stamp of a header starting with a syslog date; whole seconds cached by the first 16 bytes."""
        key = head[:16]
        m = SYSLOG_RE.match(head)
        if m is None:
            return self.head_ts(head)
        if m.group(6):  # journalctl short-precise: "Jan 05 11:04:26.620815"
            base = self.stamps.get(key[:15] + b" ")
            if base is None:
                base = self.clock.syslog(m, with_fraction=False)
                if base is None:
                    return self.head_ts(head)
                self.remember(key[:15] + b" ", base)
            return base + float(m.group(6))
        ts = self.clock.syslog(m)
        if ts is None:
            return self.head_ts(head)
        if m.end() <= 16:
            self.remember(key, ts)
        return ts

    def head_ts(self, head: bytes) -> float | None:
        """Time stamp of whatever header precedes ``TRACE:`` (slow path: odd prefixes)."""
        if not head.strip():
            return None
        c = head[0]
        if c == 0x5B:  # "[": dmesg "[ 123.456789] " or dmesg -T "[Thu Jan  5 11:04:26 2023] "
            j = head.find(b"]")
            if j > 0:
                try:
                    return _finite(float(head[1:j]))
                except ValueError:
                    key = head[1:j]
                    if key not in self.stamps:
                        self.remember(key, _dmesg_t_ts(key))
                    return self.stamps[key]
        if 0x30 <= c <= 0x39:
            if head[4:5] == b"-":  # RFC 3339 / ISO 8601
                m = ISO_RE.match(head)
                if m:
                    return self.iso_ts(m.group())
            m = _KMSG_RE.match(head)  # /dev/kmsg "6,1234,408619771,-;"
            if m:
                return int(m.group(1)) / 1e6
        m = SYSLOG_RE.search(head)
        if m:
            ts = self.clock.syslog(m)
            if ts is not None:
                return ts
        m = ISO_RE.search(head)
        if m:
            return self.iso_ts(m.group())
        m = _DMESG_T_RE.search(head)
        if m:
            return _dmesg_t_ts(m.group(1))
        m = UPTIME_RE.search(head)
        if m:
            return _finite(float(m.group(1)))
        m = _KMSG_RE.search(head)
        if m:
            return int(m.group(1)) / 1e6
        return None

    def iso_head(self, head: bytes) -> float | None:
        """Stamp of a header starting with an RFC 3339 / ISO 8601 date (rsyslog, short-iso)."""
        sp = head.find(b" ")
        ts = self.iso_ts(head[:sp] if sp > 0 else head)
        return ts if ts is not None else self.head_ts(head)

    def iso_ts(self, tok: bytes) -> float | None:
        """ISO stamp with the whole seconds cached and the fraction added."""
        if tok[19:20] == b".":
            tz = tok[20:].lstrip(b"0123456789")
            e = len(tok) - len(tz)
            key = tok[:19] + tz
            frac = float(tok[19:e])
        else:
            key, frac = tok, 0.0
        if key not in self.stamps:
            self.remember(key, _iso_ts(key))
        base = self.stamps[key]
        return None if base is None else base + frac

    def remember(self, key: bytes, ts: float | None) -> None:
        if len(self.stamps) > CACHE_MAX:
            self.stamps.clear()
        self.stamps[key] = ts

    # -- records -------------------------------------------------------------------------------
    def tag(self, tag: bytes) -> tuple[tuple[str, str, StepKind, int] | None, int]:
        got = self.tags.get(tag)
        if got is None:
            got = _parse_tag(tag)
            if got[1] == len(tag):  # damaged tags carry interface names: not worth caching
                if len(self.tags) > CACHE_MAX:
                    self.tags.clear()
                self.tags[tag] = got
        return got

    def record(self, rec: bytes, t: int, line: int, ts: float | None, has_ts: bool) -> KernelLogEvent | None:
        """One ``…TRACE: tag fields`` record whose mark is at ``rec[t]``; None when unusable."""
        start = t + MARK_LEN
        words = rec[start:].split(None, 1)  # tabs and runs of spaces separate like one space
        tag = words[0] if words else b""
        info, cut = self.tag(tag)
        if info is None:
            self.stats.skip(line)
            return None
        fs = rec[start:].lstrip()[cut:].strip()
        if not fs.startswith(b"IN="):
            i = fs.find(b"IN=")
            if i < 0:
                self.stats.skip(line)  # tag without fields: truncated
                return None
            fs = fs[i:]
        if not has_ts:
            ts = self.head_ts(rec[:t])
        return self.event(info, fs, ts, line)

    def event(
        self, info: tuple[str, str, StepKind, int], fs: bytes, ts: float | None, line: int
    ) -> KernelLogEvent | None:
        """Build the event for field text ``fs``; None (counted as skipped) when no identity survives.

        Damaged text is tidied first (tabs and runs of spaces, fields glued by a lost space, a
        trailing ``...``: ``logtext.tidy_text``). Text cut short keeps its step: its fields are the
        ones before the cut (the last value, maybe cut, is left out) and its ident the part of the
        identity they hold (``fields.PartialIdent``), which grouping matches to its packet.
        """
        if fs == self.prev_fs:  # consecutive steps of one packet: same text, same ident
            return make_event(info, self.prev_fs, ts, self.prev_got, None, self.name, line)
        got = ident_of(fs)
        if got is None:
            text, cut_marked = tidy_text(fs.decode("utf-8", "replace"))
            tidy = text.encode()
            got = ident_of(tidy) if not cut_marked else None
            if got is None:
                whole = tidy if cut_marked else tidy.rpartition(b" ")[0]  # the last value may be cut
                if not cut_marked and WHOLE_LAST.search(tidy):
                    whole = tidy
                fields = parse_fields(whole)
                part = partial_ident(tidy)
                if part is None:
                    self.stats.skip(line)
                    return None
                self.stats.cut_short(line)
                return make_event(info, fs, ts, (family_of(fields), part), fields, self.name, line)
            return make_event(info, fs, ts, got, parse_fields(tidy), self.name, line)
        self.prev_fs, self.prev_got = fs, got
        return make_event(info, fs, ts, got, None, self.name, line)

    def slow_line(self, line: bytes, lineno: int) -> list[KernelLogEvent]:
        """Lines the hot loop does not handle: journal JSON, several records glued into one line."""
        if line[:1] == b"{":
            got = self.journal(line, lineno)
            if got is None:
                return []
            line, ts = got
            t = line.find(TRACE_MARK)
            if t < 0:
                self.log_line(line, 0)
                return []
            if line.find(TRACE_MARK, t + MARK_LEN) < 0:  # one record: the usual case
                ev = self.record(line, t, lineno, ts, True)
                return [] if ev is None else [ev]
            return self.glued(line, lineno, ts, True)
        return self.glued(line, lineno, None, False)

    def glued(self, line: bytes, lineno: int, ts: float | None, has_ts: bool) -> list[KernelLogEvent]:
        """Split a line holding one or more records and read each."""
        marks = []
        t = line.find(TRACE_MARK)
        while t >= 0:
            marks.append(t)
            t = line.find(TRACE_MARK, t + MARK_LEN)
        out: list[KernelLogEvent] = []
        begin = 0
        for k, t in enumerate(marks):
            if k + 1 < len(marks):
                nxt = marks[k + 1]
                end = _header_start(line, t + MARK_LEN, nxt)
            else:
                end = len(line)
            rec = line[begin:end]
            ev = self.record(rec, t - begin, lineno, ts, has_ts)
            if ev is not None:
                out.append(ev)
            begin = end
        return out

    def journal(self, line: bytes, lineno: int) -> tuple[bytes, float | None] | None:
        """MESSAGE and __REALTIME_TIMESTAMP of one ``journalctl -o json`` line."""
        try:
            obj = loads_json(line)
        except _JSON_BAD:
            if TRACE_MARK in line:
                self.stats.skip(lineno)
            return None
        if not isinstance(obj, dict):
            return None
        msg = obj.get("MESSAGE")
        if isinstance(msg, list):  # journald stores non-UTF-8 / control-character messages as bytes
            try:
                msg = bytes(msg)
            except (TypeError, ValueError):
                return None
        elif isinstance(msg, str):
            msg = msg.encode()
        else:
            return None
        ts = None
        rt = obj.get("__REALTIME_TIMESTAMP")  # microseconds since the epoch, as a string
        if rt is not None:
            us = bounded_int(rt) if isinstance(rt, str) else None
            ts = us / 1e6 if us is not None and 0 <= us < _MAX_TS * 1e6 else None
        return msg, ts

    def log_line(self, line: bytes, lineno: int) -> None:
        """Count a LOG-target packet line (``prefix IN=… OUT=…``) under its prefix."""
        i = line.find(b"IN=")
        while i > 0 and 0x41 <= line[i - 1] <= 0x5A and line[i - 4 : i] == b"PHYS":
            i = line.find(b"IN=", i + 3)
        if i < 0:
            return
        j = line.find(b" OUT=", i)
        if j < 0 or j - i > 24 or (b" SRC=" not in line and b" MAC" not in line and b"ARP" not in line):
            return
        self.stats.log_line(_log_prefix(line, i))


def _log_prefix(line: bytes, i: int) -> str:
    """The LOG prefix: the text between the log header and ``IN=``."""
    head = line[:i]
    k = head.find(b"kernel: ")
    if k >= 0:
        head = head[k + 8 :]
    else:
        m = _KMSG_RE.match(head)
        if m:
            head = head[m.end() :]
    head = head.lstrip()
    if head.startswith(b"["):  # [uptime]
        j = head.find(b"]")
        if j > 0:
            head = head[j + 1 :]
    return head.strip().decode("utf-8", "replace")


_HEADER_RES = (
    re.compile(rb"(?:<\d+>)?[A-Z][a-z]{2} {1,2}\d{1,2} ?\d\d:\d\d:\d\d"),  # syslog / journalctl short
    re.compile(rb"(?:<\d+>)?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d"),  # RFC 3339
    re.compile(rb"(?:<\d+>)?\[\s*\d+\.\d+\]"),  # dmesg uptime
    _DMESG_T_RE,
    _KMSG_RE,
)


def _header_start(line: bytes, lo: int, hi: int) -> int:
    """Where the header of the record whose ``TRACE:`` is at ``hi`` begins (glued records)."""
    best = hi
    for rx in _HEADER_RES:
        m = rx.search(line, lo, hi)
        if m is not None and m.start() < best:
            best = m.start()
    return best


def make_event(info: tuple[str, str, StepKind, int], fs: bytes, ts: float | None,
               got: tuple[str | None, object], fields: dict[str, str] | None, path: str,
               line: int) -> KernelLogEvent:
    """The one constructor of kernel-log events (the readers' hot loops inline it: see there)."""
    family, ident = got
    ev = _new(KernelLogEvent)
    ev.table, ev.chain, ev.kind, ev.num = info
    ev.ts, ev.family, ev.ident = ts, family, ident
    ev.handle = ev.packet_id = ev.verdict = None  # a kernel log line prints none of them
    ev.source, ev.raw = SOURCE, fs
    ev._fields, ev._parse, ev._path, ev._line = fields, parse_fields, path, line
    return ev


_new = object.__new__
