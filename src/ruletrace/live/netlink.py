"""Raw AF_NETLINK sockets for NETLINK_NETFILTER and the netlink attribute (NLA) codec.

Spec: include/uapi/linux/netlink.h, include/uapi/linux/netfilter/nfnetlink.h. Netlink headers
and attribute headers are in host byte order; netfilter attribute *values* are big-endian.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import sys
from collections.abc import Callable, Iterator

from ..errors import RuletraceError

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_DROP_MEMBERSHIP = 2
NETLINK_NO_ENOBUFS = 5
SO_RCVBUFFORCE = 33  # asm-generic/socket.h: set SO_RCVBUF beyond rmem_max (CAP_NET_ADMIN)

NLMSG_HDR = struct.Struct("=IHHII")  # nlmsg_len, nlmsg_type, nlmsg_flags, nlmsg_seq, nlmsg_pid
NLA_HDR = struct.Struct("=HH")  # nla_len (incl. this header), nla_type
NFGENMSG = struct.Struct("!BBH")  # nfgen_family, version (NFNETLINK_V0), res_id (big-endian)
NLMSGERR = struct.Struct("=i")  # struct nlmsgerr: error (negative errno), then the request header

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

NFNETLINK_V0 = 0
HOST_ORDER = "<" if sys.byteorder == "little" else ">"  # byte order of NLA headers on this host

BATCH = 1024  # datagrams read at most per messages() call
BATCH_STEPS = 4096  # packet_bodies: messages after which no further datagram is read in the same call
# bytes: a burst of traced packets must not overflow the socket (ENOBUFS). Each step is a
# datagram of its own (about 1 KiB of buffer with its overhead): 64 MiB hold about a second of
# 60,000 steps/s while the explaining catches up (8 MiB held a tenth of it: bench/bench_live.py).
# Kernel memory, taken only while a backlog waits.
RCVBUF = 64 << 20


def nfnl_type(subsys: int, msg: int) -> int:
    """nlmsg_type of a nfnetlink message: subsystem id << 8 | message type."""
    return (subsys << 8) | msg


def align4(n: int) -> int:
    return (n + 3) & ~3


def nla(kind: int, value: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    n = NLA_HDR.size + len(value)
    return NLA_HDR.pack(n, kind) + value + b"\0" * (align4(n) - n)


def nla_nested(kind: int, attrs: bytes) -> bytes:
    return nla(kind | NLA_F_NESTED, attrs)


def iter_attrs(buf: bytes | memoryview, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(type, value)`` for every attribute in ``buf`` from ``offset``; flag bits are stripped."""
    end = len(buf)
    off = offset
    while off + NLA_HDR.size <= end:
        length, kind = NLA_HDR.unpack_from(buf, off)
        if length < NLA_HDR.size or off + length > end:
            raise RuletraceError(f"netlink: bad attribute length {length} at offset {off}")
        yield kind & NLA_TYPE_MASK, bytes(buf[off + NLA_HDR.size : off + length])
        off += align4(length)


def parse_attrs(buf: bytes | memoryview, offset: int = 0) -> dict[int, bytes]:
    """Attributes as a dict (the first of each type wins).

    ``iter_attrs`` inlined (it runs for every trace step): the same walk and the same error;
    tests/live/test_codec.py proves both equal on whole and damaged buffers.
    """
    out: dict[int, bytes] = {}
    end = len(buf)
    off = offset
    unpack = NLA_HDR.unpack_from
    while off + 4 <= end:
        length, kind = unpack(buf, off)
        if length < 4 or off + length > end:
            raise RuletraceError(f"netlink: bad attribute length {length} at offset {off}")
        kind &= NLA_TYPE_MASK
        if kind not in out:
            out[kind] = bytes(buf[off + 4 : off + length])
        off += (length + 3) & ~3
    return out


class Shape:
    """Where ``parse_attrs(body, offset)`` finds each attribute of one message shape.

    ``match(body)`` is True when the body has this shape: the same length and the same (length,
    type) attribute headers at the same offsets (one ``struct`` unpack, compared as a tuple), so
    the walk would go exactly as it went for the body the shape was learned from. Then
    ``body[shape.first[kind]]`` is what ``parse_attrs`` gives for ``kind``, and the ``keep``
    slices cover every attribute but the ``varying`` ones (whole attributes: equal bytes there,
    equal attributes). tests/live/test_codec.py proves the decoders that use it equal to the walk.
    """

    __slots__ = ("check", "first", "hdrs", "keep", "size", "vary")

    def __init__(self, body: bytes, offset: int, varying: frozenset[int]) -> None:
        """Learned from ``body`` (which ``parse_attrs`` must have read without an error)."""
        n = len(body)
        fmt, at, off = ["="], 0, offset
        hdrs: list[int] = []
        self.first: dict[int, slice] = {}
        cut: list[tuple[int, int]] = []
        while off + 4 <= n:
            length, kind = NLA_HDR.unpack_from(body, off)
            fmt.append(f"{off - at}xHH")
            at = off + 4
            hdrs += (length, kind)
            kind &= NLA_TYPE_MASK
            end = min(off + ((length + 3) & ~3), n)
            if kind not in self.first:
                self.first[kind] = slice(off + 4, off + length)
                if kind in varying:
                    cut.append((off, end))
            off = end if end > off else n
        keep, start = [], 0
        for a, b in cut:
            if a > start:
                keep.append(slice(start, a))
            start = b
        if start < n:
            keep.append(slice(start, n))
        self.vary = tuple((k, v) for k, v in self.first.items() if k in varying)  # the varying ones present
        self.check = struct.Struct("".join(fmt))
        self.hdrs = tuple(hdrs)
        self.keep = tuple(keep)
        self.size = n

    def match(self, body: bytes) -> bool:
        return len(body) == self.size and self.check.unpack_from(body) == self.hdrs


def _number(fmt: str) -> Callable[[bytes], int]:
    """A reader of one big-endian number at the start of an attribute value (struct format)."""
    unpack_from = struct.Struct(fmt).unpack_from

    def read(v: bytes) -> int:
        x: int = unpack_from(v)[0]
        return x

    return read


be16 = _number("!H")
be32 = _number("!I")
be32s = _number("!i")  # signed (verdict codes)
be64 = _number("!Q")


def cstr(v: bytes) -> str:
    return v.split(b"\0", 1)[0].decode("utf-8", "replace")


class NetlinkError(RuletraceError):
    """The kernel answered a netlink request with an error."""

    def __init__(self, message: str, err: int) -> None:
        super().__init__(message)
        self.errno = err


class NetlinkSocket:
    """One NETLINK_NETFILTER socket: requests with ACK, multicast groups, message receive."""

    def __init__(self, protocol: int = NETLINK_NETFILTER, *, rcvbuf: int = RCVBUF) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        except PermissionError as e:
            raise RuletraceError("cannot open a netfilter netlink socket: permission denied "
                                 "(run as root / with CAP_NET_ADMIN)") from e
        except OSError as e:
            raise RuletraceError(f"cannot open a netfilter netlink socket: {e.strerror}") from e
        self.sock.bind((0, 0))
        self.portid = self.sock.getsockname()[0]
        self.seq = 0
        self.overruns = 0  # times the kernel dropped messages for us (ENOBUFS)
        self.rcvbuf = self._set_rcvbuf(rcvbuf)
        self._pending: list[tuple[int, int, int, bytes]] = []  # messages read while waiting for an ACK
        self._buf = bytearray(1 << 20)
        self._view = memoryview(self._buf)

    def _set_rcvbuf(self, size: int) -> int:
        for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, size)
                break
            except OSError:
                continue
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def join_group(self, group: int) -> None:
        """Join a multicast group (NETLINK_ADD_MEMBERSHIP)."""
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        except PermissionError as e:
            raise RuletraceError(f"cannot join netlink group {group}: permission denied "
                                 "(needs CAP_NET_ADMIN in this network namespace)") from e
        except OSError as e:
            raise RuletraceError(f"cannot join netlink group {group}: {e.strerror}") from e

    def request(self, msg_type: int, payload: bytes, *, flags: int = NLM_F_REQUEST | NLM_F_ACK,
                timeout: float = 2.0) -> None:
        """Send one request and wait for its ACK; a kernel error raises NetlinkError."""
        self.seq += 1
        seq = self.seq
        msg = NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), msg_type, flags, seq, 0) + payload
        self.sock.send(msg)
        if not flags & NLM_F_ACK:
            return
        deadline = _now() + timeout
        while True:
            left = deadline - _now()
            if left <= 0:
                raise RuletraceError(f"netlink: no answer to request type {msg_type:#06x}")
            for mtype, mflags, mseq, body in self._recv(left):
                if mtype == NLMSG_ERROR and mseq == seq:
                    (err,) = NLMSGERR.unpack_from(body)
                    if err:
                        raise NetlinkError(f"netlink request {msg_type:#06x}: {os.strerror(-err)}", -err)
                    return
                self._pending.append((mtype, mflags, mseq, body))

    def _recv(self, timeout: float | None) -> list[tuple[int, int, int, bytes]]:
        """One datagram's messages: waits up to ``timeout`` (0: only what is queued, no select)."""
        if timeout != 0:
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                return []
        try:
            # into a buffer kept for the socket: recv(1 MiB) would allocate and shrink 1 MiB a datagram
            n = self.sock.recv_into(self._buf, 0, socket.MSG_DONTWAIT)
            data = self._view[:n].tobytes()
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                self.overruns += 1
                return []
            if e.errno in (errno.EAGAIN, errno.EINTR):
                return []
            raise
        return list(split_messages(data))

    def messages(self, timeout: float | None, *, batch: int = BATCH) -> list[tuple[int, int, int, bytes]]:
        """Messages that arrived (waiting up to ``timeout`` seconds): (type, flags, seq, body).

        After the first datagram, whatever else is queued is taken too (up to ``batch``
        datagrams): each NFLOG/trace message is a datagram of its own, and one call per
        datagram would make the caller's per-batch work (change checks) a per-step cost.
        """
        if self._pending:
            out, self._pending = self._pending, []
            return out
        out = self._recv(timeout)
        n = 1
        while out and n < batch:
            more = self._recv(0)
            if not more:
                break
            out += more
            n += 1
        return out


    def packet_bodies(self, timeout: float | None, mtype: int, *, batch: int = BATCH) -> list[bytes]:
        """The bodies of the messages of type ``mtype`` that arrived, as ``messages()`` takes them
        (others are passed over). A datagram holding one message whole (each NFLOG step is one)
        is cut from the receive buffer directly; any other goes through ``split_messages``."""
        if self._pending:
            out, self._pending = self._pending, []
            return [body for t, _f, _s, body in out if t == mtype]
        if timeout != 0:
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                return []
        bodies: list[bytes] = []
        recv_into, buf, view = self.sock.recv_into, self._buf, self._view
        head = _HEAD.unpack_from
        for _ in range(batch):
            try:
                n = recv_into(buf, 0, socket.MSG_DONTWAIT)
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.overruns += 1
                    break
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    break
                raise
            if n >= 16:
                length, t = head(buf)
                if length == n:
                    if t == mtype:
                        bodies.append(view[16:n].tobytes())
                    continue
            bodies += bodies_of(view[:n].tobytes(), mtype)
            if len(bodies) >= BATCH_STEPS:
                break
        return bodies


    def discard(self, deadline: float, mtype: int | None = None) -> tuple[int, bool]:
        """Read what is queued without decoding it, until the queue is empty or ``deadline``
        (monotonic): (messages of type ``mtype`` — any type when None — read, whether more may be
        queued). For the end of a trace: what it did not get to, counted."""
        n = 0
        while True:
            if _now() >= deadline:
                return n, True
            try:
                got = self.sock.recv_into(self._buf, 0, socket.MSG_DONTWAIT)
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.overruns += 1
                    continue
                if e.errno == errno.EINTR:
                    continue
                if e.errno == errno.EAGAIN:
                    return n, False
                raise
            if got >= 16 and _HEAD.unpack_from(self._buf)[0] == got:
                n += mtype is None or _HEAD.unpack_from(self._buf)[1] == mtype
            else:
                n += sum(mtype is None or t == mtype for t, _f, _s, _b in split_messages(self._view[:got].tobytes()))


_HEAD = struct.Struct("=IH")  # nlmsg_len, nlmsg_type: the start of NLMSG_HDR


def bodies_of(data: bytes, mtype: int) -> list[bytes]:
    """The bodies of the messages of type ``mtype`` in one datagram.

    Fast path of ``[body for t, _f, _s, body in split_messages(data) if t == mtype]`` (the
    reference, below): the same walk with only length and type read, no generator, no tuples.
    tests/live/test_livefast.py proves them equal (whole, cut short, bad lengths)."""
    out: list[bytes] = []
    head = _HEAD.unpack_from
    off, n = 0, len(data)
    while off + 16 <= n:
        length, t = head(data, off)
        if length < 16 or off + length > n:
            break
        if t == mtype:
            out.append(data[off + 16:off + length])
        off += (length + 3) & ~3
    return out


def split_messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """Split one recv() buffer into ``(type, flags, seq, body)`` netlink messages."""
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, mtype, flags, seq, _pid = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size or off + length > len(data):
            break
        yield mtype, flags, seq, data[off + NLMSG_HDR.size : off + length]
        off += align4(length)


def _now() -> float:
    import time

    return time.monotonic()
