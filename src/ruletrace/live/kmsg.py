"""/dev/kmsg follower: TRACE lines the nf_log_ipv4/ipv6 loggers print, read as they arrive.

Format: Documentation/ABI/testing/dev-kmsg (``prio,seq,usec,flags;message``, one record per
read()). TRACE lines from a non-initial network namespace reach the log only with
``net.netfilter.nf_log_all_netns=1`` (a sysctl of the initial namespace), and the log does not
say which namespace a line came from.
"""

from __future__ import annotations

import errno
import io
import os
import select

from ..errors import RuletraceError
from ..model import TraceEvent
from ..sources import kernel_log

KMSG = "/dev/kmsg"
RECORD_MAX = 8192  # bytes: the kernel returns one record per read (CONSOLE_EXT_LOG_MAX)


class KmsgFollower:
    """Reads new /dev/kmsg records from the end; yields their TRACE steps as TraceEvents."""

    def __init__(self, path: str = KMSG) -> None:
        self.path = path
        self.fd: int | None = None
        self.lost = 0  # records overwritten before we read them (EPIPE)

    def open(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise RuletraceError(f"cannot read {self.path}: {e.strerror}") from e
        os.lseek(self.fd, 0, os.SEEK_END)  # only records written from now on

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def fileno(self) -> int:
        assert self.fd is not None
        return self.fd

    def poll(self, timeout: float | None) -> list[TraceEvent]:
        """TRACE events of the records that arrived within ``timeout`` seconds."""
        assert self.fd is not None
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return []
        lines: list[bytes] = []
        while True:
            try:
                rec = os.read(self.fd, RECORD_MAX)
            except OSError as e:
                if e.errno == errno.EPIPE:  # the ring buffer overwrote records we had not read
                    self.lost += 1
                    continue
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    break
                raise
            if not rec:
                break
            if b"TRACE: " in rec:
                lines.append(rec if rec.endswith(b"\n") else rec + b"\n")
        if not lines:
            return []
        return list(kernel_log.read_events(io.BytesIO(b"".join(lines)), name=self.path))
