"""Entering a network namespace (``ip netns`` name or a process's), and the current one's identity."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import RuletraceError

CLONE_NEWNET = 0x40000000  # include/uapi/linux/sched.h
NETNS_RUN_DIR = "/run/netns"  # where `ip netns add NAME` bind-mounts the namespace


def ns_path(*, name: str | None = None, pid: int | None = None) -> str:
    """The namespace file of ``ip netns`` NAME or of process PID."""
    if name is not None:
        if "/" in name or name in (".", ".."):
            raise RuletraceError(f"--netns {name!r}: not a namespace name")
        path = os.path.join(NETNS_RUN_DIR, name)
        if not os.path.exists(path):
            raise RuletraceError(f"--netns {name}: no such network namespace (see `ip netns list`)")
        return path
    if pid is not None:
        path = f"/proc/{pid}/ns/net"
        if not os.path.exists(path):
            raise RuletraceError(f"--pid {pid}: no such process")
        return path
    return "/proc/self/ns/net"


def ns_id(path: str = "/proc/thread-self/ns/net") -> str:
    """Identity of a network namespace: ``dev:inode`` of its namespace file."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise RuletraceError(f"{path}: {e.strerror}") from e
    return f"{st.st_dev}:{st.st_ino}"


def is_initial() -> bool:
    """True in the host's (PID 1's) network namespace."""
    try:
        return ns_id() == ns_id("/proc/1/ns/net")
    except RuletraceError:
        return False


def setns(path: str) -> None:
    """Move this (single-threaded) process into the network namespace at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise RuletraceError(f"{path}: {e.strerror}") from e
    try:
        _setns_fd(fd)
    finally:
        os.close(fd)


def _setns_fd(fd: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        try:
            os.setns(fd, CLONE_NEWNET)
        except PermissionError as e:
            raise RuletraceError("cannot enter the network namespace: permission denied (needs "
                                 "CAP_SYS_ADMIN)") from e
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise RuletraceError(f"cannot enter the network namespace: {os.strerror(err)}"
                             + (" (needs CAP_SYS_ADMIN)" if err == 1 else ""))


@contextmanager
def entered(path: str | None) -> Iterator[None]:
    """Run the body inside the namespace at ``path`` (no-op for None), then go back."""
    if path is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(path)
        try:
            yield
        finally:
            _setns_fd(home)
    finally:
        os.close(home)
