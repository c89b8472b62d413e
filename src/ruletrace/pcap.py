"""pcap and pcapng capture files: the container format, its magics, its records.

Spec: https://www.tcpdump.org/manpages/pcap-savefile.5.html and https://pcapng.github.io/pcapng/.
ruletrace reads captures of link type NFLOG (239, ``tcpdump -i nflog -w``); the records'
contents are decoded by ``sources/nflog.py``. The file magics live here (the format detector
and the ruleset loader ask ``looks_like_capture``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

from .errors import RuletraceError
from .model import Origin

LINKTYPE_NFLOG = 239

# pcap global header magics (usec / nsec resolution), as read little-endian
PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A  # section header block type (palindromic)
PCAPNG_BOM = 0x1A2B3C4D  # byte-order magic inside the SHB
PCAPNG_IDB = 1  # interface description block
PCAPNG_SPB = 3  # simple packet block
PCAPNG_EPB = 6  # enhanced packet block
PCAPNG_OPT_IF_TSRESOL = 9  # timestamp resolution
PCAPNG_OPT_ENDOFOPT = 0
# the first four bytes of a capture file, both byte orders (the pcapng SHB type is palindromic)
FILE_MAGICS = frozenset(
    struct.pack(bo + "I", m) for bo in "<>" for m in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC, PCAPNG_SHB)
)


def looks_like_capture(head: bytes) -> bool:
    """Whether bytes start a pcap or pcapng file."""
    return head[:4] in FILE_MAGICS




MAX_RECORD = 0x4000000  # 64 MiB: larger record or block lengths are damage, not data


class Truncated(RuletraceError):
    """The capture ends inside a record (still being written, tcpdump killed, copied short)."""

    def __init__(self, message: str, *, origin: Origin, offset: int) -> None:
        super().__init__(message, origin=origin)
        self.offset = offset


class _Pos:
    """Reads from a stream and counts the bytes, so that a cut can be named by its offset."""

    __slots__ = ("stream", "offset")

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.offset = 0

    def read(self, n: int) -> bytes:
        data = self.stream.read(n) or b""
        self.offset += len(data)
        return data


def _read_exact(stream: Any, n: int) -> bytes:
    data = stream.read(n)
    return data if data is not None else b""


def iter_records(stream: BinaryIO, *, name: str) -> Iterator[tuple[int, float, bytes, str]]:
    """Yield ``(record_no, ts, body, byte_order)`` from a pcap or pcapng file of link type 239.

    A file that ends inside a record raises ``Truncated`` (with the byte offset where the cut
    record starts) after every whole record was yielded.
    """
    pos = _Pos(stream)
    head = pos.read(4)
    if len(head) < 4:
        raise RuletraceError("empty or truncated capture file (no pcap header)", origin=Origin(name))
    (magic_le,) = struct.unpack("<I", head)
    if magic_le == PCAPNG_SHB:
        yield from _iter_pcapng(pos, head, name)
    else:
        yield from _iter_pcap(pos, head, name)


def _iter_pcap(stream: _Pos, head: bytes, name: str) -> Iterator[tuple[int, float, bytes, str]]:
    for bo in ("<", ">"):
        (magic,) = struct.unpack(bo + "I", head)
        if magic in (PCAP_MAGIC_USEC, PCAP_MAGIC_NSEC):
            break
    else:
        raise RuletraceError(f"not a pcap/pcapng file (magic {head.hex()})", origin=Origin(name))
    scale = 1e-6 if magic == PCAP_MAGIC_USEC else 1e-9
    rest = _read_exact(stream, 20)
    if len(rest) < 20:
        raise RuletraceError("truncated pcap header", origin=Origin(name))
    _vmaj, _vmin, _zone, _sigfigs, _snaplen, linktype = struct.unpack(bo + "HHiIII", rest)
    linktype &= 0xFFFF  # upper bits hold FCS length flags
    if linktype != LINKTYPE_NFLOG:
        raise RuletraceError(
            f"pcap link type {linktype}, not NFLOG (239): capture with `tcpdump -i nflog -w FILE`",
            origin=Origin(name),
        )
    rec_hdr = struct.Struct(bo + "IIII")  # ts_sec ts_frac incl_len orig_len
    n = 0
    while True:
        start = stream.offset
        hdr = _read_exact(stream, rec_hdr.size)
        if not hdr:
            return
        n += 1
        if len(hdr) < rec_hdr.size:
            raise Truncated(f"record {n}: truncated record header ({len(hdr)} of 16 bytes)",
                            origin=Origin(name, n), offset=start)
        sec, frac, incl, _orig = rec_hdr.unpack(hdr)
        if incl > MAX_RECORD:
            raise RuletraceError(f"record {n}: implausible record length {incl} at byte {start:,}",
                                 origin=Origin(name, n))
        body = _read_exact(stream, incl)
        if len(body) < incl:
            raise Truncated(f"record {n}: truncated ({len(body)} of {incl} bytes)",
                            origin=Origin(name, n), offset=start)
        yield n, sec + frac * scale, body, bo


def _iter_pcapng(stream: _Pos, head: bytes, name: str) -> Iterator[tuple[int, float, bytes, str]]:
    bo = "<"
    ifaces: list[tuple[int, int]] = []  # (linktype, ticks per second) per interface id
    n = 0
    block_type_raw = head
    start = 0
    while True:
        if not block_type_raw:
            return
        n += 1
        origin = Origin(name, n)
        if len(block_type_raw) < 4:
            raise Truncated(f"block {n}: truncated block header", origin=origin, offset=start)
        len_raw = _read_exact(stream, 4)
        if len(len_raw) < 4:
            raise Truncated(f"block {n}: truncated block header", origin=origin, offset=start)
        is_shb = struct.unpack("<I", block_type_raw)[0] == PCAPNG_SHB
        if is_shb:
            bom = _read_exact(stream, 4)
            if len(bom) < 4:
                raise Truncated(f"block {n}: truncated section header", origin=origin, offset=start)
            if struct.unpack("<I", bom)[0] == PCAPNG_BOM:
                bo = "<"
            elif struct.unpack(">I", bom)[0] == PCAPNG_BOM:
                bo = ">"
            else:
                raise RuletraceError(f"block {n}: bad pcapng byte-order magic {bom.hex()}", origin=origin)
        (blen,) = struct.unpack(bo + "I", len_raw)
        if blen < (28 if is_shb else 12) or blen % 4 or blen > MAX_RECORD:
            raise RuletraceError(f"block {n}: bad block length {blen} at byte {start:,}", origin=origin)
        if is_shb:
            body = bom + _read_exact(stream, blen - 16)
            ifaces = []
        else:
            body = _read_exact(stream, blen - 12)
        trailer = _read_exact(stream, 4)
        if len(body) < blen - 12 or len(trailer) < 4:
            raise Truncated(f"block {n}: truncated ({blen} bytes announced)", origin=origin, offset=start)
        (btype,) = struct.unpack(bo + "I", block_type_raw)
        if btype == PCAPNG_IDB:
            if len(body) < 8:
                raise RuletraceError(f"block {n}: interface description block too short", origin=origin)
            linktype, _res, _snap = struct.unpack_from(bo + "HHI", body)
            ifaces.append((linktype, _tsresol(body[8:], bo)))
            if linktype != LINKTYPE_NFLOG:
                raise RuletraceError(
                    f"block {n}: pcapng interface link type {linktype}, not NFLOG (239): "
                    "capture with `tcpdump -i nflog -w FILE`",
                    origin=origin,
                )
        elif btype == PCAPNG_EPB:
            if len(body) < 20:
                raise RuletraceError(f"block {n}: enhanced packet block too short", origin=origin)
            ifid, ts_hi, ts_lo, caplen, _orig = struct.unpack_from(bo + "IIIII", body)
            if ifid >= len(ifaces):
                raise RuletraceError(f"block {n}: packet for undeclared interface {ifid}", origin=origin)
            if 20 + caplen > len(body):
                raise RuletraceError(f"block {n}: truncated packet data", origin=origin)
            yield n, ((ts_hi << 32) | ts_lo) / ifaces[ifid][1], body[20 : 20 + caplen], bo
        elif btype == PCAPNG_SPB:
            if not ifaces:
                raise RuletraceError(f"block {n}: packet before any interface block", origin=origin)
            if len(body) < 4:
                raise RuletraceError(f"block {n}: simple packet block too short", origin=origin)
            (orig,) = struct.unpack_from(bo + "I", body)
            yield n, 0.0, body[4 : 4 + orig], bo
        # other blocks (name resolution, statistics, custom) carry no packets
        start = stream.offset
        block_type_raw = _read_exact(stream, 4)


def _tsresol(opts: bytes, bo: str) -> int:
    off = 0
    while off + 4 <= len(opts):
        code, length = struct.unpack_from(bo + "HH", opts, off)
        if code == PCAPNG_OPT_ENDOFOPT:
            break
        if code == PCAPNG_OPT_IF_TSRESOL and length >= 1:
            v = opts[off + 4]
            return int(2 ** (v & 0x7F) if v & 0x80 else 10**v)
        off += 4 + ((length + 3) & ~3)
    return 1_000_000  # default: microseconds
