"""Kernel-log TRACE lines (``TRACE: table:chain:type:num IN=…``, nf_log_syslog) -> TraceEvents.

Reads the lines the kernel's nf_log writes for ``-j TRACE`` wherever they ended up:
``/var/log/messages`` and ``kern.log`` (``Jan  1 21:23:16 host kernel: [uptime] TRACE: …``),
RFC 3339 rsyslog lines, ``journalctl -k`` (short, short-precise, short-iso, short-monotonic),
``journalctl -k -o json`` (one object per line; MESSAGE a string or a list of byte values),
``dmesg`` with and without ``[uptime]``, ``dmesg -T``, ``/dev/kmsg`` records and bare lines.
Damaged pastes are read too: a lost space before ``IN=`` (``policy:2IN=tap0``) or between fields
(``LEN=84TOS=0x00``, see ``fields.parse_fields``), and many records glued into one line.

``TraceEvent.ts`` is, by what the line carries, in this order of preference:
the syslog stamp (it has no year: the current year is assumed, or the previous one when that
would put the stamp more than a day in the future; local time zone), an RFC 3339 / ISO stamp,
the journal's ``__REALTIME_TIMESTAMP``, a ``dmesg -T`` stamp (local time zone) — all seconds since
the epoch — or else the kernel's uptime in seconds (``[12345.678901]``, ``/dev/kmsg``); None for
bare lines. Lines of the LOG target (fields but no TRACE tag) are counted in ``ReadStats``.

``TraceEvent.ident`` is one byte string made of the fields that stay the same along a
packet's path (see ``ident_of``), computed from the text ``identity_key`` gives. Damaged
pastes are tidied first (``fields.tidy_text``: tabs, runs of spaces, glued fields, a trailing
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

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, BinaryIO

from ..fields import PartialIdent, bounded_int, family_of, parse_fields, tidy_text
from ..model import Origin, StepKind, TraceEvent
from . import tag as _tag
from .records import MAX_TS as _MAX_TS
from .records import sane_ts as _finite
from .stats import ReadStats

_loads: Callable[[bytes | str], Any]
try:  # optional speed-up for journal JSON
    import orjson

    _loads = orjson.loads
    _JSONError: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover - orjson is optional
    _loads = json.loads
    _JSONError = (ValueError,)
_JSON_BAD: tuple[type[Exception], ...] = (*_JSONError, RecursionError)  # a line that is no journal JSON object
_JSON_MESSAGE_BAD: tuple[type[Exception], ...] = (*_JSONError, TypeError, AttributeError, RecursionError)  # ... or has no MESSAGE

__all__ = ["KernelLogEvent", "ReadStats", "complete", "ident_of", "identity_key", "looks_like",
           "make_event", "read_events", "SOURCE"]

SOURCE = "kernel-log"
TRACE_MARK = _tag.TRACE_MARK  # ip_tables.c trace_packet(): prefix "TRACE: %s:%s:%s:%u "
_MARK_LEN = len(TRACE_MARK)
_MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
# "Jan  1 21:23:16", "Jan 01 21:23:16.620815" (journalctl short-precise), "Apr 1811:50:23" (damaged)
_SYSLOG_RE = re.compile(rb"([A-Z][a-z]{2}) {1,2}(\d{1,2}) ?(\d\d):(\d\d):(\d\d)(\.\d+)?")
_ISO_RE = re.compile(rb"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?")
_DMESG_T_RE = re.compile(rb"\[([A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\]")
_UPTIME_RE = re.compile(rb"\[ {0,20}([0-9]{1,12}\.[0-9]{1,9})\]")
# bounded repetitions: searched over untrusted lines, an unbounded "\d+," would be quadratic
_KMSG_RE = re.compile(rb"(?<![0-9])[0-9]{1,20},[0-9]{1,20},([0-9]{1,20}),[^;\n]{0,256};")
_SNIFF_LINES = 2000

_CACHE_MAX = 200_000  # distinct tags / stamps / names kept before a cache is cleared
_SEEN_MAX = 4096  # recent field texts kept for ident reuse (packets in flight are few)

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


class _Reader:
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
        m = _SYSLOG_RE.match(head)
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
                m = _ISO_RE.match(head)
                if m:
                    return self.iso_ts(m.group())
            m = _KMSG_RE.match(head)  # /dev/kmsg "6,1234,408619771,-;"
            if m:
                return int(m.group(1)) / 1e6
        m = _SYSLOG_RE.search(head)
        if m:
            ts = self.clock.syslog(m)
            if ts is not None:
                return ts
        m = _ISO_RE.search(head)
        if m:
            return self.iso_ts(m.group())
        m = _DMESG_T_RE.search(head)
        if m:
            return _dmesg_t_ts(m.group(1))
        m = _UPTIME_RE.search(head)
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
        if len(self.stamps) > _CACHE_MAX:
            self.stamps.clear()
        self.stamps[key] = ts

    # -- records -------------------------------------------------------------------------------
    def tag(self, tag: bytes) -> tuple[tuple[str, str, StepKind, int] | None, int]:
        got = self.tags.get(tag)
        if got is None:
            got = _parse_tag(tag)
            if got[1] == len(tag):  # damaged tags carry interface names: not worth caching
                if len(self.tags) > _CACHE_MAX:
                    self.tags.clear()
                self.tags[tag] = got
        return got

    def record(self, rec: bytes, t: int, line: int, ts: float | None, has_ts: bool) -> KernelLogEvent | None:
        """One ``…TRACE: tag fields`` record whose mark is at ``rec[t]``; None when unusable."""
        start = t + _MARK_LEN
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
        trailing ``...``: ``fields.tidy_text``). Text cut short keeps its step: its fields are the
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
                if not cut_marked and _WHOLE_LAST.search(tidy):
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
            if line.find(TRACE_MARK, t + _MARK_LEN) < 0:  # one record: the usual case
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
            t = line.find(TRACE_MARK, t + _MARK_LEN)
        out: list[KernelLogEvent] = []
        begin = 0
        for k, t in enumerate(marks):
            if k + 1 < len(marks):
                nxt = marks[k + 1]
                end = _header_start(line, t + _MARK_LEN, nxt)
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
            obj = _loads(line)
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


def complete(f: dict[str, str]) -> bool:
    """False for field text cut short (a paste or a log line truncated inside the packet).

    The 'cut line' rule, for the readers and for explain/causes.py: PROTO is there, and the
    transport header the kernel prints for TCP/UDP/ICMP is whole, unless the packet is a
    fragment (``FRAG``) or the kernel itself said the header was short (``INCOMPLETE``).
    """
    proto = f.get("PROTO")
    if proto is None:
        return False
    if "SPT" in f:
        if proto == "TCP" and "URGP" not in f:
            return False
        if proto in ("UDP", "UDPLITE") and "ULEN" not in f:
            return False
    elif proto in _HEADER_PROTOS and "TYPE" not in f and "FRAG" not in f and "INCOMPLETE" not in f:
        return False
    if "TYPE" in f and "CODE" not in f:
        return False
    return True


_HEADER_PROTOS = frozenset({"TCP", "UDP", "UDPLITE", "ICMP", "ICMPv6"})
_WHOLE_LAST = re.compile(rb" PROTO=(?:TCP|UDP|UDPLITE|ICMP|ICMPv6)\Z")  # a protocol name is whole


def identity_key(fs: bytes) -> bytes:
    """The identity rule: the text a packet's identity (``ident_of``) is computed from.

    That is the record's field text without trailing blanks and without a trailing ``MARK=``
    field (nf_log prints it last; the ident leaves it out, so a mark set or cleared mid-path
    changes nothing). Readers cache idents by this text (read_events and the ``--summary``
    reader in kernel_log_paths): two texts with one key have one ident.
    """
    bare = fs.rstrip()
    m = bare.rfind(b" MARK=")
    if m > 0 and b" " not in bare[m + 1 :]:  # the last field, not glued text
        return bare[:m]
    return bare


def ident_of(fs: bytes) -> tuple[str, bytes] | None:
    """(family, ident) from well-formed field text; None sends the record to the slow path.

    The ident is (LEN, the IPv4 text after ``ID=`` up to ``PROTO=`` — ID, CE/DF/MF, FRAG,
    options — or the IPv6 one after ``FLOWLBL=`` — flow label, extension headers —, PROTO,
    transport): TCP ``SEQ= ACK= WINDOW= RES= flags``, the UDP length, ICMP ``TYPE= CODE=`` and
    the echo sequence. Left out because they change on the way: SRC/DST/SPT/DPT and the ICMP echo
    id (NAT), TTL/HOPLIMIT, TOS/TC, MARK, interfaces, MAC, UID/GID, TCP options (TCPMSS).
    None also for text cut short and for text holding another record (glued lines).
    ``partition`` is used throughout: on this path the number of calls, not bytes, is the cost.
    """
    _, sep, x = fs.partition(b" LEN=")
    if not sep:
        return None
    ln, _, x = x.partition(b" ")
    if x.startswith(b"TOS="):
        family = "ipv4"
        _, sep, x = x.partition(b" ID=")
    elif x.startswith(b"TC="):
        family = "ipv6"
        _, sep, x = x.partition(b" FLOWLBL=")
    else:
        return None
    if not sep:
        return None
    ipc, sep, x = x.partition(b" PROTO=")
    if not sep:
        return None
    proto, _, x = x.partition(b" ")
    if proto == b"TCP":
        if x.startswith(b"SPT="):
            _, sep, y = x.partition(b" SEQ=")
            if not sep:  # LOG without --log-tcp-sequence
                _, sep, y = x.partition(b" WINDOW=")
            tr, sep, x = y.partition(b" URGP=")
            if not sep:
                return None  # cut short
        elif _no_header(ipc, x):
            tr = b""  # a fragment without the TCP header
        else:
            return None  # cut right after PROTO=
    elif proto == b"UDP" or proto == b"UDPLITE":
        if x.startswith(b"SPT="):
            _, sep, y = x.partition(b" LEN=")
            if not sep:
                return None
            tr, _, x = y.partition(b" ")
        elif _no_header(ipc, x):
            tr = b""
        else:
            return None
    elif proto == b"ICMP" or proto == b"ICMPv6":
        if x.startswith(b"TYPE="):
            typ, _, y = x.partition(b" ")
            code, sep, x = y.partition(b" ")
            if not code.startswith(b"CODE="):
                return None
            tr = typ + b" " + code
            if x.startswith(b"ID="):  # echo request / reply: keep the sequence, not the id
                _, sep, y = x.partition(b" SEQ=")
                if not sep:
                    return None
                sq, _, x = y.partition(b" ")
                tr += b" " + sq
        elif _no_header(ipc, x):
            tr = b""
        else:
            return None
    else:
        tr = b""
    if TRACE_MARK in x:
        return None
    return family, b"\x00".join((ln, ipc, proto, tr))  # bytes: its hash is cached


def _no_header(ipc: bytes, x: bytes) -> bool:
    """No transport header after ``PROTO=`` that the kernel meant: a fragment, or a short packet."""
    return b"FRAG:" in ipc or x.startswith(b"INCOMPLETE")


def partial_ident(fs: bytes) -> PartialIdent | None:
    """For tidy text cut short: the part of ``ident_of``'s ident it holds, a byte prefix of the
    full one (``fields.PartialIdent``); None when the text ends before the packet's ID (IPv4
    ``ID=``, IPv6 ``FLOWLBL=``): what is left then names no packet."""
    _, sep, x = fs.partition(b" LEN=")
    if not sep:
        return None
    ln, _, x = x.partition(b" ")
    if x.startswith(b"TOS="):
        _, sep, x = x.partition(b" ID=")
    elif x.startswith(b"TC="):
        _, sep, x = x.partition(b" FLOWLBL=")
    else:
        return None
    if not sep:
        return None
    ipc, sep2, x = x.partition(b" PROTO=")
    if not sep2:  # cut before PROTO=: the ID (flow label) and what followed, the last maybe cut
        return PartialIdent(ln + b"\x00" + ipc)  # still a byte prefix of the full ident
    proto, sp, x = x.partition(b" ")
    if not sp:
        return PartialIdent(b"\x00".join((ln, ipc, proto)))
    tr = b""
    if proto == b"TCP" and x.startswith(b"SPT="):
        _, sep, y = x.partition(b" SEQ=")
        if not sep:
            _, sep, y = x.partition(b" WINDOW=")
        if sep:
            tr = y.partition(b" URGP=")[0]
    elif (proto == b"UDP" or proto == b"UDPLITE") and x.startswith(b"SPT="):
        _, sep, y = x.partition(b" LEN=")
        if sep:
            tr = y.partition(b" ")[0]
    elif (proto == b"ICMP" or proto == b"ICMPv6") and x.startswith(b"TYPE="):
        w = x.split(b" ")
        tr = b" ".join(w[:2])
        if len(w) > 3 and w[2].startswith(b"ID=") and w[3].startswith(b"SEQ="):
            tr += b" " + w[3][4:]
    return PartialIdent(b"\x00".join((ln, ipc, proto, tr)))


def make_event(info: tuple[str, str, StepKind, int], fs: bytes, ts: float | None,
               got: tuple[str | None, object], fields: dict[str, str] | None, path: str,
               line: int) -> KernelLogEvent:
    """The one constructor of kernel-log events (the readers' hot loops inline it: see there)."""
    family, ident = got
    ev = _new(KernelLogEvent)
    ev.table, ev.chain, ev.kind, ev.num = info
    ev.ts = ts
    ev.family = family
    ev.handle = None
    ev.ident = ident
    ev.packet_id = None
    ev.verdict = None
    ev.source = SOURCE
    ev.raw = fs
    ev._fields = fields
    ev._parse = parse_fields
    ev._path = path
    ev._line = line
    return ev


_new = object.__new__
_PROGRESS_EVERY = 0x3FFF  # lines between updates of stats.lines / stats.bytes_read


def read_events(
    stream: BinaryIO, *, name: str, stats: ReadStats | None = None
) -> Iterator[TraceEvent]:
    """Yield one TraceEvent per kernel-log TRACE record in ``stream`` (binary, line by line).

    (``kernel_log_paths`` reads the same lines straight into packet paths, for summaries.)
    """
    st = stats if stats is not None else ReadStats()
    rd = _Reader(name, st)
    tags = rd.tags
    stamps = rd.stamps
    tag_of = rd.tag
    mark = TRACE_MARK
    lineno = 0
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
        for lineno, line in enumerate(stream, 1):
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
                        if len(keyed) >= _SEEN_MAX:
                            keyed.clear()
                        keyed[key] = idg
                    prev_family, prev_ident = idg
                    if len(seen) >= _SEEN_MAX:
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
            start = t + _MARK_LEN
            sp = line.find(b" ", start)
            tag = line[start:sp] if sp >= 0 else line[start:]
            info, _ = _parse_tag(tag)
            if info is not None and b"IN=" in line[start:]:
                return True
        elif line.startswith(b"{") and b'"MESSAGE":[' in line:
            try:
                obj = _loads(line)
                msg = obj.get("MESSAGE") or b""
                msg = bytes(msg) if isinstance(msg, list) else b""  # bytes(an int) allocates that many
            except _JSON_MESSAGE_BAD:
                continue
            if TRACE_MARK in msg and b"IN=" in msg:
                return True
        if (b" kernel: " in line or b'"_TRANSPORT":"kernel"' in line or _UPTIME_RE.match(line)
                or _SYSLOG_RE.match(line) or _ISO_RE.match(line)):
            kernelish += 1
    # a syslog file or kernel log whose TRACE lines start further down
    return bool(lines) and kernelish * 2 > len(lines)
