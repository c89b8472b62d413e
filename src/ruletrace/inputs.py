"""Opening inputs: a path or "-" (stdin), decompressed by magic bytes, plus content checks on the head."""

from __future__ import annotations

import bz2
import io
import lzma
import os
import re
import stat
import sys
import zlib
from typing import Any, BinaryIO

from .errors import RuletraceError
from .model import Origin

SNIFF_SIZE = 64 * 1024  # bytes kept readable at the start for format detection
BUFFER_SIZE = 1 << 20  # read buffer: large reads keep line iteration fast
GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952 ID1 ID2
BZIP2_MAGIC = b"BZh"  # followed by the block size digit '1'..'9' and the block magic 0x314159265359
XZ_MAGIC = b"\xfd7zXZ\x00"  # xz file format 1.0.4, header magic bytes

_BZIP2_RE = re.compile(rb"BZh[1-9]1AY&SY")
_COMPRESSIONS = (  # name, what a stream's first bytes match
    ("gzip", re.compile(re.escape(GZIP_MAGIC))),
    ("xz", re.compile(re.escape(XZ_MAGIC))),
    ("bzip2", _BZIP2_RE),
)

# --- limits on what any input may make ruletrace hold (docs/sources.md, "Limits") ---------------
MAX_LINE_ENV = "RULETRACE_MAX_LINE"  # longest line of any text input (trace logs too)
MAX_INPUT_ENV = "RULETRACE_MAX_INPUT"  # whole-file inputs: rulesets, --ifmap/--routes/--addrs/--ipset, --from-json
DEFAULT_MAX_LINE = 16 << 20
DEFAULT_MAX_INPUT = 1 << 30
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def limit(env: str, default: int) -> int:
    """A size limit from the environment (``64M``, ``2G``, ``100000``), else ``default``."""
    text = os.environ.get(env, "").strip().upper().removesuffix("B").removesuffix("I")
    if not text:
        return default
    unit = _UNITS.get(text[-1:]) if not text[-1:].isdigit() else 1
    num = text[:-1] if unit is not None and not text[-1:].isdigit() else text
    if unit is None or not (num.isascii() and num.isdigit()) or len(num) > 15 or int(num) == 0:
        raise RuletraceError(f"{env}={os.environ[env]!r}: expected a size such as 64M, 2G or 100000")
    return int(num) * unit


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n:,} bytes"


class _Layer(io.RawIOBase):
    """A raw stream read from another (``_raw``), which it closes with itself."""

    _raw: Any

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class _Bounded(_Layer):
    """A raw stream that keeps what any input makes ruletrace hold within limits.

    ``max_line``: a line longer than that is cut to that length (the rest of it is dropped
    as it is read, the lines after it are read as usual); ``cut_lines`` counts them and
    ``first_cut`` is the byte offset of the first. ``max_total``: more than that many bytes
    end the read with a RuletraceError (whole-file inputs). The line check costs one ``find``
    and one ``rfind`` per read (reads are BUFFER_SIZE large), nothing per line.
    """

    def __init__(self, raw: Any, name: str, *, max_line: int | None, max_total: int | None,
                 what: str = "input") -> None:
        super().__init__()
        self._raw = raw
        self._name = name
        self._max_line = max_line
        self._max_total = max_total
        self._what = what
        self._run = 0  # bytes of the current line read so far
        self.offset = 0  # bytes read from below
        self.cut_lines = 0
        self.first_cut = -1
        self._buf = bytearray()

    @property
    def truncated(self) -> bool:
        """The compressed stream below ended before its end marker (see ``_Decompressed``)."""
        return bool(getattr(self._raw, "truncated", False))

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]  # RawIOBase types b as Buffer
        want = len(b)
        if len(self._buf) < want:
            self._buf = bytearray(want)
        buf = self._buf
        while True:
            n = self._raw.readinto(memoryview(buf)[:want]) or 0
            if not n:
                return 0
            start = self.offset
            self.offset += n
            mt = self._max_total
            if mt is not None and self.offset > mt:
                raise RuletraceError(
                    f"{self._what} larger than {_size(mt)}; set {MAX_INPUT_ENV} (e.g. {MAX_INPUT_ENV}=4G) "
                    "to read more", origin=Origin(self._name))
            ml = self._max_line
            if ml is None:
                b[:n] = memoryview(buf)[:n]
                return n
            # only a line that spans reads can grow past one read (BUFFER_SIZE): count those
            first = buf.find(b"\n", 0, n)
            head = first if first >= 0 else n  # bytes that belong to the current line
            if self._run + head <= ml:
                self._run = self._run + n if first < 0 else n - buf.rfind(b"\n", 0, n) - 1
                b[:n] = memoryview(buf)[:n]
                return n
            # the current line is too long: keep its first ml bytes, drop the rest of it
            keep = max(ml - self._run, 0)
            if self._run <= ml:
                self.cut_lines += 1
                if self.first_cut < 0:
                    self.first_cut = start - self._run
            if first < 0:
                self._run += n
                out = bytes(memoryview(buf)[:keep])
            else:
                self._run = n - buf.rfind(b"\n", 0, n) - 1
                out = bytes(memoryview(buf)[:keep]) + bytes(memoryview(buf)[first:n])
            if out:
                b[: len(out)] = out
                return len(out)



def limit_warnings(stream: Any, name: str) -> list[str]:
    """What the limits of a stream from ``open_input`` changed, one warning each (none usually)."""
    raw = getattr(stream, "raw", None)
    out = []
    if isinstance(raw, _Bounded):
        if raw.cut_lines:
            out.append(f"{name}: {raw.cut_lines} line(s) longer than {_size(raw._max_line or 0)} were cut to "
                       f"that length (the first at byte {raw.first_cut:,}); set {MAX_LINE_ENV} "
                       "(e.g. 64M) to read them whole")
        if raw.truncated:
            out.append(f"{name}: compressed data ends early (file cut off or still being written): "
                       "read what it held")
    return out


def bounded_raw(raw: Any, name: str, *, max_line: int | None = None, max_total: int | None = None,
                what: str = "input") -> _Bounded:
    return _Bounded(raw, name, max_line=max_line, max_total=max_total, what=what)


class Prefixed(_Layer):
    """A raw stream that returns ``head`` first, then the rest of ``raw`` (for unpeekable pipes)."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._raw = raw

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]  # RawIOBase types b as Buffer
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        return n



_CHUNK = 64 * 1024  # compressed bytes fed at a time
_OUT_MAX = 1 << 20  # decompressed bytes made at a time (a 3 MB gzip of zeros holds 3 GB)


def _new_decompressor(kind: str) -> Any:
    if kind == "gzip":
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and CRC32/ISIZE trailer
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)


class _Decompressed(_Layer):
    """A decompressing raw stream (gzip, bzip2, xz; several concatenated members too).

    Corrupt data raises RuletraceError. A stream that ends before the end-of-stream marker (a log
    copied or rotated while being written) yields all it had and then ends; ``truncated`` is set
    so the caller can warn. Closing it closes the compressed stream.
    """

    def __init__(self, src: BinaryIO, name: str, kind: str) -> None:
        super().__init__()
        self._raw = src
        self._name = name
        self._kind = kind
        self._dec = _new_decompressor(kind)
        self._out = b""
        self._tail = b""
        self._flushed = False
        self._done = False
        self.truncated = False

    def _fill(self) -> None:
        """Decompress at most _OUT_MAX bytes: what a small input may expand to never sits in memory."""
        while not self._out and not self._done:
            dec = self._dec
            if dec.eof:
                data = dec.unused_data or self._raw.read(_CHUNK)
                if not data.strip(b"\0"):  # the end (NUL padding after the last member is allowed)
                    self._done = True
                    return
                self._dec = dec = _new_decompressor(self._kind)
            elif self._tail:  # zlib: input left over by the last bounded call
                data, self._tail = self._tail, b""
            elif self._kind != "gzip" and not dec.needs_input:  # bz2/lzma hold undelivered output
                data = b""
            else:
                data = self._raw.read(_CHUNK)
                if not data:
                    if self._kind == "gzip" and not self._flushed:  # output zlib still holds
                        self._flushed = True
                        data = b""
                    else:
                        self._done = True
                        self.truncated = True
                        return
                else:
                    self._flushed = False
            try:
                self._out = dec.decompress(data, _OUT_MAX)
            except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as e:
                raise RuletraceError(f"corrupt {self._kind} data: {e}", origin=Origin(self._name)) from e
            if self._kind == "gzip":
                self._tail = dec.unconsumed_tail
                if self._out:
                    self._flushed = False

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]  # RawIOBase types b as Buffer
        self._fill()
        out = self._out
        n = min(len(b), len(out))
        b[:n] = out[:n]
        self._out = out[n:]
        return n



def _cannot_open(e: OSError, origin: Origin) -> RuletraceError:
    """The one line that says why a file could not be opened."""
    if isinstance(e, FileNotFoundError):
        return RuletraceError("no such file", origin=origin)
    if isinstance(e, PermissionError):
        return RuletraceError("permission denied", origin=origin)
    if isinstance(e, IsADirectoryError):
        return RuletraceError("is a directory, not a file", origin=origin)
    return RuletraceError(f"cannot open: {e.strerror or e}", origin=origin)


def compression(head: bytes) -> str | None:
    """The compression a stream's first bytes show (gzip, xz, bzip2), None for none."""
    return next((name for name, magic in _COMPRESSIONS if magic.match(head)), None)


def open_input(path: str) -> tuple[BinaryIO, str]:
    """Open ``path`` ("-" = stdin) for binary line reading; return the stream and its display name.

    Compressed input (gzip, bzip2, xz) is recognised by its magic bytes, not by its name, and
    decompressed on the fly. The returned stream supports ``peek`` (see ``sniff``).
    """
    name = "-" if path == "-" else path
    origin = Origin(name)
    if path == "-":
        raw: BinaryIO = sys.stdin.buffer
        try:
            head = _read_head(raw)
        except OSError as e:
            raise RuletraceError(f"cannot read standard input: {e.strerror or e}", origin=origin) from e
        prefixed: Any = Prefixed(head, raw)
    else:
        try:
            st = os.stat(path)
        except OSError as e:
            raise _cannot_open(e, origin) from e
        if stat.S_ISDIR(st.st_mode):
            raise RuletraceError("is a directory, not a file", origin=origin)
        try:
            fh = open(path, "rb", buffering=0)
        except OSError as e:
            raise _cannot_open(e, origin) from e
        if stat.S_ISREG(st.st_mode):
            prefixed = fh
        else:  # FIFO, character device, process substitution: make the head peekable
            try:
                head = _read_head(fh)
            except OSError as e:
                fh.close()
                raise RuletraceError(f"cannot read: {e.strerror or e}", origin=origin) from e
            prefixed = Prefixed(head, fh)
    base = io.BufferedReader(prefixed, BUFFER_SIZE)
    try:
        magic = base.peek(16)[:16]
    except OSError as e:
        base.close()
        raise RuletraceError(f"cannot read: {e.strerror or e}", origin=origin) from e
    kind = compression(magic)
    max_line = limit(MAX_LINE_ENV, DEFAULT_MAX_LINE)
    if kind is None:
        return io.BufferedReader(_Bounded(base, name, max_line=max_line, max_total=None),
                                 BUFFER_SIZE), name
    stream = io.BufferedReader(
        _Bounded(_Decompressed(base, name, kind), name, max_line=max_line, max_total=None), BUFFER_SIZE)
    try:
        stream.peek(1)
    except RuletraceError:
        stream.close()
        raise
    return stream, name


def binary_input(stream: Any) -> None:
    """Stop counting line lengths on a stream from ``open_input`` (for binary formats: pcap)."""
    raw = getattr(stream, "raw", None)
    if isinstance(raw, _Bounded):
        raw._max_line = None


def read_limited(path: str, what: str) -> bytes:
    """All of a whole-file input ("-" = stdin), refused past RULETRACE_MAX_INPUT (1 GiB by default).

    For inputs that are read whole (rulesets, --ifmap, --routes, --addrs, --ipset, --from-json):
    /dev/zero or a runaway pipe ends with a one-line error instead of filling memory.
    """
    with _open_limited(path, what) as f:
        return f.read()


def open_limited_text(path: str, what: str) -> Any:
    """A UTF-8 text stream of a whole-file input read as it comes, bounded like ``read_limited``."""
    return io.TextIOWrapper(_open_limited(path, what), encoding="utf-8")


def _open_limited(path: str, what: str) -> io.BufferedReader:
    origin = Origin(path)
    mt = limit(MAX_INPUT_ENV, DEFAULT_MAX_INPUT)
    try:
        if path == "-":
            src: Any = Prefixed(b"", sys.stdin.buffer)
            src.close = lambda: None  # stdin stays open
        else:
            src = open(path, "rb", buffering=0)
    except OSError as e:
        raise RuletraceError(f"cannot read {what}: {e.strerror or e}", origin=origin) from e
    return io.BufferedReader(_Bounded(src, path, max_line=None, max_total=mt, what=what), BUFFER_SIZE)


def _read_head(raw: BinaryIO) -> bytes:
    """Read up to SNIFF_SIZE bytes from an unseekable stream (several reads for pipes)."""
    parts: list[bytes] = []
    got = 0
    while got < SNIFF_SIZE:
        chunk = raw.read(SNIFF_SIZE - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def sniff(stream: BinaryIO, size: int = SNIFF_SIZE) -> bytes:
    """The first bytes of a stream from ``open_input``, without consuming them."""
    peek = getattr(stream, "peek", None)
    if peek is None:
        raise TypeError("sniff() needs a stream from open_input()")
    head: bytes = peek(size)[:size]
    return head


def is_binary(head: bytes) -> bool:
    """True for data that is not text: NUL bytes in the head (after decompression)."""
    return b"\x00" in head


def check_text(head: bytes, name: str) -> None:
    """Raise when the head of a log is binary (the dispatcher calls this after binary readers declined)."""
    if is_binary(head):
        raise RuletraceError("binary file, not a text log", origin=Origin(name))


# iptables-save lines: "*filter", "-A CHAIN ", ":CHAIN POLICY [p:b]", "COMMIT"
_RULESET_LINE = re.compile(
    rb"^(?:\*(?:filter|nat|mangle|raw|security)\s*$|-A \S+ |:\S+ (?:ACCEPT|DROP|-) \[|COMMIT\s*$)", re.M
)
_NFT_LINE = re.compile(rb"^\s*(?:table (?:ip|ip6|inet|bridge|arp|netdev) \S+ \{|chain \S+ \{)", re.M)


def looks_like_ruleset(head: bytes) -> str | None:
    """"iptables-save" / "nft" when the head is a ruleset listing with no TRACE lines, else None."""
    if b"TRACE: " in head or b"trace id " in head:
        return None
    if len(_RULESET_LINE.findall(head)) >= 2:
        return "iptables-save"
    if _NFT_LINE.search(head) or head.lstrip().startswith(b'{"nftables"'):
        return "nft"
    return None


def check_not_ruleset(head: bytes, name: str) -> None:
    """Raise when a ruleset was given where a trace log was expected."""
    kind = looks_like_ruleset(head)
    if kind == "iptables-save":
        raise RuletraceError("looks like an iptables-save ruleset, not a trace log", origin=Origin(name))
    if kind == "nft":
        raise RuletraceError("looks like an nft ruleset, not a trace log", origin=Origin(name))
