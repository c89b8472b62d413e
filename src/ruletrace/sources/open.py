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

from ..errors import RuletraceError
from ..model import Origin

SNIFF_SIZE = 64 * 1024  # bytes kept readable at the start for format detection
BUFFER_SIZE = 1 << 20  # read buffer: large reads keep line iteration fast
GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952 ID1 ID2
BZIP2_MAGIC = b"BZh"  # followed by the block size digit '1'..'9' and the block magic 0x314159265359
XZ_MAGIC = b"\xfd7zXZ\x00"  # xz file format 1.0.4, header magic bytes

_BZIP2_RE = re.compile(rb"BZh[1-9]1AY&SY")


class _Prefixed(io.RawIOBase):
    """A raw stream that returns ``head`` first, then the rest of ``raw`` (for unpeekable pipes)."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


_CHUNK = 64 * 1024  # compressed bytes fed at a time


def _new_decompressor(kind: str) -> Any:
    if kind == "gzip":
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and CRC32/ISIZE trailer
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)


class _Decompressed(io.RawIOBase):
    """A decompressing raw stream (gzip, bzip2, xz; several concatenated members too).

    Corrupt data raises RuletraceError. A stream that ends before the end-of-stream marker (a log
    copied or rotated while being written) yields all it had and then ends; ``truncated`` is set
    so the caller can warn. Closing it closes the compressed stream.
    """

    def __init__(self, src: BinaryIO, name: str, kind: str) -> None:
        super().__init__()
        self._src = src
        self._name = name
        self._kind = kind
        self._dec = _new_decompressor(kind)
        self._out = b""
        self._done = False
        self.truncated = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._out and not self._done:
            if self._dec.eof:
                data = self._dec.unused_data or self._src.read(_CHUNK)
                if not data.strip(b"\0"):  # the end (NUL padding after the last member is allowed)
                    self._done = True
                    return
                self._dec = _new_decompressor(self._kind)
            else:
                data = self._src.read(_CHUNK)
                if not data:
                    self._done = True
                    self.truncated = True
                    return
            try:
                self._out = self._dec.decompress(data)
            except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as e:
                raise RuletraceError(f"corrupt {self._kind} data: {e}", origin=Origin(self._name)) from e

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        self._fill()
        out = self._out
        n = min(len(b), len(out))
        b[:n] = out[:n]
        self._out = out[n:]
        return n

    def close(self) -> None:
        try:
            self._src.close()
        finally:
            super().close()


def _compression(head: bytes) -> str | None:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if _BZIP2_RE.match(head):
        return "bzip2"
    return None


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
        base: BinaryIO = io.BufferedReader(_Prefixed(head, raw), BUFFER_SIZE)
    else:
        try:
            st = os.stat(path)
        except FileNotFoundError as e:
            raise RuletraceError("no such file", origin=origin) from e
        except PermissionError as e:
            raise RuletraceError("permission denied", origin=origin) from e
        except OSError as e:
            raise RuletraceError(f"cannot open: {e.strerror or e}", origin=origin) from e
        if stat.S_ISDIR(st.st_mode):
            raise RuletraceError("is a directory, not a file", origin=origin)
        try:
            fh = open(path, "rb", buffering=0)
        except PermissionError as e:
            raise RuletraceError("permission denied", origin=origin) from e
        except IsADirectoryError as e:
            raise RuletraceError("is a directory, not a file", origin=origin) from e
        except OSError as e:
            raise RuletraceError(f"cannot open: {e.strerror or e}", origin=origin) from e
        if stat.S_ISREG(st.st_mode):
            base = io.BufferedReader(fh, BUFFER_SIZE)
        else:  # FIFO, character device, process substitution: make the head peekable
            try:
                head = _read_head(fh)  # type: ignore[arg-type]
            except OSError as e:
                fh.close()
                raise RuletraceError(f"cannot read: {e.strerror or e}", origin=origin) from e
            base = io.BufferedReader(_Prefixed(head, fh), BUFFER_SIZE)  # type: ignore[arg-type]
    try:
        magic = base.peek(16)[:16]
    except OSError as e:
        base.close()
        raise RuletraceError(f"cannot read: {e.strerror or e}", origin=origin) from e
    kind = _compression(magic)
    if kind is None:
        return base, name
    stream = io.BufferedReader(_Decompressed(base, name, kind), BUFFER_SIZE)
    try:
        stream.peek(1)
    except RuletraceError:
        stream.close()
        raise
    return stream, name  # type: ignore[return-value]


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
    return peek(size)[:size]


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
