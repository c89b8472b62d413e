"""A reader process that drains a trace socket into a bounded buffer while packets are explained.

Explaining a step costs far more than reading it, so in a burst the kernel's receive queue of
the trace socket fills and the kernel drops steps (ENOBUFS, an overrun). A forked child does
nothing but read the socket and pass each datagram on through a pipe; what the parent has not
yet taken waits in the child's memory, up to ``LIMIT`` bytes (a step there costs its size, not
the kernel's per-datagram allocation). Nothing is lost silently:

- the kernel's overruns seen by the child are passed on (``overruns``);
- a datagram that would take the buffer past ``LIMIT`` is dropped and its trace messages are
  counted (``dropped``; other messages, such as nf_tables' ruleset generation, are always kept);
- at the end (``discard``) the child counts what is still queued in the socket and in its
  buffer, and the parent counts what is still in the pipe: the steps not read.

The child is bound to the parent: it gets SIGKILL when the parent dies (PR_SET_PDEATHSIG, so a
SIGKILLed trace leaves no reader holding the NFLOG group), ignores the terminal's signals (the
parent decides when the trace ends), keeps only the socket and its two pipes open (not the
session's lock, nor the trace's output: 0-2 are /dev/null), and is killed and reaped by
``close``. ``ReaderSocket`` offers the methods of ``netlink.NetlinkSocket`` the live loop uses,
so the rest of the tracer does not change.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import time
from collections import deque
from typing import Any, TypeVar

from .netlink import BATCH, BATCH_STEPS, NLMSG_HDR, NetlinkSocket, align4, bodies_of, split_messages

LIMIT = 256 << 20  # bytes of datagrams the child keeps at most (~1 million NFLOG steps)
PIPE_SIZE = 1 << 20  # the pipe's capacity asked for (F_SETPIPE_SZ; the default 64 KiB otherwise)
F_SETPIPE_SZ = 1031
PR_SET_PDEATHSIG = 1
ENV = "RULETRACE_LIVE_READER"  # "0": no reader process (read the socket in the tracing process)

FRAME = struct.Struct("=IB")  # payload length, kind
DATAGRAM, OVERRUN, DROPPED, END, CLOCK = 0, 1, 2, 3, 4
STAMP = struct.Struct("=d")  # DATAGRAM: when the child read it, then the datagram; CLOCK: when the socket was empty
HEARTBEAT = 0.05  # seconds: how often an idle child says the socket is still empty
COUNT = struct.Struct("=IB")  # END: messages not read, whether more may have been queued
_HEAD = struct.Struct("=IH").unpack_from  # nlmsg_len, nlmsg_type
T = TypeVar("T")


def enabled() -> bool:
    """A reader process is used where a second core can run it, unless RULETRACE_LIVE_READER=0.
    The cores this process may run on (its affinity: taskset, a cpuset), not the machine's."""
    if os.environ.get(ENV, "") == "0":
        return False
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return cpus >= 2


def count_of(data: bytes, mtype: int | None) -> int:
    """Messages of type ``mtype`` (any type when None) in one datagram."""
    if mtype is None:
        return sum(1 for _m in split_messages(data))
    return len(bodies_of(data, mtype))


class ReaderSocket:
    """The parent's side: datagrams from the child, with the ``NetlinkSocket`` methods the live
    loop calls (``messages``, ``packet_bodies``, ``discard``, ``overruns``, ``fileno``, ``close``,
    ``request`` without an ACK)."""

    def __init__(self, sock: NetlinkSocket, mtype: int, *, limit: int = LIMIT) -> None:
        self.sock = sock
        self.mtype = mtype  # the trace messages: what a drop or the end counts
        self.limit = limit
        self.overruns = sock.overruns
        self.dropped = 0  # trace messages dropped because the child's buffer was full
        self.pid = 0
        self._fd = -1
        self._ctl = -1
        self._data = bytearray()  # bytes read from the pipe, not yet cut into frames
        # datagrams cut, not yet handed out: (when the child read it, the datagram or None for a CLOCK)
        self._frames: deque[tuple[float, bytes | None]] = deque()
        # the socket's time as far as the frames handed out tell: every step the kernel had queued
        # by then has been handed out (the grouper's clock: a packet is idle by this, so that a
        # backlog in the pipe, or a child not yet scheduled, never completes a packet early)
        self.clock = time.monotonic()
        # when the child read the newest datagram handed out (>= clock): a step's age counts from
        # it. Only an "empty at" moves ``clock``: a datagram's stamp says it was queued by then, not
        # that nothing queued before it is still behind it (a child descheduled mid-burst, two CPUs'
        # packets interleaved), so it must not age the packets whose next steps are still queued
        self.seen = self.clock
        self._end: tuple[int, bool] | None = None
        self._eof = False
        self.direct = False  # the child died unasked: the socket is read here (``_orphaned``)
        self._overruns_before = 0

    # --- the child ----------------------------------------------------------------------

    def start(self) -> None:
        """Fork the child. OSError (no fork: EAGAIN, ENOMEM) leaves nothing open; the caller
        reads the socket itself."""
        r, w = os.pipe()
        cr, cw = os.pipe()
        try:
            import fcntl

            fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe only means more switches
        parent = os.getpid()
        prctl = _prctl()  # found before the fork: no import or dlopen in the child of a threaded process
        try:
            pid = os.fork()
        except OSError:
            for fd in (r, w, cr, cw):
                os.close(fd)
            raise
        if pid == 0:  # pragma: no cover - the child; its behaviour is tested through the parent
            code = 1
            try:
                os.close(r)
                os.close(cw)
                _child_setup(keep={self.sock.fileno(), w, cr}, parent=parent, prctl=prctl)
                _Child(self.sock.sock, w, cr, self.mtype, self.limit).run()
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        os.close(cr)
        os.set_blocking(r, False)
        self.pid, self._fd, self._ctl = pid, r, cw
        # messages the socket read while it waited for an ACK (NetlinkSocket._pending) come first,
        # as the socket's own messages() would hand them out: one datagram of them
        pending, self.sock._pending = self.sock._pending, []
        if pending:
            self._frames.append((self.clock, b"".join(
                NLMSG_HDR.pack(NLMSG_HDR.size + len(body), t, fl, seq, 0) + body + b"\0" * (align4(len(body)) - len(body))
                for t, fl, seq, body in pending)))

    # --- what the live loop calls ---------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    def join_group(self, group: int) -> None:
        self.sock.join_group(group)

    def request(self, msg_type: int, payload: bytes, *, flags: int) -> None:
        """A request without an ACK (the answer would go to the child)."""
        self.sock.request(msg_type, payload, flags=flags)

    def _read(self, timeout: float | None) -> None:
        """Take what the pipe holds (waiting up to ``timeout`` when nothing is ready), cut frames."""
        if self._frames or self._fd < 0:
            return
        if self._eof:
            if self._end is None and self._ctl >= 0:
                self._orphaned()
            return
        if timeout != 0:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if not ready:
                return
        data = self._data
        for _ in range(16):
            try:
                got = os.read(self._fd, 1 << 20)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not got:
                self._eof = True
                break
            data += got
            if len(got) < 1 << 20:
                break
        self._cut()

    def _cut(self) -> None:
        data, off, n = self._data, 0, len(self._data)
        head, frames = FRAME.unpack_from, self._frames
        while off + 5 <= n:
            length, kind = head(data, off)
            if off + 5 + length > n:
                break
            body = bytes(data[off + 5:off + 5 + length])
            off += 5 + length
            if kind == DATAGRAM:
                frames.append((STAMP.unpack_from(body)[0], body[8:]))
            elif kind == CLOCK:
                frames.append((STAMP.unpack(body)[0], None))
            elif kind == OVERRUN:
                self.overruns += struct.unpack("=I", body)[0]
            elif kind == DROPPED:
                self.dropped += struct.unpack("=I", body)[0]
            elif kind == END:
                unread, more = COUNT.unpack(body)
                self._end = (unread, bool(more))
        del data[:off]

    def behind(self) -> bool:
        """Whether steps may still be on their way: datagrams not handed out, or no word from the
        child that the socket was empty for longer than its heartbeats take. The pipe is read
        first (without waiting): its heartbeats are that word, however long ago the last
        messages() was; read directly (the child gone), whether the socket has anything queued."""
        if self.direct:
            try:
                return bool(select.select([self.sock.fileno()], [], [], 0)[0])
            except (OSError, ValueError):
                return False
        frames = self._frames
        for _ in range(64):  # a bounded catch-up: each _read takes at most 16 MiB
            while frames and frames[0][1] is None:  # "empty at": what messages() would take from them
                self.clock = self.seen = frames.popleft()[0]
            if frames or self._eof:
                break
            before = len(self._data)
            self._read(0)
            if not frames and len(self._data) == before:
                break
        if self.direct:
            return self.behind()
        return bool(frames) or time.monotonic() - self.clock > 4 * HEARTBEAT

    def _orphaned(self) -> None:
        """The child ended before it was asked to (killed): the steps it held are lost, their
        number unknown, so it counts as an overrun (every open packet flagged); the socket is
        read here from now on."""
        self._stop_child()
        os.close(self._ctl)
        self._ctl = -1
        self.overruns += 1
        self._overruns_before = self.overruns - self.sock.overruns
        self.direct = True

    def messages(self, timeout: float | None, *, batch: int = BATCH) -> list[tuple[int, int, int, bytes]]:
        """As ``NetlinkSocket.messages``: the messages of up to ``batch`` datagrams."""
        if self.direct:
            return self._direct(self.sock.messages(timeout, batch=batch))
        self._read(timeout)
        out: list[tuple[int, int, int, bytes]] = []
        frames = self._frames
        for _ in range(min(batch, len(frames))):
            self.seen, data = frames.popleft()
            if data is None:
                self.clock = self.seen
            else:
                out += split_messages(data)
        return out

    def packet_bodies(self, timeout: float | None, mtype: int, *, batch: int = BATCH) -> list[bytes]:
        """As ``NetlinkSocket.packet_bodies``: the bodies of the messages of type ``mtype``."""
        if self.direct:
            return self._direct(self.sock.packet_bodies(timeout, mtype, batch=batch))
        self._read(timeout)
        bodies: list[bytes] = []
        frames = self._frames
        for _ in range(min(batch, len(frames))):
            self.seen, data = frames.popleft()
            if data is None:
                self.clock = self.seen
                continue
            if len(data) >= 16:
                length, t = _HEAD(data)
                if length == len(data):
                    if t == mtype:
                        bodies.append(data[16:])
                    continue
            bodies += bodies_of(data, mtype)
            if len(bodies) >= BATCH_STEPS:
                break
        return bodies

    def _direct(self, got: list[T]) -> list[T]:
        self.overruns = self._overruns_before + self.sock.overruns
        self.clock = self.seen = time.monotonic()
        return got

    def discard(self, deadline: float, mtype: int | None = None) -> tuple[int, bool]:
        """The end: the child stops, counts what is still queued in the socket and in its buffer;
        the datagrams still in the pipe are counted here. (messages of ``mtype``, whether more may
        have been queued: the deadline passed first)."""
        if self.direct:
            return self._unread_socket(deadline, mtype)
        if self._ctl >= 0:
            os.close(self._ctl)  # EOF: the child's signal to stop reading and count
            self._ctl = -1
        n = sum(count_of(f, mtype) for _t, f in self._frames if f is not None)
        self._frames.clear()
        while self._end is None and not self._eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return n + self._unread_socket(deadline, mtype)[0], True
            self._read(left)
            n += sum(count_of(f, mtype) for _t, f in self._frames if f is not None)
            self._frames.clear()
        if self._end is None:  # the child is gone without its count: the socket is still ours
            got, _more = self._unread_socket(deadline, mtype)
            return n + got, True  # what the child held is lost uncounted: "at least"
        return n + self._end[0], self._end[1]

    def _unread_socket(self, deadline: float, mtype: int | None) -> tuple[int, bool]:
        self._stop_child()
        before = self.sock.overruns
        got = self.sock.discard(deadline, mtype)
        self.overruns += self.sock.overruns - before
        return got

    def _stop_child(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0

    def close(self) -> None:
        self._stop_child()
        for fd in (self._fd, self._ctl):
            if fd >= 0:
                os.close(fd)
        self._fd = self._ctl = -1
        self.sock.close()


def _prctl() -> Any:
    """libc's prctl, or None. Looked up in the parent: the trace has threads (conntrack, dropmon
    readers), and an import (the import lock) or a dlopen (the loader's lock) in a child forked
    while another thread held that lock would never return: a child that never reads."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, ImportError):
        return None


def _child_setup(keep: set[int], parent: int, prctl: Any = None) -> None:  # pragma: no cover - runs in the child
    """Die with the parent, leave the end of the trace to it, hold nothing else of it open."""
    if prctl is not None:
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect (the child
        # was re-parented: to init, or to a subreaper, whose pid is not 1)
        os._exit(1)
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(s, signal.SIG_IGN)
    try:
        fds = [int(x) for x in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    null = os.open(os.devnull, os.O_RDWR)  # not the trace's terminal or output pipe: a reader of
    for fd in (0, 1, 2):  # `trace --json | …` sees its end when the trace ends, whatever the child does
        if null != fd:
            os.dup2(null, fd)
    if null > 2:
        os.close(null)


class _Child:
    """The child's loop: socket -> buffer -> pipe, until the parent closes the control pipe."""

    def __init__(self, sock: socket.socket, out: int, ctl: int, mtype: int, limit: int) -> None:
        self.sock, self.out, self.ctl, self.mtype, self.limit = sock, out, ctl, mtype, limit
        self.buf: deque[bytes] = deque()
        self.size = 0
        self.head = b""  # the part of the first chunk not yet written
        self.recv = bytearray(1 << 18)
        self.view = memoryview(self.recv)
        self.overruns = self.dropped = 0
        self.last_clock = False  # the last frame buffered is a CLOCK (a newer one replaces it)

    def push(self, kind: int, payload: bytes) -> None:
        if self.last_clock and self.buf:  # only the newest "empty at" matters
            self.size -= len(self.buf.pop())
        self.last_clock = kind == CLOCK
        frame = FRAME.pack(len(payload), kind) + payload
        self.buf.append(frame)
        self.size += len(frame)

    def run(self) -> None:
        os.set_blocking(self.out, False)
        sock, fd = self.sock, self.sock.fileno()
        while True:
            want_out = [self.out] if (self.buf or self.head) else []
            r, w, _ = select.select([fd, self.ctl], want_out, [], HEARTBEAT)
            if fd in r or not (r or w):  # data, or a heartbeat: take() says when it found it empty
                self.take(sock)
            if w or want_out:
                self.flush()
            if self.ctl in r:
                self.end(sock)
                return

    def take(self, sock: socket.socket) -> None:
        view = self.view
        for _ in range(256):
            now = time.monotonic()  # before the read: anything queued by now, this read or a later one gets
            try:
                n = sock.recv_into(self.recv, 0, socket.MSG_DONTWAIT)
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.overruns += 1
                    self.push(OVERRUN, struct.pack("=I", 1))
                    continue
                if e.errno == errno.EAGAIN:
                    self.push(CLOCK, STAMP.pack(now))  # empty at `now`: every step queued before is passed on
                    return
                if e.errno == errno.EINTR:
                    return
                raise
            data = view[:n].tobytes()
            if self.size + n > self.limit:
                lost = count_of(data, self.mtype)
                if lost == count_of(data, None):  # only trace messages in it: dropped, counted
                    self.push(DROPPED, struct.pack("=I", lost))
                    continue
            self.push(DATAGRAM, STAMP.pack(now) + data)

    def flush(self) -> None:
        while self.head or self.buf:
            if not self.head:
                parts, size = [], 0
                while self.buf and size < PIPE_SIZE:
                    p = self.buf.popleft()
                    parts.append(p)
                    size += len(p)
                self.head = b"".join(parts)
                self.last_clock = False  # the frames buffered are all in the chunk being written
            try:
                n = os.write(self.out, self.head)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            self.size -= n
            self.head = self.head[n:]

    def end(self, sock: socket.socket) -> None:
        """Finish the chunk being written (the parent reads on while it counts), count what was
        not passed on: still buffered here, and still queued in the socket (for at most a second),
        then say it and leave."""
        os.set_blocking(self.out, True)
        try:
            if self.head:
                os.write(self.out, self.head)  # blocking: whole, so that the frames stay aligned
                self.head = b""
        except OSError:
            return
        unread = sum(count_of(f[13:], self.mtype) for f in self.buf if f[4] == DATAGRAM)
        # the losses among the frames not written are said too (the parent counts them before END)
        losses = b"".join(f for f in self.buf if f[4] in (OVERRUN, DROPPED))
        deadline = time.monotonic() + 1.0
        more = False
        while True:
            if time.monotonic() >= deadline:
                more = True
                break
            try:
                n = sock.recv_into(self.recv, 0, socket.MSG_DONTWAIT)
            except OSError as e:
                if e.errno in (errno.ENOBUFS, errno.EINTR):
                    continue
                break  # EAGAIN: empty
            unread += count_of(self.view[:n].tobytes(), self.mtype)
        try:
            os.write(self.out, losses + FRAME.pack(COUNT.size, END) + COUNT.pack(min(unread, 0xFFFFFFFF), more))
        except OSError:
            pass


__all__ = ["LIMIT", "ReaderSocket", "enabled"]
